"""Step-scan text formats that list counts only, placed by their header's start angle and step: Philips ``.udf``
and Sietronics ``.cpi``, as xylib's ``philips_udf.cpp`` and ``cpi.cpp`` read them.

UDF: ``Key,value[,value],/`` header lines (``LabdaAlpha1``, ``LabdaAlpha2``, ``RatioAlpha21``, ``DataAngleRange``
with the start and end 2θ, ``ScanStepSize``), then a ``RawScan`` line and the counts, comma-separated over
several lines, the last followed by ``/``.

CPI: ``SIETRONICS XRD SCAN``, then one per line the start, end and step angles, the anode, the wavelength (Å),
the date, the step time and a comment, then ``SCANDATA`` and one count per line.

Count i lies at start + i·step. Where the counts and the header's end disagree by more than one step (a cut
file, a wrong step), the pattern is read from its start and step and the reader says so in
``metadata["reader_notes"]``, which a prediction repeats as a warning.
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np

from .common import (
    BOM_AND_BLANKS,
    READER_NOTES,
    FileFormat,
    MeasuredFormatError,
    MeasuredPattern,
    columns_to_pattern,
    counts_from_lines,
    float_or_none,
    stated_wavelength,
    text_head,
    wavelength_metadata,
)

_UDF_SIGNATURE = re.compile(
    r"^[ \t]*(SampleIdent|LabdaAlpha1|DataAngleRange|ScanStepSize)[ \t]*,", re.MULTILINE
)
_CPI_SIGNATURE = "SIETRONICS XRD SCAN"


def _step_scan(
    path: Path,
    start: float | None,
    step: float | None,
    end: float | None,
    counts: np.ndarray,
    wavelength: float | None,
    metadata: dict[str, str],
) -> MeasuredPattern:
    """The pattern of ``counts`` at start + i·step, with a note where they do not reach ``end``."""
    if start is None or step is None or not step > 0:
        raise MeasuredFormatError(
            path,
            f"no start angle or no positive step in the header (start {start}, step {step})",
            "The header must give the scan's start 2θ and its step",
        )
    if counts.size == 0:
        raise MeasuredFormatError(path, "no counts after the header", "Is this a complete file?")
    last = start + step * (counts.size - 1)
    if end is not None and abs(last - end) > step * (1 + 1e-6):
        metadata[READER_NOTES] = (
            f"{counts.size} counts at {step:g}° steps from {start:g}° end at {last:g}°, where the header says "
            f"{end:g}°: read from the start and step"
        )
    two_theta = start + step * np.arange(counts.size)
    return columns_to_pattern(path, np.column_stack([two_theta, counts]), wavelength, metadata)


def read_udf(path: Path, max_bytes: int) -> MeasuredPattern:
    """Philips UDF (module docstring); ``max_bytes`` was checked against the file's size by the caller."""
    keys: dict[str, list[str]] = {}
    rows: list[tuple[int, str]] = []
    in_data = False
    with path.open(encoding="latin-1") as handle:
        for line_no, raw in enumerate(handle, start=1):
            line = raw.strip(BOM_AND_BLANKS)
            if in_data:
                if line:
                    rows.append((line_no, line.replace("/", " ")))
            elif line.startswith("RawScan"):
                in_data = True
            elif "," in line:
                key, *values = (field.strip() for field in line.split(","))
                keys[key] = [v for v in values if v and v != "/"]
    if not in_data:
        raise MeasuredFormatError(path, "no RawScan line", "Is this a complete Philips UDF file?")

    def number(key: str, index: int = 0) -> float | None:
        values = keys.get(key, [])
        return float_or_none(values[index]) if len(values) > index else None

    wavelength, metadata = wavelength_metadata(
        number("LabdaAlpha1"), number("LabdaAlpha2"), number("RatioAlpha21")
    )
    for key in ("SampleIdent", "Anode", "ScanStepTime"):
        if keys.get(key):
            metadata[f"udf_{key}"] = keys[key][0]
    counts = counts_from_lines(path, rows, "UDF counts")
    return _step_scan(
        path,
        number("DataAngleRange"),
        number("ScanStepSize"),
        number("DataAngleRange", 1),
        counts,
        wavelength,
        metadata,
    )


def read_cpi(path: Path, max_bytes: int) -> MeasuredPattern:
    """Sietronics CPI (module docstring); ``max_bytes`` was checked against the file's size by the caller."""
    lines = path.read_text(encoding="latin-1").splitlines()
    try:
        data_start = next(i for i, line in enumerate(lines) if line.strip().upper() == "SCANDATA") + 1
    except StopIteration:
        raise MeasuredFormatError(
            path, "no SCANDATA line", "Is this a complete Sietronics CPI file?"
        ) from None
    header = [line.strip() for line in lines[1 : data_start - 1]]
    if len(header) < 5:
        raise MeasuredFormatError(
            path,
            f"{len(header)} header lines before SCANDATA",
            "A CPI header holds the start, end and step angles, the anode and the wavelength, one per line",
        )
    start, end, step = (float_or_none(value) for value in header[:3])
    wavelength, metadata = stated_wavelength(float_or_none(header[4]))
    metadata["anode"] = header[3]
    rows = [(i + 1, line) for i, line in enumerate(lines[data_start:], start=data_start) if line.strip()]
    return _step_scan(
        path, start, step, end, counts_from_lines(path, rows, "CPI counts"), wavelength, metadata
    )


def sniff_udf(path: Path, head: bytes) -> bool:
    """A ``SampleIdent,``, ``LabdaAlpha1,``, ``DataAngleRange,`` or ``ScanStepSize,`` line."""
    text = text_head(head)
    return text is not None and _UDF_SIGNATURE.search(text) is not None


def sniff_cpi(path: Path, head: bytes) -> bool:
    """The first line reads ``SIETRONICS XRD SCAN``."""
    text = text_head(head)
    return text is not None and text.lstrip(BOM_AND_BLANKS).upper().startswith(_CPI_SIGNATURE)


UDF = FileFormat(name="udf", extensions=("udf",), sniff=sniff_udf, read=read_udf)
CPI = FileFormat(name="cpi", extensions=("cpi",), sniff=sniff_cpi, read=read_cpi)
