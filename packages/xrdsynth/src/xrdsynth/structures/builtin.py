"""``builtin``: the AFLOW Library of Crystallographic Prototypes that pymatgen ships, one item per prototype."""

from __future__ import annotations

import functools
import gzip
import json
import re
from pathlib import Path
from typing import Any

from .base import Entry, ItemKind, MetadataValue, NamedSource, SourceItem, StructureError
from .records import structure_from_dict

_AFLOW_LICENCE = (
    "MIT (pymatgen aflow_prototypes.json.gz); data: AFLOW Library of Crystallographic Prototypes "
    "(cite Mehl et al., Comput. Mater. Sci. 136, S1 (2017))"
)

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


def _library_input_file(item: SourceItem) -> str:
    return str(_aflow_library_path())


def _list_builtin(source: str, seed: int) -> list[SourceItem]:
    _, ids = _aflow_library()
    return [SourceItem(source, "builtin", entry_id, entry_id) for entry_id in ids]


def _load_builtin(item: SourceItem, seed: int, max_sites: int | None) -> Entry:
    records, ids = _aflow_library()
    if item.locator not in ids:
        raise StructureError(item.locator, "no such prototype in pymatgen's AFLOW library")
    record = records[ids[item.locator]]
    tags = record["tags"]
    structure = structure_from_dict(record["snl"], item.locator)
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


NAMED_SOURCE = NamedSource(lambda text: text == "builtin", _list_builtin)
ITEM_KIND = ItemKind("builtin", _load_builtin, _library_input_file)
