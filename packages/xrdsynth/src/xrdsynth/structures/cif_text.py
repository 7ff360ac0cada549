"""One CIF text: its data blocks (one item each), cheap checks before parsing, and parsing one block.

Shared by every source that carries CIF text: files and archive members (:mod:`.cif_files`) and the ``cif``
field of JSON and CSV records (:mod:`.records`).
"""

from __future__ import annotations

import re
import warnings
from collections.abc import Iterator
from typing import Any

from pymatgen.core import Structure

from .base import Entry, MetadataValue, SourceItem, StructureError
from .displacement import cif_displacement_properties
from .metadata import spacegroup_from_symbol

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


def block_items(source: str, kind: str, locator: str, id_stem: str, text: str) -> list[SourceItem]:
    """One item per structure block of a CIF text: ``locator#block=n`` and ``id_stem#<block name>`` when
    there are several, else the plain locator and stem."""
    blocks = _structure_block_numbers(text)
    if len(blocks) <= 1:
        # An empty or block-less file still gets one item so that load_entry reports why it fails.
        return [SourceItem(source, kind, locator, id_stem)]
    return [SourceItem(source, kind, f"{locator}#block={n}", f"{id_stem}#{name or n}") for n, name in blocks]


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


def parse_cif(where: str, text: str, max_sites: int | None = None) -> tuple[Structure, dict[str, Any], str]:
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
                number = spacegroup_from_symbol(value)
                break
    if number is None or number == 1 or not 1 <= number <= 230:
        return None
    return number


def entry_from_cif(item: SourceItem, text: str, block: int | None, max_sites: int | None) -> Entry:
    """The entry of data block ``block`` (1-based; None for the whole text) of CIF text.

    The given space group is the shared collection's header label, else the CIF's own symmetry tags
    (P1 excepted); licence, mineral or common name and the stated formula go into the metadata. The CIF's
    atomic displacement parameters become U11_cif..U12_cif site properties (:mod:`.displacement`), and the
    metadata's ``displacement_parameters`` says which were read or why none were.
    """
    where = item.locator
    preamble, blocks = _cif_blocks(text)
    if block is not None:
        if not 1 <= block <= len(blocks):
            raise StructureError(where, f"CIF has {len(blocks)} data blocks, no block {block}")
        text = preamble + blocks[block - 1][1]
    structure, tags, noted = parse_cif(where, text, max_sites)
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
    properties, how = cif_displacement_properties(structure, tags)
    for name, values in properties.items():
        structure.add_site_property(name, values)
    metadata["displacement_parameters"] = how
    return Entry(item.entry_id, item.source, item.locator, structure, given, metadata, synthetic=False)
