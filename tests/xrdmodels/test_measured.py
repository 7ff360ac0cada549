"""Readers for measured patterns and their mapping onto the model grid (xrdmodels.measured).

Real files come from the shared experimental set; every other format is built here from known arrays
following its published layout, and the reader must return those arrays.
"""

from __future__ import annotations

import csv
import math
import re
import struct
import tracemalloc
import zipfile
from pathlib import Path

import numpy as np
import pytest

from xrdmodels.measured import (
    MIN_TRAINING_WINDOW_DEG,
    MeasuredFormatError,
    MeasuredPattern,
    MeasuredSignalError,
    convert_two_theta_deg,
    read_pattern,
    to_model_grid,
)
from xrdmodels.measured.grid import (
    A1,
    MIN_MEASURED_WINDOW_DEG,
    GriddedPattern,
    TrainingRanges,
    lp_reweighting,
    raw_signal_warnings,
    strong_peak_widths,
    training_fwhm_range_deg,
)

REPO = Path(__file__).resolve().parents[2]
EXPERIMENTAL = REPO.parent / "shared" / "data" / "experimental"

# The paper's grid (A.1): 2048 uniform bins over [5, 120] deg at Cu K-alpha 1.54184 A.
GRID = {"two_theta_min_deg": 5.0, "two_theta_max_deg": 120.0, "n_bins": 2048}
CU_KA = 1.54184
CU_KA1, CU_KA2 = 1.540598, 1.544426
MO_KA1 = 0.709300
BIN_WIDTH = (GRID["two_theta_max_deg"] - GRID["two_theta_min_deg"]) / GRID["n_bins"]
CENTRES = GRID["two_theta_min_deg"] + (np.arange(GRID["n_bins"]) + 0.5) * BIN_WIDTH


def _require_experimental() -> Path:
    if not (EXPERIMENTAL / "all_labels.csv").is_file():
        pytest.skip(f"shared experimental data not found at {EXPERIMENTAL}")
    return EXPERIMENTAL


def _labels() -> list[dict[str, str]]:
    with (_require_experimental() / "all_labels.csv").open(newline="") as handle:
        return list(csv.DictReader(handle))


def _gaussian_pattern(two_theta: np.ndarray, centres: list[float], sigma_deg: float) -> np.ndarray:
    return sum(np.exp(-0.5 * ((two_theta - c) / sigma_deg) ** 2) for c in centres)


def _ripple(two_theta: np.ndarray) -> np.ndarray:
    """A positive, everywhere non-zero intensity that is not flat (a flat line is refused as signal-free)."""
    return 1.0 + 0.5 * np.sin(two_theta) ** 2


def _bragg_two_theta_deg(d_angstrom: float, wavelength_angstrom: float) -> float:
    return 2.0 * math.degrees(math.asin(wavelength_angstrom / (2.0 * d_angstrom)))


# ------------------------------------------------------------------------------------------------------
# Real measured files
# ------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("set_name", ["rruff", "xrd_autoanalyzer", "nist_duplex_steel"])
def test_experimental_xy_files_read_like_loadtxt(set_name: str) -> None:
    rows = [r for r in _labels() if r["set"] == set_name]
    assert rows, f"no {set_name} rows in all_labels.csv"
    if set_name == "rruff":
        rows = rows[:: max(1, len(rows) // 12)]  # a spread of ids keeps the test fast
    for row in rows:
        path = EXPERIMENTAL / row["file"]
        pattern = read_pattern(path)
        reference = np.loadtxt(path, comments="#")
        np.testing.assert_array_equal(pattern.two_theta_deg, reference[:, 0])
        np.testing.assert_array_equal(pattern.intensity, reference[:, 1])
        assert pattern.two_theta_deg.dtype == np.float64 and pattern.intensity.dtype == np.float64
        assert pattern.source == str(path)
        nonzero = pattern.two_theta_deg[pattern.intensity != 0]
        # all_labels gives the native range (rruff: first and last non-zero point).
        observed = nonzero if set_name == "rruff" else pattern.two_theta_deg
        assert observed[0] == pytest.approx(float(row["two_theta_min"]), abs=2e-3)
        assert observed[-1] == pytest.approx(float(row["two_theta_max"]), abs=2e-3)
        gridded = to_model_grid(
            pattern,
            wavelength_angstrom=float(row["wavelength_angstrom"]),
            model_wavelength_angstrom=CU_KA,
            **GRID,
        )
        first, end = gridded.window_bins
        assert gridded.pattern.shape == (GRID["n_bins"],) and gridded.pattern.dtype == np.float32
        assert np.all(gridded.pattern[:first] == 0) and np.all(gridded.pattern[end:] == 0)


def test_rruff_header_states_its_wavelength() -> None:
    pattern = read_pattern(_require_experimental() / "rruff" / "1.xy")
    # Header: "radiation: Cu K-alpha (lambda 1.5418 A)".
    assert pattern.wavelength_angstrom == pytest.approx(1.5418)
    assert pattern.metadata["wavelength_kind"] == "stated"


def test_sparse_rruff_pattern_is_flagged_mostly_empty() -> None:
    folder = _require_experimental() / "rruff"
    # 369.xy has 570 non-zero points out of 8500; 1.xy is a dense pattern.
    sparse, dense = (
        to_model_grid(
            read_pattern(folder / name), wavelength_angstrom=None, model_wavelength_angstrom=CU_KA, **GRID
        )
        for name in ("369.xy", "1.xy")
    )
    assert any("mostly empty" in w for w in sparse.warnings)
    assert dense.warnings == []


def test_autoanalyzer_files_name_their_anode_only() -> None:
    """'# radiation: Cu K-alpha (repo default...)': no number, but the anode: its Kα mean."""
    pattern = read_pattern(_require_experimental() / "xrd_autoanalyzer" / "MnO.xy")
    assert pattern.wavelength_angstrom == CU_KA
    assert pattern.metadata["wavelength_kind"] == "K-alpha weighted mean of the anode the header names"


def test_a_file_that_states_no_wavelength_is_read_as_cu_with_a_warning(tmp_path: Path) -> None:
    two_theta, intensity = _reference_scan()
    (tmp_path / "plain.xy").write_text(
        "\n".join(f"{x} {y}" for x, y in zip(two_theta, intensity, strict=True))
    )
    pattern = read_pattern(tmp_path / "plain.xy")
    assert pattern.wavelength_angstrom is None
    assumed = to_model_grid(pattern, wavelength_angstrom=None, model_wavelength_angstrom=CU_KA, **GRID)
    stated = to_model_grid(pattern, wavelength_angstrom=CU_KA, model_wavelength_angstrom=CU_KA, **GRID)
    np.testing.assert_array_equal(assumed.pattern, stated.pattern)
    assert any(w.startswith("the file states no wavelength: read as Cu Kα") for w in assumed.warnings)
    assert not any("states no wavelength" in w for w in stated.warnings)


def _nist_pairs() -> list[tuple[Path, Path, dict[str, str]]]:
    folder = _require_experimental() / "nist_duplex_steel"
    with (folder / "labels.csv").open(newline="") as handle:
        return [(folder / row["xrdml"], folder / row["file"], row) for row in csv.DictReader(handle)]


def test_nist_xrdml_matches_its_companion_xy() -> None:
    pairs = _nist_pairs()
    assert len(pairs) == 5
    for xrdml_path, xy_path, row in pairs:
        from_xrdml = read_pattern(xrdml_path)
        from_xy = read_pattern(xy_path)
        assert from_xrdml.metadata["format"] == "xrdml"
        # The .xy prints 2theta to 5 decimals and raw counts; the xrdml reader returns counts per second.
        np.testing.assert_allclose(from_xrdml.two_theta_deg, from_xy.two_theta_deg, atol=6e-6, rtol=0)
        counting_time = float(from_xrdml.metadata["counting_time_s"])
        np.testing.assert_allclose(from_xrdml.intensity * counting_time, from_xy.intensity, rtol=1e-12)
        ka1, ka2, ratio = (float(row[k]) for k in ("wavelength_ka1", "wavelength_ka2", "ka2_ka1_ratio"))
        assert from_xrdml.wavelength_angstrom == pytest.approx((ka1 + ratio * ka2) / (1 + ratio), abs=1e-9)
        assert from_xrdml.metadata["wavelength_kind"] == "K-alpha weighted mean"
        assert float(from_xrdml.metadata["wavelength_kalpha1_angstrom"]) == pytest.approx(ka1)
        assert from_xy.wavelength_angstrom == pytest.approx(from_xrdml.wavelength_angstrom, abs=1e-9)
        grid_a = to_model_grid(from_xrdml, wavelength_angstrom=None, model_wavelength_angstrom=CU_KA, **GRID)
        grid_b = to_model_grid(from_xy, wavelength_angstrom=None, model_wavelength_angstrom=CU_KA, **GRID)
        assert grid_a.window_bins == grid_b.window_bins
        # Bins average the interpolated curve, which moves continuously with the points: the .xy's 2θ rounding
        # (<= 5e-6 deg, 2e-4 of a 0.029 deg step) moves steep flanks by up to ~5e-5 relative.
        np.testing.assert_allclose(grid_a.pattern, grid_b.pattern, rtol=1e-4, atol=1e-6)


def test_nist_control_scan_peaks_land_at_austenite_and_ferrite_lines() -> None:
    control = next(p for p, _, _ in _nist_pairs() if "Control" in p.name)
    gridded = to_model_grid(
        read_pattern(control), wavelength_angstrom=None, model_wavelength_angstrom=CU_KA, **GRID
    )
    # Independent reference: fcc (a = 3.59 A) 111/200/220 and bcc (a = 2.87 A) 110/200 by Bragg's law.
    # Lattice constants are rounded textbook values for duplex steel, so allow 0.4 deg.
    lines = [3.59 / math.sqrt(3), 3.59 / 2, 3.59 / math.sqrt(8), 2.87 / math.sqrt(2), 2.87 / 2]
    for d in lines:
        expected = _bragg_two_theta_deg(d, CU_KA)
        near = np.abs(CENTRES - expected) < 0.4
        local = gridded.pattern[near]
        assert local.max() > 0.5, f"no peak near {expected:.2f} deg (d = {d:.4f} A)"


# ------------------------------------------------------------------------------------------------------
# Constructed files, one per format
# ------------------------------------------------------------------------------------------------------


def _reference_scan(n: int = 301, start: float = 10.0, step: float = 0.05) -> tuple[np.ndarray, np.ndarray]:
    two_theta = start + step * np.arange(n)
    intensity = 100.0 + 5000.0 * _gaussian_pattern(two_theta, [18.0, 22.5], 0.1)
    return two_theta, np.round(intensity, 1)


@pytest.mark.parametrize(
    ("suffix", "text"),
    [
        (".xy", "# comment\n; another\n! third\n{rows_space}"),
        (".csv", "2theta,intensity\n{rows_comma}"),
        (".dat", "Angle\tCounts\tError\n{rows_tab_error}"),
        (".txt", "Sample: test\nStep 0.05\n{rows_semicolon}"),
        (".xye", "{rows_descending}"),
    ],
)
def test_text_column_variants(tmp_path: Path, suffix: str, text: str) -> None:
    two_theta, intensity = _reference_scan()
    rows = list(zip(two_theta, intensity, strict=True))
    variants = {
        "rows_space": "\n".join(f"{x:.4f} {y}" for x, y in rows),
        "rows_comma": "\n".join(f"{x:.4f},{y}" for x, y in rows),
        "rows_tab_error": "\n".join(f"{x:.4f}\t{y}\t{math.sqrt(y):.3f}" for x, y in rows),
        "rows_semicolon": "\n".join(f"{x:.4f}; {y}" for x, y in rows),
        "rows_descending": "\n".join(f"{x:.4f} {y} 1.0" for x, y in rows[::-1]),
    }
    path = tmp_path / f"scan{suffix}"
    path.write_text(text.format(**variants) + "\n")
    pattern = read_pattern(path)
    np.testing.assert_allclose(pattern.two_theta_deg, two_theta, atol=1e-9)
    np.testing.assert_array_equal(pattern.intensity, intensity)
    assert pattern.wavelength_angstrom is None


def test_text_leading_numeric_header_lines_are_not_data(tmp_path: Path) -> None:
    two_theta, intensity = _reference_scan(40)
    body = "\n".join(f"{x:.3f} {y}" for x, y in zip(two_theta, intensity, strict=True))
    path = tmp_path / "counted.xy"
    # Some exporters write the point count and "start, step, end, time" before the columns.
    path.write_text(f"{two_theta.size}\n10.0, 0.05, 11.95, 1\n{body}\n")
    pattern = read_pattern(path)
    np.testing.assert_allclose(pattern.two_theta_deg, two_theta, atol=1e-9)
    assert pattern.metadata["header"].splitlines() == [str(two_theta.size), "10.0, 0.05, 11.95, 1"]


def test_text_footer_is_left_out_and_repeated_as_a_warning(tmp_path: Path) -> None:
    two_theta, intensity = _reference_scan()
    body = "\n".join(f"{x:.3f} {y}" for x, y in zip(two_theta, intensity, strict=True))
    path = tmp_path / "footer.xy"
    path.write_text(f"{body}\nEND\n\nTotal time: 40 s\n")
    pattern = read_pattern(path)
    np.testing.assert_allclose(pattern.two_theta_deg, two_theta, atol=1e-9)
    np.testing.assert_array_equal(pattern.intensity, intensity)
    assert pattern.metadata["footer"] == "END\nTotal time: 40 s"
    note = "2 text lines after the data left out (from line 302: 'END')"
    assert pattern.metadata["reader_notes"] == note
    assert note in raw_signal_warnings(pattern)
    path.write_text(f"{body}\nEND\n1.0 2.0\n")  # not a footer: data follow it
    with pytest.raises(MeasuredFormatError, match="footer.xy: line 302 of the data is not numeric: 'END'"):
        read_pattern(path)


@pytest.mark.parametrize(
    ("text", "columns"),
    [
        ("Winkel;Impulse\n{semicolon}", 2),
        ("2Theta\tCounts\tESD\n{tab_error}", 3),
        ("{space}", 2),
    ],
)
def test_text_decimal_commas(tmp_path: Path, text: str, columns: int) -> None:
    two_theta, intensity = _reference_scan()
    if text == "{space}":
        intensity = np.floor(intensity)  # whole counts: the rows are '10,050  5100'
    rows = list(zip(two_theta, intensity, strict=True))

    def comma(value: float, digits: int) -> str:
        return f"{value:.{digits}f}".replace(".", ",")

    variants = {
        "semicolon": "\n".join(f"{comma(x, 3)};{comma(y, 1)}" for x, y in rows),
        "tab_error": "\n".join(f"{comma(x, 3)}\t{comma(y, 1)}\t{comma(math.sqrt(y), 2)}" for x, y in rows),
        "space": "\n".join(f"{comma(x, 3)}  {int(y)}" for x, y in rows),
    }
    path = tmp_path / "komma.csv"
    path.write_text(text.format(**variants) + "\n")
    pattern = read_pattern(path)
    np.testing.assert_allclose(pattern.two_theta_deg, two_theta, atol=1e-9)
    np.testing.assert_allclose(pattern.intensity, intensity, atol=1e-9)
    assert pattern.metadata["reader_notes"].startswith("commas read as decimal points")
    assert pattern.metadata["columns"].split() == ["two_theta_deg", "intensity", "error"][:columns]


def test_text_comma_separated_integers_are_two_columns(tmp_path: Path) -> None:
    # Without a semicolon, tab or space between them, commas separate columns: "10,123" is 10° and 123 counts.
    path = tmp_path / "integers.csv"
    path.write_text("angle,counts\n10,123\n11,130\n12,128\n")
    pattern = read_pattern(path)
    np.testing.assert_array_equal(pattern.two_theta_deg, [10.0, 11.0, 12.0])
    np.testing.assert_array_equal(pattern.intensity, [123.0, 130.0, 128.0])
    assert "reader_notes" not in pattern.metadata


@pytest.mark.parametrize("encoding", ["utf-16-le", "utf-16-be", "utf-32-le"])
def test_text_with_a_unicode_byte_order_mark(tmp_path: Path, encoding: str) -> None:
    two_theta, intensity = _reference_scan()
    body = "\n".join(f"{x:.3f}\t{y}" for x, y in zip(two_theta, intensity, strict=True))
    path = tmp_path / "unicode.txt"
    path.write_bytes("\ufeff2θ\tI\n".encode(encoding) + f"{body}\n".encode(encoding))
    pattern = read_pattern(path)
    np.testing.assert_allclose(pattern.two_theta_deg, two_theta, atol=1e-9)
    np.testing.assert_array_equal(pattern.intensity, intensity)
    assert pattern.metadata["header"] == "2θ\tI"
    assert pattern.metadata["encoding"] == encoding[:6]


def test_a_bad_row_is_named_in_a_descending_scan_too(tmp_path: Path) -> None:
    """The scan's direction comes from its ends: a repeated angle or a step back in a descending scan is named at
    its own data row (it used to be reported at row 2, whatever row it was), and so is a row that is not numbers."""
    angles = np.round(np.arange(80.0, 10.0, -0.02), 4)
    rows = lambda x, y: "\n".join(f"{a:.4f} {b}" for a, b in zip(x, y, strict=True))  # noqa: E731
    ones = np.ones_like(angles)
    repeated = angles.copy()
    repeated[200] = repeated[199]
    (tmp_path / "repeated.xy").write_text(rows(repeated, ones))
    with pytest.raises(MeasuredFormatError, match=r"2θ 76.02 occurs twice \(data rows 200 and 201\)"):
        read_pattern(tmp_path / "repeated.xy")
    back = angles.copy()
    back[300] = back[302]
    (tmp_path / "back.xy").write_text(rows(back, ones))
    with pytest.raises(MeasuredFormatError, match=r"not monotonic \(data row 302: 73.96 then 73.98\)"):
        read_pattern(tmp_path / "back.xy")
    holes = ones.copy()
    holes[[50, 60]] = np.nan
    (tmp_path / "nan.xy").write_text(rows(angles, holes))
    with pytest.raises(MeasuredFormatError, match=r"data row 51 holds a value that is not a number .*2 row"):
        read_pattern(tmp_path / "nan.xy")
    appended = np.concatenate(
        [np.arange(20.0, 80.0, 0.02), np.arange(10.0, 15.0, 0.02)]
    )  # ends below its start
    (tmp_path / "appended.xy").write_text(rows(appended, np.ones_like(appended)))
    with pytest.raises(MeasuredFormatError, match=r"not monotonic \(data row 3001: 79.98 then 10\)"):
        read_pattern(tmp_path / "appended.xy")
    (tmp_path / "down.xy").write_text(rows(angles, ones))
    pattern = read_pattern(tmp_path / "down.xy")
    assert pattern.two_theta_deg[0] == pytest.approx(10.02) and np.all(np.diff(pattern.two_theta_deg) > 0)


def test_text_header_wavelength_forms(tmp_path: Path) -> None:
    two_theta, intensity = _reference_scan(11)
    body = "\n".join(f"{x} {y}" for x, y in zip(two_theta, intensity, strict=True))
    single = tmp_path / "single.xy"
    single.write_text(f"# Wavelength: 0.45920 A (synchrotron)\n{body}\n")
    assert read_pattern(single).wavelength_angstrom == pytest.approx(0.4592)
    assert read_pattern(single).metadata["wavelength_kind"] == "stated"
    mono = tmp_path / "mono.xy"
    mono.write_text(f"# Cu Ka1 = 1.540598\n{body}\n")
    assert read_pattern(mono).wavelength_angstrom == pytest.approx(1.540598)
    assert read_pattern(mono).metadata["wavelength_kind"] == "K-alpha1"
    # A PANalytical CSV export's header: comma after the name, the ratio named by its two lines.
    csv_rows = "\n".join(f"{x},{y}" for x, y in zip(two_theta, intensity, strict=True))
    panalytical = tmp_path / "highscore.csv"
    panalytical.write_text(
        "[Measurement conditions]\nAnode material,Cu\nK-Alpha1 wavelength,1.5405980\n"
        "K-Alpha2 wavelength,1.5444260\nRatio K-Alpha2/K-Alpha1,0.5\nMonochromator used,NO\n"
        f"[Scan points]\nAngle,Intensity\n{csv_rows}\n"
    )
    assert read_pattern(panalytical).wavelength_angstrom == pytest.approx((1.540598 + 0.5 * 1.544426) / 1.5)
    for header in ("# Wavelength (nm): 0.154056", "# wavelength = 0.154056 nm"):  # nm said is nm
        (tmp_path / "nm.xy").write_text(f"{header}\n{body}\n")
        assert read_pattern(tmp_path / "nm.xy").wavelength_angstrom == pytest.approx(1.54056)
    for header, expected in (
        ("# wavelength 2theta intensity", None),  # a column list, not λ = 2 Å
        ("# Radiation: Cu Ka1,2", CU_KA),  # the doublet named: Cu's Kα mean, not Kα1 = 2 Å
        ("# Cu Kα1,2 radiation, λ = 1.5418 Å", 1.5418),
        ("# Mo source, wavelength: 0.7093.", 0.7093),
        ("# Ka1 = 1.5406Ang", 1.5406),
        ("# lambda (unmonochromated): 1.5418", 1.5418),  # "nm" inside a word is no unit
        ('\'Id: "" Operator: "Lab" Anode: "Co" Scantype: "Coupled TwoTheta/Theta"', 1.79026),  # EVA
        ("Anode material,Mo", 0.71073),  # the anode named, no number: its Kα mean
        ("# Sample: FeKaolinite", None),
        ("# Wavelength [Å]: 0.7093", 0.7093),  # a unit in brackets, as in parentheses
        ("# lambda [nm] 0.07093", 0.7093),
        ("# Mo Ka1 radiation", 0.70930),  # one line of the anode named: that line, not the doublet's mean
        ("# Radiation: Cu K-alpha1 (Ge monochromator)", 1.54056),
        ("# Co Ka2 only", 1.79285),
        ("# Cu Ka1+2", CU_KA),  # the doublet, however it is joined
        ("# Cu K-alpha1/alpha2", CU_KA),
        ("# Cu Ka1 and Ka2", CU_KA),
        ("# Cu Ka12", CU_KA),  # the doublet
        ("# Mo Ka12", 0.71073),
        ("# Cu Ka 2-Theta scan", CU_KA),  # a digit apart from the name, or numeric after it, names no line
        ("# Co Kα 2θ (deg)", 1.79026),
        ("# Tube Cu Ka 2 kW", CU_KA),
        ("# Radiation: Cu Ka 1.5418 A", CU_KA),
        ("# Cu Ka2 stripped", 1.54056),  # Kα2 taken out of the data leaves Kα1
        ("# Cu Ka1, 40 kV", 1.54056),
    ):
        (tmp_path / "h.xy").write_text(f"{header}\n{body}\n")
        assert read_pattern(tmp_path / "h.xy").wavelength_angstrom == (
            None if expected is None else pytest.approx(expected)
        ), header


def _xrdml(positions_xml: str, data_xml: str, namespace: str = "2.1") -> str:
    return f"""<?xml version="1.0" encoding="UTF-8"?>
<xrdMeasurements xmlns="http://www.xrdml.com/XRDMeasurement/{namespace}" status="Completed">
  <xrdMeasurement measurementType="Scan" status="Completed">
    <usedWavelength intended="K-Alpha 1">
      <kAlpha1 unit="Angstrom">{CU_KA1}</kAlpha1>
      <kAlpha2 unit="Angstrom">{CU_KA2}</kAlpha2>
      <kBeta unit="Angstrom">1.3922500</kBeta>
      <ratioKAlpha2KAlpha1>0.5000</ratioKAlpha2KAlpha1>
    </usedWavelength>
    <scan appendNumber="0" mode="Continuous" scanAxis="Gonio" status="Completed">
      <dataPoints>
        {positions_xml}
        <positions axis="Omega" unit="deg"><startPosition>5</startPosition><endPosition>20</endPosition></positions>
        {data_xml}
      </dataPoints>
    </scan>
  </xrdMeasurement>
</xrdMeasurements>
"""


def _start_end_positions(two_theta: np.ndarray) -> str:
    return (
        f'<positions axis="2Theta" unit="deg"><startPosition>{two_theta[0]}</startPosition>'
        f"<endPosition>{two_theta[-1]}</endPosition></positions>"
    )


def test_xrdml_list_positions_with_counting_times_and_attenuation(tmp_path: Path) -> None:
    two_theta, intensity = _reference_scan(50)
    times = np.linspace(1.0, 2.0, two_theta.size)
    attenuation = np.where(intensity > 3000, 10.0, 1.0)
    raw_counts = intensity * times / attenuation
    path = tmp_path / "listed.xrdml"
    path.write_text(
        _xrdml(
            '<positions axis="2Theta" unit="deg"><listPositions>'
            + " ".join(f"{x:.6f}" for x in two_theta)
            + "</listPositions></positions>",
            "<beamAttenuationFactors>"
            + " ".join(f"{a:g}" for a in attenuation)
            + '</beamAttenuationFactors><countingTimes unit="seconds">'
            + " ".join(repr(float(t)) for t in times)
            + '</countingTimes><counts unit="counts">'
            + " ".join(repr(float(c)) for c in raw_counts)
            + "</counts>",
        )
    )
    pattern = read_pattern(path)
    np.testing.assert_allclose(pattern.two_theta_deg, two_theta, atol=1e-9)
    np.testing.assert_allclose(pattern.intensity, intensity, rtol=1e-12)
    assert pattern.metadata["intensity_unit"] == "counts per second"


def test_xrdml_schema_1_intensities_are_not_attenuation_corrected_twice(tmp_path: Path) -> None:
    two_theta, intensity = _reference_scan(40)
    path = tmp_path / "old.xrdml"
    path.write_text(
        _xrdml(
            _start_end_positions(two_theta),
            "<commonCountingTime>2.0</commonCountingTime><beamAttenuationFactors>"
            + " ".join("3" for _ in intensity)
            + '</beamAttenuationFactors><intensities unit="counts">'
            + " ".join(repr(float(c)) for c in intensity)
            + "</intensities>",
            namespace="1.5",
        )
    )
    pattern = read_pattern(path)
    np.testing.assert_allclose(pattern.two_theta_deg, two_theta, atol=1e-9)
    np.testing.assert_allclose(pattern.intensity, intensity / 2.0, rtol=1e-12)


def test_xrdml_omega_only_scan_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "rocking.xrdml"
    path.write_text(
        _xrdml(
            '<positions axis="2Theta" unit="deg"><commonPosition>30</commonPosition></positions>',
            '<counts unit="counts">1 2 3 4</counts>',
        )
    )
    with pytest.raises(MeasuredFormatError, match="rocking.xrdml.*2Theta"):
        read_pattern(path)


def test_xrdml_reads_the_first_completed_two_theta_scan_and_names_the_others(tmp_path: Path) -> None:
    """A rocking scan, then an aborted 2θ scan, then the completed one: the completed 2θ scan is read (as
    xrayutilities skips aborted scans) and the note, which predict repeats as a warning, names the others."""
    two_theta, intensity = _reference_scan()
    counts = '<counts unit="counts">' + " ".join(repr(float(c)) for c in intensity) + "</counts>"
    text = _xrdml(_start_end_positions(two_theta), counts)
    scan_start = text.index("    <scan ")
    rocking = (
        '<scan appendNumber="0" mode="Continuous" scanAxis="Omega" status="Completed"><dataPoints>'
        '<positions axis="2Theta" unit="deg"><commonPosition>30</commonPosition></positions>'
        '<counts unit="counts">1 2 3 4</counts></dataPoints></scan>\n'
    )
    aborted = (
        '<scan appendNumber="1" mode="Continuous" scanAxis="Gonio" status="Aborted"><dataPoints>'
        + _start_end_positions(np.array([10.0, 10.1, 10.2]))
        + '<counts unit="counts">7 8 9</counts></dataPoints></scan>\n'
    )
    # A last scan that was stopped before any point was counted does not spoil the others.
    empty = (
        '<scan appendNumber="3" mode="Continuous" scanAxis="Gonio" status="Aborted"><dataPoints>'
        + _start_end_positions(two_theta)
        + "</dataPoints></scan>\n"
    )
    scan_end = text.index("</scan>") + len("</scan>\n")
    path = tmp_path / "four.xrdml"
    path.write_text(
        text[:scan_start] + rocking + aborted + text[scan_start:scan_end] + empty + text[scan_end:]
    )
    pattern = read_pattern(path)
    np.testing.assert_allclose(pattern.two_theta_deg, two_theta, atol=1e-9)
    np.testing.assert_allclose(pattern.intensity, intensity, rtol=1e-12)
    assert pattern.metadata["scans_in_file"] == "4" and pattern.metadata["scan_read"] == "3"
    assert pattern.metadata["reader_notes"] == (
        "the file holds 4 scans; scan 3 (Gonio, Completed) was read, the first completed one that steps 2θ and "
        "reads, not 1 (Omega, Completed), 2 (Gonio, Aborted), 4 (Gonio, Aborted): export a scan on its own to "
        "read another"
    )
    assert "the file holds 4 scans" in " ".join(raw_signal_warnings(pattern))
    only_empty = tmp_path / "empty.xrdml"
    only_empty.write_text(text[:scan_start] + empty + text[scan_end:])
    with pytest.raises(MeasuredFormatError, match="empty.xrdml: no <intensities> or <counts> in the scan"):
        read_pattern(only_empty)


def test_xrdml_wavelength_that_is_not_a_number_is_named(tmp_path: Path) -> None:
    """A <kAlpha1> that is not a number leaves the file without a wavelength, but it says it has one: refused
    (nothing assumed), saying what it holds; --wavelength reads it."""
    from xrdmodels.measured.grid import measurement_wavelength

    two_theta, intensity = _reference_scan(50)
    path = tmp_path / "typo.xrdml"
    path.write_text(
        _xrdml(
            _start_end_positions(two_theta),
            '<counts unit="counts">' + " ".join(repr(float(c)) for c in intensity) + "</counts>",
        ).replace(f">{CU_KA1}<", ">1,5406<")
    )
    pattern = read_pattern(path)
    assert pattern.wavelength_angstrom is None
    with pytest.raises(
        MeasuredFormatError,
        match=r"typo.xrdml: the file's wavelength cannot be read \(its <kAlpha1> is '1,5406'",
    ):
        measurement_wavelength(pattern, None)
    assert measurement_wavelength(pattern, 1.5406) == (1.5406, [])


def test_gsas_fxye_with_instrument_parameter_file(tmp_path: Path) -> None:
    two_theta, intensity = _reference_scan(120, start=2.0, step=0.002)
    (tmp_path / "11bmb.instprm").write_text(
        "#GSAS-II instrument parameter file\nType:PXC\nLam:0.4138\nZero:0.0\n"
    )
    rows = "\n".join(
        f"{100 * x:15.6f}{y:15.4f}{math.sqrt(y):15.4f}" for x, y in zip(two_theta, intensity, strict=True)
    )
    path = tmp_path / "sample.fxye"
    path.write_text(
        "Synthetic 11-BM style scan\nInstrument parameter file:11bmb.instprm\n# temperature 295 K\n"
        f"BANK 1 {two_theta.size} {two_theta.size} CONS {100 * two_theta[0]:.4f} 0.2 0 0 FXYE\n{rows}\n"
    )
    pattern = read_pattern(path)
    np.testing.assert_allclose(pattern.two_theta_deg, two_theta, atol=1e-9)
    np.testing.assert_allclose(pattern.intensity, intensity, atol=1e-4)
    assert pattern.wavelength_angstrom == pytest.approx(0.4138)
    assert pattern.metadata["wavelength_kind"] == "stated"


def test_gsas_fxye_calibrated_wavelength_comment(tmp_path: Path) -> None:
    two_theta, intensity = _reference_scan(20, start=2.0, step=0.01)
    rows = "\n".join(f"{100 * x:.3f} {y:.2f} 1.0" for x, y in zip(two_theta, intensity, strict=True))
    path = tmp_path / "scan.fxye"
    path.write_text(f"title\n# 0.4579 Calibrated wavelength\nBANK 1 20 20 CONS 200 1 0 0 FXYE\n{rows}\n")
    assert read_pattern(path).wavelength_angstrom == pytest.approx(0.4579)


def test_gsas_time_of_flight_banks_are_refused_and_later_banks_named(tmp_path: Path) -> None:
    rows = "\n".join(f"{2000 + 10 * i:.1f} 50.0 7.0" for i in range(20))
    tof = tmp_path / "tof.fxye"
    tof.write_text(f"neutrons\nBANK 1 20 20 SLOG 2000.0 17000.0 0.0144 0 FXYE\n{rows}\n")
    with pytest.raises(MeasuredFormatError, match=r"tof.fxye: bank bin type 'SLOG' is time of flight"):
        read_pattern(tof)
    two_theta, intensity = _reference_scan(20, start=2.0, step=0.01)
    body = "\n".join(f"{100 * x:.3f} {y:.2f} 1.0" for x, y in zip(two_theta, intensity, strict=True))
    bank = "BANK {} 20 20 CONS 200 1 0 0 FXYE\n"
    two = tmp_path / "two.fxye"
    two.write_text(f"title\n{bank.format(1)}{body}\n{bank.format(2)}{body}\n")
    pattern = read_pattern(two)
    np.testing.assert_allclose(pattern.two_theta_deg, two_theta, atol=1e-9)
    assert pattern.metadata["reader_notes"] == (
        "the file holds 2 banks; the first was read: export a bank on its own to read another"
    )


def _fixed(values: list[float], width: int, per_line: int) -> str:
    fields = [f"{v:{width}.2f}"[-width:] for v in values]
    return "\n".join("".join(fields[i : i + per_line]).ljust(80) for i in range(0, len(fields), per_line))


def test_gsas_esd_and_std_constant_step_banks(tmp_path: Path) -> None:
    n, start_cdeg, step_cdeg = 23, 1000.0, 2.0
    intensity = np.round(50 + 900 * _gaussian_pattern(np.arange(n, dtype=float), [11.0], 2.0), 1)
    two_theta = (start_cdeg + step_cdeg * np.arange(n)) / 100.0
    esd_values = [v for y in intensity for v in (y, math.sqrt(y))]
    prm = tmp_path / "inst.prm"
    # GSAS .prm ICONS record: 10-character fields, lambda1, lambda2, zero, ..., ratio at [55:65].
    icons = f"{CU_KA1:10.6f}{CU_KA2:10.6f}{0.0:10.3f}{'':10}{0.8:10.3f}{0:5d}{0.5:10.4f}"
    prm.write_text(f"INS   BANK      1\nINS  1 ICONS{icons}\n")
    esd = tmp_path / "esd.gsa"
    esd.write_text(
        f"ESD bank\nInstrument parameter file:inst.prm\nBANK 1 {n} 5 CONS {start_cdeg} {step_cdeg} 0 0 ESD\n"
        + _fixed(esd_values, 8, 10)
        + "\n"
    )
    # STD records: a 2-character count then a 6-character intensity.
    std_fields = "".join(f" 1{y:6.1f}" for y in intensity)
    std = tmp_path / "std.gsa"
    std.write_text(
        f"STD bank\nBANK 1 {n} 3 CONS {start_cdeg} {step_cdeg} 0 0 STD\n"
        + "\n".join(std_fields[i : i + 80] for i in range(0, len(std_fields), 80))
        + "\n"
    )
    for path in (esd, std):
        pattern = read_pattern(path)
        np.testing.assert_allclose(pattern.two_theta_deg, two_theta, atol=1e-12)
        np.testing.assert_allclose(pattern.intensity, intensity, atol=1e-9)
    esd_pattern = read_pattern(esd)
    assert esd_pattern.wavelength_angstrom == pytest.approx((CU_KA1 + 0.5 * CU_KA2) / 1.5)
    assert esd_pattern.metadata["wavelength_kind"] == "K-alpha weighted mean"


def test_rigaku_ras_multiplies_attenuation_and_reads_wavelength(tmp_path: Path) -> None:
    two_theta, intensity = _reference_scan(60)
    attenuation = np.where(intensity > 2000, 4.0, 1.0)
    rows = "\n".join(
        f"{x:.4f} {y / a:.4f} {a:.4f}" for x, y, a in zip(two_theta, intensity, attenuation, strict=True)
    )
    path = tmp_path / "scan.ras"
    path.write_bytes(
        (
            '*RAS_DATA_START\n*RAS_HEADER_START\n*FILE_SAMPLE "Probe \xb5"\n*HW_XG_TARGET_NAME "Cu"\n'
            f'*HW_XG_WAVE_LENGTH_ALPHA1 "{CU_KA1}"\n*HW_XG_WAVE_LENGTH_ALPHA2 "{CU_KA2}"\n'
            '*MEAS_SCAN_AXIS_X "TwoThetaOmega"\n*MEAS_SCAN_UNIT_X "deg"\n*RAS_HEADER_END\n'
            f"*RAS_INT_START\n{rows}\n*RAS_INT_END\n*RAS_DATA_END\n"
        ).encode("latin-1")
    )
    pattern = read_pattern(path)
    np.testing.assert_allclose(pattern.two_theta_deg, two_theta, atol=1e-9)
    np.testing.assert_allclose(pattern.intensity, intensity, rtol=1e-6)
    assert pattern.metadata["format"] == "ras"
    assert pattern.wavelength_angstrom == pytest.approx((CU_KA1 + 0.5 * CU_KA2) / 1.5)


def test_rigaku_rasx_first_scan_with_kalpha1_wave_type(tmp_path: Path) -> None:
    two_theta, intensity = _reference_scan(45)
    profile = "\ufeff" + "\n".join(f"{x:.4f}\t{y:.4f}\t1" for x, y in zip(two_theta, intensity, strict=True))
    conditions = (
        '<?xml version="1.0" encoding="utf-8"?><MeasurementConditions><GeneralInformation>'
        "<SampleName>S</SampleName></GeneralInformation><HWConfigurations><XrayGenerator>"
        f"<TargetName>Cu</TargetName><WaveType>Ka1</WaveType><WavelengthKalpha1>{CU_KA1}</WavelengthKalpha1>"
        f"<WavelengthKalpha2>{CU_KA2}</WavelengthKalpha2></XrayGenerator></HWConfigurations>"
        "<ScanInformation><AxisName>TwoThetaTheta</AxisName></ScanInformation></MeasurementConditions>"
    )
    path = tmp_path / "scan.rasx"
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("Data10/Profile10.txt", "50\t1\t1\n60\t1\t1\n")
        archive.writestr("Data0/Profile0.txt", profile.encode("utf-8"))
        archive.writestr("Data0/MesurementConditions0.xml", conditions)
    pattern = read_pattern(path)
    np.testing.assert_allclose(pattern.two_theta_deg, two_theta, atol=1e-9)
    np.testing.assert_allclose(pattern.intensity, intensity, atol=1e-9)
    assert pattern.wavelength_angstrom == pytest.approx(CU_KA1)
    assert pattern.metadata["wavelength_kind"] == "K-alpha1"


def test_rigaku_files_read_their_first_two_theta_scan(tmp_path: Path) -> None:
    """An omega scan ahead of the 2θ scan, in a .ras and in a .rasx: the 2θ scan is read, the other named."""
    two_theta, intensity = _reference_scan(30)
    rows = "\n".join(f"{x:.4f} {y:.4f} 1" for x, y in zip(two_theta, intensity, strict=True))

    def ras_scan(axis: str, data: str) -> str:
        return (
            f'*RAS_HEADER_START\n*HW_XG_WAVE_LENGTH_ALPHA1 "{CU_KA1}"\n*MEAS_SCAN_AXIS_X "{axis}"\n'
            f"*RAS_HEADER_END\n*RAS_INT_START\n{data}\n*RAS_INT_END\n"
        )

    ras = tmp_path / "two.ras"
    ras.write_text("*RAS_DATA_START\n" + ras_scan("Omega", "1 5 1\n2 6 1") + ras_scan("TwoThetaOmega", rows))
    rasx = tmp_path / "two.rasx"
    with zipfile.ZipFile(rasx, "w") as archive:
        for k, (axis, data) in enumerate((("Omega", "1\t5\t1\n2\t6\t1"), ("TwoThetaTheta", rows))):
            archive.writestr(f"Data{k}/Profile{k}.txt", data)
            archive.writestr(
                f"Data{k}/MesurementConditions{k}.xml",
                "<MeasurementConditions><ScanInformation><AxisName>"
                f"{axis}</AxisName></ScanInformation></MeasurementConditions>",
            )
    for path, unit in ((ras, "scan"), (rasx, "data set")):
        pattern = read_pattern(path)
        np.testing.assert_allclose(pattern.two_theta_deg, two_theta, atol=1e-9)
        np.testing.assert_allclose(pattern.intensity, intensity, rtol=1e-6)
        assert pattern.metadata["reader_notes"] == (
            f"the file holds 2 {unit}s; {unit} 2 was read, the first that steps 2θ: export a {unit} on its own to "
            "read another"
        )
    only_omega = tmp_path / "omega.ras"
    only_omega.write_text("*RAS_DATA_START\n" + ras_scan("Omega", "1 5 1\n2 6 1"))
    with pytest.raises(MeasuredFormatError, match="omega.ras: scan axis is 'Omega', not a 2θ axis"):
        read_pattern(only_omega)


def _brml(
    tmp_path: Path,
    two_theta: np.ndarray,
    counts: np.ndarray,
    time_s: float,
    absorber: np.ndarray | None = None,
    channels: int = 1,
    scans: int = 1,
) -> Path:
    # Real BRML rows: time, absorption factor, 2theta, theta, three other drives, then the counts (column 7).
    absorber = np.ones_like(counts) if absorber is None else absorber
    datums = "".join(
        f"<Datum>{time_s},{a:g},{x:.4f},{x / 2:.4f},0,0,0,{c:g}</Datum>"
        for x, c, a in zip(two_theta, counts, absorber, strict=True)
    )
    xsi = 'xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance"'
    raw = f"""<?xml version="1.0"?><RawData {xsi}>
<FixedInformation><Instrument><PrimaryTracks><TrackInfoData><MountedTube>
<WaveLengthAlpha1 Value="{CU_KA1}"/><WaveLengthAlpha2 Value="{CU_KA2}"/><WaveLengthRatio Value="0.5"/>
</MountedTube></TrackInfoData></PrimaryTracks></Instrument></FixedInformation>
<DataRoutes>
<DataRoute RouteFlag="Planned"><Datum>1,1,0,0,0,0,0,999</Datum></DataRoute>
<DataRoute RouteFlag="Measured">
<ScanInformation ScanName="TwoThetaOmegaScan"><ScanAxes><ScanAxisInfo AxisId="TwoTheta">
<Start>{two_theta[0]}</Start><Increment>0.05</Increment></ScanAxisInfo></ScanAxes></ScanInformation>
{datums}
<DataViews>
<RawDataView xsi:type="FixedRawDataView" Start="0" Length="1" LogicName="MeasuredTime"/>
<RawDataView xsi:type="FixedRawDataView" Start="1" Length="1" LogicName="AbsorptionFactor"/>
<RawDataView xsi:type="VaryingRawDataView" Start="2" Length="5"><Varying>
<FieldDefinitions FieldName="TwoTheta" AxisId="TwoTheta"/><FieldDefinitions FieldName="Theta" AxisId="Theta"/>
</Varying></RawDataView>
<RawDataView xsi:type="RecordedRawDataView" Start="7" Length="{channels}"><Recording LogicName="ScanCounter">
<Unit Base="Counts"/></Recording></RawDataView>
</DataViews></DataRoute></DataRoutes></RawData>"""
    members = [f"Experiment0/RawData{k}.xml" for k in range(scans)]
    container = (
        '<?xml version="1.0"?><DataContainer><RawDataReferenceList>'
        + "".join(f"<string>{m}</string>" for m in members)
        + "</RawDataReferenceList></DataContainer>"
    )
    path = tmp_path / "scan.brml"
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("Experiment0/DataContainer.xml", container)
        for member in members:
            archive.writestr(member, raw)
    return path


def test_bruker_brml_columns_from_data_views(tmp_path: Path) -> None:
    two_theta, intensity = _reference_scan(70)
    counts = np.round(intensity * 0.5)
    pattern = read_pattern(_brml(tmp_path, two_theta, counts, time_s=0.5))
    np.testing.assert_allclose(pattern.two_theta_deg, np.round(two_theta, 4), atol=1e-12)
    np.testing.assert_allclose(pattern.intensity, counts / 0.5, rtol=1e-12)
    assert pattern.metadata["format"] == "brml"
    assert pattern.wavelength_angstrom == pytest.approx((CU_KA1 + 0.5 * CU_KA2) / 1.5)


def test_bruker_brml_absorber_is_already_in_the_counts(tmp_path: Path) -> None:
    """The AbsorptionFactor column records an absorber the stored counts already include (a public BRML reader
    reports a real file whose counts run smoothly across a switch from 1 to 8.3; GSAS-II does not apply it): not multiplied again."""
    two_theta, intensity = _reference_scan(70)
    counts = np.round(intensity)
    absorber = np.where(intensity > np.percentile(intensity, 90), 8.3, 1.0)
    pattern = read_pattern(_brml(tmp_path, two_theta, counts, time_s=1.0, absorber=absorber))
    np.testing.assert_allclose(pattern.intensity, counts, rtol=1e-12)
    two = read_pattern(_brml(tmp_path, two_theta, counts, time_s=1.0, scans=2))
    np.testing.assert_allclose(two.intensity, counts, rtol=1e-12)
    assert two.metadata["reader_notes"].startswith(
        "the file holds 2 scans (Experiment0/RawData0.xml, Experiment0/RawData1.xml); the first was read"
    )
    with pytest.raises(MeasuredFormatError, match=r"scan.brml: .*records 1280 detector channels per point"):
        read_pattern(_brml(tmp_path, two_theta, counts, time_s=1.0, channels=1280))
    with pytest.raises(MeasuredFormatError, match=r"scan.brml: a <RawDataView> has Length='x', not a whole"):
        read_pattern(_brml(tmp_path, two_theta, counts, time_s=1.0, channels="x"))  # type: ignore[arg-type]
    # Another recorded channel (a temperature, two values a point) ahead of the counter is not the counts.
    path = _brml(tmp_path, two_theta, counts, time_s=1.0)
    with zipfile.ZipFile(path) as archive:
        members = {n: archive.read(n) for n in archive.namelist()}
    members["Experiment0/RawData0.xml"] = members["Experiment0/RawData0.xml"].replace(
        b"<DataViews>",
        b'<DataViews><RawDataView xsi:type="RecordedRawDataView" Start="3" Length="2">'
        b'<Recording LogicName="Temperature"><Unit Base="Celsius"/></Recording></RawDataView>',
    )
    with zipfile.ZipFile(path, "w") as archive:
        for name, data in members.items():
            archive.writestr(name, data)
    np.testing.assert_allclose(read_pattern(path).intensity, counts, rtol=1e-12)


def _raw_v3(two_theta: np.ndarray, intensity: np.ndarray, ratio: float) -> bytes:
    """DIFFRAC-plus RAW1.01: 712-byte file header, 304-byte range header, supplementary record, float32 data."""
    header = bytearray(712)
    header[0:8] = b"RAW1.01\x00"
    struct.pack_into("<II", header, 8, 1, 1)  # file status done, one range
    header[326:335] = b"quartz-01"
    kalpha_mean = (CU_KA1 + ratio * CU_KA2) / (1 + ratio)
    struct.pack_into("<5d", header, 616, kalpha_mean, CU_KA1, CU_KA2, 1.39222, ratio)
    supplementary = 40
    rng = bytearray(304)
    struct.pack_into("<IIdd", rng, 0, 304, two_theta.size, two_theta[0] / 2, two_theta[0])
    struct.pack_into("<d", rng, 176, two_theta[1] - two_theta[0])
    struct.pack_into("<f", rng, 192, 1.5)
    struct.pack_into("<II", rng, 252, 4, supplementary)
    return bytes(header) + bytes(rng) + bytes(supplementary) + intensity.astype("<f4").tobytes()


def test_bruker_raw_version_3(tmp_path: Path) -> None:
    two_theta, intensity = _reference_scan(80)
    path = tmp_path / "scan.raw"
    path.write_bytes(_raw_v3(two_theta, intensity, ratio=0.5))
    pattern = read_pattern(path)
    np.testing.assert_allclose(pattern.two_theta_deg, two_theta, atol=1e-9)
    np.testing.assert_allclose(pattern.intensity, intensity.astype(np.float32), rtol=0)
    assert pattern.metadata["sample"] == "quartz-01"
    assert pattern.wavelength_angstrom == pytest.approx((CU_KA1 + 0.5 * CU_KA2) / 1.5)
    monochromated = tmp_path / "mono.raw"
    monochromated.write_bytes(_raw_v3(two_theta, intensity, ratio=0.0))
    assert read_pattern(monochromated).wavelength_angstrom == pytest.approx(CU_KA1)
    assert "reader_notes" not in pattern.metadata
    two_ranges = bytearray(_raw_v3(two_theta, intensity, ratio=0.5))
    struct.pack_into("<I", two_ranges, 12, 2)
    (tmp_path / "two.raw").write_bytes(bytes(two_ranges))
    assert read_pattern(tmp_path / "two.raw").metadata["reader_notes"] == (
        "the file holds 2 ranges; the first was read: export a range on its own to read another"
    )


def _raw_v4_range(scan_type: str, two_theta: np.ndarray, intensity: np.ndarray) -> bytes:
    header = bytearray(160)
    struct.pack_into("<I", header, 0, 160)
    header[32 : 32 + len(scan_type)] = scan_type.encode()
    struct.pack_into("<ddIf", header, 72, two_theta[0], two_theta[1] - two_theta[0], two_theta.size, 0.8)
    struct.pack_into("<d", header, 112, CU_KA1)
    drive = bytearray(64)  # one type-50 drive record naming 2Theta with its start at +56
    struct.pack_into("<II", drive, 0, 50, 64)
    drive[12:18] = b"2Theta"
    struct.pack_into("<d", drive, 56, two_theta[0])
    struct.pack_into("<II", header, 136, 4, len(drive))
    return bytes(header) + bytes(drive) + intensity.astype("<f4").tobytes()


def test_bruker_raw_version_4_skips_non_2theta_ranges(tmp_path: Path) -> None:
    two_theta, intensity = _reference_scan(90)
    head = bytearray(61)
    head[0:7] = b"RAW4.00"
    head[12:22] = b"03/14/2024"
    text_value = b"corundum\n"
    text_record = bytearray(36 + len(text_value))
    struct.pack_into("<II", text_record, 0, 10, len(text_record))
    text_record[12:20] = b"SAMPLEID"
    text_record[36:] = text_value
    source = bytearray(120)
    struct.pack_into("<II", source, 0, 30, 120)
    struct.pack_into("<5d", source, 72, (CU_KA1 + 0.5 * CU_KA2) / 1.5, CU_KA1, CU_KA2, 1.39222, 0.5)
    source[116:118] = b"Cu"
    rocking = _raw_v4_range("Rocking Curve", np.array([10.0, 10.01, 10.02]), np.array([1.0, 2.0, 3.0]))
    coupled = _raw_v4_range("Locked Coupled", two_theta, intensity)
    path = tmp_path / "scan.raw"
    path.write_bytes(bytes(head) + bytes(text_record) + bytes(source) + rocking + coupled)
    pattern = read_pattern(path)
    np.testing.assert_allclose(pattern.two_theta_deg, two_theta, atol=1e-9)
    np.testing.assert_allclose(pattern.intensity, intensity.astype(np.float32), rtol=0)
    assert pattern.metadata["raw_sampleid"] == "corundum"
    assert pattern.metadata["anode"] == "Cu"
    assert pattern.wavelength_angstrom == pytest.approx((CU_KA1 + 0.5 * CU_KA2) / 1.5)
    assert pattern.metadata["reader_notes"] == (
        "the file holds 2 ranges (Rocking Curve, Locked Coupled); range 2 was read, the first 2θ one: export a "
        "range on its own to read another"
    )
    # DIFFRAC.SUITE names the coupled scan "Coupled TwoTheta/Theta".
    suite = tmp_path / "suite.raw"
    suite.write_bytes(
        bytes(head) + bytes(source) + _raw_v4_range("Coupled TwoTheta/Theta", two_theta, intensity)
    )
    np.testing.assert_allclose(read_pattern(suite).two_theta_deg, two_theta, atol=1e-9)
    assert "reader_notes" not in read_pattern(suite).metadata


def _uxd(ranges: list[tuple[str, str, list[str]]], file_keys: str = "") -> str:
    """A UXD file: ``file_keys`` lines, then per range (drive, its keys and marker, data lines)."""
    lines = ["; converted by XCH", "_FILEVERSION=1", "_SAMPLE='quartz-01'", *file_keys.splitlines()]
    for number, (drive, keys, data) in enumerate(ranges, start=1):
        lines += [f"; (Data for Range number {number})", f"_DRIVE='{drive}'", *keys.splitlines(), *data]
    return "\n".join(lines) + "\n"


def test_bruker_uxd_paired_and_counts_only_ranges(tmp_path: Path) -> None:
    two_theta, intensity = _reference_scan()
    counts = np.round(intensity).astype(int)
    wavelengths = f"_WL1={CU_KA1:.6f}\n_WL2={CU_KA2:.6f}\n_WLRATIO=0.500000"
    rocking = ("THETA", "_START=10.0\n_STEPSIZE=0.01\n_2THETACOUNTS", ["10.00 5", "10.01 7"])
    paired = tmp_path / "paired.uxd"
    paired.write_text(
        _uxd(
            [
                rocking,
                (
                    "COUPLED",
                    "_STEPTIME=1.0\n_2THETACOUNTS",
                    [f"  {x:.4f}  {c}" for x, c in zip(two_theta, counts, strict=True)],
                ),
            ],
            wavelengths,
        )
    )
    pattern = read_pattern(paired)
    np.testing.assert_allclose(pattern.two_theta_deg, two_theta, atol=1e-9)
    np.testing.assert_array_equal(pattern.intensity, counts)
    assert pattern.wavelength_angstrom == pytest.approx((CU_KA1 + 0.5 * CU_KA2) / 1.5)
    assert pattern.metadata["format"] == "uxd"
    assert pattern.metadata["uxd_range"] == "2 (COUPLED)"
    assert pattern.metadata["intensity_unit"] == "counts"

    # Intensities only, four to a line, the range placed by _START and _STEPSIZE; read by content from a .txt.
    chunks = [" ".join(str(c) for c in counts[i : i + 4]) for i in range(0, counts.size, 4)]
    keys = f"_START={two_theta[0]:.4f}\n_STEPSIZE={two_theta[1] - two_theta[0]:.4f}\n_CPS"
    implied = tmp_path / "implied.txt"
    implied.write_text(
        _uxd([("2THETA", keys, chunks), ("COUPLED", "_2THETACOUNTS", ["50.0 1"])], f"_WL1={CU_KA1}")
    )
    pattern = read_pattern(implied)
    np.testing.assert_allclose(pattern.two_theta_deg, two_theta, atol=1e-9)
    np.testing.assert_array_equal(pattern.intensity, counts)
    assert pattern.wavelength_angstrom == pytest.approx(CU_KA1)
    assert pattern.metadata["intensity_unit"] == "counts per second"

    only_rocking = tmp_path / "rocking.uxd"
    only_rocking.write_text(_uxd([rocking]))
    with pytest.raises(MeasuredFormatError, match=r"rocking.uxd: no 2θ range \(drives found: THETA\)"):
        read_pattern(only_rocking)
    no_step = tmp_path / "nostep.uxd"
    no_step.write_text(_uxd([("COUPLED", "_START=10\n_COUNTS", ["1 2 3"])]))
    with pytest.raises(MeasuredFormatError, match="nostep.uxd: a _COUNTS/_CPS range without"):
        read_pattern(no_step)


def test_bruker_uxd_two_theta_printed_rounded_is_placed_by_the_header(tmp_path: Path) -> None:
    """XCH prints the 2θ column to 4 significant digits (xylib's BT86.UXD: 9.985, 10.00, 10.02 at a 0.015592°
    step), so above 100° angles repeat (119.3, 119.3, 119.4); the header's _START + i·_STEPSIZE is the axis."""
    step, n = 0.015592, 7504
    two_theta = 3.0 + step * np.arange(n)
    counts = 200 + np.arange(n) % 7
    rows = [f"{float(f'{x:.4g}'):.4g}\t{c}" for x, c in zip(two_theta, counts, strict=True)]
    keys = f"_STEPSIZE={step}\n_START=3.000000\n_2THETA=3.000000\n_2THETACOUNTS"
    path = tmp_path / "bt86.uxd"
    path.write_text(_uxd([("COUPLED", keys, rows)], f"_WL1={CU_KA1}"))
    pattern = read_pattern(path)
    np.testing.assert_allclose(pattern.two_theta_deg, two_theta, atol=1e-9)
    np.testing.assert_array_equal(pattern.intensity, counts)
    assert pattern.metadata["uxd_two_theta"].startswith("_START + i·_STEPSIZE")
    # A column that the header does not describe is kept as it is (and here refused for its repeated angle).
    shifted = tmp_path / "other.uxd"
    shifted.write_text(_uxd([("COUPLED", keys.replace("_START=3.000000", "_START=2.0"), rows)]))
    with pytest.raises(MeasuredFormatError, match="other.uxd: 2θ 100 occurs twice"):
        read_pattern(shifted)
    second = tmp_path / "second.uxd"
    second.write_text(_uxd([("COUPLED", keys, rows[:50]), ("COUPLED", keys, rows[:50])]))
    assert read_pattern(second).metadata["reader_notes"] == (
        "the file holds 2 ranges; range 1 was read, the first 2θ one: export a range on its own to read another"
    )


def _udf(two_theta: np.ndarray, counts: np.ndarray, end: float) -> str:
    rows = [", ".join(str(c) for c in counts[i : i + 8]) for i in range(0, counts.size, 8)]
    header = [
        "SampleIdent,quartz-01 ,/",
        "Anode,Cu ,/",
        f"LabdaAlpha1, {CU_KA1} ,/",
        f"LabdaAlpha2, {CU_KA2} ,/",
        "RatioAlpha21, 0.50000 ,/",
        f"DataAngleRange, {two_theta[0]:.4f}, {end:.4f},/",
        f"ScanStepSize, {two_theta[1] - two_theta[0]:.3f},/",
        "ScanStepTime, 1.00,/",
        "RawScan",
    ]
    return "\n".join(header + rows) + "/\n"


def test_philips_udf_and_sietronics_cpi_counts_placed_by_their_headers(tmp_path: Path) -> None:
    two_theta, intensity = _reference_scan()
    counts = np.round(intensity).astype(int)
    udf = tmp_path / "scan.udf"
    udf.write_text(_udf(two_theta, counts, end=two_theta[-1]))
    pattern = read_pattern(udf)
    np.testing.assert_allclose(pattern.two_theta_deg, two_theta, atol=1e-9)
    np.testing.assert_array_equal(pattern.intensity, counts)
    assert pattern.wavelength_angstrom == pytest.approx((CU_KA1 + 0.5 * CU_KA2) / 1.5)
    assert pattern.metadata["format"] == "udf" and pattern.metadata["udf_SampleIdent"] == "quartz-01"
    assert "reader_notes" not in pattern.metadata

    cut = tmp_path / "cut.dat"  # read by content whatever the extension; the end does not match the counts
    cut.write_text(_udf(two_theta, counts[:200], end=two_theta[-1]))
    pattern = read_pattern(cut)
    assert pattern.two_theta_deg.size == 200 and pattern.metadata["format"] == "udf"
    assert (
        "200 counts at 0.05° steps from 10° end at 19.95°, where the header says 25°"
        in pattern.metadata["reader_notes"]
    )
    assert pattern.metadata["reader_notes"] in raw_signal_warnings(pattern)

    header = ["SIETRONICS XRD SCAN", f"{two_theta[0]:.2f}", f"{two_theta[-1]:.2f}", "0.05", "Cu", "1.54056"]
    cpi = tmp_path / "scan.cpi"
    cpi.write_text("\n".join([*header, "1-1-1900", "1.0", "test scan", "SCANDATA", *map(str, counts)]) + "\n")
    pattern = read_pattern(cpi)
    np.testing.assert_allclose(pattern.two_theta_deg, two_theta, atol=1e-9)
    np.testing.assert_array_equal(pattern.intensity, counts)
    assert pattern.wavelength_angstrom == pytest.approx(1.54056) and pattern.metadata["anode"] == "Cu"

    broken = tmp_path / "broken.cpi"
    broken.write_text("\n".join([*header, "SCANDATA", "12", "x7", "13"]) + "\n")
    with pytest.raises(
        MeasuredFormatError, match="broken.cpi: line 9 of the CPI counts is not numeric: 'x7'"
    ):
        read_pattern(broken)
    no_step = tmp_path / "nostep.udf"
    no_step.write_text("SampleIdent,x ,/\nDataAngleRange, 10.0, 12.0,/\nRawScan\n1, 2, 3/\n")
    with pytest.raises(MeasuredFormatError, match="nostep.udf: no start angle or no positive step"):
        read_pattern(no_step)


def test_dispatch_by_content_then_extension(tmp_path: Path) -> None:
    two_theta, intensity = _reference_scan(30)
    disguised = tmp_path / "bruker.dat"
    disguised.write_bytes(_raw_v3(two_theta, intensity, ratio=0.5))
    assert read_pattern(disguised).metadata["format"] == "bruker_raw"
    gsas_as_dat = tmp_path / "gsas.dat"
    rows = "\n".join(f"{100 * x:.3f} {y} 1" for x, y in zip(two_theta, intensity, strict=True))
    gsas_as_dat.write_text(f"title\nBANK 1 30 30 CONS 1000 5 0 0 FXYE\n{rows}\n")
    assert read_pattern(gsas_as_dat).metadata["format"] == "gsas"
    plain = tmp_path / "plain.xy"
    plain.write_text("\n".join(f"{x} {y}" for x, y in zip(two_theta, intensity, strict=True)))
    forced = read_pattern(plain, format="txt")
    assert forced.metadata["format"] == "xy"
    with pytest.raises(MeasuredFormatError, match="plain.xy.*unknown format 'spc'"):
        read_pattern(plain, format="spc")


# ------------------------------------------------------------------------------------------------------
# Bad files
# ------------------------------------------------------------------------------------------------------


def _bad_files(tmp_path: Path) -> dict[str, Path]:
    files = {
        "empty.xy": b"",
        "garbage.xy": bytes(np.random.default_rng(0).integers(0, 256, 2000, dtype=np.uint8)),
        "words.txt": b"this is not\na diffraction pattern\n",
        "one_column.xy": b"10.0\n10.1\n10.2\n",
        "four_columns.csv": b"10,1,2,3\n11,1,2,3\n",
        "ragged.xy": b"10 1\n11 2\n12 3 4\n",
        "swapped.xy": b"# intensity first\n500 10.0\n20 10.1\n800 10.2\n",
        "text_between_data.xy": b"10 1\n11 2\nend of data\n12 3\n",
        "radians.xy": b"0.1 5\n0.2 6\n3.5 7\n200 8\n",
        "broken.xrdml": b"<?xml version='1.0'?><xrdMeasurements><xrdMeasurement>",
        "short_times.xrdml": _xrdml(
            '<positions axis="2Theta"><startPosition>10</startPosition><endPosition>11</endPosition></positions>',
            "<countingTimes>1 1</countingTimes><counts>5 6 7</counts>",
        ).encode(),
        "truncated.raw": b"RAW1.01\x00" + bytes(100),
        "old.raw": b"RAW " + bytes(300),
        "nozip.rasx": b"PK\x03\x04 not really a zip",
        "nodata.ras": b"*RAS_DATA_START\n*RAS_HEADER_START\n*RAS_HEADER_END\n*RAS_INT_START\n*RAS_INT_END\n",
        "nobank.fxye": b"title only\n# comment\n",
    }
    paths = {}
    for name, content in files.items():
        path = tmp_path / name
        path.write_bytes(content)
        paths[name] = path
    empty_zip = tmp_path / "empty.brml"
    with zipfile.ZipFile(empty_zip, "w") as archive:
        archive.writestr("Experiment0/readme.txt", "nothing")
    paths["empty.brml"] = empty_zip
    return paths


def test_bad_files_raise_measured_format_error_naming_the_file(tmp_path: Path) -> None:
    for name, path in _bad_files(tmp_path).items():
        with pytest.raises(MeasuredFormatError) as caught:
            read_pattern(path, format="brml" if name == "empty.brml" else None)
        message = str(caught.value)
        assert name in message, message
        assert isinstance(caught.value, ValueError)
    with pytest.raises(MeasuredFormatError, match="missing.xy: no such file"):
        read_pattern(tmp_path / "missing.xy")


# ------------------------------------------------------------------------------------------------------
# Wavelength conversion
# ------------------------------------------------------------------------------------------------------

SILICON_A = 5.431020  # NIST SRM 640 lattice constant, angstrom
SILICON_HKL = [(1, 1, 1), (2, 2, 0), (3, 1, 1), (4, 0, 0), (3, 3, 1), (4, 2, 2), (5, 1, 1)]


def _silicon_d() -> list[float]:
    return [SILICON_A / math.sqrt(sum(i * i for i in hkl)) for hkl in SILICON_HKL]


def test_mo_peaks_land_at_the_cu_two_theta_of_their_d_spacing() -> None:
    mo_two_theta = np.arange(3.0, 60.0, 0.004)
    mo_peaks = [_bragg_two_theta_deg(d, MO_KA1) for d in _silicon_d()]
    pattern = MeasuredPattern(
        mo_two_theta, 10 + 1000 * _gaussian_pattern(mo_two_theta, mo_peaks, 0.02), MO_KA1, "synthetic-Mo", {}
    )
    gridded = to_model_grid(pattern, wavelength_angstrom=None, model_wavelength_angstrom=CU_KA1, **GRID)
    for d in _silicon_d():
        expected = _bragg_two_theta_deg(d, CU_KA1)
        near = np.flatnonzero(np.abs(CENTRES - expected) < 1.0)
        peak_bin = near[np.argmax(gridded.pattern[near])]
        assert abs(CENTRES[peak_bin] - expected) <= BIN_WIDTH, (d, expected, CENTRES[peak_bin])
    # Mo 2theta above 2 asin(lambda_Mo / lambda_Cu) = 54.8 deg has no Cu counterpart.
    assert any("dropped" in w for w in gridded.warnings)
    limit = 2 * math.degrees(math.asin(MO_KA1 / CU_KA1))
    assert limit < mo_two_theta[-1]
    # The window starts at the bin centre of the first Mo point's Cu angle and runs to the grid's end.
    first_cu = _bragg_two_theta_deg(MO_KA1 / (2 * math.sin(math.radians(mo_two_theta[0] / 2))), CU_KA1)
    assert gridded.window_bins == (int(np.flatnonzero(CENTRES >= first_cu)[0]), GRID["n_bins"])


def test_two_theta_conversion_round_trip_preserves_d_spacing() -> None:
    two_theta = np.linspace(5.0, 150.0, 500)
    to_mo = convert_two_theta_deg(two_theta, from_wavelength_angstrom=CU_KA1, to_wavelength_angstrom=MO_KA1)
    back = convert_two_theta_deg(to_mo, from_wavelength_angstrom=MO_KA1, to_wavelength_angstrom=CU_KA1)
    np.testing.assert_allclose(back, two_theta, rtol=0, atol=1e-9)
    d_cu = CU_KA1 / (2 * np.sin(np.radians(two_theta / 2)))
    d_mo = MO_KA1 / (2 * np.sin(np.radians(to_mo / 2)))
    np.testing.assert_allclose(d_mo, d_cu, rtol=1e-12)
    unreachable = convert_two_theta_deg(
        np.array([40.0, 80.0]), from_wavelength_angstrom=MO_KA1, to_wavelength_angstrom=CU_KA1
    )
    assert math.isfinite(unreachable[0]) and math.isnan(unreachable[1])


def test_gridded_round_trip_cu_to_mo_grid_and_back() -> None:
    cu_two_theta = np.arange(5.0, 120.0, 0.01)
    cu_peaks = [_bragg_two_theta_deg(d, CU_KA1) for d in _silicon_d()]
    cu = MeasuredPattern(
        cu_two_theta, _gaussian_pattern(cu_two_theta, cu_peaks, 0.08), CU_KA1, "synthetic-Cu", {}
    )
    direct = to_model_grid(cu, wavelength_angstrom=None, model_wavelength_angstrom=CU_KA1, **GRID)
    mo_grid = {"two_theta_min_deg": 2.0, "two_theta_max_deg": 60.0, "n_bins": 4096}
    on_mo = to_model_grid(cu, wavelength_angstrom=None, model_wavelength_angstrom=MO_KA1, **mo_grid)
    mo_width = (mo_grid["two_theta_max_deg"] - mo_grid["two_theta_min_deg"]) / mo_grid["n_bins"]
    first, end = on_mo.window_bins
    mo_centres = mo_grid["two_theta_min_deg"] + (np.arange(first, end) + 0.5) * mo_width
    back = to_model_grid(
        MeasuredPattern(mo_centres, on_mo.pattern[first:end], MO_KA1, "Mo grid", {}),
        wavelength_angstrom=None,
        model_wavelength_angstrom=CU_KA1,
        **GRID,
    )
    overlap = slice(
        max(direct.window_bins[0], back.window_bins[0]), min(direct.window_bins[1], back.window_bins[1])
    )
    a, b = direct.pattern[overlap], back.pattern[overlap]
    assert np.corrcoef(a, b)[0, 1] > 0.99
    for peak in cu_peaks:
        near = np.flatnonzero(np.abs(CENTRES - peak) < 0.5)
        assert abs(np.argmax(direct.pattern[near]) - np.argmax(back.pattern[near])) <= 1


# ------------------------------------------------------------------------------------------------------
# Resampling, window, normalisation, warnings
# ------------------------------------------------------------------------------------------------------


def _bin_averaged_gaussians(centres: list[float], sigma: float) -> np.ndarray:
    """Exact mean of a sum of unit Gaussians over each grid bin (erf), the reference for averaging."""
    edges = GRID["two_theta_min_deg"] + np.arange(GRID["n_bins"] + 1) * BIN_WIDTH
    total = np.zeros(GRID["n_bins"])
    erf = np.vectorize(math.erf)
    for c in centres:
        cdf = 0.5 * (1 + erf((edges - c) / (sigma * math.sqrt(2))))
        total += np.diff(cdf) * sigma * math.sqrt(2 * math.pi) / BIN_WIDTH
    return total


def _shape_residual(observed: np.ndarray, reference: np.ndarray) -> float:
    """Largest deviation after the best least-squares scale, relative to the reference maximum."""
    scale = float(observed @ reference / (reference @ reference))
    return float(np.max(np.abs(observed / scale - reference)) / reference.max())


def test_resampling_fine_measurement_is_the_bin_average() -> None:
    peaks, sigma = [25.3, 47.81, 88.0], 0.05
    two_theta = np.arange(4.0, 121.0, 0.002)
    pattern = MeasuredPattern(two_theta, _gaussian_pattern(two_theta, peaks, sigma), CU_KA, "fine", {})
    gridded = to_model_grid(pattern, wavelength_angstrom=None, model_wavelength_angstrom=CU_KA, **GRID)
    assert gridded.window_bins == (0, GRID["n_bins"])
    reference = _bin_averaged_gaussians(peaks, sigma)
    assert _shape_residual(gridded.pattern.astype(float), reference) < 0.02
    for c in peaks:
        near = np.abs(CENTRES - c) < 0.5
        centroid = np.sum(CENTRES[near] * gridded.pattern[near]) / np.sum(gridded.pattern[near])
        assert abs(centroid - c) < 0.1 * BIN_WIDTH


def test_resampling_coarse_measurement_interpolates_and_says_so() -> None:
    peaks, sigma = [30.0, 61.7], 0.3
    two_theta = np.arange(5.0, 120.05, 0.1)
    pattern = MeasuredPattern(two_theta, _gaussian_pattern(two_theta, peaks, sigma), CU_KA, "coarse", {})
    gridded = to_model_grid(pattern, wavelength_angstrom=None, model_wavelength_angstrom=CU_KA, **GRID)
    reference = _gaussian_pattern(CENTRES, peaks, sigma)
    assert _shape_residual(gridded.pattern.astype(float), reference) < 0.02
    assert any("interpolated" in w for w in gridded.warnings)
    # The integrated intensity of each peak is conserved to within the interpolation error.
    areas = [np.sum(gridded.pattern[np.abs(CENTRES - c) < 2]) * BIN_WIDTH for c in peaks]
    assert areas[0] == pytest.approx(areas[1], rel=0.01)


def test_window_is_the_bins_mostly_inside_the_measured_range() -> None:
    grid = {"two_theta_min_deg": 5.0, "two_theta_max_deg": 120.0, "n_bins": 115}  # 1-degree bins
    centres = 5.0 + np.arange(115) + 0.5
    for low, high in [(30.0, 60.0), (30.4, 60.6), (30.6, 60.4), (2.0, 130.0), (5.0, 120.0)]:
        two_theta = np.linspace(low, high, 3001)
        pattern = MeasuredPattern(two_theta, _ripple(two_theta), CU_KA, "ripple", {})
        gridded = to_model_grid(pattern, wavelength_angstrom=None, model_wavelength_angstrom=CU_KA, **grid)
        inside = np.flatnonzero((centres >= low) & (centres <= high))  # over half of the bin is measured
        assert gridded.window_bins == (inside[0], inside[-1] + 1), (low, high)


def test_normalisation_contract() -> None:
    rng = np.random.default_rng(3)
    two_theta = np.arange(15.0, 95.0, 0.02)
    intensity = 200 * _gaussian_pattern(two_theta, [20.0, 33.3, 70.0], 0.1) + rng.normal(0, 2, two_theta.size)
    assert intensity.min() < 0  # noise dips below zero and must be clipped
    pattern = MeasuredPattern(two_theta, intensity, CU_KA, "noisy", {})
    gridded = to_model_grid(pattern, wavelength_angstrom=None, model_wavelength_angstrom=CU_KA, **GRID)
    first, end = gridded.window_bins
    inside = gridded.pattern[first:end]
    assert np.all(gridded.pattern[:first] == 0) and np.all(gridded.pattern[end:] == 0)
    assert inside.min() >= 0
    assert np.quantile(inside.astype(np.float64), 0.99) == pytest.approx(1.0, rel=1e-5)
    scaled = MeasuredPattern(two_theta, 1234.5 * intensity, CU_KA, "scaled", {})
    again = to_model_grid(scaled, wavelength_angstrom=None, model_wavelength_angstrom=CU_KA, **GRID)
    np.testing.assert_allclose(again.pattern, gridded.pattern, rtol=1e-5, atol=1e-7)


def test_warnings_narrow_late_and_mostly_empty() -> None:
    two_theta = np.arange(30.0, 50.0, 0.01)
    intensity = np.where(two_theta < 36.0, 1.0 + np.sin(two_theta) ** 2, 0.0)  # 70 % of the range is zero
    pattern = MeasuredPattern(two_theta, intensity, CU_KA, "narrow", {})
    gridded = to_model_grid(pattern, wavelength_angstrom=None, model_wavelength_angstrom=CU_KA, **GRID)
    text = " | ".join(gridded.warnings)
    covered = 100 * (gridded.window_bins[1] - gridded.window_bins[0]) / GRID["n_bins"]
    assert f"covers only {covered:.0f}% of the model grid" in text
    assert f"{MIN_TRAINING_WINDOW_DEG:.0f} deg" in text
    assert "outside the training windows of the paper's A.1 recipe" in text
    assert "mostly empty" in text
    # On a wider grid the same rule holds as a fraction: 70 deg of a 170 deg grid is below 52 %.
    wide = {"two_theta_min_deg": 0.0, "two_theta_max_deg": 170.0, "n_bins": 1700}
    seventy_deg = np.arange(10.0, 80.0, 0.05)
    seventy = MeasuredPattern(seventy_deg, _ripple(seventy_deg), CU_KA, "seventy", {})
    on_wide = to_model_grid(seventy, wavelength_angstrom=None, model_wavelength_angstrom=CU_KA, **wide)
    assert any("covers only 41% of the model grid" in w for w in on_wide.warnings)
    # The clean full-range pattern has peaks of training width (0.094 deg FWHM) on the ripple: the ripple alone
    # is a row of 1.6 deg wide bumps, which now earns the warning that they are wider than any training peak.
    full_deg = np.arange(5.0, 120.0, 0.02)
    full_intensity = _ripple(full_deg) + 10 * _gaussian_pattern(
        full_deg, [20.0, 35.0, 50.0, 65.0, 80.0, 95.0], 0.04
    )
    full = MeasuredPattern(full_deg, full_intensity, CU_KA, "full", {})
    clean = to_model_grid(full, wavelength_angstrom=None, model_wavelength_angstrom=CU_KA, **GRID)
    assert clean.warnings == []
    ripple_only = MeasuredPattern(full_deg, _ripple(full_deg), CU_KA, "ripple", {})
    broad = to_model_grid(ripple_only, wavelength_angstrom=None, model_wavelength_angstrom=CU_KA, **GRID)
    assert len(broad.warnings) == 1 and "peaks wider than any in training" in broad.warnings[0]


def test_option_wavelength_overrides_file_with_a_warning() -> None:
    two_theta = np.arange(10.0, 100.0, 0.02)
    pattern = MeasuredPattern(two_theta, _gaussian_pattern(two_theta, [40.0], 0.1), CU_KA, "cu", {})
    gridded = to_model_grid(pattern, wavelength_angstrom=MO_KA1, model_wavelength_angstrom=CU_KA, **GRID)
    assert any("from the option" in w for w in gridded.warnings)
    expected = _bragg_two_theta_deg(MO_KA1 / (2 * math.sin(math.radians(20.0))), CU_KA)
    assert abs(CENTRES[np.argmax(gridded.pattern)] - expected) <= BIN_WIDTH


def test_no_overlap_with_the_grid_is_an_error() -> None:
    two_theta = np.arange(125.0, 150.0, 0.02)
    pattern = MeasuredPattern(two_theta, np.ones_like(two_theta), CU_KA, "high-angle", {})
    with pytest.raises(ValueError, match="high-angle.*does not cover any bin"):
        to_model_grid(pattern, wavelength_angstrom=None, model_wavelength_angstrom=CU_KA, **GRID)


def test_measured_pattern_validates_its_arrays() -> None:
    with pytest.raises(MeasuredFormatError, match="src: 3 2θ values but 2 intensities"):
        MeasuredPattern(np.array([1.0, 2.0, 3.0]), np.array([1.0, 2.0]), None, "src", {})
    with pytest.raises(MeasuredFormatError, match="not strictly ascending"):
        MeasuredPattern(np.array([1.0, 1.0, 3.0]), np.ones(3), None, "src", {})
    with pytest.raises(MeasuredFormatError, match="wavelength 154.0"):
        MeasuredPattern(np.array([1.0, 2.0]), np.ones(2), 154.0, "src", {})


# ------------------------------------------------------------------------------------------------------
# Size limits and bounded memory
# ------------------------------------------------------------------------------------------------------


def _write_long_xy(path: Path, n_rows: int) -> tuple[np.ndarray, np.ndarray]:
    """'DDD.DDDD CCCC' rows (2θ from 5° in 1e-4° steps, integer counts), built as bytes in numpy: formatting
    this many floats in Python would dominate the test. Returns the values written."""
    tenth_millideg = 50000 + np.arange(n_rows)
    counts = (1000 + 500 * np.sin(np.arange(n_rows) / 50.0)).astype(np.int64)
    whole, frac = tenth_millideg // 10000, tenth_millideg % 10000
    digits = [
        whole // 100,
        whole // 10 % 10,
        whole % 10,
        ".",
        frac // 1000,
        frac // 100 % 10,
        frac // 10 % 10,
    ]
    digits += [frac % 10, " ", counts // 1000 % 10, counts // 100 % 10, counts // 10 % 10, counts % 10, "\n"]
    table = np.empty((n_rows, len(digits)), dtype=np.uint8)
    for column, digit in enumerate(digits):
        table[:, column] = ord(digit) if isinstance(digit, str) else 48 + digit
    path.write_bytes(b"# 2theta counts, wavelength 1.5406 A\n" + table.tobytes())
    return tenth_millideg / 10000.0, counts.astype(np.float64)


def test_long_text_pattern_is_read_in_memory_proportional_to_its_arrays(tmp_path: Path) -> None:
    path = tmp_path / "long.xy"
    two_theta, counts = _write_long_xy(path, 300_000)
    tracemalloc.start()
    try:
        pattern = read_pattern(path)
        peak_bytes = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    np.testing.assert_allclose(pattern.two_theta_deg, two_theta, rtol=0, atol=1e-9)
    np.testing.assert_array_equal(pattern.intensity, counts)
    assert pattern.wavelength_angstrom == pytest.approx(1.5406)
    output_bytes = pattern.two_theta_deg.nbytes + pattern.intensity.nbytes
    # A Python string per field (the old reader) peaks at ~30x the arrays; block-wise parsing at ~3x.
    assert peak_bytes < 4 * output_bytes, (peak_bytes, output_bytes)


def test_long_text_pattern_with_comments_and_a_bad_line_in_later_chunks(tmp_path: Path) -> None:
    two_theta = np.round(np.arange(5.0, 5.0 + 0.001 * 60_000, 0.001), 4)[:60_000]
    intensity = np.arange(60_000) % 97 + 1.0
    rows = [f"{x:.4f}, {y:g}" for x, y in zip(two_theta, intensity, strict=True)]
    rows[30_000] += "  # inline note"
    rows.insert(45_000, "; a comment line")
    rows.insert(50_000, "!another")
    path = tmp_path / "commented.csv"
    path.write_text("\n".join(rows) + "\n")
    pattern = read_pattern(path)
    np.testing.assert_array_equal(pattern.two_theta_deg, two_theta)
    np.testing.assert_array_equal(pattern.intensity, intensity)
    assert "a comment line" in pattern.metadata["header"]
    path.write_text("\n".join(rows) + "\nend of scan\n")
    assert read_pattern(path).metadata["footer"] == "end of scan"
    rows[55_000] = "end of scan"
    path.write_text("\n".join(rows) + "\n")
    with pytest.raises(MeasuredFormatError, match="commented.csv: line 55001 of the data is not numeric"):
        read_pattern(path)
    plain = [f"{x:.4f}, {y:g}" for x, y in zip(two_theta, intensity, strict=True)]
    plain[55_000] = "end of scan"
    path.write_text("\n".join(plain) + "\n")
    with pytest.raises(MeasuredFormatError, match="commented.csv: line 55001 of the data is not numeric"):
        read_pattern(path)  # the same, found line by line once a chunk without comments failed to parse whole
    rows[55_000] = "1.0 2.0 3.0 4.0"
    path.write_text("\n".join(rows) + "\n")
    with pytest.raises(MeasuredFormatError, match="line 55001 has 4 columns but the data started with 2"):
        read_pattern(path)


def test_files_and_zip_members_over_the_size_limit_are_refused(tmp_path: Path) -> None:
    text = tmp_path / "scan.xy"
    _write_long_xy(text, 10_000)  # 140 kB
    with pytest.raises(MeasuredFormatError) as caught:
        read_pattern(text, max_bytes=100_000)
    message = str(caught.value)
    assert message.startswith(f"{text}: the file is 0.134 MiB, over the 0.0954 MiB limit"), message
    assert "--max-file-mb" in message and "max_bytes=" in message
    assert read_pattern(text, max_bytes=200_000).two_theta_deg.size == 10_000

    # A zip of a few kB whose member unpacks to 1.4 MB: the file passes, the member does not.
    two_theta, intensity = _reference_scan(100_000, step=0.001)
    profile = "\n".join(f"{x:.4f}\t{y:.1f}\t1" for x, y in zip(two_theta, intensity, strict=True))
    rasx = tmp_path / "big.rasx"
    with zipfile.ZipFile(rasx, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("Data0/Profile0.txt", profile)
    assert rasx.stat().st_size < 1_000_000 < len(profile)
    with pytest.raises(
        MeasuredFormatError, match=r"big.rasx: member Data0/Profile0.txt unpacks to .* MiB; .*--max-file-mb"
    ):
        read_pattern(rasx, max_bytes=1_000_000)
    assert read_pattern(rasx, max_bytes=4_000_000).two_theta_deg.size == 100_000

    stored = _brml(tmp_path, *_reference_scan(20_000, step=0.005), time_s=1.0)
    brml = tmp_path / "deflated.brml"
    with zipfile.ZipFile(stored) as source, zipfile.ZipFile(brml, "w", zipfile.ZIP_DEFLATED) as archive:
        for name in source.namelist():
            archive.writestr(name, source.read(name))
    assert brml.stat().st_size < 300_000 < stored.stat().st_size
    with pytest.raises(
        MeasuredFormatError, match=r"deflated.brml: member Experiment0/RawData0.xml unpacks to"
    ):
        read_pattern(brml, max_bytes=300_000)
    assert read_pattern(brml).two_theta_deg.size == 20_000


# ------------------------------------------------------------------------------------------------------
# Degenerate intensities
# ------------------------------------------------------------------------------------------------------

_DEGENERATE_DEG = np.arange(5.0, 120.0, 0.02)
_PEAKS = 5.0 + 100.0 * _gaussian_pattern(_DEGENERATE_DEG, [28.4, 47.3, 56.1], 0.1)


@pytest.mark.parametrize(
    ("name", "intensity", "problem"),
    [
        (
            "zeros",
            np.zeros_like(_DEGENERATE_DEG),
            "all 5750 intensities are 0: the pattern holds no measurable signal",
        ),
        ("negated", -_PEAKS, "5750 of 5750 intensities (100%) are negative"),
        (
            "flat",
            np.full_like(_DEGENERATE_DEG, 42.0),
            "all 5750 intensities equal 42: a flat line has no peaks",
        ),
        (
            "mostly-negated",
            np.where(np.arange(5750) < 4000, -_PEAKS, _PEAKS),
            "4000 of 5750 intensities (70%) are negative",
        ),
    ],
)
def test_patterns_without_measurable_signal_are_refused(
    name: str, intensity: np.ndarray, problem: str
) -> None:
    pattern = MeasuredPattern(_DEGENERATE_DEG, intensity, CU_KA, name, {})
    with pytest.raises(MeasuredSignalError) as caught:
        to_model_grid(pattern, wavelength_angstrom=None, model_wavelength_angstrom=CU_KA, **GRID)
    assert str(caught.value).startswith(f"{name}: {problem}"), str(caught.value)
    assert "nothing was predicted" in str(caught.value)
    assert isinstance(caught.value, MeasuredFormatError)


def test_half_negative_pattern_is_clipped_with_a_warning() -> None:
    # Background-subtracted: ±0.5 about 0 on every other point, the peaks up.
    half = _PEAKS - 5.0 + np.where(np.arange(_PEAKS.size) % 2, 0.5, -0.5)
    pattern = MeasuredPattern(_DEGENERATE_DEG, half, CU_KA, "half", {})
    gridded = to_model_grid(pattern, wavelength_angstrom=None, model_wavelength_angstrom=CU_KA, **GRID)
    text = " | ".join(gridded.warnings)
    n_negative = np.count_nonzero(half < 0)
    assert 2700 < n_negative <= 2875
    assert f"{n_negative} of 5750 intensities ({100 * n_negative / 5750:.1f}%) are negative" in text
    assert "clipped to 0" in text
    assert gridded.pattern.min() >= 0 and gridded.pattern.max() > 0
    clean = MeasuredPattern(_DEGENERATE_DEG, _PEAKS, CU_KA, "clean", {})
    assert not any(
        "negative" in w
        for w in to_model_grid(
            clean, wavelength_angstrom=None, model_wavelength_angstrom=CU_KA, **GRID
        ).warnings
    )


def test_signal_only_outside_the_model_range_is_refused() -> None:
    two_theta = np.arange(100.0, 150.0, 0.02)
    intensity = np.where(two_theta > 121.0, _gaussian_pattern(two_theta, [130.0], 0.2) + 1.0, 0.0)
    pattern = MeasuredPattern(two_theta, intensity, CU_KA, "high", {})
    with pytest.raises(
        MeasuredSignalError, match="high: no positive intensity inside the model's 2θ range 5-120 deg"
    ):
        to_model_grid(pattern, wavelength_angstrom=None, model_wavelength_angstrom=CU_KA, **GRID)


@pytest.mark.parametrize(
    ("two_theta", "why"),
    [
        (np.array([10.0, 20.0, 30.0]), "puts 3 points over 20.0 deg"),  # a wide range, too few points
        (np.arange(30.0, 31.0, 0.01), "puts 100 points over 1.0 deg"),  # many points, one peak's width
    ],
)
def test_too_little_measured_is_refused(two_theta, why) -> None:
    intensity = _gaussian_pattern(two_theta, [float(two_theta.mean())], 0.2) + 1.0
    pattern = MeasuredPattern(two_theta, intensity, CU_KA, "short", {})
    with pytest.raises(MeasuredSignalError, match=f"short: the measured range .* {why} of the model grid"):
        to_model_grid(pattern, wavelength_angstrom=None, model_wavelength_angstrom=CU_KA, **GRID)
    wide = np.arange(30.0, 30.0 + MIN_MEASURED_WINDOW_DEG + 0.5, 0.05)  # just wide enough: predicted
    pattern = MeasuredPattern(wide, _gaussian_pattern(wide, [32.0], 0.2) + 1.0, CU_KA, "enough", {})
    first, end = to_model_grid(
        pattern, wavelength_angstrom=None, model_wavelength_angstrom=CU_KA, **GRID
    ).window_bins
    assert (end - first) * 115.0 / 2048 >= MIN_MEASURED_WINDOW_DEG


def test_very_sparse_pattern_is_divided_by_its_maximum_with_a_warning() -> None:
    intensity = np.zeros_like(_DEGENERATE_DEG)
    intensity[[1000, 3000]] = [50.0, 200.0]  # two spikes: the 99th percentile of the bins is 0
    pattern = MeasuredPattern(_DEGENERATE_DEG, intensity, CU_KA, "spikes", {})
    gridded = to_model_grid(pattern, wavelength_angstrom=None, model_wavelength_angstrom=CU_KA, **GRID)
    assert gridded.pattern.max() == pytest.approx(1.0)
    assert any("divided by its maximum" in w for w in gridded.warnings)


# ------------------------------------------------------------------------------------------------------
# Intensities and widths at another wavelength, against pymatgen's simulation of the same phase
# ------------------------------------------------------------------------------------------------------

MO_KA = 0.71073  # pymatgen "MoKa", the K-alpha weighted mean
SYNCHROTRON = 0.459


def _nacl_sticks(
    wavelength_angstrom: float, two_theta_range: tuple[float, float]
) -> tuple[np.ndarray, np.ndarray]:
    """(2θ, integrated intensity) of rock-salt NaCl from pymatgen's XRDCalculator, unscaled."""
    xrd = pytest.importorskip("pymatgen.analysis.diffraction.xrd")
    from pymatgen.core import Lattice, Structure

    nacl = Structure.from_spacegroup(
        "Fm-3m", Lattice.cubic(5.6402), ["Na", "Cl"], [[0.0, 0.0, 0.0], [0.5, 0.5, 0.5]]
    )
    sticks = xrd.XRDCalculator(wavelength=wavelength_angstrom).get_pattern(
        nacl, scaled=False, two_theta_range=two_theta_range
    )
    return np.asarray(sticks.x), np.asarray(sticks.y)


def _render_sticks(
    two_theta: np.ndarray, positions: np.ndarray, areas: np.ndarray, fwhm_deg: float
) -> np.ndarray:
    """Intensity density per degree: a Gaussian of ``fwhm_deg`` and the stick's area at each stick."""
    sigma = fwhm_deg / (2 * math.sqrt(2 * math.log(2)))
    out = np.zeros_like(two_theta)
    for centre, area in zip(positions, areas, strict=True):
        near = np.abs(two_theta - centre) < 8 * sigma
        out[near] += (
            area * np.exp(-0.5 * ((two_theta[near] - centre) / sigma) ** 2) / (sigma * math.sqrt(2 * math.pi))
        )
    return out


def _lorentz_polarisation(two_theta_deg: np.ndarray) -> np.ndarray:
    """(1 + cos²2θ) / (sin²θ cosθ), as pymatgen's XRDCalculator computes it."""
    theta = np.radians(two_theta_deg) / 2
    return (1 + np.cos(2 * theta) ** 2) / (np.sin(theta) ** 2 * np.cos(theta))


def test_lp_reweighting_is_pymatgens_lp_ratio_times_the_jacobian() -> None:
    cu_peaks, cu_areas = _nacl_sticks(CU_KA, (5.0, 120.0))
    mo_peaks, mo_areas = _nacl_sticks(MO_KA, (2.0, 55.0))
    mo_at_cu = convert_two_theta_deg(mo_peaks, from_wavelength_angstrom=MO_KA, to_wavelength_angstrom=CU_KA)
    match = np.array([np.argmin(np.abs(mo_at_cu - p)) for p in cu_peaks])
    np.testing.assert_allclose(mo_at_cu[match], cu_peaks, atol=1e-9)
    # Same structure factors: pymatgen's integrated intensities differ by its LP factor only.
    np.testing.assert_allclose(
        cu_areas / mo_areas[match],
        _lorentz_polarisation(cu_peaks) / _lorentz_polarisation(mo_peaks[match]),
        rtol=1e-9,
    )
    # The density factor is that ratio times d(2θ_Mo)/d(2θ_Cu), here by central differences.
    mo_deg = np.linspace(3.0, 50.0, 97)
    step = 1e-6
    stretch = (
        convert_two_theta_deg(mo_deg + step, from_wavelength_angstrom=MO_KA, to_wavelength_angstrom=CU_KA)
        - convert_two_theta_deg(mo_deg - step, from_wavelength_angstrom=MO_KA, to_wavelength_angstrom=CU_KA)
    ) / (2 * step)
    cu_deg = convert_two_theta_deg(mo_deg, from_wavelength_angstrom=MO_KA, to_wavelength_angstrom=CU_KA)
    expected = _lorentz_polarisation(cu_deg) / _lorentz_polarisation(mo_deg) / stretch
    factor = lp_reweighting(mo_deg, source_wavelength_angstrom=MO_KA, model_wavelength_angstrom=CU_KA)
    np.testing.assert_allclose(factor, expected, rtol=1e-6)


@pytest.mark.parametrize(
    ("wavelength", "fwhm_deg", "step_deg", "stop_deg", "uncorrected_worst"),
    [(MO_KA, 0.03, 0.002, 55.0, 1.4), (SYNCHROTRON, 0.004, 0.0005, 35.0, 1.5)],
    ids=["Mo", "synchrotron"],
)
def test_patterns_at_other_wavelengths_reach_the_model_like_the_cu_pattern(
    wavelength: float, fwhm_deg: float, step_deg: float, stop_deg: float, uncorrected_worst: float
) -> None:
    cu_peaks, cu_areas = _nacl_sticks(CU_KA, (5.0, 120.0))
    cu_deg = np.arange(4.0, 121.0, 0.005)
    cu_pattern = MeasuredPattern(
        cu_deg, _render_sticks(cu_deg, cu_peaks, cu_areas, 0.08), CU_KA, "NaCl at Cu"
    )
    cu = to_model_grid(cu_pattern, wavelength_angstrom=None, model_wavelength_angstrom=CU_KA, **GRID)
    peaks, areas = _nacl_sticks(wavelength, (1.0, stop_deg))
    source_deg = np.arange(1.0, stop_deg, step_deg)
    pattern = MeasuredPattern(
        source_deg, _render_sticks(source_deg, peaks, areas, fwhm_deg), wavelength, "NaCl"
    )
    mapped = to_model_grid(pattern, wavelength_angstrom=None, model_wavelength_angstrom=CU_KA, **GRID)
    uncorrected = to_model_grid(
        pattern, wavelength_angstrom=None, model_wavelength_angstrom=CU_KA, lp_correction=False, **GRID
    )
    # Strong (> 5% of the strongest), isolated (no other line within 1 deg) Cu lines between 15 and 115 deg.
    isolated = np.array([np.sum(np.abs(cu_peaks - p) < 1.0) == 1 for p in cu_peaks])
    strong = cu_peaks[isolated & (cu_areas > 0.05 * cu_areas.max()) & (cu_peaks > 15) & (cu_peaks < 115)]
    assert strong.size >= 7

    def relative_areas(gridded: GriddedPattern) -> np.ndarray:
        sums = np.array([gridded.pattern[np.abs(CENTRES - p) < 0.4].sum() for p in strong], dtype=np.float64)
        return sums / sums.sum()

    # Measured: within 0.01% at both wavelengths; without the correction 1.50x (Mo) and 1.65x (0.459 A) apart.
    np.testing.assert_allclose(relative_areas(mapped), relative_areas(cu), rtol=0.002)
    off = relative_areas(uncorrected) / relative_areas(cu)
    assert off.max() / off.min() > uncorrected_worst
    for p in strong:
        near = np.flatnonzero(np.abs(CENTRES - p) < 0.4)
        assert abs(np.argmax(mapped.pattern[near]) - np.argmax(cu.pattern[near])) <= 1
        centroids = [np.sum(CENTRES[near] * g.pattern[near]) / np.sum(g.pattern[near]) for g in (mapped, cu)]
        # A peak narrower than a bin (0.015 deg from 0.459 A) has its bin centroid up to half a bin off.
        assert abs(centroids[0] - centroids[1]) < 0.5 * BIN_WIDTH, (p, centroids)


def test_resampling_keeps_peak_areas_on_an_uneven_axis() -> None:
    # Steps between 0.001 and 0.005 deg, as a wavelength mapping makes them, and peaks narrower than a bin:
    # bins average the interpolated curve, so each peak keeps its area (the old per-bin mean of the points
    # was up to 20% off here).
    steps = 0.001 + 0.004 * (0.5 + 0.5 * np.sin(np.arange(40_000) * 0.37))
    two_theta = 4.5 + np.cumsum(steps)
    two_theta = two_theta[two_theta < 120.5]
    peaks = np.arange(10.3, 115.0, 9.7)
    intensity = _render_sticks(two_theta, peaks, np.ones(peaks.size), 0.03)
    pattern = MeasuredPattern(two_theta, intensity, CU_KA, "uneven", {})
    gridded = to_model_grid(pattern, wavelength_angstrom=None, model_wavelength_angstrom=CU_KA, **GRID)
    sums = np.array([gridded.pattern[np.abs(CENTRES - p) < 0.3].sum() for p in peaks], dtype=np.float64)
    np.testing.assert_allclose(sums / sums.mean(), 1.0, atol=0.01)


def test_training_fwhm_range_is_the_a1_recipes() -> None:
    profiles = pytest.importorskip("xrdsynth.profiles")
    config = pytest.importorskip("xrdsynth.config")
    recipe, grid = config.RecipeConfig(), config.GridConfig()
    edges = np.linspace(grid.two_theta_min_deg, grid.two_theta_max_deg, grid.n_bins + 1)
    narrowest, widest = training_fwhm_range_deg(edges, recipe.wavelength_angstrom)
    # xrdsynth's own per-edge extremes of the rendered TCH FWHM (the range its LUT engine covers).
    recipe_widths = profiles._recipe_widths_deg(recipe, grid)
    np.testing.assert_allclose(narrowest, recipe_widths[0], rtol=1e-9)
    np.testing.assert_allclose(widest, recipe_widths[1], rtol=1e-9)


def test_strong_peak_widths_on_a_noisy_pattern_with_background() -> None:
    rng = np.random.default_rng(7)
    two_theta = np.arange(10.0, 110.0, 0.01)
    peaks = np.array([21.0, 33.5, 47.2, 58.8, 71.3, 88.6, 101.9])
    fwhm = 0.12
    intensity = 200 + 2 * two_theta + _render_sticks(two_theta, peaks, np.linspace(100, 40, peaks.size), fwhm)
    intensity += rng.normal(0, 3, two_theta.size)
    centres, widths = strong_peak_widths(two_theta, intensity)
    assert sorted(np.round(centres, 1)) == sorted(np.round(peaks, 1))
    np.testing.assert_allclose(widths, fwhm, rtol=0.1)


def test_width_warnings_and_broadening_of_mapped_patterns() -> None:
    peaks, areas = _nacl_sticks(SYNCHROTRON, (1.0, 35.0))
    source_deg = np.arange(1.0, 35.0, 0.0005)
    sharp = MeasuredPattern(source_deg, _render_sticks(source_deg, peaks, areas, 0.004), SYNCHROTRON, "sync")
    plain = to_model_grid(sharp, wavelength_angstrom=None, model_wavelength_angstrom=CU_KA, **GRID)
    narrow = [w for w in plain.warnings if "narrower than any in training" in w]
    # 0.004 deg at 0.459 A is 0.014-0.023 deg at Cu K-alpha, against at least 0.06 deg in training.
    assert len(narrow) == 1 and "mapping from 0.459 Å widened them" in narrow[0], plain.warnings
    broadened = to_model_grid(
        sharp, wavelength_angstrom=None, model_wavelength_angstrom=CU_KA, broaden_to_training=True, **GRID
    )
    assert not any("narrower than any in training" in w for w in broadened.warnings), broadened.warnings
    assert any("FWHM Gaussian (broaden_to_training)" in w for w in broadened.warnings)
    # Broadening keeps the areas: the strongest lines keep their share of the intensity.
    for p in convert_two_theta_deg(
        peaks[areas > 0.2 * areas.max()], from_wavelength_angstrom=SYNCHROTRON, to_wavelength_angstrom=CU_KA
    ):
        near = np.abs(CENTRES - p) < 0.4
        assert broadened.pattern[near].sum() / broadened.pattern.sum() == pytest.approx(
            plain.pattern[near].sum() / plain.pattern.sum(), rel=0.01
        )
    # Broad Mo peaks (0.25 deg at Mo) become 0.55-0.8 deg at Cu: wider than the recipe's widest below 60 deg.
    mo_peaks, mo_areas = _nacl_sticks(MO_KA, (2.0, 28.0))
    mo_deg = np.arange(2.0, 28.0, 0.005)
    broad = MeasuredPattern(mo_deg, _render_sticks(mo_deg, mo_peaks, mo_areas, 0.25), MO_KA, "broad Mo")
    wide = to_model_grid(broad, wavelength_angstrom=None, model_wavelength_angstrom=CU_KA, **GRID)
    assert any("peaks wider than any in training" in w and "from 0.71073 Å" in w for w in wide.warnings), (
        wide.warnings
    )


def test_background_subtracted_scan_with_a_negative_offset_is_clipped_not_refused() -> None:
    """A background-subtracted export's noise sits around 0: a residual offset of a tenth of the noise makes most
    of its baseline negative. Its peaks still point up, so it is clipped and predicted (the lab recipe trains on
    such patterns); only a pattern whose strongest excursion points down is refused."""
    rng = np.random.default_rng(0)
    noise = rng.normal(0.0, 8.0, _DEGENERATE_DEG.size)
    subtracted = 1000.0 * _gaussian_pattern(_DEGENERATE_DEG, [28.4, 47.3, 56.1], 0.1) + noise
    for offset in (0.0, -1.0, -2.0):
        pattern = MeasuredPattern(_DEGENERATE_DEG, subtracted + offset, CU_KA, "subtracted", {})
        negative = np.count_nonzero(pattern.intensity < 0) / pattern.intensity.size
        gridded = to_model_grid(pattern, wavelength_angstrom=None, model_wavelength_angstrom=CU_KA, **GRID)
        assert gridded.pattern.min() >= 0 and gridded.pattern.max() > 0
        assert any("clipped to 0" in w for w in gridded.warnings)
        if offset < 0:
            assert negative > 0.5
    # One extreme point does not decide: a dropout written as -9999 in a good scan is clipped ...
    dropout = subtracted + 20.0
    dropout[100] = -9999.0
    pattern = MeasuredPattern(_DEGENERATE_DEG, dropout, CU_KA, "dropout", {})
    gridded = to_model_grid(pattern, wavelength_angstrom=None, model_wavelength_angstrom=CU_KA, **GRID)
    assert any("clipped to 0" in w for w in gridded.warnings)
    # ... and a flipped scan stays refused with one cosmic-ray spike; flipped, under half of it may be negative
    # (an offset lifts the noise), yet the peaks point down.
    for lift, spike in ((2.0, 0.0), (0.0, 5e4)):
        intensity = -(subtracted - lift)
        intensity[200] += spike
        flipped = MeasuredPattern(_DEGENERATE_DEG, intensity, CU_KA, "flipped", {})
        with pytest.raises(MeasuredSignalError, match="the strongest excursions point down"):
            to_model_grid(flipped, wavelength_angstrom=None, model_wavelength_angstrom=CU_KA, **GRID)
    assert np.count_nonzero(-(subtracted - 2.0) < 0) < 0.5 * subtracted.size


def test_a_gap_in_the_scan_is_named_with_its_range() -> None:
    """An 8° hole (50-58°, 8% of the window's bins) used to be filled by a straight line without a word: the
    interpolation warning counts empty bins over the whole window only. A uniformly coarse step leaves short runs
    of empty bins, which are not gaps."""
    two_theta = np.arange(10.0, 110.0, 0.02)
    holed = two_theta[(two_theta < 50.0) | (two_theta > 58.0)]
    pattern = MeasuredPattern(
        holed, 10.0 + _gaussian_pattern(holed, [28.4, 47.3, 76.1], 0.1), CU_KA, "holed", {}
    )
    gridded = to_model_grid(pattern, wavelength_angstrom=None, model_wavelength_angstrom=CU_KA, **GRID)
    (gap,) = [w for w in gridded.warnings if "gap" in w]
    lo, hi = map(float, re.search(r"the widest ([\d.]+)-([\d.]+) deg", gap).groups())
    assert "1 gap(s)" in gap and lo == pytest.approx(50.0, abs=0.1) and hi == pytest.approx(58.0, abs=0.1), (
        gap
    )
    coarse = np.arange(10.0, 110.0, 0.12)
    pattern = MeasuredPattern(
        coarse, 10.0 + _gaussian_pattern(coarse, [28.4, 47.3], 0.3), CU_KA, "coarse", {}
    )
    warnings = to_model_grid(
        pattern, wavelength_angstrom=None, model_wavelength_angstrom=CU_KA, **GRID
    ).warnings
    assert any("interpolated" in w for w in warnings) and not any("gap" in w for w in warnings)


def test_a_pattern_is_divided_by_the_percentile_its_model_was_trained_with() -> None:
    two_theta = np.arange(10.0, 110.0, 0.02)
    pattern = MeasuredPattern(
        two_theta, 10.0 + _gaussian_pattern(two_theta, [28.4, 47.3], 0.1), CU_KA, "p", {}
    )
    for percentile in (99.0, 95.0):
        training = TrainingRanges.from_recipe({"normalization_percentile": percentile})
        gridded = to_model_grid(
            pattern, wavelength_angstrom=None, model_wavelength_angstrom=CU_KA, training=training, **GRID
        )
        first, end = gridded.window_bins
        assert np.quantile(gridded.pattern[first:end], percentile / 100) == pytest.approx(1.0)
    with pytest.raises(ValueError, match="normalization_percentile must be in \\(0, 100\\]"):
        TrainingRanges.from_recipe({"normalization_percentile": 0.0})


def _recipe_dict(name: str, **overrides) -> dict:
    """A recipe as a mixture store records it (attribute ``recipe``: xrdsynth's RecipeConfig as JSON)."""
    config = pytest.importorskip("xrdsynth.config")
    return config.recipe_preset(name, **overrides).model_dump(mode="json")


def test_training_ranges_of_the_a1_recipe_are_the_a1_constants() -> None:
    assert TrainingRanges.from_recipe(_recipe_dict("paper")) == A1
    # A store's recipe lacking a field takes RecipeConfig's default, the A.1 value.
    assert TrainingRanges.from_recipe({}) == A1
    assert A1.min_window_deg == MIN_TRAINING_WINDOW_DEG == 60.0
    with pytest.raises(ValueError, match="recipe field window_low_deg must be a \\[low, high\\] pair"):
        TrainingRanges.from_recipe({"window_low_deg": "5-20"})
    with pytest.raises(ValueError, match="unknown anodes \\['W'\\]"):
        TrainingRanges.from_recipe({"lab": {"anode_probabilities": {"W": 1.0}}})


def test_lab_recipe_ranges_follow_its_windows_widths_and_anodes() -> None:
    profiles = pytest.importorskip("xrdsynth.profiles")
    config = pytest.importorskip("xrdsynth.config")
    lab = TrainingRanges.from_recipe(_recipe_dict("lab"))
    assert (lab.max_window_start_deg, lab.min_window_end_deg) == (40.0, 60.0)
    assert lab.caglioti_w_deg2 == (0.0008, 0.012) and lab.microstrain == (0.0, 0.003)
    # Cu, Co, Mo, Fe, Cr, Ag all drawn: q = λ_anode / λ_model from 0.364 (Ag) to 1.486 (Cr).
    assert len(lab.instrument_wavelength_ratios) == 6
    assert min(lab.instrument_wavelength_ratios) == pytest.approx(0.560885 / CU_KA)
    # With a Cu tube only (J = 1) the widths are xrdsynth's own extremes for the lab ranges.
    cu_only = _recipe_dict("lab", lab={"anode_probabilities": {"Cu": 1.0}})
    grid = config.GridConfig()
    edges = np.linspace(grid.two_theta_min_deg, grid.two_theta_max_deg, grid.n_bins + 1)
    narrowest, widest = training_fwhm_range_deg(edges, CU_KA, TrainingRanges.from_recipe(cu_only))
    recipe_widths = profiles._recipe_widths_deg(config.RecipeConfig(**cu_only), grid)
    np.testing.assert_allclose(narrowest, recipe_widths[0], rtol=1e-9)
    np.testing.assert_allclose(widest, recipe_widths[1], rtol=1e-9)
    # Short-wavelength tubes widen the instrument part on the Cu grid (J > 1), long ones narrow it (J < 1).
    all_narrowest, all_widest = training_fwhm_range_deg(edges, CU_KA, lab)
    assert np.all(all_widest > widest) and np.all(all_narrowest <= narrowest)
    # Above 2θ' = 180° for Co (118.9 deg on the Cu grid), Fe and Cr, the narrowing tubes drop out.
    assert np.all(all_narrowest[edges < 118.0] < narrowest[edges < 118.0])
    # At 2θ -> 0, J = cosθ'/(q cosθ) -> 1/q: with no strain and 1 mm crystallites (no Scherrer width) the
    # extremes are the Cr tube's sqrt(ΔW_min)/q and the Ag tube's sqrt(ΔW_max)/q.
    bare = TrainingRanges.from_recipe(
        _recipe_dict("lab", microstrain=(0.0, 0.0), crystallite_size_log10_nm=(6.0, 6.0))
    )
    low_narrowest, low_widest = training_fwhm_range_deg(np.array([1e-3]), CU_KA, bare)
    assert low_narrowest[0] == pytest.approx(math.sqrt(0.0008) * CU_KA / 2.291, rel=1e-3)
    assert low_widest[0] == pytest.approx(math.sqrt(0.012) * CU_KA / 0.560885, rel=1e-3)


def test_window_warning_follows_the_training_recipe() -> None:
    # A NIST-like Cu scan over 30-120 deg: outside A.1's windows (start <= 20 deg), inside the lab recipe's
    # (start <= 40 deg, end >= 60 deg).
    two_theta = np.arange(30.0, 120.0, 0.02)
    intensity = _ripple(two_theta) + 10 * _gaussian_pattern(two_theta, [35.0, 50.0, 65.0, 80.0, 95.0], 0.06)
    pattern = MeasuredPattern(two_theta, intensity, CU_KA, "30-120", {})
    lab = TrainingRanges.from_recipe(_recipe_dict("lab"))
    paper = to_model_grid(pattern, wavelength_angstrom=None, model_wavelength_angstrom=CU_KA, **GRID)
    assert paper.warnings == [
        "window 30.0-120.0 deg lies outside the training windows of the paper's A.1 recipe (start <= 20 deg, "
        "end >= 80 deg): the model never saw that part of the grid unmeasured"
    ]
    trained = to_model_grid(
        pattern, wavelength_angstrom=None, model_wavelength_angstrom=CU_KA, training=lab, **GRID
    )
    assert trained.warnings == []
    # The lab windows have limits too: a scan ending at 55 deg is named against "the training recipe".
    short = MeasuredPattern(two_theta[two_theta < 55.0], intensity[two_theta < 55.0], CU_KA, "short", {})
    late = to_model_grid(
        short, wavelength_angstrom=None, model_wavelength_angstrom=CU_KA, training=lab, **GRID
    )
    assert any(
        "outside the training windows of the training recipe (start <= 40 deg, end >= 60 deg)" in w
        for w in late.warnings
    ), late.warnings


def test_width_warning_follows_the_training_recipes_anodes() -> None:
    # The broad Mo pattern of test_width_warnings_and_broadening_of_mapped_patterns: 0.55-0.8 deg on the Cu
    # grid, wider than anything A.1 renders, within what the lab recipe's Mo and Ag tubes render (J ~ 2.2-2.6).
    mo_peaks, mo_areas = _nacl_sticks(MO_KA, (2.0, 28.0))
    mo_deg = np.arange(2.0, 28.0, 0.005)
    broad = MeasuredPattern(mo_deg, _render_sticks(mo_deg, mo_peaks, mo_areas, 0.25), MO_KA, "broad Mo")
    paper = to_model_grid(broad, wavelength_angstrom=None, model_wavelength_angstrom=CU_KA, **GRID)
    assert any(
        "peaks wider than any in training" in w and "the paper's A.1 recipe's widest" in w
        for w in paper.warnings
    ), paper.warnings
    lab = TrainingRanges.from_recipe(_recipe_dict("lab"))
    trained = to_model_grid(
        broad, wavelength_angstrom=None, model_wavelength_angstrom=CU_KA, training=lab, **GRID
    )
    assert not any("peaks wider" in w or "narrower" in w for w in trained.warnings), trained.warnings
    # Broader still (0.33 deg at Mo, 0.76 deg at Cu): with crystallites of at least 25 nm, only the Mo and Ag
    # tubes' instrument widths, widened by J on the Cu grid, reach it; the same recipe with Cu and Co tubes
    # alone warns. (The lab preset's 5 nm crystallites reach it at any tube.)
    broader = MeasuredPattern(mo_deg, _render_sticks(mo_deg, mo_peaks, mo_areas, 0.33), MO_KA, "broader Mo")
    sized = {"crystallite_size_log10_nm": (1.4, 3.0)}
    all_tubes = TrainingRanges.from_recipe(_recipe_dict("lab", **sized))
    long_tubes = TrainingRanges.from_recipe(
        _recipe_dict("lab", **sized, lab={"anode_probabilities": {"Cu": 0.9, "Co": 0.1}})
    )
    for training, warns in [(lab, False), (all_tubes, False), (long_tubes, True)]:
        gridded = to_model_grid(
            broader, wavelength_angstrom=None, model_wavelength_angstrom=CU_KA, training=training, **GRID
        )
        found = [w for w in gridded.warnings if "the training recipe's widest" in w]
        assert len(found) == warns, (training.instrument_wavelength_ratios, gridded.warnings)
