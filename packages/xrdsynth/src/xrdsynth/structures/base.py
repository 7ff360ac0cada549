"""What every structure source shares: the item and entry types, the kinds-table rows, the accepted forms."""

from __future__ import annotations

import tarfile
import zipfile
import zlib
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from pymatgen.core import Structure

MetadataValue = str | float | int | bool | None

ACCEPTED_FORMS = (
    "a directory (searched recursively for *.cif), a glob pattern such as 'cifs/**/*.cif', a .cif file, "
    "a .zip/.tar.gz/.tgz archive of CIFs, a .json/.json.gz list or .jsonl/.jsonl.gz lines of pymatgen "
    "Structure dicts (or {'structure': dict, 'id': ...} records), a .csv with a 'cif' column, 'builtin' "
    "(AFLOW prototypes shipped with pymatgen), 'random:N[:GROUPS]' (N pyxtal crystals per space group, "
    "GROUPS like '1-10' or '2,14,225') or 'random-ionic:N[:GROUPS]' (the same, built as cations and an anion "
    "over several Wyckoff orbits)"
)

# Errors that reading a file, an archive or a compressed stream can raise.
READ_ERRORS = (
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
    """Cheap, picklable locator of one structure; nothing is parsed until ``load_entry``.

    ``locator`` forms: ``path.cif``, ``path.cif#block=2`` (1-based data block of a multi-block CIF),
    ``archive.zip::member.cif``, ``file.json#item=3`` (1-based), ``file.jsonl#L12`` (1-based line),
    ``file.csv#row=5`` (1-based data row after the header), ``aflow:<label>``, ``random:<sg>:<k>`` and
    ``random-ionic:<sg>:<k>``.
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
class ItemKind:
    """How the items of one ``SourceItem.kind`` are loaded, and which file they are read from.

    ``load(item, seed, max_sites)`` returns the :class:`Entry` or raises :class:`StructureError`; ``seed`` is
    the one the item was listed with, ``max_sites`` rejects oversized inputs before they are parsed (kinds
    that need neither ignore them). ``input_file(item)`` names the file whose bytes enter the bank's build
    key, or None for generated crystals.
    """

    name: str
    load: Callable[[SourceItem, int, int | None], Entry]
    input_file: Callable[[SourceItem], str | None]


@dataclass(frozen=True)
class FileFormat:
    """A file a ``--source`` path or glob may name, recognised by the end of its name (lower case).

    ``list_file(source, path, relative)`` lists its items; ``relative`` is the file's path below the
    directory the source names (for a single file, its name), from which formats that take ids from file
    names derive them.
    """

    suffixes: tuple[str, ...]
    list_file: Callable[[str, Path, Path], list[SourceItem]]


@dataclass(frozen=True)
class NamedSource:
    """A ``--source`` string that names bundled or generated structures rather than a path.

    ``matches(text)`` gets the stripped source string; ``list_items(source, seed)`` lists its items.
    """

    matches: Callable[[str], bool]
    list_items: Callable[[str, int], list[SourceItem]]


def file_key(path: Path) -> tuple[int, int]:
    """(mtime_ns, size): part of cache keys so that an edited file is re-read."""
    st = path.stat()
    return st.st_mtime_ns, st.st_size
