"""Turn the ``--source`` arguments of ``xrdsynth bank build`` into crystal structures with provenance.

The bank build is distributed and resumable by chunk, so the work is split in two steps:

* :func:`list_items` is cheap: it reads file names, archive directories, CIF block headers, JSON records
  or CSV rows to produce picklable :class:`SourceItem` locators, but parses no structure.
* :func:`load_entry` runs inside a worker and turns one locator into an :class:`Entry` (a pymatgen
  ``Structure`` plus its id, provenance, given space-group label and metadata).

:func:`describe` then validates an entry against a :class:`~xrdsynth.config.BankConfig` and returns the
per-entry record the bank stores (:class:`EntryInfo`), including the space group detected by spglib.

Accepted ``source`` strings (see :data:`ACCEPTED_FORMS`): a directory (searched recursively for ``*.cif``),
a glob pattern, a single ``.cif``, a ``.zip`` / ``.tar.gz`` / ``.tgz`` archive of CIFs, ``.json`` /
``.jsonl`` (optionally gzipped) of pymatgen Structure dicts, a ``.csv`` with a ``cif`` column, ``builtin``
(the AFLOW prototype library shipped in pymatgen) and ``random:N[:GROUPS]`` (pyxtal-generated crystals).
"""

from __future__ import annotations

import csv
import functools
import glob
import gzip
import hashlib
import io
import json
import math
import os
import re
import tarfile
import warnings
import zipfile
import zlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np
from pymatgen.core import Structure

from xrdsynth.config import BankConfig

MetadataValue = str | float | int | bool | None

ACCEPTED_FORMS = (
    "a directory (searched recursively for *.cif), a glob pattern such as 'cifs/**/*.cif', a .cif file, "
    "a .zip/.tar.gz/.tgz archive of CIFs, a .json/.json.gz list or .jsonl/.jsonl.gz lines of pymatgen "
    "Structure dicts (or {'structure': dict, 'id': ...} records), a .csv with a 'cif' column, 'builtin' "
    "(AFLOW prototypes shipped with pymatgen), or 'random:N[:GROUPS]' (N pyxtal crystals per space group, "
    "GROUPS like '1-10' or '2,14,225')"
)

# Metadata keys that name an entry, in order of preference.
_ID_KEYS = ("id", "material_id")
# Metadata keys that carry a space-group label (number or Hermann-Mauguin symbol).
_SPACEGROUP_KEYS = ("spacegroup_number", "spacegroup", "space_group", "sg")
# Metadata keys that carry the energy above the convex hull in eV/atom (A.1 filters on it).
_E_ABOVE_HULL_KEYS = ("e_above_hull", "e_above_hull_ev_per_atom", "energy_above_hull")
_CIF_SUFFIXES = (".cif",)
_AFLOW_LICENCE = (
    "MIT (pymatgen aflow_prototypes.json.gz); data: AFLOW Library of Crystallographic Prototypes "
    "(cite Mehl et al., Comput. Mater. Sci. 136, S1 (2017))"
)
# Elements drawn for random crystals: common, well-tabulated scatterers across the periodic table.
RANDOM_ELEMENTS = (
    "Li", "Na", "K", "Mg", "Ca", "Sr", "Ba", "B", "Al", "Ga", "C", "Si", "Ge", "Sn", "N", "P", "O", "S",
    "Se", "F", "Cl", "Br", "Ti", "V", "Cr", "Mn", "Fe", "Co", "Ni", "Cu", "Zn", "Zr", "Nb", "Mo", "Ag", "La",
)  # fmt: skip
# Random crystals are kept small (atoms per primitive cell) so that generating all 230 groups stays fast.
_RANDOM_MAX_ATOMS = 64
_RANDOM_MAX_ATTEMPTS = 40
# Random crystals must show their target group even at this loose tolerance, so that any bank symprec
# up to it detects the target rather than an accidental supergroup.
_RANDOM_CHECK_SYMPREC = 0.1
# Largest CIF file or archive member read, in bytes. One structure's CIF is a few kB to a few MB; the cap
# keeps a compressed "zip bomb" member (600 MB of text in a 600 kB zip) from being read into memory.
MAX_CIF_BYTES = 64 * 2**20
# Errors that reading a file, an archive or a compressed stream can raise.
_READ_ERRORS = (
    OSError,
    EOFError,
    KeyError,
    zipfile.BadZipFile,
    tarfile.TarError,
    zlib.error,
    UnicodeDecodeError,
)


class StructureError(ValueError):
    """An input that cannot become a bank entry; ``reason`` is a short user-facing explanation."""

    def __init__(self, where: str, reason: str) -> None:
        super().__init__(f"{where}: {reason}")
        self.where = where
        self.reason = reason


@dataclass(frozen=True)
class SourceItem:
    """Cheap, picklable locator of one structure; nothing is parsed until :func:`load_entry`.

    ``locator`` forms: ``path.cif``, ``path.cif#block=2`` (1-based data block of a multi-block CIF),
    ``archive.zip::member.cif``, ``file.json#item=3`` (1-based), ``file.jsonl#L12`` (1-based line),
    ``file.csv#row=5`` (1-based data row after the header), ``aflow:<label>`` and ``random:<sg>:<k>``.
    """

    source: str
    kind: str
    locator: str
    entry_id: str


@dataclass
class Entry:
    """One loaded structure with where it came from and what the input said about it."""

    entry_id: str
    source: str
    provenance: str
    structure: Structure
    given_spacegroup: int | None
    metadata: dict[str, MetadataValue] = field(default_factory=dict)
    synthetic: bool = False


@dataclass(frozen=True)
class EntryInfo:
    """What the bank stores per entry; lattice values are those of the cell as loaded."""

    reduced_formula: str
    spacegroup_number: int
    spacegroup_symbol: str
    crystal_system: str
    lattice_abc_angstrom: tuple[float, float, float]
    lattice_angles_deg: tuple[float, float, float]
    n_sites: int
    disordered: bool
    spacegroup_disagrees: bool
    e_above_hull_ev_per_atom: float | None = None  # from the metadata (any of its accepted names)


# --------------------------------------------------------------------------------------------- listing


def list_items(source: str, *, seed: int = 0) -> list[SourceItem]:
    """List the structures named by one ``--source`` string without parsing them.

    ``seed`` only enters the ids of ``random:`` sources. Raises ``ValueError`` naming the source and
    :data:`ACCEPTED_FORMS` for a nonexistent path or unknown format, and naming the source for a file or
    archive that cannot be read, a CSV without a ``cif`` column, invalid JSON, or duplicate ids in one
    source. Single files and archive members too large to read (:data:`MAX_CIF_BYTES`) are still listed,
    as one item each, so that :func:`load_entry` reports them as skipped entries.
    """
    text = source.strip()
    if text == "builtin":
        items = _list_builtin(source)
    elif text.startswith("random:"):
        items = _list_random(source, seed)
    else:
        try:
            items = _list_path(source, text)
        except _READ_ERRORS as exc:
            raise ValueError(f"source {source!r}: cannot read it ({type(exc).__name__}: {exc})") from exc
    _check_unique_ids(source, items)
    return items


def _list_path(source: str, text: str) -> list[SourceItem]:
    if os.path.isdir(text):
        root = Path(text)
        files = sorted(
            (p for p in root.rglob("*") if p.is_file() and p.name.lower().endswith(_CIF_SUFFIXES)),
            key=lambda p: p.relative_to(root).as_posix(),
        )
        if not files:
            raise ValueError(
                f"source {source!r}: directory contains no *.cif files; accepted: {ACCEPTED_FORMS}"
            )
        items = [it for p in files for it in _list_cif_file(source, p, _strip_cif(p.relative_to(root)))]
    elif any(ch in text for ch in "*?["):
        matches = sorted(Path(p) for p in glob.glob(text, recursive=True) if os.path.isfile(p))
        if not matches:
            raise ValueError(f"source {source!r}: glob pattern matches no files; accepted: {ACCEPTED_FORMS}")
        base = Path(_glob_base(text))
        items = []
        for p in matches:
            items.extend(_list_file(source, p, id_stem=_strip_cif(_relative_or_name(p, base))))
    elif os.path.isfile(text):
        path = Path(text)
        items = _list_file(source, path, id_stem=_strip_cif(Path(path.name)))
    else:
        raise ValueError(
            f"source {source!r} is neither an existing path nor a known form; accepted: {ACCEPTED_FORMS}"
        )
    return items


def _list_file(source: str, path: Path, *, id_stem: str) -> list[SourceItem]:
    kind = _file_kind(path)
    if kind == "cif":
        return _list_cif_file(source, path, id_stem)
    if kind == "zip":
        return _list_zip(source, path)
    if kind == "tar":
        return _list_tar(source, path)
    if kind == "json":
        return _list_json(source, path)
    if kind == "jsonl":
        return _list_jsonl(source, path)
    if kind == "csv":
        return _list_csv(source, path)
    raise ValueError(
        f"source {source!r}: file {str(path)!r} has an unknown format; accepted: {ACCEPTED_FORMS}"
    )


def _file_kind(path: Path) -> str | None:
    name = path.name.lower()
    for suffixes, kind in (
        (_CIF_SUFFIXES, "cif"),
        ((".zip",), "zip"),
        ((".tar.gz", ".tgz"), "tar"),
        ((".json", ".json.gz"), "json"),
        ((".jsonl", ".jsonl.gz"), "jsonl"),
        ((".csv",), "csv"),
    ):
        if name.endswith(suffixes):
            return kind
    return None


def _strip_cif(rel: Path) -> str:
    posix = rel.as_posix()
    return posix[: -len(".cif")] if posix.lower().endswith(".cif") else posix


def _glob_base(pattern: str) -> str:
    """Longest leading directory of a glob pattern without wildcards (ids are made relative to it)."""
    parts = Path(pattern).parts
    fixed = []
    for part in parts:
        if any(ch in part for ch in "*?["):
            break
        fixed.append(part)
    return str(Path(*fixed)) if fixed else "."


def _relative_or_name(path: Path, base: Path) -> Path:
    try:
        return path.relative_to(base)
    except ValueError:
        return Path(path.name)


def _archive_stem(path: Path) -> str:
    name = path.name
    for suffix in (".tar.gz", ".tgz", ".zip"):
        if name.lower().endswith(suffix):
            return name[: -len(suffix)]
    return path.stem


def _check_unique_ids(source: str, items: list[SourceItem]) -> None:
    seen: dict[str, str] = {}
    for item in items:
        if item.entry_id in seen:
            raise ValueError(
                f"source {source!r}: id {item.entry_id!r} is used by both {seen[item.entry_id]} and "
                f"{item.locator}; give each record a unique 'id'"
            )
        seen[item.entry_id] = item.locator


def input_file(item: SourceItem) -> str | None:
    """The file an item is read from (for archive members the archive), or None for generated crystals."""
    if item.kind == "cif":
        return _split_block(item.locator)[0]
    if item.kind == "archive_cif":
        return _split_block(item.locator)[0].split("::", 1)[0]
    if item.kind in ("json", "jsonl", "csv"):
        return item.locator.rpartition("#")[0]
    if item.kind == "builtin":
        return str(_aflow_library_path())
    return None


def file_sha256(path: str) -> str:
    """SHA-256 of a file's bytes, read in 1 MiB blocks."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(1 << 20):
            digest.update(block)
    return digest.hexdigest()


# CIF data blocks: a block starts at a line "data_<name>"; a block holds a structure if it lists atom sites.
_DATA_BLOCK = re.compile(r"^data_(\S*)", re.IGNORECASE | re.MULTILINE)
_ATOM_SITES = re.compile(r"^\s*_atom_site_(fract|cartn)_x\b", re.IGNORECASE | re.MULTILINE)


def _cif_blocks(text: str) -> tuple[str, list[tuple[str, str]]]:
    """Split CIF text into (preamble before the first block, [(block name, block text)])."""
    starts = list(_DATA_BLOCK.finditer(text))
    if not starts:
        return text, []
    preamble = text[: starts[0].start()]
    blocks = []
    for i, m in enumerate(starts):
        end = starts[i + 1].start() if i + 1 < len(starts) else len(text)
        blocks.append((m.group(1), text[m.start() : end]))
    return preamble, blocks


def _structure_block_numbers(text: str) -> list[tuple[int, str]]:
    """1-based numbers and names of the blocks that list atom sites (all blocks if none does)."""
    _, blocks = _cif_blocks(text)
    with_sites = [(i + 1, name) for i, (name, body) in enumerate(blocks) if _ATOM_SITES.search(body)]
    return with_sites or [(i + 1, name) for i, (name, _) in enumerate(blocks)]


def _cif_items(source: str, kind: str, locator: str, id_stem: str, text: str) -> list[SourceItem]:
    blocks = _structure_block_numbers(text)
    if len(blocks) <= 1:
        # An empty or block-less file still gets one item so that load_entry reports why it fails.
        return [SourceItem(source, kind, locator, id_stem)]
    return [SourceItem(source, kind, f"{locator}#block={n}", f"{id_stem}#{name or n}") for n, name in blocks]


def _list_cif_file(source: str, path: Path, id_stem: str) -> list[SourceItem]:
    try:
        text = _read_text(path)
    except StructureError:
        # Too large to read: one item, so that load_entry reports it as a skipped input.
        return [SourceItem(source, "cif", str(path), id_stem)]
    return _cif_items(source, "cif", str(path), id_stem, text)


def _list_zip(source: str, path: Path) -> list[SourceItem]:
    stem = _archive_stem(path)
    items = []
    with zipfile.ZipFile(path) as zf:
        for name in sorted(n for n in zf.namelist() if n.lower().endswith(_CIF_SUFFIXES)):
            locator, id_stem = f"{path}::{name}", f"{stem}/{_strip_cif(Path(name))}"
            try:
                text = _read_zip_member(zf, name, locator)
            except (StructureError, *_READ_ERRORS):
                # An oversized or corrupt member becomes one item that load_entry reports as skipped.
                items.append(SourceItem(source, "archive_cif", locator, id_stem))
                continue
            items.extend(_cif_items(source, "archive_cif", locator, id_stem, text))
    if not items:
        raise ValueError(f"source {source!r}: archive {str(path)!r} contains no *.cif members")
    return items


def _list_tar(source: str, path: Path) -> list[SourceItem]:
    stem = _archive_stem(path)
    members, unreadable = _tar_cif_texts(str(path), *_file_key(path))
    if not members and not unreadable:
        raise ValueError(f"source {source!r}: archive {str(path)!r} contains no *.cif members")
    items = []
    for name in sorted(members.keys() | unreadable.keys()):
        locator, id_stem = f"{path}::{name}", f"{stem}/{_strip_cif(Path(name))}"
        if name in unreadable:
            items.append(SourceItem(source, "archive_cif", locator, id_stem))
        else:
            items.extend(_cif_items(source, "archive_cif", locator, id_stem, members[name]))
    return items


def _record_id(record: Any, fallback: str) -> str:
    if isinstance(record, dict):
        for key in _ID_KEYS:
            if record.get(key) not in (None, ""):
                return str(record[key])
    return fallback


def _list_json(source: str, path: Path) -> list[SourceItem]:
    records = _json_records(str(path), *_file_key(path))
    stem = path.name.split(".")[0]
    return [
        SourceItem(source, "json", f"{path}#item={i}", _record_id(rec, f"{stem}#item={i}"))
        for i, rec in enumerate(records, start=1)
    ]


def _list_jsonl(source: str, path: Path) -> list[SourceItem]:
    stem = path.name.split(".")[0]
    items = []
    for line_no, line in _jsonl_lines(path):
        try:
            record = json.loads(line)
        except json.JSONDecodeError as exc:
            raise ValueError(f"source {source!r}: {path}#L{line_no} is not valid JSON ({exc.msg})") from None
        items.append(
            SourceItem(source, "jsonl", f"{path}#L{line_no}", _record_id(record, f"{stem}#L{line_no}"))
        )
    return items


def _list_csv(source: str, path: Path) -> list[SourceItem]:
    header, rows = _csv_rows(str(path), *_file_key(path))
    if "cif" not in header:
        raise ValueError(
            f"source {source!r}: CSV {str(path)!r} has no 'cif' column (columns: {', '.join(header)}); "
            "structures must be CIF text in a column named 'cif'"
        )
    return [
        SourceItem(source, "csv", f"{path}#row={i}", _record_id(row, f"{path.stem}#row={i}"))
        for i, row in enumerate(rows, start=1)
    ]


# --------------------------------------------------------------------------------------------- loading


def load_entry(item: SourceItem, *, seed: int = 0, max_sites: int | None = None) -> Entry:
    """Parse the structure an item points to; raises :class:`StructureError` on any bad input.

    ``seed`` must be the one given to :func:`list_items` for ``random:`` items (it is checked against the
    id); other kinds ignore it. With ``max_sites``, CIF text and Structure dicts that list more atom
    positions than that are rejected before they are parsed (parsing a 10,000-atom CIF takes seconds).
    CIF files and archive members larger than :data:`MAX_CIF_BYTES` are rejected unread.
    """
    try:
        if item.kind == "cif":
            path, block = _split_block(item.locator)
            return _entry_from_cif(item, _read_text(Path(path)), block, max_sites)
        if item.kind == "archive_cif":
            member_locator, block = _split_block(item.locator)
            archive, member = member_locator.split("::", 1)
            return _entry_from_cif(item, _read_archive_member(Path(archive), member), block, max_sites)
        if item.kind in ("json", "jsonl"):
            return _entry_from_record(item, max_sites)
        if item.kind == "csv":
            return _entry_from_csv(item, max_sites)
        if item.kind == "builtin":
            return _entry_from_builtin(item)
        if item.kind == "random":
            return _entry_from_random(item, seed)
    except StructureError:
        raise
    except _READ_ERRORS as exc:
        raise StructureError(item.locator, f"cannot read input ({type(exc).__name__}: {exc})") from exc
    raise ValueError(f"item {item.locator!r} has unknown kind {item.kind!r}")


def _split_block(locator: str) -> tuple[str, int | None]:
    head, sep, tail = locator.rpartition("#block=")
    if sep and tail.isdigit():
        return head, int(tail)
    return locator, None


def _read_bounded(handle: BinaryIO, where: str, declared_bytes: int | None) -> str:
    """Read one CIF of at most MAX_CIF_BYTES; the declared size is checked first and the read is capped
    too, since archive headers can lie."""
    limit = MAX_CIF_BYTES
    advice = "split or extract it, or leave it out of the sources"
    if declared_bytes is not None and declared_bytes > limit:
        raise StructureError(
            where, f"too large: {declared_bytes} bytes exceed the {limit}-byte limit for one CIF; {advice}"
        )
    data = handle.read(limit + 1)
    if len(data) > limit:
        raise StructureError(
            where,
            f"too large: more than the {limit}-byte limit for one CIF (its header declared "
            f"{declared_bytes} bytes); {advice}",
        )
    return data.decode("utf-8", errors="replace")


def _read_text(path: Path) -> str:
    with open(path, "rb") as fh:
        return _read_bounded(fh, str(path), os.fstat(fh.fileno()).st_size)


def _read_zip_member(zf: zipfile.ZipFile, member: str, where: str) -> str:
    info = zf.getinfo(member)
    with zf.open(info) as fh:
        return _read_bounded(fh, where, info.file_size)


def _file_key(path: Path) -> tuple[int, int]:
    """(mtime_ns, size): part of cache keys so that an edited file is re-read."""
    st = path.stat()
    return st.st_mtime_ns, st.st_size


# Workers load many entries of one file; these caches keep a parsed file per process instead of
# re-reading it for every entry. Keys include (mtime_ns, size) so an edited file is re-read.


@functools.lru_cache(maxsize=2)
def _tar_cif_texts(path: str, mtime_ns: int, size: int) -> tuple[dict[str, str], dict[str, str]]:
    """All CIF members of a tar archive, and the reasons of those that cannot be read (too large).

    gzip streams have no random access, so one pass reads them all.
    """
    texts: dict[str, str] = {}
    unreadable: dict[str, str] = {}
    with tarfile.open(path, "r:*") as tf:
        for member in tf:
            if member.isfile() and member.name.lower().endswith(_CIF_SUFFIXES):
                handle = tf.extractfile(member)
                if handle is not None:
                    try:
                        texts[member.name] = _read_bounded(handle, f"{path}::{member.name}", member.size)
                    except StructureError as exc:
                        unreadable[member.name] = exc.reason
    return texts, unreadable


def _read_archive_member(archive: Path, member: str) -> str:
    where = f"{archive}::{member}"
    if _file_kind(archive) == "zip":
        with zipfile.ZipFile(archive) as zf:
            return _read_zip_member(zf, member, where)
    texts, unreadable = _tar_cif_texts(str(archive), *_file_key(archive))
    if member in unreadable:
        raise StructureError(where, unreadable[member])
    if member not in texts:
        raise KeyError(f"no member {member!r} in {archive}")
    return texts[member]


def _open_text(path: Path) -> io.TextIOBase:
    if path.name.lower().endswith(".gz"):
        return io.TextIOWrapper(gzip.open(path, "rb"), encoding="utf-8")
    return open(path, encoding="utf-8")


@functools.lru_cache(maxsize=2)
def _json_records(path: str, mtime_ns: int, size: int) -> list[Any]:
    try:
        with _open_text(Path(path)) as fh:
            data = json.load(fh)
    except json.JSONDecodeError as exc:
        raise ValueError(f"{path} is not valid JSON ({exc.msg} at line {exc.lineno})") from None
    if not isinstance(data, list):
        raise ValueError(
            f"{path} must hold a JSON list of Structure dicts or records, not a {type(data).__name__}"
        )
    return data


def _jsonl_lines(path: Path) -> Iterator[tuple[int, str]]:
    """(1-based line number, text) of the non-blank lines."""
    with _open_text(path) as fh:
        for line_no, line in enumerate(fh, start=1):
            if line.strip():
                yield line_no, line


@functools.lru_cache(maxsize=2)
def _jsonl_offsets(path: str, mtime_ns: int, size: int) -> dict[int, int]:
    """Byte offset of every line of an uncompressed JSONL file, so a worker can seek to one record."""
    offsets = {}
    with open(path, "rb") as fh:
        pos = 0
        for line_no, line in enumerate(fh, start=1):
            offsets[line_no] = pos
            pos += len(line)
    return offsets


def _jsonl_record_text(path: Path, line_no: int) -> str:
    if path.name.lower().endswith(".gz"):
        for n, line in _jsonl_lines(path):
            if n == line_no:
                return line
        raise KeyError(f"line {line_no} is missing or blank")
    offsets = _jsonl_offsets(str(path), *_file_key(path))
    if line_no not in offsets:
        raise KeyError(f"line {line_no} is missing")
    with open(path, "rb") as fh:
        fh.seek(offsets[line_no])
        return fh.readline().decode("utf-8")


@functools.lru_cache(maxsize=2)
def _csv_rows(path: str, mtime_ns: int, size: int) -> tuple[list[str], list[dict[str, str]]]:
    # CIF cells are long; the default field limit (128 kB) would reject large cells.
    csv.field_size_limit(1 << 30)
    with open(path, encoding="utf-8", newline="") as fh:
        reader = csv.DictReader(fh)
        rows = list(reader)
        header = list(reader.fieldnames or [])
    return header, rows


# ---------------------------------------------------------------------------------- metadata helpers


def _as_metadata_value(value: Any) -> MetadataValue:
    if value is None or isinstance(value, str | bool | int | float):
        return value
    return json.dumps(value, sort_keys=True, default=str)


def _coerce_cell(text: str) -> MetadataValue:
    """CSV cells arrive as text; numbers and booleans are restored so filters can compare them."""
    stripped = text.strip()
    if stripped == "":
        return None
    if stripped in ("True", "true", "False", "false"):
        return stripped.lower() == "true"
    try:
        return int(stripped)
    except ValueError:
        pass
    try:
        return float(stripped)
    except ValueError:
        return text


_SCREW_AXIS = re.compile(r"([2346])([1-5])")


def _spacegroup_from_symbol(symbol: str) -> int | None:
    """International number of a Hermann-Mauguin symbol ('Fm-3m', 'P 21/c', 'P2_1/c'), or None."""
    from pymatgen.symmetry.groups import SpaceGroup

    compact = symbol.strip().strip("'\"")
    candidates = [compact, compact.replace(" ", ""), _SCREW_AXIS.sub(r"\1_\2", compact.replace(" ", ""))]
    for candidate in candidates:
        try:
            return int(SpaceGroup(candidate).int_number)
        except (ValueError, KeyError):
            continue
    return None


def _spacegroup_label(value: Any, where: str, field_name: str) -> int | None:
    """Space-group number from a metadata label: int, numeric text, H-M symbol or {'number': n} dict."""
    if value is None or value == "":
        return None
    if isinstance(value, dict):
        value = value.get("number", value.get("symbol"))
    number: int | None
    if isinstance(value, bool):
        number = None
    elif isinstance(value, int | float) and float(value).is_integer():
        number = int(value)
    elif isinstance(value, str) and value.strip().isdigit():
        number = int(value.strip())
    elif isinstance(value, str):
        number = _spacegroup_from_symbol(value)
    else:
        number = None
    if number is None or not 1 <= number <= 230:
        raise StructureError(
            where,
            f"{field_name}={value!r} is neither a space-group number 1-230 nor a Hermann-Mauguin symbol",
        )
    return number


def _metadata_spacegroup(metadata: dict[str, MetadataValue], where: str) -> int | None:
    for key in _SPACEGROUP_KEYS:
        if metadata.get(key) not in (None, ""):
            return _spacegroup_label(metadata[key], where, key)
    return None


# ------------------------------------------------------------------------------------------ CIF text

# The shared structure collection states the labelled group in a header comment, because its files are
# symmetry-expanded P1 listings whose CIF symmetry fields say "P 1".
_HEADER_LABEL = re.compile(r"^#\s*labell?ed space group:\s*(\d+)", re.IGNORECASE | re.MULTILINE)
_HEADER_LICENCE = re.compile(r"^#\s*licen[cs]e:\s*(.+?)\s*$", re.IGNORECASE | re.MULTILINE)
_CIF_NUMBER_TAGS = ("_space_group_IT_number", "_symmetry_Int_Tables_number")
_CIF_SYMBOL_TAGS = ("_space_group_name_H-M_alt", "_symmetry_space_group_name_H-M")
_CIF_NAME_TAGS = ("_chemical_name_mineral", "_chemical_name_common", "_chemical_name_systematic")


def _summarize_warnings(caught: list[warnings.WarningMessage]) -> str:
    messages = list(dict.fromkeys(str(w.message).strip() for w in caught))
    return "; ".join(messages)[:500]


# Cell parameters as written; pymatgen would silently accept a negative length (its lattice takes |a|).
_CELL_PARAMETER = re.compile(
    r"^[ \t]*(_cell_(?:length_[abc]|angle_(?:alpha|beta|gamma)))[ \t]+(\S+)", re.IGNORECASE | re.MULTILINE
)
_CIF_NUMBER = re.compile(r"[-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?")
# One CIF token: a quoted string (closed by a quote followed by white space), a comment, or a bare word.
_CIF_TOKEN = re.compile(r"'.*?'(?=\s|$)|\".*?\"(?=\s|$)|#.*|\S+")
_CIF_RESERVED = ("loop_", "data_", "save_", "global_", "stop_")
_COORDINATE_TAGS = (
    ("_atom_site_fract_x", "_atom_site_fract_y", "_atom_site_fract_z"),
    ("_atom_site_cartn_x", "_atom_site_cartn_y", "_atom_site_cartn_z"),
)


def _cif_number(text: str) -> float | None:
    """The value of a CIF number such as '5.431(2)'; None for '?', '.' or text."""
    match = _CIF_NUMBER.match(text.strip("'\""))
    return float(match.group()) if match else None


def _cif_tokens(text: str) -> Iterator[str]:
    """The tokens of CIF text, with comments dropped and each ';' text field as one token."""
    in_text_field = False
    for line in text.splitlines():
        if line.startswith(";"):
            in_text_field = not in_text_field
            if not in_text_field:
                yield ";"
            continue
        if in_text_field:
            continue
        if "'" not in line and '"' not in line and "#" not in line:
            yield from line.split()
            continue
        for token in _CIF_TOKEN.findall(line):
            if token.startswith("#"):
                break
            yield token


def _count_atom_positions(text: str, stop_after: int | None = None) -> int:
    """Distinct coordinate triples listed by the atom_site loops of CIF text, before symmetry expansion.

    Symmetry only adds sites and partial occupancies share a position, so the parsed cell has at least
    this many sites (barring listed positions that are symmetry copies of each other). One pass over the
    tokens, without building a structure; it ends early once more than ``stop_after`` are found.
    """
    positions: set[tuple[Any, ...]] = set()
    state = "scan"  # "scan" for loop_, then its "tags", then its "values"
    tags: list[str] = []
    columns: list[int] = []
    row: dict[int, str] = {}
    n_values = 0
    for token in _cif_tokens(text):
        lower = token.lower()
        if state == "tags":
            if token.startswith("_"):
                tags.append(lower)
                continue
            coordinates = next((c for c in _COORDINATE_TAGS if all(t in tags for t in c)), ())
            columns = [tags.index(t) for t in coordinates]
            state, n_values, row = ("values" if tags else "scan"), 0, {}
        if state == "values":
            if not token.startswith("_") and not lower.startswith(_CIF_RESERVED):
                column = n_values % len(tags)
                n_values += 1
                if columns and column in columns:
                    row[column] = token
                    if len(row) == 3:
                        cells = [row[k] for k in columns]
                        numbers = [_cif_number(c) for c in cells]
                        positions.add(
                            tuple(
                                c if x is None else round(x, 4) for x, c in zip(numbers, cells, strict=True)
                            )
                        )
                        row = {}
                        if stop_after is not None and len(positions) > stop_after:
                            return len(positions)
                continue
            state = "scan"
        if lower == "loop_":
            state, tags = "tags", []
    return len(positions)


def _check_cif_text(where: str, text: str, max_sites: int | None) -> None:
    """Cheap checks on the CIF text that pymatgen would not make, or would make only after a slow parse."""
    for match in _CELL_PARAMETER.finditer(text):
        tag, raw = match.group(1), match.group(2)
        value = _cif_number(raw)
        if value is None:
            continue  # '?' and other non-numbers are left to the parser
        if tag.lower().startswith("_cell_length") and value <= 0.0:
            raise StructureError(where, f"{tag} = {raw}: cell lengths must be positive (Å)")
        if tag.lower().startswith("_cell_angle") and not 0.0 < value < 180.0:
            raise StructureError(
                where, f"{tag} = {raw}: cell angles must lie strictly between 0 and 180 degrees"
            )
    if max_sites is not None:
        if _count_atom_positions(text, stop_after=max_sites) > max_sites:
            raise StructureError(
                where,
                f"too many sites: the atom_site loop lists more than max_sites={max_sites} distinct "
                "positions (checked before parsing)",
            )


def _parse_cif(where: str, text: str, max_sites: int | None = None) -> tuple[Structure, dict[str, Any], str]:
    """Parse CIF text holding one data block -> (structure, raw block tags, warning summary)."""
    from pymatgen.io.cif import CifParser

    if not text.strip():
        raise StructureError(where, "unparseable CIF: the file is empty")
    if not _DATA_BLOCK.search(text):
        raise StructureError(where, "unparseable CIF: no 'data_' block found")
    _check_cif_text(where, text, max_sites)
    # CifParser warns about every tolerated irregularity; collect them quietly and keep them as the
    # reason when parsing fails, or as metadata when it succeeds.
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            parser = CifParser.from_str(text)
            structures = parser.parse_structures(primitive=False, on_error="raise")
            tags = next(iter(parser.as_dict().values()), {})
        except Exception as exc:  # noqa: BLE001 - pymatgen raises many types for malformed CIFs
            detail = f"{type(exc).__name__}: {exc}".strip()
            noted = _summarize_warnings(caught)
            raise StructureError(
                where, f"unparseable CIF: {detail}" + (f" [{noted}]" if noted else "")
            ) from exc
    if not structures:
        raise StructureError(where, f"unparseable CIF: no structure found [{_summarize_warnings(caught)}]")
    return structures[0], tags, _summarize_warnings(caught)


def _cif_label(tags: dict[str, Any], where: str) -> int | None:
    """Space group stated by CIF tags; P1 is how symmetry-expanded listings are written, so not a label."""
    number: int | None = None
    for tag in _CIF_NUMBER_TAGS:
        value = tags.get(tag)
        if isinstance(value, str) and value.strip().isdigit():
            number = int(value.strip())
            break
    if number is None:
        for tag in _CIF_SYMBOL_TAGS:
            value = tags.get(tag)
            if isinstance(value, str) and value.strip() not in ("", "?", "."):
                number = _spacegroup_from_symbol(value)
                break
    if number is None or number == 1 or not 1 <= number <= 230:
        return None
    return number


def _entry_from_cif(item: SourceItem, text: str, block: int | None, max_sites: int | None) -> Entry:
    where = item.locator
    preamble, blocks = _cif_blocks(text)
    if block is not None:
        if not 1 <= block <= len(blocks):
            raise StructureError(where, f"CIF has {len(blocks)} data blocks, no block {block}")
        text = preamble + blocks[block - 1][1]
    structure, tags, noted = _parse_cif(where, text, max_sites)
    metadata: dict[str, MetadataValue] = {}
    header_label = _HEADER_LABEL.search(preamble)
    given = int(header_label.group(1)) if header_label and block is None else _cif_label(tags, where)
    if licence := _HEADER_LICENCE.search(preamble):
        metadata["licence"] = licence.group(1)
    for tag in _CIF_NAME_TAGS:
        if isinstance(tags.get(tag), str) and tags[tag].strip() not in ("", "?", "."):
            metadata["name"] = tags[tag].strip()
            break
    if isinstance(tags.get("_chemical_formula_sum"), str):
        metadata["formula_given"] = tags["_chemical_formula_sum"].strip()
    if noted:
        metadata["parse_warnings"] = noted
    return Entry(item.entry_id, item.source, item.locator, structure, given, metadata, synthetic=False)


# ------------------------------------------------------------------------------------ records (JSON/CSV)


def _structure_from_record(
    record: Any, where: str, max_sites: int | None
) -> tuple[Structure, dict[str, MetadataValue], str]:
    """Split a JSON record into (structure, metadata, parse warnings); accepts a bare Structure dict too."""
    if not isinstance(record, dict):
        raise StructureError(
            where, f"expected a Structure dict or a record with 'structure', got {type(record).__name__}"
        )
    if "structure" in record or "cif" in record:
        metadata = {k: _as_metadata_value(v) for k, v in record.items() if k not in ("structure", "cif")}
        if "structure" in record and isinstance(record["structure"], dict):
            return _structure_from_dict(record["structure"], where, max_sites), metadata, ""
        cif_text = record.get("cif", record.get("structure"))
        if not isinstance(cif_text, str):
            raise StructureError(where, "'structure' must be a pymatgen Structure dict or 'cif' a CIF string")
        structure, _, noted = _parse_cif(where, cif_text, max_sites)
        return structure, metadata, noted
    return _structure_from_dict(record, where, max_sites), {}, ""


def _structure_from_dict(data: dict[str, Any], where: str, max_sites: int | None = None) -> Structure:
    sites = data.get("sites")
    if max_sites is not None and isinstance(sites, list) and len(sites) > max_sites:
        raise StructureError(
            where, f"too many sites: {len(sites)} > max_sites={max_sites} (checked before parsing)"
        )
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return Structure.from_dict(data)
    except Exception as exc:  # noqa: BLE001 - from_dict raises KeyError/TypeError/ValueError on bad dicts
        raise StructureError(where, f"invalid pymatgen Structure dict ({type(exc).__name__}: {exc})") from exc


def _entry_from_record(item: SourceItem, max_sites: int | None) -> Entry:
    where = item.locator
    path_text, _, anchor = item.locator.rpartition("#")
    path = Path(path_text)
    if item.kind == "json":
        records = _json_records(str(path), *_file_key(path))
        index = int(anchor.removeprefix("item="))
        if not 1 <= index <= len(records):
            raise StructureError(where, f"JSON list has {len(records)} items, no item {index}")
        record = records[index - 1]
    else:
        line = _jsonl_record_text(path, int(anchor.removeprefix("L")))
        try:
            record = json.loads(line)
        except json.JSONDecodeError as exc:
            raise StructureError(where, f"invalid JSON ({exc.msg})") from exc
    structure, metadata, noted = _structure_from_record(record, where, max_sites)
    if noted:
        metadata["parse_warnings"] = noted
    given = _metadata_spacegroup(metadata, where)
    return Entry(item.entry_id, item.source, item.locator, structure, given, metadata, synthetic=False)


def _entry_from_csv(item: SourceItem, max_sites: int | None) -> Entry:
    where = item.locator
    path_text, _, anchor = item.locator.rpartition("#row=")
    path = Path(path_text)
    _, rows = _csv_rows(str(path), *_file_key(path))
    index = int(anchor)
    if not 1 <= index <= len(rows):
        raise StructureError(where, f"CSV has {len(rows)} data rows, no row {index}")
    row = rows[index - 1]
    structure, _, noted = _parse_cif(where, row.get("cif") or "", max_sites)
    # Unnamed columns (a pandas index) carry no meaning; ids stay text so '007' is not turned into 7.
    metadata: dict[str, MetadataValue] = {
        key: (value if key in _ID_KEYS else _coerce_cell(value))
        for key, value in row.items()
        if key and key != "cif" and value is not None
    }
    if noted:
        metadata["parse_warnings"] = noted
    given = _metadata_spacegroup(metadata, where)
    return Entry(item.entry_id, item.source, item.locator, structure, given, metadata, synthetic=False)


# ------------------------------------------------------------------------------------- builtin (AFLOW)

_AFLOW_SPACEGROUP = re.compile(r"_[a-zA-Z]{2}\d+_(\d+)(?:_|$)")


def _aflow_library_path() -> Path:
    # Located by file rather than imported: importing pymatgen.analysis.prototypes loads four data files.
    # pymatgen is a namespace package (no __file__); pymatgen.core sits next to pymatgen.analysis.
    import pymatgen.core

    return Path(pymatgen.core.__file__).parent.parent / "analysis" / "prototypes" / "aflow_prototypes.json.gz"


@functools.lru_cache(maxsize=1)
def _aflow_library() -> tuple[list[dict[str, Any]], dict[str, int]]:
    """Raw prototype records and the map id -> record index (labels that repeat get '#k', 1-based)."""
    with gzip.open(_aflow_library_path(), "rt", encoding="utf-8") as fh:
        records = json.load(fh)
    labels = [rec["tags"]["aflow"] for rec in records]
    counts: dict[str, int] = {}
    for label in labels:
        counts[label] = counts.get(label, 0) + 1
    seen: dict[str, int] = {}
    ids: dict[str, int] = {}
    for index, label in enumerate(labels):
        seen[label] = seen.get(label, 0) + 1
        ids[f"aflow:{label}" if counts[label] == 1 else f"aflow:{label}#{seen[label]}"] = index
    return records, ids


def _list_builtin(source: str) -> list[SourceItem]:
    _, ids = _aflow_library()
    return [SourceItem(source, "builtin", entry_id, entry_id) for entry_id in ids]


def _entry_from_builtin(item: SourceItem) -> Entry:
    records, ids = _aflow_library()
    if item.locator not in ids:
        raise StructureError(item.locator, "no such prototype in pymatgen's AFLOW library")
    record = records[ids[item.locator]]
    tags = record["tags"]
    structure = _structure_from_dict(record["snl"], item.locator)
    label = tags["aflow"]
    match = _AFLOW_SPACEGROUP.search(label)
    metadata: dict[str, MetadataValue] = {
        "aflow_label": label,
        "pearson": tags.get("pearson"),
        "strukturbericht": tags.get("strukturbericht"),
        "mineral": tags.get("mineral"),
        "licence": _AFLOW_LICENCE,
        "file": str(_aflow_library_path()),
    }
    given = int(match.group(1)) if match else None
    return Entry(item.entry_id, item.source, item.locator, structure, given, metadata, synthetic=False)


# ------------------------------------------------------------------------------------- random (pyxtal)


def _parse_groups(text: str, source: str) -> list[int]:
    groups: set[int] = set()
    for part in text.split(","):
        part = part.strip()
        low, dash, high = part.partition("-")
        try:
            bounds = (int(low), int(high)) if dash else (int(part), int(part))
        except ValueError:
            raise ValueError(
                f"source {source!r}: bad space-group list entry {part!r}; use e.g. '1-10' or '2,14,225'"
            ) from None
        if not 1 <= bounds[0] <= bounds[1] <= 230:
            raise ValueError(f"source {source!r}: space groups must lie in 1-230, got {part!r}")
        groups.update(range(bounds[0], bounds[1] + 1))
    return sorted(groups)


def _list_random(source: str, seed: int) -> list[SourceItem]:
    parts = source.strip().split(":")
    if len(parts) not in (2, 3) or not parts[1].isdigit() or int(parts[1]) < 1:
        raise ValueError(
            f"source {source!r}: expected 'random:N' or 'random:N:GROUPS' with N >= 1; accepted: {ACCEPTED_FORMS}"
        )
    per_group = int(parts[1])
    groups = _parse_groups(parts[2], source) if len(parts) == 3 else list(range(1, 231))
    return [
        SourceItem(source, "random", f"random:{sg}:{k}", f"random:{sg}:{k}:s{seed}")
        for sg in groups
        for k in range(per_group)
    ]


# Lattice points per conventional cell by centring letter; R groups are generated on hexagonal axes.
_CENTRING_POINTS = {"P": 1, "A": 2, "B": 2, "C": 2, "I": 2, "R": 3, "F": 4}


@functools.lru_cache(maxsize=256)
def _wyckoff_multiplicities(sg: int) -> tuple[tuple[int, ...], int]:
    """(distinct Wyckoff multiplicities in the conventional cell, smallest first; lattice points per cell)."""
    from pyxtal.symmetry import Group

    group = Group(sg)
    multiplicities = tuple(sorted({int(wp.multiplicity) for wp in group.Wyckoff_positions}))
    return multiplicities, _CENTRING_POINTS[group.symbol[0]]


def random_structure(sg: int, k: int, seed: int) -> tuple[Structure, dict[str, MetadataValue]]:
    """The k-th random crystal of space group ``sg`` for ``seed``, generated with pyxtal.

    The generator is seeded from ``SeedSequence([seed, sg, k])`` only, so the crystal does not depend on
    the order or process it is made in. Compositions are 1-3 species from :data:`RANDOM_ELEMENTS`, each
    on one Wyckoff orbit, with at most 64 atoms in the primitive cell (the conventional cell is returned).
    Early attempts use only the smallest orbits, which keeps crystals small; a composition pyxtal cannot
    place, or a crystal whose spglib group at symprec 0.1 Å is not ``sg`` (an accidental supergroup, common
    when every atom sits on a fixed special position), is replaced by the next draw of the same generator,
    and every second attempt admits the next larger orbit, up to the general position.
    """
    from pymatgen.symmetry.analyzer import SpacegroupAnalyzer
    from pyxtal import pyxtal

    rng = np.random.default_rng(np.random.SeedSequence([seed, sg, k]))
    multiplicities, lattice_points = _wyckoff_multiplicities(sg)
    reasons: list[str] = []
    for attempt in range(_RANDOM_MAX_ATTEMPTS):
        choices = multiplicities[: 2 + attempt // 2]
        n_species = int(rng.integers(1, 4))
        species = [str(e) for e in rng.choice(RANDOM_ELEMENTS, size=n_species, replace=False)]
        counts = [int(rng.choice(choices)) for _ in species]
        if sum(counts) > _RANDOM_MAX_ATOMS * lattice_points:
            continue
        crystal = pyxtal()
        # pyxtal and spglib warn on every rejected placement; the reasons are kept below instead.
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            try:
                crystal.from_random(3, sg, species, counts, random_state=rng)
            except Exception as exc:  # noqa: BLE001 - pyxtal signals incompatible compositions with many types
                reasons.append(f"{species}{counts}: {type(exc).__name__}")
                continue
            if not crystal.valid:
                reasons.append(f"{species}{counts}: not valid")
                continue
            structure = crystal.to_pymatgen()
            detected = SpacegroupAnalyzer(structure, symprec=_RANDOM_CHECK_SYMPREC).get_space_group_number()
        if detected != sg:
            reasons.append(f"{species}{counts}: spglib finds {detected}")
            continue
        import pyxtal as pyxtal_module

        metadata: dict[str, MetadataValue] = {
            "generator": f"pyxtal {pyxtal_module.__version__}",
            "target_spacegroup": sg,
            "seed": seed,
            "k": k,
            "attempt": attempt + 1,
        }
        return structure, metadata
    raise StructureError(
        f"random:{sg}:{k}:s{seed}",
        f"pyxtal placed no composition in {_RANDOM_MAX_ATTEMPTS} attempts ({'; '.join(reasons[-3:])})",
    )


def _entry_from_random(item: SourceItem, seed: int) -> Entry:
    _, sg_text, k_text = item.locator.split(":")
    if not item.entry_id.endswith(f":s{seed}"):
        raise ValueError(
            f"item {item.entry_id!r} was listed with another seed than load_entry's seed={seed}; "
            "pass the same seed to list_items and load_entry"
        )
    structure, metadata = random_structure(int(sg_text), int(k_text), seed)
    return Entry(item.entry_id, item.source, item.locator, structure, int(sg_text), metadata, synthetic=True)


# ------------------------------------------------------------------------------------------- describe


def _e_above_hull(entry: Entry) -> float | None:
    for key in _E_ABOVE_HULL_KEYS:
        value = entry.metadata.get(key)
        if value is None or value == "":
            continue
        try:
            return float(value)
        except (TypeError, ValueError):
            raise StructureError(
                f"{entry.entry_id} ({entry.provenance})",
                f"metadata {key}={value!r} is not a number (eV/atom)",
            ) from None
    return None


def describe(entry: Entry, config: BankConfig) -> EntryInfo:
    """Validate an entry against ``config`` and detect its space group with spglib.

    Raises :class:`StructureError` for an empty or degenerate cell, a volume per site outside
    [``min_volume_per_site_a3``, ``max_volume_per_site_a3``] Å³, more than ``max_sites`` sites, an
    ``e_above_hull`` above ``max_e_above_hull_ev_per_atom`` eV/atom (A.1), or a failed detection.
    ``spacegroup_disagrees`` is True when the input carried a label that differs from the detected group
    (at ``config.symprec`` Å and ``config.angle_tolerance_deg``).
    """
    from pymatgen.symmetry.analyzer import SpacegroupAnalyzer

    where = f"{entry.entry_id} ({entry.provenance})"
    structure = entry.structure
    e_hull = _e_above_hull(entry)
    limit = config.max_e_above_hull_ev_per_atom
    if e_hull is not None and limit is not None and e_hull > limit:
        raise StructureError(
            where, f"e_above_hull {e_hull:g} eV/atom exceeds max_e_above_hull_ev_per_atom={limit:g}"
        )
    n_sites = len(structure)
    if n_sites == 0:
        raise StructureError(where, "empty cell: the structure has no sites")
    if n_sites > config.max_sites:
        raise StructureError(where, f"too many sites: {n_sites} > max_sites={config.max_sites}")
    volume = float(structure.volume)
    if not math.isfinite(volume) or volume <= 0.0:
        raise StructureError(where, f"degenerate cell: volume {volume:g} Å³")
    volume_per_site = volume / n_sites
    if not config.min_volume_per_site_a3 <= volume_per_site <= config.max_volume_per_site_a3:
        raise StructureError(
            where,
            f"absurd cell: {volume_per_site:.3g} Å³ per site is outside "
            f"[{config.min_volume_per_site_a3:g}, {config.max_volume_per_site_a3:g}] "
            "(min_volume_per_site_a3 / max_volume_per_site_a3)",
        )
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            analyzer = SpacegroupAnalyzer(
                structure, symprec=config.symprec, angle_tolerance=config.angle_tolerance_deg
            )
            number = int(analyzer.get_space_group_number())
            symbol = str(analyzer.get_space_group_symbol())
            crystal_system = str(analyzer.get_crystal_system())
    except Exception as exc:  # noqa: BLE001 - spglib failures surface as several exception types
        raise StructureError(
            where, f"spglib found no space group at symprec={config.symprec} ({type(exc).__name__}: {exc})"
        ) from exc
    lattice = structure.lattice
    return EntryInfo(
        reduced_formula=structure.composition.reduced_formula,
        spacegroup_number=number,
        spacegroup_symbol=symbol,
        crystal_system=crystal_system,
        lattice_abc_angstrom=tuple(float(x) for x in lattice.abc),  # type: ignore[arg-type]
        lattice_angles_deg=tuple(float(x) for x in lattice.angles),  # type: ignore[arg-type]
        n_sites=n_sites,
        disordered=not structure.is_ordered,
        spacegroup_disagrees=entry.given_spacegroup is not None and entry.given_spacegroup != number,
        e_above_hull_ev_per_atom=e_hull,
    )
