"""`pipelines/measured/pair_check.py`: every mixture holds all the named phases, and the shares it prints are the
model's own ranks counted mixture by mixture."""

from __future__ import annotations

import numpy as np
import pytest

from pipeline_scripts import load_script
from xrdmodels.evaluate import load_model, predict_store

pair_check = load_script("pair_check", "pipelines/measured/pair_check.py")
make_checkpoint = load_script("checkpoint_factory", "tests/xrdmodels/checkpoint_factory.py").make_checkpoint


@pytest.mark.skipif(
    not all(c.exists() for c in pair_check.DEFAULT_CIFS),
    reason="the steel's structures come from ../shared/data/structures, which is not beside this checkout",
)
def test_the_printed_shares_are_the_models_ranks(tmp_path) -> None:
    stores = pair_check.build_stores(pair_check.DEFAULT_CIFS, 24, [0.0, 1.0], 0, tmp_path)
    checkpoint = make_checkpoint(tmp_path / "m.pt", n_bins=2048, label_prior=[1.0 / 230] * 230)
    model, state = load_model(checkpoint)
    for share, store in stores.items():
        predictions = predict_store(model, str(store))
        assert predictions.targets[:, [224, 228]].all() and predictions.targets.sum(axis=1).max() == 2
        first = {225: 0, 229: 0}
        top3 = {225: 0, 229: 0}
        both = 0
        for row in predictions.scores:
            order = list(np.argsort(-row, kind="stable") + 1)
            for group in (225, 229):
                first[group] += order[0] == group
                top3[group] += group in order[:3]
            both += 225 in order[:3] and 229 in order[:3]
        n = len(predictions.scores)
        expected = (
            f"scores: 225: first {first[225] / n:.2f}, top 3 {top3[225] / n:.2f}, 229: first {first[229] / n:.2f}, "
            f"top 3 {top3[229] / n:.2f}; all in top 3 {both / n:.2f}"
        )
        lines = pair_check.rank_table(model, state, store)
        assert lines[0] == expected, share
        assert lines[1].startswith("hedged w=2: ")  # a uniform prior: the hedge is a constant per system


@pytest.mark.skipif(
    not all(c.exists() for c in pair_check.DEFAULT_CIFS),
    reason="the steel's structures come from ../shared/data/structures, which is not beside this checkout",
)
def test_several_mixtures_print_the_mean_of_all_in_top_3(tmp_path, capsys) -> None:
    checkpoint = make_checkpoint(tmp_path / "m.pt", n_bins=2048, label_prior=[1.0 / 230] * 230)
    austenite, ferrite = pair_check.DEFAULT_CIFS
    mixtures = [[austenite, ferrite], [ferrite]]
    argv = [str(checkpoint), "--n", "16", "--defocus", "0", "--work", str(tmp_path / "work")]
    for cifs in mixtures:
        argv += ["--mixture", ",".join(str(c) for c in cifs)]
    pair_check.main(argv)
    model, state = load_model(checkpoint)
    shares = []
    for cifs in mixtures:
        store = tmp_path / "work" / "-".join(c.stem for c in cifs) / "mixtures_defocus0" / "train.zarr"
        _, ranks = pair_check.group_ranks(model, state, store)
        shares.append(np.mean((ranks["scores"] <= 3).all(axis=1)))
    out = capsys.readouterr().out.splitlines()
    mean_line = [line for line in out if "scores: mean all in top 3 over 2 mixtures" in line]
    assert mean_line == [
        f"{checkpoint} | defocused 0 | scores: mean all in top 3 over 2 mixtures {np.mean(shares):.3f}"
    ]
    with pytest.raises(SystemExit):
        pair_check.main([str(checkpoint), "--cif", str(austenite), "--mixture", str(ferrite)])
