"""CIF files: a directory searched recursively, single ``.cif`` files (one item per structure block) and
``.zip`` / ``.tar.gz`` / ``.tgz`` archives of them, each member read with a size cap."""

from __future__ import annotations

import functools
import os
import tarfile
import zipfile
from pathlib import Path
from typing import BinaryIO

from .base import (
    ACCEPTED_FORMS,
    READ_ERRORS,
    Entry,
    FileFormat,
    ItemKind,
    SourceItem,
    StructureError,
    file_key,
)
from .cif_text import block_items, entry_from_cif

_CIF_SUFFIXES = (".cif",)
_ZIP_SUFFIXES = (".zip",)
_TAR_SUFFIXES = (".tar.gz", ".tgz")
# Largest CIF file or archive member read, in bytes. One structure's CIF is a few kB to a few MB; the cap
# keeps a compressed "zip bomb" member (600 MB of text in a 600 kB zip) from being read into memory.
MAX_CIF_BYTES = 64 * 2**20


def list_directory(source: str, root: Path) -> list[SourceItem]:
    """Every ``*.cif`` below ``root``, in the order of their relative paths; ids are those paths."""
    # A link that leads nowhere is listed too, so that load_entry reports it rather than it vanishing unnoticed.
    files = sorted(
        (
            p
            for p in root.rglob("*")
            if (p.is_file() or (p.is_symlink() and not p.exists())) and p.name.lower().endswith(_CIF_SUFFIXES)
        ),
        key=lambda p: p.relative_to(root).as_posix(),
    )
    if not files:
        raise ValueError(f"source {source!r}: directory contains no *.cif files; accepted: {ACCEPTED_FORMS}")
    return [it for p in files for it in _list_cif_file(source, p, p.relative_to(root))]


def _strip_cif(rel: Path) -> str:
    posix = rel.as_posix()
    return posix[: -len(".cif")] if posix.lower().endswith(".cif") else posix


def _archive_stem(path: Path) -> str:
    name = path.name
    for suffix in (*_TAR_SUFFIXES, *_ZIP_SUFFIXES):
        if name.lower().endswith(suffix):
            return name[: -len(suffix)]
    return path.stem


def _list_cif_file(source: str, path: Path, relative: Path) -> list[SourceItem]:
    id_stem = _strip_cif(relative)
    try:
        text = _read_text(path)
    except (StructureError, *READ_ERRORS):
        # Too large or unreadable (no permission, a broken link): one item, so that load_entry reports it as a
        # skipped input and the source's other files are built.
        return [SourceItem(source, "cif", str(path), id_stem)]
    return block_items(source, "cif", str(path), id_stem, text)


def _list_zip(source: str, path: Path, relative: Path) -> list[SourceItem]:
    # Archive ids are '<archive name>/<member path>', whatever the archive's place below the source.
    stem = _archive_stem(path)
    items = []
    with zipfile.ZipFile(path) as zf:
        for name in sorted(n for n in zf.namelist() if n.lower().endswith(_CIF_SUFFIXES)):
            locator, id_stem = f"{path}::{name}", f"{stem}/{_strip_cif(Path(name))}"
            try:
                text = _read_zip_member(zf, name, locator)
            except (StructureError, *READ_ERRORS):
                # An oversized or corrupt member becomes one item that load_entry reports as skipped.
                items.append(SourceItem(source, "archive_cif", locator, id_stem))
                continue
            items.extend(block_items(source, "archive_cif", locator, id_stem, text))
    if not items:
        raise ValueError(f"source {source!r}: archive {str(path)!r} contains no *.cif members")
    return items


def _list_tar(source: str, path: Path, relative: Path) -> list[SourceItem]:
    stem = _archive_stem(path)
    members, unreadable = _tar_cif_texts(str(path), *file_key(path))
    if not members and not unreadable:
        raise ValueError(f"source {source!r}: archive {str(path)!r} contains no *.cif members")
    items = []
    for name in sorted(members.keys() | unreadable.keys()):
        locator, id_stem = f"{path}::{name}", f"{stem}/{_strip_cif(Path(name))}"
        if name in unreadable:
            items.append(SourceItem(source, "archive_cif", locator, id_stem))
        else:
            items.extend(block_items(source, "archive_cif", locator, id_stem, members[name]))
    return items


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


# Workers load many members of one archive; this cache keeps its CIF texts per process instead of re-reading
# the archive for every entry. The key includes (mtime_ns, size) so an edited file is re-read.


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
    if archive.name.lower().endswith(_ZIP_SUFFIXES):
        with zipfile.ZipFile(archive) as zf:
            return _read_zip_member(zf, member, where)
    texts, unreadable = _tar_cif_texts(str(archive), *file_key(archive))
    if member in unreadable:
        raise StructureError(where, unreadable[member])
    if member not in texts:
        raise KeyError(f"no member {member!r} in {archive}")
    return texts[member]


def _load_cif(item: SourceItem, seed: int, max_sites: int | None) -> Entry:
    path, block = _split_block(item.locator)
    return entry_from_cif(item, _read_text(Path(path)), block, max_sites)


def _load_archive_cif(item: SourceItem, seed: int, max_sites: int | None) -> Entry:
    member_locator, block = _split_block(item.locator)
    archive, member = member_locator.split("::", 1)
    return entry_from_cif(item, _read_archive_member(Path(archive), member), block, max_sites)


def _cif_input_file(item: SourceItem) -> str:
    return _split_block(item.locator)[0]


def _archive_input_file(item: SourceItem) -> str:
    return _split_block(item.locator)[0].split("::", 1)[0]


FILE_FORMATS = (
    FileFormat(_CIF_SUFFIXES, _list_cif_file),
    FileFormat(_ZIP_SUFFIXES, _list_zip),
    FileFormat(_TAR_SUFFIXES, _list_tar),
)
ITEM_KINDS = (
    ItemKind("cif", _load_cif, _cif_input_file),
    ItemKind("archive_cif", _load_archive_cif, _archive_input_file),
)
