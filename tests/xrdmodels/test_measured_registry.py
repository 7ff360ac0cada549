"""The format registry of xrdmodels.measured: one table that names, sniffs and dispatches every format."""

from __future__ import annotations

import zipfile

import pytest

from xrdmodels.measured import (
    FORMATS,
    MeasuredFormatError,
    detect_format,
    known_formats,
    normalise_format,
    read_pattern,
)
from xrdmodels.measured.registry import FALLBACK_FORMAT, find_format


def test_every_name_selects_exactly_one_format() -> None:
    names = [name for file_format in FORMATS for name in file_format.names]
    assert len(names) == len(set(names)), "a name or extension is claimed by two formats"
    assert known_formats() == sorted(names)
    for file_format in FORMATS:
        for name in file_format.names:
            assert find_format(name) is file_format
            assert find_format("." + name.upper()) is file_format
            assert normalise_format(name) == file_format.name
    assert normalise_format("nope") is None


def test_content_decides_before_the_extension_and_text_is_the_fallback(tmp_path) -> None:
    ras_named_dat = tmp_path / "scan.dat"
    ras_named_dat.write_text('*RAS_HEADER_START\n*MEAS_SCAN_AXIS_X "TwoThetaOmega"\n')
    assert detect_format(ras_named_dat).name == "ras"

    # A zip whose member names and stored bytes hold another format's text signature is not that format.
    rasx = tmp_path / "scan.bin"
    with zipfile.ZipFile(rasx, "w", compression=zipfile.ZIP_STORED) as archive:
        archive.writestr("Data0/Profile0.txt", "BANK 1\n*RAS_HEADER_START\n10 1 1\n")
    assert detect_format(rasx).name == "rasx"

    plain = tmp_path / "scan.gsa"
    plain.write_text("10 1\n11 2\n")
    assert detect_format(plain).name == "gsas", "without a signature the extension decides"

    unknown = tmp_path / "scan.weird"
    unknown.write_text("10 1\n11 2\n")
    assert detect_format(unknown) is FALLBACK_FORMAT


def test_a_forced_format_the_content_contradicts_says_so(tmp_path) -> None:
    text = tmp_path / "scan.xy"
    text.write_text("".join(f"{10 + 0.1 * i:.1f} {100 + i % 7}\n" for i in range(200)))
    assert read_pattern(text, format="xy").two_theta_deg.size == 200
    with pytest.raises(
        MeasuredFormatError, match=r"scan\.xy: read as xrdml, as the format option asked, it fails "
    ):
        read_pattern(text, format="xrdml")
    with pytest.raises(MeasuredFormatError, match="its extension names xy. Leave --format"):
        read_pattern(text, format="xrdml")


def test_a_repeated_angle_is_named_as_such(tmp_path) -> None:
    scan = tmp_path / "twice.xy"
    scan.write_text("5.00 1\n5.02 2\n5.02 3\n5.04 4\n")
    with pytest.raises(MeasuredFormatError, match=r"2θ 5.02 occurs twice \(data rows 2 and 3\)"):
        read_pattern(scan)
