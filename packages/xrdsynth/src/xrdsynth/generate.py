"""`xrdsynth mixtures generate`: one shard from its own seed; `generate_split` maps shards over Dask."""

from __future__ import annotations

import logging
import math
import os
import shutil
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .bank import Bank, BankError
from .cluster import dask_client, run_tasks
from .config import (
    MAX_PHASES,
    GenerateConfig,
    GridConfig,
    RecipeConfig,
    check_recipe_on_grid,
    redact_url,
)
from .store import (
    LABEL_ARRAYS,
    StoreError,
    StoreLayout,
    completed_shards,
    config_fingerprint,
    create_store,
    read_attrs,
    refuse_foreign_target,
    row_bytes,
    write_shard,
)

log = logging.getLogger(__name__)

# Split name -> (bank pool it draws from, code mixed into the seed so splits never share random streams).
SPLIT_POOLS = {"train": ("train", 0), "val": ("val", 1), "test": ("test", 2), "in_library": ("train", 3)}

# Feasibility limits checked before anything is written, ceilings far above any real run: 2^31 - 1 rows (8.8 TB of
# float16 patterns at 2,048 bins, 215x the paper's 10M) and 2^20 shards, which bounds the completion flags (one
# object each) and the task list of one split.
MAX_SAMPLES_PER_SPLIT = (1 << 31) - 1
MAX_SHARDS_PER_SPLIT = 1 << 20
# No mixture store we measured compresses better than 1.78x (noisy float16 patterns, docs/benchmarks.md): a store
# whose uncompressed size over this ratio exceeds the free disk space certainly does not fit.
BEST_COMPRESSION_RATIO = 2.0
# Timeouts of the reachability probe of a remote --out, so that a dead endpoint fails in seconds, not minutes.
_S3_PROBE_CONFIG = {"connect_timeout": 5, "read_timeout": 10, "retries": {"max_attempts": 1}}
# Object stores whose first path component is a bucket that must exist before anything is written.
_BUCKET_PROTOCOLS = ("s3", "s3a", "gs", "gcs", "az", "abfs", "abfss")


_LIBRARIES: dict[tuple[str, str], Any] = {}
# A Dask worker may run several task threads: one loads a bank while the others wait for it.
_LIBRARIES_LOCK = threading.Lock()


def _library(bank_url: str, fingerprint: str, storage_options: dict | None):
    """The bank in memory, loaded once per worker process (fingerprint in the key so a rebuilt bank reloads; the
    storage options only say how to reach it), the two latest kept."""
    key = (bank_url, fingerprint)
    with _LIBRARIES_LOCK:
        if key not in _LIBRARIES:
            if len(_LIBRARIES) >= 2:
                _LIBRARIES.pop(next(iter(_LIBRARIES)))
            _LIBRARIES[key] = Bank.open(bank_url, storage_options).library()
        return _LIBRARIES[key]


def shard_seed(seed: int, split: str, shard: int) -> np.random.SeedSequence:
    """The random stream of one shard: a function of (seed, split, shard) only, never of the worker."""
    return np.random.SeedSequence([seed, SPLIT_POOLS[split][1], shard])


@dataclass(frozen=True)
class ShardJob:
    """One Dask task: everything needed to generate shard `shard` of a split's store and write it."""

    url: str  # the split's store, already created
    # repr=False: Dask prints a failed task's arguments in its worker log, and these may hold credentials.
    storage_options: dict | None = field(repr=False)
    layout: StoreLayout
    shard: int
    bank_url: str
    bank_fingerprint: str  # part of the per-worker bank cache key, so a rebuilt bank is reloaded
    bank_storage_options: dict | None = field(repr=False)
    grid: GridConfig
    pool: np.ndarray  # bank indices of the materials this split draws from
    recipe: RecipeConfig
    seed: int
    split: str


def make_shard(job: ShardJob) -> dict[str, float]:
    """Generate shard `job.shard` from its own random stream and write it whole; returns its size and timing.

    The rows come from `generate_batch` seeded by `shard_seed(seed, split, shard)` only, and `write_shard` writes
    every array's shard, then the shard's completion flag, so the bytes do not depend on the worker.
    """
    import zarr

    from .recipe import generate_batch

    t0 = time.perf_counter()
    library = _library(job.bank_url, job.bank_fingerprint, job.bank_storage_options)
    lo, hi = job.layout.shard_rows(job.shard)
    rng = np.random.Generator(np.random.PCG64(shard_seed(job.seed, job.split, job.shard)))
    batch = generate_batch(rng, library, job.pool, hi - lo, job.recipe, job.grid)
    arrays = {"pattern": batch.pattern}
    for name in LABEL_ARRAYS:
        arrays[name] = getattr(batch, name)
    arrays.update({f"params/{k}": v for k, v in batch.params.items()})
    root = zarr.open_group(job.url, mode="r+", storage_options=job.storage_options)
    nbytes = write_shard(root, job.layout, job.shard, arrays)
    return {"bytes": float(nbytes), "seconds": time.perf_counter() - t0}


def max_phases_drawn(recipe: RecipeConfig) -> int:
    """The largest phase count K* the recipe can draw (the last non-zero probability)."""
    return int(np.flatnonzero(np.asarray(recipe.phase_count_probabilities) > 0)[-1]) + 1


@dataclass
class SplitReport:
    """What `generate_split` did. Both byte counts are of the whole store, whatever this run wrote, so that
    their ratio is the store's compression ratio also after --resume."""

    split: str
    url: str
    n_samples: int
    shards_written: int
    shards_skipped: int
    seconds: float
    uncompressed_bytes: float
    stored_bytes: int | None


def _param_shapes(recipe: RecipeConfig, bank: Bank, pool: np.ndarray) -> dict[str, tuple[int, ...]]:
    """Names and trailing shapes of the sampled parameters, read off a one-sample batch."""
    from .recipe import generate_batch

    probe = generate_batch(
        np.random.default_rng(0),
        _library(bank.url, bank.fingerprint, bank.storage_options),
        pool,
        1,
        recipe,
        bank.grid,
    )
    return {k: tuple(v.shape[1:]) for k, v in probe.params.items()}


def generate_split(
    bank: Bank,
    url: str,
    split: str,
    n_samples: int,
    config: GenerateConfig,
    *,
    client=None,
    resume: bool = False,
    overwrite: bool = False,
    storage_options: dict | None = None,
) -> SplitReport:
    """Write (or finish writing) the store of one split. Refuses to touch a store made with another config."""
    import zarr

    pool = _checked_pool(bank, split, config)
    _check_size(split, n_samples, config)
    check_recipe_on_grid(config.recipe, bank.grid, bank.wavelength_angstrom)
    layout = _layout(bank, n_samples, config)
    identity = _identity(bank, split, n_samples, config)
    fingerprint = config_fingerprint(identity)
    existing = read_attrs(url, storage_options)
    if (
        existing is not None
        and existing.get("format") == "xrdsynth.mixtures"
        and "config_fingerprint" not in existing
    ):
        existing = None  # our own store whose creation was interrupted: nothing in it to keep
    if existing is not None and not overwrite:
        if existing.get("config_fingerprint") != fingerprint:
            raise StoreError(
                f"{url} already holds a store made with another config, seed, size or bank; "
                "pass --overwrite to replace it (or choose another --out)"
            )
        if not resume:
            raise StoreError(
                f"{url} already exists; pass --resume to finish or reuse it, or --overwrite to redo it"
            )
    if existing is None or overwrite or existing.get("config_fingerprint") != fingerprint:
        grid = bank.grid
        create_store(
            url,
            layout,
            _param_shapes(config.recipe, bank, pool),
            {
                **identity,
                "config_fingerprint": fingerprint,
                "grid": {
                    "two_theta_min_deg": grid.two_theta_min_deg,
                    "two_theta_max_deg": grid.two_theta_max_deg,
                    "n_bins": grid.n_bins,
                },
                "wavelength_angstrom": bank.wavelength_angstrom,
                "bank_url": redact_url(bank.url),
                "bank_path_from_store": bank_path_from_store(bank.url, url),
                "n_shards": layout.n_shards,
                "max_phases": MAX_PHASES,
            },
            bank.column("id"),
            bank.column("spacegroup_number").astype(np.int16),
            storage_options,
        )
    root = zarr.open_group(url, mode="r+", storage_options=storage_options)
    done = completed_shards(root)
    todo = [int(s) for s in np.flatnonzero(~done)]

    def on_result(shard: int, result: dict[str, float]) -> None:
        log.debug("%s shard %d: %.0f bytes in %.2f s", split, shard, result["bytes"], result["seconds"])

    t0 = time.perf_counter()
    jobs = [
        (
            s,
            (
                ShardJob(
                    url=absolute_url(url),
                    storage_options=storage_options,
                    layout=layout,
                    shard=s,
                    bank_url=absolute_url(bank.url),
                    bank_fingerprint=bank.fingerprint,
                    bank_storage_options=bank.storage_options,
                    grid=bank.grid,
                    pool=pool,
                    recipe=config.recipe,
                    seed=config.seed,
                    split=split,
                ),
            ),
        )
        for s in todo
    ]
    run_tasks(
        client,
        make_shard,
        jobs,
        on_result,
        desc=f"mixtures {split}",
        unit="shard",
        total=layout.n_shards,
        already_done=int(done.sum()),
    )
    if not completed_shards(root).all():
        raise StoreError(f"{url}: some shards did not complete; rerun with --resume")
    root.attrs["complete"] = True
    return SplitReport(
        split,
        url,
        n_samples,
        len(todo),
        int(done.sum()),
        time.perf_counter() - t0,
        float(row_bytes(root)),
        _stored_bytes(url, storage_options),
    )


def _checked_pool(bank: Bank, split: str, config: GenerateConfig) -> np.ndarray:
    """The bank materials `split` draws from, refused when too few for the recipe's largest K*."""
    pool_name = SPLIT_POOLS[split][0]
    pool = bank.split_indices(pool_name)
    max_k = max_phases_drawn(config.recipe)
    if len(pool) < max_k:
        raise BankError(
            f"the bank's {pool_name} pool has {len(pool)} materials; mixtures of up to "
            f"{max_k} distinct phases need at least that many. Add structures to the bank"
            + (
                f", leave the split out (--splits without {split}) or rebuild the bank with a larger share for "
                f"{pool_name} (--split-fractions)"
                if len(pool) == 0
                else " or lower recipe.phase_count_probabilities for large K."
            )
        )
    return pool


def _check_size(split: str, n_samples: int, config: GenerateConfig) -> None:
    if not 1 <= n_samples <= MAX_SAMPLES_PER_SPLIT:
        raise StoreError(
            f"{split}: {n_samples:.4g} samples is outside 1..{MAX_SAMPLES_PER_SPLIT:,} per split; "
            "lower --n / --n-eval"
        )
    n_shards = -(-n_samples // config.shard_size)
    if n_shards > MAX_SHARDS_PER_SPLIT:
        raise StoreError(
            f"{split}: {n_samples:,} samples in shards of {config.shard_size} make {n_shards:,} shards, above "
            f"the limit of {MAX_SHARDS_PER_SPLIT:,}; raise --shard-size or lower --n"
        )


def _layout(bank: Bank, n_samples: int, config: GenerateConfig) -> StoreLayout:
    return StoreLayout(
        n_samples, bank.grid.n_bins, config.shard_size, config.chunk_rows, config.pattern_dtype
    )


def _identity(bank: Bank, split: str, n_samples: int, config: GenerateConfig) -> dict:
    """Everything that determines a store's bytes; its hash decides whether an existing store can be resumed."""
    return {
        "recipe": config.recipe.model_dump(mode="json"),
        "seed": config.seed,
        "split": split,
        "n_samples": n_samples,
        "shard_size": config.shard_size,
        "chunk_rows": config.chunk_rows,
        "pattern_dtype": config.pattern_dtype,
        "bank_fingerprint": bank.fingerprint,
    }


def local_path(url: str) -> Path | None:
    """The local path of `url` (a plain path or a file:// URL), or None for a remote fsspec URL."""
    import fsspec

    protocol, path = fsspec.core.split_protocol(url)
    return Path(path) if protocol in (None, "file", "local") else None


def absolute_url(url: str) -> str:
    """A local path made absolute (a remote URL as it is): what a shard job names, so that a Dask worker on
    another machine or in another folder (`--scheduler`, a shared filesystem) reads and writes the same files."""
    path = local_path(url)
    return url if path is None else str(path.resolve())


def bank_path_from_store(bank_url: str, store_url: str) -> str | None:
    """The bank's path relative to the store's folder when both are local (None otherwise): `bank_url` is
    recorded as typed, relative to the folder the command ran in, so a reader elsewhere finds the bank through
    this, as long as the two were not moved apart (docs/formats.md)."""
    bank, store = local_path(bank_url), local_path(store_url)
    if bank is None or store is None:
        return None
    try:
        return os.path.relpath(bank.resolve(), store.resolve())
    except ValueError:  # on two Windows drives there is no relative path
        return None


def recorded_bank(store_url: str, attrs: Mapping[str, Any]) -> str:
    """The bank a mixture store was written from: its `bank_url` where that is a URL or an absolute path; for a
    relative one, the store's `bank_path_from_store` resolved from the store's folder where a bank is there (a
    relative path from elsewhere could name another folder's bank), else `bank_url` as recorded."""
    bank_url = str(attrs["bank_url"])
    bank, store, relative = local_path(bank_url), local_path(store_url), attrs.get("bank_path_from_store")
    if bank is None or bank.is_absolute() or store is None or not relative:
        return bank_url
    beside = store / relative
    return str(beside) if beside.exists() else bank_url


def _one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split()) or type(exc).__name__
    return text if len(text) <= 300 else text[:297] + "..."


def check_remote_reachable(url: str, storage_options: dict | None) -> None:
    """Raise StoreError in seconds when the remote `url` cannot be used (dead endpoint, no credentials, no
    bucket), instead of the minutes of retries and the long traceback of the first write."""
    import fsspec

    options = dict(storage_options or {})
    protocol = fsspec.core.split_protocol(url)[0]
    if protocol in ("s3", "s3a"):
        # Probe-only timeouts; the generation itself keeps the user's (or s3fs's) retry policy.
        options["config_kwargs"] = {**_S3_PROBE_CONFIG, **options.get("config_kwargs", {})}
        options["skip_instance_cache"] = True
    try:
        fs, path = fsspec.core.url_to_fs(url, **options)
        if protocol in ("s3", "s3a"):
            # s3fs retries on top of botocore; `retries` is a class attribute, so set it on this probe only.
            fs.retries = 1
        try:
            fs.info(path)
        except FileNotFoundError:
            bucket = path.strip("/").split("/")[0]
            if protocol in _BUCKET_PROTOCOLS and bucket:
                try:
                    fs.info(bucket)
                except FileNotFoundError:
                    raise StoreError(
                        f"{url}: the bucket {bucket!r} does not exist; create it first"
                    ) from None
    except StoreError:
        raise
    except ImportError as exc:
        raise StoreError(f"{url}: {_one_line(exc)} (install xrdsynth[s3] for s3:// URLs)") from None
    except Exception as exc:  # noqa: BLE001 - any failure of the probe means the store cannot be written
        raise StoreError(
            f"cannot reach {url}: {_one_line(exc)}; check the endpoint (--storage-option endpoint_url=...) "
            "and the credentials (AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY or --storage-option key=, secret=)"
        ) from None


def _remaining_samples(url: str, layout: StoreLayout, fingerprint: str, resume: bool) -> int:
    """Samples still to write at the local `url`: all of them unless --resume finds this config's store."""
    if not resume:
        return layout.n_samples
    attrs = read_attrs(url)
    if attrs is None or attrs.get("config_fingerprint") != fingerprint:
        return layout.n_samples
    import zarr

    done = completed_shards(zarr.open_group(url, mode="r"))
    rows = np.full(layout.n_shards, layout.shard_size, dtype=np.int64)
    rows[-1] = layout.n_samples - layout.shard_size * (layout.n_shards - 1)
    return int(rows[~done].sum())


def check_local_folder(
    folder: Path, bank: Bank, sizes: dict[str, int], config: GenerateConfig, resume: bool
) -> None:
    """Raise StoreError when `folder` (or a folder above it) is a file, or the local stores cannot fit on its
    disk even at the best compression measured, before anything is created."""
    blocking = next((p for p in (folder, *folder.parents) if p.exists() and not p.is_dir()), None)
    if blocking is not None:
        raise StoreError(
            f"--out {folder}: {blocking} is a file, and the stores need a folder (<out>/<split>.zarr); "
            "choose a folder path for --out"
        )
    pool = _checked_pool(bank, next(iter(sizes)), config)
    param_values = sum(math.prod(tail) for tail in _param_shapes(config.recipe, bank, pool).values())
    label_bytes = sum(np.dtype(dtype).itemsize * math.prod(tail) for dtype, tail in LABEL_ARRAYS.values())
    sample_bytes = bank.grid.n_bins * np.dtype(config.pattern_dtype).itemsize + label_bytes + 4 * param_values
    remaining = 0
    for split, n in sizes.items():
        layout = _layout(bank, n, config)
        fingerprint = config_fingerprint(_identity(bank, split, n, config))
        remaining += _remaining_samples(str(folder / f"{split}.zarr"), layout, fingerprint, resume)
    needed = remaining * sample_bytes / BEST_COMPRESSION_RATIO
    existing = next(p for p in (folder, *folder.parents) if p.exists())
    free = shutil.disk_usage(existing).free
    if needed > free:
        raise StoreError(
            f"{remaining:,} samples of {sample_bytes:,} bytes need at least {needed / 1e9:,.3g} GB at the best "
            f"compression seen ({BEST_COMPRESSION_RATIO:g}x), but {existing} has {free / 1e9:,.3g} GB free; "
            "lower --n / --n-eval or choose another --out"
        )


def _stored_bytes(url: str, storage_options: dict | None) -> int | None:
    import fsspec

    try:
        fs, path = fsspec.core.url_to_fs(url, **(storage_options or {}))
        return int(fs.du(path))
    except Exception:  # noqa: BLE001 - size is informative only
        return None


def split_sizes(n_train: int, config: GenerateConfig) -> dict[str, int]:
    """Samples per split: train as asked; val and test from the config (default 2.5% of train, A.1 fractions);
    in-library the size of test (A.7)."""
    n_eval = config.n_eval if config.n_eval is not None else max(1, math.ceil(n_train * 0.025 / 0.95))
    return {"train": n_train, "val": n_eval, "test": n_eval, "in_library": n_eval}


def generate_all(
    bank_url: str,
    out: str,
    n_train: int,
    config: GenerateConfig,
    *,
    splits: tuple[str, ...] = ("train", "val", "test", "in_library"),
    workers: int = 2,
    scheduler: str | None = None,
    resume: bool = False,
    overwrite: bool = False,
    storage_options: dict | None = None,
) -> list[SplitReport]:
    """Generate the stores `<out>/<split>.zarr` for the requested splits.

    Everything that can be known before writing is checked before anything is created: the recipe against the
    bank's grid and wavelength, the pools, the sizes and shard counts, that a remote `out` is reachable and that
    local stores fit on the disk. ``storage_options`` (fsspec: endpoint, credentials) apply to each of `bank_url`
    and `out` that is remote.
    """
    bank_is_local = local_path(bank_url) is not None
    if not bank_is_local:
        check_remote_reachable(bank_url, storage_options)
    bank = Bank.open(bank_url, None if bank_is_local else storage_options)
    check_recipe_on_grid(config.recipe, bank.grid, bank.wavelength_angstrom)
    sizes = {split: n for split, n in split_sizes(n_train, config).items() if split in splits}
    if not sizes:
        raise StoreError(f"no split to generate in {splits}; choose from {', '.join(SPLIT_POOLS)}")
    for split, n in sizes.items():
        _checked_pool(bank, split, config)
        _check_size(split, n, config)
    folder = local_path(out)
    if folder is not None:
        if storage_options and bank_is_local:
            raise StoreError(
                f"--storage-option applies to remote --out and --bank URLs (s3://...), not to the local folder "
                f"{out} and bank {bank_url}; drop it or give an s3:// URL"
            )
        out = str(folder)
        check_local_folder(folder, bank, sizes, config, resume and not overwrite)
    else:
        check_remote_reachable(out, storage_options)
    for split in sizes:  # every split before any is written
        refuse_foreign_target(
            f"{out.rstrip('/')}/{split}.zarr", None if folder is not None else storage_options
        )
    reports = []
    with dask_client(workers, scheduler) as client:
        for split in splits:
            url = f"{out.rstrip('/')}/{split}.zarr"
            reports.append(
                generate_split(
                    bank,
                    url,
                    split,
                    sizes[split],
                    config,
                    client=client,
                    resume=resume,
                    overwrite=overwrite,
                    storage_options=None if folder is not None else storage_options,
                )
            )
    return reports
