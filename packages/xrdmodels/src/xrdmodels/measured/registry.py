"""The formats :func:`read_pattern` knows, in sniffing order, and the dispatch between them.

To add a format, write a module beside this one that exports a :class:`~.common.FileFormat` (name,
extensions, sniff function, reader) and put it in :data:`FORMATS`.
"""

from __future__ import annotations

from pathlib import Path

from . import bruker, gsas, rigaku, stepscan, text, xrdml
from .common import (
    DEFAULT_MAX_PATTERN_BYTES,
    FileFormat,
    MeasuredFormatError,
    MeasuredPattern,
    mib,
    size_limit_fix,
)

FORMATS: tuple[FileFormat, ...] = (
    bruker.BRUKER_RAW,
    rigaku.RASX,
    bruker.BRML,
    rigaku.RAS,
    xrdml.XRDML,
    bruker.UXD,
    stepscan.UDF,
    stepscan.CPI,
    gsas.GSAS,
    text.TEXT,
)
"""Every readable format. Sniffing tries them in this order (binary magic first, then zip contents, then
text signatures), so a format whose signature another's contains comes before it."""

FALLBACK_FORMAT = text.TEXT
"""What a file is read as when neither its content nor its extension names a format."""

SNIFF_BYTES = 4096
"""How much of a file's start the sniff functions see."""

_BY_NAME = {name: file_format for file_format in FORMATS for name in file_format.names}


def find_format(name: str) -> FileFormat | None:
    """The format a name, alias or extension selects (case and a leading dot ignored); None if unknown."""
    return _BY_NAME.get(name.lower().lstrip("."))


def normalise_format(format: str) -> str | None:
    """The reader key of a format name or alias (``xye`` -> ``xy``, ``raw`` -> ``bruker_raw``); None if unknown."""
    found = find_format(format)
    return found.name if found is not None else None


def known_formats() -> list[str]:
    """Every accepted format name and alias, sorted."""
    return sorted(_BY_NAME)


def _sniffed_format(path: Path) -> FileFormat | None:
    """The first format in :data:`FORMATS` whose sniff function recognises the file's first bytes, if any."""
    with path.open("rb") as handle:
        head = handle.read(SNIFF_BYTES)
    return next((f for f in FORMATS if f.sniff is not None and f.sniff(path, head)), None)


def detect_format(path: Path) -> FileFormat:
    """The format of a file: the first in :data:`FORMATS` whose sniff function recognises its first bytes,
    else the one its extension names, else :data:`FALLBACK_FORMAT`."""
    return _sniffed_format(path) or find_format(path.suffix) or FALLBACK_FORMAT


def looks_like_pattern(path: Path) -> bool:
    """Whether a file found in a folder is a measured pattern: its content's signature or its extension names a
    format (so that a broken scan is reported, not passed over), or it is text with rows of numbers
    (:func:`.text.looks_like_columns`) under an extension no reader names (.chi, .asc, none) or one that many
    other files share (:data:`.text.GENERIC_EXTENSIONS`: .csv, .dat, .txt). The rest (plots, notes, results, a
    labels table) is left out rather than read as two-column text and failed."""
    if _sniffed_format(path) is not None:
        return True
    named = find_format(path.suffix)
    if named is not None and path.suffix.lower().lstrip(".") not in text.GENERIC_EXTENSIONS:
        return True
    return text.looks_like_columns(path)


def read_pattern(
    path: str | Path, *, format: str | None = None, max_bytes: int = DEFAULT_MAX_PATTERN_BYTES
) -> MeasuredPattern:
    """Read a measured powder pattern.

    Args:
        path: the file.
        format: one of ``xy`` (also ``xye``, ``csv``, ``dat``, ``txt``), ``xrdml``, ``gsas`` (``fxye``),
            ``ras``, ``rasx``, ``brml``, ``bruker_raw`` (``raw``), ``uxd``, ``udf``, ``cpi``. None: recognised from the content, then
            from the extension; anything else is read as two-column text.
        max_bytes: largest file size, and largest total size of the members read from a .rasx/.brml zip.

    Raises:
        MeasuredFormatError: the file is missing, empty, too large, or not a readable pattern of that format.
    """
    path = Path(path)
    if not path.is_file():
        raise MeasuredFormatError(path, "no such file", "Check the path")
    size = path.stat().st_size
    if size == 0:
        raise MeasuredFormatError(path, "the file is empty", "Export the pattern again")
    if size > max_bytes:
        raise MeasuredFormatError(
            path,
            f"the file is {mib(size)}, over the {mib(max_bytes)} limit for one measured pattern",
            size_limit_fix(max_bytes),
        )
    if format is not None:
        file_format = find_format(format)
        if file_format is None:
            raise MeasuredFormatError(
                path,
                f"unknown format {format!r}",
                f"Use one of {', '.join(known_formats())} (--format on the command line, format= in Python), "
                "or leave it out to detect the format",
            )
    else:
        file_format = detect_format(path)
    try:
        pattern = file_format.read(path, max_bytes)
    except MeasuredFormatError as exc:
        if format is None:
            raise
        sniffed, by_extension = _sniffed_format(path), find_format(path.suffix)
        detected = sniffed or by_extension or FALLBACK_FORMAT
        if detected is not file_format:  # a forced format that the file contradicts
            if sniffed is not None:
                says = f"its content looks like {sniffed.name}"
            elif by_extension is not None:
                says = f"its extension names {detected.name}"
            else:
                says = f"it would otherwise be read as {detected.name}"
            raise MeasuredFormatError(
                path,
                f"read as {file_format.name}, as the format option asked, it fails "
                f"({str(exc).removeprefix(f'{exc.source}: ')}), and {says}",
                "Leave --format (format= in Python) out to detect each file's format",
            ) from None
        raise
    pattern.metadata.setdefault("format", file_format.name)
    return pattern
