"""`xrdmodels predict`: a checkpoint and measured pattern files -> ranked space groups (and active phase slots)."""

from __future__ import annotations

import json
import math
import numbers
from dataclasses import asdict, dataclass, field, replace
from itertools import zip_longest
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .combined import CombinedGroup, combine, combined_set, noisy_or
from .config import (
    A1_PHASE_COUNT_PROBABILITIES,
    CU_KA_ANGSTROM,
    DEFAULT_EXPECTED_PHASES,
    DEFAULT_LIBRARY_CELL_SCAN,
    DEFAULT_MEMORY_CELL_SCAN,
    DEFAULT_PRIOR_WEIGHT,
    MAX_PHASES,
    N_SPACE_GROUPS,
    remote_options,
)
from .evaluate import load_model, set_scores
from .library_search import LibraryMatch, LibraryResult, SpectralLibrary, check_cell_scan
from .measured import (
    DEFAULT_MAX_PATTERN_BYTES,
    GriddedPattern,
    MeasuredPattern,
    known_formats,
    looks_like_pattern,
    normalise_format,
    read_pattern,
    to_model_grid,
)
from .measured.grid import A1, TrainingRanges, measurement_wavelength
from .metrics import expected_f1_set_size, predicted_set, rank_classes, rescale_presence_odds
from .neighbours import MEMORY_KEY, NeighbourSearch, ReferencePhases, neighbour_probability
from .spacegroups import crystal_system, symbol


@dataclass
class RankedGroup:
    """One space group of the ranking.

    score: the ranking key: the set score (metrics module docstring: the presence probability, or for
        phase-cluster models the gate of the strongest slot voting for the group, and (largest slot
        probability - 1) < 0 for a group no slot votes for) plus ``prior_weight`` × its :func:`prior_hedge`
        (the training label prior within its crystal system, weighted by the model's belief in the system);
        with the checkpoint's memory of its training phases, the noisy-OR of that (with the probability in place
        of the set score) and ``memory_probability`` (:func:`predict_one`).
    probability: the presence probability, or the largest probability any slot gives the group.
    memory_probability: the calibrated probability of the group's margin among the training phases nearest the
        pattern in the model's eyes (:mod:`xrdmodels.neighbours`); 0 without a memory.
    memory_phase: the group's training phase nearest the pattern in the model's eyes, "formula (bank id)"; None
        without a memory or a phase of the group in it.
    """

    spacegroup: int
    symbol: str
    crystal_system: str
    score: float
    probability: float
    memory_probability: float = 0.0
    memory_phase: str | None = None


@dataclass
class ActiveSlot:
    slot: int
    gate: float
    spacegroup: int
    symbol: str
    probability: float


@dataclass
class Prediction:
    file: str
    ranked: list[RankedGroup]
    slots: list[ActiveSlot] | None
    predicted_set: list[int]
    window_deg: tuple[float, float]
    wavelength_angstrom: float
    #: The operating point behind ``predicted_set`` where ``set_rule`` is "threshold" (the one asked for, or the
    #: checkpoint's validation threshold or gate); None where the expected-F1 rule chose the set.
    threshold: float | None
    #: Weight of the training label prior in the ranking (0: the model's set scores alone, the paper's ranking).
    prior_weight: float
    warnings: list[str] = field(default_factory=list)
    library: LibraryResult | None = None  # the library search on the same file, when one was asked for
    # the model and the library in one ranking (xrdmodels.combined), when a library was asked for
    combined: list[CombinedGroup] | None = None
    #: The top of the combined ranking, as many groups as ``predicted_set`` (:func:`~xrdmodels.combined.combined_set`),
    #: when a library was searched.
    combined_set: list[int] | None = None
    #: The checkpoint's memory of its training phases that ``ranked`` used (its size and source), if any.
    memory: str | None = None
    #: The network's own ranking (space groups, best first, as many as ``ranked``) where the memory re-ranked it.
    network_ranked: list[int] | None = None
    #: The PNG written for this file with ``plot_dir`` (``<stem>.png``, ``<stem>-2.png`` ... where stems repeat).
    plot: str | None = None
    #: How ``predicted_set``'s size was chosen: "expected-f1" (the default,
    #: :func:`~xrdmodels.metrics.expected_f1_set_size`) or "threshold" (as many groups as score >= ``threshold``).
    set_rule: str = "threshold"
    #: The mean number of phases per sample the expected-F1 rule read the model's probabilities under (the
    #: training mixtures' own with ``expected_phases="training"``); None under the threshold rule.
    expected_phases: float | None = None


def model_probabilities(ranked: list[RankedGroup]) -> np.ndarray:
    """(230,) each ranked group's probability at index g - 1 (0 for a group not in ``ranked``)."""
    probability = np.zeros(N_SPACE_GROUPS)
    for r in ranked:
        probability[r.spacegroup - 1] = r.probability
    return probability


#: The crystal systems, and the index into them of each space group's (index g - 1).
_SYSTEMS, _SYSTEM_OF_GROUP = np.unique(
    [crystal_system(g) for g in range(1, N_SPACE_GROUPS + 1)], return_inverse=True
)


def prior_hedge(probability: np.ndarray, prior: np.ndarray) -> np.ndarray:
    """(230,) h_g = B(S)·π_g/π(S) for group g of crystal system S: the training label prior π within each
    system, weighted by the model's belief B(S) in that system, its share of the model's summed probabilities
    (230,). Where the model is sure of the crystal system but not the group, the commonest groups of that system
    come first: a back-off from the group to the system (docs/benchmarks.md, "Hedging towards the label prior").
    A system without training phases gets nothing; probabilities summing to 0 give π itself."""
    probability = np.asarray(probability, dtype=np.float64)  # sums in double, whatever the model's dtype
    total = float(probability.sum())
    prior_of_system = np.bincount(_SYSTEM_OF_GROUP, weights=prior, minlength=len(_SYSTEMS))
    belief = (
        np.bincount(_SYSTEM_OF_GROUP, weights=probability, minlength=len(_SYSTEMS)) / total
        if total > 0
        else prior_of_system
    )
    within = np.divide(
        prior,
        prior_of_system[_SYSTEM_OF_GROUP],
        out=np.zeros(N_SPACE_GROUPS),
        where=prior_of_system[_SYSTEM_OF_GROUP] > 0,
    )
    return belief[_SYSTEM_OF_GROUP] * within


def combined_model_term(pred: Prediction, state: dict[str, Any]) -> np.ndarray:
    """(230,) what the model brings to the combined ranking (:mod:`xrdmodels.combined`): its probability for each
    group plus ``pred.prior_weight`` × :func:`prior_hedge`, the hedge of its own ranking (`predict_one`); needs
    every group in ``pred.ranked``."""
    return hedged_probability(model_probabilities(pred.ranked), label_prior(state), pred.prior_weight)


def hedged_probability(probability: np.ndarray, prior: np.ndarray | None, prior_weight: float) -> np.ndarray:
    """(230,) the model's probability plus ``prior_weight`` × :func:`prior_hedge` (no hedge without a prior or at
    weight 0), in double: the model's term wherever it is combined with another detection."""
    probability = np.asarray(probability, dtype=np.float64)
    if prior is None or prior_weight == 0:
        return probability
    return probability + prior_weight * prior_hedge(probability, prior)


def model_grid(state: dict[str, Any]) -> tuple[float, float, int, float]:
    """(2θ min, 2θ max, n_bins, wavelength Å) the checkpoint's model was trained on; a checkpoint that
    predates recording its training wavelength was trained at the paper's Cu Kα (A.1)."""
    mc = state["model_config"]
    data = state.get("data", {})
    return (
        mc["two_theta_min_deg"],
        mc["two_theta_max_deg"],
        mc["n_bins"],
        float(data.get("wavelength_angstrom", CU_KA_ANGSTROM)),
    )


def training_ranges(state: dict[str, Any], checkpoint: str = "the checkpoint") -> TrainingRanges:
    """The ranges of the recipe the checkpoint's model was trained on (``data.recipe``, recorded from the
    training store), which the measured-data warnings compare with and whose normalisation percentile a
    measured pattern is divided by; :data:`~xrdmodels.measured.grid.A1`
    for a checkpoint that records none (trained before it was recorded).

    Raises:
        ValueError: the recorded recipe is malformed; the message names ``checkpoint`` and the field.
    """
    recipe = state.get("data", {}).get("recipe")
    if recipe is None:
        return A1
    try:
        return TrainingRanges.from_recipe(recipe)
    except ValueError as exc:
        raise ValueError(
            f"{checkpoint}: its training recipe (data.recipe) is malformed: {exc}; the file was altered or not "
            "written by xrdmodels train"
        ) from None


def label_prior(state: dict[str, Any], checkpoint: str = "the checkpoint") -> np.ndarray | None:
    """(230,) each group's share of the training phases as the checkpoint records it (``data.label_prior``,
    :meth:`~xrdmodels.data.MixtureStore.label_prior`); None for a checkpoint written before it was recorded
    (`python -m xrdmodels.checkpoint add-label-prior` adds it).

    Raises:
        ValueError: the recorded prior is malformed; the message names ``checkpoint``.
    """
    recorded = state.get("data", {}).get("label_prior")
    if recorded is None:
        return None
    try:
        prior = np.asarray(recorded, dtype=np.float64)
    except (TypeError, ValueError):
        prior = np.empty(0)
    if prior.shape != (N_SPACE_GROUPS,) or not np.isfinite(prior).all() or (prior < 0).any():
        raise ValueError(
            f"{checkpoint}: its training label prior (data.label_prior) must be {N_SPACE_GROUPS} non-negative "
            "numbers; the file was altered or not written by xrdmodels train"
        )
    return prior


def check_prior_weight(prior_weight: float) -> None:
    """Raise ValueError unless ``prior_weight`` is a finite number >= 0."""
    if not (np.isfinite(prior_weight) and prior_weight >= 0):
        raise ValueError(
            f"prior weight {prior_weight} must be a finite number >= 0 (--prior-weight on the command line, "
            "prior_weight= in Python; 0 ranks by the model's scores alone)"
        )


#: ``expected_phases`` (``--expected-phases``) that reads the model's probabilities as trained: under the mean
#: number of phases of its training mixtures (:func:`training_mean_phases`).
TRAINING_PHASES = "training"


def check_expected_phases(expected_phases: Any) -> float | str:
    """``expected_phases`` as predict takes it: a number in [1, 5] (as a float) or "training".

    Raises:
        ValueError: anything else, naming the value and what is accepted.
    """
    if isinstance(expected_phases, str) and expected_phases == TRAINING_PHASES:
        return expected_phases
    if (
        isinstance(expected_phases, numbers.Real)
        and not isinstance(expected_phases, bool)
        and 1 <= expected_phases <= MAX_PHASES
    ):
        return float(expected_phases)
    raise ValueError(
        f"expected phases {expected_phases!r} must be a number from 1 to {MAX_PHASES} (the mean number of phases "
        f"in the samples you measure) or {TRAINING_PHASES!r} (the training mixtures' own mean; --expected-phases "
        "on the command line, expected_phases= in Python)"
    )


def training_phase_counts(state: dict[str, Any], checkpoint: str = "the checkpoint") -> np.ndarray:
    """P(K* = k), k = 1..K, of the checkpoint's training mixtures: its recorded recipe's
    ``phase_count_probabilities`` (``data.recipe``), normalised; A.1's where it records no recipe.

    Raises:
        ValueError: the recorded probabilities are malformed; the message names ``checkpoint``.
    """
    recipe = state.get("data", {}).get("recipe") or {}
    recorded = recipe.get("phase_count_probabilities", A1_PHASE_COUNT_PROBABILITIES)
    try:
        probabilities = np.asarray(recorded, dtype=np.float64)
    except (TypeError, ValueError):
        probabilities = np.empty(0)
    if (
        probabilities.ndim != 1
        or not 1 <= probabilities.size <= MAX_PHASES
        or not np.isfinite(probabilities).all()
        or (probabilities < 0).any()
        or probabilities.sum() <= 0
    ):
        raise ValueError(
            f"{checkpoint}: its training recipe's phase_count_probabilities (data.recipe) must be 1 to {MAX_PHASES} "
            "non-negative numbers that do not all vanish; the file was altered or not written by xrdmodels train"
        )
    return probabilities / probabilities.sum()


def training_mean_phases(state: dict[str, Any], checkpoint: str = "the checkpoint") -> float:
    """Mean number of phases in the checkpoint's training mixtures, Σ k·P(K* = k) (:func:`training_phase_counts`;
    A.1's 2.4 where it records no recipe).

    Raises:
        ValueError: the recorded probabilities are malformed; the message names ``checkpoint``.
    """
    probabilities = training_phase_counts(state, checkpoint)
    return float(np.arange(1, probabilities.size + 1) @ probabilities)


def training_max_phases(state: dict[str, Any], checkpoint: str = "the checkpoint") -> int:
    """Most phases in one of the checkpoint's training mixtures (the largest k of P(K* = k) > 0): no training
    label named more space groups, so the expected-F1 set is never larger.

    Raises:
        ValueError: the recorded probabilities are malformed; the message names ``checkpoint``.
    """
    return int(np.flatnonzero(training_phase_counts(state, checkpoint) > 0)[-1]) + 1


#: ``threshold`` (``--threshold``) that asks for the checkpoint's validation operating point (:func:`operating_point`).
VALIDATION_THRESHOLD = "validation"


def _operating_key(model_head: str) -> str:
    return "best_gate" if model_head == "phase_cluster" else "best_threshold"


def operating_point(state: dict[str, Any], model_head: str) -> float:
    """Threshold (presence) or gate (phase clustering) chosen on validation during training, else 0.5."""
    return float((state.get("val_metrics") or {}).get(_operating_key(model_head), 0.5))


def validation_fallback(state: dict[str, Any], model_head: str) -> str | None:
    """The warning for ``threshold="validation"`` on a checkpoint that records no validation operating point."""
    key = _operating_key(model_head)
    if key in (state.get("val_metrics") or {}):
        return None
    return (
        f"the checkpoint records no validation {key} (val_metrics.{key}), so --threshold validation used 0.5; "
        "give a number instead"
    )


def check_threshold(threshold: Any) -> float | str | None:
    """``threshold`` as predict takes it: None, a finite number >= 0 (as a float), or "validation".

    Raises:
        ValueError: anything else, naming the value and what is accepted.
    """
    if threshold is None or (isinstance(threshold, str) and threshold == VALIDATION_THRESHOLD):
        return threshold
    if isinstance(threshold, numbers.Real) and not isinstance(threshold, bool) and 0 <= threshold < math.inf:
        return float(threshold)
    raise ValueError(
        f"threshold {threshold!r} must be a number >= 0 or {VALIDATION_THRESHOLD!r} (the checkpoint's validation "
        "threshold or gate; --threshold on the command line, threshold= in Python)"
    )


@torch.no_grad()
def predict_one(
    model,
    state: dict[str, Any],
    pattern: MeasuredPattern,
    *,
    wavelength_angstrom: float | None,
    top_k: int = 10,
    threshold: float | str | None = None,
    training: TrainingRanges | None = None,
    prior_weight: float = DEFAULT_PRIOR_WEIGHT,
    memory: NeighbourSearch | None = None,
    expected_phases: float | str = DEFAULT_EXPECTED_PHASES,
) -> tuple[Prediction, GriddedPattern]:
    """Rank the space groups of one measured pattern and pick the predicted set.

    The pattern goes onto the model grid (:func:`~xrdmodels.measured.to_model_grid`), then one forward pass
    gives the set scores s_g (:func:`~xrdmodels.evaluate.set_scores`). Groups are ranked by s_g + w·h_g, h the
    :func:`prior_hedge` of the training label prior the checkpoint records (:func:`label_prior`) and w =
    ``prior_weight``: a model sure of a group (s near 1) keeps it first, while among groups it is unsure of, the
    commoner of the crystal systems it believes in come first, which is where a measured pattern unlike every
    training phase leaves it. A checkpoint without a recorded prior, or w = 0, ranks by s alone (the paper's
    ranking). With ``memory`` (:func:`memory_search`: the checkpoint's training phases as the model sees them),
    the ranking key is the noisy-OR 1 - (1 - p_g)(1 - n_g) of p_g = probability + w·h_g and the memory's
    calibrated probability n_g (:func:`~xrdmodels.neighbours.neighbour_probability`), p_g where it passes 1, as
    the combined ranking does with a library (:mod:`xrdmodels.combined`). The predicted set is the top of the
    ranking. Its size: with ``threshold`` (a number, or "validation": the checkpoint's validation threshold or
    gate, the paper's operating point), as many groups as reach the threshold (a presence model's probability, a
    phase-cluster model's slot gate: :func:`~xrdmodels.evaluate.set_scores`); else the size of highest
    expected F1 (:func:`~xrdmodels.metrics.expected_f1_set_size`) under 1 - (1 - q_g)(1 - n_g), at most
    :func:`training_max_phases` groups, read along the
    ranking at w = 0 so that the prior's weight changes which groups but not how many; q_g the presence
    probability, or for a phase-cluster model the chance that some slot holds the group (its noisy-or
    ``set_probs``), read under ``expected_phases`` phases per sample instead of the training mixtures' mean
    (:func:`~xrdmodels.metrics.rescale_presence_odds`, ratio ``expected_phases`` / :func:`training_mean_phases`;
    "training": as trained; the memory's n_g is not rescaled: it carries no count of phases). The checkpoint's
    threshold, the best micro-F1 on synthetic validation mixtures, gives a single-phase RRUFF mineral a set of 3
    groups (median; F1 0.42), the expected-F1 size (its plug-in, as trained) a set of 2 (median; one group for 35%
    of them, F1 0.52); for a phase-cluster model, the validation gate gives RRUFF F1 0.24, that size 0.35
    (docs/benchmarks.md, "The predicted set of a measured pattern"); at 1.5 phases per sample and with the exact
    expected F1, RRUFF F1 0.56-0.58 over three presence models ("The exact expected F1"). Warnings compare the
    pattern with ``training`` (default: :func:`training_ranges` of ``state``).

    Raises:
        MeasuredSignalError: the pattern holds no measurable signal; nothing is predicted.
        MeasuredFormatError, ValueError: an unreadable wavelength in the file and none given, no overlap with
            the model grid, threshold < 0.
    """
    lo, hi, n_bins, model_wavelength = model_grid(state)
    gridded = to_model_grid(
        pattern,
        wavelength_angstrom=wavelength_angstrom,
        model_wavelength_angstrom=model_wavelength,
        two_theta_min_deg=lo,
        two_theta_max_deg=hi,
        n_bins=n_bins,
        training=training if training is not None else training_ranges(state),
    )
    x = torch.from_numpy(gridded.pattern[None, :].astype(np.float32))
    mask = torch.zeros(1, n_bins, dtype=torch.bool)
    mask[0, gridded.window_bins[0] : gridded.window_bins[1]] = True
    out = model(x, mask)
    check_prior_weight(prior_weight)
    threshold = check_threshold(threshold)
    expected_phases = check_expected_phases(expected_phases)
    fallback = None
    if threshold == VALIDATION_THRESHOLD:
        threshold, fallback = (
            operating_point(state, model.config.head),
            validation_fallback(state, model.config.head),
        )
    scores = set_scores(out)[0]
    # Each group's probability of being present: a presence model's output; a phase-cluster model's noisy-or of its
    # slots, 1 - prod_k (1 - pi_kc) (models.heads.slot_noisy_or_probs), which sizes its set.
    present = out.set_probs[0].float().numpy().astype(np.float64)
    probability = scores
    slot_probs = None
    if out.slot_logits is not None:
        slot_probs = torch.softmax(out.slot_logits[0].float(), dim=-1).numpy().astype(np.float64)
        probability = slot_probs[:, :N_SPACE_GROUPS].max(axis=0)
    prior = label_prior(state)
    weight = prior_weight if prior is not None else 0.0
    key = scores + weight * prior_hedge(probability, prior) if weight > 0 else scores
    unhedged = scores
    remembered = np.zeros(N_SPACE_GROUPS)
    nearest = np.full(N_SPACE_GROUPS, -1)
    network_ranked = None
    if memory is not None:
        network_ranked = [int(c) + 1 for c in rank_classes(key[None])[0][:top_k]]
        similarity, nearest = memory.nearest(gridded.pattern, gridded.window_bins)
        remembered = neighbour_probability(similarity)
        key = noisy_or(hedged_probability(probability, prior, weight), remembered)
        unhedged = noisy_or(probability, remembered)
    order = rank_classes(key[None])[0]
    # The size of the set comes from the model, which groups from the ranking: the predicted set is always the
    # top of the ranking (with a threshold and w = 0, exactly metrics.predicted_set at the threshold). The
    # expected-F1 size reads the presence probabilities along the model's own ranking, the one at w = 0, so that
    # the prior's weight changes which groups are chosen but not how many (for a presence model that ranking is
    # the probabilities' own descending order; for a phase-cluster model, its slot union's).
    phases_read = None
    if threshold is None:
        set_rule = "expected-f1"
        trained = training_mean_phases(state)
        phases_read = trained if expected_phases == TRAINING_PHASES else expected_phases
        # Only the network's probabilities carry the training mixtures' count of phases; the memory's do not, so
        # with a memory the sequence along the ranking need not fall everywhere: the size is read along it anyway.
        read = rescale_presence_odds(present, phases_read / trained)
        n_present = expected_f1_set_size(
            noisy_or(read, remembered)[rank_classes(unhedged[None])[0]], max_size=training_max_phases(state)
        )
    else:
        set_rule = "threshold"
        n_present = int(predicted_set(scores, threshold).sum())
    predicted = sorted(int(c) + 1 for c in order[:n_present])
    slots = None
    if slot_probs is not None:
        # The slots behind the set: with a threshold, those whose gate reaches it (the slot union); else, for each
        # group of the set that some slot votes for, its strongest voter.
        gates = 1.0 - slot_probs[:, N_SPACE_GROUPS]
        slots = []
        shown: set[int] = set()
        for k in np.argsort(-gates, kind="stable"):
            c = int(slot_probs[k, :N_SPACE_GROUPS].argmax())
            if threshold is not None:
                behind = gates[k] >= threshold
            else:
                behind = c + 1 in predicted and c not in shown
            if behind:
                shown.add(c)
                slots.append(
                    ActiveSlot(int(k), float(gates[k]), c + 1, symbol(c + 1), float(slot_probs[k, c]))
                )
    ranked = [
        RankedGroup(
            int(c) + 1,
            symbol(int(c) + 1),
            crystal_system(int(c) + 1),
            float(key[c]),
            float(probability[c]),
            float(remembered[c]),
            None if nearest[c] < 0 else memory.phase_name(int(nearest[c])),
        )
        for c in order[:top_k]
    ]
    width = (hi - lo) / n_bins
    window = (lo + gridded.window_bins[0] * width, lo + gridded.window_bins[1] * width)
    used, _ = measurement_wavelength(pattern, wavelength_angstrom)
    warnings = list(gridded.warnings) + ([fallback] if fallback else [])
    if prior is None and prior_weight > 0:
        warnings.append(
            "the checkpoint records no training label prior (it was trained before training recorded one), so the "
            "ranking is the model's alone; `python -m xrdmodels.checkpoint add-label-prior CHECKPOINT TRAIN_STORE "
            "NEW` adds it"
        )
    pred = Prediction(
        str(pattern.source),
        ranked,
        slots,
        predicted,
        window,
        float(used),
        threshold,
        weight,
        warnings,
        set_rule=set_rule,
        expected_phases=phases_read,
    )
    if memory is not None:
        pred.memory = memory_description(memory)
        pred.network_ranked = network_ranked
    return pred, gridded


def neighbour_search(
    model,
    state: dict[str, Any],
    library: SpectralLibrary | None,
    wanted: bool,
    cell_scan: float = DEFAULT_LIBRARY_CELL_SCAN,
) -> tuple[NeighbourSearch | None, str | None]:
    """The neighbour search of ``library`` in ``model``'s eyes when ``wanted`` and a library is given, scanning
    cells within ±``cell_scan`` as the library search does; where the library is not on the model's grid, None
    and the note each combined prediction then carries as a warning."""
    if library is None or not wanted:
        return None, None
    try:
        references = ReferencePhases.from_library(library)
        return NeighbourSearch(model, references, model_grid(state), cell_scan), None
    except ValueError as exc:
        return None, f"the combined ranking has no neighbour term: {exc}"


def memory_search(
    model,
    state: dict[str, Any],
    wanted: bool,
    checkpoint: str = "the checkpoint",
    cell_scan: float = DEFAULT_MEMORY_CELL_SCAN,
) -> NeighbourSearch | None:
    """The checkpoint's memory of its training phases (``state[MEMORY_KEY]``, written by ``xrdmodels add-memory``)
    as ``model`` sees them, scanning cells within ±``cell_scan`` (:class:`~xrdmodels.neighbours.NeighbourSearch`),
    when ``wanted`` and the checkpoint carries one; else None.

    Raises:
        ValueError: a malformed memory, or one on another grid than the model's (the message names
            ``checkpoint``), or a cell scan outside [0, 0.5).
    """
    if not wanted or MEMORY_KEY not in state:
        return None
    references = ReferencePhases.from_checkpoint(state[MEMORY_KEY], checkpoint)
    try:
        return NeighbourSearch(model, references, model_grid(state), cell_scan)
    except ValueError as exc:
        raise ValueError(f"{checkpoint}: its phase memory does not fit its model: {exc}") from None


def memory_description(memory: NeighbourSearch) -> str:
    """What a prediction says about the memory it used: how many phases, read from where."""
    references = memory.references
    return f"{len(references):,} phases of {references.source}"


@dataclass
class LibraryReading:
    """A library search of one predicted pattern: the library's ranking, the similarity (230,) of the library's
    nearest phase of each group in the model's eyes (NaN for a group the library lacks; None without the
    neighbour search) and the combined ranking (:func:`~xrdmodels.combined.combine`), all groups of each, and
    the combined ranking's predicted set (:func:`~xrdmodels.combined.combined_set`)."""

    found: LibraryResult
    neighbour_similarity: np.ndarray | None
    combined: list[CombinedGroup]
    combined_set: list[int]

    def warnings_beyond(self, given: list[str]) -> list[str]:
        """The search's warnings that ``given`` (the model's, for the same pattern) does not already say: what
        only the library search found (a bank without per-reflection arrays, so no axis-by-axis refinement)."""
        return [w for w in self.found.warnings if w not in given]


@dataclass
class Ranker:
    """What ``predict`` and ``score-measured`` load once before any file, and the two steps they take per file:
    the model's ranking (:meth:`predict`) and, with a library, its search and the combined ranking
    (:meth:`search`). Open with :meth:`open`."""

    model: torch.nn.Module
    state: dict[str, Any]
    training: TrainingRanges
    prior_weight: float
    memory: NeighbourSearch | None
    library: SpectralLibrary | None
    neighbours: NeighbourSearch | None
    neighbour_note: str | None
    library_cell_scan: float
    library_refine_axes: bool

    @classmethod
    def open(
        cls,
        checkpoint: str,
        *,
        library: str | None = None,
        prior_weight: float = DEFAULT_PRIOR_WEIGHT,
        library_cell_scan: float = DEFAULT_LIBRARY_CELL_SCAN,
        library_refine_axes: bool = False,
        library_neighbours: bool = True,
        memory: bool = True,
        memory_cell_scan: float = DEFAULT_MEMORY_CELL_SCAN,
        storage_options: dict | None = None,
    ) -> Ranker:
        """Check the settings, then load the library (a bank store URL; ``storage_options``: fsspec options used
        where it is remote), the checkpoint (or ensemble manifest),
        its training ranges, label prior and, when ``memory``, its memory (:func:`memory_search`), and the
        library's neighbour search in the model's eyes when ``library_neighbours`` (:func:`neighbour_search`).

        Raises:
            ValueError: a prior weight < 0, a cell scan outside [0, 0.5), a ``library`` that is not a usable bank
                store (:class:`~xrdmodels.library_search.LibraryFormatError`), a malformed training recipe, label
                prior or phase memory in the checkpoint.
        """
        check_prior_weight(prior_weight)
        check_cell_scan(library_cell_scan)
        spectral_library = (
            SpectralLibrary.open(library, remote_options(library, storage_options))
            if library is not None
            else None
        )
        model, state = load_model(checkpoint)
        training = training_ranges(state, checkpoint)
        label_prior(state, checkpoint)
        training_mean_phases(state, checkpoint)
        neighbours, neighbour_note = neighbour_search(
            model, state, spectral_library, library_neighbours, library_cell_scan
        )
        remembered = memory_search(model, state, memory, checkpoint, memory_cell_scan)
        return cls(
            model,
            state,
            training,
            prior_weight,
            remembered,
            spectral_library,
            neighbours,
            neighbour_note,
            library_cell_scan,
            library_refine_axes,
        )

    def predict(
        self,
        pattern: MeasuredPattern,
        wavelength_angstrom: float | None,
        *,
        top_k: int = N_SPACE_GROUPS,
        threshold: float | str | None = None,
        expected_phases: float | str = DEFAULT_EXPECTED_PHASES,
    ) -> tuple[Prediction, GriddedPattern]:
        """The model's ranking of one pattern (:func:`predict_one`, with this ranker's memory and hedge)."""
        return predict_one(
            self.model,
            self.state,
            pattern,
            wavelength_angstrom=wavelength_angstrom,
            top_k=top_k,
            threshold=threshold,
            expected_phases=expected_phases,
            training=self.training,
            prior_weight=self.prior_weight,
            memory=self.memory,
        )

    def search(
        self,
        pred: Prediction,
        gridded: GriddedPattern,
        pattern: MeasuredPattern,
        wavelength_angstrom: float | None,
    ) -> LibraryReading:
        """The library's search of a pattern the model ranked (``pred`` must rank every group, for the
        combined ranking's model term) and both rankings combined.

        Raises:
            ValueError: the library search cannot use the pattern (the reason, for the prediction's warnings).
        """
        if self.library is None:
            raise ValueError("no library was opened (Ranker.open(..., library=BANK))")
        found = self.library.search(
            pattern,
            wavelength_angstrom=wavelength_angstrom,
            cell_scan=self.library_cell_scan,
            refine_axes=self.library_refine_axes,
        )
        similarity = (
            None
            if self.neighbours is None
            else self.neighbours.similarity(gridded.pattern, gridded.window_bins)
        )
        neighbour = None if similarity is None else neighbour_probability(similarity)
        combined = combine(combined_model_term(pred, self.state), found, neighbour)
        return LibraryReading(found, similarity, combined, combined_set(combined, len(pred.predicted_set)))


def collect_files(paths: list[str]) -> tuple[list[Path], list[Path]]:
    """The files to predict and the files left out: files named directly are always read; inside named
    folders (searched recursively, sorted, hidden files and folders ignored) a file is read when it looks like
    a pattern (:func:`~xrdmodels.measured.looks_like_pattern`: a format's signature or extension, or text rows
    of numbers under another extension) and left out otherwise."""
    files: list[Path] = []
    skipped: list[Path] = []
    for p in map(Path, paths):
        if not p.is_dir():
            files.append(p)
            continue
        found = (f for f in p.rglob("*") if not any(part.startswith(".") for part in f.relative_to(p).parts))
        for f in sorted(f for f in found if f.is_file()):
            try:
                wanted = looks_like_pattern(f)
            except OSError:  # unreadable: read_pattern reports it with the file's name
                wanted = True
            (files if wanted else skipped).append(f)
    return files, skipped


def _cell_change(match: LibraryMatch) -> str:
    """The match's cell change as the library table prints it: ", cell +1.2%" (isotropic), ", cell a/b/c
    +0.3/+2.1/+1.2%" (axis by axis) or "" (the library's own cell)."""
    if match.cell_axes is not None:
        return ", cell a/b/c " + "/".join(f"{100 * x:+.1f}" for x in match.cell_axes) + "%"
    return f", cell {100 * match.cell_scale:+.1f}%" if match.cell_scale else ""


def format_prediction(pred: Prediction) -> str:
    lines = [
        f"{pred.file}  (λ = {pred.wavelength_angstrom:.5f} Å, window {pred.window_deg[0]:.1f}-"
        f"{pred.window_deg[1]:.1f}° on the model's grid)"
    ]
    for w in pred.warnings:
        lines.append(f"  warning: {w}")
    if pred.plot is not None:
        lines.append(f"  plot: {pred.plot}")
    chosen = ", ".join(f"{s} ({symbol(s)})" for s in pred.predicted_set) or "none"
    how = (
        "the top of the ranking with the highest expected F1 under the model's probabilities, read at "
        f"{pred.expected_phases:g} phases per sample, at most as many groups as a training mixture's most phases"
        if pred.set_rule == "expected-f1"
        else f"the top of the ranking, as many groups as reach {pred.threshold:g} "
        + ("(slot gate)" if pred.slots is not None else "(probability)")
    )
    lines.append(f"  predicted set ({how}): {chosen}")
    if pred.prior_weight > 0:
        lines.append(
            f"  ranked by score = the model's score + {pred.prior_weight:g} × (the group's share of the training "
            "phases within its crystal system × the model's belief in that system)"
        )
    if pred.memory is not None:
        lines.append(
            f"  ranked with the model's memory of its training phases ({pred.memory}): score = noisy-OR of the "
            "above (with the probability) and how surely the memory's nearest phase in the model's eyes names the "
            "group (--no-memory: the network alone)"
        )
    if pred.slots is not None:
        for s in pred.slots:
            lines.append(
                f"  slot {s.slot}: gate {s.gate:.3f} -> SG {s.spacegroup} {s.symbol} (p {s.probability:.3f})"
            )
    model_rows = [
        "  rank  SG   symbol      system          score  probability"
        + ("  memory  nearest training phase" if pred.memory else "")
    ]
    for i, r in enumerate(pred.ranked, 1):
        model_rows.append(
            f"  {i:4d}  {r.spacegroup:3d}  {r.symbol:10s}  {r.crystal_system:12s}  {r.score:7.4f}  {r.probability:.4f}"
            + (f"       {r.memory_probability:.4f}  {r.memory_phase or '-'}" if pred.memory else "")
        )
    if pred.library is None:
        return "\n".join(lines + model_rows)
    found = ", ".join(pred.library.identified) or "nothing"
    lines.append(f"  library search in {pred.library.library} (right): identified {found}")
    library_rows = ["library SG  symbol      FoM    best phase (its cell change at the match)"] + [
        f"{r.spacegroup:10d}  {r.symbol:10s}  {r.score:5.3f}  {r.formula} ({r.phase_id}{_cell_change(r)})"
        for r in pred.library.ranked
    ]
    width = max(len(row) for row in model_rows)
    for model_row, library_row in zip_longest(model_rows, library_rows, fillvalue=""):
        lines.append(f"{model_row:<{width}}  |  {library_row}".rstrip())
    if pred.combined:
        lines.append(
            "  model and library combined (noisy-OR of the model's probability, hedged as its ranking is, the "
            "library's calibrated probability and, where searched, the library's nearest phases in the model's eyes):"
        )
        if pred.combined_set is not None:
            chosen = ", ".join(f"{s} ({symbol(s)})" for s in pred.combined_set) or "none"
            lines.append(
                f"  combined set (the top of the combined ranking, as many groups as the predicted set): {chosen}"
            )
        lines.append("  rank  SG   symbol      system          score   model  library  neighbours")
        for i, r in enumerate(pred.combined, 1):
            lines.append(
                f"  {i:4d}  {r.spacegroup:3d}  {r.symbol:10s}  {r.crystal_system:12s}  {r.score:6.4f}  "
                f"{r.model_probability:6.4f}  {r.library_probability:6.4f}  {r.neighbour_probability:6.4f}"
            )
    return "\n".join(lines)


def plot_prediction(pred: Prediction, gridded: GriddedPattern, state: dict[str, Any], png: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    lo, hi, n_bins, _ = model_grid(state)
    centers = lo + (hi - lo) / n_bins * (np.arange(n_bins) + 0.5)
    fig, (ax, bx) = plt.subplots(1, 2, figsize=(12, 4), gridspec_kw={"width_ratios": [3, 1.2]})
    ax.plot(centers, gridded.pattern, color="k", lw=0.8)
    ax.axvspan(lo, pred.window_deg[0], color="0.9", lw=0)
    ax.axvspan(pred.window_deg[1], hi, color="0.9", lw=0)
    ax.set_xlabel("2θ (degrees, model wavelength)")
    ax.set_ylabel("normalised intensity")
    ax.set_title(Path(pred.file).name, fontsize=9)
    top = pred.ranked[:10][::-1]
    bx.barh(
        [f"{r.spacegroup} {r.symbol}" for r in top],
        [r.probability for r in top],
        color=["tab:red" if r.spacegroup in pred.predicted_set else "tab:gray" for r in top],
    )
    bx.set_xlim(0, 1)
    bx.set_xlabel("probability (red: predicted set)")
    fig.tight_layout()
    fig.savefig(png, dpi=110)
    plt.close(fig)


def _unused_name(folder: Path, stem: str, suffix: str, taken: list[Path]) -> Path:
    """``folder/stem+suffix``, or ``stem-2``, ``stem-3`` ... when this run already wrote that name (sample.xy and
    sample.xrdml, or files of one name in two folders, would otherwise overwrite each other's plots)."""
    name, k = folder / f"{stem}{suffix}", 1
    while name in taken:
        k += 1
        name = folder / f"{stem}-{k}{suffix}"
    return name


def predict_files(
    checkpoint: str,
    paths: list[str],
    *,
    wavelength_angstrom: float | None = None,
    top_k: int = 10,
    threshold: float | str | None = None,
    plot_dir: str | None = None,
    file_format: str | None = None,
    max_bytes: int = DEFAULT_MAX_PATTERN_BYTES,
    library: str | None = None,
    prior_weight: float = DEFAULT_PRIOR_WEIGHT,
    library_cell_scan: float = DEFAULT_LIBRARY_CELL_SCAN,
    library_refine_axes: bool = False,
    library_neighbours: bool = True,
    memory: bool = True,
    memory_cell_scan: float = DEFAULT_MEMORY_CELL_SCAN,
    storage_options: dict | None = None,
    expected_phases: float | str = DEFAULT_EXPECTED_PHASES,
) -> tuple[list[Prediction], list[tuple[str, str]], list[str]]:
    """Predict every file; a file that cannot be read or converted, or holds no measurable signal
    (:class:`~xrdmodels.measured.MeasuredSignalError`), is reported in `failures` and the rest go on. Returns
    the predictions, the failures (file, error) and the files of named folders left out as not patterns by
    content or extension (:func:`collect_files`).

    With ``library`` (a bank store URL; ``storage_options``: fsspec options used where it is remote) each
    predicted file is also searched against that library
    (:mod:`xrdmodels.library_search`), top ``top_k`` groups, in ``Prediction.library``, and the model and the
    library are ranked together (:mod:`xrdmodels.combined`), top ``top_k``, in ``Prediction.combined``, with the
    combined set (that ranking's top at the model's set size) in ``Prediction.combined_set``; when the search
    cannot use a file the model predicted, the reason is added to that prediction's warnings and both stay None. With
    ``library_neighbours`` (the default) the combined ranking also holds the neighbour search of that library in
    the model's eyes (:mod:`xrdmodels.neighbours`). With ``memory`` (the default) and a checkpoint that carries a
    memory of its training phases (``xrdmodels add-memory``), the model's ranking uses it (:func:`predict_one`);
    the combined ranking takes the network's probabilities, so that a library holding those phases does not
    count them twice. ``memory_cell_scan``: the memory's cell scan (:func:`memory_search`).

    ``prior_weight``, ``threshold``, ``expected_phases``: see :func:`predict_one`. ``library_cell_scan``, ``library_refine_axes``: the library
    search's cell scan and axis-by-axis refinement (:meth:`~xrdmodels.library_search.SpectralLibrary.search`,
    ``cell_scan`` and ``refine_axes``).

    Raises:
        ValueError: a setting that would fail every file (threshold < 0, expected phases outside [1, 5], a prior
            weight < 0, unknown format, a
            cell scan outside [0, 0.5), a ``library`` that is not a usable bank store, a malformed training recipe
            or label prior or phase memory in the checkpoint), before any file. A library not on the model's grid has no
            neighbour search, which each combined prediction's warnings say.
    """
    threshold = check_threshold(threshold)
    expected_phases = check_expected_phases(expected_phases)
    if file_format is not None and normalise_format(file_format) is None:
        raise ValueError(
            f"unknown format {file_format!r}: use one of {', '.join(known_formats())} (--format on the command "
            "line, file_format= in Python), or leave it out to detect each file's format"
        )
    ranker = Ranker.open(
        checkpoint,
        library=library,
        prior_weight=prior_weight,
        library_cell_scan=library_cell_scan,
        library_refine_axes=library_refine_axes,
        library_neighbours=library_neighbours,
        memory=memory,
        memory_cell_scan=memory_cell_scan,
        storage_options=storage_options,
    )
    predictions: list[Prediction] = []
    failures: list[tuple[str, str]] = []
    files, skipped = collect_files(paths)
    for f in files:
        try:
            pattern = read_pattern(f, format=file_format, max_bytes=max_bytes)
            # The combined ranking needs the model's probability for every group.
            pred, gridded = ranker.predict(
                pattern,
                wavelength_angstrom,
                top_k=top_k if ranker.library is None else N_SPACE_GROUPS,
                threshold=threshold,
                expected_phases=expected_phases,
            )
        except (ValueError, OSError) as exc:
            failures.append((str(f), str(exc)))
            continue
        if ranker.library is not None:
            try:
                reading = ranker.search(pred, gridded, pattern, wavelength_angstrom)
            except ValueError as exc:
                pred.warnings.append(f"library search failed: {exc}")
            else:
                pred.combined = reading.combined[:top_k]
                pred.combined_set = reading.combined_set
                pred.library = replace(reading.found, ranked=reading.found.ranked[:top_k])
                pred.warnings.extend(reading.warnings_beyond(pred.warnings))
                if ranker.neighbour_note:
                    pred.warnings.append(ranker.neighbour_note)
            pred.ranked = pred.ranked[:top_k]
            if pred.network_ranked is not None:
                pred.network_ranked = pred.network_ranked[:top_k]
        if plot_dir:
            Path(plot_dir).mkdir(parents=True, exist_ok=True)
            png = _unused_name(Path(plot_dir), f.stem, ".png", [Path(p.plot) for p in predictions if p.plot])
            plot_prediction(pred, gridded, ranker.state, png)
            pred.plot = str(png)
        predictions.append(pred)
    return predictions, failures, [str(f) for f in skipped]


def to_json(predictions: list[Prediction], failures: list[tuple[str, str]], skipped: list[str]) -> str:
    return json.dumps(
        {
            "predictions": [asdict(p) for p in predictions],
            "failures": [{"file": f, "error": e} for f, e in failures],
            "skipped": skipped,
        },
        indent=2,
    )
