"""Docs that are generated from code are current, and every CLI command documents itself."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

REPO = Path(__file__).resolve().parents[1]


def test_config_reference_is_current() -> None:
    result = subprocess.run(
        [sys.executable, str(REPO / "pipelines" / "config_docs.py"), "--check"],
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stderr


def _commands(group, prefix=()):
    import click

    for name, cmd in group.commands.items():
        if isinstance(cmd, click.Group):
            yield from _commands(cmd, (*prefix, name))
        else:
            yield (*prefix, name), cmd


@pytest.mark.parametrize("package", ["xrdsynth", "xrdmodels"])
def test_every_command_has_complete_help(package: str) -> None:
    import importlib

    main = importlib.import_module(f"{package}.cli").main
    commands = list(_commands(main))
    assert commands
    for path, cmd in commands:
        result = CliRunner().invoke(main, [*path, "--help"])
        assert result.exit_code == 0, result.output
        assert cmd.help and len(cmd.help) > 40, f"{package} {' '.join(path)} has no real description"
        for param in cmd.params:
            if param.param_type_name == "option" and param.name != "help":
                assert param.help, f"{package} {' '.join(path)}: option {param.name} has no help"
