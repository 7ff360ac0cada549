"""`pipelines/measured/rruff_pairs.py`: each pair is (1 - f)·major + f·minor point by point, of two phases with no
accepted space group in common and of different mineral groups, labelled so that `score-measured` reads both
phases; the same seed writes the same files."""

from __future__ import annotations

import numpy as np
import pytest

from pipeline_scripts import load_script
from xrdmodels.measured_eval import read_labelled

rruff_pairs = load_script("rruff_pairs", "pipelines/measured/rruff_pairs.py")

# (file, space group, accepted groups, mineral group, peak position in degrees)
MINERALS = (
    ("1.xy", 12, "12", 1, 20.0),
    ("2.xy", 12, "12", 1, 21.0),  # the same mineral group and space group as 1.xy: never paired with it
    ("3.xy", 225, "225", 2, 40.0),
    ("4.xy", 62, "62|14", 3, 60.0),
    ("5.xy", 14, "14", 4, 70.0),  # accepted for 4.xy's phase too: never paired with it
)


def _fake_experimental(root, grid=None):
    two_theta = np.round(np.arange(5.0, 90.0, 0.01), 2) if grid is None else grid
    (root / "rruff").mkdir(parents=True)
    labels = ["id,file,spacegroup_number,crystal_system,group"]
    rows = [
        "set,file,n_phases,spacegroups,spacegroups_accept,extra_or_trace,wavelength_angstrom,radiation,"
        "two_theta_min,two_theta_max,confidence,notes"
    ]
    for name, group, accept, mineral, centre in MINERALS:
        intensity = np.rint(1000.0 * np.exp(-0.5 * ((two_theta - centre) / 0.05) ** 2))
        np.savetxt(root / "rruff" / name, np.column_stack([two_theta, intensity]), fmt=["%.2f", "%d"])
        labels.append(f"{name[0]},{name},{group},x,{mineral}")
        rows.append(f"rruff,rruff/{name},1,{group},{accept},,1.5418,Cu,5,90,high,")
    rows.append("nist,other.xy,2,225;229,,,1.5406,Cu,30,120,high,")  # another set: not read
    (root / "rruff" / "labels.csv").write_text("\n".join(labels) + "\n")
    (root / "all_labels.csv").write_text("\n".join(rows) + "\n")
    return root


def test_pairs_are_weighted_sums_of_two_groups_and_read_as_two_phases(tmp_path) -> None:
    experimental = _fake_experimental(tmp_path / "exp")
    out = tmp_path / "pairs"
    rruff_pairs.main(["--out", str(out), "--n", "4", "--seed", "3", "--experimental", str(experimental)])
    labelled, failures = read_labelled(out / "labels.csv")
    assert not failures and len(labelled) == 4
    source = {name: np.loadtxt(experimental / "rruff" / name) for name, *_ in MINERALS}
    group_of = {name: group for name, group, *_ in MINERALS}
    pairs = set()
    for item in labelled:
        major, minor = item.row["notes"].split(", ")[:2]
        major, minor = major.removeprefix("major rruff/"), minor.removeprefix("minor rruff/")
        share = float(item.row["notes"].rsplit("f = ", 1)[1])
        assert 0.25 <= share <= 0.5 and group_of[major] != group_of[minor]
        assert {major, minor} not in ({"1.xy", "2.xy"}, {"4.xy", "5.xy"})
        pairs.add(frozenset((major, minor)))
        expected = np.rint((1 - share) * source[major][:, 1] + share * source[minor][:, 1])
        # The file keeps f to 3 decimals in its notes; the sum used the exact f, so allow one count of rounding.
        assert np.abs(item.pattern.intensity - expected).max() <= 1.0 + 1000 * 5e-4
        np.testing.assert_allclose(item.pattern.two_theta_deg, source[major][:, 0])
        accepted = {name: accept for name, _, accept, *_ in MINERALS}
        wanted = [set(map(int, accepted[name].split("|"))) for name in (major, minor)]
        # The header's "Cu K-alpha" names the anode: Cu's Kα mean, 1.54184 Å, the row's 1.5418 to its digits.
        assert [set(p) for p in item.phases] == wanted and item.wavelength_angstrom == pytest.approx(
            1.5418, abs=1e-4
        )
    assert len(pairs) == 4  # distinct
    # The same seed writes the same bytes; another seed another draw.
    again, other = tmp_path / "again", tmp_path / "other"
    rruff_pairs.main(["--out", str(again), "--n", "4", "--seed", "3", "--experimental", str(experimental)])
    assert (again / "labels.csv").read_bytes() == (out / "labels.csv").read_bytes()
    for item in labelled:
        assert (again / item.row["file"]).read_bytes() == (out / item.row["file"]).read_bytes()
    rruff_pairs.main(["--out", str(other), "--n", "4", "--seed", "4", "--experimental", str(experimental)])
    assert (other / "labels.csv").read_bytes() != (out / "labels.csv").read_bytes()


def test_pairs_refuse_what_they_cannot_do(tmp_path) -> None:
    experimental = _fake_experimental(tmp_path / "exp")
    with pytest.raises(SystemExit, match="only 8 distinct pairs could be drawn, asked for 11"):
        rruff_pairs.main(["--out", str(tmp_path / "o"), "--n", "11", "--experimental", str(experimental)])
    with pytest.raises(SystemExit, match="--minor-min 0.6"):
        rruff_pairs.main(
            ["--out", str(tmp_path / "o"), "--minor-min", "0.6", "--experimental", str(experimental)]
        )
    with pytest.raises(SystemExit, match="all_labels.csv not found: give --experimental the shared folder"):
        rruff_pairs.main(["--out", str(tmp_path / "o"), "--experimental", str(tmp_path)])
    ungrouped = _fake_experimental(tmp_path / "ungrouped")
    table = ungrouped / "rruff" / "labels.csv"
    table.write_text("".join(line for line in table.read_text().splitlines(True) if ",3.xy," not in line))
    with pytest.raises(SystemExit, match=r"rruff/3.xy has no mineral group in .*labels.csv"):
        rruff_pairs.main(["--out", str(tmp_path / "o"), "--experimental", str(ungrouped)])
    other = _fake_experimental(tmp_path / "coarse")
    np.savetxt(other / "rruff" / "3.xy", np.column_stack([np.arange(5.0, 90.0, 0.02), np.zeros(4250)]))
    with pytest.raises(SystemExit, match="3.xy is not on the common RRUFF grid"):
        rruff_pairs.main(["--out", str(tmp_path / "o"), "--experimental", str(other)])
