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
