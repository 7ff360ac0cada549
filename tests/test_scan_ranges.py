"""`pipelines/measured/scan_ranges.py`: a crop keeps exactly the points inside its range, a coarser step every
k-th of them, and the table has one row per scan variant, the first paired +0/−0 with itself."""

from __future__ import annotations

import sys

import numpy as np

from pipeline_scripts import load_script
from xrdmodels.measured import MeasuredPattern

scan_ranges = load_script("scan_ranges", "pipelines/measured/scan_ranges.py")
make_checkpoint = load_script("checkpoint_factory", "tests/xrdmodels/checkpoint_factory.py").make_checkpoint


def test_a_scan_keeps_the_points_in_its_range_at_its_step() -> None:
    two_theta = np.round(np.arange(5.0, 90.0, 0.01), 2)
    pattern = MeasuredPattern(two_theta, np.arange(two_theta.size, dtype=float), 1.5418, "synthetic")
    cropped = scan_ranges.scan(pattern, 10.0, 70.0, 2)
    inside = two_theta[(two_theta >= 10.0) & (two_theta <= 70.0)]
    np.testing.assert_array_equal(cropped.two_theta_deg, inside[::2])
    assert cropped.two_theta_deg[0] == 10.0 and cropped.two_theta_deg[-1] == 70.0
    # Each kept point keeps its own intensity; the original pattern is left as it was.
    np.testing.assert_array_equal(cropped.intensity, np.round((cropped.two_theta_deg - 5.0) / 0.01))
    assert cropped.wavelength_angstrom == 1.5418 and pattern.two_theta_deg.size == 8500


def test_table_has_a_row_per_variant(tmp_path, monkeypatch, capsys) -> None:
    two_theta = np.arange(5.0, 90.0, 0.01)
    intensity = 20.0 + sum(800.0 * np.exp(-0.5 * ((two_theta - c) / 0.08) ** 2) for c in (28.4, 47.3, 56.1))
    (tmp_path / "p0.xy").write_text(
        "\n".join(f"{x:.3f} {y:.4f}" for x, y in zip(two_theta, intensity, strict=True))
    )
    labels = tmp_path / "labels.csv"
    labels.write_text(
        "set,file,spacegroups,spacegroups_accept,wavelength_angstrom\ndemo,p0.xy,225,,1.54184\n"
    )
    ckpt = make_checkpoint(tmp_path / "m.pt", n_bins=256)
    monkeypatch.setattr(sys, "argv", ["scan_ranges.py", str(ckpt), "--labels", str(labels), "--set", "demo"])
    scan_ranges.main()

    rows = [
        line for line in capsys.readouterr().out.splitlines() if line.startswith("| ") and "---" not in line
    ]
    assert len(rows) == 1 + len(scan_ranges.VARIANTS)  # + header
    assert rows[1].startswith(f"| {scan_ranges.VARIANTS[0][0]} | 1 | 0 |") and rows[1].endswith("| 0 / 0 |")
