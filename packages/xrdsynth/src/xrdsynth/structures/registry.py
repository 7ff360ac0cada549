"""The kinds table: which module lists a ``--source`` string and which loads an item, in one place each.

``list_items`` runs in the driver and only locates structures; ``load_entry`` runs in a worker and parses one.
A source is a named source (``builtin``, ``random:...``, ``random-ionic:...``), else a path: a directory of CIFs,
a glob, or one file whose format is recognised by the end of its name. Items carry their kind, which picks the loader.
"""

from __future__ import annotations

import glob
import hashlib
import os
from pathlib import Path

from . import builtin, cif_files, random_crystals, records
from .base import (
    ACCEPTED_FORMS,
    READ_ERRORS,
    Entry,
    FileFormat,
    ItemKind,
    NamedSource,
    SourceItem,
    StructureError,
)

# Sources that are not paths, tried in order on the stripped source string.
NAMED_SOURCES: tuple[NamedSource, ...] = (builtin.NAMED_SOURCE, random_crystals.NAMED_SOURCE)
# File formats a path or glob may name, tried in order on the lower-case file name.
FILE_FORMATS: tuple[FileFormat, ...] = (*cif_files.FILE_FORMATS, *records.FILE_FORMATS)
# SourceItem.kind -> how to load it.
ITEM_KINDS: dict[str, ItemKind] = {
    kind.name: kind
    for kind in (*cif_files.ITEM_KINDS, *records.ITEM_KINDS, builtin.ITEM_KIND, random_crystals.ITEM_KIND)
}


def list_items(source: str, *, seed: int = 0) -> list[SourceItem]:
    """List the structures named by one ``--source`` string without parsing them.

    ``seed`` only enters the ids of ``random:`` and ``random-ionic:`` sources. Raises ``ValueError`` naming the
    source and :data:`ACCEPTED_FORMS` for a nonexistent path or unknown format, and naming the source for a
    records file or archive that cannot be read, a CSV without a ``cif`` column, a ``.json`` file that is not
    JSON, or duplicate ids in one source. CIF files and archive members too large (``MAX_CIF_BYTES``) or
    impossible to read (no permission, a link that leads nowhere) and JSONL lines that are not JSON are still
    listed, as one item each, so that :func:`load_entry` reports them as skipped entries and the source's
    other structures are built.
    """
    text = source.strip()
    named = next((named for named in NAMED_SOURCES if named.matches(text)), None)
    if named is not None:
        items = named.list_items(source, seed)
    else:
        try:
            items = _list_path(source, text)
        except READ_ERRORS as exc:
            raise ValueError(f"source {source!r}: cannot read it ({type(exc).__name__}: {exc})") from exc
    _check_unique_ids(source, items)
    return items


def load_entry(item: SourceItem, *, seed: int = 0, max_sites: int | None = None) -> Entry:
    """Parse the structure an item points to; raises :class:`StructureError` on any bad input.

    ``seed`` must be the one given to :func:`list_items` for random items (it is checked against the
    id); other kinds ignore it. With ``max_sites``, CIF text and Structure dicts that list more atom
    positions than that are rejected before they are parsed (parsing a 10,000-atom CIF takes seconds).
    CIF files and archive members larger than ``MAX_CIF_BYTES`` are rejected unread.
    """
    kind = ITEM_KINDS.get(item.kind)
    if kind is None:
        raise ValueError(f"item {item.locator!r} has unknown kind {item.kind!r}")
    try:
        return kind.load(item, seed, max_sites)
    except StructureError:
        raise
    except READ_ERRORS as exc:
        raise StructureError(item.locator, f"cannot read input ({type(exc).__name__}: {exc})") from exc


def input_file(item: SourceItem) -> str | None:
    """The file an item is read from (for archive members the archive), or None for generated crystals."""
    kind = ITEM_KINDS.get(item.kind)
    return None if kind is None else kind.input_file(item)


def file_sha256(path: str) -> str:
    """SHA-256 of a file's bytes, read in 1 MiB blocks."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(1 << 20):
            digest.update(block)
    return digest.hexdigest()


def _list_path(source: str, text: str) -> list[SourceItem]:
    if os.path.isdir(text):
        return cif_files.list_directory(source, Path(text))
    if any(ch in text for ch in "*?["):
        # A broken .cif link is listed too (load_entry reports it), as in a directory.
        matches = sorted(
            Path(p)
            for p in glob.glob(text, recursive=True)
            if os.path.isfile(p) or (not os.path.exists(p) and p.lower().endswith(".cif"))
        )
        if not matches:
            raise ValueError(f"source {source!r}: glob pattern matches no files; accepted: {ACCEPTED_FORMS}")
        base = Path(_glob_base(text))
        return [item for p in matches for item in _list_file(source, p, _relative_or_name(p, base))]
    if os.path.isfile(text):
        path = Path(text)
        return _list_file(source, path, Path(path.name))
    raise ValueError(
        f"source {source!r} is neither an existing path nor a known form; accepted: {ACCEPTED_FORMS}"
    )


def _list_file(source: str, path: Path, relative: Path) -> list[SourceItem]:
    name = path.name.lower()
    for file_format in FILE_FORMATS:
        if name.endswith(file_format.suffixes):
            return file_format.list_file(source, path, relative)
    raise ValueError(
        f"source {source!r}: file {str(path)!r} has an unknown format; accepted: {ACCEPTED_FORMS}"
    )


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


def _check_unique_ids(source: str, items: list[SourceItem]) -> None:
    seen: dict[str, str] = {}
    for item in items:
        if item.entry_id in seen:
            raise ValueError(
                f"source {source!r}: id {item.entry_id!r} is used by both {seen[item.entry_id]} and "
                f"{item.locator}; give each record a unique 'id'"
            )
        seen[item.entry_id] = item.locator
