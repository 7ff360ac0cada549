"""Evaluation metrics for multi-phase space-group prediction (paper App. A.1.7-A.1.8, Table 1, Fig. A3).

Pure numpy; nothing here depends on torch or on the data-generation package.

Conventions
-----------
* ``C = 230`` space-group classes; class index ``s - 1`` holds space group ``s`` (1..230).
* ``probs`` / ``scores``: float array ``(N, C)`` of per-class set-level scores (presence probabilities
  ``sigmoid(logit)`` for presence models, A.1.7).
* ``targets``: bool array ``(N, C)``, the multi-hot set of true space groups of each sample.
* ``slot_probs``: float array ``(N, K, C + 1)`` of slot-wise softmax probabilities of phase-cluster models,
  with the NONE class **last** (A.1.4); the slot gate is ``g_k = 1 - pi_{k,NONE}``.

Decision rule and ranking: one score per class, stated once
-----------------------------------------------------------
Every model is read out through one per-class set score ``s_hat`` (the presence probabilities, or
:func:`slot_set_scores`). The predicted set at a threshold ``tau`` is ``{c : s_hat_c >= tau}``
(:func:`predicted_set`, inclusive, the paper's ``1[s_hat_c >= tau]`` of A.1.8), and the ranking behind the
top-K metrics, ``xrdmodels predict`` and ``xrdmodels score-measured`` is ``s_hat`` in descending order
(:func:`rank_classes`). Because both come from the same score, the top ``|predicted set|`` classes of the
ranking are the predicted set at every threshold. For one measured pattern, ``xrdmodels predict`` takes the set
size from :func:`expected_f1_set_size` instead of ``tau``, read along the ranking with the model's presence
probabilities (for a phase-cluster model, its noisy-or ``set_probs``; not in the paper; Table 1 keeps ``tau``, and
so does ``predict --threshold``).

* Presence models (A.1.7): ``s_hat_c = p_c``; ``tau`` runs over a uniform grid of 101 values in [0, 1] and the
  reported operating point is the ``tau`` maximising micro-F1 on the evaluated split.
* Phase-cluster models, slot union (A.1.7): every slot votes for its most probable *space-group* class (the
  argmax over the C space groups, NONE excluded) with its gate ``g_k``, if that class's probability is
  ``>= sg_confidence_threshold`` (fixed to 0 by the paper, i.e. no confidence filter). A class some slot
  votes for scores the largest gate voting for it, so ``s_hat_c >= tau`` is exactly the paper's rule "add
  the argmax class of every slot whose gate reaches the threshold". The paper's prose says the gate
  "exceeds" the threshold while its formula is ``>=``; we use ``>=`` for both model kinds, which differs
  from a strict rule only for a gate exactly on a grid value. A class no slot votes for scores
  ``max_k pi_{k,c} - 1``, which is negative (a probability of 1 would make the class that slot's vote): it
  is never predicted at a threshold >= 0, and among such classes the ranking follows the largest
  probability any slot gives them ("slot-based aggregation", A.1.8, which the paper does not spell out).
  The gate is swept over [0.10, 0.90] in steps of 0.02 (41 values); both gate 0.5 and the best gate are
  reported. Thresholds must be >= 0.
* Micro precision/recall/F1 (A.1.8): TP, FP, FN summed over all samples and classes before forming the
  ratios. Zero-division rule (same as scikit-learn ``zero_division=0``): precision is 0 when nothing is
  predicted, recall is 0 when the split has no true labels, and F1 is 0 when ``2TP + FP + FN == 0``.
* Top-K set metrics (A.1.8, Table 1): ``K* = |true set|`` (number of *distinct* true space groups, which
  can be smaller than the number of phases when two phases share a space group) and ``K = m K*`` for
  ``m`` in (1, 3, 5) (Table 1 uses 1 and 3, the A.1.8 text 1 and 5), clipped to C. Per sample, with
  ``h = |top-K  intersect  true set|``: cover = ``1[h == K*]``, recall = ``h / K*``, and IoU =
  ``h / (K + K* - h)``, the IoU between the top-K set and the true set (the paper lists IoU among the
  top-K metrics without a formula; this is our reading). All three are averaged over samples. Samples with
  an empty true set have no defined top-K metrics and are rejected with an error.
* Ranking tie rule: classes are ordered by descending score and, among equal scores, by ascending class
  index (a stable sort), so the top-K set is deterministic.
* Thresholded set IoU (sample-averaged Jaccard of a binary prediction): an empty prediction for an empty
  true set counts as IoU 1 (perfect agreement), as scikit-learn ``jaccard_score(zero_division=1)``.
* Strata (App. D.4.3, Fig. A3): by number of phases (1..5) and by whether the minimum phase fraction is
  ``<= 0.10``; the fraction of phase ``i`` is ``w_i / sum_j w_j`` over the sample's ``n_phases`` weights.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np

from .config import MAX_PHASES
from .config import N_SPACE_GROUPS as N_SPACE_GROUPS  # C of the module docstring, for callers of this module

THRESHOLD_GRID = np.round(np.linspace(0.0, 1.0, 101), 2)
"""Global presence thresholds tau: 101 uniform values in [0, 1] (A.1.7). Rounded to 2 decimals so every grid
value is the double nearest its decimal (0.07, not 0.07000000000000001)."""

GATE_GRID = np.round(np.linspace(0.10, 0.90, 41), 2)
"""Slot-gate thresholds for the slot-union rule: [0.10, 0.90] in steps of 0.02, 41 values (A.1.7)."""

FIXED_GATE_THRESHOLD = 0.5
"""Fixed slot-gate threshold reported next to the best gate (A.1.7)."""

RANK_MULTIPLIERS = (1, 3, 5)
"""Top-K sizes as multiples of K*: Table 1 reports K* and 3K*, A.1.8 describes K* and 5K*."""

LOW_FRACTION_CUTOFF = 0.10
"""Minimum-phase-fraction cutoff (inclusive) separating trace-phase mixtures in Fig. A3 (App. D.4.3)."""

TABLE1_COLUMNS = ("micro_f1", "cover@K*", "recall@K*", "cover@3K*", "recall@3K*")
"""Metric columns of the paper's Table 1, in order, for one split."""


# --------------------------------------------------------------------------------------------------------
# Input validation
# --------------------------------------------------------------------------------------------------------


def _as_scores(scores: np.ndarray, name: str) -> np.ndarray:
    arr = np.asarray(scores)
    if arr.ndim != 2:
        raise ValueError(f"{name} must be a 2-D array (n_samples, n_classes); got shape {arr.shape}")
    if not np.issubdtype(arr.dtype, np.floating):
        arr = arr.astype(np.float64)
    if np.isnan(arr).any():
        bad = np.unique(np.nonzero(np.isnan(arr))[0])[:10]
        raise ValueError(
            f"{name} contains NaN scores (first sample rows: {bad.tolist()}); fix the model output"
        )
    return arr


def _as_targets(targets: np.ndarray, shape: tuple[int, ...], name: str = "targets") -> np.ndarray:
    arr = np.asarray(targets)
    if arr.shape != shape:
        raise ValueError(f"{name} has shape {arr.shape} but the scores have shape {shape}; they must match")
    if arr.dtype != np.bool_:
        if not np.isin(arr, (0, 1)).all():
            raise ValueError(f"{name} must be multi-hot (only 0/1 or bool values)")
        arr = arr.astype(np.bool_)
    return arr


def _as_slot_probs(slot_probs: np.ndarray) -> np.ndarray:
    arr = np.asarray(slot_probs, dtype=np.float64)
    if arr.ndim != 3 or arr.shape[2] < 2:
        raise ValueError(
            "slot_probs must have shape (n_samples, n_slots, n_classes + 1) with NONE last; "
            f"got shape {arr.shape}"
        )
    return arr


def _slot_gates(slot_probs: np.ndarray, gates: np.ndarray | None) -> np.ndarray:
    if gates is None:
        return 1.0 - slot_probs[:, :, -1]
    arr = np.asarray(gates, dtype=np.float64)
    if arr.shape != slot_probs.shape[:2]:
        raise ValueError(
            f"gates has shape {arr.shape} but slot_probs implies (n_samples, n_slots) = {slot_probs.shape[:2]}"
        )
    return arr


# --------------------------------------------------------------------------------------------------------
# The decision rule and the ranking (module docstring, "Decision rule and ranking")
# --------------------------------------------------------------------------------------------------------


def predicted_set(scores: np.ndarray, threshold: float) -> np.ndarray:
    """The predicted set at ``threshold``: ``scores >= threshold`` (inclusive), the one decision rule.

    Args:
        scores: set scores ``s_hat`` of any shape: presence probabilities, :func:`slot_set_scores`, or
            slot gates (a slot is active when its gate reaches the threshold).
        threshold: tau (presence) or the gate threshold (phase clustering); must be >= 0.

    Returns:
        bool array of the shape of ``scores``.
    """
    if not threshold >= 0:
        raise ValueError(
            f"threshold must be a number >= 0 (scores below 0 mean 'never predicted'); got {threshold}"
        )
    return np.asarray(scores) >= threshold


def expected_f1_set_size(probability: np.ndarray, max_size: int | None = None) -> int:
    """How many groups from the top of a ranking form the set of highest expected F1 for one pattern, at most
    ``max_size`` (default: no limit).

    ``probability``: (G,) each group's probability of being present, in the ranking's order (for a presence model
    ranked by them alone, descending). Taking the groups as independent, the expected F1 of the top k is computed
    exactly (the decision-theoretic approach to F-measures: Lewis 1995; Jansche 2007; Ye, Chai, Lee & Chieu,
    ICML 2012): no threshold, the size follows from the probabilities themselves. Returns the smallest k >= 1
    that maximises it: a pattern sent for identification holds at least one phase. ``predict`` passes the most
    phases of a training mixture as ``max_size``: where the probabilities are flat (a scan far narrower than the
    training windows, a noisy one) the unbounded optimum can name dozens of groups, more than any training label.

    With N the number of groups present, E[F1(k)] = E[2·TP / (k + N)] = Σ_{i<=k} q_i E[2 / (k + 1 + N_{-i})], and
    1 / a = ∫_0^1 t^(a-1) dt turns each expectation into an integral of a probability generating function:
    E[F1(k)] = 2 ∫_0^1 t^k G(t) Σ_{i<=k} q_i / (1 - q_i + q_i t) dt, G(t) = Π_j (1 - q_j + q_j t). The integrand
    is a polynomial of degree < 2G, which Gauss-Legendre quadrature on G nodes integrates exactly.

    Raises:
        ValueError: no groups, a probability outside [0, 1], or ``max_size`` < 1.
    """
    if max_size is not None and max_size < 1:
        raise ValueError(f"max_size must be at least 1, got {max_size}")
    return int(np.argmax(expected_f1_of_top_k(probability)[:max_size])) + 1


def expected_f1_of_top_k(probability: np.ndarray) -> np.ndarray:
    """(G,) the exact expected F1 of the top k = 1..G of a ranking whose groups are present independently with
    ``probability`` (in the ranking's order): see :func:`expected_f1_set_size`.

    Raises:
        ValueError: no groups, or a probability outside [0, 1].
    """
    q = np.asarray(probability, dtype=np.float64)
    if q.ndim != 1 or q.size == 0:
        raise ValueError(
            f"probability must be a non-empty 1-d array of values in [0, 1], got shape {q.shape}"
        )
    bad = np.flatnonzero(~((q >= 0) & (q <= 1)))
    if bad.size:
        raise ValueError(
            f"probability must be a non-empty 1-d array of values in [0, 1]; {bad.size} are not (the first, at "
            f"{bad[0]}, is {q[bad[0]]}): the model gave no usable probabilities for this pattern"
        )
    t, weights = _gauss_legendre_unit(q.size)
    factor = 1.0 - q[None, :] + q[None, :] * t[:, None]  # (nodes, G); > 0, as every node is inside (0, 1)
    generating = np.exp(np.log(factor).sum(axis=1))  # G(t)
    k = np.arange(1, q.size + 1)
    integrand = t[:, None] ** k[None, :] * generating[:, None] * np.cumsum(q[None, :] / factor, axis=1)
    return weights @ (2.0 * integrand)


@functools.lru_cache(maxsize=8)
def _gauss_legendre_unit(n_nodes: int) -> tuple[np.ndarray, np.ndarray]:
    """Gauss-Legendre nodes and weights on [0, 1], kept: the eigen-solve behind them costs more than the sum."""
    nodes, weights = np.polynomial.legendre.leggauss(n_nodes)
    t, w = 0.5 * (nodes + 1.0), 0.5 * weights
    t.flags.writeable = w.flags.writeable = False
    return t, w


def rescale_presence_odds(probability: np.ndarray, ratio: float) -> np.ndarray:
    """Presence probabilities learned under one prior, read under a prior ``ratio`` times as likely: each odds
    q / (1 - q) times ``ratio`` (Bayes' rule for a change of label prior, in the limit of groups that are each
    rarely present; Saerens, Latinne & Decaestecker, Neural Computation 2002). A model trained on mixtures of
    2.4 phases on average, read on samples of 1.5, takes ``ratio`` = 1.5 / 2.4; the order of the groups is kept.

    Raises:
        ValueError: ``ratio`` not a finite number > 0, or a probability outside [0, 1].
    """
    if not (np.isfinite(ratio) and ratio > 0):
        raise ValueError(f"ratio {ratio!r} must be a finite number > 0")
    q = np.asarray(probability, dtype=np.float64)
    bad = np.flatnonzero(~((q >= 0) & (q <= 1)))
    if bad.size:
        raise ValueError(
            f"probability must hold values in [0, 1]; {bad.size} do not (the first, at {bad[0]}, is {q.flat[bad[0]]}): "
            "the model gave no usable probabilities for this pattern"
        )
    return ratio * q / (1.0 - q + ratio * q)


def _check_thresholds(thresholds: Sequence[float] | np.ndarray) -> np.ndarray:
    grid = np.asarray(thresholds, dtype=np.float64)
    if grid.size and not (grid >= 0).all():
        raise ValueError(
            f"thresholds must be >= 0 (negative set scores mean 'never predicted'); got {grid.min()}"
        )
    return grid


def rank_classes(scores: np.ndarray) -> np.ndarray:
    """Class indices of each row from the highest set score to the lowest; ties by ascending class index.

    Args:
        scores: (N, C) set scores ``s_hat``.

    Returns:
        (N, C) int array; row n lists the classes of sample n, best first.
    """
    return np.argsort(-_as_scores(scores, "scores"), axis=1, kind="stable")


# --------------------------------------------------------------------------------------------------------
# Micro-averaged precision / recall / F1
# --------------------------------------------------------------------------------------------------------


def _safe_ratio(num: np.ndarray | int, den: np.ndarray | int) -> np.ndarray:
    num_arr = np.asarray(num, dtype=np.float64)
    den_arr = np.asarray(den, dtype=np.float64)
    return np.divide(num_arr, den_arr, out=np.zeros(np.broadcast(num_arr, den_arr).shape), where=den_arr > 0)


@dataclass(frozen=True)
class MicroScores:
    """Micro-averaged counts summed over all samples and classes (A.1.8), and the ratios they give.

    Ratios follow the zero-division rule in the module docstring (0 when undefined).
    """

    tp: int
    fp: int
    fn: int

    @property
    def precision(self) -> float:
        """TP / (TP + FP); 0 when nothing was predicted."""
        return float(_safe_ratio(self.tp, self.tp + self.fp))

    @property
    def recall(self) -> float:
        """TP / (TP + FN); 0 when there are no true labels."""
        return float(_safe_ratio(self.tp, self.tp + self.fn))

    @property
    def f1(self) -> float:
        """2 TP / (2 TP + FP + FN), the harmonic mean of precision and recall; 0 when undefined."""
        return float(_safe_ratio(2 * self.tp, 2 * self.tp + self.fp + self.fn))


def micro_scores(pred: np.ndarray, targets: np.ndarray) -> MicroScores:
    """Micro-averaged TP/FP/FN of a binary multi-label prediction ``pred`` (N, C) against ``targets`` (N, C)."""
    pred_arr = np.asarray(pred)
    if pred_arr.ndim != 2:
        raise ValueError(f"pred must be a 2-D array (n_samples, n_classes); got shape {pred_arr.shape}")
    pred_arr = _as_targets(pred_arr, pred_arr.shape, name="pred")
    true = _as_targets(targets, pred_arr.shape)
    tp = int(np.count_nonzero(pred_arr & true))
    return MicroScores(tp=tp, fp=int(np.count_nonzero(pred_arr)) - tp, fn=int(np.count_nonzero(true)) - tp)


def micro_scores_at_threshold(probs: np.ndarray, targets: np.ndarray, threshold: float) -> MicroScores:
    """Micro scores of the decision rule ``y_hat_c = 1[s_hat_c >= threshold]`` (A.1.8)."""
    return micro_scores(predicted_set(_as_scores(probs, "probs"), threshold), targets)


@dataclass(frozen=True)
class SweepResult:
    """Micro scores along a threshold grid, and the grid point with the highest micro-F1.

    Ties in F1 go to the first grid point (the smallest threshold), so the choice is deterministic.
    """

    thresholds: np.ndarray
    tp: np.ndarray
    fp: np.ndarray
    fn: np.ndarray

    @property
    def precision(self) -> np.ndarray:
        return _safe_ratio(self.tp, self.tp + self.fp)

    @property
    def recall(self) -> np.ndarray:
        return _safe_ratio(self.tp, self.tp + self.fn)

    @property
    def f1(self) -> np.ndarray:
        return _safe_ratio(2 * self.tp, 2 * self.tp + self.fp + self.fn)

    @property
    def best_index(self) -> int:
        return int(np.argmax(self.f1))

    @property
    def best_threshold(self) -> float:
        return float(self.thresholds[self.best_index])

    @property
    def best(self) -> MicroScores:
        """Micro scores at the F1-maximising threshold."""
        return self.scores_at_index(self.best_index)

    def scores_at_index(self, index: int) -> MicroScores:
        return MicroScores(tp=int(self.tp[index]), fp=int(self.fp[index]), fn=int(self.fn[index]))

    def scores_at(self, threshold: float) -> MicroScores:
        """Micro scores at a grid value (matched to 1e-9); raises if ``threshold`` is not on the grid."""
        hits = np.flatnonzero(np.isclose(self.thresholds, threshold, rtol=0.0, atol=1e-9))
        if hits.size == 0:
            raise ValueError(f"threshold {threshold} is not on the sweep grid {self.thresholds.tolist()}")
        return self.scores_at_index(int(hits[0]))


def _sweep_counts(scores: np.ndarray, targets: np.ndarray, thresholds: np.ndarray) -> SweepResult:
    """Micro counts of :func:`predicted_set` (``scores >= t``) for every ``t`` without N x C x T work.

    Sorting the scores once turns "how many scores pass t" into a binary search per threshold, which keeps
    the 101-point sweep at O(NC log NC) instead of 101 full passes.
    """
    grid = np.asarray(thresholds, dtype=np.float64)
    if grid.ndim != 1 or grid.size == 0:
        raise ValueError(f"thresholds must be a non-empty 1-D sequence; got shape {grid.shape}")
    # side="left" counts the scores >= t, the inclusive rule of predicted_set.
    side = "left"
    all_sorted = np.sort(scores, axis=None)
    pos_sorted = np.sort(scores[targets])
    n_predicted = all_sorted.size - np.searchsorted(all_sorted, grid, side=side)
    tp = pos_sorted.size - np.searchsorted(pos_sorted, grid, side=side)
    return SweepResult(
        thresholds=grid.copy(),
        tp=tp.astype(np.int64),
        fp=(n_predicted - tp).astype(np.int64),
        fn=(pos_sorted.size - tp).astype(np.int64),
    )


def threshold_sweep(
    probs: np.ndarray, targets: np.ndarray, thresholds: Sequence[float] | np.ndarray = THRESHOLD_GRID
) -> SweepResult:
    """Sweep the global presence threshold ``tau`` (prediction ``p_c >= tau``) over ``thresholds`` (A.1.7).

    Args:
        probs: (N, C) presence probabilities in [0, 1].
        targets: (N, C) multi-hot true sets.
        thresholds: grid of tau values; default the paper's 101 values in [0, 1]. Pass a single value to
            evaluate at a fixed threshold (e.g. the split-level optimum inside a stratum).
    """
    scores = _as_scores(probs, "probs")
    return _sweep_counts(scores, _as_targets(targets, scores.shape), _check_thresholds(thresholds))


# --------------------------------------------------------------------------------------------------------
# Slot-union rule for phase-cluster models
# --------------------------------------------------------------------------------------------------------


def slot_union_gate_scores(
    slot_probs: np.ndarray, gates: np.ndarray | None = None, sg_confidence_threshold: float = 0.0
) -> np.ndarray:
    """The slot-union votes: per class, the largest gate among the slots voting for it (A.1.7).

    Entry (n, c) is the largest gate among slots of sample n whose argmax space group is c and whose class
    probability is ``>= sg_confidence_threshold``; ``-inf`` where no such slot exists. Class c is in the
    slot-union set at gate threshold g exactly when this value is ``>= g``, because a union contains c as
    soon as one slot votes for it. :func:`slot_set_scores` completes it into a full ranking.

    Args:
        slot_probs: (N, K, C + 1) slot softmax probabilities, NONE last (A.1.4).
        gates: (N, K) slot gates; default ``1 - slot_probs[..., -1]`` (A.1.4).
        sg_confidence_threshold: minimum probability of a slot's argmax space group (A.1.7: fixed to 0).

    Returns:
        (N, C) float array.
    """
    if not 0.0 <= sg_confidence_threshold <= 1.0:
        raise ValueError(f"sg_confidence_threshold must lie in [0, 1]; got {sg_confidence_threshold}")
    probs = _as_slot_probs(slot_probs)
    gate = _slot_gates(probs, gates)
    n_samples, n_slots, n_classes_plus_none = probs.shape
    sg_probs = probs[:, :, :-1]
    # argmax over space groups only: A.1.7 picks "the most probable space-group class" of each slot.
    best_class = np.argmax(sg_probs, axis=2)
    best_prob = np.take_along_axis(sg_probs, best_class[:, :, None], axis=2)[:, :, 0]
    votes = np.where(best_prob >= sg_confidence_threshold, gate, -np.inf)
    out = np.full((n_samples, n_classes_plus_none - 1), -np.inf)
    rows = np.repeat(np.arange(n_samples), n_slots)
    np.maximum.at(out, (rows, best_class.ravel()), votes.ravel())
    return out


def slot_set_scores(
    slot_probs: np.ndarray, gates: np.ndarray | None = None, sg_confidence_threshold: float = 0.0
) -> np.ndarray:
    """Set scores ``s_hat`` of a phase-cluster model: thresholding them is the slot union, sorting them ranks.

    A class some slot votes for scores that vote's gate (:func:`slot_union_gate_scores`); any other class
    scores ``max_k pi_{k,c} - 1`` < 0, so it ranks below every voted class, after the classes some slot gives
    a higher probability, and is never predicted at a threshold >= 0.

    Args:
        slot_probs: (N, K, C + 1) slot softmax probabilities, NONE last (A.1.4).
        gates: (N, K) slot gates; default ``1 - slot_probs[..., -1]`` (A.1.4).
        sg_confidence_threshold: minimum probability of a slot's argmax space group (A.1.7: fixed to 0).

    Returns:
        (N, C) float array.
    """
    votes = slot_union_gate_scores(slot_probs, gates, sg_confidence_threshold)
    best_slot_prob = _as_slot_probs(slot_probs)[:, :, :-1].max(axis=1)
    return np.where(np.isfinite(votes), votes, best_slot_prob - 1.0)


def slot_union_predict(
    slot_probs: np.ndarray,
    gate_threshold: float = FIXED_GATE_THRESHOLD,
    gates: np.ndarray | None = None,
    sg_confidence_threshold: float = 0.0,
) -> np.ndarray:
    """Slot-union prediction (A.1.7): the argmax space groups of slots whose gate is >= ``gate_threshold``.

    Returns:
        (N, C) bool predicted sets.
    """
    return predicted_set(slot_set_scores(slot_probs, gates, sg_confidence_threshold), gate_threshold)


def gate_sweep(
    slot_probs: np.ndarray,
    targets: np.ndarray,
    gates: np.ndarray | None = None,
    gate_thresholds: Sequence[float] | np.ndarray = GATE_GRID,
    sg_confidence_threshold: float = 0.0,
) -> SweepResult:
    """Sweep the slot-gate threshold of the slot-union rule over ``gate_thresholds`` (A.1.7).

    Default grid: 0.10, 0.12, ..., 0.90 (41 values). Use ``result.scores_at(0.5)`` for the fixed-gate
    numbers and ``result.best`` / ``result.best_threshold`` for the best gate.
    """
    scores = slot_set_scores(slot_probs, gates, sg_confidence_threshold)
    true = _as_targets(targets, scores.shape)
    return _sweep_counts(scores, true, _check_thresholds(gate_thresholds))


# --------------------------------------------------------------------------------------------------------
# Top-K set metrics
# --------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class RankingScores:
    """Sample-averaged top-K metrics at ``K = multiplier * K*`` (A.1.8).

    Attributes:
        multiplier: m in K = m K*.
        cover: fraction of samples whose whole true set lies in the top-K.
        recall: mean fraction of true labels found in the top-K.
        iou: mean |top-K intersect true| / |top-K union true|.
        n_samples: samples averaged over.
    """

    multiplier: int
    cover: float
    recall: float
    iou: float
    n_samples: int


def top_k_hits(scores: np.ndarray, targets: np.ndarray, k: np.ndarray) -> np.ndarray:
    """Number of true labels among each sample's ``k[n]`` highest-scoring classes.

    Ties are broken by ascending class index (stable sort of the negated scores).

    Args:
        scores: (N, C) scores.
        targets: (N, C) multi-hot true sets.
        k: (N,) non-negative integer top-K sizes (clipped to C).

    Returns:
        (N,) int array of hits.
    """
    arr = _as_scores(scores, "scores")
    true = _as_targets(targets, arr.shape)
    k_arr = np.clip(np.asarray(k, dtype=np.int64), 0, arr.shape[1])
    if k_arr.shape != (arr.shape[0],):
        raise ValueError(f"k must have shape ({arr.shape[0]},), one top-K size per sample; got {k_arr.shape}")
    order = rank_classes(arr)
    ranked_true = np.take_along_axis(true, order, axis=1)
    in_top = np.arange(arr.shape[1])[None, :] < k_arr[:, None]
    return np.count_nonzero(ranked_true & in_top, axis=1)


def ranking_metrics(
    scores: np.ndarray, targets: np.ndarray, multipliers: Sequence[int] = RANK_MULTIPLIERS
) -> dict[int, RankingScores]:
    """cover@mK*, recall@mK* and IoU@mK* for each multiplier m (A.1.8, Table 1).

    An empty input (N = 0, e.g. an empty stratum) gives NaN metrics with ``n_samples = 0``.

    Raises:
        ValueError: if any sample has an empty true set (K* = 0 leaves the metrics undefined).
    """
    arr = _as_scores(scores, "scores")
    true = _as_targets(targets, arr.shape)
    k_star = np.count_nonzero(true, axis=1)
    empty = np.flatnonzero(k_star == 0)
    if empty.size:
        raise ValueError(
            f"top-K metrics need at least one true space group per sample; rows {empty[:10].tolist()} "
            f"({empty.size} in all) have empty target sets. Drop them before ranking evaluation."
        )
    out: dict[int, RankingScores] = {}
    for m in multipliers:
        if int(m) < 1:
            raise ValueError(f"top-K multipliers must be positive integers; got {m}")
        if arr.shape[0] == 0:
            out[int(m)] = RankingScores(int(m), float("nan"), float("nan"), float("nan"), 0)
            continue
        k = np.minimum(int(m) * k_star, arr.shape[1])
        hits = top_k_hits(arr, true, k)
        out[int(m)] = RankingScores(
            multiplier=int(m),
            cover=float(np.mean(hits == k_star)),
            recall=float(np.mean(hits / k_star)),
            iou=float(np.mean(hits / (k + k_star - hits))),
            n_samples=int(arr.shape[0]),
        )
    return out


def set_iou(pred: np.ndarray, targets: np.ndarray) -> float:
    """Sample-averaged IoU (Jaccard) of binary predicted sets vs true sets; empty vs empty counts as 1.

    NaN for N = 0.
    """
    pred_arr = np.asarray(pred)
    if pred_arr.ndim != 2:
        raise ValueError(f"pred must be a 2-D array (n_samples, n_classes); got shape {pred_arr.shape}")
    pred_arr = _as_targets(pred_arr, pred_arr.shape, name="pred")
    true = _as_targets(targets, pred_arr.shape)
    if pred_arr.shape[0] == 0:
        return float("nan")
    inter = np.count_nonzero(pred_arr & true, axis=1)
    union = np.count_nonzero(pred_arr | true, axis=1)
    per_sample = np.divide(inter, union, out=np.ones(inter.shape), where=union > 0)
    return float(per_sample.mean())


# --------------------------------------------------------------------------------------------------------
# Stratification (Fig. A3)
# --------------------------------------------------------------------------------------------------------


def _as_n_phases(n_phases: np.ndarray, max_phases: int) -> np.ndarray:
    arr = np.asarray(n_phases)
    if arr.ndim != 1 or not np.issubdtype(arr.dtype, np.integer):
        raise ValueError(f"n_phases must be a 1-D integer array; got dtype {arr.dtype}, shape {arr.shape}")
    bad = np.flatnonzero((arr < 1) | (arr > max_phases))
    if bad.size:
        raise ValueError(
            f"n_phases must lie in 1..{max_phases}; rows {bad[:10].tolist()} hold {arr[bad[:10]].tolist()}"
        )
    return arr


def strata_by_phase_count(n_phases: np.ndarray, max_phases: int = MAX_PHASES) -> dict[int, np.ndarray]:
    """Boolean sample masks keyed by number of phases 1..``max_phases`` (Fig. A3); they partition the samples.

    Strata use the number of mixed phases, which can exceed the number of distinct space groups K*.
    """
    arr = _as_n_phases(n_phases, max_phases)
    return {k: arr == k for k in range(1, max_phases + 1)}


def min_phase_fraction(n_phases: np.ndarray, phase_weights: np.ndarray) -> np.ndarray:
    """Smallest phase fraction of each mixture, from the first ``n_phases[n]`` weights of row n.

    Args:
        n_phases: (N,) number of phases per sample.
        phase_weights: (N, P) mixture weights, padded past ``n_phases`` with anything (ignored). Weights are
            renormalised over the used entries, so unnormalised weights give true fractions.

    Returns:
        (N,) minimum phase fraction in (0, 1]; 1.0 for single-phase samples.
    """
    weights = np.asarray(phase_weights, dtype=np.float64)
    if weights.ndim != 2:
        raise ValueError(f"phase_weights must be 2-D (n_samples, max_phases); got shape {weights.shape}")
    counts = _as_n_phases(n_phases, weights.shape[1])
    if counts.shape[0] != weights.shape[0]:
        raise ValueError(f"n_phases has {counts.shape[0]} rows but phase_weights has {weights.shape[0]}")
    used = np.arange(weights.shape[1])[None, :] < counts[:, None]
    used_weights = np.where(used, weights, 0.0)
    if (used_weights < 0).any() or not np.isfinite(used_weights).all():
        raise ValueError("phase_weights must be finite and non-negative for the first n_phases entries")
    totals = used_weights.sum(axis=1)
    zero = np.flatnonzero(totals <= 0)
    if zero.size:
        raise ValueError(f"phase_weights rows {zero[:10].tolist()} have zero total weight over their phases")
    return np.where(used, used_weights, np.inf).min(axis=1) / totals


def strata_by_low_fraction(
    n_phases: np.ndarray, phase_weights: np.ndarray, cutoff: float = LOW_FRACTION_CUTOFF
) -> dict[str, np.ndarray]:
    """Boolean masks splitting samples by minimum phase fraction ``<= cutoff`` or ``> cutoff`` (Fig. A3).

    Keys are ``"min_fraction<=0.10"`` and ``"min_fraction>0.10"`` (cutoff formatted to 2 decimals).
    """
    low = min_phase_fraction(n_phases, phase_weights) <= cutoff
    return {f"min_fraction<={cutoff:.2f}": low, f"min_fraction>{cutoff:.2f}": ~low}


# --------------------------------------------------------------------------------------------------------
# Whole-split evaluation and Table 1 rows
# --------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class EvaluationResult:
    """All metrics of one model on one split.

    Attributes:
        sweep: micro scores along the threshold (presence) or gate (slot-union) grid.
        ranking: top-K metrics keyed by multiplier m (K = m K*).
        set_iou: sample-averaged IoU of the thresholded prediction at the best threshold / gate.
        fixed_gate: micro scores at gate 0.5 (slot-union only, A.1.7), else None.
    """

    sweep: SweepResult
    ranking: dict[int, RankingScores]
    set_iou: float
    fixed_gate: MicroScores | None = field(default=None)


def evaluate_presence(
    probs: np.ndarray,
    targets: np.ndarray,
    thresholds: Sequence[float] | np.ndarray = THRESHOLD_GRID,
    multipliers: Sequence[int] = RANK_MULTIPLIERS,
) -> EvaluationResult:
    """Evaluate a presence model (CNN / Transformer) on one split (A.1.7-A.1.8).

    Pass ``thresholds=[tau]`` to evaluate a stratum at the split's best threshold.
    """
    scores = _as_scores(probs, "probs")
    true = _as_targets(targets, scores.shape)
    sweep = _sweep_counts(scores, true, _check_thresholds(thresholds))
    return EvaluationResult(
        sweep=sweep,
        ranking=ranking_metrics(scores, true, multipliers),
        set_iou=set_iou(predicted_set(scores, sweep.best_threshold), true),
    )


def evaluate_slot_union(
    slot_probs: np.ndarray,
    targets: np.ndarray,
    gates: np.ndarray | None = None,
    gate_thresholds: Sequence[float] | np.ndarray = GATE_GRID,
    multipliers: Sequence[int] = RANK_MULTIPLIERS,
    sg_confidence_threshold: float = 0.0,
) -> EvaluationResult:
    """Evaluate a phase-cluster model with the slot-union rule on one split (A.1.7-A.1.8).

    Micro scores (gate sweep) and top-K metrics both come from :func:`slot_set_scores`. ``fixed_gate``
    holds the gate-0.5 scores when 0.5 is on the grid (it is on the default grid).
    """
    scores = slot_set_scores(slot_probs, gates, sg_confidence_threshold)
    true = _as_targets(targets, scores.shape)
    sweep = _sweep_counts(scores, true, _check_thresholds(gate_thresholds))
    on_grid = np.isclose(sweep.thresholds, FIXED_GATE_THRESHOLD, rtol=0.0, atol=1e-9).any()
    return EvaluationResult(
        sweep=sweep,
        ranking=ranking_metrics(scores, true, multipliers),
        set_iou=set_iou(predicted_set(scores, sweep.best_threshold), true),
        fixed_gate=sweep.scores_at(FIXED_GATE_THRESHOLD) if on_grid else None,
    )


def evaluate_strata(
    strata: Mapping[str | int, np.ndarray], evaluate: Callable[[np.ndarray], EvaluationResult]
) -> dict[str | int, EvaluationResult | None]:
    """Apply ``evaluate(mask)`` to every stratum mask; empty strata map to None.

    Example (presence model, strata evaluated at the split's best threshold as in Fig. A3)::

        split = evaluate_presence(probs, targets)
        tau = [split.sweep.best_threshold]
        by_k = evaluate_strata(strata_by_phase_count(n_phases),
                               lambda m: evaluate_presence(probs[m], targets[m], thresholds=tau))
    """
    return {key: (evaluate(mask) if np.any(mask) else None) for key, mask in strata.items()}


def _k_label(multiplier: int) -> str:
    return "K*" if multiplier == 1 else f"{multiplier}K*"


def table1_row(result: EvaluationResult, method: str, split: str) -> dict[str, str | float]:
    """One row of the paper's Table 1 for one model and split, plus the supporting numbers.

    The first keys are ``method``, ``split`` and :data:`TABLE1_COLUMNS`; micro-F1 is at the best threshold
    (presence) or best gate (slot union). Extra keys: the operating threshold, micro precision/recall,
    cover/recall/IoU at every multiplier, the thresholded set IoU, and for slot-union models the gate-0.5
    micro precision/recall/F1.

    Raises:
        ValueError: if ``result.ranking`` lacks the multipliers 1 and 3 that Table 1 needs.
    """
    if not {1, 3} <= set(result.ranking):
        raise ValueError(
            f"Table 1 needs top-K multipliers 1 and 3; the result has {sorted(result.ranking)}. "
            "Evaluate with multipliers including (1, 3)."
        )
    best = result.sweep.best
    row: dict[str, str | float] = {"method": method, "split": split, "micro_f1": best.f1}
    for m in (1, 3):
        row[f"cover@{_k_label(m)}"] = result.ranking[m].cover
        row[f"recall@{_k_label(m)}"] = result.ranking[m].recall
    row["threshold"] = result.sweep.best_threshold
    row["micro_precision"] = best.precision
    row["micro_recall"] = best.recall
    for m in sorted(result.ranking):
        row[f"cover@{_k_label(m)}"] = result.ranking[m].cover
        row[f"recall@{_k_label(m)}"] = result.ranking[m].recall
        row[f"iou@{_k_label(m)}"] = result.ranking[m].iou
    row["set_iou"] = result.set_iou
    if result.fixed_gate is not None:
        row["micro_f1@gate0.50"] = result.fixed_gate.f1
        row["micro_precision@gate0.50"] = result.fixed_gate.precision
        row["micro_recall@gate0.50"] = result.fixed_gate.recall
    return row
