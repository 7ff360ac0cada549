"""Rigaku ``.ras`` (text) and ``.rasx`` (zip of ``Data*/Profile*.txt`` and ``MesurementConditions*.xml``).

Both store data rows ``x intensity attenuation`` and state Kα1/Kα2 but no intensity ratio (see
:func:`_rigaku_wavelength`).
"""

from __future__ import annotations

import re
import zipfile
from pathlib import Path

import numpy as np

from .common import (
    BOM_AND_BLANKS,
    BoundedArchive,
    FileFormat,
    MeasuredFormatError,
    MeasuredPattern,
    NumericRows,
    add_reader_note,
    columns_to_pattern,
    float_or_none,
    local_name,
    numbered,
    parse_numeric_rows,
    parse_xml,
    text_head,
    wavelength_metadata,
    xml_child,
    xml_descendants,
    zip_member_names,
)

_RASX_PROFILE = re.compile(r"(?:.*/)?Data\d+/Profile\d*\.txt")


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
    kalpha1 = float_or_none(values.get("HW_XG_WAVE_LENGTH_ALPHA1") or values.get("WavelengthKalpha1"))
    kalpha2 = float_or_none(values.get("HW_XG_WAVE_LENGTH_ALPHA2") or values.get("WavelengthKalpha2"))
    wave_type = (values.get("WaveType") or values.get("HW_XG_WAVE_TYPE") or "").strip().lower()
    ratio = 0.0 if wave_type in ("ka1", "kalpha1") else 0.5
    wavelength, meta = wavelength_metadata(kalpha1, kalpha2, ratio if kalpha2 else None)
    if kalpha2 and ratio > 0:
        meta["kalpha2_kalpha1_ratio_source"] = "assumed (Rigaku files state no ratio)"
    return wavelength, meta


def _is_two_theta_axis(axis: str) -> bool:
    """A scan axis that steps 2θ (TwoThetaOmega, TwoTheta, 2-Theta, 2θ...), or none stated."""
    return not axis or bool(re.search(r"(?:two|2)\s*-?\s*theta|2θ", axis, flags=re.IGNORECASE))


def _chosen_scan(path: Path, axes: list[str], unit: str) -> int:
    """The first scan of a file whose axis steps 2θ; a file without one is refused, naming its axes."""
    for index, axis in enumerate(axes):
        if _is_two_theta_axis(axis):
            return index
    raise MeasuredFormatError(
        path,
        f"scan axis is {', '.join(map(repr, axes))}, not a 2θ axis"
        if len(axes) == 1
        else f"none of its {len(axes)} {unit}s steps 2θ (axes {', '.join(map(repr, axes))})",
        "Only 2θ (TwoThetaOmega, TwoTheta...) scans are patterns",
    )


def _note_other_scans(metadata: dict[str, str], count: int, read: int, unit: str) -> None:
    """Name the scan read (0-based `read`, counted 1-based in the note) where a file holds `count` of them."""
    if count > 1:
        metadata["scans_in_file"] = str(count)
        add_reader_note(
            metadata,
            f"the file holds {count} {unit}s; {unit} {read + 1} was read, the first that steps 2θ: export a "
            f"{unit} on its own to read another",
        )


def read_ras(path: Path, max_bytes: int) -> MeasuredPattern:
    """Rigaku RAS: per scan ``*KEY "value"`` header lines, then data between ``*RAS_INT_START`` and
    ``*RAS_INT_END``; rows starting with '#' are comments. The first scan whose axis steps 2θ is read.
    ``max_bytes`` was checked against the file's size by the caller."""
    lines = path.read_text(encoding="latin-1").splitlines()
    scans: list[tuple[dict[str, str], list[tuple[int, str]]]] = []
    header: dict[str, str] = {}
    rows: list[tuple[int, str]] = []
    in_data = False
    for line_no, raw in enumerate(lines, start=1):
        line = raw.strip()
        if line.startswith("*RAS_HEADER_START"):
            header = {}
            continue
        if line.startswith("*RAS_INT_START"):
            in_data, rows = True, []
            continue
        if line.startswith("*RAS_INT_END"):
            scans.append((header, rows))
            in_data = False
            continue
        if in_data:
            if line and not line.startswith("#"):
                rows.append((line_no, line))
            continue
        match = re.match(r'^\*(\S+)\s+"?(.*?)"?\s*$', line)
        if match and match.group(1) not in header:
            header[match.group(1)] = match.group(2)
    if in_data:  # a file cut short keeps the rows of its last scan
        scans.append((header, rows))
    # A scan without rows cannot be read, but keeps its place in the count.
    axes = [h.get("MEAS_SCAN_AXIS_X", "") if r else "(no data rows)" for h, r in scans]
    if not any(r for _, r in scans):
        raise MeasuredFormatError(
            path, "no data rows after *RAS_INT_START", "Is this a complete Rigaku RAS file?"
        )
    read = _chosen_scan(path, axes, "scan")
    header, rows = scans[read]
    two_theta, intensity = _rigaku_columns(path, parse_numeric_rows(path, rows, "RAS data"), "RAS data")
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
    _note_other_scans(metadata, len(scans), read, "scan")
    return columns_to_pattern(path, np.column_stack([two_theta, intensity]), wavelength, metadata)


def _rasx_values(path: Path, archive: BoundedArchive, names: list[str], profile: str) -> dict[str, str]:
    """The measurement conditions of a profile's folder (``Data<k>/MesurementConditions<k>.xml``) as leaf
    element texts and Key/Value pairs; empty without that member."""
    folder = profile.rsplit("/", 1)[0]
    conditions = [n for n in names if n.startswith(folder + "/") and "Conditions" in n]
    values: dict[str, str] = {}
    if not conditions:
        return values
    root = parse_xml(path, archive.read(conditions[0]), conditions[0])
    for node in root.iter():
        if node.text and node.text.strip() and len(node) == 0:
            values.setdefault(local_name(node.tag), node.text.strip())
    for pair in xml_descendants(root, "Pair"):
        key, value = xml_child(pair, "Key"), xml_child(pair, "Value")
        if key is not None and value is not None and key.text:
            values.setdefault(key.text.strip(), (value.text or "").strip())
    return values


def read_rasx(path: Path, max_bytes: int) -> MeasuredPattern:
    """Rigaku RASX: zip with ``Data<k>/Profile<k>.txt`` (tab-separated rows ``x intensity attenuation``)
    and ``Data<k>/MesurementConditions<k>.xml`` (sic); the lowest-numbered scan whose axis steps 2θ is read.
    The members read may unpack to ``max_bytes`` in all."""
    try:
        with zipfile.ZipFile(path) as zipped:
            archive = BoundedArchive(path, zipped, max_bytes)
            names = zipped.namelist()
            profiles = sorted((n for n in names if _RASX_PROFILE.fullmatch(n)), key=numbered)
            if not profiles:
                raise MeasuredFormatError(path, "no Data*/Profile*.txt member", "Is this a Rigaku RASX file?")
            # Conditions are read in order until a data set steps 2θ; one that does not parse spoils only itself.
            axes: list[str] = []
            problems: list[MeasuredFormatError] = []
            for candidate in profiles:
                try:
                    values = _rasx_values(path, archive, names, candidate)
                except MeasuredFormatError as exc:
                    problems.append(exc)
                    axes.append("(unreadable conditions)")
                    continue
                axes.append(values.get("AxisName", ""))
                if _is_two_theta_axis(axes[-1]):
                    break
            if len(problems) == len(profiles):
                raise problems[0]
            read = _chosen_scan(path, axes, "data set")
            profile = profiles[read]
            rows = NumericRows(path, profile)
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
    wavelength, metadata = _rigaku_wavelength(values)
    metadata["profile_member"] = profile
    if "AxisName" in values:
        metadata["scan_axis"] = values["AxisName"]
    _note_other_scans(metadata, len(profiles), read, "data set")
    return columns_to_pattern(path, np.column_stack([two_theta, intensity]), wavelength, metadata)


def sniff_ras(path: Path, head: bytes) -> bool:
    """Text that starts with a ``*RAS_`` record or holds ``*RAS_HEADER_START``."""
    text = text_head(head)
    if text is None:
        return False
    return text.lstrip(BOM_AND_BLANKS).startswith("*RAS_") or "*RAS_HEADER_START" in text


def sniff_rasx(path: Path, head: bytes) -> bool:
    """A zip holding a ``Data<k>/Profile<k>.txt`` member."""
    return any(_RASX_PROFILE.fullmatch(name) for name in zip_member_names(path, head))


RAS = FileFormat(name="ras", extensions=("ras",), sniff=sniff_ras, read=read_ras)
RASX = FileFormat(name="rasx", extensions=("rasx",), sniff=sniff_rasx, read=read_rasx)
