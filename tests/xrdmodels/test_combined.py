"""The model and the library search in one ranking (xrdmodels.combined), against a per-group loop in plain math."""

from __future__ import annotations

import math

import numpy as np
import pytest

from xrdmodels.combined import (
    LIBRARY_FOM_MIDPOINT,
    LIBRARY_FOM_SLOPE,
    combine,
    combined_set,
    group_fom,
    library_probability,
)
from xrdmodels.library_search import LibraryMatch, LibraryResult


def _library(foms: dict[int, float]) -> LibraryResult:
    ranked = [
        LibraryMatch(g, "", "", c, f"phase-{g}", "X", 0.0, 0.0, 1)
        for g, c in sorted(foms.items(), key=lambda item: -item[1])
    ]
    return LibraryResult("scan.xy", "bank.zarr", ranked, [ranked[0].phase_id] if ranked else [])


def test_the_calibration_is_the_stated_logistic_and_a_missing_group_gets_zero() -> None:
    foms = np.array([0.0, 0.5, LIBRARY_FOM_MIDPOINT, 0.9, 1.0, np.nan])
    expected = [
        0.0 if math.isnan(c) else 1.0 / (1.0 + math.exp(-LIBRARY_FOM_SLOPE * (c - LIBRARY_FOM_MIDPOINT)))
        for c in foms
    ]
    q = library_probability(foms)
    np.testing.assert_allclose(q, expected, rtol=1e-12)
    assert q[2] == pytest.approx(0.5) and np.all(np.diff(q[:5]) > 0) and q[5] == 0.0


def test_combine_is_the_noisy_or_of_every_group_ranked_best_first() -> None:
    rng = np.random.default_rng(3)
    p = rng.uniform(0.0, 1.0, 230) ** 3
    foms = {int(g): float(rng.uniform(0.3, 1.0)) for g in rng.choice(np.arange(1, 231), 60, replace=False)}
    found = group_fom(_library(foms))
    assert np.isnan(found).sum() == 230 - 60 and all(found[g - 1] == c for g, c in foms.items())
    combined = combine(p, _library(foms))
    expected = {}
    for g in range(1, 231):
        q = (
            1.0 / (1.0 + math.exp(-LIBRARY_FOM_SLOPE * (foms[g] - LIBRARY_FOM_MIDPOINT)))
            if g in foms
            else 0.0
        )
        expected[g] = (1.0 - (1.0 - p[g - 1]) * (1.0 - q), q)
    assert [r.spacegroup for r in combined] == sorted(range(1, 231), key=lambda g: (-expected[g][0], g))
    for r in combined:
        assert r.score == pytest.approx(expected[r.spacegroup][0], rel=1e-12)
        assert r.library_probability == pytest.approx(expected[r.spacegroup][1], rel=1e-12)
        assert r.model_probability == p[r.spacegroup - 1]
        assert r.neighbour_probability == 0.0
    # A neighbour term is a third independent detection.
    n = rng.uniform(0.0, 1.0, 230) ** 4
    for r in combine(p, _library(foms), n):
        g = r.spacegroup
        no_model_or_library = 1.0 - expected[g][0]
        assert r.score == pytest.approx(1.0 - no_model_or_library * (1.0 - n[g - 1]), rel=1e-12)
        assert r.neighbour_probability == n[g - 1]


def test_the_combined_set_is_the_top_of_the_combined_ranking_at_the_models_size() -> None:
    p = np.full(230, 0.01)
    p[[13, 1, 61]] = [0.6, 0.4, 0.2]  # the model: 14, 2, 62
    ranking = combine(p, _library({225: 0.97, 14: 0.55}))  # 225, 14, 2, 62, ...
    assert combined_set(ranking, 1) == [225]
    assert combined_set(ranking, 3) == [2, 14, 225]  # ascending, as the model's set
    assert combined_set(ranking, 0) == []
    with pytest.raises(ValueError, match="231 groups"):
        combined_set(ranking, 231)


def test_a_strong_library_match_leads_and_weak_ones_leave_the_models_order() -> None:
    p = np.full(230, 0.01)
    p[[13, 1, 61]] = [0.6, 0.4, 0.2]  # the model: 14, 2, 62
    strong = combine(p, _library({225: 0.97, 14: 0.55}))
    assert [r.spacegroup for r in strong[:4]] == [225, 14, 2, 62]
    weak = combine(p, _library({225: 0.35, 194: 0.3}))
    assert [r.spacegroup for r in weak[:3]] == [14, 2, 62]
    assert combine(p, _library({}))[0].score == pytest.approx(0.6)


def test_a_hedged_model_term_past_1_leads_by_itself_and_a_library_match_never_lowers_a_group() -> None:
    p = np.full(230, 0.01)
    p[[13, 14, 1]] = [1.3, 1.1, 0.9]  # the model's term with the prior hedge: 14 and 15 past 1, then 2
    combined = combine(p, _library({15: 0.99, 2: 0.99, 14: 0.2}))
    assert [r.spacegroup for r in combined[:3]] == [14, 15, 2]
    assert [r.score for r in combined[:2]] == [1.3, 1.1]  # the noisy-OR would give 15 less than 1.1
    assert combined[2].score == pytest.approx(1.0 - 0.1 * (1.0 - library_probability(np.array([0.99]))[0]))
    for model_term in (0.2, 0.99, 1.0, 1.4):  # group 7's score as its library match improves
        scores = [
            next(r.score for r in combine(np.full(230, model_term), _library({7: fom})) if r.spacegroup == 7)
            for fom in np.linspace(0.3, 1.0, 11)
        ]
        assert np.all(np.diff(scores) >= 0.0) and scores[-1] >= model_term, model_term


def test_combine_refuses_a_probability_vector_of_the_wrong_length() -> None:
    with pytest.raises(ValueError, match=r"model_probability must have shape \(230,\)"):
        combine(np.zeros(229), _library({}))
    with pytest.raises(ValueError, match=r"neighbours must have shape \(230,\)"):
        combine(np.zeros(230), _library({}), np.zeros(229))
