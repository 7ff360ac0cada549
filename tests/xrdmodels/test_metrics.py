"""Tests for xrdmodels.metrics against hand-worked cases, scikit-learn and brute-force loops."""

from __future__ import annotations

import numpy as np
import pytest
from reference_f1 import expected_f1_by_counting, expected_f1_size_by_counting
from sklearn.metrics import jaccard_score, precision_recall_fscore_support, top_k_accuracy_score

from xrdmodels import metrics as M

C = M.N_SPACE_GROUPS


def _random_split(rng: np.random.Generator, n: int, n_classes: int = C) -> tuple[np.ndarray, np.ndarray]:
    """Random multi-hot targets with 1..5 labels per row and noisy scores correlated with them."""
    targets = np.zeros((n, n_classes), dtype=bool)
    for row in targets:
        row[rng.choice(n_classes, size=rng.integers(1, 6), replace=False)] = True
    probs = 0.3 * targets + 0.7 * rng.beta(1.0, 6.0, size=targets.shape)  # in [0, 1), no clipping ties
    return probs, targets


def _sklearn_prf(pred: np.ndarray, targets: np.ndarray) -> tuple[float, float, float]:
    p, r, f, _ = precision_recall_fscore_support(
        targets.astype(int), pred.astype(int), average="micro", zero_division=0
    )
    return float(p), float(r), float(f)


# ---------------------------------------------------------------------------------------------------------
# Grids
# ---------------------------------------------------------------------------------------------------------


def test_threshold_grid_is_101_uniform_values_in_unit_interval() -> None:
    assert M.THRESHOLD_GRID.size == 101
    assert M.THRESHOLD_GRID[0] == 0.0 and M.THRESHOLD_GRID[-1] == 1.0
    np.testing.assert_allclose(np.diff(M.THRESHOLD_GRID), 0.01, atol=1e-12)


def test_gate_grid_is_41_values_from_0p10_to_0p90_step_0p02() -> None:
    expected = [round(0.10 + 0.02 * i, 2) for i in range(41)]
    assert M.GATE_GRID.tolist() == expected
    assert M.GATE_GRID.size == 41
    assert 0.5 in M.GATE_GRID.tolist()  # the fixed gate reported by A.1.7 must be an exact grid value


# ---------------------------------------------------------------------------------------------------------
# Micro precision / recall / F1
# ---------------------------------------------------------------------------------------------------------


def test_micro_scores_hand_case() -> None:
    # Sample 0: predicts {0, 1}, truth {0}   -> TP 1 (class 0), FP 1 (class 1)
    # Sample 1: predicts {2},    truth {3}   -> FP 1 (class 2), FN 1 (class 3)
    # Totals TP 1, FP 2, FN 1: precision 1/3, recall 1/2, F1 = 2*1 / (2*1 + 2 + 1) = 0.4
    pred = np.array([[1, 1, 0, 0], [0, 0, 1, 0]], dtype=bool)
    true = np.array([[1, 0, 0, 0], [0, 0, 0, 1]], dtype=bool)
    s = M.micro_scores(pred, true)
    assert (s.tp, s.fp, s.fn) == (1, 2, 1)
    assert s.precision == pytest.approx(1 / 3)
    assert s.recall == pytest.approx(1 / 2)
    assert s.f1 == pytest.approx(0.4)


def test_micro_scores_match_sklearn_on_random_data() -> None:
    rng = np.random.default_rng(0)
    probs, targets = _random_split(rng, 300)
    for tau in (0.05, 0.2, 0.37, 0.6, 0.95):
        pred = probs >= tau
        s = M.micro_scores_at_threshold(probs, targets, tau)
        assert (s.precision, s.recall, s.f1) == pytest.approx(_sklearn_prf(pred, targets), abs=1e-12)


@pytest.mark.parametrize(
    ("pred_rows", "true_rows", "expected"),
    [
        # Nothing predicted: TP 0, FP 0, FN 2 -> precision 0 (zero division), recall 0, F1 0.
        ([[0, 0, 0]], [[1, 1, 0]], (0.0, 0.0, 0.0)),
        # No true labels, one prediction: TP 0, FP 1 -> everything 0.
        ([[0, 1, 0]], [[0, 0, 0]], (0.0, 0.0, 0.0)),
        # Nothing predicted and nothing true: 2TP + FP + FN = 0 -> 0 by the zero_division=0 rule.
        ([[0, 0, 0]], [[0, 0, 0]], (0.0, 0.0, 0.0)),
        # All correct: TP 3, FP 0, FN 0 -> 1, 1, 1.
        ([[1, 0, 1], [0, 1, 0]], [[1, 0, 1], [0, 1, 0]], (1.0, 1.0, 1.0)),
    ],
)
def test_micro_scores_edge_cases_match_sklearn(
    pred_rows: list[list[int]], true_rows: list[list[int]], expected: tuple[float, float, float]
) -> None:
    pred = np.array(pred_rows, dtype=bool)
    true = np.array(true_rows, dtype=bool)
    s = M.micro_scores(pred, true)
    assert (s.precision, s.recall, s.f1) == pytest.approx(expected)
    assert (s.precision, s.recall, s.f1) == pytest.approx(_sklearn_prf(pred, true))


def test_micro_scores_reject_mismatched_shapes() -> None:
    with pytest.raises(ValueError, match="shape"):
        M.micro_scores(np.zeros((2, 3), bool), np.zeros((2, 4), bool))


# ---------------------------------------------------------------------------------------------------------
# Threshold sweep (presence models)
# ---------------------------------------------------------------------------------------------------------


def test_threshold_sweep_hand_case_uses_inclusive_threshold() -> None:
    # One sample, scores (0.9, 0.6, 0.3, 0.1), truth {0, 1}.
    # tau = 0.30: predicts {0,1,2} -> TP 2, FP 1 -> F1 = 4/5 = 0.8 (0.3 >= 0.3 is included).
    # tau in 0.31..0.60: predicts {0,1} -> F1 = 1 (0.6 >= 0.60 still included).
    # tau = 0.61: predicts {0} -> TP 1, FN 1 -> F1 = 2/3.
    # The first grid value reaching F1 = 1 is 0.31, which is the reported best threshold.
    probs = np.array([[0.9, 0.6, 0.3, 0.1]])
    true = np.array([[1, 1, 0, 0]], dtype=bool)
    sweep = M.threshold_sweep(probs, true)
    assert sweep.scores_at(0.30).f1 == pytest.approx(0.8)
    assert sweep.scores_at(0.31).f1 == pytest.approx(1.0)
    assert sweep.scores_at(0.60).f1 == pytest.approx(1.0)
    assert sweep.scores_at(0.61).f1 == pytest.approx(2 / 3)
    assert sweep.best_threshold == 0.31
    assert sweep.best.f1 == pytest.approx(1.0)
    assert sweep.f1.shape == (101,)


def test_threshold_sweep_matches_brute_force_loop_with_sklearn() -> None:
    rng = np.random.default_rng(1)
    probs, targets = _random_split(rng, 200)
    # Snap a third of the scores onto grid values so the inclusive ">=" boundary is exercised.
    snap = rng.random(probs.shape) < 0.33
    probs[snap] = M.THRESHOLD_GRID[rng.integers(0, 101, size=int(snap.sum()))]
    sweep = M.threshold_sweep(probs, targets)
    brute = np.array([_sklearn_prf(probs >= t, targets) for t in M.THRESHOLD_GRID])
    np.testing.assert_allclose(sweep.precision, brute[:, 0], atol=1e-12)
    np.testing.assert_allclose(sweep.recall, brute[:, 1], atol=1e-12)
    np.testing.assert_allclose(sweep.f1, brute[:, 2], atol=1e-12)
    best = max(range(101), key=lambda i: (brute[i, 2], -i))  # first index attaining the maximum
    assert sweep.best_threshold == M.THRESHOLD_GRID[best]
    assert sweep.best.f1 == pytest.approx(brute[best, 2])


def test_threshold_sweep_rejects_nan_scores() -> None:
    probs = np.array([[0.2, np.nan]])
    with pytest.raises(ValueError, match="NaN"):
        M.threshold_sweep(probs, np.array([[True, False]]))


# ---------------------------------------------------------------------------------------------------------
# Slot union (phase-cluster models)
# ---------------------------------------------------------------------------------------------------------

# Four slots over C = 4 space groups + NONE (last). Gates g = 1 - pi_NONE:
#   s0 = (0.70, 0.10, 0.00, 0.00 | 0.20)  gate 0.80, space-group argmax 0
#   s1 = (0.05, 0.35, 0.00, 0.00 | 0.60)  gate 0.40, argmax 1
#   s2 = (0.60, 0.00, 0.00, 0.10 | 0.30)  gate 0.70, argmax 0 (duplicate of s0: counted once in the union)
#   s3 = (0.00, 0.00, 0.40, 0.15 | 0.45)  gate 0.55, argmax 2 even though NONE is the largest entry
# Truth {0, 1, 3}.
SLOTS = np.array(
    [
        [
            [0.70, 0.10, 0.00, 0.00, 0.20],
            [0.05, 0.35, 0.00, 0.00, 0.60],
            [0.60, 0.00, 0.00, 0.10, 0.30],
            [0.00, 0.00, 0.40, 0.15, 0.45],
        ]
    ]
)
SLOT_GATES = np.array([[0.80, 0.40, 0.70, 0.55]])
SLOT_TRUTH = np.array([[1, 1, 0, 1]], dtype=bool)


def test_default_gates_are_one_minus_none_probability() -> None:
    np.testing.assert_allclose(M.slot_union_gate_scores(SLOTS), M.slot_union_gate_scores(SLOTS, SLOT_GATES))


def test_slot_union_hand_case() -> None:
    # Gate 0.5: s0, s2, s3 active -> {0, 2}: TP 1, FP 1 (class 2), FN 2 (classes 1, 3); F1 = 2/(2+1+2) = 0.4.
    pred = M.slot_union_predict(SLOTS, 0.5, SLOT_GATES)
    assert pred.tolist() == [[True, False, True, False]]
    # Gate 0.40 is reached by s1's gate 0.40 (inclusive rule, like the presence rule), so class 1 joins;
    # at 0.42 it does not.
    assert M.slot_union_predict(SLOTS, 0.40, SLOT_GATES).tolist() == [[True, True, True, False]]
    assert M.slot_union_predict(SLOTS, 0.42, SLOT_GATES).tolist() == [[True, False, True, False]]
    # Gates 0.10..0.40: all slots -> {0, 1, 2}: TP 2, FP 1, FN 1; F1 = 4/6.
    # Gates 0.56..0.80: s0 and/or s2 -> {0}: TP 1, FN 2; F1 = 2/4 = 0.5 (0.80 reaches s0's gate 0.80).
    # Gate >= 0.82: no slot reaches it -> empty set, F1 0.
    sweep = M.gate_sweep(SLOTS, SLOT_TRUTH, SLOT_GATES)
    assert sweep.scores_at(0.50).f1 == pytest.approx(0.4)
    assert sweep.scores_at(0.42).f1 == pytest.approx(0.4)
    assert sweep.scores_at(0.40).f1 == pytest.approx(2 / 3)
    assert sweep.scores_at(0.60).f1 == pytest.approx(0.5)
    assert sweep.scores_at(0.80).f1 == pytest.approx(0.5)
    assert sweep.scores_at(0.82).f1 == 0.0
    assert sweep.best_threshold == 0.10  # first of the gates 0.10..0.40 that all reach 2/3
    assert sweep.best.f1 == pytest.approx(2 / 3)


def test_slot_union_confidence_threshold_drops_low_confidence_slots() -> None:
    # With confidence >= 0.5 only s0 (0.70) and s2 (0.60) keep their vote -> {0} at gate 0.3.
    pred = M.slot_union_predict(SLOTS, 0.3, SLOT_GATES, sg_confidence_threshold=0.5)
    assert pred.tolist() == [[True, False, False, False]]


def _brute_slot_union(slot_probs: np.ndarray, gate: float) -> np.ndarray:
    n, k, c1 = slot_probs.shape
    pred = np.zeros((n, c1 - 1), dtype=bool)
    for i in range(n):
        for j in range(k):
            if 1.0 - slot_probs[i, j, -1] >= gate:
                pred[i, int(np.argmax(slot_probs[i, j, :-1]))] = True
    return pred


def test_gate_sweep_matches_brute_force_slot_union_with_sklearn() -> None:
    rng = np.random.default_rng(2)
    n, k = 150, 5
    _, targets = _random_split(rng, n)
    logits = rng.normal(size=(n, k, C + 1))
    logits[:, :, -1] += rng.normal(0.0, 4.0, size=(n, k))  # spread the gates over (0, 1)
    for i in range(n):  # let some slots point at true classes so the F1 is not trivially ~0
        true_idx = np.flatnonzero(targets[i])
        logits[i, : true_idx.size, true_idx] += 6.0
    slot_probs = np.exp(logits) / np.exp(logits).sum(axis=2, keepdims=True)
    sweep = M.gate_sweep(slot_probs, targets)
    brute = np.array([_sklearn_prf(_brute_slot_union(slot_probs, g), targets) for g in M.GATE_GRID])
    np.testing.assert_allclose(sweep.f1, brute[:, 2], atol=1e-12)
    np.testing.assert_allclose(sweep.precision, brute[:, 0], atol=1e-12)
    best = max(range(41), key=lambda i: (brute[i, 2], -i))
    assert sweep.best_threshold == M.GATE_GRID[best]
    result = M.evaluate_slot_union(slot_probs, targets)
    assert result.fixed_gate is not None
    assert result.fixed_gate.f1 == pytest.approx(_sklearn_prf(_brute_slot_union(slot_probs, 0.5), targets)[2])


def test_slot_set_scores_rank_voted_classes_by_gate_then_the_rest_by_slot_probability() -> None:
    # Votes: class 0 by s0 (gate 0.80) and s2 (0.70) -> 0.80; class 1 by s1 -> 0.40; class 2 by s3 -> 0.55.
    # Class 3 gets no vote: its largest slot probability max(0.10, 0.15) = 0.15, minus 1 -> -0.85.
    scores = M.slot_set_scores(SLOTS, SLOT_GATES)
    np.testing.assert_allclose(scores, [[0.80, 0.40, 0.55, -0.85]])
    assert M.rank_classes(scores).tolist() == [[0, 2, 1, 3]]
    # A class that only appears as a second choice ranks below every class some slot votes for, even a
    # weakly voted one: slot A (gate 0.6) splits 0.31 / 0.29 over classes 0 / 1, slot B (gate 0.45) votes
    # class 2 with 0.45. The largest slot probability alone would put class 2 first, and class 1 above
    # nothing; the slot union at gate 0.5 is {0}, and the ranking starts with it.
    split = np.array([[[0.31, 0.29, 0.00, 0.40], [0.00, 0.00, 0.45, 0.55]]])
    assert M.rank_classes(M.slot_set_scores(split)).tolist() == [[0, 2, 1]]
    assert M.slot_union_predict(split, 0.5).tolist() == [[True, False, False]]


def test_thresholding_the_ranking_reproduces_the_decision_rule_at_every_grid_value() -> None:
    rng = np.random.default_rng(5)
    logits = rng.normal(size=(40, 6, C + 1))
    logits[:, :, -1] += rng.normal(0.0, 3.0, size=(40, 6))
    slot_probs = np.exp(logits) / np.exp(logits).sum(axis=2, keepdims=True)
    presence = rng.random((40, C))
    for scores, grid in ((M.slot_set_scores(slot_probs), M.GATE_GRID), (presence, M.THRESHOLD_GRID)):
        order = M.rank_classes(scores)
        for tau in grid:
            chosen = M.predicted_set(scores, tau)
            for row in range(scores.shape[0]):
                n_chosen = int(chosen[row].sum())
                assert set(order[row, :n_chosen]) == set(np.flatnonzero(chosen[row])), (tau, row)
    for tau in M.GATE_GRID:
        np.testing.assert_array_equal(
            M.slot_union_predict(slot_probs, tau), _brute_slot_union(slot_probs, tau), err_msg=str(tau)
        )


def test_decision_rule_boundary_is_inclusive_everywhere() -> None:
    # A score exactly at tau is predicted, a hair below is not: presence probabilities and slot gates alike.
    scores = np.array([[0.5, np.nextafter(0.5, 0.0), np.nextafter(0.5, 1.0)]])
    assert M.predicted_set(scores, 0.5).tolist() == [[True, False, True]]
    truth = np.array([[True, True, True]])
    assert M.micro_scores_at_threshold(scores, truth, 0.5).tp == 2
    assert M.threshold_sweep(scores, truth, [0.5]).tp.tolist() == [2]
    gates = np.array([[0.5, np.nextafter(0.5, 0.0)]])
    slots = np.array([[[0.5, 0.0, 0.5], [0.0, 0.5, 0.5]]])
    assert M.slot_union_predict(slots, 0.5, gates).tolist() == [[True, False]]
    assert M.gate_sweep(slots, np.array([[True, True]]), gates, [0.5]).tp.tolist() == [1]
    with pytest.raises(ValueError, match="must be a number >= 0"):
        M.predicted_set(scores, -0.1)
    with pytest.raises(ValueError, match="thresholds must be >= 0"):
        M.gate_sweep(slots, np.array([[True, True]]), gates, [-0.2, 0.5])


# ---------------------------------------------------------------------------------------------------------
# Top-K metrics
# ---------------------------------------------------------------------------------------------------------


def test_ranking_metrics_hand_case() -> None:
    # Sample A: scores descending by index, truth {1, 4}, K* = 2.
    #   K = 2 -> top {0, 1}: hits 1 -> cover 0, recall 1/2, IoU 1/(2+2-1) = 1/3
    #   K = 6 -> all six: hits 2 -> cover 1, recall 1, IoU 2/(6+2-2) = 1/3
    #   K = 10 clipped to 6 -> same as K = 6: IoU 1/3
    # Sample B: scores (0.3, 0.5, 0.2, 0.1, 0, 0), truth {0}, K* = 1.
    #   K = 1 -> {1}: miss -> cover 0, recall 0, IoU 0
    #   K = 3 -> {1, 0, 2}: hit -> cover 1, recall 1, IoU 1/3
    #   K = 5 -> {1, 0, 2, 3, 4} (tie 0/0 goes to index 4): hit -> IoU 1/5
    # Means: m=1 (0, 1/4, 1/6); m=3 (1, 1, 1/3); m=5 (1, 1, (1/3 + 1/5)/2 = 4/15).
    scores = np.array([[0.9, 0.8, 0.7, 0.6, 0.5, 0.4], [0.3, 0.5, 0.2, 0.1, 0.0, 0.0]])
    true = np.zeros((2, 6), dtype=bool)
    true[0, [1, 4]] = True
    true[1, 0] = True
    r = M.ranking_metrics(scores, true)
    assert (r[1].cover, r[1].recall, r[1].iou) == pytest.approx((0.0, 0.25, 1 / 6))
    assert (r[3].cover, r[3].recall, r[3].iou) == pytest.approx((1.0, 1.0, 1 / 3))
    assert (r[5].cover, r[5].recall, r[5].iou) == pytest.approx((1.0, 1.0, 4 / 15))
    assert r[1].n_samples == 2


def test_ranking_tie_rule_prefers_lower_class_index() -> None:
    # All four scores equal, truth {2}: top-1 is class 0 (miss), top-3 is {0, 1, 2} (hit).
    scores = np.full((1, 4), 0.5)
    true = np.array([[0, 0, 1, 0]], dtype=bool)
    assert M.top_k_hits(scores, true, np.array([1])).tolist() == [0]
    assert M.top_k_hits(scores, true, np.array([3])).tolist() == [1]
    # Tie at the top-1 boundary between a false class 0 and a true class 1: class 0 wins.
    scores = np.array([[0.5, 0.5, 0.1]])
    assert M.top_k_hits(scores, np.array([[0, 1, 0]], dtype=bool), np.array([1])).tolist() == [0]


def test_ranking_metrics_match_independent_reference_on_random_data() -> None:
    rng = np.random.default_rng(3)
    probs, targets = _random_split(rng, 250)  # continuous scores: no ties
    k_star = targets.sum(axis=1)
    r = M.ranking_metrics(probs, targets)
    for m in (1, 3, 5):
        k = m * k_star
        kth = -np.sort(-probs, axis=1)[np.arange(len(k)), k - 1]
        top = probs >= kth[:, None]  # top-K as "at least the K-th largest score"
        hits = (top & targets).sum(axis=1)
        assert r[m].cover == pytest.approx(np.mean(hits == k_star))
        assert r[m].recall == pytest.approx(np.mean(hits / k_star))
        assert r[m].iou == pytest.approx(jaccard_score(targets, top, average="samples"))
    # Single-label rows: cover@mK* is scikit-learn's top-k accuracy with k = m.
    single = k_star == 1
    labels = np.argmax(targets[single], axis=1)
    r1 = M.ranking_metrics(probs[single], targets[single])
    for m in (1, 3, 5):
        expected = top_k_accuracy_score(labels, probs[single], k=m, labels=np.arange(C))
        assert r1[m].cover == pytest.approx(expected)
        assert r1[m].recall == pytest.approx(expected)


def test_ranking_metrics_reject_empty_target_rows() -> None:
    probs = np.full((2, 4), 0.5)
    true = np.array([[1, 0, 0, 0], [0, 0, 0, 0]], dtype=bool)
    with pytest.raises(ValueError, match=r"rows \[1\]"):
        M.ranking_metrics(probs, true)


def test_ranking_metrics_of_no_samples_are_nan() -> None:
    r = M.ranking_metrics(np.zeros((0, C)), np.zeros((0, C), dtype=bool))
    assert np.isnan(r[1].cover) and r[1].n_samples == 0


def test_set_iou_matches_sklearn_jaccard() -> None:
    rng = np.random.default_rng(4)
    pred = rng.random((100, 12)) < 0.2
    true = rng.random((100, 12)) < 0.2
    pred[0] = true[0] = False  # empty vs empty counts as perfect agreement
    assert M.set_iou(pred, true) == pytest.approx(
        jaccard_score(true, pred, average="samples", zero_division=1.0)
    )


# ---------------------------------------------------------------------------------------------------------
# Strata (Fig. A3)
# ---------------------------------------------------------------------------------------------------------


def test_min_phase_fraction_hand_cases() -> None:
    nan = np.nan
    n_phases = np.array([1, 2, 2, 5, 3])
    weights = np.array(
        [
            [0.7, nan, nan, nan, nan],  # single phase -> fraction 1
            [1.0, 9.0, 0.0, 0.0, 0.0],  # unnormalised -> 1/10 = 0.10, at the inclusive cutoff -> low
            [3.0, 1.0, 0.0, 0.0, 0.0],  # 1/4 = 0.25 (zero padding ignored)
            [1.0, 1.0, 1.0, 1.0, 1.0],  # 1/5 = 0.20
            [0.05, 0.5, 0.45, nan, nan],  # 0.05 -> low
        ]
    )
    np.testing.assert_allclose(M.min_phase_fraction(n_phases, weights), [1.0, 0.1, 0.25, 0.2, 0.05])
    strata = M.strata_by_low_fraction(n_phases, weights)
    assert list(strata) == ["min_fraction<=0.10", "min_fraction>0.10"]
    assert strata["min_fraction<=0.10"].tolist() == [False, True, False, False, True]


def test_strata_partition_every_sample_exactly_once() -> None:
    rng = np.random.default_rng(5)
    n = 500
    n_phases = rng.choice(np.arange(1, 6), size=n, p=[0.20, 0.40, 0.25, 0.10, 0.05])
    weights = np.full((n, 5), np.nan)
    for i, k in enumerate(n_phases):
        weights[i, :k] = rng.dirichlet(np.ones(k))
    for strata in (M.strata_by_phase_count(n_phases), M.strata_by_low_fraction(n_phases, weights)):
        stacked = np.stack(list(strata.values()))
        assert (stacked.sum(axis=0) == 1).all()
    by_k = M.strata_by_phase_count(n_phases)
    assert list(by_k) == [1, 2, 3, 4, 5]
    assert all((n_phases[mask] == k).all() for k, mask in by_k.items())


def test_strata_reject_out_of_range_phase_counts() -> None:
    with pytest.raises(ValueError, match="1..5"):
        M.strata_by_phase_count(np.array([1, 6]))


# ---------------------------------------------------------------------------------------------------------
# Whole-split evaluation and Table 1 rows
# ---------------------------------------------------------------------------------------------------------


def test_evaluate_presence_and_table1_row() -> None:
    rng = np.random.default_rng(6)
    probs, targets = _random_split(rng, 200)
    result = M.evaluate_presence(probs, targets)
    row = M.table1_row(result, method="Multi-label (CNN)", split="test")
    assert list(row)[:7] == ["method", "split", *M.TABLE1_COLUMNS]
    tau = row["threshold"]
    assert isinstance(tau, float)
    assert row["micro_f1"] == pytest.approx(_sklearn_prf(probs >= tau, targets)[2])
    best_brute = max(_sklearn_prf(probs >= t, targets)[2] for t in M.THRESHOLD_GRID)
    assert row["micro_f1"] == pytest.approx(best_brute)
    assert row["cover@3K*"] == result.ranking[3].cover
    assert row["set_iou"] == pytest.approx(jaccard_score(targets, probs >= tau, average="samples"))
    assert "micro_f1@gate0.50" not in row


def test_evaluate_strata_uses_fixed_threshold_and_skips_empty_strata() -> None:
    rng = np.random.default_rng(7)
    probs, targets = _random_split(rng, 120)
    n_phases = np.minimum(targets.sum(axis=1), 4)  # nobody in stratum 5
    split = M.evaluate_presence(probs, targets)
    tau = [split.sweep.best_threshold]
    by_k = M.evaluate_strata(
        M.strata_by_phase_count(n_phases),
        lambda m: M.evaluate_presence(probs[m], targets[m], thresholds=tau),
    )
    assert by_k[5] is None
    for k in (1, 2, 3, 4):
        res = by_k[k]
        assert res is not None
        m = n_phases == k
        assert res.sweep.best.f1 == pytest.approx(_sklearn_prf(probs[m] >= tau[0], targets[m])[2])


def test_table1_row_for_slot_union_reports_fixed_gate() -> None:
    result = M.evaluate_slot_union(SLOTS, SLOT_TRUTH, SLOT_GATES)
    row = M.table1_row(result, method="Phase-cluster (Transformer)", split="train")
    # From the hand case above: best gate 0.10 with F1 2/3, gate 0.5 gives 0.4.
    assert row["micro_f1"] == pytest.approx(2 / 3)
    assert row["threshold"] == 0.10
    assert row["micro_f1@gate0.50"] == pytest.approx(0.4)
    # Ranking scores (0.70, 0.35, 0.40, 0.15), truth {0, 1, 3}, K* = 3: top-3 {0, 2, 1} -> 2 hits,
    # cover 0, recall 2/3; K = 9 clipped to 4 -> all found, cover 1.
    assert row["cover@K*"] == 0.0
    assert row["recall@K*"] == pytest.approx(2 / 3)
    assert row["cover@3K*"] == 1.0


def test_table1_row_needs_multipliers_one_and_three() -> None:
    probs, targets = _random_split(np.random.default_rng(8), 10)
    result = M.evaluate_presence(probs, targets, multipliers=(1, 5))
    with pytest.raises(ValueError, match="multipliers 1 and 3"):
        M.table1_row(result, method="x", split="test")


def _exact_expected_f1(q: np.ndarray, k: int) -> float:
    """E[F1] of the top k of q against a truth drawn as independent Bernoulli(q): every truth enumerated."""
    total = 0.0
    for bits in range(2**q.size):
        y = np.array([(bits >> i) & 1 for i in range(q.size)], dtype=bool)
        total += np.prod(np.where(y, q, 1 - q)) * 2 * y[:k].sum() / (k + y.sum())
    return total


def test_rescaled_odds_are_bayes_rule_for_a_rare_label_under_a_scaled_prior() -> None:
    """Bayes' rule written out: a label of prior pi, posterior p, read under prior r·pi has posterior
    p·r / (p·r + (1 - p)(1 - r·pi)/(1 - pi)); for a rare label (pi -> 0) that is the rescaled odds."""
    rng = np.random.default_rng(5)
    p = np.concatenate([[0.0, 1.0, 0.5], rng.uniform(0, 1, 50)])
    for r in (0.25, 0.625, 1.0, 2.0):
        pi = 1e-9
        bayes = p * r / (p * r + (1 - p) * (1 - r * pi) / (1 - pi))
        np.testing.assert_allclose(M.rescale_presence_odds(p, r), bayes, rtol=1e-7, atol=1e-12)
        order = np.argsort(-p, kind="stable")
        assert (np.diff(M.rescale_presence_odds(p, r)[order]) <= 0).all()  # the ranking is kept
    np.testing.assert_allclose(M.rescale_presence_odds(p, 1.0), p, rtol=1e-15, atol=1e-15)
    for ratio in (0.0, -1.0, float("inf"), float("nan")):
        with pytest.raises(ValueError, match="ratio"):
            M.rescale_presence_odds(p, ratio)
    with pytest.raises(ValueError, match=r"\[0, 1\]; 1 do not \(the first, at 1, is nan\).*no usable"):
        M.rescale_presence_odds(np.array([0.5, np.nan]), 1.0)


def test_expected_f1_set_size_against_enumeration() -> None:
    rng = np.random.default_rng(0)
    for q, size in (
        ([0.95, 0.9, 0.2, 0.1, 0.05, 0.05], 2),
        ([0.6, 0.1, 0.1, 0.1, 0.1, 0.1], 1),
        ([0.9, 0.85, 0.8, 0.02, 0.02, 0.02], 3),
        ([0.0, 0.0, 0.0], 1),  # nothing likely: still the top group
        ([1.0, 1.0, 0.0, 0.5], 2),  # a ranking out of its probabilities' order: the 0.5 comes too late
    ):
        q = np.array(q)
        exact = [_exact_expected_f1(q, k) for k in range(1, q.size + 1)]
        np.testing.assert_allclose(M.expected_f1_of_top_k(q), exact, rtol=1e-12, atol=1e-14)
        assert M.expected_f1_set_size(q) == size == int(np.argmax(exact)) + 1
    # Any order (a phase-cluster model's ranking is not its probabilities' order), every truth enumerated.
    for n in (1, 2, 5, 9):
        for _ in range(10):
            q = rng.beta(0.5, 2.0, n)
            exact = [_exact_expected_f1(q, k) for k in range(1, n + 1)]
            np.testing.assert_allclose(M.expected_f1_of_top_k(q), exact, rtol=1e-12, atol=1e-14)
    for bad in ([], [0.5, 1.5], [[0.5]]):
        with pytest.raises(ValueError, match="non-empty 1-d array of values in"):
            M.expected_f1_set_size(np.array(bad))


def test_expected_f1_of_all_230_groups_against_counting() -> None:
    """At the model's 230 groups, too many truths to enumerate: against the Poisson-binomial count of the others."""
    rng = np.random.default_rng(3)
    q = np.sort(rng.beta(0.05, 3.0, 230))[::-1]
    q[:3] = [0.8, 0.45, 0.3]
    values = M.expected_f1_of_top_k(q)
    np.testing.assert_allclose(values[:6], [expected_f1_by_counting(q, k) for k in range(1, 7)], rtol=1e-10)
    assert M.expected_f1_set_size(q) == expected_f1_size_by_counting(q) == int(np.argmax(values)) + 1
    # Flat, small probabilities call for large sets: every group, when all 230 are equally unlikely.
    assert M.expected_f1_set_size(np.full(230, 0.02)) == 230
    # At most max_size: the best k among the first max_size, as counted.
    assert M.expected_f1_set_size(np.full(230, 0.02), max_size=5) == 5
    assert M.expected_f1_set_size(q, max_size=1) == 1
    flat = np.full(40, 0.1)
    sizes = {m: M.expected_f1_set_size(flat, max_size=m) for m in (3, 10, 40)}
    assert sizes == {
        m: int(np.argmax([expected_f1_by_counting(flat, k) for k in range(1, m + 1)])) + 1 for m in sizes
    }
    with pytest.raises(ValueError, match="max_size must be at least 1"):
        M.expected_f1_set_size(q, max_size=0)
