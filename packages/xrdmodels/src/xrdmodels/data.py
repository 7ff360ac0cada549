"""Reading mixture stores (the format contract of docs/formats.md) and streaming them into PyTorch.

This module knows the store only through its documented layout; it never imports xrdsynth.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import zarr
from torch.utils.data import IterableDataset, get_worker_info

MIXTURE_FORMAT = "xrdsynth.mixtures"
SUPPORTED_VERSIONS = (1,)
N_SPACEGROUPS = 230


class StoreFormatError(ValueError):
    """A store this reader cannot use: not a mixture store, an unknown format version, or incomplete."""


@dataclass(frozen=True)
class Grid:
    two_theta_min_deg: float
    two_theta_max_deg: float
    n_bins: int

    def centers_deg(self) -> np.ndarray:
        w = (self.two_theta_max_deg - self.two_theta_min_deg) / self.n_bins
        return self.two_theta_min_deg + w * (np.arange(self.n_bins) + 0.5)


class MixtureStore:
    """A mixture store opened for reading, with whole-shard access."""

    def __init__(self, url: str, storage_options: dict | None = None, *, require_complete: bool = True):
        self.url = str(url)
        self.storage_options = storage_options
        try:
            self.root = zarr.open_group(self.url, mode="r", storage_options=storage_options)
        except Exception as exc:  # noqa: BLE001
            raise StoreFormatError(f"no mixture store at {self.url} ({exc})") from exc
        attrs = dict(self.root.attrs)
        if attrs.get("format") != MIXTURE_FORMAT:
            raise StoreFormatError(f"{self.url} is not a mixture store (format {attrs.get('format')!r}, "
                                   f"expected {MIXTURE_FORMAT!r})")
        if attrs.get("format_version") not in SUPPORTED_VERSIONS:
            raise StoreFormatError(
                f"{self.url} has mixture format version {attrs.get('format_version')}; this xrdmodels reads "
                f"version(s) {', '.join(map(str, SUPPORTED_VERSIONS))}. Regenerate the store or upgrade xrdmodels."
            )
        if require_complete and not attrs.get("complete"):
            raise StoreFormatError(f"{self.url} is incomplete (generation was interrupted); finish it with "
                                   "`xrdsynth mixtures generate ... --resume`")
        self.attrs = attrs
        self.n_samples = int(attrs["n_samples"])
        self.shard_size = int(attrs["shard_size"])
        self.grid = Grid(**attrs["grid"])
        self.split = str(attrs.get("split", ""))

    @property
    def n_shards(self) -> int:
        return -(-self.n_samples // self.shard_size)

    def complete_shards(self) -> np.ndarray:
        return np.flatnonzero(np.asarray(self.root["shard_complete"][:], dtype=bool))

    def shard_rows(self, shard: int) -> tuple[int, int]:
        lo = shard * self.shard_size
        return lo, min(lo + self.shard_size, self.n_samples)

    def read_rows(self, lo: int, hi: int) -> dict[str, np.ndarray]:
        """Rows [lo, hi) of the arrays a model needs: pattern float32, window bins, labels and weights."""
        return {
            "pattern": np.asarray(self.root["pattern"][lo:hi], dtype=np.float32),
            "window_bins": np.asarray(self.root["window_bins"][lo:hi], dtype=np.int64),
            "n_phases": np.asarray(self.root["n_phases"][lo:hi], dtype=np.int64),
            "phase_spacegroup": np.asarray(self.root["phase_spacegroup"][lo:hi], dtype=np.int64),
            "phase_weight": np.asarray(self.root["phase_weight"][lo:hi], dtype=np.float32),
        }

    def read_shard(self, shard: int) -> dict[str, np.ndarray]:
        return self.read_rows(*self.shard_rows(shard))


def window_mask(window_bins: np.ndarray, n_bins: int) -> np.ndarray:
    """Bool (N, n_bins) measurement mask from half-open window bins (N, 2)."""
    idx = np.arange(n_bins)
    return (idx[None, :] >= window_bins[:, :1]) & (idx[None, :] < window_bins[:, 1:2])


def multi_hot(phase_spacegroup: np.ndarray) -> np.ndarray:
    """Float (N, 230) presence targets from padded space-group labels (N, 5), 0 = padding."""
    out = np.zeros((len(phase_spacegroup), N_SPACEGROUPS), dtype=np.float32)
    rows, cols = np.nonzero(phase_spacegroup > 0)
    out[rows, phase_spacegroup[rows, cols] - 1] = 1.0
    return out


def to_batch(rows: dict[str, np.ndarray], n_bins: int) -> dict[str, torch.Tensor]:
    """Model-ready tensors: pattern, mask, presence targets, padded labels (0 = none), K*, weights."""
    return {
        "pattern": torch.from_numpy(rows["pattern"]),
        "mask": torch.from_numpy(window_mask(rows["window_bins"], n_bins)),
        "targets": torch.from_numpy(multi_hot(rows["phase_spacegroup"])),
        "labels": torch.from_numpy(rows["phase_spacegroup"]),
        "n_phases": torch.from_numpy(rows["n_phases"]),
        "phase_weight": torch.from_numpy(rows["phase_weight"]),
    }


class ShardStream(IterableDataset):
    """Batches streamed from whole shards of a mixture store, shuffled, split evenly over ranks and workers.

    Each epoch permutes the complete shards with (seed, epoch); the permutation is dealt round-robin to the
    world_size × num_workers readers, each of which yields exactly the same number of batches (the shortest
    reader's count, so no DDP rank runs out early). Rows are shuffled within a window of `shuffle_shards`
    shards. Shards are read whole in a background thread, `prefetch_shards` ahead.

    Resumption is exact: `state_dict()` records (epoch, batches yielded); loading it makes the next
    iteration skip exactly those batches (shards wholly before the position are not even read). With
    torchdata's StatefulDataLoader the per-worker states are saved and restored automatically.
    """

    def __init__(
        self,
        url: str,
        batch_size: int,
        *,
        seed: int = 0,
        shuffle: bool = True,
        shuffle_shards: int = 4,
        prefetch_shards: int = 2,
        rank: int = 0,
        world_size: int = 1,
        storage_options: dict | None = None,
        drop_last: bool = True,
    ):
        super().__init__()
        self.url = url
        self.storage_options = storage_options
        self.store = MixtureStore(url, storage_options)
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        self.batch_size = batch_size
        self.seed = seed
        self.shuffle = shuffle
        self.shuffle_shards = max(1, shuffle_shards)
        self.prefetch_shards = max(1, prefetch_shards)
        self.rank, self.world_size = rank, world_size
        self.drop_last = drop_last
        self.epoch = 0
        self._yielded = 0
        self._resume_from = 0

    # -- the deterministic plan -------------------------------------------------------------------
    def _reader(self) -> tuple[int, int]:
        info = get_worker_info()
        n_workers = info.num_workers if info is not None else 1
        worker = info.id if info is not None else 0
        return self.rank * n_workers + worker, self.world_size * n_workers

    def _plan(self, epoch: int, reader: int, n_readers: int) -> tuple[list[int], int]:
        """Shards of this reader for this epoch, and the number of batches every reader yields."""
        shards = self.store.complete_shards()
        if self.shuffle:
            shards = np.random.default_rng([self.seed, epoch]).permutation(shards)
        dealt = [shards[r::n_readers] for r in range(n_readers)]
        sizes = [sum(self.store.shard_rows(int(s))[1] - self.store.shard_rows(int(s))[0] for s in d) for d in dealt]
        per = min(sizes) // self.batch_size if self.drop_last else -(-min(sizes) // self.batch_size)
        if min(sizes) == 0:
            raise ValueError(
                f"{self.url}: {len(shards)} complete shards cannot feed {n_readers} readers "
                f"(ranks × DataLoader workers); use fewer workers or smaller shards"
            )
        return [int(s) for s in dealt[reader]], per

    def __len__(self) -> int:
        _, per = self._plan(self.epoch, 0, self.world_size)
        return per

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch
        self._yielded = 0
        self._resume_from = 0

    # -- resumption ---------------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        return {"epoch": self.epoch, "batches_yielded": self._yielded, "seed": self.seed}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if state.get("seed", self.seed) != self.seed:
            raise ValueError(f"stream state was saved with seed {state['seed']}, this stream uses {self.seed}")
        self.epoch = int(state["epoch"])
        self._resume_from = int(state["batches_yielded"])
        self._yielded = self._resume_from

    # -- iteration ----------------------------------------------------------------------------------
    def __iter__(self) -> Iterator[dict[str, torch.Tensor]]:
        reader, n_readers = self._reader()
        shards, n_batches = self._plan(self.epoch, reader, n_readers)
        skip = self._resume_from
        self._resume_from = 0
        self._yielded = skip
        rng = np.random.default_rng([self.seed, self.epoch, reader, 1])
        n_bins = self.store.grid.n_bins
        windows = [shards[i : i + self.shuffle_shards] for i in range(0, len(shards), self.shuffle_shards)]
        batch_index = 0
        carry: dict[str, np.ndarray] | None = None
        pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="shard-prefetch")
        lock = threading.Lock()

        def load(window: list[int]) -> dict[str, np.ndarray]:
            with lock:
                parts = [self.store.read_shard(s) for s in window]
            return {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}

        try:
            pending: list[Future] = [pool.submit(load, w) for w in windows[: self.prefetch_shards]]
            next_window = len(pending)
            while pending and batch_index < n_batches:
                rows = pending.pop(0).result()
                if next_window < len(windows):
                    pending.append(pool.submit(load, windows[next_window]))
                    next_window += 1
                # The permutation is drawn even for skipped windows so resumed streams stay in step.
                order = rng.permutation(len(rows["pattern"])) if self.shuffle else np.arange(len(rows["pattern"]))
                rows = {k: v[order] for k, v in rows.items()}
                if carry is not None:
                    rows = {k: np.concatenate([carry[k], rows[k]]) for k in rows}
                n_full = len(rows["pattern"]) // self.batch_size
                for b in range(n_full):
                    if batch_index >= n_batches:
                        break
                    if batch_index >= skip:
                        sl = slice(b * self.batch_size, (b + 1) * self.batch_size)
                        self._yielded = batch_index + 1
                        yield to_batch({k: v[sl] for k, v in rows.items()}, n_bins)
                    batch_index += 1
                carry = {k: v[n_full * self.batch_size :] for k, v in rows.items()}
            if not self.drop_last and carry is not None and len(carry["pattern"]) and batch_index < n_batches:
                if batch_index >= skip:
                    self._yielded = batch_index + 1
                    yield to_batch(carry, n_bins)
        finally:
            pool.shutdown(wait=False, cancel_futures=True)
