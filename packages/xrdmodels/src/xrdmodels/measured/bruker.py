"""Bruker ``.brml`` (zip of ``RawData*.xml``), binary ``.raw`` versions 3 (``RAW1.01``) and 4
(``RAW4.00``), and the ``.uxd`` text export (DIFFRAC-AT / XCH).

The binary layouts follow the published descriptions: RAW1.01 the DIFFRAC-plus XCH v5 manual, appendix A,
as transcribed in xylib's ``bruker_raw.cpp``; RAW4.00 has no published specification, its layout is the
one xylib and GSAS-II read. Versions 1 and 2 (DIFFRAC-AT) are recognised and refused: XCH converts them to
UXD, which is read. UXD: ``_KEY=value`` lines (file-wide ones first: ``_WL1``, ``_WL2``, ``_WLRATIO``), ``;``
comments, then one or more ranges, each its ``_KEY=value`` lines (``_DRIVE``, ``_START``, ``_STEPSIZE``, ...)
and a marker opening its data: ``_2THETACOUNTS`` / ``_2THETACPS`` (rows of position and intensity) or
``_COUNTS`` / ``_CPS`` (intensities only, several to a line, at ``_START`` + i ``_STEPSIZE``), as xylib's
``uxd.cpp`` reads it. The first range whose drive moves 2θ is read; rocking curves and pole figures are not
powder patterns.
"""

from __future__ import annotations

import re
import struct
import xml.etree.ElementTree as ET
import zipfile
from pathlib import Path

import numpy as np

from .common import (
    BOM_AND_BLANKS,
    SEPARATORS,
    BoundedArchive,
    FileFormat,
    MeasuredFormatError,
    MeasuredPattern,
    add_reader_note,
    columns_to_pattern,
    counts_from_lines,
    float_or_none,
    numbered,
    parse_numeric_rows,
    parse_xml,
    text_head,
    wavelength_metadata,
    xml_child,
    xml_descendants,
    zip_member_names,
)

_BRML_RAW_DATA = re.compile(r"RawData\d*\.xml$")
_RAW_UNSUPPORTED = (b"RAW ", b"RAW2")
"""First bytes of RAW versions 1 and 2 (DIFFRAC-AT), recognised so that they are refused clearly."""

# --------------------------------------------------------------------------------------------------------
# Bruker BRML
# --------------------------------------------------------------------------------------------------------

_XSI_TYPE = "{http://www.w3.org/2001/XMLSchema-instance}type"


def _xml_value(root: ET.Element, name: str) -> float | None:
    """First ``<name Value="..."/>`` or ``<name>...</name>`` number anywhere below root."""
    for node in xml_descendants(root, name):
        value = (
            float_or_none(node.get("Value")) if node.get("Value") is not None else float_or_none(node.text)
        )
        if value is not None:
            return value
    return None


def _view_int(path: Path, view: ET.Element, name: str, default: int) -> int:
    """A ``RawDataView``'s integer attribute (``Start``, ``Length``), or a format error naming it."""
    text = view.get(name)
    try:
        return default if text is None else int(text)
    except ValueError:
        raise MeasuredFormatError(
            path, f"a <RawDataView> has {name}={text!r}, not a whole number", "The BRML raw data are corrupt"
        ) from None


def read_brml(path: Path, max_bytes: int) -> MeasuredPattern:
    """Bruker BRML: zip; ``Experiment*/DataContainer.xml`` lists ``RawData*.xml``; the measured
    ``DataRoute`` holds one comma-separated ``Datum`` per point whose columns are located from
    ``DataViews`` (``MeasuredTime``, the varying view's ``TwoTheta`` field, the recorded counts). Intensity =
    counts / measured time (counts per second). The ``AbsorptionFactor`` column records an absorber already
    applied to the stored counts: a public BRML reader reports, from a real file of its own (not in this repo),
    a stored series that runs smoothly across a switch of it (1 to 8.3 over a strong peak) with counts / factor
    whole numbers, and GSAS-II's BRML importer does not apply it
    either. A recorded view of more than one channel (a position-sensitive detector's frame per point) is
    refused; of several scans (``RawData*.xml``) the first is read and the others named in the notes."""
    try:
        with zipfile.ZipFile(path) as zipped:
            archive = BoundedArchive(path, zipped, max_bytes)
            names = zipped.namelist()
            listed: list[str] = []
            for container in sorted(n for n in names if n.endswith("DataContainer.xml")):
                root = parse_xml(path, archive.read(container), container)
                listed += [(s.text or "").strip() for s in xml_descendants(root, "string")]
            raw_names = [n for n in listed if n in names] or sorted(
                (n for n in names if _BRML_RAW_DATA.search(n)), key=numbered
            )
            if not raw_names:
                raise MeasuredFormatError(path, "no RawData*.xml member", "Is this a Bruker BRML file?")
            raw_root = parse_xml(path, archive.read(raw_names[0]), raw_names[0])
            extra_roots = [
                parse_xml(path, archive.read(n), n) for n in names if n.endswith("MeasurementContainer.xml")
            ]
    except zipfile.BadZipFile:
        raise MeasuredFormatError(
            path, "not a valid zip archive", "A .brml file is a zip; export it again"
        ) from None

    routes = xml_descendants(raw_root, "DataRoute")
    measured = [r for r in routes if r.get("RouteFlag") == "Measured"]
    if len(measured) != 1 and len(routes) != 1:
        raise MeasuredFormatError(
            path,
            f"{len(routes)} DataRoutes and {len(measured)} flagged 'Measured'",
            "Expected one measured route",
        )
    route = measured[0] if len(measured) == 1 else routes[0]
    columns: dict[str, int] = {}
    recorded: list[tuple[int, int, bool]] = []  # (start, channels, holds counts) of each recorded view
    for view in xml_descendants(route, "RawDataView"):
        start = _view_int(path, view, "Start", 0)
        kind = view.get(_XSI_TYPE, "")
        logic = view.get("LogicName", "")
        if logic == "MeasuredTime":
            columns[logic] = start
        elif kind.endswith("VaryingRawDataView"):
            for offset, definition in enumerate(xml_descendants(view, "FieldDefinitions")):
                axis = definition.get("AxisId") or definition.get("FieldName") or ""
                if axis == "TwoTheta":
                    columns["TwoTheta"] = start + offset
        elif kind.endswith("RecordedRawDataView"):
            # Beside the counter a route may record other channels (temperature, humidity): the counter is the
            # view whose unit is counts or whose recording is a counter, else the first.
            counts = any(u.get("Base", "").lower() == "counts" for u in xml_descendants(view, "Unit")) or any(
                "counter" in r.get("LogicName", "").lower() for r in xml_descendants(view, "Recording")
            )
            recorded.append((start, _view_int(path, view, "Length", 1), counts))
    if recorded:
        start, channels, _ = next((r for r in recorded if r[2]), recorded[0])
        if channels != 1:
            raise MeasuredFormatError(
                path,
                f"{raw_names[0]} records {channels} detector channels per point (a position-sensitive "
                "detector's frame at each point, or a still scan's channels; not read)",
                "Export the integrated 2θ scan (DIFFRAC.EVA: export as .xy or .raw) and read that",
            )
        columns["Counts"] = start
    if "Counts" not in columns:
        raise MeasuredFormatError(
            path, "no recorded-counts column in DataViews", "The BRML raw data are incomplete"
        )
    datums = xml_descendants(route, "Datum")
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
    metadata: dict[str, str] = {"intensity_unit": "counts"}
    if "MeasuredTime" in columns and np.all(data[:, columns["MeasuredTime"]] > 0):
        intensity /= data[:, columns["MeasuredTime"]]
        metadata["intensity_unit"] = "counts per second"
    if "TwoTheta" in columns:
        two_theta = data[:, columns["TwoTheta"]]
    else:
        axes = [a for a in xml_descendants(route, "ScanAxisInfo") if a.get("AxisId") == "TwoTheta"]
        start = (
            float_or_none(xml_child(axes[0], "Start").text)
            if axes and xml_child(axes[0], "Start") is not None
            else None
        )
        step = (
            float_or_none(xml_child(axes[0], "Increment").text)
            if axes and xml_child(axes[0], "Increment") is not None
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
    wavelength, wave_meta = wavelength_metadata(kalpha1, kalpha2, ratio)
    metadata.update(wave_meta)
    metadata["raw_data_member"] = raw_names[0]
    if len(raw_names) > 1:
        add_reader_note(
            metadata,
            f"the file holds {len(raw_names)} scans ({', '.join(raw_names)}); the first was read: export a scan "
            "on its own to read another",
        )
    return columns_to_pattern(path, np.column_stack([two_theta, intensity]), wavelength, metadata)


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
    wavelength, metadata = wavelength_metadata(kalpha1, kalpha2, ratio)
    metadata.update(
        raw_version="3 (RAW1.01)",
        ranges_in_file=str(n_ranges),
        time_per_step_s=repr(time_per_step),
        sample=_cstring(data[326:386]),
    )
    if n_ranges > 1:
        add_reader_note(
            metadata,
            f"the file holds {n_ranges} ranges; the first was read: export a range on its own to read another",
        )
    two_theta = start + step * np.arange(steps)
    return columns_to_pattern(path, np.column_stack([two_theta, intensity]), wavelength, metadata)


_RAW4_TWO_THETA_WORDS = ("coupled", "twotheta", "2theta", "detector")
"""Words of the RAW4 scan types that step 2θ: DIFFRAC plus's Locked Coupled, Unlocked Coupled and Detector Scan,
DIFFRAC.SUITE's Coupled TwoTheta/Theta and TwoTheta (a rocking curve, an omega or a still PSD range has none)."""


def _raw4_steps_two_theta(scan_type: str) -> bool:
    name = scan_type.lower().replace(" ", "")
    return any(word in name for word in _RAW4_TWO_THETA_WORDS)


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
            wavelength, wave_meta = wavelength_metadata(kalpha1, kalpha2, ratio)
            metadata.update(wave_meta)
            metadata["anode"] = _cstring(data[offset + 116 : offset + 120])
        offset += length
    scan_types: list[str] = []
    table: np.ndarray | None = None
    read = 0
    while offset + 160 <= len(data):
        (kind,) = _unpack(path, data, "<I", offset, "range header")
        if kind not in (0, 160):
            break
        scan_type = _cstring(data[offset + 32 : offset + 56])
        start, step = _unpack(path, data, "<dd", offset + 72, "range header")
        steps, time_per_step = _unpack(path, data, "<If", offset + 88, "range header")
        record_size, supplementary = _unpack(path, data, "<II", offset + 136, "range header")
        data_offset = offset + 160 + supplementary
        if not steps and not scan_type:
            break  # zero padding after the last range
        scan_types.append(scan_type)
        if table is None and _raw4_steps_two_theta(scan_type):
            intensity = _raw_intensities(path, data, data_offset, steps, record_size)
            metadata.update(scan_type=scan_type, time_per_step_s=repr(time_per_step))
            table = np.column_stack([start + step * np.arange(steps), intensity])
            read = len(scan_types)
        offset = data_offset + steps * (record_size or 4)
    if table is None:
        raise MeasuredFormatError(
            path,
            f"no 2θ range (scan types found: {scan_types or 'none'})",
            "Only ranges that step 2θ (Locked or Unlocked Coupled, Coupled TwoTheta/Theta, TwoTheta, Detector Scan) "
            "are powder patterns",
        )
    if len(scan_types) > 1:
        metadata["ranges_in_file"] = str(len(scan_types))
        add_reader_note(
            metadata,
            f"the file holds {len(scan_types)} ranges ({', '.join(scan_types)}); range {read} was read, the first "
            "2θ one: export a range on its own to read another",
        )
    return columns_to_pattern(path, table, wavelength, metadata)


def read_bruker_raw(path: Path, max_bytes: int) -> MeasuredPattern:
    """Bruker binary RAW, version 3 or 4 by the magic (``max_bytes`` was checked against the file's size by
    the caller)."""
    data = path.read_bytes()
    if data.startswith(b"RAW1.01"):
        return _read_raw_v3(path, data)
    if data.startswith(b"RAW4.00"):
        return _read_raw_v4(path, data)
    if data.startswith(_RAW_UNSUPPORTED):
        raise MeasuredFormatError(
            path, "Bruker RAW version 1/2 (DIFFRAC-AT) is not supported", "Convert it to .xy or .brml"
        )
    raise MeasuredFormatError(
        path, f"unknown header {data[:7]!r}", "A Bruker RAW file starts with 'RAW1.01' or 'RAW4.00'"
    )


# --------------------------------------------------------------------------------------------------------
# Bruker UXD (text)
# --------------------------------------------------------------------------------------------------------

_UXD_KEY_VALUE = re.compile(r"_([A-Za-z0-9_-]+?)\s*=\s*(.*)")
_UXD_MARKER = re.compile(r"_(2THETA)?(COUNTS|CPS)\s*(?:=.*)?", flags=re.IGNORECASE)
_UXD_SIGNATURE = re.compile(
    r"^[ \t]*_(FILEVERSION|DRIVE|STEPSIZE|2THETACOUNTS|2THETACPS)\b", flags=re.MULTILINE
)
_UXD_TWO_THETA_DRIVES = ("COUPLED", "UNLOCKED COUPLED", "LOCKED COUPLED", "2THETA", "TWOTHETA", "DETECTOR")
"""``_DRIVE`` values of ranges that scan 2θ (a range without ``_DRIVE`` is taken as one)."""
_UXD_MAX_HEADER_LINES = 200


def _uxd_float(path: Path, keys: dict[str, str], key: str) -> float | None:
    if key not in keys:
        return None
    value = float_or_none(keys[key])
    if value is None:
        raise MeasuredFormatError(path, f"_{key}={keys[key]!r} is not a number", "Check the UXD header")
    return value


def _half_last_digit(number: str) -> float:
    """Half a unit of the last printed digit of a number written as text (0.05 for "119.3", 0.5 for "100",
    0.005 for "1.23e1"): how far the value it stands for may lie from it."""
    mantissa, _, exponent = number.lower().partition("e")
    try:
        power = int(exponent) if exponent else 0
    except ValueError:
        power = 0
    return 0.5 * 10.0 ** (power - len(mantissa.partition(".")[2]))


def read_uxd(path: Path, max_bytes: int) -> MeasuredPattern:
    """Bruker UXD text (module docstring); ``max_bytes`` was checked against the file's size by the caller."""
    seen: dict[str, str] = {}  # every key so far, later values replacing earlier ones
    range_keys: dict[str, str] = {}  # the keys since the last data block: the current range's
    header: list[str] = []
    drives: list[str] = []
    rows: list[tuple[int, str]] = []
    chosen: dict[str, str] | None = None
    paired, unit = False, "counts"
    ended, later_ranges = False, 0
    with path.open(encoding="latin-1") as handle:
        for line_no, raw in enumerate(handle, start=1):
            line = raw.strip(BOM_AND_BLANKS)
            if not line:
                continue
            if line.startswith(";"):
                if len(header) < _UXD_MAX_HEADER_LINES:
                    header.append(line.lstrip("; "))
                continue
            if not line.startswith("_"):
                if chosen is not None and not ended:
                    rows.append((line_no, line))
                continue
            if chosen is not None:  # the range read has ended; later ones are only counted
                ended = True
                later_ranges += bool(_UXD_MARKER.fullmatch(line))
                continue
            marker = _UXD_MARKER.fullmatch(line)
            if marker:
                drive = range_keys.get("DRIVE", "").upper()
                drives.append(drive or "none given")
                if not drive or drive in _UXD_TWO_THETA_DRIVES:
                    chosen, paired = range_keys, marker.group(1) is not None
                    unit = "counts per second" if marker.group(2).upper() == "CPS" else "counts"
                range_keys = {}
                continue
            key_value = _UXD_KEY_VALUE.fullmatch(line)
            if key_value:
                key, value = key_value.group(1).upper(), key_value.group(2).strip().strip("'\"")
                seen[key] = range_keys[key] = value
    if chosen is None:
        raise MeasuredFormatError(
            path,
            f"no 2θ range (drives found: {', '.join(drives) or 'no data block at all'})",
            "A powder pattern is a range driven COUPLED, 2THETA or DETECTOR, with a _2THETACOUNTS, _2THETACPS, "
            "_COUNTS or _CPS block",
        )
    if not rows:
        raise MeasuredFormatError(path, "the 2θ range holds no data rows", "Is this a complete UXD file?")
    start = _uxd_float(path, chosen, "START")
    if start is None:
        start = _uxd_float(path, chosen, "2THETA")
    step = _uxd_float(path, chosen, "STEPSIZE")
    axis_from_header = False
    if paired:
        data = parse_numeric_rows(path, rows, "UXD data")
        if start is not None and step is not None and step > 0 and data.shape[1] >= 2:
            # Converters such as Bruker's XCH print the 2θ column to 4 significant digits (119.3, 119.3,
            # 119.4 at a 0.0156° step): where every printed angle is the header's start + i·step rounded as
            # printed, the header's axis is the measured one.
            grid = start + step * np.arange(data.shape[0])
            printed = np.array([_half_last_digit(SEPARATORS.split(text.strip())[0]) for _, text in rows])
            if printed.size == grid.size and np.all(np.abs(data[:, 0] - grid) <= printed + 1e-6 * step):
                axis_from_header = bool(np.any(data[:, 0] != grid))
                data[:, 0] = grid
    else:
        if start is None or step is None or not step > 0:
            raise MeasuredFormatError(
                path,
                "a _COUNTS/_CPS range without _START (or _2THETA) and a positive _STEPSIZE",
                "The range needs both to place its intensities",
            )
        intensity = counts_from_lines(path, rows, "UXD data")
        data = np.column_stack([start + step * np.arange(intensity.size), intensity])
    wavelength, metadata = _uxd_wavelength(path, seen)
    if later_ranges:
        add_reader_note(
            metadata,
            f"the file holds {len(drives) + later_ranges} ranges; range {len(drives)} was read, the first 2θ "
            "one: export a range on its own to read another",
        )
    if axis_from_header:
        metadata["uxd_two_theta"] = (
            "_START + i·_STEPSIZE (the file's 2θ column, printed rounded, agrees with it)"
        )
    metadata.update(intensity_unit=unit, uxd_range=f"{len(drives)} ({drives[-1]})")
    for key in ("SAMPLE", "ANODE", "STEPTIME"):
        if key in seen:
            metadata[f"uxd_{key.lower()}"] = seen[key]
    if header:
        metadata["header"] = "\n".join(header)
    return columns_to_pattern(path, data, wavelength, metadata)


def _uxd_wavelength(path: Path, keys: dict[str, str]) -> tuple[float | None, dict[str, str]]:
    """Kα1, Kα2 and their ratio from ``_WL1``, ``_WL2``, ``_WLRATIO`` (Å; nm where ``_WL_UNIT`` says so)."""
    scale = 10.0 if "NM" in keys.get("WL_UNIT", "").upper() else 1.0
    kalpha1, kalpha2, ratio = (_uxd_float(path, keys, key) for key in ("WL1", "WL2", "WLRATIO"))
    return wavelength_metadata(
        kalpha1 * scale if kalpha1 is not None else None,
        kalpha2 * scale if kalpha2 is not None else None,
        ratio,
    )


def sniff_uxd(path: Path, head: bytes) -> bool:
    """A ``_FILEVERSION``, ``_DRIVE``, ``_STEPSIZE`` or ``_2THETACOUNTS``/``_2THETACPS`` line."""
    text = text_head(head)
    return text is not None and _UXD_SIGNATURE.search(text) is not None


def sniff_brml(path: Path, head: bytes) -> bool:
    """A zip holding a ``RawData<k>.xml`` member."""
    return any(_BRML_RAW_DATA.search(name) for name in zip_member_names(path, head))


def sniff_bruker_raw(path: Path, head: bytes) -> bool:
    """The ``RAW1.01``/``RAW4.00`` magic, or that of versions 1/2 (refused with a clear message)."""
    return head.startswith((b"RAW1.01", b"RAW4.00", *_RAW_UNSUPPORTED))


BRML = FileFormat(name="brml", extensions=("brml",), sniff=sniff_brml, read=read_brml)
BRUKER_RAW = FileFormat(name="bruker_raw", extensions=("raw",), sniff=sniff_bruker_raw, read=read_bruker_raw)
UXD = FileFormat(name="uxd", extensions=("uxd",), sniff=sniff_uxd, read=read_uxd)
