"""Checkpoint files: data only, so that opening one never runs code (docs/security.md).

A checkpoint is one `torch.save` dict of plain values: tensors, dicts, lists, tuples, str, int, float, bool and
None. It is loaded with `torch.load(weights_only=True)`, whose unpickler builds nothing else (no class, no
function), so a file crafted to run code on loading is refused with a message naming it. The configurations
(`JSON_KEYS`) are stored as JSON text and decoded by `load_checkpoint`; `save_checkpoint` refuses any other
kind of value. Files are written to a temporary name, synced and renamed, so that a crash or a kill mid-write
leaves the previous file intact (never a half-written one).

What a training checkpoint holds, and so what `--resume` restores, is `TrainState`: its `state_dict` is the
dict written (plus format and format_version), its `load_state_dict` puts it back into a run. Evaluation and
prediction need only `REQUIRED_KEYS` (the weights and the model configuration); they also read the step, the
training data's wavelength and the latest validation where present.

Format version 1 (before this one) needed full unpickling; `python -m xrdmodels.checkpoint upgrade OLD NEW`
converts such a file without running code in it. `python -m xrdmodels.checkpoint add-label-prior OLD STORE NEW`
records the label prior of the training store in a checkpoint written before training recorded it.
`xrdmodels add-memory` (:func:`add_memory`) adds a memory of the training bank's phases for prediction to use.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import pickle
import random
import re
import shutil
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch
from pydantic import ValidationError
from torch import nn
from torch.optim.lr_scheduler import LRScheduler

from .config import ModelConfig, TrainConfig, parse_storage_options, redact_train_config, redact_url
from .distributed import Runtime, gather
from .ensemble import is_manifest

try:
    from numpy._core.multiarray import _reconstruct
except ImportError:  # NumPy 1
    from numpy.core.multiarray import _reconstruct

log = logging.getLogger(__name__)

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


def copy_checkpoint(source: str | os.PathLike, path: str | os.PathLike) -> None:
    """Copy a checkpoint file to ``path`` as :func:`save_checkpoint` writes one: temporary file, fsync, rename, so
    a kill during the copy never leaves a truncated file under the checkpoint's name."""
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    with open(source, "rb") as src, tmp.open("wb") as dst:
        shutil.copyfileobj(src, dst, 16 * 2**20)
        dst.flush()
        os.fsync(dst.fileno())
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
    if path.stat().st_size == 0:
        raise CheckpointError(
            f"{path} is empty (0 bytes), not an xrdmodels checkpoint: write or copy it again"
        )
    _check_torch_file(path)
    try:
        device_type = torch.device(map_location).type
    except RuntimeError as exc:
        raise CheckpointError(f"cannot load {path}: {map_location!r} is not a device ({exc})") from None
    if device_type == "cuda" and not torch.cuda.is_available():
        raise CheckpointError(
            f"cannot load {path} onto {map_location}: this machine has no CUDA device that torch can use "
            "(torch.cuda.is_available() is False); use the CPU (--device cpu)"
        )
    try:
        state = torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as exc:
        raise _unsafe_file_error(path, exc) from None
    except Exception as exc:  # noqa: BLE001 - torch.load raises many kinds; all mean "not a readable checkpoint"
        raise CheckpointError(
            f"{path} is not a readable xrdmodels checkpoint ({type(exc).__name__}: {exc}): a file cut short, or "
            "not one `xrdmodels train` or `add-memory` wrote (last.pt, best.pt, model.pt)"
        ) from exc
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


def _check_torch_file(path: Path) -> None:
    """Refuse, before torch reads it, a file that is no torch file at all (neither a zip archive, the format of
    torch.save since torch 1.6, nor a legacy pickle): a pattern file or a manifest named where a checkpoint goes
    would otherwise get the weights-only unpickler's refusal, which reads as if the file were hostile."""
    with path.open("rb") as handle:
        head = handle.read(4)
    if head.startswith(b"PK\x03\x04") or head[:1] == b"\x80":
        return
    what = (
        "an ensemble manifest (.json), which this command does not take in place of a checkpoint: name each "
        "member's checkpoint (evaluate, predict and score-measured read manifests)"
        if is_manifest(path)
        else "a text or other non-torch file"
    )
    raise CheckpointError(
        f"{path} is not an xrdmodels checkpoint but {what}. Checkpoints are the torch files (.pt) that "
        "`xrdmodels train` and `add-memory` write, named as a command's first argument (then the pattern files)"
    )


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


class Stateful(Protocol):
    """What saves and restores its own position: a StatefulDataLoader here."""

    def state_dict(self) -> dict[str, Any]: ...

    def load_state_dict(self, state_dict: dict[str, Any]) -> None: ...


#: TrainConfig fields that define the data order: the saved stream position means nothing under other values.
_STREAM_FIELDS = ("batch_size", "seed", "num_workers", "shuffle_shards")
#: TrainConfig fields whose change at a resumption alters the trajectory (allowed, with a warning).
_TRAJECTORY_FIELDS = (
    "train_store",
    "lr",
    "weight_decay",
    "betas",
    "warmup_steps",
    "total_steps",
    "min_lr_ratio",
    "grad_clip",
    "precision",
    "torch_threads",
)
#: The `TrainState.state_dict` entries that exact resume needs besides `REQUIRED_KEYS`; older runs may lack
#: the validation metrics, which then start empty.
_RESUME_KEYS = (
    "optimizer",
    "scheduler",
    "loader",
    "rng",
    "world_size",
    "step",
    "epoch",
    "best_val_micro_f1",
    "config",
)


@dataclass
class TrainState:
    """Everything a training checkpoint holds, and so everything `--resume` restores (A.6, exact resume).

    The fields are the run's live objects and counters; `state_dict` adds, per DDP rank, the loader position
    and the global RNG states, and the number of ranks. The training loop updates the counters in place.
    """

    model: nn.Module
    optimizer: torch.optim.Optimizer
    scheduler: LRScheduler
    #: This rank's data loader; its position (stream state of every DataLoader worker) is saved per rank.
    loader: Stateful
    #: Saved without credentials (`TrainConfig.persistable`).
    config: TrainConfig
    model_config: ModelConfig
    #: What prediction needs to know of the training data: grid, wavelength_angstrom, train_store,
    #: label_prior (230 floats: each group's share of the training phases, `MixtureStore.label_prior`) and, when
    #: the store records it, recipe (its generating recipe as JSON data; without it A.1 is assumed).
    data: dict[str, Any]
    #: Optimisation steps taken.
    step: int = 0
    #: Passes over the training store begun before the current one.
    epoch: int = 0
    #: Highest validation micro-F1 so far (A.6: selects best.pt); -1 before the first validation.
    best_val_micro_f1: float = -1.0
    #: The most recent validation (loss, micro_f1, best_threshold or best_gate, ...; see `evaluate_store`).
    val_metrics: dict[str, float] = field(default_factory=dict)
    #: The validation that scored `best_val_micro_f1`.
    best_val_metrics: dict[str, float] = field(default_factory=dict)
    #: The training bank's phases for prediction (`TrainConfig.phase_memory`, entry `phase_memory`), or None;
    #: computed by each run from the bank, never restored.
    memory: dict[str, Any] | None = None

    def state_dict(self, rt: Runtime) -> dict[str, Any]:
        """The checkpoint's entries, plain values for `save_checkpoint`.

        Collective under DDP (the loader and RNG states of all ranks are gathered): every rank calls it at the
        same step; only the main rank needs to write the result.
        """
        return {
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "loader": gather(self.loader.state_dict(), rt),
            "rng": gather(rng_state(rt.device), rt),
            "world_size": rt.world_size,
            "step": self.step,
            "epoch": self.epoch,
            "best_val_micro_f1": self.best_val_micro_f1,
            "val_metrics": self.val_metrics,
            "best_val_metrics": self.best_val_metrics,
            "config": self.config.persistable(),
            "model_config": self.model_config.model_dump(mode="json"),
            "data": self.data,
            **({"phase_memory": self.memory} if self.memory is not None else {}),
        }

    def load_state_dict(self, state: dict[str, Any], rt: Runtime) -> None:
        """Continue from `state`, as `load_checkpoint(map_location="cpu")` returns it and `check_resumable` passed it.

        Restores the weights, AdamW moments, schedule position, counters, this rank's loader position and this
        rank's RNG states; config, model_config and data stay this run's (`check_resumable` compared them).
        """
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        self.loader.load_state_dict(state["loader"][rt.rank])
        self.step, self.epoch = int(state["step"]), int(state["epoch"])
        self.best_val_micro_f1 = float(state["best_val_micro_f1"])
        self.val_metrics = state.get("val_metrics", {})
        self.best_val_metrics = state.get("best_val_metrics", {})
        set_rng_state(state["rng"][rt.rank], rt.device)

    @staticmethod
    def check_resumable(
        state: dict[str, Any], path: Path, config: TrainConfig, model_config: ModelConfig, world_size: int
    ) -> None:
        """Raise ValueError, naming `path` and the fix, unless a run of `config` on `world_size` ranks can
        continue exactly from `state`; warn when a changed setting makes it depart from the saved trajectory.
        """
        missing = [k for k in _RESUME_KEYS if k not in state]
        if missing:
            raise ValueError(
                f"cannot resume {path}: it lacks {', '.join(map(repr, missing))}, which a checkpoint written by "
                "xrdmodels train holds; start a new run (another out_dir) instead"
            )
        saved_world = int(state["world_size"])
        if saved_world != world_size:
            raise ValueError(
                f"{path} was written by {saved_world} rank(s), this run has {world_size}; resume with the same "
                "number of processes (torchrun --nproc-per-node) to continue exactly"
            )
        # Through ModelConfig, so a field added since the checkpoint was written takes its default, which keeps
        # the behaviour of the version that wrote it (e.g. background_removal "none").
        saved_model = ModelConfig.model_validate(state["model_config"]).model_dump(mode="json")
        now_model = model_config.model_dump(mode="json")
        differing = sorted(k for k in now_model if saved_model.get(k) != now_model[k])
        if differing:
            detail = ", ".join(f"{k}: saved {saved_model.get(k)!r}, now {now_model[k]!r}" for k in differing)
            raise ValueError(f"cannot resume {path}: the model configuration differs ({detail})")
        saved_config = state["config"]
        # Both sides without credentials: the saved config never holds them (docs/security.md).
        now_config = config.persistable()
        changed = [k for k in _STREAM_FIELDS if saved_config.get(k) != now_config.get(k)]
        if changed:
            detail = ", ".join(
                f"{k}: saved {saved_config.get(k)!r}, now {now_config.get(k)!r}" for k in changed
            )
            raise ValueError(
                f"cannot resume {path}: its data-stream position belongs to other settings ({detail}); resume "
                "with the saved values"
            )
        changed = [k for k in _TRAJECTORY_FIELDS if saved_config.get(k) != now_config.get(k)]
        if changed:
            log.warning(
                "resuming %s with changed %s: the run will not reproduce an uninterrupted one",
                path,
                ", ".join(f"{k} ({saved_config.get(k)!r} -> {now_config.get(k)!r})" for k in changed),
            )


def rng_state(device: torch.device) -> dict[str, Any]:
    """This process's global RNG states: Python, NumPy, torch CPU, and its own CUDA device's when on a GPU.

    Held as tensors and numbers only, so that a checkpoint of them loads with weights_only=True.
    """
    state = {
        **_plain_rng(random.getstate(), np.random.get_state()),  # noqa: NPY002
        "torch": torch.get_rng_state(),
    }
    if device.type == "cuda":
        # Only this rank's GPU: touching every device would open a CUDA context on each from every rank.
        state["cuda"] = torch.cuda.get_rng_state(device)
    return state


def set_rng_state(state: dict[str, Any], device: torch.device) -> None:
    """Restore what `rng_state` returned (tensors must be on the CPU: load checkpoints with map_location=cpu)."""
    py, npy = state["python"], state["numpy"]
    random.setstate((py["version"], tuple(py["state"].tolist()), py["gauss_next"]))
    np.random.set_state(  # noqa: NPY002
        (
            npy["kind"],
            npy["keys"].numpy().astype(np.uint32),
            npy["pos"],
            npy["has_gauss"],
            npy["cached_gaussian"],
        )
    )
    torch.set_rng_state(state["torch"])
    if device.type == "cuda" and "cuda" in state:
        torch.cuda.set_rng_state(state["cuda"], device)


def _plain_rng(python_state: tuple, numpy_state: tuple) -> dict[str, Any]:
    """Python's `random.getstate()` and NumPy's `np.random.get_state()` tuples as tensors and numbers."""
    version, words, gauss_next = python_state
    kind, keys, pos, has_gauss, cached_gaussian = numpy_state
    return {
        # Mersenne Twister words are below 2**32: exact in int64.
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


def add_label_prior(
    source: str | os.PathLike,
    train_store: str,
    destination: str | os.PathLike,
    storage_options: dict | None = None,
) -> None:
    """Write `source` to `destination` with ``data.label_prior`` from `train_store` (its
    :meth:`~xrdmodels.data.MixtureStore.label_prior`, as training now records it), so that prediction hedges the
    ranking of a checkpoint trained before that (:func:`xrdmodels.predict.label_prior`). Name the store the
    checkpoint was trained on: the prior is read from it, not checked against the checkpoint's ``train_store``.
    ``storage_options``: fsspec options used where `train_store` is a remote URL."""
    from .config import remote_options
    from .data import MixtureStore

    state = load_checkpoint(source)
    prior = MixtureStore(train_store, remote_options(train_store, storage_options)).label_prior()
    state["data"] = {**state.get("data", {}), "label_prior": prior.tolist()}
    save_checkpoint(destination, state)


def add_memory(
    source: str | os.PathLike,
    bank: str,
    destination: str | os.PathLike,
    split: str = "train",
    storage_options: dict | None = None,
) -> int:
    """Write `source` to `destination` with a memory of `bank`'s read phases of `split` (default: the training
    phases, those the model learned from; ``all``: every read phase; ``storage_options``: fsspec options used where
    `bank` is a remote URL), as the neighbour search shows them to a
    model (:class:`~xrdmodels.neighbours.ReferencePhases`, entry ``phase_memory``), so that prediction ranks with
    it (:func:`xrdmodels.predict.predict_one`). Training writes the same entry with ``phase_memory`` on
    (:class:`~xrdmodels.config.TrainConfig`). Returns the number of phases kept.

    The bank must be the one the model's training store was written from (its ``bank_fingerprint``) where that
    store can still be read; where it cannot, the bank is taken as given, with a warning.

    Raises:
        LibraryFormatError: `bank` is not a usable bank store.
        ValueError: the bank is not on the model's grid, records no splits, holds no read phase of `split`, or is
            not the training store's bank.
    """
    import zarr

    from .config import remote_options
    from .neighbours import MEMORY_KEY, bank_memory
    from .predict import model_grid

    state = load_checkpoint(source)
    train_store = state.get("data", {}).get("train_store")
    fingerprint = None
    try:
        attrs = zarr.open_group(
            train_store, mode="r", storage_options=remote_options(train_store, storage_options)
        ).attrs
        fingerprint = attrs.get("bank_fingerprint")
    except Exception:  # noqa: BLE001 - moved, remote or gone: the bank cannot be checked, which is said below
        log.warning(
            "%s: its training store %s cannot be read, so %s is not checked against the bank the model learned "
            "from", source, redact_url(train_store), redact_url(bank)
        )  # fmt: skip
    references, state[MEMORY_KEY] = bank_memory(
        bank, split, model_grid(state), remote_options(bank, storage_options), fingerprint
    )
    save_checkpoint(destination, state)
    return len(references)


def _upgrade_rng(state: dict[str, Any]) -> dict[str, Any]:
    # Format 1 held the getstate() tuples themselves.
    return {**state, **_plain_rng(state["python"], state["numpy"])}


class _QuietParser(argparse.ArgumentParser):
    """argparse repeats arguments it does not know, and a mistyped option's value may be a credential
    (`--storage-opton secret=...`): those are refused without being repeated."""

    def error(self, message: str):
        if message.startswith("unrecognized arguments"):
            message = "unrecognized arguments (not repeated here: one may be a credential); see --help"
        super().error(message)


def main(argv: Sequence[str] | None = None) -> None:
    """`python -m xrdmodels.checkpoint upgrade OLD NEW`, `... add-label-prior OLD STORE NEW`."""
    parser = _QuietParser(prog="python -m xrdmodels.checkpoint", description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)
    upgrade = commands.add_parser("upgrade", help="convert a format-1 checkpoint to the current format")
    upgrade.add_argument("source", help="format-1 checkpoint (.pt)")
    upgrade.add_argument("destination", help="file to write")
    prior = commands.add_parser(
        "add-label-prior",
        help="record the label prior of the training store in a checkpoint written before training recorded it",
    )
    prior.add_argument("source", help="checkpoint (.pt) of the current format")
    prior.add_argument("store", help="the mixture store it was trained on (path or fsspec URL)")
    prior.add_argument("destination", help="file to write")
    prior.add_argument(
        "--storage-option",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="fsspec option for a remote STORE (s3://...), repeatable, as `xrdmodels evaluate --storage-option`; "
        "never written to a file or log. What is not given here comes from the environment.",
    )
    args = parser.parse_args(argv)
    try:
        if args.command == "upgrade":
            upgrade_checkpoint(args.source, args.destination)
        else:
            add_label_prior(
                args.source, args.store, args.destination, parse_storage_options(args.storage_option)
            )
    except (CheckpointError, FileNotFoundError, ValueError) as exc:
        parser.exit(1, f"error: {exc}\n")
    print(f"wrote {args.destination} (checkpoint format {CHECKPOINT_FORMAT_VERSION})")


if __name__ == "__main__":
    main()
