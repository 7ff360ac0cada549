"""Turn the ``--source`` arguments of ``xrdsynth bank build`` into crystal structures with provenance.

The bank build is distributed and resumable by chunk, so the work is split in two steps:

* :func:`list_items` is cheap: it reads file names, archive directories, CIF block headers, JSON records
  or CSV rows to produce picklable :class:`SourceItem` locators, but parses no structure.
* :func:`load_entry` runs inside a worker and turns one locator into an :class:`Entry` (a pymatgen
  ``Structure`` plus its id, provenance, given space-group label and metadata).

:func:`describe` then validates an entry against a :class:`~xrdsynth.config.BankConfig` and returns the
per-entry record the bank stores (:class:`EntryInfo`), including the space group detected by spglib.

One module per source kind, each listing and loading its own items: :mod:`.cif_files` (directories, globs,
``.cif`` files, ``.zip`` / ``.tar.gz`` / ``.tgz`` archives), :mod:`.records` (``.json`` / ``.jsonl``,
optionally gzipped, and ``.csv``), :mod:`.builtin` (the AFLOW prototypes shipped in pymatgen) and
:mod:`.random_crystals` (``random:N[:GROUPS]``, ``random-ionic:N[:GROUPS]``, pyxtal). :mod:`.registry` holds
the kinds table that routes a source string and an item to them; :mod:`.cif_text` parses CIF text for files,
archives and records alike; :mod:`.describe` holds the checks and the spglib description. To add a source, write
a module that exports a :class:`~.base.FileFormat` (a file suffix) or a :class:`~.base.NamedSource` (a source
string) to list its items, and an :class:`~.base.ItemKind` to load them, then add them to the tables in
:mod:`.registry` and a phrase to :data:`ACCEPTED_FORMS`.
"""

from .base import ACCEPTED_FORMS, Entry, MetadataValue, SourceItem, StructureError
from .cif_files import MAX_CIF_BYTES  # the limit cif_files reads at each call; set it there, not here
from .describe import EntryInfo, describe
from .random_crystals import RANDOM_ELEMENTS, random_structure
from .registry import file_sha256, input_file, list_items, load_entry

__all__ = [
    "ACCEPTED_FORMS",
    "MAX_CIF_BYTES",
    "RANDOM_ELEMENTS",
    "Entry",
    "EntryInfo",
    "MetadataValue",
    "SourceItem",
    "StructureError",
    "describe",
    "file_sha256",
    "input_file",
    "list_items",
    "load_entry",
    "random_structure",
]
