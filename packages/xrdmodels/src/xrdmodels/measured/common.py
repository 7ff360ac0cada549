"""What every measured-pattern reader shares: the pattern type, the errors, the format record, wavelength
metadata, size limits and the parsing helpers (numeric text rows, bounded zip members, namespace-free XML).

A format module (``text``, ``xrdml``, ``gsas``, ``rigaku``, ``bruker``) builds on these and exports one
:class:`FileFormat` per format; :mod:`xrdmodels.measured.registry` lists them in sniffing order.
"""

from __future__ import annotations

import io
import re
import xml.etree.ElementTree as ET
import zipfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..config import CU_KA_ANGSTROM

DEFAULT_MAX_PATTERN_BYTES = 64 * 2**20
"""Largest file (or sum of zip members read) accepted as one pattern: 64 MiB, about 3 million lines of
'2θ intensity' text, far beyond a powder scan; it bounds the memory of the XML readers, which need several
times the file size."""

WAVELENGTH_PLAUSIBLE_ANGSTROM = (0.05, 5.0)
"""Open interval of X-ray wavelengths (Å) a file or header may state; anything else is a unit mistake."""
WEIGHTED_MEAN = "K-alpha weighted mean"
KALPHA1 = "K-alpha1"
STATED = "stated"
ANODE_NAMED = "K-alpha weighted mean of the anode the header names"
LINE_NAMED = "the line of the anode the header names"
LINES_ANGSTROM = {
    # pymatgen's table (pymatgen.analysis.diffraction.xrd.WAVELENGTHS, which xrdsynth's bank uses; the tests
    # compare): Kα the weighted doublet, then Kα1, Kα2 and Kβ1.
    "CuKa": CU_KA_ANGSTROM,
    "CuKa1": 1.54056,
    "CuKa2": 1.54439,
    "CuKb1": 1.39222,
    "MoKa": 0.71073,
    "MoKa1": 0.70930,
    "MoKa2": 0.71359,
    "MoKb1": 0.63229,
    "CoKa": 1.79026,
    "CoKa1": 1.78896,
    "CoKa2": 1.79285,
    "CoKb1": 1.62079,
    "FeKa": 1.93735,
    "FeKa1": 1.93604,
    "FeKa2": 1.93998,
    "FeKb1": 1.75661,
    "CrKa": 2.29100,
    "CrKa1": 2.28970,
    "CrKa2": 2.29361,
    "CrKb1": 2.08487,
    "AgKa": 0.560885,
    "AgKa1": 0.559421,
    "AgKa2": 0.563813,
    "AgKb1": 0.497082,
}
"""X-ray tube lines in Å by name (``CuKa``, ``MoKa1``, ...), for ``--wavelength`` and for headers that name an
anode without a number."""


class MeasuredFormatError(ValueError):
    """A measured-pattern file could not be read; the message names the file, the problem and a fix."""

    def __init__(self, source: str | Path, problem: str, fix: str) -> None:
        super().__init__(f"{source}: {problem}. {fix}")
        self.source = str(source)


class MeasuredSignalError(MeasuredFormatError):
    """The file was read but holds no measurable diffraction signal (all zero, flat, peaks pointing down), so a
    prediction on it would be meaningless."""


@dataclass
class MeasuredPattern:
    """One measured powder pattern.

    Attributes:
        two_theta_deg: scattering angles 2θ in degrees, float64, strictly ascending.
        intensity: intensities (counts, counts per second or arbitrary units as stored), float64.
        wavelength_angstrom: the wavelength in Å given by the file, or None; see the
            :mod:`xrdmodels.measured` docstring and ``metadata["wavelength_kind"]`` for which line it is.
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
            WAVELENGTH_PLAUSIBLE_ANGSTROM[0] < self.wavelength_angstrom < WAVELENGTH_PLAUSIBLE_ANGSTROM[1]
        ):
            raise MeasuredFormatError(
                self.source,
                f"wavelength {self.wavelength_angstrom} Å is outside the plausible X-ray range "
                f"{WAVELENGTH_PLAUSIBLE_ANGSTROM} Å",
                "Give the wavelength in ångström",
            )


Reader = Callable[[Path, int], MeasuredPattern]
"""``reader(path, max_bytes)``: the file's pattern. ``read_pattern`` has checked the file's own size
against ``max_bytes``; a reader that unpacks more than the file (zip members) keeps that within it too."""


@dataclass(frozen=True)
class FileFormat:
    """Everything :func:`xrdmodels.measured.read_pattern` needs to know about one file format.

    Attributes:
        name: the reader key, recorded in ``metadata["format"]`` and accepted by ``--format``/``format=``.
        extensions: file extensions (without the dot) that select this format when the content does not.
        sniff: ``sniff(path, head)`` is True when the first 4096 bytes ``head`` can only be this format;
            None for a format without a distinctive signature, chosen by extension only.
        read: the :data:`Reader`.
        aliases: other names ``--format``/``format=`` accepts.
    """

    name: str
    extensions: tuple[str, ...]
    sniff: Callable[[Path, bytes], bool] | None
    read: Reader
    aliases: tuple[str, ...] = ()

    @property
    def names(self) -> tuple[str, ...]:
        """Every name that selects this format: the key, its extensions and aliases."""
        return tuple(dict.fromkeys((self.name, *self.extensions, *self.aliases)))


# --------------------------------------------------------------------------------------------------------
# Wavelengths
# --------------------------------------------------------------------------------------------------------

NUMBER_PATTERN = r"(\d+\.\d*|\.\d+|\d+)"
"""Regular expression of an unsigned decimal number, captured as group 1."""


def wavelength_metadata(
    kalpha1: float | None, kalpha2: float | None = None, ratio: float | None = None
) -> tuple[float | None, dict[str, str]]:
    """The effective wavelength from the Kα lines a file states, and the metadata saying which it is
    (see the :mod:`xrdmodels.measured` docstring): the doublet centroid with a non-zero ratio, else Kα1."""
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
        meta["wavelength_kind"] = WEIGHTED_MEAN
        return mean, meta
    meta["wavelength_kind"] = KALPHA1
    return kalpha1, meta


def stated_wavelength(value: float | None) -> tuple[float | None, dict[str, str]]:
    """A single wavelength the file states (synchrotron, text header), or None when absent or not > 0."""
    if value is None or not value > 0:
        return None, {}
    return value, {"wavelength_kind": STATED}


def wavelength_from_header(lines: list[str]) -> tuple[float | None, dict[str, str]]:
    """Find a wavelength stated in free-text header/comment lines: ``Ka1=``, ``K-Alpha1 wavelength,`` (a
    PANalytical CSV export) with Kα2 and the ``Ratio K-Alpha2/K-Alpha1`` beside it, else ``wavelength``,
    ``lambda`` or ``λ`` with a value, in Å unless nm is stated (``Wavelength (nm): 0.154056``, ``[nm]``,
    ``0.154 nm``); else, where the header names the anode (``Anode: "Co"``, ``Cu K-alpha``), that anode's Kα mean,
    or the line it names (``Mo Ka1``)."""
    text = "\n".join(lines)

    def find(pattern: str) -> float | None:
        match = re.search(pattern, text, flags=re.IGNORECASE)
        if match is None:
            return None
        value = float(match.group("value"))
        if re.search(r"\bnm\b", match.group("unit_before") or "", flags=re.IGNORECASE) or match.group(
            "unit_after"
        ):
            value *= 10.0
        low, high = WAVELENGTH_PLAUSIBLE_ANGSTROM
        return value if low < value < high else None

    kalpha = r"k\s*-?\s*(?:a|α|alpha)\s*-?\s*"
    # A number that ends where a word would go on ("wavelength 2theta" states no wavelength), unless that word is
    # a unit (1.5406A, 1.5406Ang, 0.154nm); a full stop may end it.
    number = r"(?P<value>\d+\.\d*|\.\d+|\d+)(?=\s|$|[^\w.]|\.(?!\d)|nm\b|å|a\b|ang)\s*(?P<unit_after>nm\b)?"
    # "Ka1 = 1.5406", or a PANalytical CSV's "K-Alpha1 wavelength,1.5405980": a comma only after the word, as
    # "Cu Ka1,2" names the doublet.
    # A unit before the value in parentheses or brackets: "Wavelength (nm):", "Wavelength [Å]:".
    unit_before = r"(?:[(\[](?P<unit_before>[^)\]]*)[)\]])?"
    value = r"(?:\s*wavelength\s*" + unit_before + r"\s*[=:,]|\s*[=:])\s*" + number
    kalpha1 = find(kalpha + "1" + value)
    if kalpha1 is not None:
        kalpha2 = find(kalpha + "2" + value)
        ratio_match = re.search(
            r"ratio(?:\s*" + kalpha + r"2\s*/\s*" + kalpha + r"1)?\s*[=:,]\s*" + NUMBER_PATTERN,
            text,
            flags=re.IGNORECASE,
        )
        ratio = float(ratio_match.group(1)) if ratio_match else None
        return wavelength_metadata(kalpha1, kalpha2, ratio)
    stated = stated_wavelength(find(r"(?:wavelength|lambda|λ)\s*" + unit_before + r"\s*[=:,]?\s*" + number))
    if stated[0] is not None:
        return stated
    # No number, but the anode named ("Anode: \"Co\"" in a DIFFRAC.EVA export, "Anode material,Mo", "Cu K-alpha"):
    # its Kα mean, which is what a lab tube without a monochromator gives; where the header names one line of it
    # ("Mo Ka1 radiation", "Cu K-alpha1 (Ge monochromator)"), that line: its digit written against the name, with
    # nothing numeric after it ("Cu Ka 2-Theta", "Cu Ka 2 kW" and "Ka 1.5418" name no line; "Cu Ka1,2", "Ka12" and
    # "Ka1+Ka2" name the doublet: the mean). Kα2 stripped from the data leaves Kα1.
    anode = re.search(
        r"\banode(?:\s+material)?\s*[:=,]?\s*[\"']?(?P<anode>cu|co|mo|fe|cr|ag)\b"
        r"|\b(?P<tube>cu|co|mo|fe|cr|ag)[\s-]*k\s*-?\s*(?:alpha|α|a)"
        r"(?:-?(?:12|1\s*(?:[,+/&]|and)\s*(?:k?\s*-?\s*(?:alpha|α|a)\s*-?\s*)?2)"
        r"|-?(?P<line>[12])(?!\d|\.\d|[θ°-])(?P<stripped>\s*(?:stripped|removed|subtracted|eliminated))?)?(?![b-z])",
        text,
        flags=re.IGNORECASE,
    )
    if anode is None:
        return None, {}
    name = (anode.group("anode") or anode.group("tube")).capitalize()
    if anode.group("line"):
        number = "1" if anode.group("stripped") else anode.group("line")
        line = f"{name}Ka{number}"
        return LINES_ANGSTROM[line], {"wavelength_kind": LINE_NAMED, "anode": name, "line": line}
    return LINES_ANGSTROM[f"{name}Ka"], {"wavelength_kind": ANODE_NAMED, "anode": name}


# --------------------------------------------------------------------------------------------------------
# Sizes and containers
# --------------------------------------------------------------------------------------------------------


def mib(n_bytes: int) -> str:
    """A byte count as MiB for messages."""
    return f"{n_bytes / 2**20:.3g} MiB"


def size_limit_fix(max_bytes: int) -> str:
    """The fix part of a size-limit message: both ways to raise the limit."""
    return (
        f"If this really is one pattern, raise the limit: --max-file-mb on the command line (now "
        f"{max_bytes / 2**20:.3g}), max_bytes= in Python"
    )


ZIP_MAGIC = b"PK\x03\x04"


def zip_member_names(path: Path, head: bytes) -> list[str]:
    """The member names of a zip file (by its first bytes ``head``), empty for anything else."""
    if not head.startswith(ZIP_MAGIC):
        return []
    try:
        with zipfile.ZipFile(path) as archive:
            return archive.namelist()
    except zipfile.BadZipFile:
        return []


BOM_AND_BLANKS = "\ufeff\xef\xbb\xbf \t\r\n"
"""What may precede a text file's first record: a byte-order mark (as UTF-8 or as Latin-1) and blanks."""


def text_head(head: bytes) -> str | None:
    """The first bytes of a file as text for a signature search, None for a zip archive: the names and
    stored bytes of its members are not the file's own text."""
    if head.startswith(ZIP_MAGIC):
        return None
    return head.decode("latin-1")


class BoundedArchive:
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
                f"member {name} unpacks to {mib(size)}; the members read for one pattern may unpack to at "
                f"most {mib(self.max_bytes)} in all",
                size_limit_fix(self.max_bytes),
            )
        self.used += size

    def read(self, name: str) -> bytes:
        """The member's bytes, counted against the budget."""
        self._claim(name)
        return self.archive.read(name)

    def text_lines(self, name: str) -> io.TextIOWrapper:
        """The member as text lines (UTF-8, BOM dropped, bad bytes replaced), read as it is iterated."""
        self._claim(name)
        return io.TextIOWrapper(self.archive.open(name), encoding="utf-8-sig", errors="replace")


def numbered(name: str) -> tuple[int, ...]:
    """Sort key of a member name by the numbers in it (``Data10`` after ``Data2``)."""
    return tuple(int(n) for n in re.findall(r"\d+", name))


# --------------------------------------------------------------------------------------------------------
# Numeric text rows
# --------------------------------------------------------------------------------------------------------

SEPARATORS = re.compile(r"[,;\s]+")
"""Column separators of numeric text rows: commas, semicolons and white space."""
READER_NOTES = "reader_notes"
"""``metadata`` key of what a reader changed or left out while reading a file (one note per line), which the
prediction repeats as warnings."""
_ROWS_PER_BLOCK = 16384


def add_reader_note(metadata: dict[str, str], note: str) -> None:
    """Append one note (one line) to ``metadata["reader_notes"]``."""
    metadata[READER_NOTES] = "\n".join(filter(None, [metadata.get(READER_NOTES, ""), note]))


_TO_SPACES = str.maketrans(",;\t", "   ")
_DECIMAL_COMMA_TO_SPACES = str.maketrans(",;\t", ".  ")


class NumericRows:
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
        self._separators = _TO_SPACES

    def use_decimal_commas(self) -> None:
        """Read commas as decimal points (columns then separated by semicolons, tabs or spaces only); set before
        the first row is added."""
        self._separators = _DECIMAL_COMMA_TO_SPACES

    def add(self, line_no: int, text: str) -> None:
        """One data line (1-based ``line_no`` for messages)."""
        self.lines.append(text.translate(self._separators))
        self.line_numbers.append(line_no)
        if len(self.lines) >= _ROWS_PER_BLOCK:
            self._flush()

    @property
    def empty(self) -> bool:
        """Nothing added yet."""
        return not self.blocks and not self.lines

    def add_text(self, text: str) -> bool:
        """Many '\\n'-separated lines without comments, parsed whole by numpy (no Python object per line).
        False, with nothing added, when they do not parse as rows of the table's width: the caller then
        adds them line by line (:meth:`add`), which finds and names the bad line."""
        self._flush()
        if not text.strip():
            return True
        try:
            block = np.loadtxt(
                io.StringIO(text.translate(self._separators)), dtype=np.float64, ndmin=2, comments=None
            )
        except ValueError:
            return False
        if self.width is not None and block.shape[1] != self.width:
            return False
        self.width = block.shape[1]
        self.blocks.append(block)
        return True

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


def counts_from_lines(path: Path, rows: list[tuple[int, str]], what: str) -> np.ndarray:
    """Every number of (line number, text) rows in order, any number to a row, separated as
    :data:`SEPARATORS`: the counts of a step scan whose angles the header gives. An error names the first row
    that is not numbers."""
    values: list[float] = []
    for line_no, line in rows:
        try:
            values.extend(float(field) for field in SEPARATORS.split(line) if field)
        except ValueError:
            raise MeasuredFormatError(
                path,
                f"line {line_no} of the {what} is not numeric: {line.strip()[:60]!r}",
                "Check the data block",
            ) from None
    return np.array(values)


def parse_numeric_rows(path: Path, rows: list[tuple[int, str]], what: str) -> np.ndarray:
    """Parse (line number, text) rows of separator-delimited numbers into a 2-D float array."""
    table = NumericRows(path, what)
    for line_no, text in rows:
        table.add(line_no, text)
    return table.finish()


def columns_to_pattern(
    path: Path,
    table: np.ndarray,
    wavelength: float | None,
    metadata: dict[str, str],
) -> MeasuredPattern:
    """Check a (rows, 2 or 3) table of 2θ, intensity[, error] and orient it as ascending 2θ."""
    if table.shape[1] not in (2, 3):
        several = (
            " (a line of one angle followed by several consecutive intensities, as some Rigaku and Philips text "
            "exports write, needs converting to one 2θ and one intensity per line)"
        )
        raise MeasuredFormatError(
            path,
            f"{table.shape[1]} column{'s' if table.shape[1] != 1 else ''} per data line",
            "Expected 2θ and intensity, optionally a third column of errors; export those columns only"
            + (several if table.shape[1] > 3 else ""),
        )
    two_theta, intensity = table[:, 0], table[:, 1]
    finite = np.isfinite(two_theta) & np.isfinite(intensity)
    if not finite.all():
        bad = int(np.argmin(finite))
        raise MeasuredFormatError(
            path,
            f"data row {bad + 1} holds a value that is not a number ({two_theta[bad]:g} {intensity[bad]:g}); "
            f"{int(np.count_nonzero(~finite))} row(s) in all",
            "Remove or fix those rows",
        )
    # The scan's direction from most of its steps, so that the first step against it is the one named (a
    # descending scan with one repeated angle used to be reported at its first row; a second scan appended to a
    # first is named where it starts).
    steps = np.diff(two_theta)
    descending = bool(np.median(steps) < 0)
    against = np.flatnonzero(steps >= 0 if descending else steps <= 0)
    if against.size:
        bad = int(against[0]) + 1
        if two_theta[bad] == two_theta[bad - 1]:
            raise MeasuredFormatError(
                path,
                f"2θ {two_theta[bad]:g} occurs twice (data rows {bad} and {bad + 1})",
                "Each angle must be measured once: remove or merge the repeated rows (several scans appended "
                "to one file?)",
            )
        raise MeasuredFormatError(
            path,
            f"the first column is not monotonic (data row {bad + 1}: {two_theta[bad - 1]:g} then "
            f"{two_theta[bad]:g})",
            "The first column must be 2θ in increasing or decreasing order; check the column order",
        )
    if descending:
        two_theta, intensity = two_theta[::-1], intensity[::-1]
    return MeasuredPattern(two_theta, intensity, wavelength, str(path), metadata)


# --------------------------------------------------------------------------------------------------------
# XML without namespaces
# --------------------------------------------------------------------------------------------------------


def local_name(tag: str) -> str:
    """An element tag without its ``{namespace}``."""
    return tag.rsplit("}", 1)[-1]


def xml_children(element: ET.Element, name: str) -> list[ET.Element]:
    """Direct children with local name ``name``."""
    return [child for child in element if local_name(child.tag) == name]


def xml_child(element: ET.Element, name: str) -> ET.Element | None:
    """The first direct child with local name ``name``, or None."""
    found = xml_children(element, name)
    return found[0] if found else None


def xml_descendants(element: ET.Element, name: str) -> list[ET.Element]:
    """Every element below (and including) ``element`` with local name ``name``."""
    return [node for node in element.iter() if local_name(node.tag) == name]


def parse_xml(path: Path, data: bytes, member: str | None = None) -> ET.Element:
    """The root element of XML ``data`` from ``path`` (or its zip ``member``); a clear error if malformed."""
    try:
        return ET.fromstring(data)
    except ET.ParseError as error:
        where = f"member {member} " if member else ""
        raise MeasuredFormatError(
            path,
            f"{where}is not well-formed XML ({error})",
            "The file is truncated or corrupt; export it again",
        ) from None


def float_or_none(text: str | None) -> float | None:
    """``text`` as a float, None when absent or not a number."""
    if text is None:
        return None
    try:
        return float(text.strip())
    except ValueError:
        return None


def floats(path: Path, text: str | None, what: str) -> np.ndarray:
    """White-space-separated numbers of an element's text; a clear error naming ``what`` otherwise."""
    try:
        return np.array((text or "").split(), dtype=np.float64)
    except ValueError:
        raise MeasuredFormatError(path, f"non-numeric values in {what}", "The file is corrupt") from None
