"""The bank store: exact peaks and clean dense profiles of single-phase patterns (format in docs/formats.md).

Layout of a bank (a Zarr v3 group, local path or any fsspec URL)::

    attrs   format="xrdsynth.bank", format_version, complete, wavelength_angstrom, grid, config,
            fingerprint, n_entries, n_skipped, skipped (list of {source, provenance, reason})
    entries/<column>   one value per entry (table below)
    peaks/offsets      int64 (M+1,): peaks of entry m are [offsets[m], offsets[m+1])
    peaks/two_theta_deg, peaks/d_spacing_angstrom, peaks/intensity   float64 (P,)
    peaks/reflection_offsets  int64 (P+1,): reflections of peak p are [reflection_offsets[p], ...[p+1])
    peaks/reflection_direction float32 (R, 3), peaks/reflection_weight float32 (R,)
    profile            float32 (M, n_bins): clean sticks deposited area-preserving on the grid

Building is resumable: each chunk of entries is computed once and kept as a part file under
``<bank>.parts/`` until the final assembly, which writes the store and only then sets ``complete``. Part
files are data only (an ``.npz`` of plain arrays plus UTF-8 JSON, read with ``allow_pickle=False``), so a
planted or corrupted part can never run code; one that does not validate is discarded and recomputed.
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import os
import re
import zipfile
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import fsspec
import numpy as np
import zarr

from .config import BankConfig, GridConfig

log = logging.getLogger(__name__)

BANK_FORMAT = "xrdsynth.bank"
BANK_FORMAT_VERSION = 2
SPLITS = ("train", "val", "test")

# Per-entry columns: name -> numpy dtype ("str" for variable-length text).
ENTRY_COLUMNS: dict[str, str] = {
    "id": "str",
    "source": "str",
    "provenance": "str",
    "reduced_formula": "str",
    "spacegroup_number": "int16",
    "spacegroup_symbol": "str",
    "crystal_system": "str",
    "given_spacegroup": "int16",  # 0 when the input carried no label
    "spacegroup_disagrees": "bool",
    "lattice_abc_angstrom": "float64",  # (M, 3)
    "lattice_angles_deg": "float64",  # (M, 3)
    "n_sites": "int32",
    "disordered": "bool",
    "synthetic": "bool",
    "e_above_hull_ev_per_atom": "float64",  # NaN when unknown
    "thermal_displacement": "bool",  # the pattern includes the input's displacement parameters
    "isotype_of": "str",  # the id of the entry this one substitutes (BankConfig.isotypes_per_structure), else ""
    "split": "str",
}
# Columns a bank of this format version may lack (written before they were added), with their value then.
OPTIONAL_COLUMNS: dict[str, Any] = {"thermal_displacement": False, "isotype_of": ""}


class BankError(ValueError):
    """A bank that is missing, incomplete or of an unknown format version."""


@dataclass(frozen=True)
class Skipped:
    source: str
    provenance: str
    reason: str


def split_of(key: str, seed: int, fractions: tuple[float, float, float]) -> str:
    """Deterministic split of a material key (id or reduced formula): a hash, so independent of order and workers."""
    digest = hashlib.blake2b(f"{seed}\x00{key}".encode(), digest_size=8).digest()
    u = int.from_bytes(digest, "little") / 2.0**64
    edges = np.cumsum(fractions)
    for name, edge in zip(SPLITS, edges, strict=True):
        if u < edge:
            return name
    return SPLITS[-1]


def _diffract(
    entry, info, config: BankConfig, isotype_of: str = ""
) -> tuple[dict[str, Any], tuple, np.ndarray]:
    """An entry's row, peaks (the 6-tuple parts store) and dense profile; raises ValueError without peaks."""
    from .diffraction import compute_peaks
    from .profiles import deposit_sticks

    grid = config.grid
    p = compute_peaks(
        entry.structure, config.wavelength_angstrom, (grid.two_theta_min_deg, grid.two_theta_max_deg)
    )
    if len(p.two_theta_deg) == 0:
        raise ValueError(
            f"no reflections between {grid.two_theta_min_deg} and {grid.two_theta_max_deg} deg 2θ"
        )
    e_hull = info.e_above_hull_ev_per_atom
    row = {
        "id": entry.entry_id,
        "source": entry.source,
        "provenance": entry.provenance,
        "reduced_formula": info.reduced_formula,
        "spacegroup_number": info.spacegroup_number,
        "spacegroup_symbol": info.spacegroup_symbol,
        "crystal_system": info.crystal_system,
        "given_spacegroup": entry.given_spacegroup or 0,
        "spacegroup_disagrees": info.spacegroup_disagrees,
        "lattice_abc_angstrom": info.lattice_abc_angstrom,
        "lattice_angles_deg": info.lattice_angles_deg,
        "n_sites": info.n_sites,
        "disordered": info.disordered,
        "synthetic": entry.synthetic,
        "e_above_hull_ev_per_atom": float(e_hull) if e_hull is not None else float("nan"),
        "thermal_displacement": "U11_cif" in entry.structure.site_properties,
        "isotype_of": isotype_of,
    }
    peaks = (
        p.two_theta_deg,
        p.d_spacing_angstrom,
        p.intensity,
        p.reflection_offsets,
        p.reflection_direction,
        p.reflection_weight,
    )
    return row, peaks, deposit_sticks(p.two_theta_deg, p.intensity, grid)


def _isotypes(entry, info, config: BankConfig, seed: int) -> tuple[list, list[dict[str, str]]]:
    """(entry, info) of each substituted relative of a read entry (config.isotypes_per_structure), and skip
    records for relatives that failed the bank's checks or changed space group."""
    from dataclasses import replace

    from .structures import StructureError, describe
    from .structures.isotypes import isotype, isotype_rng

    out, skipped = [], []
    seen: set[frozenset] = set()
    for k in range(1, config.isotypes_per_structure + 1):
        made = isotype(
            entry.structure,
            isotype_rng(seed, entry.entry_id, k),
            min_pair_correlation=config.isotype_min_pair_correlation,
            radius_tolerance=config.isotype_radius_tolerance,
        )
        if made is None:
            break  # no element of this structure has a substitute: no relative will
        structure, mapping = made
        if frozenset(mapping.items()) in seen:
            continue  # the same relative again (a structure with few substitutes)
        seen.add(frozenset(mapping.items()))
        swaps = ", ".join(f"{a}→{b}" for a, b in sorted(mapping.items()))
        relative = replace(
            entry,
            entry_id=f"{entry.entry_id}~iso{k}",
            provenance=f"{entry.provenance} with {swaps}",
            structure=structure,
            given_spacegroup=info.spacegroup_number,
            metadata={},
        )
        try:
            relative_info = describe(relative, config)
        except StructureError as exc:
            skipped.append(_skip(entry, relative.provenance, exc))
            continue
        if relative_info.spacegroup_disagrees:
            found = f"spglib finds space group {relative_info.spacegroup_number}, not its parent's {info.spacegroup_number}"
            skipped.append(_skip(entry, relative.provenance, found))
            continue
        out.append((relative, relative_info))
    return out, skipped


def _skip(entry, provenance: str, problem: Exception | str) -> dict[str, str]:
    """The skip record of a relative of ``entry`` that could not be made."""
    reason = (
        problem
        if isinstance(problem, str)
        else getattr(problem, "reason", None) or f"{type(problem).__name__}: {problem}"
    )
    return {
        "source": entry.source,
        "provenance": provenance,
        "reason": f"isotype of {entry.entry_id}: {reason}"[:500],
    }


def compute_chunk(items: list, config: BankConfig, seed: int) -> dict[str, Any]:
    """Parse, describe and diffract one chunk of source items (and the isotypes of the read ones); bad items
    become skip records, never errors."""
    import warnings

    from .structures import describe, load_entry
    from .structures.displacement import U_CIF_PROPERTIES

    rows: list[dict[str, Any]] = []
    peaks: list[tuple[np.ndarray, ...]] = []
    profiles: list[np.ndarray] = []
    structures: list[str] = []
    skipped: list[dict[str, str]] = []
    for item in items:
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                entry = load_entry(item, seed=seed, max_sites=config.max_sites)
                if not config.displacement_parameters:
                    for name in set(U_CIF_PROPERTIES) & set(entry.structure.site_properties):
                        entry.structure.remove_site_property(name)
                info = describe(entry, config)
                computed = [(entry, *_diffract(entry, info, config))]
        except Exception as exc:  # noqa: BLE001 - any failure of one structure is reported, never fatal
            reason = getattr(exc, "reason", None) or f"{type(exc).__name__}: {exc}"
            skipped.append({"source": item.source, "provenance": item.locator, "reason": str(reason)[:500]})
            continue
        if config.isotypes_per_structure and not entry.synthetic:
            # A relative that fails is reported and dropped; its parent stays.
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                try:
                    relatives, failed = _isotypes(entry, info, config, seed)
                except Exception as exc:  # noqa: BLE001
                    relatives, failed = [], [_skip(entry, entry.provenance, exc)]
                skipped += failed
                for relative, relative_info in relatives:
                    try:
                        computed.append(
                            (relative, *_diffract(relative, relative_info, config, entry.entry_id))
                        )
                    except Exception as exc:  # noqa: BLE001
                        skipped.append(_skip(entry, relative.provenance, exc))
        for made, row, peak_columns, profile in computed:
            rows.append(row)
            peaks.append(peak_columns)
            profiles.append(profile)
            if config.deduplicate:
                structures.append(json.dumps(made.structure.as_dict()))
    return {"rows": rows, "peaks": peaks, "profiles": profiles, "structures": structures, "skipped": skipped}


def _fingerprint(ids: Iterable[str], offsets: np.ndarray, intensity: np.ndarray, config_json: str) -> str:
    h = hashlib.sha256()
    h.update(config_json.encode())
    for i in ids:
        h.update(i.encode() + b"\x00")
    h.update(np.ascontiguousarray(offsets).tobytes())
    h.update(np.ascontiguousarray(intensity).tobytes())
    return h.hexdigest()[:32]


PART_FORMAT_VERSION = 3
_PART_NAME = re.compile(r"^chunk-(\d{6})\.npz$")
_PEAK_COLUMNS = ("two_theta_deg", "d_spacing_angstrom", "intensity")
_REFLECTION_ARRAYS = ("reflection_offsets", "reflection_direction", "reflection_weight")
_PART_ARRAYS = ("peak_offsets", *_PEAK_COLUMNS, *_REFLECTION_ARRAYS, "profile", "meta_json")
_ROW_KEYS = frozenset(ENTRY_COLUMNS) - {"split"}
_SKIP_KEYS = frozenset(("source", "provenance", "reason"))


class PartFileError(ValueError):
    """A part file that is not one this version of xrdsynth wrote (corrupted, planted or from elsewhere)."""


def _json_default(value: Any) -> Any:
    if isinstance(value, np.generic):
        return value.item()
    raise TypeError(f"{type(value).__name__} is not JSON serializable")


def _concat_peaks(peaks: list[tuple[np.ndarray, ...]]) -> dict[str, np.ndarray]:
    """Entries' peaks (compute_chunk's 6-tuples) laid end to end: ``offsets`` (n_entries + 1,) over the peaks,
    the three peak columns, and the reflections with ``reflection_offsets`` (n_peaks + 1,) over all of them."""
    offsets = np.zeros(len(peaks) + 1, dtype=np.int64)
    np.cumsum([len(p[0]) for p in peaks], out=offsets[1:])
    out = {"offsets": offsets}
    for k, name in enumerate(_PEAK_COLUMNS):
        out[name] = np.concatenate([np.asarray(p[k], np.float64) for p in peaks]) if peaks else np.zeros(0)
    # Each entry's reflection offsets start at 0; shift them by the reflections of the entries before it.
    n_reflections = np.array([p[3][-1] for p in peaks], dtype=np.int64)
    shift = np.cumsum(n_reflections) - n_reflections
    out["reflection_offsets"] = np.concatenate(
        [np.zeros(1, np.int64)]
        + [np.asarray(p[3][1:], np.int64) + s for p, s in zip(peaks, shift, strict=True)]
    )
    out["reflection_direction"] = (
        np.concatenate([np.asarray(p[4], np.float32) for p in peaks])
        if peaks
        else np.zeros((0, 3), np.float32)
    )
    out["reflection_weight"] = (
        np.concatenate([np.asarray(p[5], np.float32) for p in peaks]) if peaks else np.zeros(0, np.float32)
    )
    return out


def encode_part(result: dict[str, Any], n_bins: int) -> bytes:
    """One computed chunk as an uncompressed .npz of plain numeric arrays plus UTF-8 JSON metadata."""
    arrays = _concat_peaks(result["peaks"])
    profiles = result["profiles"]
    profile = np.stack(profiles).astype(np.float32) if profiles else np.zeros((0, n_bins), np.float32)
    meta = {
        "part_format_version": PART_FORMAT_VERSION,
        "rows": result["rows"],
        "structures": result["structures"],
        "skipped": result["skipped"],
    }
    buffer = io.BytesIO()
    np.savez(
        buffer,
        peak_offsets=arrays["offsets"],
        **{name: arrays[name] for name in (*_PEAK_COLUMNS, *_REFLECTION_ARRAYS)},
        profile=profile,
        meta_json=np.frombuffer(json.dumps(meta, default=_json_default).encode(), dtype=np.uint8),
    )
    return buffer.getvalue()


def _expect(condition: bool, what: str) -> None:
    if not condition:
        raise PartFileError(what)


def decode_part(data: bytes, n_bins: int) -> dict[str, Any]:
    """Validate and unpack a part file written by :func:`encode_part`; raises :class:`PartFileError`.

    Nothing in it can run code: arrays are read with ``allow_pickle=False`` (object arrays are refused) and
    the metadata is JSON. Parts are written uncompressed, so a member declaring more bytes than the whole
    file is refused before anything is decompressed.
    """
    try:
        with zipfile.ZipFile(io.BytesIO(data)) as archive:
            for info in archive.infolist():
                _expect(
                    info.file_size <= len(data), f"member {info.filename} declares {info.file_size} bytes"
                )
        with np.load(io.BytesIO(data), allow_pickle=False) as npz:
            _expect(sorted(npz.files) == sorted(_PART_ARRAYS), f"arrays {sorted(npz.files)}")
            arrays = {name: npz[name] for name in _PART_ARRAYS}
        meta = json.loads(arrays["meta_json"].tobytes().decode("utf-8"))
    except PartFileError:
        raise
    except Exception as exc:  # noqa: BLE001 - zipfile, numpy and json raise many types for foreign data
        raise PartFileError(f"{type(exc).__name__}: {exc}") from exc
    _expect(
        isinstance(meta, dict) and meta.get("part_format_version") == PART_FORMAT_VERSION, "metadata version"
    )
    rows, structures, skipped = meta.get("rows"), meta.get("structures"), meta.get("skipped")
    _expect(isinstance(rows, list) and all(isinstance(r, dict) and set(r) == _ROW_KEYS for r in rows), "rows")
    n = len(rows)
    _expect(
        isinstance(structures, list)
        and len(structures) in (0, n)
        and all(isinstance(x, str) for x in structures),
        "structures",
    )
    _expect(
        isinstance(skipped, list)
        and all(
            isinstance(x, dict) and set(x) == _SKIP_KEYS and all(isinstance(v, str) for v in x.values())
            for x in skipped
        ),
        "skip records",
    )
    offsets = arrays["peak_offsets"]
    _expect(offsets.dtype == np.int64 and offsets.shape == (n + 1,), "peak offsets shape")
    _expect(offsets[0] == 0 and bool(np.all(np.diff(offsets) >= 0)), "peak offsets order")
    n_peaks = int(offsets[-1])
    for name in _PEAK_COLUMNS:
        _expect(arrays[name].dtype == np.float64 and arrays[name].shape == (n_peaks,), f"{name} shape")
    reflection_offsets = arrays["reflection_offsets"]
    _expect(
        reflection_offsets.dtype == np.int64 and reflection_offsets.shape == (n_peaks + 1,),
        "reflection offsets shape",
    )
    _expect(
        reflection_offsets[0] == 0 and bool(np.all(np.diff(reflection_offsets) > 0)),
        "reflection offsets order (every peak has a reflection)",
    )
    n_reflections = int(reflection_offsets[-1])
    _expect(
        arrays["reflection_direction"].dtype == np.float32
        and arrays["reflection_direction"].shape == (n_reflections, 3),
        "reflection_direction shape",
    )
    _expect(
        arrays["reflection_weight"].dtype == np.float32
        and arrays["reflection_weight"].shape == (n_reflections,),
        "reflection_weight shape",
    )
    _expect(arrays["profile"].dtype == np.float32 and arrays["profile"].shape == (n, n_bins), "profile shape")
    peaks = []
    for m in range(n):
        p_lo, p_hi = offsets[m], offsets[m + 1]
        r_lo, r_hi = reflection_offsets[p_lo], reflection_offsets[p_hi]
        peaks.append(
            (
                *(arrays[k][p_lo:p_hi] for k in _PEAK_COLUMNS),
                reflection_offsets[p_lo : p_hi + 1] - r_lo,
                arrays["reflection_direction"][r_lo:r_hi],
                arrays["reflection_weight"][r_lo:r_hi],
            )
        )
    return {
        "rows": rows,
        "peaks": peaks,
        "profiles": list(arrays["profile"]),
        "structures": structures,
        "skipped": skipped,
    }


class PartStore:
    """Finished chunks of an interrupted build, one atomically written .npz file each, keyed by chunk index."""

    def __init__(self, bank_url: str, build_key: str, n_bins: int, storage_options: dict | None = None):
        self.url = bank_url.rstrip("/") + ".parts"
        self.fs, self.root = fsspec.core.url_to_fs(self.url, **(storage_options or {}))
        self.build_key = build_key
        self.n_bins = n_bins

    def _path(self, index: int) -> str:
        return f"{self.root}/{self.build_key}/chunk-{index:06d}.npz"

    def done(self) -> set[int]:
        """Indices of the chunks whose part file validates; anything else in the folder is reported and
        left unread, and part files that fail validation are deleted so that their chunk is recomputed."""
        prefix = f"{self.root}/{self.build_key}"
        if not self.fs.exists(prefix):
            return set()
        valid = set()
        for path in sorted(self.fs.ls(prefix, detail=False)):
            name = Path(path).name
            match = _PART_NAME.match(name)
            if match is None:
                if not name.endswith(".tmp"):  # .tmp: a write cut short, rewritten when its chunk reruns
                    log.warning(
                        "ignoring %s: not a part file of this build (parts are chunk-NNNNNN.npz); not read",
                        path,
                    )
                continue
            try:
                self.read(int(match.group(1)))
            except PartFileError as exc:
                log.warning("%s; discarding it, its chunk is computed again", exc)
                self.fs.rm(path)
                continue
            valid.add(int(match.group(1)))
        return valid

    def write(self, index: int, result: dict[str, Any]) -> None:
        path = self._path(index)
        tmp = path + ".tmp"
        self.fs.makedirs(str(Path(path).parent), exist_ok=True)
        self.fs.pipe_file(tmp, encode_part(result, self.n_bins))
        self.fs.mv(tmp, path)  # the rename makes a part visible only once it is whole

    def read(self, index: int) -> dict[str, Any]:
        """The chunk's result; raises :class:`PartFileError` naming the file when it does not validate."""
        path = self._path(index)
        try:
            return decode_part(self.fs.cat_file(path), self.n_bins)
        except PartFileError as exc:
            raise PartFileError(f"{path} is not a valid part file ({exc})") from None

    def remove(self) -> None:
        if self.fs.exists(self.root):
            self.fs.rm(self.root, recursive=True)


def _deduplicate(rows: list[dict], structures: list[str]) -> tuple[np.ndarray, list[dict[str, str]]]:
    """Keep the first of each group of StructureMatcher-equivalent entries from different sources."""
    from pymatgen.analysis.structure_matcher import StructureMatcher
    from pymatgen.core import Structure

    matcher = StructureMatcher()
    keep = np.ones(len(rows), dtype=bool)
    skipped = []
    groups: dict[tuple[str, int], list[int]] = {}
    for i, r in enumerate(rows):
        groups.setdefault((r["reduced_formula"], r["spacegroup_number"]), []).append(i)
    for members in groups.values():
        if len(members) < 2:
            continue
        parsed = {i: Structure.from_dict(json.loads(structures[i])) for i in members}
        for a_pos, a in enumerate(members):
            if not keep[a]:
                continue
            for b in members[a_pos + 1 :]:
                if keep[b] and rows[a]["source"] != rows[b]["source"] and matcher.fit(parsed[a], parsed[b]):
                    keep[b] = False
                    skipped.append(
                        {
                            "source": rows[b]["source"],
                            "provenance": rows[b]["provenance"],
                            "reason": f"near-duplicate of {rows[a]['id']} (StructureMatcher)",
                        }
                    )
    return keep, skipped


def assemble(
    url: str,
    config: BankConfig,
    parts: list[dict[str, Any]],
    seed: int,
    sources: list[str],
    build_key: str = "",
    skipped_sources: list[dict[str, str]] | None = None,
    storage_options: dict | None = None,
) -> Bank:
    """Write the final store from computed chunks (in chunk order, so output is independent of scheduling).

    ``skipped_sources`` are skip records of whole sources that could not be listed; they come first.
    """
    rows = [r for p in parts for r in p["rows"]]
    peaks = [pk for p in parts for pk in p["peaks"]]
    profiles = [pr for p in parts for pr in p["profiles"]]
    skipped = list(skipped_sources or []) + [s for p in parts for s in p["skipped"]]
    keep = np.ones(len(rows), dtype=bool)
    if config.deduplicate:
        keep, dup_skipped = _deduplicate(rows, [s for p in parts for s in p["structures"]])
        skipped += dup_skipped
    # Duplicate ids (the same file given twice) would make splits and labels ambiguous.
    seen: set[str] = set()
    for i, r in enumerate(rows):
        if keep[i] and r["id"] in seen:
            keep[i] = False
            skipped.append(
                {"source": r["source"], "provenance": r["provenance"], "reason": f"duplicate id {r['id']}"}
            )
        seen.add(r["id"])
    rows = [r for r, k in zip(rows, keep, strict=True) if k]
    peaks = [p for p, k in zip(peaks, keep, strict=True) if k]
    profiles = [p for p, k in zip(profiles, keep, strict=True) if k]
    by_id = {r["id"]: r for r in rows}
    for r in rows:
        # An isotype goes where its parent goes: a test material's relatives are unseen too.
        owner = by_id.get(r["isotype_of"], r) if r["isotype_of"] else r
        key = owner["reduced_formula"] if config.group_polymorphs else owner["id"]
        r["split"] = split_of(key, config.split_seed, config.split_fractions)
    # An isotype whose formula is that of a read entry in another split (corundum's Al→Fe relative and a
    # test hematite) would show that material to another split: it is dropped.
    read_splits: dict[str, set[str]] = {}
    for r in rows:
        if not r["isotype_of"]:
            read_splits.setdefault(r["reduced_formula"], set()).add(r["split"])
    crossing = [
        i
        for i, r in enumerate(rows)
        if r["isotype_of"] and read_splits.get(r["reduced_formula"], {r["split"]}) != {r["split"]}
    ]
    for i in crossing:
        r = rows[i]
        skipped.append(
            {
                "source": r["source"],
                "provenance": r["provenance"],
                "reason": f"isotype of {r['isotype_of']}: its formula {r['reduced_formula']} is a read entry's "
                f"in the {'/'.join(sorted(read_splits[r['reduced_formula']]))} split",
            }
        )
    if crossing:
        drop = set(crossing)
        rows = [r for i, r in enumerate(rows) if i not in drop]
        peaks = [p for i, p in enumerate(peaks) if i not in drop]
        profiles = [p for i, p in enumerate(profiles) if i not in drop]

    n = len(rows)
    n_bins = config.grid.n_bins
    peak_arrays = _concat_peaks(peaks)
    offsets, intensity = peak_arrays["offsets"], peak_arrays["intensity"]
    profile = np.stack(profiles).astype(np.float32) if profiles else np.zeros((0, n_bins), np.float32)
    config_json = config.model_dump_json()

    root = zarr.open_group(url, mode="w", storage_options=storage_options)
    root.attrs.update({"format": BANK_FORMAT, "format_version": BANK_FORMAT_VERSION, "complete": False})
    entries = root.create_group("entries")
    chunk = max(1, min(n, 65536))
    for name, dtype in ENTRY_COLUMNS.items():
        values = [r[name] for r in rows]
        if dtype == "str":
            arr = np.array(values, dtype=str) if n else np.zeros(0, dtype=str)
            entries.create_array(name, shape=(n,), dtype=str, chunks=(chunk,))[:] = arr
        else:
            arr = np.array(values, dtype=dtype) if n else np.zeros((0, 3) if "lattice" in name else 0, dtype)
            z = entries.create_array(name, shape=arr.shape, dtype=dtype, chunks=(chunk,) + arr.shape[1:])
            if n:
                z[...] = arr
    pk = root.create_group("peaks")
    for name, arr in peak_arrays.items():
        z = pk.create_array(
            name, shape=arr.shape, dtype=arr.dtype, chunks=(max(1, min(len(arr), 1 << 20)),) + arr.shape[1:]
        )
        if len(arr):
            z[...] = arr
    zp = root.create_array(
        "profile", shape=profile.shape, dtype="float32", chunks=(max(1, min(n, 256)), n_bins)
    )
    if n:
        zp[:] = profile
    root.attrs.update(
        {
            "wavelength_angstrom": config.wavelength_angstrom,
            "grid": config.grid.model_dump(),
            "config": json.loads(config_json),
            "seed": seed,
            "sources": sources,
            "build_key": build_key,
            "n_entries": n,
            "n_skipped": len(skipped),
            "skipped": skipped,
            "fingerprint": _fingerprint((r["id"] for r in rows), offsets, intensity, config_json),
        }
    )
    root.attrs["complete"] = True  # last: a store without it is an interrupted write
    return Bank.open(url, storage_options)


class Bank:
    """Read access to a complete bank store."""

    def __init__(self, group: zarr.Group, url: str, storage_options: dict | None = None):
        self.group = group
        self.url = url
        # Kept in memory only, for readers that reopen the bank (Dask workers); never written anywhere.
        self.storage_options = storage_options
        self.attrs = dict(group.attrs)

    @classmethod
    def open(cls, url: str | os.PathLike, storage_options: dict | None = None) -> Bank:
        """Open a complete bank; ``storage_options``: fsspec options of a remote URL (endpoint, credentials).

        Raises:
            BankError: nothing readable at ``url``, not a bank, another format version, an interrupted build, or
                storage options given for a local path.
        """
        url = str(url)
        storage_options = storage_options or None  # zarr refuses even {} for a local path
        if storage_options and fsspec.core.split_protocol(url)[0] in (None, "file", "local"):
            raise BankError(
                f"{url} is a local path, which takes no storage options; drop --storage-option or give the "
                "bank's remote URL (s3://...)"
            )
        try:
            group = zarr.open_group(url, mode="r", storage_options=storage_options)
        except Exception as exc:  # noqa: BLE001
            raise BankError(f"no bank store at {url} ({exc}); build one with `xrdsynth bank build`") from exc
        attrs = group.attrs
        if attrs.get("format") != BANK_FORMAT:
            raise BankError(f"{url} is not an xrdsynth bank (format attribute {attrs.get('format')!r})")
        if attrs.get("format_version") != BANK_FORMAT_VERSION:
            raise BankError(
                f"{url} has bank format version {attrs.get('format_version')}, this xrdsynth reads "
                f"version {BANK_FORMAT_VERSION}; rebuild it with this version's `xrdsynth bank build`"
            )
        if not attrs.get("complete"):
            raise BankError(
                f"{url} is incomplete (its build was interrupted); rerun `xrdsynth bank build` to resume"
            )
        return cls(group, url, storage_options)

    def __len__(self) -> int:
        return int(self.attrs["n_entries"])

    @property
    def fingerprint(self) -> str:
        return str(self.attrs["fingerprint"])

    @property
    def grid(self) -> GridConfig:
        return GridConfig(**self.attrs["grid"])

    @property
    def wavelength_angstrom(self) -> float:
        return float(self.attrs["wavelength_angstrom"])

    @property
    def skipped(self) -> list[Skipped]:
        return [Skipped(**s) for s in self.attrs.get("skipped", [])]

    def column(self, name: str) -> np.ndarray:
        """One per-entry column; text columns come back as a plain numpy str array. An optional column that
        an older bank lacks comes back filled with its default (``OPTIONAL_COLUMNS``)."""
        entries = self.group["entries"]
        if name in OPTIONAL_COLUMNS and name not in entries:
            return np.full(len(self), OPTIONAL_COLUMNS[name], dtype=ENTRY_COLUMNS[name])
        values = entries[name][...]
        if ENTRY_COLUMNS[name] == "str":
            return np.array(values.tolist(), dtype=str)
        return np.asarray(values)

    def split_indices(self, split: str) -> np.ndarray:
        """Entry indices of one split ("train", "val" or "test"), ascending."""
        if split not in SPLITS:
            raise ValueError(f"unknown split {split!r}; expected one of {SPLITS}")
        return np.flatnonzero(self.column("split") == split)

    def peaks(self, index: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(two_theta_deg, d_spacing_angstrom, intensity) of one entry."""
        off = self.group["peaks"]["offsets"]
        lo, hi = int(off[index]), int(off[index + 1])
        g = self.group["peaks"]
        return g["two_theta_deg"][lo:hi], g["d_spacing_angstrom"][lo:hi], g["intensity"][lo:hi]

    def reflections(self, index: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(reflection_offsets, reflection_direction, reflection_weight) of one entry, as
        :class:`~xrdsynth.diffraction.Peaks` holds them: offsets (n_peaks + 1,) starting at 0."""
        g = self.group["peaks"]
        lo, hi = int(g["offsets"][index]), int(g["offsets"][index + 1])
        reflection_offsets = np.asarray(g["reflection_offsets"][lo : hi + 1], dtype=np.int64)
        r_lo, r_hi = int(reflection_offsets[0]), int(reflection_offsets[-1])
        return (
            reflection_offsets - r_lo,
            g["reflection_direction"][r_lo:r_hi],
            g["reflection_weight"][r_lo:r_hi],
        )

    def library(self, with_profiles: bool = False, with_reflections: bool = True):
        """The whole bank as the in-memory PhaseLibrary the mixture recipe draws from.

        ``with_reflections=False`` leaves the per-reflection arrays out (they take 32 bytes per reflection in
        memory, several times the peaks' size for high-symmetry phases) when the recipe does not need them.
        """
        from .recipe import PhaseLibrary, element_masks

        g = self.group["peaks"]
        reflections = {}
        if with_reflections:
            reflections = {
                "reflection_offsets": np.asarray(g["reflection_offsets"][:], dtype=np.int64),
                "reflection_direction": np.asarray(g["reflection_direction"][:], dtype=np.float64),
                "reflection_weight": np.asarray(g["reflection_weight"][:], dtype=np.float64),
            }
        return PhaseLibrary(
            peak_offsets=np.asarray(g["offsets"][:], dtype=np.int64),
            peak_two_theta_deg=np.asarray(g["two_theta_deg"][:], dtype=np.float64),
            peak_intensity=np.asarray(g["intensity"][:], dtype=np.float64),
            spacegroup=self.column("spacegroup_number").astype(np.int16),
            thermal_displacement=self.column("thermal_displacement").astype(bool),
            isotype=self.column("isotype_of") != "",
            synthetic=self.column("synthetic").astype(bool),
            element_mask=element_masks(self.column("reduced_formula")),
            dense_profile=np.asarray(self.group["profile"][:], dtype=np.float32) if with_profiles else None,
            **reflections,
        )

    def summary(self) -> str:
        """Human-readable counts per split and crystal system, the space-group histogram and skip reasons."""
        out = io.StringIO()
        n = len(self)
        out.write(
            f"bank {self.url}\n  format {BANK_FORMAT} v{self.attrs['format_version']}, fingerprint {self.fingerprint}\n"
        )
        out.write(
            f"  wavelength {self.wavelength_angstrom:.5f} Å, grid {self.grid.two_theta_min_deg}-{self.grid.two_theta_max_deg}° "
            f"in {self.grid.n_bins} bins\n  entries {n}, skipped {self.attrs.get('n_skipped', 0)}\n"
        )
        if n:
            split = self.column("split")
            out.write("  per split: " + ", ".join(f"{s} {int((split == s).sum())}" for s in SPLITS) + "\n")
            systems, counts = np.unique(self.column("crystal_system"), return_counts=True)
            out.write(
                "  per crystal system: "
                + ", ".join(f"{s} {c}" for s, c in zip(systems, counts, strict=True))
                + "\n"
            )
            synthetic = int(self.column("synthetic").sum())
            disagree = int(self.column("spacegroup_disagrees").sum())
            parents = self.column("isotype_of")
            out.write(
                f"  synthetic {synthetic}, isotypes {int((parents != '').sum())} (of "
                f"{len(set(parents) - {''})} read entries), disordered {int(self.column('disordered').sum())}, "
                f"detected space group differs from the given label: {disagree}\n"
            )
            sg = self.column("spacegroup_number")
            hist = np.bincount(sg, minlength=231)[1:]
            out.write(
                f"  space groups present: {int((hist > 0).sum())} of 230\n  space-group histogram (sg:count):\n"
            )
            present = [f"{i + 1}:{c}" for i, c in enumerate(hist) if c]
            for k in range(0, len(present), 12):
                out.write("    " + " ".join(present[k : k + 12]) + "\n")
        if self.skipped:
            reasons: dict[str, int] = {}
            for s in self.skipped:
                key = s.reason.split(":")[0][:80]
                reasons[key] = reasons.get(key, 0) + 1
            out.write("  skip reasons:\n")
            for key, c in sorted(reasons.items(), key=lambda kv: -kv[1]):
                out.write(f"    {c:6d}  {key}\n")
        return out.getvalue()
