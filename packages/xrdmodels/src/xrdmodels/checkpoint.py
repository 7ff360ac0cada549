"""Checkpoint files: data only, so that opening one never runs code (docs/security.md).

A checkpoint is one `torch.save` dict of plain values: tensors, dicts, lists, tuples, str, int, float, bool and
None. It is loaded with `torch.load(weights_only=True)`, whose unpickler builds nothing else (no class, no
function), so a file crafted to run code on loading is refused with a message naming it. The configurations
(`JSON_KEYS`) are stored as JSON text and decoded by `load_checkpoint`; `save_checkpoint` refuses any other
kind of value. Files are written to a temporary name, synced and renamed, so that a crash or a kill mid-write
leaves the previous file intact (never a half-written one).

Keys written by the training loop (train.py): model, optimizer, scheduler (state dicts); loader and rng (lists,
one entry per DDP rank; RNG states as tensors and numbers); world_size, step, epoch; best_val_micro_f1,
val_metrics (the most recent validation: loss, micro_f1, best_threshold or best_gate, ...), best_val_metrics;
config (TrainConfig without credentials), model_config (ModelConfig), data (grid, wavelength_angstrom,
train_store); format, format_version.

Format version 1 (before this one) needed full unpickling; `python -m xrdmodels.checkpoint upgrade OLD NEW`
converts such a file without running code in it.
"""

from __future__ import annotations

import argparse
import json
import os
import pickle
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from pydantic import ValidationError

from .config import ModelConfig, redact_train_config, redact_url

try:
    from numpy._core.multiarray import _reconstruct
except ImportError:  # NumPy 1
    from numpy.core.multiarray import _reconstruct

CHECKPOINT_FORMAT = "xrdmodels.checkpoint"
CHECKPOINT_FORMAT_VERSION = 2
#: Entries stored as JSON text on disk and as JSON-compatible dicts in memory.
JSON_KEYS = ("config", "model_config", "data")
#: What every checkpoint holds: the weights and the configuration that builds the model for them.
REQUIRED_KEYS = ("model", "model_config")
#: Value types `torch.load(weights_only=True)` rebuilds without running code; containers are checked item by item.
_PLAIN_LEAVES = (torch.Tensor, str, int, float, bool, type(None))
#: The NumPy array reconstructors a format-1 checkpoint refers to (its NumPy RNG state), under the module
#: names of NumPy 1 and 2; they build arrays only, so allowing them to the weights-only unpickler lets
#: `upgrade` read such a file without running code.
_NUMPY_ARRAY_GLOBALS = [
    (_reconstruct, "numpy.core.multiarray._reconstruct"),
    (_reconstruct, "numpy._core.multiarray._reconstruct"),
    np.ndarray,
    np.dtype,
    type(np.dtype(np.uint32)),
]


class CheckpointError(ValueError):
    """A file that is not a loadable checkpoint of this format; the message names the file and what to do."""


def save_checkpoint(path: str | os.PathLike, state: dict[str, Any]) -> None:
    """Write `state` (plus format and format_version) to `path` atomically: temporary file, fsync, rename.

    The `JSON_KEYS` entries must be JSON-compatible dicts; every other value must be plain (tensors, dicts,
    lists, tuples, str, int, float, bool, None), else TypeError names the entry.
    """
    path = Path(path)
    payload: dict[str, Any] = {}
    for key, value in state.items():
        payload[key] = json.dumps(value, sort_keys=True) if key in JSON_KEYS else value
        _check_plain(payload[key], key)
    payload.update(format=CHECKPOINT_FORMAT, format_version=CHECKPOINT_FORMAT_VERSION)
    tmp = path.with_name(path.name + ".tmp")
    with tmp.open("wb") as f:
        torch.save(payload, f)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def _check_plain(value: Any, where: str) -> None:
    if isinstance(value, dict):
        for k, v in value.items():
            if not isinstance(k, str | int):
                raise TypeError(f"checkpoint entry {where} has a key of type {type(k).__name__}")
            _check_plain(v, f"{where}.{k}")
    elif isinstance(value, list | tuple):
        for i, v in enumerate(value):
            _check_plain(v, f"{where}[{i}]")
    elif not isinstance(value, _PLAIN_LEAVES):
        raise TypeError(
            f"checkpoint entry {where} is a {type(value).__module__}.{type(value).__qualname__}; checkpoints "
            "hold tensors, numbers, strings and containers of them only (loadable with weights_only=True)"
        )


def load_checkpoint(path: str | os.PathLike, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Load a checkpoint written by `save_checkpoint` without running code from the file.

    Returns its dict with the `JSON_KEYS` entries decoded. Raises FileNotFoundError when there is no file, and
    CheckpointError naming the file when it needs pickle (it could run code), is of another format version,
    or lacks or mangles the model's entries.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no checkpoint at {path}")
    try:
        state = torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as exc:
        raise _unsafe_file_error(path, exc) from None
    except Exception as exc:  # noqa: BLE001 - torch.load raises many kinds; all mean "not a readable checkpoint"
        raise CheckpointError(f"{path} is not a readable xrdmodels checkpoint: {exc}") from exc
    if not isinstance(state, dict):
        raise CheckpointError(
            f"{path} is not an xrdmodels checkpoint: it holds a {type(state).__name__}, not a dict"
        )
    version = state.get("format_version")
    if version == 1:
        raise CheckpointError(_legacy_message(path))
    if state.get("format") != CHECKPOINT_FORMAT or version != CHECKPOINT_FORMAT_VERSION:
        raise CheckpointError(
            f"{path} is not an xrdmodels checkpoint of format version {CHECKPOINT_FORMAT_VERSION} (format "
            f"{state.get('format')!r}, format_version {version!r}); a newer version needs a newer xrdmodels"
        )
    for key in JSON_KEYS:
        if key in state:
            state[key] = _decode_json(path, key, state[key])
    for key in REQUIRED_KEYS:
        if key not in state:
            raise CheckpointError(
                f"{path} lacks the entry {key!r} ({'weights' if key == 'model' else 'the model configuration'}) "
                "that every xrdmodels checkpoint holds; it is incomplete or was not written by xrdmodels"
            )
    try:
        ModelConfig.model_validate(state["model_config"])
    except ValidationError as exc:
        detail = "; ".join(
            f"{'.'.join(map(str, e['loc'])) or 'model_config'}: {e['msg']}" for e in exc.errors()
        )
        raise CheckpointError(f"{path} has an invalid model_config: {detail}") from None
    return state


def _decode_json(path: Path, key: str, text: Any) -> dict[str, Any]:
    try:
        value = json.loads(text) if isinstance(text, str) else None
    except json.JSONDecodeError as exc:
        raise CheckpointError(f"{path}: entry {key!r} is not valid JSON ({exc})") from None
    if not isinstance(value, dict):
        raise CheckpointError(f"{path}: entry {key!r} must be a JSON object (got {type(text).__name__})")
    return value


def _unsafe_file_error(path: Path, exc: pickle.UnpicklingError) -> CheckpointError:
    """The refusal of a file that the weights-only unpickler cannot build: a format-1 checkpoint or a hostile one.

    The file is read once more with NumPy arrays allowed (still without running code): that tells a format-1
    checkpoint apart, and otherwise names what is left besides arrays, the real reason for the refusal.
    """
    state = None
    try:
        with torch.serialization.safe_globals(_NUMPY_ARRAY_GLOBALS):
            state = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as probe_exc:
        exc = probe_exc
    except Exception:  # noqa: BLE001, S110 - unreadable the second time as well: the first error stands
        pass
    if isinstance(state, dict) and state.get("format_version") == 1:
        return CheckpointError(_legacy_message(path))
    found = re.search(r"GLOBAL ([\w.]+)", str(exc))
    what = f" (it refers to {found.group(1)})" if found else ""
    return CheckpointError(
        f"refusing to load {path}: it needs Python objects unpickled{what}, and unpickling can run any code. "
        "xrdmodels checkpoints hold data only and load with torch.load(weights_only=True); this file was not "
        "written by xrdmodels, or was altered. Do not use it"
    )


def _legacy_message(path: Path) -> str:
    return (
        f"{path} is a format-1 xrdmodels checkpoint, which needed unsafe unpickling; this xrdmodels reads format "
        f"{CHECKPOINT_FORMAT_VERSION} only. Convert it (no code from the file runs): "
        f"python -m xrdmodels.checkpoint upgrade {path} NEW.pt"
    )


def upgrade_checkpoint(source: str | os.PathLike, destination: str | os.PathLike) -> None:
    """Convert a format-1 checkpoint to this format, loading it with weights_only=True (NumPy arrays allowed).

    RNG states become tensors, configurations JSON, and credentials in the training config are dropped, so
    that exact resume keeps working from the converted file.
    """
    source = Path(source)
    try:
        with torch.serialization.safe_globals(_NUMPY_ARRAY_GLOBALS):
            state = torch.load(source, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        raise _unsafe_file_error(source, exc) from None
    if not isinstance(state, dict) or state.get("format_version") != 1:
        found = state.get("format_version") if isinstance(state, dict) else type(state).__name__
        raise CheckpointError(f"{source} is not a format-1 xrdmodels checkpoint (found {found!r})")
    del state["format_version"]
    if "rng" in state:
        state["rng"] = [_upgrade_rng(r) for r in state["rng"]]
    if "config" in state:
        state["config"] = redact_train_config(state["config"])
    if "train_store" in state.get("data", {}):
        state["data"] = {**state["data"], "train_store": redact_url(state["data"]["train_store"])}
    save_checkpoint(destination, state)


def _upgrade_rng(state: dict[str, Any]) -> dict[str, Any]:
    version, words, gauss_next = state["python"]
    kind, keys, pos, has_gauss, cached_gaussian = state["numpy"]
    return {
        **state,
        "python": {
            "version": version,
            "state": torch.tensor(words, dtype=torch.int64),
            "gauss_next": gauss_next,
        },
        "numpy": {
            "kind": kind,
            "keys": torch.from_numpy(np.asarray(keys, dtype=np.int64)),
            "pos": int(pos),
            "has_gauss": int(has_gauss),
            "cached_gaussian": float(cached_gaussian),
        },
    }


def main(argv: Sequence[str] | None = None) -> None:
    """`python -m xrdmodels.checkpoint upgrade OLD NEW`."""
    parser = argparse.ArgumentParser(
        prog="python -m xrdmodels.checkpoint", description=__doc__.splitlines()[0]
    )
    commands = parser.add_subparsers(dest="command", required=True)
    upgrade = commands.add_parser("upgrade", help="convert a format-1 checkpoint to the current format")
    upgrade.add_argument("source", help="format-1 checkpoint (.pt)")
    upgrade.add_argument("destination", help="file to write")
    args = parser.parse_args(argv)
    try:
        upgrade_checkpoint(args.source, args.destination)
    except (CheckpointError, FileNotFoundError) as exc:
        parser.exit(1, f"error: {exc}\n")
    print(f"wrote {args.destination} (checkpoint format {CHECKPOINT_FORMAT_VERSION})")


if __name__ == "__main__":
    main()
