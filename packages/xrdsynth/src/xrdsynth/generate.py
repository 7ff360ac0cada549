"""`xrdsynth mixtures generate`: one shard from its own seed; `generate_split` maps shards over Dask."""

from __future__ import annotations

import functools
import logging
import math
import time
from dataclasses import dataclass

import numpy as np

from .bank import Bank, BankError
from .cluster import dask_client, run_tasks
from .config import GenerateConfig, GridConfig, RecipeConfig
from .store import (
    LABEL_ARRAYS,
    StoreError,
    StoreLayout,
    completed_shards,
    config_fingerprint,
    create_store,
    read_attrs,
    write_shard,
)

log = logging.getLogger(__name__)

# Split name -> (bank pool it draws from, code mixed into the seed so splits never share random streams).
SPLIT_POOLS = {"train": ("train", 0), "val": ("val", 1), "test": ("test", 2), "in_library": ("train", 3)}


@functools.lru_cache(maxsize=2)
def _library(bank_url: str, fingerprint: str, with_profiles: bool):
    """The bank in memory, loaded once per worker process (fingerprint in the key so a rebuilt bank reloads)."""
    return Bank.open(bank_url).library(with_profiles=with_profiles)


def shard_seed(seed: int, split: str, shard: int) -> np.random.SeedSequence:
    """The random stream of one shard: a function of (seed, split, shard) only, never of the worker."""
    return np.random.SeedSequence([seed, SPLIT_POOLS[split][1], shard])


def make_shard(
    url: str,
    storage_options: dict | None,
    layout: StoreLayout,
    shard: int,
    bank_url: str,
    bank_fingerprint: str,
    grid: GridConfig,
    pool: np.ndarray,
    recipe: RecipeConfig,
    seed: int,
    split: str,
) -> dict[str, float]:
    """Generate and write shard `shard` of the store at `url`; returns its size and timing."""
    import zarr

    from .recipe import generate_batch

    t0 = time.perf_counter()
    library = _library(bank_url, bank_fingerprint, recipe.engine == "lut")
    lo, hi = layout.shard_rows(shard)
    rng = np.random.Generator(np.random.PCG64(shard_seed(seed, split, shard)))
    batch = generate_batch(rng, library, pool, hi - lo, recipe, grid)
    arrays = {"pattern": batch.pattern}
    for name in LABEL_ARRAYS:
        arrays[name] = getattr(batch, name)
    arrays.update({f"params/{k}": v for k, v in batch.params.items()})
    root = zarr.open_group(url, mode="r+", storage_options=storage_options)
    nbytes = write_shard(root, layout, shard, arrays)
    return {"bytes": float(nbytes), "seconds": time.perf_counter() - t0}


def max_phases_drawn(recipe: RecipeConfig) -> int:
    """The largest phase count K* the recipe can draw (the last non-zero probability)."""
    return int(np.flatnonzero(np.asarray(recipe.phase_count_probabilities) > 0)[-1]) + 1


@dataclass
class SplitReport:
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
        _library(bank.url, bank.fingerprint, recipe.engine == "lut"),
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

    pool_name = SPLIT_POOLS[split][0]
    pool = bank.split_indices(pool_name)
    max_k = max_phases_drawn(config.recipe)
    if len(pool) < max_k:
        raise BankError(
            f"the bank's {pool_name} pool has {len(pool)} materials; mixtures of up to "
            f"{max_k} distinct phases need at least that many. Add structures to the bank "
            "or lower recipe.phase_count_probabilities for large K."
        )
    layout = StoreLayout(
        n_samples, bank.grid.n_bins, config.shard_size, config.chunk_rows, config.pattern_dtype
    )
    identity = {
        "recipe": config.recipe.model_dump(mode="json"),
        "seed": config.seed,
        "split": split,
        "n_samples": n_samples,
        "shard_size": config.shard_size,
        "chunk_rows": config.chunk_rows,
        "pattern_dtype": config.pattern_dtype,
        "bank_fingerprint": bank.fingerprint,
    }
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
                "bank_url": bank.url,
                "n_shards": layout.n_shards,
                "max_phases": 5,
            },
            bank.column("id"),
            bank.column("spacegroup_number").astype(np.int16),
            storage_options,
        )
    root = zarr.open_group(url, mode="r+", storage_options=storage_options)
    done = completed_shards(root)
    todo = [int(s) for s in np.flatnonzero(~done)]
    stats = {"bytes": 0.0}

    def on_result(_shard: int, result: dict[str, float]) -> None:
        stats["bytes"] += result["bytes"]

    t0 = time.perf_counter()
    args = [
        (
            s,
            (
                url,
                storage_options,
                layout,
                s,
                bank.url,
                bank.fingerprint,
                bank.grid,
                pool,
                config.recipe,
                config.seed,
                split,
            ),
        )
        for s in todo
    ]
    run_tasks(
        client,
        make_shard,
        args,
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
        stats["bytes"],
        _stored_bytes(url, storage_options),
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
    """Generate the stores `<out>/<split>.zarr` for the requested splits."""
    bank = Bank.open(bank_url)
    sizes = split_sizes(n_train, config)
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
                    storage_options=storage_options,
                )
            )
    return reports
