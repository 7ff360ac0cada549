"""The paper recipe (`pipelines/paper/`) is the paper's: its settings checked against Appendix A's values.

`run.sh` is run with stand-in commands that record their arguments; those arguments are then parsed by the real
command-line parsers and the training configs it writes are validated by the real `TrainConfig`.
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
PAPER = REPO / "pipelines" / "paper"

# Appendix A.6 (optimisation) and the split of section 2.2, as printed in the paper.
A6 = {
    "batch_size": 256,
    "lr": 1e-4,
    "weight_decay": 1e-2,
    "warmup_steps": 4000,
    "total_steps": 1_000_000,
    "grad_clip": 1.0,
    "val_every": 2000,
    "precision": "fp32",  # "training is performed without automatic mixed precision"
}
A1_SPLIT = (0.95, 0.025, 0.025)

RECORDER = """#!/bin/sh
{ printf '%s\\n' "$(basename "$0")"; for a in "$@"; do printf '%s\\n' "$a"; done; printf '%s\\n' '--end--'; } >> "$CALLS"
"""


def _run_paper_script(tmp_path: Path, **env: str) -> list[list[str]]:
    """Run run.sh with recording stand-ins for xrdsynth, xrdmodels and torchrun; returns each call's argv."""
    stand_ins = tmp_path / "bin"
    stand_ins.mkdir()
    for name in ("xrdsynth", "xrdmodels", "torchrun"):
        (stand_ins / name).write_text(RECORDER)
        (stand_ins / name).chmod(0o755)
    calls = tmp_path / "calls.txt"
    result = subprocess.run(
        ["bash", str(PAPER / "run.sh")],
        env={
            **os.environ,
            "BIN": str(stand_ins),
            "CALLS": str(calls),
            "CIFS": str(tmp_path / "cifs"),
            "RUNS": str(tmp_path / "runs"),
            "WORKERS": "2",
            **env,
        },
        capture_output=True,
        text=True,
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr
    argvs, current = [], []
    for line in calls.read_text().splitlines():
        if line == "--end--":
            argvs.append(current)
            current = []
        else:
            current.append(line)
    return argvs


def _bank_build_params(argvs: list[list[str]]) -> dict:
    from xrdsynth.cli import bank_build

    (argv,) = [a for a in argvs if a[:3] == ["xrdsynth", "bank", "build"]]
    return bank_build.make_context("build", argv[3:]).params


@pytest.mark.parametrize(
    "name", ["train_transformer_phase_cluster", "train_transformer_presence", "train_cnn_presence"]
)
def test_paper_training_configs_follow_a6(name: str) -> None:
    from xrdmodels.config import TrainConfig

    text = (PAPER / f"{name}.json").read_text()
    config = TrainConfig.model_validate(
        json.loads(text.replace("${MIXTURES}", "/data/mixtures").replace("${RUNS}", "/runs"))
    )
    assert {field: getattr(config, field) for field in A6} == A6
    assert config.model_preset == "paper" and not config.compile


def test_paper_script_splits_by_material_and_trains_in_fp32(tmp_path: Path) -> None:
    from xrdmodels.config import TrainConfig
    from xrdsynth.config import BankConfig

    argvs = _run_paper_script(tmp_path)
    params = _bank_build_params(argvs)
    assert params["group_polymorphs"] is False  # A.1: 95/2.5/2.5 by material, not by reduced formula
    assert float(params["max_e_above_hull"]) == 0.1  # the option takes a number or "none"
    assert params["displacement_parameters"] is False  # A.1: pymatgen's XRDCalculator, atoms at rest
    defaults = BankConfig()
    assert defaults.split_fractions == A1_SPLIT and defaults.wavelength_angstrom == pytest.approx(1.54184)
    assert (defaults.grid.two_theta_min_deg, defaults.grid.two_theta_max_deg, defaults.grid.n_bins) == (
        5.0,
        120.0,
        2048,
    )
    trained = [a for a in argvs if a[0] == "torchrun"]
    assert len(trained) == 3
    for argv in trained:
        config_path = Path(argv[argv.index("--config") + 1])
        config = TrainConfig.model_validate_json(config_path.read_text())
        assert config.precision == "fp32" and config.batch_size == 256


def test_paper_script_offers_the_stricter_formula_split(tmp_path: Path) -> None:
    params = _bank_build_params(_run_paper_script(tmp_path, SPLIT="formula"))
    assert params["group_polymorphs"] is True
    bad = subprocess.run(
        ["bash", str(PAPER / "run.sh")],
        env={**os.environ, "CIFS": "x", "SPLIT": "chemistry", "BIN": "/nonexistent"},
        capture_output=True,
        text=True,
        cwd=tmp_path,
    )
    assert bad.returncode == 2 and "SPLIT must be" in bad.stderr


def test_paper_script_passes_the_endpoint_everywhere_and_runs_data_stages_on_node_0_only(
    tmp_path: Path,
) -> None:
    """S3_ENDPOINT reaches the mixtures, each training (a storage_options override TrainConfig parses) and the
    evaluation; another node (NODE_RANK 1) trains only, where every node used to build the bank and data."""
    from xrdmodels.cli import apply_overrides
    from xrdmodels.config import TrainConfig

    endpoint = "http://minio:9000"
    (tmp_path / "head").mkdir()
    argvs = _run_paper_script(tmp_path / "head", S3_ENDPOINT=endpoint)
    programs = [a[:2] for a in argvs]
    assert ["xrdsynth", "bank"] in programs and ["xrdmodels", "evaluate"] in programs
    for argv in argvs:
        if argv[0] == "torchrun":
            overrides = [a for a in argv if a.startswith("storage_options.")]
            config_path = Path(argv[argv.index("--config") + 1])
            fields = apply_overrides(json.loads(config_path.read_text()), tuple(overrides))
            assert TrainConfig(**fields).storage_options == {"client_kwargs": {"endpoint_url": endpoint}}
        elif argv[:2] in (["xrdsynth", "mixtures"], ["xrdmodels", "evaluate"]):
            assert argv[argv.index("--storage-option") + 1] == f"endpoint_url={endpoint}"
    (tmp_path / "other").mkdir()
    other = _run_paper_script(tmp_path / "other", NODE_RANK="1", NNODES="2")
    assert [a[0] for a in other] == ["torchrun"] * 3
