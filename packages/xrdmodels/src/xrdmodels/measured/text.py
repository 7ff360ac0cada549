"""Two-column text patterns (``.xy``, ``.xye``, ``.csv``, ``.dat``, ``.txt``): the fallback format.

Comment lines start with ``#``, ``;`` or ``!``; leading header lines that are not numbers are kept in
``metadata["header"]`` and searched for a stated wavelength; columns are separated by commas, semicolons,
tabs or spaces; an optional third column (errors) is ignored. Text has no signature, so it is chosen by
extension or when nothing else matches.

What instruments and spreadsheets also write, and how it is read:

- UTF-16 or UTF-32 text with a byte-order mark (Windows "Unicode" exports) is decoded as such
  (``metadata["encoding"]``); UTF-8, with or without a mark, is the default.

Each of the next two is noted in ``metadata["reader_notes"]``, which a prediction repeats as a warning:

- Decimal commas (``10,02;1234,5``, a European-locale spreadsheet export): when each of the first 1,000 data
  rows is numbers with at most one comma each, separated by semicolons, tabs or spaces, and some have one, the
  commas are decimal points.
- Text lines after the data (a footer such as ``END`` or a summary) are left out, the first 20 kept in
  ``metadata["footer"]``; a text line with data after it is still an error, since that is a damaged or
  concatenated file, not a footer.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path

from .common import (
    READER_NOTES,
    SEPARATORS,
    FileFormat,
    MeasuredFormatError,
    MeasuredPattern,
    NumericRows,
    columns_to_pattern,
    wavelength_from_header,
)

_COMMENT_PREFIXES = ("#", ";", "!")
_SNIFF_BYTES = 65536
_MAX_HEADER_LINES = 1000
_LEADING_ROWS = 1000
_TEXT_CHUNK_CHARS = 1 << 20
# A comment anywhere in a chunk ('#' or '!' anywhere, ';' starting a line) sends it down the per-line path.
_COMMENT_IN_CHUNK = re.compile(r"[#!]|^[ \t]*;", flags=re.MULTILINE)
_BYTE_ORDER_MARKS = (
    (b"\xff\xfe\x00\x00", "utf-32"),
    (b"\x00\x00\xfe\xff", "utf-32"),
    (b"\xff\xfe", "utf-16"),
    (b"\xfe\xff", "utf-16"),
)
_NUMBER_WITH_DECIMAL_COMMA = r"[-+]?\d+(?:,\d+)?(?:[eE][-+]?\d+)?"
_DECIMAL_COMMA_ROW = re.compile(
    rf"{_NUMBER_WITH_DECIMAL_COMMA}(?:[ \t]*[;\t ][ \t]*{_NUMBER_WITH_DECIMAL_COMMA})+"
)
_MAX_FOOTER_LINES = 20


def _encoding(head: bytes) -> str:
    """The text encoding a file's byte-order mark names; UTF-8 (a mark, if any, dropped) without one."""
    for mark, encoding in _BYTE_ORDER_MARKS:
        if head.startswith(mark):
            return encoding
    return "utf-8-sig"


def _has_decimal_commas(rows: list[str]) -> bool:
    """Whether data rows use commas as decimal points: every row is two or more numbers with at most one comma
    each, separated by semicolons, tabs or spaces, and some number has one."""
    return any("," in row for row in rows) and all(_DECIMAL_COMMA_ROW.fullmatch(row) for row in rows)


def _is_numeric_line(line: str) -> bool:
    try:
        [float(f) for f in SEPARATORS.split(line) if f]
    except ValueError:
        return False
    return True


_COLUMN_ROWS_TO_SNIFF = 3


def looks_like_columns(path: Path) -> bool:
    """Whether a file's first 64 KiB are text holding at least three rows of two or more numbers (decimal
    points or, with semicolons, tabs or spaces between them, decimal commas): what a folder search takes as a
    text pattern under an extension no reader names (.chi, .asc, none)."""
    with path.open("rb") as handle:
        raw_head = handle.read(_SNIFF_BYTES)
    head = raw_head.decode(_encoding(raw_head), errors="replace")
    if "\x00" in head or head.count("\ufffd") > 0.01 * len(head) + 1:
        return False
    lines = head.splitlines()
    if len(raw_head) == _SNIFF_BYTES:
        lines = lines[:-1]  # the last line may be cut short
    rows = 0
    for raw in lines:
        line = raw.split("#", 1)[0].strip()
        numeric = _is_numeric_line(line) and len([f for f in SEPARATORS.split(line) if f]) >= 2
        if numeric or _DECIMAL_COMMA_ROW.fullmatch(line):
            rows += 1
            if rows >= _COLUMN_ROWS_TO_SNIFF:
                return True
    return False


def read_text_columns(path: Path, max_bytes: int) -> MeasuredPattern:
    """Two or three numeric columns (2θ deg, intensity[, error]); comments and header lines are kept in
    ``metadata["header"]`` (the first :data:`_MAX_HEADER_LINES`) and searched for a stated wavelength.

    Streamed: the header and the first :data:`_LEADING_ROWS` numeric rows line by line, the rest in chunks
    of :data:`_TEXT_CHUNK_CHARS` characters that numpy parses whole when they hold no comment, so memory
    stays a small multiple of the resulting arrays (``max_bytes`` bounds the file, checked by the caller)."""
    with path.open("rb") as handle:
        raw_head = handle.read(_SNIFF_BYTES)
    encoding = _encoding(raw_head)
    head = raw_head.decode(encoding, errors="replace")
    if "\x00" in head or head.count("\ufffd") > 0.01 * len(head) + 1:
        raise MeasuredFormatError(
            path,
            "binary content in what was read as a text pattern",
            "Name the format for a binary file (--format on the command line, format= in Python), or export "
            "the pattern as text",
        )
    header: list[str] = []

    def keep(line: str) -> None:
        if len(header) < _MAX_HEADER_LINES:
            header.append(line)

    table = NumericRows(path, "data")
    notes: list[str] = []
    # The first numeric rows wait until their common width is known: some exporters put numeric header
    # lines (a point count, "start step end") before the columns, and leading rows whose width differs from
    # the most common one are header, not data.
    leading: list[tuple[int, str]] = []
    # Text lines after the data: a footer, unless data follow them (the first few kept, all counted).
    footer: list[tuple[int, str]] = []
    footer_lines = 0

    def take(line_no: int, raw: str) -> None:
        nonlocal footer_lines
        line = raw.strip()
        if not line:
            return
        if line.startswith(_COMMENT_PREFIXES):
            keep(line.lstrip("#;! ").strip())
            return
        if "#" in line:
            line = line.split("#", 1)[0].strip()
        if not _is_numeric_line(line):
            if leading:
                footer_lines += 1
                if len(footer) < _MAX_FOOTER_LINES:
                    footer.append((line_no, line))
            else:
                keep(line)
            return
        if footer:
            first_no, first_text = footer[0]
            raise MeasuredFormatError(
                path,
                f"line {first_no} of the data is not numeric: {first_text[:60]!r}",
                "Comment it out with '#' or remove it",
            )
        if len(leading) >= _LEADING_ROWS:
            table.add(line_no, line)
        else:
            leading.append((line_no, line))
            if len(leading) == _LEADING_ROWS:
                _settle_leading_rows(leading, table, keep, notes)

    def take_chunk(first_line_no: int, text: str) -> None:
        if footer or _COMMENT_IN_CHUNK.search(text) or not table.add_text(text):
            for offset, raw in enumerate(text.split("\n")):
                take(first_line_no + offset, raw)

    with path.open(encoding=encoding, errors="replace") as handle:
        line_no = 0
        while len(leading) < _LEADING_ROWS:
            raw = handle.readline()
            if not raw:
                break
            line_no += 1
            take(line_no, raw)
        carry = ""
        while chunk := handle.read(_TEXT_CHUNK_CHARS):
            text = carry + chunk
            cut = text.rfind("\n") + 1
            body, carry = text[:cut], text[cut:]
            if body:
                take_chunk(line_no + 1, body)
                line_no += body.count("\n")
        if carry:
            take_chunk(line_no + 1, carry)
    if len(leading) < _LEADING_ROWS:
        _settle_leading_rows(leading, table, keep, notes)
    if table.empty:
        raise MeasuredFormatError(
            path,
            "no numeric data lines found",
            "Expected lines of '2theta intensity' (comments may start with #, ; or !)",
        )
    data = table.finish()
    wavelength, metadata = wavelength_from_header(header)
    if header:
        metadata["header"] = "\n".join(header)
    if encoding != "utf-8-sig":
        metadata["encoding"] = encoding
    if footer:
        metadata["footer"] = "\n".join(text for _, text in footer)
        notes.append(
            f"{footer_lines} text line{'s' if footer_lines > 1 else ''} after the data left out (from line "
            f"{footer[0][0]}: {footer[0][1][:60]!r})"
        )
    if notes:
        metadata[READER_NOTES] = "\n".join(notes)
    metadata["columns"] = "two_theta_deg intensity" + (" error" if data.shape[1] == 3 else "")
    return columns_to_pattern(path, data, wavelength, metadata)


def _settle_leading_rows(
    rows: list[tuple[int, str]], table: NumericRows, keep: Callable[[str], None], notes: list[str]
) -> None:
    """Rows before the first row of the most common width go to the header, the rest to the table, which
    reads commas as decimal points if these rows do (:func:`_has_decimal_commas`; noted in ``notes``)."""
    if not rows:
        return
    widths = [len([f for f in SEPARATORS.split(line) if f]) for _, line in rows]
    common = max(set(widths), key=widths.count)
    first = widths.index(common)
    for _, line in rows[:first]:
        keep(line)
    if _has_decimal_commas([line for _, line in rows[first:]]):
        table.use_decimal_commas()
        notes.append("commas read as decimal points (columns separated by semicolons, tabs or spaces)")
    for line_no, line in rows[first:]:
        table.add(line_no, line)


GENERIC_EXTENSIONS = ("csv", "dat", "txt")
"""Text extensions that tables, notes and logs share with scans: in a folder, such a file is read only when it
holds rows of numbers (:func:`looks_like_columns`), so a labels table beside the scans is left out, not failed."""

TEXT = FileFormat(
    name="xy",
    extensions=("xy", "xye", *GENERIC_EXTENSIONS),
    sniff=None,
    read=read_text_columns,
    aliases=("text",),
)
