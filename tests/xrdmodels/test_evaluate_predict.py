"""evaluate (Table 1 outputs agree with the metrics on a direct forward pass), predict and score-measured."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
import zarr
from checkpoint_factory import make_checkpoint
from click.testing import CliRunner
from reference_f1 import expected_f1_size_by_counting
from store_factory import StoreSpec, write_store

from xrdmodels.checkpoint import load_checkpoint
from xrdmodels.cli import _wavelength, main
from xrdmodels.config import preset
from xrdmodels.data import MixtureStore, to_batch
from xrdmodels.measured.common import LINES_ANGSTROM
from xrdmodels.measured_eval import (
    MeasuredScore,
    markdown,
    paired_changes,
    parse_groups,
    parse_phases,
    summarise,
    summarise_sets,
    wilson_interval,
)
from xrdmodels.metrics import gate_sweep, threshold_sweep
from xrdmodels.models.heads import slot_gates, slot_noisy_or_probs
from xrdmodels.models.model import ModelOutput, SpaceGroupModel
from xrdmodels.predict import check_threshold, predict_files, prior_hedge
from xrdmodels.spacegroups import crystal_system

REPO = Path(__file__).resolve().parents[2]
EXPERIMENTAL = REPO.parent / "shared" / "data" / "experimental"
N_BINS = 256


@pytest.fixture(scope="module")
def stores(tmp_path_factory) -> dict[str, str]:
    root = tmp_path_factory.mktemp("mix")
    spec = StoreSpec(n_samples=300, n_bins=N_BINS, shard_size=128, chunk_rows=32)
    urls = {}
    for i, name in enumerate(("in_library", "test")):
        urls[name] = str(root / f"{name}.zarr")
        write_store(urls[name], spec, seed=i, realistic=True)
    return urls


@pytest.mark.parametrize("head", ["presence", "phase_cluster"])
def test_evaluate_matches_metrics_on_a_direct_forward_pass(tmp_path, stores, head) -> None:
    ckpt = make_checkpoint(tmp_path / f"{head}.pt", head=head)
    out = tmp_path / "eval"
    result = CliRunner().invoke(
        main,
        [
            "evaluate",
            str(ckpt),
            "--store",
            f"in_library={stores['in_library']}",
            "--store",
            f"test={stores['test']}",
            "--out",
            str(out),
        ],
    )
    assert result.exit_code == 0, result.output
    results = json.loads((out / "results.json").read_text())
    for name in ("table.md", "results.csv", "strata.csv", "fig_a3_strata.png"):
        assert (out / name).stat().st_size > 0
    table = (out / "table.md").read_text().splitlines()
    assert table[0].count("micro_f1") == 2 and len(table[2].split("|")) == 2 + 10 + 1

    model = SpaceGroupModel(
        preset("small", head=head, n_bins=N_BINS, cnn_channels=[8, 8, 16, 16], d_model=32, ffn_dim=64)
    )
    model.load_state_dict(load_checkpoint(ckpt)["model"])
    model.eval()
    store = MixtureStore(stores["test"])
    batch = to_batch(store.read_rows(0, store.n_samples), N_BINS)
    with torch.no_grad():
        output = model(batch["pattern"], batch["mask"])
    targets = batch["targets"].numpy() > 0.5
    if head == "presence":
        expected = threshold_sweep(output.set_probs.numpy(), targets).best.f1
    else:
        expected = gate_sweep(torch.softmax(output.slot_logits, -1).numpy(), targets).best.f1
    row = next(r for r in results["results"] if r["split"] == "test")
    assert row["micro_f1"] == pytest.approx(expected, abs=1e-6)
    strata = {s["stratum"]: s for s in results["strata"] if s["split"] == "test"}
    assert {"K*=1", "K*=2", "min_fraction<=0.10", "min_fraction>0.10"} <= set(strata)
    # Fig. A3 crosses K with the minimum-fraction split: each crossed stratum is recounted by hand (and a presence
    # model's micro-F1 recomputed at the split's threshold), and the two fractions of one K add up to that K.
    rows = store.read_rows(0, store.n_samples)
    n_phases = np.asarray(rows["n_phases"]).astype(int)
    weights = np.asarray(rows["phase_weight"], dtype=np.float64)
    slots = np.arange(weights.shape[1])[None, :] < n_phases[:, None]
    fractions = weights / np.where(slots, weights, 0.0).sum(axis=1, keepdims=True)
    low = np.where(slots, fractions, np.inf).min(axis=1) <= 0.10
    predicted = output.set_probs.numpy() >= row["threshold"]
    crossed = 0
    for k in range(1, 6):
        for fraction, is_low in (("<=0.10", True), (">0.10", False)):
            mask = (n_phases == k) & (low == is_low)
            name = f"K*={k}, min_fraction{fraction}"
            if not mask.any():
                assert name not in strata
                continue
            crossed += 1
            r = strata[name]
            assert (r["phases"], r["min_fraction"], r["n_samples"]) == (k, fraction, int(mask.sum()))
            if head == "presence":
                tp = (predicted[mask] & targets[mask]).sum()
                assert r["micro_f1"] == pytest.approx(2 * tp / (predicted[mask].sum() + targets[mask].sum()))
        if f"K*={k}" in strata:
            halves = [r["n_samples"] for r in strata.values() if r["phases"] == k and r["min_fraction"]]
            assert sum(halves) == strata[f"K*={k}"]["n_samples"]
    assert crossed >= 3


def test_several_checkpoints_share_one_table(tmp_path, stores) -> None:
    a = make_checkpoint(tmp_path / "a.pt", head="presence")
    b = make_checkpoint(tmp_path / "b.pt", head="phase_cluster")
    result = CliRunner().invoke(
        main,
        [
            "evaluate",
            str(a),
            str(b),
            "--store",
            f"test={stores['test']}",
            "--name",
            "baseline",
            "--name",
            "slots",
            "--out",
            str(tmp_path / "e"),
        ],
    )
    assert result.exit_code == 0, result.output
    lines = (tmp_path / "e" / "table.md").read_text().splitlines()
    assert lines[2].startswith("| baseline |") and lines[3].startswith("| slots |")


def test_predict_reads_measured_files_and_reports_bad_ones(tmp_path) -> None:
    if not EXPERIMENTAL.exists():
        pytest.skip(f"measured patterns not found at {EXPERIMENTAL}")
    ckpt = make_checkpoint(tmp_path / "m.pt", head="phase_cluster")
    folder = tmp_path / "patterns"
    folder.mkdir()
    shutil.copy(EXPERIMENTAL / "xrd_autoanalyzer" / "TiO2.xy", folder)
    steel = EXPERIMENTAL / "nist_duplex_steel"
    shutil.copy(next(steel.glob("*.xrdml")), folder / "steel.xrdml")
    shutil.copy(next(steel.glob("*.xy")), folder / "steel.xy")  # one stem, two plots
    (folder / "broken.xy").write_text("this is not\na pattern\n")
    result = CliRunner().invoke(
        main,
        [
            "predict",
            str(ckpt),
            str(folder),
            "--wavelength",
            "CuKa",
            "--json",
            "--plot",
            str(tmp_path / "plots"),
            "--top",
            "7",
        ],
    )
    assert result.exit_code == 0, result.output
    payload = json.loads(result.stdout)
    assert len(payload["predictions"]) == 3 and len(payload["failures"]) == 1
    assert "broken.xy" in payload["failures"][0]["file"]
    for p in payload["predictions"]:
        assert len(p["ranked"]) == 7 and p["slots"] is not None
        scores = [r["score"] for r in p["ranked"]]
        assert scores == sorted(scores, reverse=True)
        assert all(1 <= r["spacegroup"] <= 230 and r["symbol"] for r in p["ranked"])
    plots = sorted(Path(p["plot"]).name for p in payload["predictions"])
    assert plots == ["TiO2.png", "steel-2.png", "steel.png"]
    assert sorted(f.name for f in (tmp_path / "plots").glob("*.png")) == plots
    table = CliRunner().invoke(
        main, ["predict", str(ckpt), str(folder / "TiO2.xy"), "--wavelength", "1.5406"]
    )
    assert table.exit_code == 0 and "rank  SG" in table.output
    nothing = CliRunner().invoke(
        main, ["predict", str(ckpt), str(folder / "broken.xy"), "--wavelength", "CuKa"]
    )
    assert nothing.exit_code != 0


def test_score_measured_on_the_development_set(tmp_path) -> None:
    labels = EXPERIMENTAL / "all_labels.csv"
    if not labels.exists():
        pytest.skip(f"measured patterns not found at {EXPERIMENTAL}")
    ckpt = make_checkpoint(tmp_path / "m.pt", head="presence")
    result = CliRunner().invoke(
        main,
        [
            "score-measured",
            str(ckpt),
            "--labels",
            str(labels),
            "--set",
            "xrd_autoanalyzer",
            "--set",
            "nist_duplex_steel",
            "--out",
            str(tmp_path / "s"),
        ],
    )
    assert result.exit_code == 0, result.output
    written = json.loads((tmp_path / "s" / "measured.json").read_text())
    summary = written["summary"]
    by_set = {r["set"]: r for r in summary}
    assert by_set["all"]["files"] == 14 and by_set["xrd_autoanalyzer"]["files"] == 9
    # The predicted sets, file by file, and their scores per set (a presence model: the expected-F1 size).
    files = written["files"]
    assert all(f["set_rule"] == "expected-f1" and len(f["predicted_set"]) >= 1 for f in files)
    sizes = {r["set"]: r["set size"] for r in written["set_summary"]}
    assert sizes["all"] == pytest.approx(sum(len(f["predicted_set"]) for f in files) / 14)
    for r in summary:
        assert 0 <= r["hit@1"] <= r["hit@3"] <= r["hit@5"] <= r["hit@10"] <= 1
        assert r["hit@1 lo"] <= r["hit@1"] <= r["hit@1 hi"] and r["hit@5 lo"] <= r["hit@5"] <= r["hit@5 hi"]
    assert "95% intervals of hit@1 and hit@5" in (tmp_path / "s" / "measured.md").read_text()


def _wilson_by_bisection(successes: int, n: int, z: float) -> tuple[float, float]:
    """The interval's ends as the roots of (share - p)² = z²·p(1 - p)/n on either side of the share."""
    share = successes / n

    def outside(p: float) -> bool:
        return (share - p) ** 2 > z * z * p * (1 - p) / n

    ends = []
    for inner, outer in ((share, 0.0), (share, 1.0)):
        if not outside(outer):
            ends.append(outer)
            continue
        for _ in range(200):
            middle = 0.5 * (inner + outer)
            inner, outer = (inner, middle) if outside(middle) else (middle, outer)
        ends.append(0.5 * (inner + outer))
    return ends[0], ends[1]


def test_wilson_interval_solves_the_score_test_and_is_refused_without_files() -> None:
    for successes, n in [(240, 443), (0, 5), (5, 5), (1, 9), (333, 443), (1, 1)]:
        lo, hi = wilson_interval(successes, n)
        expected = _wilson_by_bisection(successes, n, 1.959963984540054)
        assert lo == pytest.approx(expected[0], abs=1e-9) and hi == pytest.approx(expected[1], abs=1e-9)
        assert 0.0 <= lo <= successes / n <= hi <= 1.0
    assert wilson_interval(0, 5)[0] == 0.0 and wilson_interval(5, 5)[1] == 1.0
    # 443 files at 0.54: about ±0.046, the spread a target 0.01 away sits inside.
    lo, hi = wilson_interval(240, 443)
    assert 0.09 < hi - lo < 0.095
    with pytest.raises(ValueError, match="at least one file"):
        wilson_interval(0, 0)
    with pytest.raises(ValueError, match=r"successes must lie in \[0, 4\]"):
        wilson_interval(5, 4)


def test_summary_rows_carry_the_intervals_of_their_own_hits() -> None:
    scores = [
        MeasuredScore("a", f"{i}.xy", [{14}], [14 if i < 3 else 2, 15, 12, 62, 14], []) for i in range(8)
    ]
    row = {r["set"]: r for r in summarise(scores)}["a"]
    assert row["hit@1"] == 3 / 8 and (row["hit@1 lo"], row["hit@1 hi"]) == wilson_interval(3, 8)
    assert row["hit@5"] == 1.0 and (row["hit@5 lo"], row["hit@5 hi"]) == wilson_interval(8, 8)
    lo, hi = wilson_interval(3, 8)
    assert f"| a | model | 0.375 ({lo:.3f}-{hi:.3f}) |" in markdown(summarise(scores))


def test_the_predicted_set_is_scored_against_the_labelled_phases() -> None:
    """Precision m / (m + f), recall m / K*, F1 2m / (m + f + K*), exact match; an acceptable alternative names
    its phase, a minor phase's group counts neither way, an empty set has precision 0; counted by hand."""
    scores = [
        # one phase named, one wrong group: m 1, f 1 -> precision 1/2, recall 1, F1 2/3
        MeasuredScore("a", "1", [{14}], [14, 2], [], predicted=[2, 14]),
        # the alternative 61 names the phase; 225 is a minor phase: m 1, f 0 -> exact
        MeasuredScore("a", "2", [{206, 61}], [61], [], predicted=[61, 225], extra={225}),
        # empty: precision 0, recall 0, F1 0
        MeasuredScore("a", "3", [{12}], [12], [], predicted=[]),
        # two phases, one named: m 1, f 0 -> precision 1, recall 1/2, F1 2/3
        MeasuredScore("b", "4", [{225}, {229}], [225], [], predicted=[225]),
    ]
    rows = {r["set"]: r for r in summarise_sets(scores)}
    a = rows["a"]
    assert a["files"] == 3 and a["set size"] == pytest.approx(4 / 3) and a["empty"] == pytest.approx(1 / 3)
    assert a["precision"] == pytest.approx((1 / 2 + 1 + 0) / 3)
    assert a["recall"] == pytest.approx(2 / 3)
    assert a["F1"] == pytest.approx((2 / 3 + 1 + 0) / 3)
    assert a["exact"] == pytest.approx(1 / 3)
    b = rows["b"]
    assert (b["precision"], b["recall"], b["F1"], b["exact"]) == (1.0, 0.5, pytest.approx(2 / 3), 0.0)
    assert rows["all"]["files"] == 4 and rows["all"]["exact"] == 0.25
    assert summarise_sets([MeasuredScore("a", "1", [{14}], [14], [])]) is None  # no predicted sets recorded
    assert "| a | 3 | 1.333 | 0.333 | 0.500 | 0.667 | 0.556 | 0.333 |" in markdown(
        summarise(scores), set_summary=summarise_sets(scores)
    )


def test_minor_phase_labels(tmp_path) -> None:
    from xrdmodels.measured_eval import read_labelled

    assert parse_groups("extra_or_trace", "") == set()
    assert parse_groups("extra_or_trace", "62; 14|15") == {62, 14, 15}
    with pytest.raises(ValueError, match="extra_or_trace 'quartz' is not a list of space-group numbers"):
        parse_groups("extra_or_trace", "quartz")
    for name in ("a.xy", "b.xy"):
        _write_xy(tmp_path / name, _peaks())
    labels = tmp_path / "labels.csv"
    labels.write_text(
        "set,file,spacegroups,extra_or_trace,wavelength_angstrom\ns,a.xy,225,62,1.5406\ns,b.xy,225,quartz,1.5406\n"
    )
    read, failures = read_labelled(labels)
    assert [(item.path.name, item.extra) for item in read] == [("a.xy", {62})]
    assert failures[0][0] == f"{labels} line 3 (b.xy)" and "extra_or_trace 'quartz'" in failures[0][1]


def test_phase_labels_with_alternatives() -> None:
    assert parse_phases("206|61;12", "206;12") == [{206, 61}, {12}]
    assert parse_phases("", "225;229") == [{225}, {229}]
    for bad in ("0", "231", "abc", "12;x|3"):
        with pytest.raises(
            ValueError, match=f"spacegroups {bad!r} is not a list of space-group numbers 1-230"
        ):
            parse_phases("", bad)
    with pytest.raises(ValueError, match="the row names no space group"):
        parse_phases(" ", ";")


def test_a_labels_table_is_checked_row_by_row(tmp_path) -> None:
    """A spreadsheet's CSV (a byte-order mark, or Windows-1252) is read; rows with unusable labels are reported
    by their file line and the others kept; a table without the needed columns, or in another encoding, is
    refused naming the column or the encoding."""
    from xrdmodels.measured_eval import read_labelled

    for name in ("a.xy", "b.xy", "c.xy", "d.xy", "e.xy"):
        _write_xy(tmp_path / name, _peaks())  # no wavelength stated in the file
    labels = tmp_path / "labels.csv"
    labels.write_text(
        "set,file,spacegroups,wavelength_angstrom\n"
        "s,a.xy,225,1.5406\n"
        "\n"
        "s,b.xy,,1.5406\n"
        "s,c.xy,231,1.5406\n"
        "s,d.xy,225,100\n"
        "s,e.xy,12|15,1.5406\n",
        encoding="utf-8-sig",
    )
    read, failures = read_labelled(labels)
    assert [(item.path.name, item.phases, item.wavelength_angstrom) for item in read] == [
        ("a.xy", [{225}], 1.5406),
        ("e.xy", [{12, 15}], 1.5406),
    ]
    assert failures[0] == (
        f"{labels} line 4 (b.xy)",
        "the row names no space group: give the phases' groups in spacegroups",
    )
    assert failures[1][0] == f"{labels} line 5 (c.xy)" and "'231' is not a list" in failures[1][1]
    assert failures[2][0] == str(tmp_path / "d.xy")
    assert f"its row of {labels} has wavelength_angstrom '100'" in failures[2][1]

    labels.write_text("file,spacegroups\na.xy,225\n")
    with pytest.raises(ValueError, match=r"no column set in its header \['file', 'spacegroups'\]"):
        read_labelled(labels)
    labels.write_text(
        "set,file,spacegroups,wavelength_angstrom,notes\ns,a.xy,225,1.5406,Cu 40 kV 5-90° 1.5406 Å\n",
        encoding="cp1252",
    )
    assert [item.path.name for item in read_labelled(labels)[0]] == ["a.xy"]  # Excel's CSV on Windows
    labels.write_text("set,file,spacegroups\ns,a.xy,225\n", encoding="utf-16")
    with pytest.raises(ValueError, match="neither UTF-8 nor Windows-1252 text .*save it as UTF-8 CSV"):
        read_labelled(labels)


def test_labels_table_rows_without_a_file_or_repeated_and_unknown_sets(tmp_path) -> None:
    """A row with no file, a row repeating an earlier row's file in its set (it would count twice), a --set the
    table lacks and a semicolon-separated header each get a message naming the line, the sets or the fix."""
    from xrdmodels.measured_eval import read_labelled

    _write_xy(tmp_path / "a.xy", _peaks())
    labels = tmp_path / "labels.csv"
    labels.write_text(
        "set,file,spacegroups,wavelength_angstrom\n"
        "s,a.xy,225,1.5406\n"
        "s,./a.xy,225,1.5406\n"
        "t,a.xy,225,1.5406\n"
        "s,,225,1.5406\n"
    )
    read, failures = read_labelled(labels)
    assert [(item.row["set"], item.path.name) for item in read] == [("s", "a.xy"), ("t", "a.xy")]
    assert failures == [
        (f"{labels} line 3 (./a.xy)", "repeats line 2's file in set 's': scored once"),
        (f"{labels} line 5 ()", "the row names no file: give the pattern file, relative to the table"),
    ]
    with pytest.raises(ValueError, match=r"no row of set 'S', 'u'; its sets are s, t"):
        read_labelled(labels, sets=["S", "s", "u"])
    # A repeat of a row that failed is read: the file is scored once, not zero times.
    labels.write_text("set,file,spacegroups,wavelength_angstrom\ns,a.xy,xx,1.5406\ns,a.xy,62,1.5406\n")
    read, failures = read_labelled(labels)
    assert [(item.path.name, item.phases) for item in read] == [("a.xy", [{62}])]
    assert len(failures) == 1 and "line 2" in failures[0][0]
    # A short row lacks the set column (None): the unknown-set message still lists the sets.
    labels.write_text("file,spacegroups,wavelength_angstrom,set\na.xy,62,1.5406\na.xy,62,1.5406,t\n")
    with pytest.raises(ValueError, match=r"no row of set 'u'; its sets are \(empty\), t"):
        read_labelled(labels, sets=["u"])
    labels.write_text("set;file;spacegroups\ns;a.xy;225\n")
    with pytest.raises(ValueError, match="its header reads as one column: separate the columns with commas"):
        read_labelled(labels)
    # The file's own wavelength is used; a row that says another is warned about, as predict warns for --wavelength.
    (tmp_path / "mo.xy").write_text("# wavelength: 0.7093\n" + (tmp_path / "a.xy").read_text())
    labels.write_text("set,file,spacegroups,wavelength_angstrom\ns,mo.xy,225,1.5406\ns,a.xy,225,1.5406\n")
    read, _ = read_labelled(labels)
    assert [item.wavelength_angstrom for item in read] == [0.7093, 1.5406]
    assert read[0].warnings == [f"using the file's wavelength 0.7093 Å; its row of {labels} says 1.5406 Å"]
    assert read[1].warnings == []


def test_score_measured_lists_every_failure_and_takes_the_file_size_limit(tmp_path) -> None:
    ckpt = make_checkpoint(tmp_path / "m.pt", head="presence")
    _write_xy(tmp_path / "a.xy", _peaks())
    labels = tmp_path / "labels.csv"
    labels.write_text("set,file,spacegroups,wavelength_angstrom\ns,a.xy,225,1.5406\ns,gone.xy,12,1.5406\n")
    command = ["score-measured", str(ckpt), "--labels", str(labels), "--out", str(tmp_path / "o")]
    result = CliRunner().invoke(main, [*command, "--max-file-mb", "0.001"])
    assert result.exit_code == 1
    assert f"no file of {labels} could be scored:" in result.output
    assert "a.xy: the file is" in result.output and "--max-file-mb" in result.output  # both failures named
    assert "gone.xy: no such file" in result.output
    assert not (tmp_path / "o").exists()  # the folder it made is tidied away
    assert CliRunner().invoke(main, command).exit_code == 0


def test_predict_refuses_an_unwritable_plot_folder_before_predicting(tmp_path) -> None:
    ckpt = make_checkpoint(tmp_path / "m.pt", head="presence")
    _write_xy(tmp_path / "a.xy", _peaks())
    (tmp_path / "plots").write_text("a file, not a folder")
    result = CliRunner().invoke(
        main,
        [
            "predict",
            str(ckpt),
            str(tmp_path / "a.xy"),
            "--wavelength",
            "CuKa",
            "--plot",
            str(tmp_path / "plots" / "x"),
        ],
    )
    assert result.exit_code == 1 and isinstance(result.exception, SystemExit), result.output
    assert f"cannot write the plots to --plot {tmp_path / 'plots' / 'x'}" in result.output
    assert "rank  SG" not in result.output


def test_wavelength_lines_agree_with_pymatgen_and_the_synthesis() -> None:
    """pymatgen's table, but for its Co Kβ1 (1.63079 Å for Bearden's 1.62079): Moseley's law orders Kβ1/Kα1 by
    atomic number (Fe 26 > Co 27 > Cu 29), which the corrected value keeps and pymatgen's breaks. The lines are
    xrdsynth's, which renders the lab recipe's beams."""
    from pymatgen.analysis.diffraction.xrd import WAVELENGTHS

    synthesis = pytest.importorskip("xrdsynth.config", reason="xrdsynth renders the lab recipe's beams")
    assert set(LINES_ANGSTROM) == set(WAVELENGTHS)
    for name, value in LINES_ANGSTROM.items():
        expected = 1.62079 if name == "CoKb1" else WAVELENGTHS[name]
        assert value == pytest.approx(expected, abs=1e-6)
    for anode in synthesis.ANODES:
        lines = [LINES_ANGSTROM[f"{anode}{line}"] for line in ("Ka", "Ka1", "Ka2", "Kb1")]
        assert lines == pytest.approx(synthesis.anode_lines_angstrom(anode), abs=1e-6)
    for name, value in LINES_ANGSTROM.items():  # a bank's or recipe's `wavelength` given by name
        assert synthesis.resolve_wavelength(name) == pytest.approx(value, abs=1e-6)
    ratio = {a: LINES_ANGSTROM[f"{a}Kb1"] / LINES_ANGSTROM[f"{a}Ka1"] for a in ("Fe", "Co", "Cu")}
    assert ratio["Fe"] > ratio["Co"] > ratio["Cu"]
    assert WAVELENGTHS["CoKb1"] / WAVELENGTHS["CoKa1"] > ratio["Fe"]  # pymatgen's value breaks the order
    assert np.isfinite(list(LINES_ANGSTROM.values())).all()
    assert _wavelength(" mokb1") == _wavelength("MoKb1") == WAVELENGTHS["MoKb1"]  # names in any case
    assert _wavelength("0.7093") == 0.7093


# ---------------------------------------------------------------------------------------------------------
# One ranking rule for evaluate, predict and score-measured (metrics module docstring)
# ---------------------------------------------------------------------------------------------------------

# Three slots over the 230 space groups + NONE. Slot 0 (gate 0.60) splits 0.31 / 0.29 over classes 10 / 20,
# slot 1 (gate 0.45) votes class 30 with 0.45, slot 2 (gate 0.001) votes class 50. The slot union ranks
# 10, 30, 50 (votes by gate), then 20 (a second choice); the largest slot probability and the noisy-or would
# both put class 30 first.
FIXED_SLOTS = np.full((3, 231), 1e-30)
FIXED_SLOTS[0, [10, 20, 230]] = [0.31, 0.29, 0.40]
FIXED_SLOTS[1, [30, 230]] = [0.45, 0.55]
FIXED_SLOTS[2, [50, 230]] = [0.001, 0.999]


class FixedSlotModel(torch.nn.Module):
    """A phase-cluster model whose slot probabilities are FIXED_SLOTS whatever the input."""

    def __init__(self) -> None:
        super().__init__()
        self.config = SimpleNamespace(
            head="phase_cluster",
            encoder="transformer",
            n_bins=N_BINS,
            two_theta_min_deg=5.0,
            two_theta_max_deg=120.0,
        )
        self.logits = torch.log(torch.tensor(FIXED_SLOTS, dtype=torch.float32))

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> ModelOutput:
        logits = self.logits.expand(x.shape[0], -1, -1)
        return ModelOutput(
            set_probs=slot_noisy_or_probs(logits),
            slot_logits=logits,
            slot_gates=slot_gates(logits),
            slots=torch.eye(3, 4).expand(x.shape[0], -1, -1),
        )


def _fixed_state() -> dict:
    return {
        "model_config": {"two_theta_min_deg": 5.0, "two_theta_max_deg": 120.0, "n_bins": N_BINS},
        "data": {"wavelength_angstrom": 1.54184},
        "val_metrics": {"best_gate": 0.5},
        "step": 1,
    }


def _write_xy(path: Path, intensity: np.ndarray) -> Path:
    two_theta = np.arange(5.0, 120.0, 0.05)[: intensity.size]
    path.write_text("\n".join(f"{x:.3f} {y:.6g}" for x, y in zip(two_theta, intensity, strict=True)))
    return path


def _peaks(n: int = 2300) -> np.ndarray:
    two_theta = np.arange(5.0, 120.0, 0.05)[:n]
    return 10.0 + sum(500.0 * np.exp(-0.5 * ((two_theta - c) / 0.1) ** 2) for c in (28.4, 47.3, 56.1))


def test_evaluate_predict_and_score_measured_rank_by_the_same_rule(tmp_path, monkeypatch) -> None:
    import xrdmodels.evaluate as evaluate_module
    import xrdmodels.predict as predict_module

    def fixed(checkpoint, device="cpu"):
        return FixedSlotModel().eval(), _fixed_state()

    for module in (evaluate_module, predict_module):
        monkeypatch.setattr(module, "load_model", fixed)
    ckpt = tmp_path / "fixed.pt"
    ckpt.write_bytes(b"not read: load_model is replaced")
    pattern = _write_xy(tmp_path / "sample.xy", _peaks())

    def predict(*extra: str) -> dict:
        base = ["predict", str(ckpt), str(pattern), "--wavelength", "CuKa", "--json", "--top", "230"]
        predicted = CliRunner().invoke(main, [*base, *extra])
        assert predicted.exit_code == 0, predicted.output
        return json.loads(predicted.stdout)["predictions"][0]

    # The paper's read-out (--threshold validation): the slot-union ranking, the set at the validation gate.
    prediction = predict("--threshold", "validation")
    ranked = [r["spacegroup"] for r in prediction["ranked"]]
    assert ranked[:4] == [11, 31, 51, 21]  # space group = class index + 1
    assert prediction["predicted_set"] == [11]  # gate 0.5: only slot 0; the top of the ranking
    assert prediction["set_rule"] == "threshold" and prediction["threshold"] == 0.5  # slots keep their gate
    assert [s["slot"] for s in prediction["slots"]] == [0]
    assert [r["score"] for r in prediction["ranked"]] == sorted(
        (r["score"] for r in prediction["ranked"]), reverse=True
    )
    # The largest slot probability would have ranked space group 31 first.
    assert max(prediction["ranked"], key=lambda r: r["probability"])["spacegroup"] == 31

    # Otherwise the ranking is the same and the set's size is the expected-F1 size along it, under the chance
    # that some slot holds each group, 1 - prod_k (1 - pi_kc): read as trained, 11 0.31, 31 0.45, 51 0.001, 21 0.29
    # in ranking order (the rest ~0), so the expected F1 of the top k (groups independent; reference_f1.py) is
    # 0.240, 0.429, 0.333, 0.375 for k = 1..4: the top two.
    trained = predict("--expected-phases", "training")
    assert trained["predicted_set"] == [11, 31] and trained["expected_phases"] == pytest.approx(2.4)
    # By default each odds is read at 1.5 of the 2.4 phases (no recipe recorded: A.1's mean): 0.219, 0.338,
    # 0.0006, 0.203, whose top k have expected F1 0.182, 0.330, 0.254, 0.280: the top two again.
    default = predict()
    assert [r["spacegroup"] for r in default["ranked"]] == ranked
    assert default["set_rule"] == "expected-f1" and default["threshold"] is None
    assert default["predicted_set"] == [11, 31] and default["expected_phases"] == 1.5
    assert [s["slot"] for s in default["slots"]] == [0, 1]  # each set member's strongest voter
    assert not any("validation" in w for w in default["warnings"] + prediction["warnings"])
    # A checkpoint without a validation gate: --threshold validation falls back to 0.5 and says so.
    monkeypatch.setattr(
        predict_module,
        "load_model",
        lambda checkpoint, device="cpu": (FixedSlotModel().eval(), {**_fixed_state(), "val_metrics": {}}),
    )
    fallback = predict("--threshold", "validation")
    assert fallback["threshold"] == 0.5
    assert any("records no validation best_gate" in w for w in fallback["warnings"])
    monkeypatch.setattr(predict_module, "load_model", fixed)

    labels = tmp_path / "labels.csv"
    labels.write_text(
        "set,file,spacegroups,spacegroups_accept,wavelength_angstrom\ndemo,sample.xy,11,,1.54184\n"
    )
    scored = CliRunner().invoke(
        main, ["score-measured", str(ckpt), "--labels", str(labels), "--out", str(tmp_path / "s")]
    )
    assert scored.exit_code == 0, scored.output
    measured = json.loads((tmp_path / "s" / "measured.json").read_text())
    assert measured["files"][0]["top10"] == ranked[:10]
    assert measured["summary"][0]["hit@1"] == 1.0
    # score-measured sizes the set as predict does, by default and with --threshold validation.
    assert measured["files"][0]["predicted_set"] == default["predicted_set"]
    assert measured["files"][0]["set_rule"] == "expected-f1"
    assert "highest expected F1" in (tmp_path / "s" / "measured.md").read_text()
    paper = CliRunner().invoke(
        main,
        [
            "score-measured",
            str(ckpt),
            "--labels",
            str(labels),
            "--out",
            str(tmp_path / "p"),
            "--threshold",
            "validation",
        ],
    )
    assert paper.exit_code == 0, paper.output
    measured = json.loads((tmp_path / "p" / "measured.json").read_text())
    assert measured["files"][0]["predicted_set"] == prediction["predicted_set"] == [11]
    assert measured["files"][0]["set_rule"] == "threshold" and measured["files"][0]["threshold"] == 0.5
    assert measured["set_summary"][0]["precision"] == 1.0 and measured["set_summary"][0]["F1"] == 1.0
    assert "as many groups as score >= 0.5 (--threshold)" in (tmp_path / "p" / "measured.md").read_text()
    refused = CliRunner().invoke(
        main,
        [
            "score-measured",
            str(ckpt),
            "--labels",
            str(labels),
            "--out",
            str(tmp_path / "r"),
            "--threshold",
            "x",
        ],
    )
    assert refused.exit_code != 0 and "--threshold 'x'" in refused.output
    assert not (tmp_path / "r").exists()  # refused before the folder was made

    # evaluate: every sample holds one phase of space group 11 (class 10), so cover@K* is 1 exactly when
    # evaluate ranks like predict; the largest-slot-probability or noisy-or ranking would give 0.
    url = str(tmp_path / "test.zarr")
    write_store(url, StoreSpec(n_samples=40, n_bins=N_BINS, shard_size=40, chunk_rows=40), seed=3)
    root = zarr.open_group(url, mode="r+")
    root["n_phases"][:] = np.ones(40, dtype=np.int8)
    spacegroups = np.zeros((40, 5), dtype=np.int16)
    spacegroups[:, 0] = 11
    root["phase_spacegroup"][:] = spacegroups
    evaluated = CliRunner().invoke(
        main, ["evaluate", str(ckpt), "--store", f"test={url}", "--out", str(tmp_path / "e")]
    )
    assert evaluated.exit_code == 0, evaluated.output
    row = json.loads((tmp_path / "e" / "results.json").read_text())["results"][0]
    top = {1: ranked[:1], 3: ranked[:3], 5: ranked[:5]}
    for m, label in ((1, "K*"), (3, "3K*"), (5, "5K*")):
        expected = 1.0 if 11 in top[m] else 0.0
        assert row[f"cover@{label}"] == expected and row[f"recall@{label}"] == expected
    assert row["cover@K*"] == 1.0
    # The slot-union micro-F1 at gate 0.5 predicts {11} for every sample: perfect.
    assert row["micro_f1@gate0.50"] == 1.0


# ---------------------------------------------------------------------------------------------------------
# The ranking of a measured pattern hedged towards the training label prior
# ---------------------------------------------------------------------------------------------------------

# Space group 11 is certain (0.9), 31 and 51 unsure (0.3, 0.15); the training phases are 20% group 51 and no
# group 31, the rest spread over the other groups.
FIXED_PRESENCE = np.linspace(0.01, 0.02, 230)  # distinct, so that no two groups tie
FIXED_PRESENCE[[10, 30, 50]] = [0.9, 0.3, 0.15]
LABEL_PRIOR = np.linspace(0.8, 1.6, 230) * 0.8 / np.linspace(0.8, 1.6, 230).sum()
LABEL_PRIOR[[30, 50]] = [0.0, 0.2]


class FixedPresenceModel(torch.nn.Module):
    """A presence model whose probabilities are FIXED_PRESENCE whatever the input."""

    def __init__(self) -> None:
        super().__init__()
        self.config = SimpleNamespace(
            head="presence", encoder="cnn", n_bins=N_BINS, two_theta_min_deg=5.0, two_theta_max_deg=120.0
        )

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> ModelOutput:
        return ModelOutput(set_probs=torch.tensor(FIXED_PRESENCE, dtype=torch.float32).expand(x.shape[0], -1))


def _hedged(monkeypatch, tmp_path, label_prior, *args: str) -> dict:
    """`xrdmodels predict --json --top 230` of FixedPresenceModel with `label_prior` recorded (None: not)."""
    import xrdmodels.predict as predict_module

    state = {**_fixed_state(), "val_metrics": {"best_threshold": 0.5}}
    if label_prior is not None:
        state["data"] = {**state["data"], "label_prior": label_prior}
    monkeypatch.setattr(
        predict_module, "load_model", lambda checkpoint, device="cpu": (FixedPresenceModel(), state)
    )
    ckpt = tmp_path / "fixed.pt"
    ckpt.write_bytes(b"not read: load_model is replaced")
    pattern = _write_xy(tmp_path / "sample.xy", _peaks())
    result = CliRunner().invoke(
        main, ["predict", str(ckpt), str(pattern), "--wavelength", "CuKa", "--json", "--top", "230", *args]
    )
    return {
        "exit_code": result.exit_code,
        "output": result.output,
        **(json.loads(result.stdout) if result.exit_code == 0 else {}),
    }


def _hedge_reference(p: np.ndarray, prior: np.ndarray) -> np.ndarray:
    """The hedge of predict's ranking, group by group in plain Python: the model's share of its summed
    probabilities in a group's crystal system, times the prior's share of that group within the system."""
    system = [crystal_system(g) for g in range(1, 231)]
    belief = {s: sum(p[c] for c in range(230) if system[c] == s) / sum(p) for s in set(system)}
    prior_of = {s: sum(prior[c] for c in range(230) if system[c] == s) for s in set(system)}
    return np.array(
        [
            belief[system[c]] * prior[c] / prior_of[system[c]] if prior_of[system[c]] > 0 else 0.0
            for c in range(230)
        ]
    )


def test_the_hedge_is_the_prior_within_each_crystal_system_weighted_by_the_models_belief() -> None:
    rng = np.random.default_rng(5)
    p = rng.uniform(0.0, 1.0, 230) ** 4
    prior = rng.dirichlet(np.ones(230))
    prior[crystal_system_groups("cubic")] = 0.0  # a system without training phases gets nothing
    prior /= prior.sum()
    hedge = prior_hedge(p, prior)
    np.testing.assert_allclose(hedge, _hedge_reference(p, prior), rtol=1e-12, atol=1e-15)
    assert hedge.sum() == pytest.approx(1.0 - sum(p[c] for c in crystal_system_groups("cubic")) / p.sum())
    np.testing.assert_allclose(prior_hedge(np.zeros(230), prior), prior, rtol=1e-12)  # no belief: the prior


def crystal_system_groups(name: str) -> list[int]:
    """Indices (group - 1) of the space groups of one crystal system."""
    return [c for c in range(230) if crystal_system(c + 1) == name]


def _ranked_by(key: np.ndarray) -> list[int]:
    """Space groups by descending key, ties by ascending group: a plain sort, independent of numpy's argsort."""
    return [c + 1 for c in sorted(range(230), key=lambda c: (-float(key[c]), c))]


def test_predict_ranks_by_the_model_score_plus_the_weighted_label_prior(tmp_path, monkeypatch) -> None:
    p = FIXED_PRESENCE.astype(np.float32).astype(np.float64)
    for args, weight in (((), 2.0), (("--prior-weight", "0.5"), 0.5)):
        prediction = _hedged(monkeypatch, tmp_path, LABEL_PRIOR.tolist(), *args)["predictions"][0]
        key = p + weight * _hedge_reference(p, LABEL_PRIOR)
        assert [r["spacegroup"] for r in prediction["ranked"]] == _ranked_by(key)
        np.testing.assert_allclose([r["score"] for r in prediction["ranked"]], np.sort(key)[::-1], rtol=1e-12)
        np.testing.assert_allclose(
            [r["probability"] for r in prediction["ranked"]], p[np.array(_ranked_by(key)) - 1], rtol=1e-12
        )
        assert prediction["prior_weight"] == weight
        assert prediction["ranked"][0]["spacegroup"] == 11  # the certain group stays first
    # With weight 2 the common unsure group 51 passes the rare one the model prefers; with 0.1 it does not.
    ranked = [
        r["spacegroup"]
        for r in _hedged(monkeypatch, tmp_path, LABEL_PRIOR.tolist())["predictions"][0]["ranked"]
    ]
    assert ranked[:3] == [11, 51, 31]
    light = _hedged(monkeypatch, tmp_path, LABEL_PRIOR.tolist(), "--prior-weight", "0.1")["predictions"][0]
    assert [r["spacegroup"] for r in light["ranked"][:3]] == [11, 31, 51]


def test_weight_0_or_no_recorded_prior_ranks_by_the_model_alone(tmp_path, monkeypatch) -> None:
    p = FIXED_PRESENCE.astype(np.float32).astype(np.float64)
    for prior, args in ((LABEL_PRIOR.tolist(), ("--prior-weight", "0")), (None, ())):
        prediction = _hedged(monkeypatch, tmp_path, prior, *args)["predictions"][0]
        assert [r["spacegroup"] for r in prediction["ranked"]] == _ranked_by(p)
        assert prediction["prior_weight"] == 0.0
        assert prediction["ranked"][0]["spacegroup"] == 11
        # Asked for a hedge the checkpoint cannot give: said, with the command that fixes it.
        assert any("add-label-prior" in w for w in prediction["warnings"]) == (prior is None)


def test_the_predicted_set_keeps_the_models_size_and_is_the_top_of_the_hedged_ranking(tmp_path, monkeypatch):
    # At threshold 0.18 the model admits two groups (11 and 31); the hedged ranking puts 51 second.
    prediction = _hedged(monkeypatch, tmp_path, LABEL_PRIOR.tolist(), "--threshold", "0.18")["predictions"][0]
    assert prediction["predicted_set"] == [11, 51]
    assert prediction["predicted_set"] == sorted(r["spacegroup"] for r in prediction["ranked"][:2])
    plain = _hedged(monkeypatch, tmp_path, LABEL_PRIOR.tolist(), "--threshold", "0.18", "--prior-weight", "0")
    assert plain["predictions"][0]["predicted_set"] == [11, 31]


def test_the_default_predicted_set_has_the_size_of_highest_expected_f1(tmp_path, monkeypatch) -> None:
    import sys

    # Beside 227 groups at 0.010-0.020 (FIXED_PRESENCE), one sure group, two, and three.
    for strong, size in (([0.9, 0.05, 0.04], 1), ([0.95, 0.9, 0.03], 2), ([0.95, 0.9, 0.85], 3)):
        presence = FIXED_PRESENCE.copy()
        presence[[10, 30, 50]] = strong
        monkeypatch.setattr(sys.modules[__name__], "FIXED_PRESENCE", presence)
        prediction = _hedged(monkeypatch, tmp_path, LABEL_PRIOR.tolist(), "--expected-phases", "training")[
            "predictions"
        ][0]
        q = sorted((r["probability"] for r in prediction["ranked"]), reverse=True)
        assert expected_f1_size_by_counting(q) == size  # the size these probabilities call for
        assert prediction["set_rule"] == "expected-f1" and prediction["threshold"] is None
        assert prediction["predicted_set"] == sorted(r["spacegroup"] for r in prediction["ranked"][:size])
        # A threshold asked for decides the size instead: 0.03 admits every strong group.
        asked = _hedged(monkeypatch, tmp_path, LABEL_PRIOR.tolist(), "--threshold", "0.03")["predictions"][0]
        assert asked["set_rule"] == "threshold" and asked["threshold"] == 0.03
        assert len(asked["predicted_set"]) == 3


def test_the_expected_f1_size_does_not_move_with_the_prior_weight(tmp_path, monkeypatch) -> None:
    """FIXED_PRESENCE's 0.9 / 0.3 / 0.15 read as trained call for two groups; the hedge reorders 31 and 51 but
    keeps the size."""
    sizes = {}
    for weight in ("0", "2", "0.5"):
        prediction = _hedged(
            monkeypatch,
            tmp_path,
            LABEL_PRIOR.tolist(),
            "--prior-weight",
            weight,
            "--expected-phases",
            "training",
        )
        chosen = prediction["predictions"][0]
        sizes[weight] = len(chosen["predicted_set"])
        assert chosen["predicted_set"] == sorted(r["spacegroup"] for r in chosen["ranked"][: sizes[weight]])
    assert sizes == {"0": 2, "2": 2, "0.5": 2}


def test_the_set_size_reads_the_probabilities_at_the_expected_number_of_phases(tmp_path, monkeypatch) -> None:
    """FIXED_PRESENCE's 0.9 / 0.3 / 0.15 beside 227 groups at 0.01-0.02, from a checkpoint without a recipe (A.1's
    2.4 phases per mixture): read at 1, 1.5 (the default), 2.4 ('training') and 5 phases per sample, each odds
    q / (1 - q) times that over 2.4, the expected-F1 sizes are 1, 1, 2 and 3; the ranking never moves."""
    answers = {}
    for given, phases, size in (("1", 1.0, 1), (None, 1.5, 1), ("training", 2.4, 2), ("5", 5.0, 3)):
        args = () if given is None else ("--expected-phases", given)
        prediction = _hedged(monkeypatch, tmp_path, LABEL_PRIOR.tolist(), *args)["predictions"][0]
        odds = [r["probability"] / (1 - r["probability"]) * phases / 2.4 for r in prediction["ranked"]]
        assert expected_f1_size_by_counting(sorted((o / (1 + o) for o in odds), reverse=True)) == size
        assert len(prediction["predicted_set"]) == size
        assert prediction["expected_phases"] == pytest.approx(phases)
        answers[phases] = [r["spacegroup"] for r in prediction["ranked"]]
    assert all(ranked == answers[2.4] for ranked in answers.values())
    # score-measured takes the setting to the ranker and records it (the model is still FixedPresenceModel).
    labels = tmp_path / "labels.csv"
    labels.write_text("set,file,spacegroups,wavelength_angstrom\ndemo,sample.xy,11,1.54184\n")
    for given, phases, size in (("training", 2.4, 2), ("1", 1.0, 1)):
        out = tmp_path / f"scored-{given}"
        scored = CliRunner().invoke(
            main,
            ["score-measured", str(tmp_path / "fixed.pt"), "--labels", str(labels), "--out", str(out)]
            + ["--expected-phases", given],
        )
        assert scored.exit_code == 0, scored.output
        measured = json.loads((out / "measured.json").read_text())["files"][0]
        assert measured["expected_phases"] == pytest.approx(phases) and len(measured["predicted_set"]) == size
        assert f"read at {phases:g} phases per sample" in (out / "measured.md").read_text()
    # A checkpoint trained on another mix of phase counts reads its own mean: 3.0 here, so 'training' is 3.0.
    import xrdmodels.predict as predict_module

    state = {
        **_fixed_state(),
        "data": {**_fixed_state()["data"], "recipe": {"phase_count_probabilities": [0, 0, 1, 0, 0]}},
    }
    assert predict_module.training_mean_phases(state) == 3.0
    assert predict_module.training_mean_phases(_fixed_state()) == pytest.approx(2.4)
    assert (
        predict_module.training_max_phases(state) == 3
        and predict_module.training_max_phases(_fixed_state()) == 5
    )
    with pytest.raises(ValueError, match="my.pt: its training recipe's phase_count_probabilities"):
        predict_module.training_mean_phases({"data": {"recipe": {"phase_count_probabilities": "x"}}}, "my.pt")
    for bad in ("0.5", "6", "many"):
        refused = _hedged(monkeypatch, tmp_path, LABEL_PRIOR.tolist(), "--expected-phases", bad)
        assert refused["exit_code"] != 0 and f"--expected-phases {bad!r}" in refused["output"]
    for bad in (0.5, True, "1.5", float("nan")):
        with pytest.raises(ValueError, match="expected phases"):
            predict_module.check_expected_phases(bad)


def test_score_measured_ranks_like_predict_and_records_the_weight(tmp_path, monkeypatch) -> None:
    import xrdmodels.predict as predict_module

    predicted = _hedged(monkeypatch, tmp_path, LABEL_PRIOR.tolist(), "--prior-weight", "3")["predictions"][0]
    state = {**_fixed_state(), "data": {**_fixed_state()["data"], "label_prior": LABEL_PRIOR.tolist()}}
    monkeypatch.setattr(
        predict_module, "load_model", lambda checkpoint, device="cpu": (FixedPresenceModel(), state)
    )
    labels = tmp_path / "labels.csv"
    labels.write_text(
        "set,file,spacegroups,spacegroups_accept,wavelength_angstrom\ndemo,sample.xy,51,,1.54184\n"
    )
    out = tmp_path / "scored"
    result = CliRunner().invoke(
        main,
        [
            "score-measured",
            str(tmp_path / "fixed.pt"),
            "--labels",
            str(labels),
            "--out",
            str(out),
            "--prior-weight",
            "3",
        ],
    )
    assert result.exit_code == 0, result.output
    scored = json.loads((out / "measured.json").read_text())["files"][0]
    assert (
        scored["top10"] == [r["spacegroup"] for r in predicted["ranked"][:10]]
        and scored["prior_weight"] == 3.0
    )
    assert "w = 3 (--prior-weight" in (out / "measured.md").read_text()


@pytest.mark.parametrize("prior", [[0.5, 0.5], [float("nan")] * 230, [-1.0] + [0.0] * 229, "uniform"])
def test_a_malformed_recorded_prior_is_refused_naming_the_file_and_entry(
    tmp_path, monkeypatch, prior
) -> None:
    result = _hedged(monkeypatch, tmp_path, prior)
    assert result["exit_code"] != 0
    assert "fixed.pt" in result["output"] and "data.label_prior" in result["output"]


def test_a_negative_prior_weight_is_refused(tmp_path, monkeypatch) -> None:
    result = _hedged(monkeypatch, tmp_path, LABEL_PRIOR.tolist(), "--prior-weight", "-1")
    assert result["exit_code"] == 2 and "--prior-weight" in result["output"]


# ---------------------------------------------------------------------------------------------------------
# Degenerate measured input and CLI wording
# ---------------------------------------------------------------------------------------------------------


def _degenerate_folder(folder: Path) -> dict[str, str]:
    """Pattern files and the problem each must be reported with ('' = predicted)."""
    folder.mkdir()
    peaks = _peaks()
    # Background-subtracted, the peaks up: noise of ±0.5 about 0 (exactly half negative), or a residual offset
    # below 0 (nearly all of the baseline negative); both are clipped and predicted.
    half = peaks - 10.0 + np.where(np.arange(peaks.size) % 2, 0.5, -0.5)
    offset = peaks - 10.5
    mostly = peaks.copy()
    mostly[:1500] *= -1  # every peak in the negated part: they point down
    files = {
        "good.xy": (peaks, ""),
        "half.xy": (half, ""),
        "offset.xy": (offset, ""),
        "zero.xy": (np.zeros(2300), "all 2300 intensities are 0: the pattern holds no measurable signal"),
        "negative.xy": (-peaks, "2300 of 2300 intensities (100%) are negative"),
        "constant.xy": (np.full(2300, 7.0), "all 2300 intensities equal 7: a flat line has no peaks"),
        "mostly_negative.xy": (mostly, "1500 of 2300 intensities (65%) are negative"),
    }
    for name, (intensity, _) in files.items():
        _write_xy(folder / name, intensity)
    return {name: problem for name, (_, problem) in files.items()}


def _check_degenerate_outcome(
    predictions: list[dict], failures: list[dict], expected: dict[str, str]
) -> None:
    predicted = {Path(p["file"]).name: p for p in predictions}
    failed = {Path(f["file"]).name: f["error"] for f in failures}
    assert set(predicted) == {n for n, problem in expected.items() if not problem}
    assert set(failed) == {n for n, problem in expected.items() if problem}
    for name, error in failed.items():
        assert error.startswith(str(Path(failures[0]["file"]).parent / name)), error  # names the file
        assert expected[name] in error, error
    half_warnings = " | ".join(predicted["half.xy"]["warnings"])
    assert re.search(r"11\d\d of 2300 intensities \(4\d\.\d%\) are negative", half_warnings), half_warnings
    assert "clipped to 0" in half_warnings
    assert "clipped to 0" in " | ".join(predicted["offset.xy"]["warnings"])
    assert not any("negative" in w for w in predicted["good.xy"]["warnings"])


def test_degenerate_patterns_are_reported_and_not_predicted(tmp_path) -> None:
    from dataclasses import asdict

    ckpt = make_checkpoint(tmp_path / "m.pt", head="presence")
    folder = tmp_path / "patterns"
    expected = _degenerate_folder(folder)
    result = CliRunner().invoke(main, ["predict", str(ckpt), str(folder), "--wavelength", "CuKa", "--json"])
    assert result.exit_code == 0, result.output
    payload = json.loads(result.stdout)
    _check_degenerate_outcome(payload["predictions"], payload["failures"], expected)

    predictions, failures, skipped = predict_files(str(ckpt), [str(folder)], wavelength_angstrom=1.54184)
    assert skipped == []
    _check_degenerate_outcome(
        [asdict(p) for p in predictions], [{"file": f, "error": e} for f, e in failures], expected
    )

    alone = CliRunner().invoke(main, ["predict", str(ckpt), str(folder / "zero.xy"), "--wavelength", "CuKa"])
    assert alone.exit_code == 1
    assert f"could not predict {folder / 'zero.xy'}: all 2300 intensities are 0" in alone.output
    assert "rank  SG" not in alone.output


def test_folders_yield_their_pattern_files_and_list_the_rest(tmp_path) -> None:
    """A folder of scans also holds plots, notes and results; those are listed as left out, not read as text."""
    ckpt = make_checkpoint(tmp_path / "m.pt", head="presence")
    folder = tmp_path / "scans"
    (folder / "nested").mkdir(parents=True)
    _write_xy(folder / "a.xy", _peaks())
    _write_xy(folder / "nested" / "b.dat", _peaks())
    _write_xy(folder / "d.chi", _peaks())  # integrated by pyFAI: an extension no reader names, numeric rows
    (folder / "c.xrdml").write_text("<not xml")  # named a pattern: read, and its failure reported
    (folder / "a.png").write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(64))
    (folder / "notes.md").write_text("# scans of 2026-12-07\n")
    (folder / "result.json").write_text('{"predictions": []}')
    # .csv, .dat and .txt are also tables, notes and logs: read only with rows of numbers.
    (folder / "labels.csv").write_text("set,file,spacegroups\ns,a.xy,225\n")
    (folder / "log.txt").write_text("scanned 2026-12-07\nstep 0.02 deg\n")
    (folder / "e.csv").write_text("".join(f"{10 + 0.02 * i:.2f},{100 + (i % 7)}\n" for i in range(3000)))
    (folder / ".hidden.xy").write_text("not read")
    (folder / ".ipynb_checkpoints").mkdir()
    _write_xy(folder / ".ipynb_checkpoints" / "a-checkpoint.xy", _peaks())  # in a hidden folder: not read
    result = CliRunner().invoke(main, ["predict", str(ckpt), str(folder), "--wavelength", "CuKa", "--json"])
    assert result.exit_code == 0, result.output
    payload = json.loads(result.stdout)
    assert sorted(Path(p["file"]).name for p in payload["predictions"]) == ["a.xy", "b.dat", "d.chi", "e.csv"]
    assert sorted(Path(f["file"]).name for f in payload["failures"]) == ["c.xrdml"]
    skipped = ["a.png", "labels.csv", "log.txt", "notes.md", "result.json"]
    assert sorted(Path(f).name for f in payload["skipped"]) == skipped
    assert "left out 5 file(s)" in result.stderr and "name a file directly" in result.stderr
    # Named directly, a file is always read (here as two-column text, which a note is not).
    direct = CliRunner().invoke(
        main, ["predict", str(ckpt), str(folder / "notes.md"), "--wavelength", "CuKa"]
    )
    assert direct.exit_code == 1 and f"could not predict {folder / 'notes.md'}" in direct.output
    # A folder with no pattern file is an error that says so, not a silent success.
    (tmp_path / "empty").mkdir()
    empty = CliRunner().invoke(main, ["predict", str(ckpt), str(tmp_path / "empty")])
    assert empty.exit_code == 1 and "no pattern file found in" in empty.output


def test_counts_and_folders_are_checked_before_any_work(tmp_path) -> None:
    """--top, --limit and --max-samples refuse counts below 1 (they used to slice from the end or fail deep
    inside), and score-measured refuses an --out it cannot write before scoring, so no score is lost."""
    ckpt = make_checkpoint(tmp_path / "m.pt", head="presence")
    scan = _write_xy(tmp_path / "scan.xy", _peaks())
    labels = tmp_path / "labels.csv"
    labels.write_text("set,file,spacegroups,wavelength_angstrom\ns,scan.xy,225,1.5406\n")
    runner = CliRunner()
    for args, message in (
        (["predict", str(ckpt), str(scan), "--top", "0"], "'--top': 0 is not in the range 1<=x<=230"),
        (["predict", str(ckpt), str(scan), "--top", "-3"], "'--top': -3 is not in the range 1<=x<=230"),
        (
            [
                "score-measured",
                str(ckpt),
                "--labels",
                str(labels),
                "--out",
                str(tmp_path / "o"),
                "--limit",
                "-1",
            ],
            "'--limit': -1 is not in the range x>=1",
        ),
        (
            [
                "evaluate",
                str(ckpt),
                "--store",
                f"x={tmp_path}",
                "--out",
                str(tmp_path / "e"),
                "--max-samples",
                "0",
            ],
            "'--max-samples': 0 is not in the range x>=1",
        ),
    ):
        result = runner.invoke(main, args)
        assert result.exit_code == 2 and message in result.output, result.output
    (tmp_path / "file").write_text("")
    out = tmp_path / "file" / "scores"  # below a file: cannot be made
    result = runner.invoke(main, ["score-measured", str(ckpt), "--labels", str(labels), "--out", str(out)])
    assert result.exit_code == 1 and f"cannot write the scores to --out {out}" in result.output
    assert "files scored" not in result.output
    (tmp_path / "bad.csv").write_text("file,spacegroups\nscan.xy,225\n")  # fails after --out was made
    fresh = tmp_path / "fresh"
    result = runner.invoke(
        main, ["score-measured", str(ckpt), "--labels", str(tmp_path / "bad.csv"), "--out", str(fresh)]
    )
    assert result.exit_code == 1 and "no column set" in result.output and not fresh.exists()


def test_cli_messages_name_the_cli_options(tmp_path) -> None:
    from xrdmodels.measured import DEFAULT_MAX_PATTERN_BYTES

    ckpt = make_checkpoint(tmp_path / "m.pt", head="presence")
    pattern = _write_xy(tmp_path / "nowave.xy", _peaks())  # states no wavelength
    runner = CliRunner()
    # A file that states no wavelength is read as Cu Kα, the laboratory default, and the user is told.
    no_wavelength = runner.invoke(main, ["predict", str(ckpt), str(pattern)])
    assert no_wavelength.exit_code == 0, no_wavelength.output
    assert "the file states no wavelength: read as Cu Kα (1.54184 Å)" in no_wavelength.output
    assert "give it with --wavelength" in no_wavelength.output
    given = runner.invoke(main, ["predict", str(ckpt), str(pattern), "--wavelength", "CuKa"])
    assert given.exit_code == 0 and "states no wavelength" not in given.output

    bad_format = runner.invoke(
        main, ["predict", str(ckpt), str(pattern), "--wavelength", "CuKa", "--format", "spc"]
    )
    assert bad_format.exit_code != 0
    assert "unknown format 'spc'" in bad_format.output and "--format" in bad_format.output

    too_big = runner.invoke(
        main, ["predict", str(ckpt), str(pattern), "--wavelength", "CuKa", "--max-file-mb", "0.01"]
    )
    assert too_big.exit_code == 1
    assert "nowave.xy: the file is" in too_big.output and "0.01 MiB limit" in too_big.output
    assert "--max-file-mb" in too_big.output

    negative = runner.invoke(
        main, ["predict", str(ckpt), str(pattern), "--wavelength", "CuKa", "--threshold", "-1"]
    )
    assert negative.exit_code != 0 and "--threshold" in negative.output
    for text in ("nan", "gate"):
        refused = runner.invoke(main, ["predict", str(ckpt), str(pattern), "--threshold", text])
        assert (
            refused.exit_code != 0
            and f"--threshold {text!r}" in refused.output
            and "validation" in refused.output
        )
    for value in (True, "0.3", -0.1, float("inf")):  # the Python API says what it takes too
        with pytest.raises(ValueError, match="must be a number >= 0 or 'validation'"):
            predict_files(str(ckpt), [str(pattern)], wavelength_angstrom=1.54184, threshold=value)
    assert check_threshold(np.float32(0.25)) == 0.25 and check_threshold("validation") == "validation"

    option = next(p for p in main.commands["predict"].params if p.name == "max_file_mb")
    assert option.default * 2**20 == DEFAULT_MAX_PATTERN_BYTES


def test_paired_changes_count_each_file_once_per_direction() -> None:
    """A file counts as gained when any of its phases enters the other ranking's top k, lost in reverse."""

    def score(phases: list[set[int]], ranked: list[int]) -> MeasuredScore:
        return MeasuredScore(set="s", file="f", phases=phases, ranked=ranked, warnings=[])

    base = [
        score([{1}], [1, 2, 3]),  # found by both
        score([{4}], [5, 6, 4]),  # found by base in the top 3 only
        score([{7}, {8}], [9, 10, 11]),  # found by neither in the base
        score([{12, 13}], [13, 14, 15]),  # one acceptable group is enough
    ]
    other = [
        score([{1}], [2, 1, 3]),
        score([{4}], [5, 6, 7]),
        score([{7}, {8}], [8, 9, 10]),
        score([{12, 13}], [14, 15, 16]),
    ]
    assert paired_changes(base, other, 1) == (1, 2)  # gained file 3; lost files 1 and 4
    assert paired_changes(base, other, 3) == (1, 2)  # gained file 3; lost files 2 and 4
    assert paired_changes(base, base, 3) == (0, 0)


def test_the_expected_f1_set_is_no_larger_than_a_training_mixture(tmp_path, monkeypatch) -> None:
    """A checkpoint trained on single-phase patterns only (K* = 1): read at 5 phases per sample, FIXED_PRESENCE's
    probabilities call for a set of 3 under A.1's mix (the test above), yet no training label named more than one
    group, so the set keeps one; the ranking is the same."""
    import xrdmodels.predict as predict_module

    state = {
        **_fixed_state(),
        "data": {**_fixed_state()["data"], "recipe": {"phase_count_probabilities": [1, 0, 0, 0, 0]}},
    }
    monkeypatch.setattr(
        predict_module, "load_model", lambda checkpoint, device="cpu": (FixedPresenceModel(), state)
    )
    (tmp_path / "fixed.pt").write_bytes(b"not read: load_model is replaced")
    pattern = _write_xy(tmp_path / "sample.xy", _peaks())
    result = CliRunner().invoke(
        main,
        [
            "predict",
            str(tmp_path / "fixed.pt"),
            str(pattern),
            "--wavelength",
            "CuKa",
            "--expected-phases",
            "5",
        ],
    )
    assert result.exit_code == 0, result.output
    assert "at most as many groups as a training mixture's most phases" in result.output
    chosen = json.loads(
        CliRunner()
        .invoke(
            main,
            ["predict", str(tmp_path / "fixed.pt"), str(pattern), "--wavelength", "CuKa", "--json"]
            + ["--expected-phases", "5"],
        )
        .stdout
    )["predictions"][0]
    assert len(chosen["predicted_set"]) == 1 and chosen["predicted_set"] == [
        chosen["ranked"][0]["spacegroup"]
    ]


def test_evaluate_keeps_two_runs_apart_and_checks_everything_before_scoring(tmp_path, stores) -> None:
    """Two runs' models/cnn/last.pt got one table row (same default name); a second, missing checkpoint was found
    only after the first was scored; a store on another grid or at another anode was scored without a word."""
    first = tmp_path / "run_a" / "models" / "cnn" / "last.pt"
    second = tmp_path / "run_b" / "models" / "cnn" / "last.pt"
    for path in (first, second):
        path.parent.mkdir(parents=True)
        make_checkpoint(path)
    out = tmp_path / "eval"
    both = CliRunner().invoke(
        main, ["evaluate", str(first), str(second), "--store", f"test={stores['test']}", "--out", str(out)]
    )
    assert both.exit_code == 0, both.output
    rows = [line for line in (out / "table.md").read_text().splitlines() if line.startswith("| Transformer")]
    assert len(rows) == 2 and "run_a/models/cnn/last.pt" in rows[0] and "run_b/models/cnn/last.pt" in rows[1]
    missing = CliRunner().invoke(
        main,
        [
            "evaluate",
            str(first),
            str(tmp_path / "typo.pt"),
            "--store",
            f"test={stores['test']}",
            "--out",
            str(tmp_path / "m"),
        ],
    )
    assert missing.exit_code != 0 and "typo.pt" in missing.output and not (tmp_path / "m").exists()
    twice = CliRunner().invoke(
        main,
        [
            "evaluate",
            str(first),
            str(second),
            "--store",
            f"test={stores['test']}",
            "--out",
            str(tmp_path / "n"),
        ]
        + ["--name", "same", "--name", "same"],
    )
    assert twice.exit_code != 0 and "--name must be different" in twice.output
    other_grid = make_checkpoint(tmp_path / "wide.pt", n_bins=2 * N_BINS)
    refused = CliRunner().invoke(
        main, ["evaluate", str(other_grid), "--store", f"test={stores['test']}", "--out", str(tmp_path / "g")]
    )
    assert (
        refused.exit_code != 0 and "to evaluate, use stores generated on the model's grid" in refused.output
    )
    molybdenum = make_checkpoint(tmp_path / "mo.pt", wavelength_angstrom=0.71073)
    refused = CliRunner().invoke(
        main, ["evaluate", str(molybdenum), "--store", f"test={stores['test']}", "--out", str(tmp_path / "w")]
    )
    assert refused.exit_code != 0 and "trained on patterns at 0.71073 Å" in refused.output


def test_a_reused_out_folder_keeps_no_figure_of_an_earlier_evaluate(tmp_path, stores) -> None:
    """Figures are drawn only from what the run has: an earlier evaluate's Fig. A1 in the same --out used to stay,
    passing for the next models' training curve."""
    first = tmp_path / "a" / "model.pt"
    second = tmp_path / "b" / "model.pt"
    for ckpt in (first, second):
        ckpt.parent.mkdir()
        make_checkpoint(ckpt)
    (first.parent / "metrics.csv").write_text(
        "step,split,name,value\n10,val,micro_f1,0.2\n20,val,micro_f1,0.3\n"
    )
    out = tmp_path / "eval"
    for ckpt, has_curve in ((first, True), (second, False)):
        result = CliRunner().invoke(
            main, ["evaluate", str(ckpt), "--store", f"test={stores['test']}", "--out", str(out)]
        )
        assert result.exit_code == 0, result.output
        assert (out / "fig_a1_val_micro_f1.png").exists() == has_curve
        assert (out / "fig_a3_strata.png").stat().st_size > 0
