"""evaluate (Table 1 outputs agree with the metrics on a direct forward pass), predict and score-measured."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from store_factory import StoreSpec, write_store

from xrdmodels.checkpoint import save_checkpoint
from xrdmodels.cli import _LINES_ANGSTROM, main
from xrdmodels.config import preset
from xrdmodels.data import MixtureStore, to_batch
from xrdmodels.measured_eval import parse_phases
from xrdmodels.metrics import gate_sweep, threshold_sweep
from xrdmodels.models.model import SpaceGroupModel

REPO = Path(__file__).resolve().parents[2]
EXPERIMENTAL = REPO.parent / "shared" / "data" / "experimental"
N_BINS = 256


def make_checkpoint(path: Path, head: str) -> Path:
    torch.manual_seed(0)
    config = preset("small", head=head, n_bins=N_BINS, cnn_channels=[8, 8, 16, 16], d_model=32, ffn_dim=64)
    model = SpaceGroupModel(config)
    save_checkpoint(
        path,
        {
            "model": model.state_dict(),
            "model_config": config.model_dump(mode="json"),
            "step": 7,
            "data": {"wavelength_angstrom": 1.54184},
            "val_metrics": {},
        },
    )
    return path


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
    ckpt = make_checkpoint(tmp_path / f"{head}.pt", head)
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
    model.load_state_dict(torch.load(ckpt, weights_only=False)["model"])
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
    strata = {s["stratum"] for s in results["strata"] if s["split"] == "test"}
    assert {"K*=1", "K*=2"} <= strata and any("min_fraction" in s for s in strata)


def test_several_checkpoints_share_one_table(tmp_path, stores) -> None:
    a = make_checkpoint(tmp_path / "a.pt", "presence")
    b = make_checkpoint(tmp_path / "b.pt", "phase_cluster")
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
    ckpt = make_checkpoint(tmp_path / "m.pt", "phase_cluster")
    folder = tmp_path / "patterns"
    folder.mkdir()
    shutil.copy(EXPERIMENTAL / "xrd_autoanalyzer" / "TiO2.xy", folder)
    shutil.copy(next((EXPERIMENTAL / "nist_duplex_steel").glob("*.xrdml")), folder)
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
    assert len(payload["predictions"]) == 2 and len(payload["failures"]) == 1
    assert "broken.xy" in payload["failures"][0]["file"]
    for p in payload["predictions"]:
        assert len(p["ranked"]) == 7 and p["slots"] is not None
        probs = [r["probability"] for r in p["ranked"]]
        assert probs == sorted(probs, reverse=True)
        assert all(1 <= r["spacegroup"] <= 230 and r["symbol"] for r in p["ranked"])
    assert len(list((tmp_path / "plots").glob("*.png"))) == 2
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
    ckpt = make_checkpoint(tmp_path / "m.pt", "presence")
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
    summary = json.loads((tmp_path / "s" / "measured.json").read_text())["summary"]
    by_set = {r["set"]: r for r in summary}
    assert by_set["all"]["files"] == 14 and by_set["xrd_autoanalyzer"]["files"] == 9
    for r in summary:
        assert 0 <= r["hit@1"] <= r["hit@3"] <= r["hit@5"] <= r["hit@10"] <= 1


def test_phase_labels_with_alternatives() -> None:
    assert parse_phases("206|61;12", "206;12") == [{206, 61}, {12}]
    assert parse_phases("", "225;229") == [{225}, {229}]


def test_wavelength_lines_agree_with_pymatgen() -> None:
    from pymatgen.analysis.diffraction.xrd import WAVELENGTHS

    for name, value in _LINES_ANGSTROM.items():
        assert value == pytest.approx(WAVELENGTHS[name], abs=1e-6)
    assert np.isfinite(list(_LINES_ANGSTROM.values())).all()
