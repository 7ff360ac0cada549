"""Reading mixture stores (the format contract of docs/formats.md) and streaming them into PyTorch.

This module knows the store only through its documented layout; it never imports xrdsynth.
"""

from __future__ import annotations

import os
from collections import deque
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import fsspec
import numpy as np
import torch
import zarr
from torch.utils.data import IterableDataset, get_worker_info

from .config import N_SPACE_GROUPS, ModelConfig, is_local_url

MIXTURE_FORMAT = "xrdsynth.mixtures"
SUPPORTED_VERSIONS = (1,)

#: The per-sample arrays a model needs, as read from the store (other arrays, e.g. `params/*`, are not read).
MODEL_ARRAYS = ("pattern", "window_bins", "n_phases", "phase_spacegroup", "phase_weight")
#: Samples read for a store's label prior: mixtures are independent draws, so the first 200,000 give each group's
#: share of the phases to ~1e-3 whatever the store's size, in one read of ~2 MB.
LABEL_PRIOR_SAMPLES = 200_000


class StoreFormatError(ValueError):
    """A store this reader cannot use: not a mixture store, an unknown format version, or incomplete."""


@dataclass(frozen=True)
class Grid:
    """The fixed 2θ grid of a store (A.1): bin i spans `min + i·w .. min + (i+1)·w`, `w = (max - min) / n_bins`."""

    two_theta_min_deg: float
    two_theta_max_deg: float
    n_bins: int

    def centers_deg(self) -> np.ndarray:
        """Bin centres in degrees 2θ, shape (n_bins,)."""
        w = (self.two_theta_max_deg - self.two_theta_min_deg) / self.n_bins
        return self.two_theta_min_deg + w * (np.arange(self.n_bins) + 0.5)


class MixtureStore:
    """A mixture store opened for reading, with whole-shard access.

    Opening validates the attributes (format name, version, completeness) and the shapes of the arrays a
    model needs, and keeps their handles so that reads do not re-fetch metadata (one request per array on S3).
    """

    def __init__(self, url: str, storage_options: dict | None = None, *, require_complete: bool = True):
        self.url = str(url)
        self.storage_options = storage_options
        if storage_options and "://" not in self.url:
            raise StoreFormatError(
                f"{self.url} is a local path, which takes no storage_options (they are for fsspec URLs such as "
                "s3://bucket/store.zarr): leave storage_options out, or give the store as a URL"
            )
        try:
            self.root = zarr.open_group(self.url, mode="r", storage_options=storage_options)
        except Exception as exc:  # noqa: BLE001 - zarr/fsspec raise many kinds; all mean "nothing usable here"
            raise StoreFormatError(f"no mixture store at {self.url} ({type(exc).__name__}: {exc})") from exc
        attrs = dict(self.root.attrs)
        if attrs.get("format") != MIXTURE_FORMAT:
            raise StoreFormatError(
                f"{self.url} is not a mixture store (attribute format={attrs.get('format')!r}, "
                f"expected {MIXTURE_FORMAT!r}); point to a store written by `xrdsynth mixtures generate`"
            )
        version = attrs.get("format_version")
        if version not in SUPPORTED_VERSIONS:
            raise StoreFormatError(
                f"{self.url} has mixture format_version {version!r}; this xrdmodels reads format_version "
                f"{', '.join(map(str, SUPPORTED_VERSIONS))}. Regenerate the store or upgrade xrdmodels."
            )
        if require_complete and attrs.get("complete") is not True:
            raise StoreFormatError(
                f"{self.url} is incomplete (attribute complete={attrs.get('complete')!r}: generation was "
                "interrupted); finish it with `xrdsynth mixtures generate ... --resume`"
            )
        for key in ("n_samples", "shard_size", "grid"):
            if key not in attrs:
                raise StoreFormatError(
                    f"{self.url} lacks the attribute {key!r} required by format_version {version}"
                )
        self.attrs = attrs
        self.n_samples = int(attrs["n_samples"])
        self.shard_size = int(attrs["shard_size"])
        self.grid = Grid(**attrs["grid"])
        self.split = str(attrs.get("split", ""))
        self.arrays: dict[str, zarr.Array] = {}
        for name in MODEL_ARRAYS:
            try:
                array = self.root[name]
            except KeyError as exc:
                raise StoreFormatError(f"{self.url} lacks the array {name!r} (docs/formats.md)") from exc
            if array.shape[0] != self.n_samples:
                raise StoreFormatError(
                    f"{self.url}: array {name!r} has {array.shape[0]} rows, attribute n_samples says {self.n_samples}"
                )
            self.arrays[name] = array
        if self.arrays["pattern"].shape[1:] != (self.grid.n_bins,):
            raise StoreFormatError(
                f"{self.url}: pattern has shape {self.arrays['pattern'].shape}, expected "
                f"({self.n_samples}, {self.grid.n_bins}) from grid.n_bins"
            )
        flags = np.asarray(self.root["shard_complete"][:], dtype=bool)
        if len(flags) != self.n_shards:
            raise StoreFormatError(
                f"{self.url}: shard_complete has {len(flags)} flags for {self.n_shards} shards"
            )
        if require_complete and not flags.all():
            raise StoreFormatError(
                f"{self.url} is marked complete but shards {np.flatnonzero(~flags)[:10].tolist()} lack their "
                "shard_complete flag; the store is damaged, regenerate it"
            )
        self._shard_complete = flags

    @property
    def n_shards(self) -> int:
        return -(-self.n_samples // self.shard_size)

    @property
    def bank_url(self) -> str | None:
        """The bank the store was written from (None if it records none): `bank_url` as recorded where that is a
        URL or an absolute path; for a relative one (relative to where the store was written), the bank found
        through `bank_path_from_store` (its path from the store's folder, written where both are local) where a
        bank is there, else `bank_url` as recorded, so a store read from another folder finds its own bank."""
        recorded = self.attrs.get("bank_url")
        relative = self.attrs.get("bank_path_from_store")
        if not recorded or not relative or not is_local_url(recorded) or not is_local_url(self.url):
            return recorded
        if Path(fsspec.core.split_protocol(recorded)[1]).is_absolute():
            return recorded
        beside = Path(fsspec.core.split_protocol(self.url)[1]) / relative
        return str(beside) if beside.exists() else recorded

    def complete_shards(self) -> np.ndarray:
        """Indices of the shards whose `shard_complete` flag is set (as of opening), ascending."""
        return np.flatnonzero(self._shard_complete)

    def shard_rows(self, shard: int) -> tuple[int, int]:
        """Half-open row range [lo, hi) of a shard."""
        lo = shard * self.shard_size
        return lo, min(lo + self.shard_size, self.n_samples)

    def read_rows(self, lo: int, hi: int) -> dict[str, np.ndarray]:
        """Rows [lo, hi) of the arrays a model needs (MODEL_ARRAYS), in their stored dtypes; see `to_batch`."""
        return {name: array[lo:hi] for name, array in self.arrays.items()}

    def read_shard(self, shard: int) -> dict[str, np.ndarray]:
        return self.read_rows(*self.shard_rows(shard))

    def label_prior(self, samples: int = LABEL_PRIOR_SAMPLES) -> np.ndarray:
        """(230,) each space group's share of the phases of the first `samples` mixtures (index g - 1, sums to
        1): the frequency of the training labels, which prediction hedges its ranking towards
        (:mod:`xrdmodels.predict`).

        Raises:
            StoreFormatError: those mixtures hold no phase label in 1..230.
        """
        groups = np.asarray(self.arrays["phase_spacegroup"][: min(samples, self.n_samples)]).ravel()
        groups = groups[(groups > 0) & (groups <= N_SPACE_GROUPS)].astype(np.intp)
        counts = np.bincount(groups, minlength=N_SPACE_GROUPS + 1)[1:]
        if counts.sum() == 0:
            raise StoreFormatError(
                f"{self.url}: its first {min(samples, self.n_samples)} mixtures hold no space-group label in "
                f"1..{N_SPACE_GROUPS} (array phase_spacegroup); the store is damaged, regenerate it"
            )
        return counts / counts.sum()


def window_mask(window_bins: np.ndarray, n_bins: int) -> np.ndarray:
    """Bool (N, n_bins) measurement mask from half-open window bins (N, 2): bin i is measured iff lo <= i < hi."""
    # Comparing in int16 (enough for any grid below 32,768 bins) is ~5x faster than in int32/int64.
    dtype = np.int16 if n_bins < 2**15 else np.int64
    bounds = np.clip(window_bins, 0, n_bins).astype(dtype)
    idx = np.arange(n_bins, dtype=dtype)
    return (idx[None, :] >= bounds[:, :1]) & (idx[None, :] < bounds[:, 1:2])


def multi_hot(phase_spacegroup: np.ndarray) -> np.ndarray:
    """Float32 (N, 230) presence targets from padded space-group labels (N, 5); 0 is padding, s -> column s-1."""
    out = np.zeros((len(phase_spacegroup), N_SPACE_GROUPS), dtype=np.float32)
    rows, cols = np.nonzero(phase_spacegroup > 0)
    out[rows, phase_spacegroup[rows, cols].astype(np.intp) - 1] = 1.0
    return out


def to_batch(rows: dict[str, np.ndarray], n_bins: int) -> dict[str, torch.Tensor]:
    """Model-ready tensors from rows as stored (MixtureStore.read_rows).

    Keys: pattern float32 (N, n_bins); mask bool (N, n_bins); targets float32 (N, 230) multi-hot;
    labels int64 (N, 5) space groups, 0 = none; n_phases int64 (N,) K*; phase_weight float32 (N, 5).
    """
    labels = np.asarray(rows["phase_spacegroup"], dtype=np.int64)
    return {
        # torch converts float16 to float32 several times faster than numpy (vectorised half conversion).
        "pattern": torch.from_numpy(np.ascontiguousarray(rows["pattern"])).to(torch.float32),
        "mask": torch.from_numpy(window_mask(rows["window_bins"], n_bins)),
        "targets": torch.from_numpy(multi_hot(labels)),
        "labels": torch.from_numpy(labels),
        "n_phases": torch.from_numpy(np.asarray(rows["n_phases"], dtype=np.int64)),
        "phase_weight": torch.from_numpy(np.ascontiguousarray(rows["phase_weight"], dtype=np.float32)),
    }


@dataclass(frozen=True)
class _Piece:
    """Rows [lo, hi) of one shard, read with one zarr call per array."""

    shard: int
    lo: int
    hi: int


class ShardStream(IterableDataset):
    """Batches streamed from the shards of a mixture store, shuffled, split evenly over ranks and workers.

    The plan of an epoch is a pure function of (seed, epoch, world_size, number of DataLoader workers):

    - the complete shards are permuted with (seed, epoch) (ascending when `shuffle=False`) and their rows laid
      end to end; rank r takes the contiguous r-th of world_size equal parts (sizes differ by at most one row);
    - every rank yields the same number of batches, so no DDP rank runs out early. With `drop_last=True` all
      batches hold `batch_size` rows and at most `batch_size` rows per rank are left out (a different few
      each epoch). With `drop_last=False` every sample appears exactly once; a rank's last batches may be
      smaller (never empty);
    - a rank's batches are divided into contiguous blocks, one per DataLoader worker; each worker reads only
      the rows of its block, whole shards at a time where it can, `prefetch_shards` shards ahead in a thread;
    - rows are shuffled within windows of `shuffle_shards` consecutive shards of a worker's block.

    Call `set_epoch(epoch)` before each epoch (as with DistributedSampler): with DataLoader workers the
    dataset is copied into the workers, so the stream cannot advance its own epoch.

    Resumption is exact: `state_dict()` records (epoch, batches yielded by this reader) and the plan's
    identity; `load_state_dict()` makes the next iteration continue after those batches, without reading the
    shards wholly before them. torchdata's StatefulDataLoader calls both in every worker, so
    `loader.state_dict()` / `loader.load_state_dict()` resume a multi-worker loader exactly (same num_workers).
    A state saved after the last batch of an epoch resumes to an empty remainder of that epoch; call
    `set_epoch(epoch + 1)` after that (empty) pass, not between `loader.load_state_dict` and it, because the
    loader applies the saved state only when iteration starts.

    Args:
        url: store path or fsspec URL (`s3://bucket/train.zarr`).
        batch_size: samples per batch on this rank.
        seed: seeds the shard permutation (with the epoch) and the row shuffle; >= 0.
        shuffle: permute shards and rows; False streams rows in store order (evaluation).
        shuffle_shards: shards whose rows are mixed together (memory: this many shards per reader).
        prefetch_shards: shards read ahead in a background thread.
        rank, world_size: this process's place in distributed training.
        storage_options: passed to fsspec (e.g. S3 endpoint and credentials).
        drop_last: only full batches (training) or every sample exactly once (evaluation).
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
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        if seed < 0:
            raise ValueError(f"seed must be >= 0 (it seeds numpy's SeedSequence), got {seed}")
        if not 0 <= rank < world_size:
            raise ValueError(f"rank must be in [0, world_size={world_size}), got {rank}")
        self.url = str(url)
        self.storage_options = storage_options
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
        # Opened here so a wrong URL or format fails at construction; reopened in each process (forked or
        # spawned DataLoader workers) so that no zarr/fsspec handle crosses a process boundary.
        self._store: MixtureStore | None = MixtureStore(self.url, storage_options)
        self._store_pid = os.getpid()

    @property
    def store(self) -> MixtureStore:
        if self._store is None or self._store_pid != os.getpid():
            self._store = MixtureStore(self.url, self.storage_options)
            self._store_pid = os.getpid()
        return self._store

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state["_store"] = None
        return state

    # -- the deterministic plan -------------------------------------------------------------------
    @staticmethod
    def _worker() -> tuple[int, int]:
        info = get_worker_info()
        return (info.id, info.num_workers) if info is not None else (0, 1)

    def _shard_order(self, epoch: int) -> np.ndarray:
        shards = self.store.complete_shards()
        if self.shuffle:
            shards = np.random.default_rng([self.seed, epoch]).permutation(shards)
        return shards

    def _rank_batches(self, n_rows: int) -> tuple[int, list[int]]:
        """First sequence position of this rank and the sizes of its batches, for n_rows laid end to end."""
        world, b = self.world_size, self.batch_size
        start, stop = n_rows * self.rank // world, n_rows * (self.rank + 1) // world
        n_own, n_min, n_max = stop - start, n_rows // world, -(-n_rows // world)
        if self.drop_last:
            n_batches = n_min // b
            if n_batches == 0:
                raise ValueError(
                    f"{self.url}: {n_rows} samples give each of {world} ranks {n_min} rows, less than one batch "
                    f"of {b}; lower batch_size or use drop_last=False"
                )
            return start, [b] * n_batches
        n_batches = -(-n_max // b)
        if n_own < n_batches:
            raise ValueError(
                f"{self.url}: {n_rows} samples over {world} ranks cannot give every rank {n_batches} non-empty "
                f"batches of at most {b}; use a batch_size of at least 2 or fewer ranks"
            )
        # Full batches first, then shrink so that every remaining batch keeps at least one row.
        sizes, left = [], n_own
        for i in range(n_batches):
            size = min(b, left - (n_batches - 1 - i))
            sizes.append(size)
            left -= size
        return start, sizes

    def _shard_lengths(self, shards: np.ndarray) -> np.ndarray:
        bounds = np.array([self.store.shard_rows(int(s)) for s in shards], dtype=np.int64).reshape(-1, 2)
        return bounds[:, 1] - bounds[:, 0]

    def _reader_plan(self, epoch: int, worker: int, n_workers: int) -> tuple[list[_Piece], list[int]]:
        """The pieces of shards (in reading order) and the batch sizes of one reader (rank, worker)."""
        store = self.store
        shards = self._shard_order(epoch)
        starts = np.concatenate([[0], np.cumsum(self._shard_lengths(shards))])
        rank_start, sizes = self._rank_batches(int(starts[-1]))
        first, last = len(sizes) * worker // n_workers, len(sizes) * (worker + 1) // n_workers
        offsets = np.concatenate([[0], np.cumsum(sizes)])
        lo, hi = rank_start + int(offsets[first]), rank_start + int(offsets[last])
        pieces = []
        for i in range(max(0, int(np.searchsorted(starts, lo, side="right")) - 1), len(shards)):
            if starts[i] >= hi:
                break
            shard_lo = store.shard_rows(int(shards[i]))[0]
            a, b = max(lo, int(starts[i])), min(hi, int(starts[i + 1]))
            pieces.append(
                _Piece(int(shards[i]), shard_lo + a - int(starts[i]), shard_lo + b - int(starts[i]))
            )
        return pieces, sizes[first:last]

    def __len__(self) -> int:
        """Batches this rank yields per epoch (the same on every rank, whatever the number of workers)."""
        return len(self._rank_batches(int(self._shard_lengths(self.store.complete_shards()).sum()))[1])

    def set_epoch(self, epoch: int) -> None:
        """Start `epoch` at its beginning on the next iteration (discards a loaded resume position)."""
        self.epoch = epoch
        self._yielded = 0
        self._resume_from = 0

    # -- resumption ---------------------------------------------------------------------------------
    def _identity(self) -> dict[str, int]:
        worker, n_workers = self._worker()
        return {
            "seed": self.seed,
            "batch_size": self.batch_size,
            "rank": self.rank,
            "world_size": self.world_size,
            "worker": worker,
            "num_workers": n_workers,
            "drop_last": int(self.drop_last),
            "shuffle": int(self.shuffle),
            "shuffle_shards": self.shuffle_shards,
        }

    def state_dict(self) -> dict[str, Any]:
        """Position of this reader: epoch, batches yielded so far, and the settings the plan depends on."""
        return {"epoch": self.epoch, "batches_yielded": self._yielded, **self._identity()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Continue after the batches recorded in `state`; refuses a state from a different plan."""
        mismatched = {k: (state[k], v) for k, v in self._identity().items() if k in state and state[k] != v}
        if mismatched:
            detail = ", ".join(f"{k}: saved {a}, now {b}" for k, (a, b) in mismatched.items())
            raise ValueError(
                f"cannot resume {self.url}: the saved stream state comes from another plan ({detail}); resume "
                "with the same seed, batch size, ranks and DataLoader workers"
            )
        self.epoch = int(state["epoch"])
        self._resume_from = int(state["batches_yielded"])
        self._yielded = self._resume_from

    # -- iteration ----------------------------------------------------------------------------------
    def _read_piece(self, piece: _Piece) -> dict[str, np.ndarray]:
        try:
            return self.store.read_rows(piece.lo, piece.hi)
        except Exception as exc:
            exc.add_note(f"while reading rows {piece.lo}:{piece.hi} (shard {piece.shard}) of {self.url}")
            raise

    def __iter__(self) -> Iterator[dict[str, torch.Tensor]]:
        worker, n_workers = self._worker()
        pieces, sizes = self._reader_plan(self.epoch, worker, n_workers)
        skip = min(self._resume_from, len(sizes))
        self._resume_from = 0
        self._yielded = skip
        if skip == len(sizes):
            return
        n_bins = self.store.grid.n_bins
        windows = [pieces[i : i + self.shuffle_shards] for i in range(0, len(pieces), self.shuffle_shards)]
        window_rows = [sum(p.hi - p.lo for p in w) for w in windows]
        # Skip whole windows before the resume position without reading them; the permutation of a window
        # is seeded by its index, so skipped windows need no draws either.
        position = sum(sizes[:skip])
        first_window = 0
        while position >= window_rows[first_window]:
            position -= window_rows[first_window]
            first_window += 1
        pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="shard-prefetch")
        queue = [p for w in windows[first_window:] for p in w]
        futures: deque[Future] = deque()
        submitted = 0

        def top_up(n_needed: int) -> None:
            nonlocal submitted
            while submitted < min(len(queue), n_needed + self.prefetch_shards):
                futures.append(pool.submit(self._read_piece, queue[submitted]))
                submitted += 1

        consumed = 0

        def load(window_index: int) -> tuple[dict[str, np.ndarray], np.ndarray]:
            nonlocal consumed
            n = len(windows[window_index])
            top_up(consumed + n)
            parts = [futures.popleft().result() for _ in range(n)]
            consumed += n
            top_up(consumed)
            rows = parts[0] if n == 1 else {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}
            if self.shuffle:
                rng = np.random.default_rng([self.seed, self.epoch, self.rank, worker, window_index])
                order = rng.permutation(window_rows[window_index])
            else:
                order = np.arange(window_rows[window_index])
            return rows, order

        try:
            window_index = first_window
            rows, order = load(window_index)
            for batch_index in range(skip, len(sizes)):
                need, takes = sizes[batch_index], []
                while need:
                    if position == len(order):
                        window_index += 1
                        rows, order = load(window_index)
                        position = 0
                    n = min(need, len(order) - position)
                    takes.append((rows, order[position : position + n]))
                    position += n
                    need -= n
                batch = {
                    k: np.concatenate([np.take(r[k], idx, axis=0) for r, idx in takes])
                    if len(takes) > 1
                    else np.take(takes[0][0][k], takes[0][1], axis=0)
                    for k in MODEL_ARRAYS
                }
                self._yielded = batch_index + 1
                yield to_batch(batch, n_bins)
        finally:
            pool.shutdown(wait=False, cancel_futures=True)


def check_wavelength(store: MixtureStore, trained_at_angstrom: float | None, checkpoint: str) -> None:
    """Raise ValueError when the store's patterns are at another anode's wavelength than the one the
    ``checkpoint``'s model was trained at (more than 1% apart; either unrecorded passes)."""
    measured_at = store.attrs.get("wavelength_angstrom")
    # Another anode, not another line of one: Cu Kα1 and Cu Kα's mean differ by 0.08%, Cu and Co by 16%.
    if (
        trained_at_angstrom
        and measured_at
        and abs(float(measured_at) - trained_at_angstrom) > 0.01 * trained_at_angstrom
    ):
        raise ValueError(
            f"{store.url} holds patterns at {measured_at} Å, and {checkpoint} was trained on patterns at "
            f"{trained_at_angstrom} Å: use stores generated at the model's wavelength"
        )


def check_grid(store: MixtureStore, model_config: ModelConfig) -> None:
    """Raise ValueError when the store's 2θ grid is not the one the model was built for (A.1)."""
    grid = store.grid
    if (grid.n_bins, grid.two_theta_min_deg, grid.two_theta_max_deg) != (
        model_config.n_bins,
        model_config.two_theta_min_deg,
        model_config.two_theta_max_deg,
    ):
        raise ValueError(
            f"{store.url} has a grid of {grid.n_bins} bins over {grid.two_theta_min_deg}-{grid.two_theta_max_deg}° "
            f"2θ but the model expects {model_config.n_bins} bins over {model_config.two_theta_min_deg}-"
            f"{model_config.two_theta_max_deg}°; to train, set model_overrides.n_bins / two_theta_min_deg / "
            "two_theta_max_deg to the store's grid; to evaluate, use stores generated on the model's grid"
        )
