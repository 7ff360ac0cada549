"""The mixture store format (docs/formats.md), owned here: layout, attributes and shard completion records.

One store holds one split. Rows are grouped in shards of `shard_size` samples; every array is sharded on the
same row boundaries, so one task writes exactly one whole shard of each array and nothing else. A shard
counts as written only once its flag in `shard_complete` is set, after all its arrays; the store counts as
complete only once the `complete` attribute is true, after all shards.
"""

from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import dataclass
from typing import Any

import numpy as np
import zarr
from zarr.codecs import BloscCodec

from .config import MAX_PHASES

log = logging.getLogger(__name__)

MIXTURE_FORMAT = "xrdsynth.mixtures"
MIXTURE_FORMAT_VERSION = 1

# Per-sample label arrays: name -> (dtype, trailing shape).
LABEL_ARRAYS: dict[str, tuple[str, tuple[int, ...]]] = {
    "window_bins": ("int32", (2,)),
    "n_phases": ("int8", ()),
    "phase_spacegroup": ("int16", (MAX_PHASES,)),
    "phase_material": ("int32", (MAX_PHASES,)),
    "phase_weight": ("float32", (MAX_PHASES,)),
}

#: Sampled parameters (``params/<name>``) held per phase slot, (N, MAX_PHASES, ...): slots at and past a row's
#: ``n_phases`` are padding. Every other parameter is per sample, (N,) or (N, c) coefficients, whose c may
#: equal MAX_PHASES by chance, so the shape alone cannot tell them apart.
PER_PHASE_PARAMETERS = frozenset(
    {
        "orientation_applied",
        "orientation_strength",
        "orientation_coefficients",
        "microstrain",
        "crystallite_size_nm",
        "texture_r",
        "texture_axis",
        "lattice_strain",
        "debye_waller_b_a2",
        "intensity_log_sd",
        "intensity_seed",
    }
)


class StoreError(ValueError):
    """A mixture store that cannot be used as asked (wrong format, other config, incomplete)."""


@dataclass(frozen=True)
class StoreLayout:
    n_samples: int
    n_bins: int
    shard_size: int
    chunk_rows: int
    pattern_dtype: str

    @property
    def n_shards(self) -> int:
        return -(-self.n_samples // self.shard_size)

    def shard_rows(self, shard: int) -> tuple[int, int]:
        lo = shard * self.shard_size
        return lo, min(lo + self.shard_size, self.n_samples)


def config_fingerprint(payload: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()[:32]


def _compressor(dtype: str) -> BloscCodec:
    # Bit shuffle groups the slowly varying sign/exponent bits of noisy patterns, where zstd finds its gain; level 1
    # compresses a 4,096 x 2,048 float16 shard 1.77x in half the time of level 3 (1.84x), and writing is the
    # larger share of a shard's cost after rendering.
    return BloscCodec(cname="zstd", clevel=1, shuffle="bitshuffle", typesize=np.dtype(dtype).itemsize)


#: Top-level members of xrdsynth's stores: a mixture store's arrays and groups, and a bank's groups. A folder
#: holding nothing else, and nothing but Zarr metadata and chunks below them, is what an interrupted ``mode="w"``
#: leaves of one of our stores (it removes the tree in no set order, ``zarr.json`` perhaps first).
STORE_MEMBERS = frozenset(
    {"pattern", "params", "materials", "shard_complete", *LABEL_ARRAYS, "entries", "peaks", "profile"}
)


def _is_zarr_file(parts: list[str]) -> bool:
    """Whether a file, as its path's parts below a store member, is Zarr's: a ``zarr.json``, or a chunk (the
    default chunk key ``c/<i>/<j>...``: nothing but whole numbers after the ``c``)."""
    if parts[-1] == "zarr.json":
        return True
    return "c" in parts and all(p.isdigit() for p in parts[len(parts) - parts[::-1].index("c") :])


def _is_store_remnant(fs: Any, path: str, names: list[str]) -> bool:
    """Whether a folder without ``zarr.json`` holding `names` (its non-hidden entries) is a half-removed store of
    ours: every entry a `STORE_MEMBERS` folder, every file below them Zarr's (`_is_zarr_file`)."""
    if not names or any(name not in STORE_MEMBERS for name in names):
        return False
    root = path.rstrip("/")
    for name in names:
        member = f"{root}/{name}"
        if not fs.isdir(member):
            return False
        for file in fs.find(member):
            if not _is_zarr_file(str(file)[len(member) :].strip("/").split("/")):
                return False
    return True


def refuse_foreign_target(url: str, storage_options: dict | None = None, *, option: str = "--out") -> None:
    """Refuse to write a store at `url` where something other than a Zarr store lies: an ordinary file, or a
    folder that holds files but no ``zarr.json``. Stores are created with ``mode="w"``, which empties the folder
    first, so without this check a user's folder named as ``--out`` would be deleted. An existing Zarr store is
    left to the callers' own checks (its format, its config, --resume / --overwrite); a folder of hidden files
    only counts as empty, and so do the remains of one of our stores whose removal was interrupted (an
    --overwrite stopped while it emptied the folder); a target that cannot be listed is left to the write, which
    reports it."""
    import fsspec

    try:
        fs, path = fsspec.core.url_to_fs(url, **(storage_options or {}))
        if not fs.exists(path):
            return
        is_dir = fs.isdir(path)
        store = is_dir and fs.exists(f"{path.rstrip('/')}/zarr.json")
        # Hidden files (.DS_Store, a file manager's) alone do not make a folder the user's.
        names = (
            [
                name
                for name in (str(p).rstrip("/").rsplit("/", 1)[-1] for p in fs.ls(path, detail=False))
                if not name.startswith(".")
            ]
            if is_dir and not store
            else []
        )
        remnant = bool(names) and _is_store_remnant(fs, path, names)
    except Exception:  # noqa: BLE001 - unreachable or unlistable: the write itself reports it
        return
    if not is_dir:
        raise StoreError(f"{url} is a file, not a store or folder; choose another {option}")
    if remnant:
        log.warning(
            "%s holds the remains of an interrupted store (no zarr.json); writing a new one over it", url
        )
    elif names:
        raise StoreError(
            f"{url} is a folder that holds other files, not a Zarr store; choose another {option} (xrdsynth "
            "replaces only its own stores, and only with --overwrite; it never empties another folder)"
        )


def create_store(
    url: str,
    layout: StoreLayout,
    params: dict[str, tuple[int, ...]],
    attrs: dict[str, Any],
    material_ids: np.ndarray,
    material_spacegroups: np.ndarray,
    storage_options: dict | None = None,
) -> zarr.Group:
    """Create an empty store: every array allocated (no shard written yet) and the attributes set. Refused where
    a user's folder or file lies (`refuse_foreign_target`): mode="w" empties the folder."""
    refuse_foreign_target(url, storage_options)
    root = zarr.open_group(url, mode="w", storage_options=storage_options)
    root.attrs.update({"format": MIXTURE_FORMAT, "format_version": MIXTURE_FORMAT_VERSION, "complete": False})
    n, s, c = layout.n_samples, layout.shard_size, layout.chunk_rows

    def rows_array(group: zarr.Group, name: str, dtype: str, tail: tuple[int, ...]) -> None:
        group.create_array(
            name,
            shape=(n, *tail),
            dtype=dtype,
            chunks=(c, *tail),
            shards=(s, *tail),
            compressors=_compressor(dtype),
            fill_value=0,
        )

    rows_array(root, "pattern", layout.pattern_dtype, (layout.n_bins,))
    for name, (dtype, tail) in LABEL_ARRAYS.items():
        rows_array(root, name, dtype, tail)
    pg = root.create_group("params")
    for name, tail in params.items():
        rows_array(pg, name, "float32", tail)
    root.create_array("shard_complete", shape=(layout.n_shards,), dtype="bool", chunks=(1,), fill_value=False)
    mg = root.create_group("materials")
    m = len(material_ids)
    mg.create_array("id", shape=(m,), dtype=str, chunks=(max(1, m),))[:] = np.array(
        [str(x) for x in material_ids]
    )
    mg.create_array("spacegroup", shape=(m,), dtype="int16", chunks=(max(1, m),))[:] = material_spacegroups
    # Attributes last: a store whose creation was interrupted has no config_fingerprint and is recreated.
    root.attrs.update(attrs)
    return root


def write_shard(root: zarr.Group, layout: StoreLayout, shard: int, arrays: dict[str, np.ndarray]) -> int:
    """Write one whole shard of every array, then its completion flag. Returns uncompressed bytes written."""
    lo, hi = layout.shard_rows(shard)
    written = 0
    for name, values in arrays.items():
        target = root[name]
        stored = values.astype(target.dtype, copy=False)
        target[lo:hi] = stored
        written += stored.nbytes
    root["shard_complete"][shard] = True
    return written


def row_bytes(root: zarr.Group) -> int:
    """Uncompressed bytes of every per-sample array of the store (patterns, labels, parameters)."""
    arrays = [root["pattern"], *(root[name] for name in LABEL_ARRAYS)]
    arrays += [root["params"][name] for name in root["params"].array_keys()]
    return sum(int(a.nbytes) for a in arrays)


def completed_shards(root: zarr.Group) -> np.ndarray:
    return np.asarray(root["shard_complete"][:], dtype=bool)


def read_attrs(url: str, storage_options: dict | None = None) -> dict[str, Any] | None:
    """Attributes of an existing store, or None when nothing is there."""
    try:
        return dict(zarr.open_group(url, mode="r", storage_options=storage_options).attrs)
    except (FileNotFoundError, KeyError, zarr.errors.GroupNotFoundError):
        return None
