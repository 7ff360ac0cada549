"""Metadata that inputs carry beside a structure: ids, space-group labels, values restored from text."""

from __future__ import annotations

import json
import re
from typing import Any

from .base import MetadataValue, StructureError

# Metadata keys that name an entry, in order of preference.
ID_KEYS = ("id", "material_id")
# Metadata keys that carry a space-group label (number or Hermann-Mauguin symbol).
SPACEGROUP_KEYS = ("spacegroup_number", "spacegroup", "space_group", "sg")

_SCREW_AXIS = re.compile(r"([2346])([1-5])")


def record_id(record: Any, fallback: str) -> str:
    """The id a record gives itself under one of :data:`ID_KEYS`, else ``fallback``."""
    if isinstance(record, dict):
        for key in ID_KEYS:
            if record.get(key) not in (None, ""):
                return str(record[key])
    return fallback


def as_metadata_value(value: Any) -> MetadataValue:
    """A JSON value as stored metadata: scalars as they are, lists and dicts as sorted JSON text."""
    if value is None or isinstance(value, str | bool | int | float):
        return value
    return json.dumps(value, sort_keys=True, default=str)


def coerce_cell(text: str) -> MetadataValue:
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


def spacegroup_from_symbol(symbol: str) -> int | None:
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
        number = spacegroup_from_symbol(value)
    else:
        number = None
    if number is None or not 1 <= number <= 230:
        raise StructureError(
            where,
            f"{field_name}={value!r} is neither a space-group number 1-230 nor a Hermann-Mauguin symbol",
        )
    return number


def metadata_spacegroup(metadata: dict[str, MetadataValue], where: str) -> int | None:
    """The space group labelled under the first of :data:`SPACEGROUP_KEYS` present; StructureError if bad."""
    for key in SPACEGROUP_KEYS:
        if metadata.get(key) not in (None, ""):
            return _spacegroup_label(metadata[key], where, key)
    return None
