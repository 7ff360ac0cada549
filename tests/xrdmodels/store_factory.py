"""Write small mixture stores exactly as docs/formats.md ("Mixture store") describes, with zarr directly.

Independent of xrdsynth on purpose: xrdmodels' tests check the documented contract from the reader's side, so
a change of the writer that breaks the contract fails here rather than being mirrored.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import zarr
from scipy.ndimage import gaussian_filter1d
from zarr.codecs import BloscCodec

FORMAT = "xrdsynth.mixtures"
FORMAT_VERSION = 1
MAX_PHASES = 5
N_SPACEGROUPS = 230
#: Two augmentation parameters, enough to exercise the `params/` group (the reader must ignore it).
PARAMS: dict[str, tuple[int, ...]] = {"zero_shift_deg": (), "fwhm_deg": (MAX_PHASES,)}


@dataclass(frozen=True)
class StoreSpec:
    """Shape of a store to write. Sizes are rows; `n_bins` bins span 5..120 degrees 2θ (A.1)."""

    n_samples: int
    n_bins: int = 64
    shard_size: int = 128
    chunk_rows: int = 32
    pattern_dtype: str = "float16"
    n_materials: int = 50
    two_theta_min_deg: float = 5.0
    two_theta_max_deg: float = 120.0

    @property
    def n_shards(self) -> int:
        return -(-self.n_samples // self.shard_size)


def _labels(rng: np.random.Generator, n: int, n_materials: int) -> dict[str, np.ndarray]:
    n_phases = rng.integers(1, MAX_PHASES + 1, size=n).astype(np.int8)
    spacegroup = np.zeros((n, MAX_PHASES), dtype=np.int16)
    material = np.full((n, MAX_PHASES), -1, dtype=np.int32)
    weight = np.zeros((n, MAX_PHASES), dtype=np.float32)
    for i, k in enumerate(n_phases):
        spacegroup[i, :k] = rng.choice(np.arange(1, N_SPACEGROUPS + 1), size=k, replace=False)
        material[i, :k] = rng.choice(n_materials, size=k, replace=False)
        w = rng.dirichlet(np.ones(k))
        weight[i, :k] = w / w.sum()
    return {
        "n_phases": n_phases,
        "phase_spacegroup": spacegroup,
        "phase_material": material,
        "phase_weight": weight,
    }


def _windows(rng: np.random.Generator, n: int, n_bins: int) -> np.ndarray:
    lo = rng.integers(0, n_bins // 4, size=n)
    hi = rng.integers(3 * n_bins // 4, n_bins + 1, size=n)
    return np.stack([lo, hi], axis=1).astype(np.int32)


def _raw_patterns(rng: np.random.Generator, n: int, n_bins: int, realistic: bool) -> np.ndarray:
    if not realistic:
        return rng.random((n, n_bins))
    # A few hundred narrow peaks with heavy-tailed heights, broadened to ~2-bin sigma, on a smooth
    # background with Poisson-like noise: compresses like a real pattern, unlike uniform noise.
    sticks = np.zeros((n, n_bins))
    n_peaks = 300
    rows = np.repeat(np.arange(n), n_peaks)
    positions = rng.integers(0, n_bins, size=n * n_peaks)
    np.add.at(sticks, (rows, positions), rng.pareto(1.5, size=n * n_peaks))
    peaks = gaussian_filter1d(sticks, sigma=2.0, axis=1)
    background = np.linspace(1.0, 0.2, n_bins)[None, :] * rng.uniform(0.05, 0.3, size=(n, 1))
    signal = peaks + background
    return signal + rng.normal(scale=0.02, size=signal.shape) * np.sqrt(signal)


def _normalise(raw: np.ndarray, window_bins: np.ndarray) -> np.ndarray:
    """docs/formats.md: in the window clip at 0 and divide by the 99th percentile of in-window values; 0 outside."""
    out = np.zeros_like(raw)
    for i, (lo, hi) in enumerate(window_bins):
        inside = np.clip(raw[i, lo:hi], 0.0, None)
        out[i, lo:hi] = inside / np.percentile(inside, 99)
    return out


def make_rows(
    spec: StoreSpec, lo: int, hi: int, *, seed: int, realistic: bool = False
) -> dict[str, np.ndarray]:
    """Every per-sample array of rows [lo, hi), deterministic in (seed, lo)."""
    rng = np.random.default_rng([seed, lo])
    n = hi - lo
    window_bins = _windows(rng, n, spec.n_bins)
    rows = {
        "pattern": _normalise(_raw_patterns(rng, n, spec.n_bins, realistic), window_bins).astype(
            spec.pattern_dtype
        ),
        "window_bins": window_bins,
        **_labels(rng, n, spec.n_materials),
    }
    for name, tail in PARAMS.items():
        rows[f"params/{name}"] = rng.random((n, *tail)).astype(np.float32)
    return rows


def write_store(
    url: str,
    spec: StoreSpec,
    *,
    seed: int = 0,
    realistic: bool = False,
    storage_options: dict | None = None,
    skip_shards: tuple[int, ...] = (),
    complete: bool | None = None,
    attrs: dict[str, Any] | None = None,
    keep: bool = True,
) -> dict[str, np.ndarray] | None:
    """Write a mixture store at `url` and return every per-sample array written (None when `keep=False`).

    `skip_shards` leaves those shards unwritten and unflagged (an interrupted generation); `complete` defaults to
    "no shard skipped"; `attrs` overrides attributes (e.g. a wrong format_version) after the documented ones.
    """
    root = zarr.open_group(url, mode="w", storage_options=storage_options)
    root.attrs.update({"format": FORMAT, "format_version": FORMAT_VERSION, "complete": False})
    n, s, c = spec.n_samples, spec.shard_size, spec.chunk_rows

    handles: dict[str, zarr.Array] = {}  # reopening an array by name costs a metadata request on S3

    def rows_array(group: zarr.Group, name: str, dtype: str, tail: tuple[int, ...]) -> None:
        codec = BloscCodec(cname="zstd", clevel=3, shuffle="shuffle", typesize=np.dtype(dtype).itemsize)
        key = name if group is root else f"{group.basename}/{name}"
        handles[key] = group.create_array(
            name,
            shape=(n, *tail),
            dtype=dtype,
            chunks=(c, *tail),
            shards=(s, *tail),
            compressors=codec,
            fill_value=0,
        )

    rows_array(root, "pattern", spec.pattern_dtype, (spec.n_bins,))
    rows_array(root, "window_bins", "int32", (2,))
    rows_array(root, "n_phases", "int8", ())
    rows_array(root, "phase_spacegroup", "int16", (MAX_PHASES,))
    rows_array(root, "phase_material", "int32", (MAX_PHASES,))
    rows_array(root, "phase_weight", "float32", (MAX_PHASES,))
    params = root.create_group("params")
    for name, tail in PARAMS.items():
        rows_array(params, name, "float32", tail)
    flags = root.create_array(
        "shard_complete", shape=(spec.n_shards,), dtype="bool", chunks=(1,), fill_value=False
    )
    materials = root.create_group("materials")
    ids = np.array([f"random:{1 + i % N_SPACEGROUPS}:{i}:s{seed}" for i in range(spec.n_materials)])
    materials.create_array("id", shape=ids.shape, dtype=str, chunks=ids.shape)[:] = ids
    materials.create_array("spacegroup", shape=ids.shape, dtype="int16", chunks=ids.shape)[:] = (
        1 + np.arange(spec.n_materials) % N_SPACEGROUPS
    )

    kept: dict[str, list[np.ndarray]] = {}
    for shard in range(spec.n_shards):
        if shard in skip_shards:
            continue
        lo, hi = shard * s, min((shard + 1) * s, n)
        rows = make_rows(spec, lo, hi, seed=seed, realistic=realistic)
        for name, values in rows.items():
            handles[name][lo:hi] = values
            if keep:
                kept.setdefault(name, []).append(values)
        flags[shard] = True  # only after all arrays of the shard are written (docs/formats.md)
    root.attrs.update(
        {
            "split": "train",
            "seed": seed,
            "n_samples": n,
            "shard_size": s,
            "chunk_rows": c,
            "n_shards": spec.n_shards,
            "pattern_dtype": spec.pattern_dtype,
            "max_phases": MAX_PHASES,
            "grid": {
                "two_theta_min_deg": spec.two_theta_min_deg,
                "two_theta_max_deg": spec.two_theta_max_deg,
                "n_bins": spec.n_bins,
            },
            "wavelength_angstrom": 1.5406,
            "recipe": {},
            "bank_fingerprint": "test",
            "bank_url": "memory://bank",
            "config_fingerprint": f"test-{seed}",
        }
    )
    root.attrs.update(attrs or {})
    root.attrs["complete"] = not skip_shards if complete is None else complete
    if not keep:
        return None
    return {name: np.concatenate(parts) for name, parts in kept.items()}
