"""PANalytical ``.xrdml`` (XML; schema 1.x ``intensities``, 2.x ``counts``), layout from the XRDML schema
1.5/2.1 annotations."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np

from .common import (
    BOM_AND_BLANKS,
    FileFormat,
    MeasuredFormatError,
    MeasuredPattern,
    add_reader_note,
    float_or_none,
    floats,
    local_name,
    parse_xml,
    text_head,
    wavelength_metadata,
    xml_child,
    xml_children,
    xml_descendants,
)


def _per_point(path: Path, points: ET.Element, listed_name: str, common_name: str, n: int) -> np.ndarray:
    """A per-point XRDML factor given as a list (``listed_name``) or one value (``common_name``); 1 if absent."""
    listed = xml_child(points, listed_name)
    if listed is not None:
        values = floats(path, listed.text, f"<{listed_name}>")
        if values.size != n:
            raise MeasuredFormatError(
                path, f"{values.size} <{listed_name}> values for {n} points", "The file is corrupt"
            )
        return values
    common = xml_child(points, common_name)
    value = float_or_none(common.text) if common is not None else None
    return np.full(n, 1.0 if value is None else value)


def _scan_two_theta(path: Path, points: ET.Element, n: int) -> np.ndarray | None:
    """The 2θ of each of a scan's n points (from a list or start/end), or None where the scan does not vary 2θ
    (a rocking curve, an omega scan: their 2Theta position is one common value)."""
    for positions in xml_children(points, "positions"):
        if positions.get("axis") != "2Theta":
            continue
        listed = xml_child(positions, "listPositions")
        start, end = xml_child(positions, "startPosition"), xml_child(positions, "endPosition")
        if listed is not None:
            return floats(path, listed.text, "<listPositions>")
        if start is not None and end is not None:
            first, last = float_or_none(start.text), float_or_none(end.text)
            if first is None or last is None:
                raise MeasuredFormatError(
                    path, "non-numeric 2Theta start/end position", "The file is corrupt"
                )
            return np.linspace(first, last, n)
    return None


def _scan_intensity(path: Path, points: ET.Element) -> tuple[np.ndarray, bool]:
    """(the values of a scan's points, whether they are raw counts (2.x) rather than intensities (1.x))."""
    counts_element = xml_child(points, "intensities")
    raw_counts = counts_element is None
    if raw_counts:
        counts_element = xml_child(points, "counts")
    if counts_element is None:
        raise MeasuredFormatError(path, "no <intensities> or <counts> in the scan", "The scan holds no data")
    return floats(path, counts_element.text, "<counts>/<intensities>"), raw_counts


def read_xrdml(path: Path, max_bytes: int) -> MeasuredPattern:
    """XRDML: 2θ from ``positions axis="2Theta"`` (start/end or list), ``intensities`` (1.x, already
    attenuation-corrected) or ``counts`` (2.x, multiplied here by the beam attenuation factors), divided by
    the counting time when given (result in counts per second). Of several scans, the first that varies 2θ and
    was completed is read (else the first that varies 2θ: an aborted scan keeps what it measured), as
    xrayutilities skips aborted scans; the others are named in the reader's notes. The file itself is the only
    input (``max_bytes`` was checked against its size by the caller)."""
    root = parse_xml(path, path.read_bytes())
    if local_name(root.tag) != "xrdMeasurements":
        raise MeasuredFormatError(
            path, f"root element is <{local_name(root.tag)}>, not <xrdMeasurements>", "Is this an XRDML file?"
        )
    measurements = xml_descendants(root, "xrdMeasurement")
    scans = [
        scan for m in measurements for scan in xml_descendants(m, "scan") if xml_child(scan, "dataPoints")
    ]
    if not scans:
        raise MeasuredFormatError(path, "no <scan> with <dataPoints>", "The measurement holds no data")
    # Scans are read in order until the first completed one that steps 2θ and reads; the first that steps 2θ and
    # reads is kept in case none was completed.
    chosen = None  # (index, scan, 2θ, intensity, raw counts)
    problems: list[MeasuredFormatError] = []  # why the 2θ scans that did not read did not
    for index, candidate in enumerate(scans):
        candidate_points = xml_child(candidate, "dataPoints")
        assert candidate_points is not None
        try:
            values, raw = _scan_intensity(path, candidate_points)
            positions = _scan_two_theta(path, candidate_points, values.size)
            if positions is None:
                continue
            if values.size < 2:
                raise MeasuredFormatError(
                    path, f"the scan has {values.size} intensity value(s)", "The scan holds no data"
                )
            if positions.size != values.size:
                raise MeasuredFormatError(
                    path,
                    f"{positions.size} 2Theta positions for {values.size} intensities",
                    "The file is corrupt",
                )
        except MeasuredFormatError as exc:
            problems.append(exc)
            continue
        completed = candidate.get("status", "Completed") == "Completed"
        if chosen is None or completed:
            chosen = (index, candidate, positions, values, raw)
        if completed:
            break
    if chosen is None:
        if problems:
            raise problems[0]
        axes = ", ".join(sorted({repr(s.get("scanAxis")) for s in scans}))
        raise MeasuredFormatError(
            path,
            f"no scan varies 2Theta (scan axis {axes})",
            "Only 2θ scans (Gonio, 2Theta-Omega, 2Theta) are powder patterns",
        )
    index, scan, two_theta, intensity, raw_counts = chosen
    owner = next(m for m in measurements if any(s is scan for s in m.iter()))
    points = xml_child(scan, "dataPoints")
    assert points is not None
    n = intensity.size

    metadata: dict[str, str] = {"intensity_unit": "counts"}
    if raw_counts:
        intensity = intensity * _per_point(
            path, points, "beamAttenuationFactors", "commonBeamAttenuationFactor", n
        )
    times = _per_point(path, points, "countingTimes", "commonCountingTime", n)
    if xml_child(points, "commonCountingTime") is not None:
        metadata["counting_time_s"] = repr(float(times[0]))
    if np.all(times > 0):
        intensity = intensity / times
        metadata["intensity_unit"] = "counts per second"

    lines = {}
    used = xml_child(owner, "usedWavelength")
    if used is not None:
        metadata["wavelength_intended"] = used.get("intended", "")
        for name in ("kAlpha1", "kAlpha2", "kBeta", "ratioKAlpha2KAlpha1"):
            element = xml_child(used, name)
            lines[name] = float_or_none(element.text) if element is not None else None
            if element is not None and lines[name] is None and (element.text or "").strip():
                # Kept, so that "states no wavelength" can say what the file holds instead.
                metadata["wavelength_unreadable"] = f"<{name}> is {element.text.strip()!r}, not a number"
    wavelength, wave_meta = wavelength_metadata(
        lines.get("kAlpha1"), lines.get("kAlpha2"), lines.get("ratioKAlpha2KAlpha1")
    )
    metadata.update(wave_meta)
    metadata["scan_axis"] = scan.get("scanAxis", "")
    if len(scans) > 1:
        metadata["scans_in_file"] = str(len(scans))
        metadata["scan_read"] = str(index + 1)
        described = [
            f"{i + 1} ({s.get('scanAxis', '?')}, {s.get('status', 'no status')})" for i, s in enumerate(scans)
        ]
        add_reader_note(
            metadata,
            f"the file holds {len(scans)} scans; scan {described[index]} was read, the first completed one that "
            f"steps 2θ and reads, not {', '.join(d for i, d in enumerate(described) if i != index)}: export a scan "
            "on its own to read another",
        )
    order = np.argsort(two_theta, kind="stable")
    return MeasuredPattern(two_theta[order], intensity[order], wavelength, str(path), metadata)


def sniff_xrdml(path: Path, head: bytes) -> bool:
    """An XML document whose first bytes name the ``xrdMeasurements`` root."""
    text = text_head(head)
    if text is None:
        return False
    return text.lstrip(BOM_AND_BLANKS).startswith("<") and "xrdMeasurements" in text


XRDML = FileFormat(name="xrdml", extensions=("xrdml",), sniff=sniff_xrdml, read=read_xrdml)
