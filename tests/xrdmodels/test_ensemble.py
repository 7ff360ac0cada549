"""Ensembles (xrdmodels.ensemble): the manifest format, the members' mean probability against each member run
alone, the checks that refuse members which read patterns differently, and the commands that take a manifest."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from checkpoint_factory import make_checkpoint
from click.testing import CliRunner
from store_factory import StoreSpec, write_store

from xrdmodels.cli import main
from xrdmodels.ensemble import (
    ManifestError,
    PresenceEnsemble,
    read_manifest,
    write_manifest,
)
from xrdmodels.evaluate import load_model, predict_store

N_BINS = 256
RECIPE = {"name": "lab"}


def _checkpoint(
    path: Path, seed: int, *, head: str = "presence", n_bins: int = N_BINS, threshold=0.3
) -> Path:
    return make_checkpoint(
        path, head=head, n_bins=n_bins, seed=seed, step=100 + seed, recipe=RECIPE, best_threshold=threshold
    )


def _batch(seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(3, N_BINS, generator=g)
    mask = torch.ones(3, N_BINS, dtype=torch.bool)
    mask[1, :40] = False
    return x, mask


def test_the_ensemble_probability_is_the_mean_of_the_members_run_alone(tmp_path):
    paths = [_checkpoint(tmp_path / "m" / f"seed{k}.pt", k, threshold=0.2 + 0.1 * k) for k in range(3)]
    manifest = write_manifest(tmp_path / "m" / "ensemble.json", paths)
    model, state = load_model(manifest)
    x, mask = _batch()
    with torch.no_grad():
        alone = [torch.sigmoid(load_model(p)[0](x, mask).presence_logits).numpy() for p in paths]
        out = model(x, mask)
    assert isinstance(model, PresenceEnsemble) and len(model.members) == 3
    np.testing.assert_allclose(out.set_probs.numpy(), np.mean(alone, axis=0), rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(torch.sigmoid(out.presence_logits).numpy(), out.set_probs.numpy(), atol=1e-6)
    # The operating threshold is the mean of the members' validation thresholds; steps are per member.
    assert state["val_metrics"]["best_threshold"] == pytest.approx(0.3)
    assert state["step"] is None and [m["step"] for m in state["members"]] == [100, 101, 102]
    assert state["data"]["recipe"] == RECIPE and "model" not in state


def test_the_ensemble_label_prior_is_the_mean_of_the_members_and_none_unless_all_record_one(tmp_path):
    priors = [np.eye(230)[k].tolist() for k in range(2)]
    paths = [
        make_checkpoint(tmp_path / f"seed{k}.pt", seed=k, recipe=RECIPE, label_prior=priors[k])
        for k in range(2)
    ]
    _, state = load_model(write_manifest(tmp_path / "both.json", paths))
    np.testing.assert_allclose(state["data"]["label_prior"], np.mean(priors, axis=0))
    alone = make_checkpoint(tmp_path / "without.pt", seed=2, recipe=RECIPE)
    _, state = load_model(write_manifest(tmp_path / "one.json", [paths[0], alone]))
    assert "label_prior" not in state["data"]


def test_members_below_the_manifest_are_stored_relative_so_the_folder_moves(tmp_path):
    paths = [_checkpoint(tmp_path / "run" / f"m{k}" / "last.pt", k) for k in range(2)]
    outside = _checkpoint(tmp_path / "elsewhere" / "last.pt", 5)
    manifest = write_manifest(tmp_path / "run" / "ensemble.json", [*paths, outside])
    members = json.loads(manifest.read_text())["members"]
    assert members[:2] == ["m0/last.pt", "m1/last.pt"] and Path(members[2]).is_absolute()
    shutil.move(tmp_path / "run", tmp_path / "moved")
    assert read_manifest(tmp_path / "moved" / "ensemble.json")[0] == tmp_path / "moved" / "m0" / "last.pt"
    model, _ = load_model(tmp_path / "moved" / "ensemble.json")
    assert len(model.members) == 3


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("not json", "is not an ensemble manifest"),
        (json.dumps({"format": "something.else", "format_version": 1, "members": ["a.pt"]}), "format"),
        (json.dumps({"format": "xrdmodels.ensemble", "format_version": 9, "members": ["a.pt"]}), "version 9"),
        (json.dumps({"format": "xrdmodels.ensemble", "format_version": 1, "members": []}), "non-empty list"),
        (json.dumps({"format": "xrdmodels.ensemble", "format_version": 1, "members": [3]}), "non-empty list"),
        (
            json.dumps({"format": "xrdmodels.ensemble", "format_version": 1, "members": ["x.json"]}),
            "not manifests",
        ),
    ],
)
def test_a_malformed_manifest_is_refused_naming_the_file(tmp_path, text, expected):
    path = tmp_path / "bad.json"
    path.write_text(text)
    with pytest.raises(ManifestError, match=expected) as info:
        load_model(path)
    assert str(path) in str(info.value)


def test_members_that_read_patterns_differently_are_refused(tmp_path):
    base = _checkpoint(tmp_path / "a.pt", 0)
    cluster = _checkpoint(tmp_path / "cluster.pt", 1, head="phase_cluster")
    wider = _checkpoint(tmp_path / "wider.pt", 2, n_bins=2 * N_BINS)
    with pytest.raises(ManifestError, match="presence head"):
        write_manifest(tmp_path / "e.json", [base, cluster], load_member=load_model)
    with pytest.raises(ManifestError, match="n_bins"):
        write_manifest(tmp_path / "e.json", [base, wider], load_member=load_model)
    with pytest.raises(ManifestError, match="end in .json"):
        write_manifest(tmp_path / "e.pt", [base])
    assert not (tmp_path / "e.json").exists(), "nothing is written when the members disagree"


def test_cli_writes_a_manifest_that_predict_and_evaluate_read(tmp_path):
    paths = [str(_checkpoint(tmp_path / f"s{k}.pt", k)) for k in range(2)]
    manifest = tmp_path / "ensemble.json"
    written = CliRunner().invoke(main, ["ensemble", str(manifest), *paths])
    assert written.exit_code == 0, written.output
    assert "2 members" in written.output and json.loads(manifest.read_text())["members"] == ["s0.pt", "s1.pt"]
    refused = CliRunner().invoke(
        main, ["ensemble", str(tmp_path / "x.json"), paths[0], str(tmp_path / "no.pt")]
    )
    assert refused.exit_code != 0 and "no.pt" in refused.output

    store = str(tmp_path / "test.zarr")
    write_store(
        store, StoreSpec(n_samples=40, n_bins=N_BINS, shard_size=64, chunk_rows=16), seed=0, realistic=True
    )
    ensemble = predict_store(load_model(manifest)[0], store).scores
    alone = np.mean([predict_store(load_model(p)[0], store).scores for p in paths], axis=0)
    np.testing.assert_allclose(ensemble, alone, rtol=1e-5, atol=1e-6)
    evaluated = CliRunner().invoke(
        main, ["evaluate", str(manifest), "--store", f"test={store}", "--out", str(tmp_path / "ev")]
    )
    assert evaluated.exit_code == 0, evaluated.output
    assert "ensemble of 2" in (tmp_path / "ev" / "table.md").read_text()

    pattern = tmp_path / "p.xy"
    two_theta = np.linspace(10, 80, 3501)
    intensity = 10 + 1000 * np.exp(-0.5 * ((two_theta - 40) / 0.05) ** 2)
    np.savetxt(pattern, np.column_stack([two_theta, intensity]))
    predicted = CliRunner().invoke(
        main, ["predict", str(manifest), str(pattern), "--wavelength", "CuKa", "--json"]
    )
    assert predicted.exit_code == 0, predicted.output
    ranked = json.loads(predicted.stdout)["predictions"][0]["ranked"]
    assert [r["probability"] for r in ranked] == sorted((r["probability"] for r in ranked), reverse=True)


def test_the_ensemble_threshold_is_chosen_on_a_validation_store(tmp_path):
    """`--val-store` records the ensemble's own operating threshold, the micro-F1 optimum of its averaged
    probabilities (recomputed here by brute force over A.7's 101 thresholds), which the members' mean (0.3 and
    0.5 give 0.4, what a manifest without one reads) need not be."""
    paths = [str(_checkpoint(tmp_path / f"s{k}.pt", k, threshold=t)) for k, t in ((0, 0.3), (1, 0.5))]
    store = str(tmp_path / "val.zarr")
    spec = StoreSpec(n_samples=64, n_bins=N_BINS, shard_size=64, chunk_rows=16)
    write_store(store, spec, seed=1, realistic=True)
    manifest = tmp_path / "e.json"
    result = CliRunner().invoke(main, ["ensemble", str(manifest), *paths, "--val-store", store])
    assert result.exit_code == 0, result.output
    recorded = json.loads(manifest.read_text())["best_threshold"]
    assert f"threshold {recorded:.2f} chosen on {store}" in result.output
    pred = predict_store(load_model(manifest)[0], store)

    def micro_f1(threshold: float) -> float:
        chosen = pred.scores >= threshold
        return 2 * (chosen & pred.targets).sum() / (chosen.sum() + pred.targets.sum())

    assert micro_f1(recorded) == pytest.approx(max(micro_f1(t) for t in np.linspace(0.0, 1.0, 101)))
    assert load_model(manifest)[1]["val_metrics"]["best_threshold"] == recorded
    plain = tmp_path / "plain.json"
    assert CliRunner().invoke(main, ["ensemble", str(plain), *paths]).exit_code == 0
    assert "best_threshold" not in json.loads(plain.read_text())
    assert load_model(plain)[1]["val_metrics"]["best_threshold"] == pytest.approx(0.4)
    # Members trained at another anode's wavelength than the store's, a name that is not .json (refused before
    # any member is loaded, so before minutes of prediction): nothing is written.
    molybdenum = [
        str(make_checkpoint(tmp_path / f"mo{k}.pt", seed=k, wavelength_angstrom=0.71073, recipe=RECIPE))
        for k in range(2)
    ]
    other = CliRunner().invoke(
        main, ["ensemble", str(tmp_path / "mo.json"), *molybdenum, "--val-store", store]
    )
    assert other.exit_code != 0 and "trained on patterns at 0.71073 Å" in other.output
    misnamed = CliRunner().invoke(main, ["ensemble", str(tmp_path / "e.jsn"), str(tmp_path / "absent.pt")])
    assert misnamed.exit_code != 0 and "must end in .json" in misnamed.output
    assert not (tmp_path / "mo.json").exists() and not (tmp_path / "e.jsn").exists()
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({**json.loads(manifest.read_text()), "best_threshold": 1.5}))
    with pytest.raises(ManifestError, match="best_threshold") as info:
        load_model(bad)
    assert str(bad) in str(info.value)
