"""`pipelines/measured/inference_variants.py` on a labels table without the shared sets' names: every row is
written, a variant equal to the baseline pairs +0 −0, a label-prior correction towards the bank's groups
moves the bank's group to the top, and a uniform training prior added to the probabilities moves nothing."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import zarr

from pipeline_scripts import load_script

variants = load_script("inference_variants", "pipelines/measured/inference_variants.py")
make_checkpoint = load_script("checkpoint_factory", "tests/xrdmodels/checkpoint_factory.py").make_checkpoint

#: The only group of the bank's curated training entries (space group 14, P2_1/c).
BANK_GROUP = 14


def _run_folder(path: Path) -> Path:
    """The two arrays the script reads of a measured run: the training mixtures' groups (every group equally
    often) and the bank's entries (all curated, all of BANK_GROUP, plus one synthetic entry of group 2)."""
    mixtures = zarr.open_group(str(path / "mixtures" / "train.zarr"), mode="w")
    groups = np.zeros((2300, 5), dtype=np.int16)
    groups[:, 0] = np.tile(np.arange(1, 231), 10)
    mixtures.create_array("phase_spacegroup", data=groups)
    entries = zarr.open_group(str(path / "bank.zarr"), mode="w").create_group("entries")
    n = 100_001
    entries.create_array("synthetic", data=np.arange(n) == 0)
    entries.create_array("split", data=np.array(["train"] * n, dtype=np.dtypes.StringDType()))
    entries.create_array(
        "spacegroup_number", data=np.where(np.arange(n) == 0, 2, BANK_GROUP).astype(np.int16)
    )
    return path


def _labels(folder: Path) -> Path:
    two_theta = np.arange(10.0, 80.0, 0.02)
    for i, centres in enumerate([(28.4, 47.3, 56.1), (31.7, 45.5, 66.2)]):
        intensity = 20.0 + sum(800.0 * np.exp(-0.5 * ((two_theta - c) / 0.08) ** 2) for c in centres)
        (folder / f"p{i}.xy").write_text(
            "\n".join(f"{x:.3f} {y:.4f}" for x, y in zip(two_theta, intensity, strict=True))
        )
    labels = folder / "labels.csv"
    labels.write_text(
        "set,file,spacegroups,spacegroups_accept,wavelength_angstrom\n"
        f"demo,p0.xy,{BANK_GROUP},,1.54184\ndemo,p1.xy,225,,1.54184\ndemo,missing.xy,1,,1.54184\n"
    )
    return labels


def test_variants_table_on_a_labels_table_of_other_sets(tmp_path, monkeypatch, capsys) -> None:
    run = _run_folder(tmp_path / "run")
    labels = _labels(tmp_path)
    ckpt = make_checkpoint(tmp_path / "m.pt", n_bins=256)
    out = tmp_path / "variants.md"
    argv = ["inference_variants.py", str(ckpt), str(ckpt), "--run", str(run), "--labels", str(labels)]
    monkeypatch.setattr(sys, "argv", [*argv, "--shifts", "0.05", "--scales", "0.02", "--out", str(out)])
    variants.main()

    assert "skipped" in capsys.readouterr().out  # missing.xy is reported and the others are scored
    rows = {
        line.split(" | ")[0].lstrip("| "): line for line in out.read_text().splitlines() if line[:2] == "| "
    }
    expected = (
        4 + len(variants.PRIOR_CORRECTIONS) + len(variants.PRIOR_MIXTURES) + 2 * len(variants.PRIOR_WEIGHTS)
    )  # + header
    assert len(rows) == 1 + expected, rows.keys()
    assert "mean over d-spacing scalings 1, 1 ± 0.02" in rows
    baseline, same = rows["the first checkpoint"], rows["mean of 2 checkpoints"]
    assert "+0 −0 / +0 −0" in baseline and "+0 −0 / +0 −0" in same
    assert (
        baseline.split(" | ")[1] == same.split(" | ")[1]
    )  # the mean of one checkpoint twice is that checkpoint
    assert baseline.endswith("| – | – |")  # no xrd_autoanalyzer or NIST rows in these labels
    strongest = rows["label-prior correction, pseudo-count 0.5, strength 1.0"].split(" | ")[1]
    assert baseline.split(" | ")[1].startswith("0.000 /")  # the untrained model finds neither first
    assert strongest.startswith("0.500 /")  # corrected, p0 (BANK_GROUP) is found first; p1 (225) cannot be
    # Every group is equally common in the training mixtures: adding the prior moves no group past another.
    hedged = rows["plus 4.0 x the training label prior"].split(" | ")
    assert hedged[1] == baseline.split(" | ")[1] and hedged[2] == "+0 −0 / +0 −0"


def test_scaled_d_spacings_follow_braggs_law_and_drop_points_past_90_degrees() -> None:
    from xrdmodels.measured import MeasuredPattern

    wavelength = 1.5406
    two_theta = np.array([20.0, 45.0, 100.0, 170.0])
    pattern = MeasuredPattern(two_theta, np.arange(4.0), wavelength, "synthetic")
    d = wavelength / (2.0 * np.sin(np.radians(two_theta / 2.0)))
    larger = variants.scale_d_spacings(pattern, 1.02)
    np.testing.assert_allclose(wavelength / (2.0 * np.sin(np.radians(larger.two_theta_deg / 2.0))), 1.02 * d)
    # 170° would need sin θ > 1 at the smaller d-spacing: dropped with its intensity.
    smaller = variants.scale_d_spacings(pattern, 0.98)
    np.testing.assert_allclose(
        smaller.two_theta_deg, 2.0 * np.degrees(np.arcsin(wavelength / (2 * 0.98 * d[:3])))
    )
    np.testing.assert_array_equal(smaller.intensity, [0.0, 1.0, 2.0])


def test_a_refused_file_is_a_miss_and_a_run_made_with_bank_names_it(tmp_path, monkeypatch) -> None:
    """A file the model refuses scored groups 1, 2, 3 ... in order (a hit for group 1); now it ranks nothing.
    Means over variants use the variants a file was scored in. --bank reads a bank outside the run folder."""
    from xrdmodels.measured import MeasuredPattern

    pattern = MeasuredPattern(np.array([10.0, 20.0]), np.array([1.0, 2.0]), 1.54184, "f.xy")
    labelled = [
        variants.LabelledPattern(
            {"set": "demo", "file": f"f{g}.xy"}, Path(f"f{g}.xy"), pattern, 1.54184, [{g}], set()
        )
        for g in (1, 2)
    ]
    scores = np.full((2, 230), np.nan)
    scores[1] = np.linspace(1.0, 0.0, 230)
    ranked = variants.scores_of(labelled, scores)
    assert ranked[0].ranked == [] and ranked[1].ranked[:2] == [1, 2]
    shifted = np.full((2, 230), np.nan)
    shifted[0] = np.linspace(0.0, 1.0, 230)
    mean = variants.mean_of([scores, shifted])
    np.testing.assert_array_equal(mean[0], shifted[0])
    np.testing.assert_array_equal(mean[1], scores[1])
    run = _run_folder(tmp_path / "run")
    (run / "bank.zarr").rename(tmp_path / "elsewhere.zarr")
    labels = _labels(tmp_path)
    ckpt = make_checkpoint(tmp_path / "m.pt", n_bins=256)
    argv = ["inference_variants.py", str(ckpt), "--run", str(run), "--labels", str(labels), "--shifts"]
    monkeypatch.setattr(sys, "argv", [*argv, "--scales"])
    try:
        variants.main()
    except SystemExit as stop:
        assert f"no Zarr store at {run / 'bank.zarr'}" in str(stop)
    else:
        raise AssertionError("a run folder without its bank must be refused by name")
    monkeypatch.setattr(sys, "argv", [*argv, "--scales", "--bank", str(tmp_path / "elsewhere.zarr")])
    variants.main()
