"""`pipelines/measured/compare.py`: paired splits counted file by file, the sign test against a brute-force
binomial sum, multi-phase scans counted only when every phase is in the top 3, and clear errors."""

from __future__ import annotations

import json
from itertools import product
from pathlib import Path

import numpy as np
import pytest

from pipeline_scripts import load_script

compare = load_script("compare_measured", "pipelines/measured/compare.py")


def _write(path: Path, rankings: dict[str, list[int]], multi: list[list[int]]) -> Path:
    """A measured.json: single-phase files s0..s3 labelled 12 (or 14|15 for s3), two multi-phase scans
    labelled 225 + 229."""
    files = [
        {"set": "single", "file": name, "phases": [[14, 15]] if name == "s3" else [[12]], "top10": ranking}
        for name, ranking in rankings.items()
    ]
    files += [
        {"set": "multi", "file": f"m{i}", "phases": [[225], [229]], "top10": ranking}
        for i, ranking in enumerate(multi)
    ]
    summary = [{"set": "multi", "recall@K*": 0.75}, {"set": "single", "recall@K*": 0.5}]
    path.parent.mkdir(parents=True)
    path.write_text(json.dumps({"summary": summary, "files": files}))
    return path


def test_paired_table_counts_files_and_scans(tmp_path: Path) -> None:
    ranks = [2, 3, 4, 5, 6, 7, 8, 9, 10]
    base = _write(
        tmp_path / "a" / "measured.json",
        {"s0": [12, *ranks], "s1": [1, 12, *ranks[1:]], "s2": [1, *ranks], "s3": [15, *ranks]},
        [[225, 229, 1], [225, 1, 2, 229]],
    )
    other = _write(
        tmp_path / "b" / "measured.json",
        # s0 lost at hit@1 (still in the top 5), s1 won at hit@1, s2 lost everywhere (never found), s3 kept
        {"s0": [1, 12, *ranks[1:]], "s1": [12, *ranks], "s2": [1, *ranks], "s3": [2, 14, *ranks[1:]]},
        [[229, 1, 225], [1, 2, 3]],
    )
    text = compare.table([base, other], ["a", "b"], "single")
    rows = {line.split(" | ")[0].lstrip("| "): line for line in text.splitlines()[2:]}
    assert rows["a"].split(" | ")[1] == "0.500 / 0.750 / 0.750 / 0.750"
    assert rows["b"].split(" | ")[1] == "0.250 / 0.750 / 0.750 / 0.750"
    # hit@1: b wins s1, loses s0 and s3; hit@5: level
    assert "+1 −2 (1) / +0 −0 (1)" in rows["b"]
    assert rows["a"].endswith("| 0.750 | 1 of 2 |") and rows["b"].endswith("| 0.750 | 1 of 2 |")


def test_a_multi_phase_single_set_gets_its_every_phase_column(tmp_path: Path) -> None:
    """`--single-set multi` (as for rruff_pairs.py's two-phase patterns): its hit@k counts either phase, and its
    scans are also counted where every phase is in the top 3."""
    ranks = [2, 3, 4, 5, 6, 7, 8, 9, 10]
    base = _write(tmp_path / "a" / "measured.json", {"s0": [12, *ranks]}, [[225, 229, 1], [1, 229, 2, 225]])
    text = compare.table([base], ["a"], "multi")
    header, _, row = text.splitlines()
    assert "| multi recall@K* | multi every phase in top 3 |" in header
    cells = row.strip("| ").split(" | ")
    assert cells[1] == "0.500 / 1.000 / 1.000 / 1.000"  # m1 has 229 second, 225 fourth
    assert cells[3:5] == ["0.750", "1 of 2"]


def test_the_combined_ranking_is_compared_on_request(tmp_path: Path) -> None:
    """--ranking combined reads each file's combined top 10 and the combined summary, not the model's."""
    ranks = [2, 3, 4, 5, 6, 7, 8, 9, 10]
    paths = []
    for name, first in (("a", 1), ("b", 12)):
        path = _write(tmp_path / name / "measured.json", {"s0": [1, *ranks]}, [[1, 2, 3]])
        data = json.loads(path.read_text())
        data["combined_summary"] = [{"set": "multi", "recall@K*": 1.0}]
        for f in data["files"]:
            f["combined_top10"] = [first, *ranks] if f["set"] == "single" else [225, 229, 1]
        path.write_text(json.dumps(data))
        paths.append(path)
    rows = compare.table(paths, ["a", "b"], "single", ranking="combined").splitlines()[2:]
    assert rows[1].split(" | ")[1] == "1.000 / 1.000 / 1.000 / 1.000" and "+1 −0" in rows[1]
    assert rows[1].endswith("| 1.000 | 1 of 1 |")
    assert compare.table(paths, ["a", "b"], "single").splitlines()[3].split(" | ")[1].startswith("0.000")
    with pytest.raises(SystemExit, match="with the library ranking"):
        compare.table(paths, ["a", "b"], "single", ranking="library")


@pytest.mark.parametrize(("wins", "losses"), [(0, 0), (1, 0), (1, 2), (3, 9), (6, 6)])
def test_sign_test_matches_enumeration(wins: int, losses: int) -> None:
    n = wins + losses
    # Share of the 2^n fair-coin outcomes that split at least as unevenly as the observed one.
    extreme = sum(abs(2 * sum(o) - n) >= abs(wins - losses) for o in product((0, 1), repeat=n))
    assert compare.sign_test_p(wins, losses) == pytest.approx(extreme / 2**n)


def test_sign_test_matches_scipy_on_a_large_split() -> None:
    assert compare.sign_test_p(19, 57) == pytest.approx(1.4836899336372366e-05, rel=1e-9)  # scipy binomtest


def test_mismatched_files_and_missing_set_are_clear_errors(tmp_path: Path) -> None:
    ranks = list(range(2, 11))
    a = _write(tmp_path / "a" / "measured.json", {"s0": [12, *ranks]}, [])
    b = _write(tmp_path / "b" / "measured.json", {"s1": [12, *ranks]}, [])
    with pytest.raises(SystemExit, match="scores other files"):
        compare.table([a, b], ["a", "b"], "single")
    with pytest.raises(SystemExit, match="no file of set 'rruff'"):
        compare.table([a], ["a"], "rruff")
    broken = tmp_path / "broken.json"
    broken.write_text("{}")
    with pytest.raises(SystemExit, match="not a score-measured measured.json"):
        compare.read_scores(broken)


def test_bootstrap_over_groups_counts_a_group_once_however_many_files_it_holds() -> None:
    rng = np.random.default_rng(1)
    values = (rng.random((60, 2)) < 0.6).astype(float)
    groups = [f"g{i}" for i in range(60)]
    once = compare.bootstrap_group_means(values, groups, resamples=2000)
    # Every file copied twice into its own group: every resample draws the same groups, so the same means.
    twice = compare.bootstrap_group_means(
        np.repeat(values, 2, axis=0), list(np.repeat(groups, 2)), resamples=2000
    )
    np.testing.assert_allclose(twice, once, rtol=1e-12)
    # The copies counted as groups of their own: half the spread, as for twice the independent files.
    apart = compare.bootstrap_group_means(
        np.repeat(values, 2, axis=0), [f"{g}{c}" for g in groups for c in "ab"], resamples=2000
    )
    ratio = apart.std(axis=0) / once.std(axis=0)
    np.testing.assert_allclose(ratio, 1 / np.sqrt(2), rtol=0.1)


def test_bootstrap_over_single_file_groups_matches_the_binomial_spread() -> None:
    values = np.zeros((400, 1))
    values[:240] = 1.0  # p = 0.6
    means = compare.bootstrap_group_means(values, [str(i) for i in range(400)], resamples=20_000)
    assert means.mean() == pytest.approx(0.6, abs=0.002)
    assert means.std() == pytest.approx(np.sqrt(0.6 * 0.4 / 400), rel=0.03)


def test_groups_add_intervals_to_the_table_and_name_what_is_missing(tmp_path: Path) -> None:
    ranks = list(range(2, 11))
    base = _write(tmp_path / "a" / "measured.json", {"s0": [12, *ranks], "s1": [1, *ranks]}, [])
    other = _write(tmp_path / "b" / "measured.json", {"s0": [12, *ranks], "s1": [12, *ranks]}, [])
    labels = tmp_path / "labels.csv"
    labels.write_text("file,group\ns0,1\ns1,1\n")
    text = compare.table([base, other], ["a", "b"], "single", compare.read_groups(labels))
    rows = [line.split(" | ") for line in text.splitlines()]
    assert "95% over groups" in rows[0][-2]
    # One group holding both files: every resample is that group, so each interval is a single value.
    assert rows[2][-2] == "0.500-0.500 / 0.500-0.500" and rows[3][-2] == "1.000-1.000 / 1.000-1.000"
    assert rows[3][-1].rstrip(" |") == "+0.500 to +0.500 / +0.500 to +0.500"
    labels.write_text("file,group\ns0,1\n")
    with pytest.raises(SystemExit, match="no group for 1 single files, e.g. s1"):
        compare.table([base, other], ["a", "b"], "single", compare.read_groups(labels))
    labels.write_text("file,kind\ns0,1\n")
    with pytest.raises(SystemExit, match="`file` and `group` columns"):
        compare.read_groups(labels)


def test_pairs_pool_the_seeds_file_by_file_and_count_an_exact_tie(tmp_path: Path) -> None:
    ranks = list(range(2, 11))
    hit, miss, fifth = [12, *ranks], [1, *ranks], [1, 2, 3, 4, 12, *ranks[4:]]

    def scores(name: str, s0: list[int], s1: list[int]) -> Path:
        return _write(tmp_path / name / "measured.json", {"s0": s0, "s1": s1}, [])

    # Seed A: the other model wins s1 at hit@1 and at hit@5. Seed B: it loses s0 at hit@1 (still in its top 5).
    paths = [
        scores("base_a", hit, miss),
        scores("other_a", hit, hit),
        scores("base_b", hit, hit),
        scores("other_b", fifth, hit),
    ]
    labels = tmp_path / "labels.csv"
    labels.write_text("file,group\ns0,g0\ns1,g1\n")
    text = compare.pooled_table(paths, "single", compare.read_groups(labels))
    rows = [line.strip("| ").split(" | ") for line in text.splitlines()]
    assert rows[2][1:4] == ["0.500 / 0.500", "1.000 / 1.000", "+0.500 / +0.500"]
    assert rows[3][1:4] == ["1.000 / 1.000", "0.500 / 1.000", "-0.500 / +0.000"]
    # Pooled: hit@1 +1 -1 over the two seeds is exactly 0 (every resample is a mix of s0's -1/2 and s1's +1/2);
    # hit@5 +1/2 on s1 only.
    hit1, hit5 = rows[4][1], rows[4][2]
    assert hit1.startswith("+0.0000, 95% over groups -0.500 to +0.500")
    assert hit5.startswith("+0.2500, 95% over groups +0.000 to +0.500")
    # Resamples of two groups: both s0 (1/4), both s1 (1/4), one of each (1/2): hit@1 at or below 0 in 3/4 of
    # them, counting the exact ties; hit@5 at 0 only when both draws are s0.
    assert float(hit1.split(", ")[2].split()[0]) == pytest.approx(0.75, abs=0.02)
    assert float(hit5.split(", ")[2].split()[0]) == pytest.approx(0.25, abs=0.02)
    with pytest.raises(SystemExit, match="BASE OTHER pairs"):
        compare.pooled_table(paths[:3], "single", compare.read_groups(labels))


def test_pairs_can_read_one_file_by_two_of_its_rankings(tmp_path: Path, capsys) -> None:
    """--base-ranking network pairs each file's network ranking (BASE) with its model ranking (OTHER)."""
    ranks = list(range(2, 11))
    path = _write(tmp_path / "a" / "measured.json", {"s0": [12, *ranks], "s1": [12, *ranks]}, [])
    data = json.loads(path.read_text())
    for f in data["files"]:
        f["network_top10"] = [1, *ranks] if f["file"] == "s1" else [12, *ranks]
    data["network_summary"] = data["summary"]
    path.write_text(json.dumps(data))
    labels = tmp_path / "labels.csv"
    labels.write_text("file,group\ns0,g0\ns1,g1\n")
    text = compare.pooled_table([path, path], "single", compare.read_groups(labels), "model", "network")
    rows = [line.strip("| ").split(" | ") for line in text.splitlines()]
    assert rows[2][1:4] == ["0.500 / 0.500", "1.000 / 1.000", "+0.500 / +0.500"]
    with pytest.raises(SystemExit):
        compare.main([str(path), str(path), "--base-ranking", "network"])
    assert "--base-ranking pairs files of --pairs" in capsys.readouterr().err
