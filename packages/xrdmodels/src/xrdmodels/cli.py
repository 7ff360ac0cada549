"""Command line: `xrdmodels train`, `xrdmodels evaluate`, `xrdmodels predict`."""

from __future__ import annotations

import json
import logging
import sys
from pathlib import Path
from typing import Any

import click
from pydantic import ValidationError


def _fail(message: str) -> None:
    raise click.ClickException(message)


def _validation_message(exc: ValidationError, source: str) -> str:
    lines = [f"  {'.'.join(str(p) for p in e['loc']) or 'config'}: {e['msg']} (got {e.get('input')!r})"
             for e in exc.errors()]
    return f"invalid configuration in {source}:\n" + "\n".join(lines)


def apply_overrides(fields: dict[str, Any], overrides: tuple[str, ...]) -> dict[str, Any]:
    """Apply KEY=VALUE overrides (dotted keys reach into nested objects; VALUE is JSON when it parses)."""
    out = json.loads(json.dumps(fields))
    for item in overrides:
        key, sep, raw = item.partition("=")
        if not sep or not key:
            _fail(f"override {item!r} must look like KEY=VALUE, e.g. batch_size=64 or model_overrides.head=presence")
        try:
            value = json.loads(raw)
        except json.JSONDecodeError:
            value = raw
        target = out
        parts = key.split(".")
        for p in parts[:-1]:
            target = target.setdefault(p, {})
        target[parts[-1]] = value
    return out


def load_config_file(path: str | None) -> dict[str, Any]:
    if path is None:
        return {}
    text = Path(path).read_text()
    try:
        if path.endswith((".yaml", ".yml")):
            import yaml

            return yaml.safe_load(text) or {}
        return json.loads(text)
    except Exception as exc:  # noqa: BLE001
        _fail(f"cannot parse config file {path}: {exc}")
    return {}


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 110})
@click.option("-v", "--verbose", is_flag=True, help="Show debug logs.")
def main(verbose: bool) -> None:
    """Train, evaluate and apply space-group models on multi-phase powder XRD (paper A.2-A.8)."""
    logging.basicConfig(level=logging.DEBUG if verbose else logging.INFO, format="%(levelname)s %(message)s")


@main.command("train")
@click.option("--config", "config_file", type=click.Path(exists=True, dir_okay=False), default=None,
              help="JSON or YAML file of TrainConfig fields (docs/config.md); pipelines/ has examples.")
@click.option("--resume", is_flag=True, help="Continue exactly from <out_dir>/last.pt (model, optimizer, schedule, "
              "RNG and stream position).")
@click.argument("overrides", nargs=-1, metavar="[KEY=VALUE]...")
def train_cmd(config_file: str | None, resume: bool, overrides: tuple[str, ...]) -> None:
    """Train a model on a mixture store (A.6). KEY=VALUE overrides replace config fields, e.g.

    xrdmodels train --config pipelines/demo/train_small.json max_steps=200 model_overrides.head=presence

    Multi-GPU / multi-node: torchrun --nproc-per-node G -m xrdmodels.cli train --config FILE
    """
    from .config import TrainConfig
    from .train import TrainingDiverged, train

    fields = apply_overrides(load_config_file(config_file), overrides)
    try:
        config = TrainConfig(**fields)
        config.build_model_config()
    except ValidationError as exc:
        _fail(_validation_message(exc, config_file or "the overrides"))
    except ValueError as exc:
        _fail(str(exc))
    try:
        summary = train(config, resume=resume)
    except (TrainingDiverged, FileNotFoundError, ValueError) as exc:
        _fail(str(exc))
    state = "interrupted" if summary["interrupted"] else "finished"
    click.echo(f"train: {state} at step {summary['step']}, best val micro-F1 {summary['best_val_micro_f1']:.4f} "
               f"-> {summary['out_dir']}")


if __name__ == "__main__":
    sys.exit(main())
