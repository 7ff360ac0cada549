"""Records: a ``.json`` list or ``.jsonl`` lines (optionally gzipped) of pymatgen Structure dicts or
``{'structure': dict | cif, 'id': ..., ...}`` records, and ``.csv`` files with a ``cif`` column; every other
field or column becomes metadata."""

from __future__ import annotations

import csv
import functools
import gzip
import io
import json
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from pymatgen.core import Structure

from .base import Entry, FileFormat, ItemKind, MetadataValue, SourceItem, StructureError, file_key
from .cif_text import parse_cif
from .metadata import ID_KEYS, as_metadata_value, coerce_cell, metadata_spacegroup, record_id

# Record ids come from the records (or the file name and position), not from `relative`.


def _list_json(source: str, path: Path, relative: Path) -> list[SourceItem]:
    records = _json_records(str(path), *file_key(path))
    stem = path.name.split(".")[0]
    return [
        SourceItem(source, "json", f"{path}#item={i}", record_id(rec, f"{stem}#item={i}"))
        for i, rec in enumerate(records, start=1)
    ]


def _list_jsonl(source: str, path: Path, relative: Path) -> list[SourceItem]:
    stem = path.name.split(".")[0]
    items = []
    for line_no, line in _jsonl_lines(path):
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            # One bad line is one skipped entry (load_entry names it), not the loss of the file's other records.
            record = None
        items.append(
            SourceItem(source, "jsonl", f"{path}#L{line_no}", record_id(record, f"{stem}#L{line_no}"))
        )
    return items


def _list_csv(source: str, path: Path, relative: Path) -> list[SourceItem]:
    header, rows = _csv_rows(str(path), *file_key(path))
    if "cif" not in header:
        raise ValueError(
            f"source {source!r}: CSV {str(path)!r} has no 'cif' column (columns: {', '.join(header)}); "
            "structures must be CIF text in a column named 'cif'"
        )
    return [
        SourceItem(source, "csv", f"{path}#row={i}", record_id(row, f"{path.stem}#row={i}"))
        for i, row in enumerate(rows, start=1)
    ]


def _open_text(path: Path) -> io.TextIOBase:
    if path.name.lower().endswith(".gz"):
        return io.TextIOWrapper(gzip.open(path, "rb"), encoding="utf-8")
    return open(path, encoding="utf-8")


# Workers load many records of one file; these caches keep a parsed file per process instead of re-reading it
# for every entry. Keys include (mtime_ns, size) so an edited file is re-read.


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
    offsets = _jsonl_offsets(str(path), *file_key(path))
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


def _structure_from_record(
    record: Any, where: str, max_sites: int | None
) -> tuple[Structure, dict[str, MetadataValue], str]:
    """Split a JSON record into (structure, metadata, parse warnings); accepts a bare Structure dict too."""
    if not isinstance(record, dict):
        raise StructureError(
            where, f"expected a Structure dict or a record with 'structure', got {type(record).__name__}"
        )
    if "structure" in record or "cif" in record:
        metadata = {k: as_metadata_value(v) for k, v in record.items() if k not in ("structure", "cif")}
        if "structure" in record and isinstance(record["structure"], dict):
            return structure_from_dict(record["structure"], where, max_sites), metadata, ""
        cif_text = record.get("cif", record.get("structure"))
        if not isinstance(cif_text, str):
            raise StructureError(where, "'structure' must be a pymatgen Structure dict or 'cif' a CIF string")
        structure, _, noted = parse_cif(where, cif_text, max_sites)
        return structure, metadata, noted
    return structure_from_dict(record, where, max_sites), {}, ""


def structure_from_dict(data: dict[str, Any], where: str, max_sites: int | None = None) -> Structure:
    """A pymatgen Structure from its dict; more than ``max_sites`` listed sites are refused unparsed."""
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


def _load_json(item: SourceItem, seed: int, max_sites: int | None) -> Entry:
    path_text, _, anchor = item.locator.rpartition("#item=")
    path = Path(path_text)
    records = _json_records(str(path), *file_key(path))
    index = int(anchor)
    if not 1 <= index <= len(records):
        raise StructureError(item.locator, f"JSON list has {len(records)} items, no item {index}")
    return _entry_from_record(item, records[index - 1], max_sites)


def _load_jsonl(item: SourceItem, seed: int, max_sites: int | None) -> Entry:
    path_text, _, anchor = item.locator.rpartition("#L")
    line = _jsonl_record_text(Path(path_text), int(anchor))
    try:
        record = json.loads(line)
    except json.JSONDecodeError as exc:
        raise StructureError(item.locator, f"invalid JSON ({exc.msg})") from exc
    return _entry_from_record(item, record, max_sites)


def _entry_from_record(item: SourceItem, record: Any, max_sites: int | None) -> Entry:
    where = item.locator
    structure, metadata, noted = _structure_from_record(record, where, max_sites)
    if noted:
        metadata["parse_warnings"] = noted
    given = metadata_spacegroup(metadata, where)
    return Entry(item.entry_id, item.source, item.locator, structure, given, metadata, synthetic=False)


def _load_csv(item: SourceItem, seed: int, max_sites: int | None) -> Entry:
    where = item.locator
    path_text, _, anchor = item.locator.rpartition("#row=")
    path = Path(path_text)
    _, rows = _csv_rows(str(path), *file_key(path))
    index = int(anchor)
    if not 1 <= index <= len(rows):
        raise StructureError(where, f"CSV has {len(rows)} data rows, no row {index}")
    row = rows[index - 1]
    structure, _, noted = parse_cif(where, row.get("cif") or "", max_sites)
    # Unnamed columns (a pandas index) carry no meaning; ids stay text so '007' is not turned into 7.
    metadata: dict[str, MetadataValue] = {
        key: (value if key in ID_KEYS else coerce_cell(value))
        for key, value in row.items()
        if key and key != "cif" and value is not None
    }
    if noted:
        metadata["parse_warnings"] = noted
    given = metadata_spacegroup(metadata, where)
    return Entry(item.entry_id, item.source, item.locator, structure, given, metadata, synthetic=False)


def _record_input_file(item: SourceItem) -> str:
    return item.locator.rpartition("#")[0]


FILE_FORMATS = (
    FileFormat((".json", ".json.gz"), _list_json),
    FileFormat((".jsonl", ".jsonl.gz"), _list_jsonl),
    FileFormat((".csv",), _list_csv),
)
ITEM_KINDS = (
    ItemKind("json", _load_json, _record_input_file),
    ItemKind("jsonl", _load_jsonl, _record_input_file),
    ItemKind("csv", _load_csv, _record_input_file),
)
