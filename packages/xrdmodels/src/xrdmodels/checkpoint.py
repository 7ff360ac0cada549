"""Checkpoint files: one torch.save dict, written to a temporary name, synced and renamed, so that a crash or a
kill mid-write leaves the previous file intact (never a half-written one).

Keys written by the training loop (train.py): model, optimizer, scheduler (state dicts); loader and rng (lists,
one entry per DDP rank); world_size, step, epoch; best_val_micro_f1, val_metrics (the most recent validation:
loss, micro_f1, best_threshold or best_gate, ...), best_val_metrics; config (TrainConfig), model_config
(ModelConfig), data (grid, wavelength_angstrom, train_store); format_version.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch

CHECKPOINT_FORMAT_VERSION = 1


def save_checkpoint(path: str | os.PathLike, state: dict[str, Any]) -> None:
    """Write `state` (plus format_version) to `path` atomically: temporary file, fsync, rename."""
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    with tmp.open("wb") as f:
        torch.save({**state, "format_version": CHECKPOINT_FORMAT_VERSION}, f)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def load_checkpoint(path: str | os.PathLike, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Load a checkpoint written by `save_checkpoint`; the message names the file when it is not one.

    Checkpoints hold Python objects (RNG states, configs), so they are unpickled fully: load only your own files.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no checkpoint at {path}")
    try:
        state = torch.load(path, map_location=map_location, weights_only=False)
    except Exception as exc:  # noqa: BLE001 - torch.load raises many kinds; all mean "not a readable checkpoint"
        raise ValueError(f"{path} is not a readable xrdmodels checkpoint: {exc}") from exc
    if not isinstance(state, dict) or state.get("format_version") != CHECKPOINT_FORMAT_VERSION:
        found = state.get("format_version") if isinstance(state, dict) else type(state).__name__
        raise ValueError(
            f"{path} is not an xrdmodels checkpoint of format version {CHECKPOINT_FORMAT_VERSION} (found {found!r})"
        )
    return state
