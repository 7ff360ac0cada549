"""Read measured powder-XRD patterns and map them onto a model's fixed 2θ input grid.

Readers (all return a :class:`MeasuredPattern`, 2θ in degrees ascending, intensity as float64):

* two-column text (``.xy``, ``.xye``, ``.csv``, ``.dat``, ``.txt``): comment lines start with ``#``, ``;`` or
  ``!``; leading header lines that are not numbers are kept in ``metadata["header"]``; columns are
  separated by commas, semicolons, tabs or spaces; an optional third column (errors) is ignored.
* PANalytical ``.xrdml`` (XML, schema 1.x ``intensities`` and 2.x ``counts``).
* GSAS ``.fxye``/``.gsa``/``.gss`` (``BANK`` records of type FXYE, FXY, ESD or STD, 2θ in centidegrees).
* Rigaku ``.ras`` (text) and ``.rasx`` (zip of ``Data*/Profile*.txt`` and ``MesurementConditions*.xml``).
* Bruker ``.brml`` (zip of ``RawData*.xml``) and binary ``.raw`` versions 3 (``RAW1.01``) and 4
  (``RAW4.00``).

No maintained PyPI reader installs cleanly in this environment: ``xylib-py`` has no wheel for this Python,
``xylib-py-wheels`` is a source distribution that needs SWIG and Boost, ``xrdtools`` only reads XRDML and
has been unmaintained since 2018. The binary layouts below therefore follow the published descriptions
(RAW1.01: the DIFFRAC-plus XCH v5 manual, appendix A, as transcribed in xylib's ``bruker_raw.cpp``; RAW4.00
has no published specification, its layout is the one xylib and GSAS-II read; GSAS manual "raw data file"
chapter; XRDML schema 1.5/2.1 annotations).

Wavelength convention: ``MeasuredPattern.wavelength_angstrom`` is the single wavelength that places the
peak positions of the measurement, ``metadata["wavelength_kind"]`` says which one it is:

* ``"K-alpha weighted mean"`` when the file gives Kα1, Kα2 and a non-zero Kα2/Kα1 intensity ratio r: the
  doublet centroid (λ1 + r λ2)/(1 + r). This is what a single-line simulation (pymatgen ``CuKa`` =
  1.54184 Å, the paper's λ in (A.1)) puts its peaks at.
* ``"K-alpha1"`` when only Kα1 is known or the ratio is 0 (monochromated data).
* ``"stated"`` when the file states one wavelength (synchrotron, text headers).

The Kα1/Kα2/ratio values themselves are kept in ``metadata`` (``wavelength_kalpha1_angstrom``, ...). The
experimental set's ``all_labels.csv`` lists Kα1 for doublet data; pass it as ``wavelength_angstrom`` to
:func:`to_model_grid` to use it instead.

Size limit: a file, and the members read from a zip-based file (.rasx, .brml) together, may hold at most
``max_bytes`` (default :data:`DEFAULT_MAX_PATTERN_BYTES`); text columns are parsed in blocks, so reading
takes a small multiple of the memory of the resulting arrays.

Messages name both ways to give a setting: the ``xrdmodels predict`` option (``--wavelength``, ``--format``,
``--max-file-mb``) and the Python argument (``wavelength_angstrom=``, ``format=``, ``max_bytes=``).
"""

from __future__ import annotations

import io
import math
import re
import struct
import xml.etree.ElementTree as ET
import zipfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

__all__ = [
    "DEFAULT_MAX_PATTERN_BYTES",
    "MIN_GRID_COVERAGE_FRACTION",
    "MIN_TRAINING_WINDOW_DEG",
    "MAX_TRAINING_WINDOW_START_DEG",
    "MIN_TRAINING_WINDOW_END_DEG",
    "MOSTLY_EMPTY_FRACTION",
    "GriddedPattern",
    "MeasuredFormatError",
    "MeasuredPattern",
    "MeasuredSignalError",
    "convert_two_theta_deg",
    "read_pattern",
    "to_model_grid",
]

MAX_TRAINING_WINDOW_START_DEG = 20.0
"""Latest window start seen in training: 2θ_lo ~ U(5°, 20°) (A.1, measurement windowing)."""
MIN_TRAINING_WINDOW_END_DEG = 80.0
"""Earliest window end seen in training: 2θ_hi ~ U(80°, 120°) (A.1, measurement windowing)."""
MIN_TRAINING_WINDOW_DEG = MIN_TRAINING_WINDOW_END_DEG - MAX_TRAINING_WINDOW_START_DEG
"""Shortest measurement window seen in training, degrees 2θ (A.1): 80° - 20° = 60°."""
MIN_GRID_COVERAGE_FRACTION = MIN_TRAINING_WINDOW_DEG / (120.0 - 5.0)
"""Shortest training window over the span of the paper's [5°, 120°] grid (A.1), about 0.52: a window
covering less of whatever grid the model uses is narrower than anything it was trained on."""
MOSTLY_EMPTY_FRACTION = 0.5
"""A gridded pattern is 'mostly empty' when more than this fraction of its in-window bins are zero."""
MAJORITY_NEGATIVE_FRACTION = 0.5
"""A pattern with more than this fraction of negative intensities is refused; fewer are clipped to 0."""
DEFAULT_MAX_PATTERN_BYTES = 64 * 2**20
"""Largest file (or sum of zip members read) accepted as one pattern: 64 MiB, about 3 million lines of
'2θ intensity' text, far beyond a powder scan; it bounds the memory of the XML readers, which need several
times the file size."""

_WAVELENGTH_PLAUSIBLE_ANGSTROM = (0.05, 5.0)
_WEIGHTED_MEAN = "K-alpha weighted mean"
_KALPHA1 = "K-alpha1"
_STATED = "stated"


class MeasuredFormatError(ValueError):
    """A measured-pattern file could not be read; the message names the file, the problem and a fix."""

    def __init__(self, source: str | Path, problem: str, fix: str) -> None:
        super().__init__(f"{source}: {problem}. {fix}")
        self.source = str(source)


class MeasuredSignalError(MeasuredFormatError):
    """The file was read but holds no measurable diffraction signal (all zero, flat, mostly negative), so a
    prediction on it would be meaningless."""


@dataclass
class MeasuredPattern:
    """One measured powder pattern.

    Attributes:
        two_theta_deg: scattering angles 2θ in degrees, float64, strictly ascending.
        intensity: intensities (counts, counts per second or arbitrary units as stored), float64.
        wavelength_angstrom: the wavelength in Å given by the file, or None; see the module docstring and
            ``metadata["wavelength_kind"]`` for which line it is.
        source: the file path it was read from (or a description for synthetic data).
        metadata: text facts from the file (format, wavelengths, scan settings, header lines).
    """

    two_theta_deg: np.ndarray
    intensity: np.ndarray
    wavelength_angstrom: float | None
    source: str
    metadata: dict[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.two_theta_deg = np.asarray(self.two_theta_deg, dtype=np.float64).ravel()
        self.intensity = np.asarray(self.intensity, dtype=np.float64).ravel()
        if self.two_theta_deg.shape != self.intensity.shape:
            raise MeasuredFormatError(
                self.source,
                f"{self.two_theta_deg.size} 2θ values but {self.intensity.size} intensities",
                "Give one intensity per angle",
            )
        if self.two_theta_deg.size < 2:
            raise MeasuredFormatError(
                self.source,
                f"only {self.two_theta_deg.size} data point(s)",
                "A pattern needs at least 2 points",
            )
        if not (np.all(np.isfinite(self.two_theta_deg)) and np.all(np.isfinite(self.intensity))):
            raise MeasuredFormatError(
                self.source, "non-finite (NaN or inf) values in the data", "Remove or fix those rows"
            )
        if not np.all(np.diff(self.two_theta_deg) > 0):
            raise MeasuredFormatError(
                self.source, "2θ is not strictly ascending", "Sort the points by angle and remove duplicates"
            )
        if self.two_theta_deg[0] < 0 or self.two_theta_deg[-1] >= 180:
            raise MeasuredFormatError(
                self.source,
                f"2θ runs {self.two_theta_deg[0]:g}..{self.two_theta_deg[-1]:g}, outside [0, 180) degrees",
                "The first column must be 2θ in degrees (not radians, d-spacing or Q)",
            )
        if self.wavelength_angstrom is not None and not (
            _WAVELENGTH_PLAUSIBLE_ANGSTROM[0] < self.wavelength_angstrom < _WAVELENGTH_PLAUSIBLE_ANGSTROM[1]
        ):
            raise MeasuredFormatError(
                self.source,
                f"wavelength {self.wavelength_angstrom} Å is outside the plausible X-ray range "
                f"{_WAVELENGTH_PLAUSIBLE_ANGSTROM} Å",
                "Give the wavelength in ångström",
            )


@dataclass
class GriddedPattern:
    """A measured pattern on the model grid, normalised as in training (A.1, normalization).

    Attributes:
        pattern: (n_bins,) float32; 0 outside the window, inside it clipped at 0 and divided by the 99th
            percentile of the in-window values.
        window_bins: half-open bin range [first bin inside the measured range, first bin after it).
        warnings: human-readable reasons to distrust a prediction on this pattern.
    """

    pattern: np.ndarray
    window_bins: tuple[int, int]
    warnings: list[str] = field(default_factory=list)


# --------------------------------------------------------------------------------------------------------
# Wavelength helpers
# --------------------------------------------------------------------------------------------------------


def _wavelength_metadata(
    kalpha1: float | None, kalpha2: float | None = None, ratio: float | None = None
) -> tuple[float | None, dict[str, str]]:
    """Pick the effective wavelength from the Kα lines a file states (see module docstring)."""
    meta: dict[str, str] = {}
    if kalpha1 is None or not kalpha1 > 0:
        return None, meta
    meta["wavelength_kalpha1_angstrom"] = repr(kalpha1)
    if kalpha2 is not None and kalpha2 > 0:
        meta["wavelength_kalpha2_angstrom"] = repr(kalpha2)
    if ratio is not None:
        meta["kalpha2_kalpha1_ratio"] = repr(ratio)
    if kalpha2 is not None and kalpha2 > 0 and ratio is not None and ratio > 0:
        mean = (kalpha1 + ratio * kalpha2) / (1.0 + ratio)
        meta["wavelength_kind"] = _WEIGHTED_MEAN
        return mean, meta
    meta["wavelength_kind"] = _KALPHA1
    return kalpha1, meta


def _stated_wavelength(value: float | None) -> tuple[float | None, dict[str, str]]:
    if value is None or not value > 0:
        return None, {}
    return value, {"wavelength_kind": _STATED}


def convert_two_theta_deg(
    two_theta_deg: np.ndarray, *, from_wavelength_angstrom: float, to_wavelength_angstrom: float
) -> np.ndarray:
    """Map 2θ (degrees) measured at one wavelength to the 2θ of the same d-spacing at another.

    d = λ_from / (2 sin θ_from), 2θ_to = 2 asin(λ_to / (2 d)). Returns NaN where the reflection cannot be
    reached at ``to_wavelength_angstrom`` (λ_to / (2 d) > 1).
    """
    if not (from_wavelength_angstrom > 0 and to_wavelength_angstrom > 0):
        raise ValueError(
            f"wavelengths must be positive ångström values, got {from_wavelength_angstrom} and "
            f"{to_wavelength_angstrom}"
        )
    sin_theta_to = (to_wavelength_angstrom / from_wavelength_angstrom) * np.sin(
        np.radians(np.asarray(two_theta_deg, dtype=np.float64)) / 2.0
    )
    out = np.full(sin_theta_to.shape, np.nan)
    reachable = sin_theta_to <= 1.0
    out[reachable] = 2.0 * np.degrees(np.arcsin(sin_theta_to[reachable]))
    return out


# --------------------------------------------------------------------------------------------------------
# Dispatch
# --------------------------------------------------------------------------------------------------------

_FORMAT_ALIASES = {
    "xy": "xy",
    "xye": "xy",
    "csv": "xy",
    "dat": "xy",
    "txt": "xy",
    "text": "xy",
    "xrdml": "xrdml",
    "gsas": "gsas",
    "fxye": "gsas",
    "gsa": "gsas",
    "gss": "gsas",
    "ras": "ras",
    "rasx": "rasx",
    "brml": "brml",
    "bruker_raw": "bruker_raw",
    "raw": "bruker_raw",
}


def _sniff_format(path: Path, head: bytes) -> str | None:
    """Recognise a format from the file's first bytes; None when the content is not distinctive."""
    if head.startswith((b"RAW1.01", b"RAW4.00", b"RAW ", b"RAW2")):
        return "bruker_raw"
    if head.startswith(b"PK\x03\x04"):
        try:
            with zipfile.ZipFile(path) as archive:
                names = archive.namelist()
        except zipfile.BadZipFile:
            return None
        if any(re.fullmatch(r"(?:.*/)?Data\d+/Profile\d*\.txt", n) for n in names):
            return "rasx"
        if any(re.search(r"RawData\d*\.xml$", n) for n in names):
            return "brml"
        return None
    text = head.decode("latin-1")
    stripped = text.lstrip("\ufeff\xef\xbb\xbf \t\r\n")
    if stripped.startswith("*RAS_") or "*RAS_HEADER_START" in text:
        return "ras"
    if stripped.startswith("<") and "xrdMeasurements" in text:
        return "xrdml"
    if re.search(r"^BANK\s", text, flags=re.MULTILINE):
        return "gsas"
    return None


def normalise_format(format: str) -> str | None:
    """The reader key of a format name or alias (``xye`` -> ``xy``, ``raw`` -> ``bruker_raw``); None if unknown."""
    return _FORMAT_ALIASES.get(format.lower().lstrip("."))


def known_formats() -> list[str]:
    """Every accepted format name and alias, sorted."""
    return sorted(_FORMAT_ALIASES)


def _mib(n_bytes: int) -> str:
    return f"{n_bytes / 2**20:.3g} MiB"


def _size_limit_fix(max_bytes: int) -> str:
    return (
        f"If this really is one pattern, raise the limit: --max-file-mb on the command line (now "
        f"{max_bytes / 2**20:.3g}), max_bytes= in Python"
    )


def read_pattern(
    path: str | Path, *, format: str | None = None, max_bytes: int = DEFAULT_MAX_PATTERN_BYTES
) -> MeasuredPattern:
    """Read a measured powder pattern.

    Args:
        path: the file.
        format: one of ``xy`` (also ``xye``, ``csv``, ``dat``, ``txt``), ``xrdml``, ``gsas`` (``fxye``),
            ``ras``, ``rasx``, ``brml``, ``bruker_raw`` (``raw``). None: recognised from the content, then
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
            f"the file is {_mib(size)}, over the {_mib(max_bytes)} limit for one measured pattern",
            _size_limit_fix(max_bytes),
        )
    if format is not None:
        key = normalise_format(format)
        if key is None:
            raise MeasuredFormatError(
                path,
                f"unknown format {format!r}",
                f"Use one of {', '.join(known_formats())} (--format on the command line, format= in Python), "
                "or leave it out to detect the format",
            )
    else:
        with path.open("rb") as handle:
            head = handle.read(4096)
        key = _sniff_format(path, head) or _FORMAT_ALIASES.get(path.suffix.lower().lstrip("."), "xy")
    if key in _ZIP_READERS:
        pattern = _ZIP_READERS[key](path, max_bytes)
    else:
        pattern = _READERS[key](path)
    pattern.metadata.setdefault("format", key)
    return pattern


class _BoundedArchive:
    """Reads zip members while their unpacked sizes, summed, stay within a budget: a small zip can unpack to
    gigabytes. ``ZipInfo.file_size`` is what zipfile itself stops reading at, so checking it bounds the read."""

    def __init__(self, path: Path, archive: zipfile.ZipFile, max_bytes: int) -> None:
        self.path, self.archive, self.max_bytes = path, archive, max_bytes
        self.used = 0

    def _claim(self, name: str) -> None:
        size = self.archive.getinfo(name).file_size
        if self.used + size > self.max_bytes:
            raise MeasuredFormatError(
                self.path,
                f"member {name} unpacks to {_mib(size)}; the members read for one pattern may unpack to at "
                f"most {_mib(self.max_bytes)} in all",
                _size_limit_fix(self.max_bytes),
            )
        self.used += size

    def read(self, name: str) -> bytes:
        self._claim(name)
        return self.archive.read(name)

    def text_lines(self, name: str) -> io.TextIOWrapper:
        """The member as text lines (UTF-8, BOM dropped, bad bytes replaced), read as it is iterated."""
        self._claim(name)
        return io.TextIOWrapper(self.archive.open(name), encoding="utf-8-sig", errors="replace")


# --------------------------------------------------------------------------------------------------------
# Two-column text
# --------------------------------------------------------------------------------------------------------

_COMMENT_PREFIXES = ("#", ";", "!")
_SEPARATORS = re.compile(r"[,;\s]+")
_NUM = r"(\d+\.\d*|\.\d+|\d+)"


def _is_numeric_line(line: str) -> bool:
    try:
        [float(f) for f in _SEPARATORS.split(line) if f]
    except ValueError:
        return False
    return True


def _wavelength_from_header(lines: list[str]) -> tuple[float | None, dict[str, str]]:
    """Find a wavelength stated in free-text header/comment lines (``Ka1=``, ``wavelength:``, ``lambda``)."""
    text = "\n".join(lines)

    def find(pattern: str) -> float | None:
        match = re.search(pattern, text, flags=re.IGNORECASE)
        if match is None:
            return None
        value = float(match.group(1))
        low, high = _WAVELENGTH_PLAUSIBLE_ANGSTROM
        return value if low < value < high else None

    kalpha = r"k\s*-?\s*(?:a|α|alpha)\s*-?\s*"
    kalpha1 = find(kalpha + r"1\s*[=:]\s*" + _NUM)
    if kalpha1 is not None:
        kalpha2 = find(kalpha + r"2\s*[=:]\s*" + _NUM)
        ratio_match = re.search(r"ratio\s*[=:]\s*" + _NUM, text, flags=re.IGNORECASE)
        ratio = float(ratio_match.group(1)) if ratio_match else None
        return _wavelength_metadata(kalpha1, kalpha2, ratio)
    return _stated_wavelength(find(r"(?:wavelength|lambda|λ)\s*(?:\([^)]*\))?\s*[=:]?\s*" + _NUM))


_ROWS_PER_BLOCK = 16384
_TO_SPACES = str.maketrans(",;\t", "   ")


class _NumericRows:
    """Separator-delimited numeric rows parsed by numpy in blocks of :data:`_ROWS_PER_BLOCK` lines.

    Holding a Python string per field for a whole file takes tens of times the memory of the float table it
    becomes; block-wise parsing keeps the peak at a few times the table (the blocks and their concatenation).
    """

    def __init__(self, path: Path, what: str) -> None:
        self.path, self.what = path, what
        self.width: int | None = None
        self.blocks: list[np.ndarray] = []
        self.lines: list[str] = []
        self.line_numbers: list[int] = []

    def add(self, line_no: int, text: str) -> None:
        self.lines.append(text.translate(_TO_SPACES))
        self.line_numbers.append(line_no)
        if len(self.lines) >= _ROWS_PER_BLOCK:
            self._flush()

    @property
    def empty(self) -> bool:
        return not self.blocks and not self.lines

    def add_text(self, first_line_no: int, text: str) -> None:
        """Many '\\n'-separated lines without comments, parsed whole by numpy (no Python object per line);
        on any problem they go through :meth:`add` one by one, which finds and names the bad line."""
        self._flush()
        if not text.strip():
            return
        try:
            block = np.loadtxt(
                io.StringIO(text.translate(_TO_SPACES)), dtype=np.float64, ndmin=2, comments=None
            )
        except ValueError:
            block = None
        if block is None or (self.width is not None and block.shape[1] != self.width):
            for offset, line in enumerate(text.split("\n")):
                if line.strip():
                    self.add(first_line_no + offset, line.strip())
            self._flush()
            return
        self.width = block.shape[1]
        self.blocks.append(block)

    def _flush(self) -> None:
        if not self.lines:
            return
        try:
            block = np.loadtxt(self.lines, dtype=np.float64, ndmin=2, comments=None)
        except ValueError:
            self._raise_bad_line()
        if self.width is None:
            self.width = block.shape[1]
        elif block.shape[1] != self.width:
            self._raise_bad_line()
        self.blocks.append(block)
        self.lines, self.line_numbers = [], []

    def _raise_bad_line(self) -> None:
        """Find the offending line of the current block (only on failure: the per-line loop is slow)."""
        width = self.width
        for line_no, text in zip(self.line_numbers, self.lines, strict=True):
            fields = text.split()
            try:
                [float(f) for f in fields]
            except ValueError:
                raise MeasuredFormatError(
                    self.path,
                    f"line {line_no} of the {self.what} is not numeric: {text.strip()[:60]!r}",
                    "Comment it out with '#' or remove it",
                ) from None
            if width is None:
                width = len(fields)
            elif len(fields) != width:
                raise MeasuredFormatError(
                    self.path,
                    f"line {line_no} has {len(fields)} columns but the data started with {width}",
                    "Every data line needs the same columns (2θ, intensity[, error])",
                )
        raise MeasuredFormatError(
            self.path,
            f"lines {self.line_numbers[0]}-{self.line_numbers[-1]} of the {self.what} could not be parsed as numbers",
            "Check the data lines",
        )

    def finish(self) -> np.ndarray:
        """The (rows, columns) float64 table of everything added."""
        self._flush()
        if not self.blocks:
            raise MeasuredFormatError(
                self.path, f"no numeric data in the {self.what}", "Is this a powder pattern file?"
            )
        table = self.blocks[0] if len(self.blocks) == 1 else np.concatenate(self.blocks)
        self.blocks = []
        return table


def _parse_numeric_rows(path: Path, rows: list[tuple[int, str]], what: str) -> np.ndarray:
    """Parse (line number, text) rows of separator-delimited numbers into a 2-D float array."""
    table = _NumericRows(path, what)
    for line_no, text in rows:
        table.add(line_no, text)
    return table.finish()


def _columns_to_pattern(
    path: Path,
    table: np.ndarray,
    wavelength: float | None,
    metadata: dict[str, str],
) -> MeasuredPattern:
    """Check a (rows, 2 or 3) table and orient it as ascending 2θ."""
    if table.shape[1] not in (2, 3):
        raise MeasuredFormatError(
            path,
            f"{table.shape[1]} column{'s' if table.shape[1] != 1 else ''} per data line",
            "Expected 2θ and intensity, optionally a third column of errors; export those columns only",
        )
    two_theta, intensity = table[:, 0], table[:, 1]
    steps = np.diff(two_theta)
    if steps.size and np.all(steps < 0):
        two_theta, intensity = two_theta[::-1], intensity[::-1]
    elif steps.size and not np.all(steps > 0):
        bad = int(np.argmax(steps <= 0)) + 1
        raise MeasuredFormatError(
            path,
            f"the first column is not monotonic (data row {bad + 1}: {two_theta[bad - 1]:g} then "
            f"{two_theta[bad]:g})",
            "The first column must be 2θ in increasing or decreasing order; check the column order",
        )
    return MeasuredPattern(two_theta, intensity, wavelength, str(path), metadata)


_SNIFF_BYTES = 65536
_MAX_HEADER_LINES = 1000
_LEADING_ROWS = 1000
_TEXT_CHUNK_CHARS = 1 << 20
# A comment anywhere in a chunk ('#' or '!' anywhere, ';' starting a line) sends it down the per-line path.
_COMMENT_IN_CHUNK = re.compile(r"[#!]|^[ \t]*;", flags=re.MULTILINE)


def _read_text_columns(path: Path) -> MeasuredPattern:
    """Two or three numeric columns (2θ deg, intensity[, error]); comments and header lines are kept in
    ``metadata["header"]`` (the first :data:`_MAX_HEADER_LINES`) and searched for a stated wavelength.

    Streamed: the header and the first :data:`_LEADING_ROWS` numeric rows line by line, the rest in chunks
    of :data:`_TEXT_CHUNK_CHARS` characters that numpy parses whole when they hold no comment."""
    with path.open("rb") as handle:
        head = handle.read(_SNIFF_BYTES).decode("utf-8", errors="replace")
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

    table = _NumericRows(path, "data")
    # The first numeric rows wait until their common width is known: some exporters put numeric header
    # lines (a point count, "start step end") before the columns, and leading rows whose width differs from
    # the most common one are header, not data.
    leading: list[tuple[int, str]] = []

    def take(line_no: int, raw: str) -> None:
        line = raw.strip()
        if not line:
            return
        if line.startswith(_COMMENT_PREFIXES):
            keep(line.lstrip("#;! ").strip())
            return
        if "#" in line:
            line = line.split("#", 1)[0].strip()
        if len(leading) >= _LEADING_ROWS:
            table.add(line_no, line)
        elif not leading and not _is_numeric_line(line):
            keep(line)
        else:
            leading.append((line_no, line))
            if len(leading) == _LEADING_ROWS:
                _settle_leading_rows(leading, table, keep)

    def take_chunk(first_line_no: int, text: str) -> None:
        if _COMMENT_IN_CHUNK.search(text):
            for offset, raw in enumerate(text.split("\n")):
                take(first_line_no + offset, raw)
        else:
            table.add_text(first_line_no, text)

    with path.open(encoding="utf-8-sig", errors="replace") as handle:
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
        _settle_leading_rows(leading, table, keep)
    if table.empty:
        raise MeasuredFormatError(
            path,
            "no numeric data lines found",
            "Expected lines of '2theta intensity' (comments may start with #, ; or !)",
        )
    data = table.finish()
    wavelength, metadata = _wavelength_from_header(header)
    if header:
        metadata["header"] = "\n".join(header)
    metadata["columns"] = "two_theta_deg intensity" + (" error" if data.shape[1] == 3 else "")
    return _columns_to_pattern(path, data, wavelength, metadata)


def _settle_leading_rows(
    rows: list[tuple[int, str]], table: _NumericRows, keep: Callable[[str], None]
) -> None:
    """Rows before the first row of the most common width go to the header, the rest to the table."""
    if not rows:
        return
    widths = [len([f for f in _SEPARATORS.split(line) if f]) for _, line in rows]
    common = max(set(widths), key=widths.count)
    first = widths.index(common)
    for _, line in rows[:first]:
        keep(line)
    for line_no, line in rows[first:]:
        table.add(line_no, line)


# --------------------------------------------------------------------------------------------------------
# XML helpers
# --------------------------------------------------------------------------------------------------------


def _local(tag: str) -> str:
    return tag.rsplit("}", 1)[-1]


def _children(element: ET.Element, name: str) -> list[ET.Element]:
    return [child for child in element if _local(child.tag) == name]


def _child(element: ET.Element, name: str) -> ET.Element | None:
    found = _children(element, name)
    return found[0] if found else None


def _descendants(element: ET.Element, name: str) -> list[ET.Element]:
    return [node for node in element.iter() if _local(node.tag) == name]


def _parse_xml(path: Path, data: bytes, member: str | None = None) -> ET.Element:
    try:
        return ET.fromstring(data)
    except ET.ParseError as error:
        where = f"member {member} " if member else ""
        raise MeasuredFormatError(
            path,
            f"{where}is not well-formed XML ({error})",
            "The file is truncated or corrupt; export it again",
        ) from None


def _float_or_none(text: str | None) -> float | None:
    if text is None:
        return None
    try:
        return float(text.strip())
    except ValueError:
        return None


def _floats(path: Path, text: str | None, what: str) -> np.ndarray:
    try:
        return np.array((text or "").split(), dtype=np.float64)
    except ValueError:
        raise MeasuredFormatError(path, f"non-numeric values in {what}", "The file is corrupt") from None


# --------------------------------------------------------------------------------------------------------
# PANalytical XRDML
# --------------------------------------------------------------------------------------------------------


def _per_point(path: Path, points: ET.Element, listed_name: str, common_name: str, n: int) -> np.ndarray:
    """A per-point XRDML factor given as a list (``listed_name``) or one value (``common_name``); 1 if absent."""
    listed = _child(points, listed_name)
    if listed is not None:
        values = _floats(path, listed.text, f"<{listed_name}>")
        if values.size != n:
            raise MeasuredFormatError(
                path, f"{values.size} <{listed_name}> values for {n} points", "The file is corrupt"
            )
        return values
    common = _child(points, common_name)
    value = _float_or_none(common.text) if common is not None else None
    return np.full(n, 1.0 if value is None else value)


def _read_xrdml(path: Path) -> MeasuredPattern:
    """XRDML: 2θ from ``positions axis="2Theta"`` (start/end or list), ``intensities`` (1.x, already
    attenuation-corrected) or ``counts`` (2.x, multiplied here by the beam attenuation factors), divided by
    the counting time when given (result in counts per second)."""
    root = _parse_xml(path, path.read_bytes())
    if _local(root.tag) != "xrdMeasurements":
        raise MeasuredFormatError(
            path, f"root element is <{_local(root.tag)}>, not <xrdMeasurements>", "Is this an XRDML file?"
        )
    measurements = _descendants(root, "xrdMeasurement")
    scans = [scan for m in measurements for scan in _descendants(m, "scan") if _child(scan, "dataPoints")]
    if not scans:
        raise MeasuredFormatError(path, "no <scan> with <dataPoints>", "The measurement holds no data")
    scan = scans[0]
    owner = next(m for m in measurements if any(s is scan for s in m.iter()))
    points = _child(scan, "dataPoints")
    assert points is not None
    counts_element = _child(points, "intensities")
    raw_counts = counts_element is None
    if raw_counts:
        counts_element = _child(points, "counts")
    if counts_element is None:
        raise MeasuredFormatError(path, "no <intensities> or <counts> in the scan", "The scan holds no data")
    intensity = _floats(path, counts_element.text, "<counts>/<intensities>")
    n = intensity.size
    if n < 2:
        raise MeasuredFormatError(path, f"the scan has {n} intensity value(s)", "The scan holds no data")

    two_theta = None
    for positions in _children(points, "positions"):
        if positions.get("axis") != "2Theta":
            continue
        listed = _child(positions, "listPositions")
        start, end = _child(positions, "startPosition"), _child(positions, "endPosition")
        if listed is not None:
            two_theta = _floats(path, listed.text, "<listPositions>")
        elif start is not None and end is not None:
            first, last = _float_or_none(start.text), _float_or_none(end.text)
            if first is None or last is None:
                raise MeasuredFormatError(
                    path, "non-numeric 2Theta start/end position", "The file is corrupt"
                )
            two_theta = np.linspace(first, last, n)
    if two_theta is None:
        raise MeasuredFormatError(
            path,
            f"scan axis {scan.get('scanAxis')!r} does not vary 2Theta",
            "Only 2θ scans (Gonio, 2Theta-Omega, 2Theta) are powder patterns",
        )
    if two_theta.size != n:
        raise MeasuredFormatError(
            path, f"{two_theta.size} 2Theta positions for {n} intensities", "The file is corrupt"
        )

    metadata: dict[str, str] = {"intensity_unit": "counts"}
    if raw_counts:
        intensity = intensity * _per_point(
            path, points, "beamAttenuationFactors", "commonBeamAttenuationFactor", n
        )
    times = _per_point(path, points, "countingTimes", "commonCountingTime", n)
    if _child(points, "commonCountingTime") is not None:
        metadata["counting_time_s"] = repr(float(times[0]))
    if np.all(times > 0):
        intensity = intensity / times
        metadata["intensity_unit"] = "counts per second"

    lines = {}
    used = _child(owner, "usedWavelength")
    if used is not None:
        metadata["wavelength_intended"] = used.get("intended", "")
        for name in ("kAlpha1", "kAlpha2", "kBeta", "ratioKAlpha2KAlpha1"):
            element = _child(used, name)
            lines[name] = _float_or_none(element.text) if element is not None else None
    wavelength, wave_meta = _wavelength_metadata(
        lines.get("kAlpha1"), lines.get("kAlpha2"), lines.get("ratioKAlpha2KAlpha1")
    )
    metadata.update(wave_meta)
    metadata["scan_axis"] = scan.get("scanAxis", "")
    if len(scans) > 1:
        metadata["scans_in_file"] = str(len(scans))
        metadata["scan_read"] = "0"
    order = np.argsort(two_theta, kind="stable")
    return MeasuredPattern(two_theta[order], intensity[order], wavelength, str(path), metadata)


# --------------------------------------------------------------------------------------------------------
# GSAS raw (FXYE, FXY, ESD, STD)
# --------------------------------------------------------------------------------------------------------


def _instrument_file_wavelength(path: Path) -> tuple[float | None, dict[str, str]]:
    """Wavelength from a GSAS ``.prm`` or GSAS-II ``.instprm`` instrument parameter file.

    ``.prm``: the ``INS  1 ICONS`` record's value has 10-character fields, λ1 at [0:10], λ2 at [10:20] and
    the Kα2/Kα1 ratio at [55:65]. ``.instprm``: ``item:value`` pairs (``;``-joined lines allowed), ``Lam``
    for one wavelength or ``Lam1``/``Lam2``/``I(L2)/I(L1)`` for a doublet.
    """
    lines = path.read_text(encoding="latin-1").splitlines()
    for line in lines:
        if line.startswith("INS  1 ICONS"):
            value = line[12:]
            lam1, lam2 = _float_or_none(value[0:10]), _float_or_none(value[10:20])
            if lam2:
                return _wavelength_metadata(lam1, lam2, _float_or_none(value[55:65]))
            return _stated_wavelength(lam1)
    items: dict[str, str] = {}
    for line in lines:
        if line.startswith("#"):
            continue
        for pair in line.replace(" ", "").split(";"):
            if ":" in pair:
                key, value = pair.split(":", 1)
                items.setdefault(key, value)
    if "Lam" in items:
        return _stated_wavelength(_float_or_none(items["Lam"]))
    if "Lam1" in items:
        return _wavelength_metadata(
            _float_or_none(items["Lam1"]),
            _float_or_none(items.get("Lam2")),
            _float_or_none(items.get("I(L2)/I(L1)")),
        )
    return None, {}


def _fixed_width_floats(
    path: Path, line: str, record_width: int, field_start: int, field_width: int, line_no: int
) -> list[float]:
    """The number at [field_start, field_start + field_width) of each ``record_width``-character record."""
    body = line.rstrip("\r\n")
    out = []
    for start in range(0, len(body), record_width):
        field = body[start + field_start : start + field_start + field_width]
        if not field.strip():
            continue
        try:
            out.append(float(field))
        except ValueError:
            raise MeasuredFormatError(
                path, f"line {line_no}: field {field!r} is not a number", "The bank data are corrupt"
            ) from None
    return out


def _read_gsas(path: Path) -> MeasuredPattern:
    """GSAS raw file, first bank. FXYE/FXY: columns of 2θ (centidegrees), intensity[, esd]. ESD/STD: a
    ``CONS`` bank with start and step in centidegrees, then fixed-width fields (ESD: I 8 chars + esd 8
    chars, five pairs a line; STD: count 2 chars + I 6 chars, ten a line)."""
    lines = path.read_text(encoding="latin-1").splitlines()
    if not lines:
        raise MeasuredFormatError(path, "the file is empty", "Export the pattern again")
    metadata: dict[str, str] = {"title": lines[0].strip()}
    comments: list[str] = []
    wavelength, wave_meta = None, {}
    bank_index = next((i for i, line in enumerate(lines) if line.startswith("BANK")), None)
    if bank_index is None:
        raise MeasuredFormatError(path, "no BANK record", "A GSAS raw file needs a 'BANK 1 ...' line")
    for line in lines[1:bank_index]:
        if line[:4].lower() == "inst" and ":" in line:
            name = line.split(":", 1)[1].strip().strip("[]")
            metadata["instrument_parameter_file"] = name
            candidate = path.parent / name
            if name and candidate.is_file():
                wavelength, wave_meta = _instrument_file_wavelength(candidate)
        elif line.startswith("#"):
            comments.append(line.lstrip("# ").strip())
    if wavelength is None:
        for comment in comments:
            match = re.search(
                _NUM + r"\s*(?:Å|A|angstroms?)?\s*calibrated wavelength", comment, re.IGNORECASE
            )
            if match:
                wavelength, wave_meta = _stated_wavelength(float(match.group(1)))
                break
        else:
            wavelength, wave_meta = _wavelength_from_header(comments)
    metadata.update(wave_meta)
    if comments:
        metadata["header"] = "\n".join(comments)

    bank = lines[bank_index].split()
    metadata["bank"] = " ".join(bank)
    metadata["banks_in_file"] = str(sum(1 for line in lines if line.startswith("BANK")))
    try:
        n_channels, bin_type = int(bank[2]), bank[4]
        start_cdeg, step_cdeg = float(bank[5]), float(bank[6])
    except (IndexError, ValueError):
        raise MeasuredFormatError(
            path,
            f"malformed BANK record {lines[bank_index].strip()!r}",
            "Expected 'BANK ibank nchan nrec BINTYP bcoef... [TYPE]'",
        ) from None
    data_type = bank[-1].upper() if bank[-1].upper() in ("FXYE", "FXY", "ESD", "STD", "ALT") else "STD"
    metadata["gsas_data_type"] = data_type
    body: list[tuple[int, str]] = []
    for offset, line in enumerate(lines[bank_index + 1 :], start=bank_index + 2):
        if line.startswith(("BANK", "TIME_MAP")):
            break
        if line.startswith("#") or not line.strip():
            continue
        body.append((offset, line))

    if data_type in ("FXYE", "FXY"):
        table = _parse_numeric_rows(path, body, "bank")
        if table.shape[1] < 2:
            raise MeasuredFormatError(path, "FXY/FXYE rows need 2θ and intensity", "The bank is corrupt")
        two_theta, intensity = table[:, 0] / 100.0, table[:, 1]
    elif data_type in ("ESD", "STD"):
        if bin_type != "CONS":
            raise MeasuredFormatError(
                path,
                f"{data_type} bank with bin type {bin_type!r}",
                "Only constant-step (CONS) 2θ banks are supported; export as FXYE",
            )
        values: list[float] = []
        for line_no, line in body:
            # ESD records: intensity (8) + esd (8); STD records: count (2) + intensity (6).
            layout = (16, 0, 8) if data_type == "ESD" else (8, 2, 6)
            values.extend(_fixed_width_floats(path, line, *layout, line_no))
        intensity = np.asarray(values[:n_channels], dtype=np.float64)
        two_theta = (start_cdeg + step_cdeg * np.arange(intensity.size)) / 100.0
    else:
        raise MeasuredFormatError(
            path, "ALT banks (compressed time-of-flight) are not read", "Export an FXYE bank"
        )
    if two_theta.size != n_channels:
        metadata["note"] = f"BANK record declares {n_channels} channels, {two_theta.size} read"
    return _columns_to_pattern(path, np.column_stack([two_theta, intensity]), wavelength, metadata)


# --------------------------------------------------------------------------------------------------------
# Rigaku RAS / RASX
# --------------------------------------------------------------------------------------------------------


def _rigaku_columns(path: Path, table: np.ndarray, what: str) -> tuple[np.ndarray, np.ndarray]:
    """Rigaku data rows are ``x intensity attenuation``; the attenuation factor multiplies the counts."""
    if table.shape[1] < 2:
        raise MeasuredFormatError(path, f"{what} rows need angle and intensity", "The scan is corrupt")
    intensity = table[:, 1] * table[:, 2] if table.shape[1] >= 3 else table[:, 1]
    return table[:, 0], intensity


def _rigaku_wavelength(values: dict[str, str]) -> tuple[float | None, dict[str, str]]:
    """Rigaku states Kα1/Kα2 but no intensity ratio; ``WaveType`` ``Ka1`` means monochromated, ``Ka`` (or
    absent, the usual Bragg-Brentano setting with a β filter) means the doublet at the conventional ratio
    0.5."""
    kalpha1 = _float_or_none(values.get("HW_XG_WAVE_LENGTH_ALPHA1") or values.get("WavelengthKalpha1"))
    kalpha2 = _float_or_none(values.get("HW_XG_WAVE_LENGTH_ALPHA2") or values.get("WavelengthKalpha2"))
    wave_type = (values.get("WaveType") or values.get("HW_XG_WAVE_TYPE") or "").strip().lower()
    ratio = 0.0 if wave_type in ("ka1", "kalpha1") else 0.5
    wavelength, meta = _wavelength_metadata(kalpha1, kalpha2, ratio if kalpha2 else None)
    if kalpha2 and ratio > 0:
        meta["kalpha2_kalpha1_ratio_source"] = "assumed (Rigaku files state no ratio)"
    return wavelength, meta


def _read_ras(path: Path) -> MeasuredPattern:
    """Rigaku RAS: ``*KEY "value"`` header lines, data between ``*RAS_INT_START`` and ``*RAS_INT_END``
    (first scan); rows starting with '#' are comments."""
    lines = path.read_text(encoding="latin-1").splitlines()
    header: dict[str, str] = {}
    rows: list[tuple[int, str]] = []
    in_data = False
    for line_no, raw in enumerate(lines, start=1):
        line = raw.strip()
        if line.startswith("*RAS_INT_START"):
            in_data = True
            continue
        if line.startswith("*RAS_INT_END"):
            break
        if in_data:
            if line and not line.startswith("#"):
                rows.append((line_no, line))
            continue
        match = re.match(r'^\*(\S+)\s+"?(.*?)"?\s*$', line)
        if match and match.group(1) not in header:
            header[match.group(1)] = match.group(2)
    if not rows:
        raise MeasuredFormatError(
            path, "no data rows after *RAS_INT_START", "Is this a complete Rigaku RAS file?"
        )
    two_theta, intensity = _rigaku_columns(path, _parse_numeric_rows(path, rows, "RAS data"), "RAS data")
    wavelength, metadata = _rigaku_wavelength(header)
    for key in (
        "MEAS_SCAN_AXIS_X",
        "MEAS_SCAN_UNIT_X",
        "MEAS_SCAN_UNIT_Y",
        "HW_XG_TARGET_NAME",
        "FILE_SAMPLE",
    ):
        if key in header:
            metadata[key] = header[key]
    scans = sum(1 for line in lines if line.strip().startswith("*RAS_INT_START"))
    if scans > 1:
        metadata["scans_in_file"] = str(scans)
    _check_rigaku_axis(path, metadata.get("MEAS_SCAN_AXIS_X", ""))
    return _columns_to_pattern(path, np.column_stack([two_theta, intensity]), wavelength, metadata)


def _check_rigaku_axis(path: Path, axis: str) -> None:
    if axis and not re.search(r"(?:two|2)\s*-?\s*theta|2θ", axis, flags=re.IGNORECASE):
        raise MeasuredFormatError(
            path,
            f"scan axis is {axis!r}, not a 2θ axis",
            "Only 2θ (TwoThetaOmega, TwoTheta...) scans are patterns",
        )


def _numbered(name: str) -> tuple[int, ...]:
    return tuple(int(n) for n in re.findall(r"\d+", name))


def _read_rasx(path: Path, max_bytes: int) -> MeasuredPattern:
    """Rigaku RASX: zip with ``Data<k>/Profile<k>.txt`` (tab-separated rows ``x intensity attenuation``)
    and ``Data<k>/MesurementConditions<k>.xml`` (sic); the lowest-numbered scan is read."""
    try:
        with zipfile.ZipFile(path) as zipped:
            archive = _BoundedArchive(path, zipped, max_bytes)
            names = zipped.namelist()
            profiles = sorted(
                (n for n in names if re.fullmatch(r"(?:.*/)?Data\d+/Profile\d*\.txt", n)), key=_numbered
            )
            if not profiles:
                raise MeasuredFormatError(path, "no Data*/Profile*.txt member", "Is this a Rigaku RASX file?")
            profile = profiles[0]
            folder = profile.rsplit("/", 1)[0]
            conditions = [n for n in names if n.startswith(folder + "/") and "Conditions" in n]
            condition_xml = archive.read(conditions[0]) if conditions else None
            rows = _NumericRows(path, profile)
            with archive.text_lines(profile) as lines:
                for line_no, line in enumerate(lines, start=1):
                    line = line.strip()
                    if line and not line.startswith("#"):
                        rows.add(line_no, line)
            two_theta, intensity = _rigaku_columns(path, rows.finish(), profile)
    except zipfile.BadZipFile:
        raise MeasuredFormatError(
            path, "not a valid zip archive", "A .rasx file is a zip; export it again"
        ) from None
    values: dict[str, str] = {}
    if condition_xml is not None:
        root = _parse_xml(path, condition_xml, conditions[0])
        for node in root.iter():
            if node.text and node.text.strip() and len(node) == 0:
                values.setdefault(_local(node.tag), node.text.strip())
        for pair in _descendants(root, "Pair"):
            key, value = _child(pair, "Key"), _child(pair, "Value")
            if key is not None and value is not None and key.text:
                values.setdefault(key.text.strip(), (value.text or "").strip())
    wavelength, metadata = _rigaku_wavelength(values)
    metadata["profile_member"] = profile
    if "AxisName" in values:
        metadata["scan_axis"] = values["AxisName"]
        _check_rigaku_axis(path, values["AxisName"])
    return _columns_to_pattern(path, np.column_stack([two_theta, intensity]), wavelength, metadata)


# --------------------------------------------------------------------------------------------------------
# Bruker BRML
# --------------------------------------------------------------------------------------------------------

_XSI_TYPE = "{http://www.w3.org/2001/XMLSchema-instance}type"


def _xml_value(root: ET.Element, name: str) -> float | None:
    """First ``<name Value="..."/>`` or ``<name>...</name>`` number anywhere below root."""
    for node in _descendants(root, name):
        value = (
            _float_or_none(node.get("Value")) if node.get("Value") is not None else _float_or_none(node.text)
        )
        if value is not None:
            return value
    return None


def _read_brml(path: Path, max_bytes: int) -> MeasuredPattern:
    """Bruker BRML: zip; ``Experiment*/DataContainer.xml`` lists ``RawData*.xml``; the measured
    ``DataRoute`` holds one comma-separated ``Datum`` per point whose columns are located from
    ``DataViews`` (``MeasuredTime``, ``AbsorptionFactor``, the varying view's ``TwoTheta`` field, the
    recorded counts). Intensity = counts x absorption factor / measured time (counts per second)."""
    try:
        with zipfile.ZipFile(path) as zipped:
            archive = _BoundedArchive(path, zipped, max_bytes)
            names = zipped.namelist()
            listed: list[str] = []
            for container in sorted(n for n in names if n.endswith("DataContainer.xml")):
                root = _parse_xml(path, archive.read(container), container)
                listed += [(s.text or "").strip() for s in _descendants(root, "string")]
            raw_names = [n for n in listed if n in names] or sorted(
                (n for n in names if re.search(r"RawData\d*\.xml$", n)), key=_numbered
            )
            if not raw_names:
                raise MeasuredFormatError(path, "no RawData*.xml member", "Is this a Bruker BRML file?")
            raw_root = _parse_xml(path, archive.read(raw_names[0]), raw_names[0])
            extra_roots = [
                _parse_xml(path, archive.read(n), n) for n in names if n.endswith("MeasurementContainer.xml")
            ]
    except zipfile.BadZipFile:
        raise MeasuredFormatError(
            path, "not a valid zip archive", "A .brml file is a zip; export it again"
        ) from None

    routes = _descendants(raw_root, "DataRoute")
    measured = [r for r in routes if r.get("RouteFlag") == "Measured"]
    if len(measured) != 1 and len(routes) != 1:
        raise MeasuredFormatError(
            path,
            f"{len(routes)} DataRoutes and {len(measured)} flagged 'Measured'",
            "Expected one measured route",
        )
    route = measured[0] if len(measured) == 1 else routes[0]
    columns: dict[str, int] = {}
    for view in _descendants(route, "RawDataView"):
        start = int(view.get("Start", "0"))
        kind = view.get(_XSI_TYPE, "")
        logic = view.get("LogicName", "")
        if logic in ("MeasuredTime", "AbsorptionFactor"):
            columns[logic] = start
        elif kind.endswith("VaryingRawDataView"):
            for offset, definition in enumerate(_descendants(view, "FieldDefinitions")):
                axis = definition.get("AxisId") or definition.get("FieldName") or ""
                if axis == "TwoTheta":
                    columns["TwoTheta"] = start + offset
        elif kind.endswith("RecordedRawDataView"):
            columns.setdefault("Counts", start)
    if "Counts" not in columns:
        raise MeasuredFormatError(
            path, "no recorded-counts column in DataViews", "The BRML raw data are incomplete"
        )
    datums = _descendants(route, "Datum")
    try:
        table = [[float(v) for v in (d.text or "").split(",")] for d in datums]
    except ValueError:
        raise MeasuredFormatError(
            path, "non-numeric <Datum> values", "The BRML raw data are corrupt"
        ) from None
    width = max(columns.values()) + 1
    if not table or any(len(row) < width for row in table):
        raise MeasuredFormatError(
            path,
            f"{len(table)} Datum rows, some shorter than the {width} columns DataViews declare",
            "Corrupt file",
        )
    data = np.asarray([row[:width] for row in table], dtype=np.float64)
    intensity = data[:, columns["Counts"]].copy()
    if "AbsorptionFactor" in columns:
        intensity *= data[:, columns["AbsorptionFactor"]]
    metadata: dict[str, str] = {"intensity_unit": "counts"}
    if "MeasuredTime" in columns and np.all(data[:, columns["MeasuredTime"]] > 0):
        intensity /= data[:, columns["MeasuredTime"]]
        metadata["intensity_unit"] = "counts per second"
    if "TwoTheta" in columns:
        two_theta = data[:, columns["TwoTheta"]]
    else:
        axes = [a for a in _descendants(route, "ScanAxisInfo") if a.get("AxisId") == "TwoTheta"]
        start = (
            _float_or_none(_child(axes[0], "Start").text)
            if axes and _child(axes[0], "Start") is not None
            else None
        )
        step = (
            _float_or_none(_child(axes[0], "Increment").text)
            if axes and _child(axes[0], "Increment") is not None
            else None
        )
        if start is None or step is None:
            raise MeasuredFormatError(
                path, "no TwoTheta column and no TwoTheta ScanAxisInfo Start/Increment", "Not a 2θ scan"
            )
        two_theta = start + step * np.arange(data.shape[0])
    kalpha1 = kalpha2 = ratio = None
    for root in [raw_root, *extra_roots]:
        kalpha1 = kalpha1 or _xml_value(root, "WaveLengthAlpha1")
        kalpha2 = kalpha2 or _xml_value(root, "WaveLengthAlpha2")
        ratio = ratio if ratio is not None else _xml_value(root, "WaveLengthRatio")
    wavelength, wave_meta = _wavelength_metadata(kalpha1, kalpha2, ratio)
    metadata.update(wave_meta)
    metadata["raw_data_member"] = raw_names[0]
    return _columns_to_pattern(path, np.column_stack([two_theta, intensity]), wavelength, metadata)


# --------------------------------------------------------------------------------------------------------
# Bruker binary RAW (versions 3 and 4)
# --------------------------------------------------------------------------------------------------------


def _unpack(path: Path, data: bytes, fmt: str, offset: int, what: str) -> tuple:
    try:
        return struct.unpack_from(fmt, data, offset)
    except struct.error:
        raise MeasuredFormatError(
            path, f"file ends inside the {what} (byte {offset})", "The RAW file is truncated; copy it again"
        ) from None


def _cstring(raw: bytes) -> str:
    return raw.split(b"\x00", 1)[0].decode("latin-1").strip()


def _raw_intensities(path: Path, data: bytes, offset: int, steps: int, record_size: int) -> np.ndarray:
    """Data records of ``record_size`` bytes (0 in the header means 4); the first float32 of each is the
    intensity, the rest are per-point drive positions."""
    record_size = record_size or 4
    if record_size < 4:
        raise MeasuredFormatError(
            path, f"data record size {record_size} bytes is smaller than one float32", "Corrupt range header"
        )
    end = offset + steps * record_size
    if steps <= 0 or end > len(data):
        raise MeasuredFormatError(
            path,
            f"range of {steps} points x {record_size} bytes runs past the end of the file",
            "Truncated file",
        )
    records = np.frombuffer(data, dtype=np.uint8, count=steps * record_size, offset=offset).reshape(steps, -1)
    return records[:, :4].copy().view("<f4").astype(np.float64).ravel()


def _read_raw_v3(path: Path, data: bytes) -> MeasuredPattern:
    """RAW1.01: 712-byte file header (range count u32 @12; Kα average/Kα1/Kα2/Kβ/ratio float64 @616-655);
    per range a header (u32 size @0, u32 steps @4, float64 start 2θ @16, float64 step @176, float32 time
    per step @192, u32 record size @252, u32 supplementary size @256), then the data records."""
    (n_ranges,) = _unpack(path, data, "<I", 12, "file header")
    _, kalpha1, kalpha2, _, ratio = _unpack(path, data, "<5d", 616, "file header")
    offset = 712
    header_size, steps, _, start = _unpack(path, data, "<IIdd", offset, "range header")
    (step,) = _unpack(path, data, "<d", offset + 176, "range header")
    (time_per_step,) = _unpack(path, data, "<f", offset + 192, "range header")
    (record_size, supplementary) = _unpack(path, data, "<II", offset + 252, "range header")
    if n_ranges < 1 or header_size < 260:
        raise MeasuredFormatError(
            path, f"{n_ranges} ranges, range header size {header_size}", "Not a readable RAW1.01 file"
        )
    intensity = _raw_intensities(path, data, offset + header_size + supplementary, steps, record_size)
    wavelength, metadata = _wavelength_metadata(kalpha1, kalpha2, ratio)
    metadata.update(
        raw_version="3 (RAW1.01)",
        ranges_in_file=str(n_ranges),
        time_per_step_s=repr(time_per_step),
        sample=_cstring(data[326:386]),
    )
    two_theta = start + step * np.arange(steps)
    return _columns_to_pattern(path, np.column_stack([two_theta, intensity]), wavelength, metadata)


_RAW4_TWO_THETA_SCANS = ("Locked Coupled", "Unlocked Coupled", "Detector Scan")


def _read_raw_v4(path: Path, data: bytes) -> MeasuredPattern:
    """RAW4.00: 61-byte header, then records (u32 type, u32 length): type 10 text (name @12, 24 bytes;
    value @36), type 30 X-ray source (float64 Kα average/Kα1/Kα2/Kβ/ratio @72-111); type 0 or 160 starts
    a range: 160-byte header (scan type text @32, float64 start @72, float64 step @80, u32 steps @88,
    float32 time per step @92, u32 record size @136, u32 supplementary size @140), supplementary records,
    then the data records. The first 2θ range (coupled or detector scan) is read."""
    offset = 61
    metadata: dict[str, str] = {"raw_version": "4 (RAW4.00)"}
    wavelength: float | None = None
    while True:
        (kind,) = _unpack(path, data, "<I", offset, "record list")
        if kind in (0, 160):
            break
        (length,) = _unpack(path, data, "<I", offset + 4, "record list")
        if length < 8:
            raise MeasuredFormatError(
                path, f"record of type {kind} with length {length} at byte {offset}", "Corrupt"
            )
        if kind == 10 and length >= 36:
            name = _cstring(data[offset + 12 : offset + 36])
            metadata[f"raw_{name.lower()}"] = _cstring(data[offset + 36 : offset + length])
        elif kind == 30 and length >= 120:
            _, kalpha1, kalpha2, _, ratio = _unpack(path, data, "<5d", offset + 72, "X-ray source record")
            wavelength, wave_meta = _wavelength_metadata(kalpha1, kalpha2, ratio)
            metadata.update(wave_meta)
            metadata["anode"] = _cstring(data[offset + 116 : offset + 120])
        offset += length
    scan_types = []
    while offset + 160 <= len(data):
        (kind,) = _unpack(path, data, "<I", offset, "range header")
        if kind not in (0, 160):
            break
        scan_type = _cstring(data[offset + 32 : offset + 56])
        start, step = _unpack(path, data, "<dd", offset + 72, "range header")
        steps, time_per_step = _unpack(path, data, "<If", offset + 88, "range header")
        record_size, supplementary = _unpack(path, data, "<II", offset + 136, "range header")
        data_offset = offset + 160 + supplementary
        scan_types.append(scan_type)
        if scan_type in _RAW4_TWO_THETA_SCANS:
            intensity = _raw_intensities(path, data, data_offset, steps, record_size)
            metadata.update(scan_type=scan_type, time_per_step_s=repr(time_per_step))
            two_theta = start + step * np.arange(steps)
            return _columns_to_pattern(path, np.column_stack([two_theta, intensity]), wavelength, metadata)
        offset = data_offset + steps * (record_size or 4)
    raise MeasuredFormatError(
        path,
        f"no 2θ range (scan types found: {scan_types or 'none'})",
        f"Only {', '.join(_RAW4_TWO_THETA_SCANS)} ranges are powder patterns",
    )


def _read_bruker_raw(path: Path) -> MeasuredPattern:
    data = path.read_bytes()
    if data.startswith(b"RAW1.01"):
        return _read_raw_v3(path, data)
    if data.startswith(b"RAW4.00"):
        return _read_raw_v4(path, data)
    if data.startswith((b"RAW ", b"RAW2")):
        raise MeasuredFormatError(
            path, "Bruker RAW version 1/2 (DIFFRAC-AT) is not supported", "Convert it to .xy or .brml"
        )
    raise MeasuredFormatError(
        path, f"unknown header {data[:7]!r}", "A Bruker RAW file starts with 'RAW1.01' or 'RAW4.00'"
    )


_READERS: dict[str, Callable[[Path], MeasuredPattern]] = {
    "xy": _read_text_columns,
    "xrdml": _read_xrdml,
    "gsas": _read_gsas,
    "ras": _read_ras,
    "bruker_raw": _read_bruker_raw,
}
# Zip-based formats: the file size says little about what the members unpack to, so they get the limit.
_ZIP_READERS: dict[str, Callable[[Path, int], MeasuredPattern]] = {"rasx": _read_rasx, "brml": _read_brml}


# --------------------------------------------------------------------------------------------------------
# Mapping onto the model grid
# --------------------------------------------------------------------------------------------------------


def _raw_signal_warnings(pattern: MeasuredPattern) -> list[str]:
    """Refuse a pattern whose intensities carry no measurable signal; warn about negative ones (clipped).

    Counts cannot be negative: a few negative values come from background subtraction and noise, a majority
    from a sign error or a wrong column, so those are refused rather than clipped into an empty pattern.
    """
    intensity = pattern.intensity
    n_points = intensity.size
    n_negative = int(np.count_nonzero(intensity < 0))
    if not np.any(intensity):
        raise MeasuredSignalError(
            pattern.source,
            f"all {n_points} intensities are 0: the pattern holds no measurable signal",
            "Check that the file holds the measured counts (not an empty scan or a blank column); nothing "
            "was predicted",
        )
    if n_negative > MAJORITY_NEGATIVE_FRACTION * n_points:
        raise MeasuredSignalError(
            pattern.source,
            f"{n_negative} of {n_points} intensities ({100 * n_negative / n_points:.0f}%) are negative, which "
            "counts cannot be",
            "Check the column order and the sign of the intensities, or redo an over-subtracted background; "
            "nothing was predicted",
        )
    if intensity.max() == intensity.min():
        raise MeasuredSignalError(
            pattern.source,
            f"all {n_points} intensities equal {intensity[0]:g}: a flat line has no peaks to identify",
            "Check that the second column holds the measured intensities; nothing was predicted",
        )
    if n_negative:
        return [
            f"{n_negative} of {n_points} intensities ({100 * n_negative / n_points:.1f}%) are negative, which "
            "counts cannot be (over-subtracted background or a sign error); they were clipped to 0 before "
            "normalising, as in training (A.1)"
        ]
    return []


def to_model_grid(
    pattern: MeasuredPattern,
    *,
    wavelength_angstrom: float | None,
    model_wavelength_angstrom: float,
    two_theta_min_deg: float,
    two_theta_max_deg: float,
    n_bins: int,
) -> GriddedPattern:
    """Put a measured pattern on the model's input grid, normalised as in training.

    Steps:

    1. Wavelength: ``wavelength_angstrom`` if given, else ``pattern.wavelength_angstrom``; both None is an
       error. When it differs from ``model_wavelength_angstrom`` every 2θ goes through its d-spacing
       (:func:`convert_two_theta_deg`); points the model wavelength cannot reach are dropped.
    2. Resampling onto ``n_bins`` uniform bins over [two_theta_min_deg, two_theta_max_deg] (bin i centred
       at min + (i + 0.5) width): a bin holding two or more points gets their mean, any other bin in the
       measured range the linear interpolation at its centre (measurement coarser than the grid).
    3. Window: the bins whose centre lies inside the measured 2θ range (wholly or mostly inside).
    4. Normalisation (A.1): 0 outside the window; inside, clipped at 0 and divided by the 99th percentile
       (``numpy.quantile``, linear) of the in-window values when that is > 0.

    Warnings are added for a window shorter than the shortest training window
    (:data:`MIN_TRAINING_WINDOW_DEG` or :data:`MIN_GRID_COVERAGE_FRACTION` of the grid), a window that
    starts after :data:`MAX_TRAINING_WINDOW_START_DEG` or ends before :data:`MIN_TRAINING_WINDOW_END_DEG`
    (outside the training distribution), a mostly empty pattern (:data:`MOSTLY_EMPTY_FRACTION`), a pattern
    so sparse that its 99th percentile is 0 (then divided by its maximum instead), negative intensities
    (clipped to 0), points dropped by the wavelength conversion, more than 10% of the window bins
    interpolated, and a wavelength option that contradicts the file (by more than 0.1%).

    Raises:
        MeasuredSignalError: no measurable signal: every intensity 0, all equal, more than
            :data:`MAJORITY_NEGATIVE_FRACTION` of them negative, or nothing positive or nothing varying
            inside the model's 2θ range.
        MeasuredFormatError: no wavelength in the file or the option.
        ValueError: bad grid arguments, or the measured range does not overlap the grid.
    """
    if not (n_bins >= 1 and two_theta_max_deg > two_theta_min_deg):
        raise ValueError(
            f"model grid needs n_bins >= 1 and two_theta_max_deg > two_theta_min_deg, got n_bins={n_bins}, "
            f"[{two_theta_min_deg}, {two_theta_max_deg}]"
        )
    warnings: list[str] = []
    measured_wavelength = (
        wavelength_angstrom if wavelength_angstrom is not None else pattern.wavelength_angstrom
    )
    if measured_wavelength is None:
        raise MeasuredFormatError(
            pattern.source,
            "the file states no wavelength and none was given",
            "Give it with --wavelength on the command line (e.g. --wavelength 1.5406 or CuKa1) or "
            "wavelength_angstrom= in Python (1.5406 for Cu Kα1, 0.7093 for Mo Kα1)",
        )
    if (
        wavelength_angstrom is not None
        and pattern.wavelength_angstrom is not None
        and not math.isclose(wavelength_angstrom, pattern.wavelength_angstrom, rel_tol=1e-3)
    ):
        warnings.append(
            f"using wavelength {wavelength_angstrom} Å from the option; the file says "
            f"{pattern.wavelength_angstrom:.6g} Å ({pattern.metadata.get('wavelength_kind', 'unknown kind')})"
        )

    two_theta = pattern.two_theta_deg
    intensity = pattern.intensity
    if not math.isclose(measured_wavelength, model_wavelength_angstrom, rel_tol=1e-12):
        two_theta = convert_two_theta_deg(
            two_theta,
            from_wavelength_angstrom=measured_wavelength,
            to_wavelength_angstrom=model_wavelength_angstrom,
        )
        reachable = np.isfinite(two_theta)
        if not np.all(reachable):
            lost = pattern.two_theta_deg[~reachable]
            warnings.append(
                f"{lost.size} points above {lost.min():.2f} deg measured 2θ have no 2θ at the model wavelength "
                f"{model_wavelength_angstrom} Å (d < λ/2) and were dropped"
            )
        two_theta, intensity = two_theta[reachable], intensity[reachable]
    if two_theta.size < 2:
        raise ValueError(
            f"{pattern.source}: fewer than 2 points remain after converting {measured_wavelength} Å to "
            f"{model_wavelength_angstrom} Å; check both wavelengths"
        )

    width = (two_theta_max_deg - two_theta_min_deg) / n_bins
    low, high = float(two_theta[0]), float(two_theta[-1])
    tolerance = 1e-9
    first = max(0, math.ceil((low - two_theta_min_deg) / width - 0.5 - tolerance))
    end = min(n_bins, math.floor((high - two_theta_min_deg) / width - 0.5 + tolerance) + 1)
    if end <= first:
        raise ValueError(
            f"{pattern.source}: measured range {low:.2f}-{high:.2f} deg (at {model_wavelength_angstrom} Å) does "
            f"not cover any bin centre of the model grid {two_theta_min_deg}-{two_theta_max_deg} deg; check the "
            "wavelength and the grid"
        )

    warnings += _raw_signal_warnings(pattern)

    centres = two_theta_min_deg + (np.arange(n_bins) + 0.5) * width
    bin_index = np.floor((two_theta - two_theta_min_deg) / width).astype(np.int64)
    on_grid = (bin_index >= 0) & (bin_index < n_bins)
    counts = np.bincount(bin_index[on_grid], minlength=n_bins)
    sums = np.bincount(bin_index[on_grid], weights=intensity[on_grid], minlength=n_bins)
    values = np.zeros(n_bins, dtype=np.float64)
    window = slice(first, end)
    averaged = counts[window] >= 2
    values[window] = np.where(
        averaged,
        sums[window] / np.maximum(counts[window], 1),
        np.interp(centres[window], two_theta, intensity),
    )
    n_interpolated = int(np.count_nonzero(~averaged))
    if n_interpolated > 0.1 * (end - first):
        warnings.append(
            f"{n_interpolated} of {end - first} window bins were interpolated: the measurement step is "
            f"coarser than the grid's {width:.4f} deg bins there"
        )

    values[window] = np.clip(values[window], 0.0, None)
    peak = float(values[window].max())
    if peak <= 0 or peak == float(values[window].min()):
        raise MeasuredSignalError(
            pattern.source,
            f"{'no positive intensity' if peak <= 0 else 'a flat line'} inside the model's 2θ range "
            f"{two_theta_min_deg:g}-{two_theta_max_deg:g} deg (measured {low:.2f}-{high:.2f} deg at "
            f"{model_wavelength_angstrom} Å): nothing the model could identify",
            "Check the wavelength (--wavelength on the command line, wavelength_angstrom= in Python) and that "
            "the second column holds the measured intensities",
        )
    scale = float(np.quantile(values[window], 0.99))
    if scale <= 0:
        # Fewer than 1% of the bins hold signal: the training normalisation (A.1) is undefined.
        warnings.append(
            f"only {int(np.count_nonzero(values[window]))} of {end - first} in-window bins hold signal: the "
            "99th percentile used to normalise in training (A.1) is 0, so the pattern was divided by its "
            "maximum instead; a prediction on so sparse a pattern is unreliable"
        )
        scale = peak
    values[window] /= scale

    window_deg = (end - first) * width
    grid_deg = two_theta_max_deg - two_theta_min_deg
    if window_deg < MIN_TRAINING_WINDOW_DEG or window_deg < MIN_GRID_COVERAGE_FRACTION * grid_deg:
        warnings.append(
            f"measured range covers only {100 * window_deg / grid_deg:.0f}% of the model grid "
            f"({window_deg:.1f} of {grid_deg:.1f} deg); the paper's training windows were at least "
            f"{MIN_TRAINING_WINDOW_DEG:.0f} deg wide, {100 * MIN_GRID_COVERAGE_FRACTION:.0f}% of its grid (A.1)"
        )
    window_start, window_end = two_theta_min_deg + first * width, two_theta_min_deg + end * width
    if window_start > MAX_TRAINING_WINDOW_START_DEG or window_end < MIN_TRAINING_WINDOW_END_DEG:
        warnings.append(
            f"window {window_start:.1f}-{window_end:.1f} deg lies outside the paper's training windows "
            f"(start <= {MAX_TRAINING_WINDOW_START_DEG:.0f} deg, end >= {MIN_TRAINING_WINDOW_END_DEG:.0f} deg, "
            "A.1): the model never saw that part of the grid unmeasured"
        )
    empty_fraction = float(np.mean(values[window] <= 0))
    if empty_fraction > MOSTLY_EMPTY_FRACTION:
        warnings.append(
            f"pattern is mostly empty: {100 * empty_fraction:.0f}% of the in-window bins are zero after "
            "clipping negatives (no data, padding or over-subtracted background)"
        )
    return GriddedPattern(values.astype(np.float32), (first, end), warnings)
