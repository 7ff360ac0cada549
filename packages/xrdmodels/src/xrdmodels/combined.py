"""One ranking from the model and a library search together (`predict --library`, `score-measured --library`).

The model gives each space group g a probability p_g that a phase of it is present; the library search gives the
figure of merit c_g of the group's best phase (a cosine, 0..1, :mod:`xrdmodels.library_search`). The figure of
merit becomes a probability by a logistic calibration,

    q(c) = 1 / (1 + exp(-LIBRARY_FOM_SLOPE · (c - LIBRARY_FOM_MIDPOINT))),

and the two are combined as independent detections (noisy-OR): s_g = 1 - (1 - p_g)(1 - q_g). A group the library
matches well rises to the top even where the model missed it; where the library holds nothing like the sample
(every cosine low, q ≈ 0) the model's ranking stands; a group without a phase in the library keeps p_g. Where the
library was also searched in the model's eyes (:mod:`xrdmodels.neighbours`, on by default), its calibrated
probability n_g is a third detection: s_g = 1 - (1 - p_g)(1 - q_g)(1 - n_g).

`predict` and `score-measured` give p_g hedged as the model's own ranking is (:func:`xrdmodels.predict.predict_one`):
its probability plus w·h_g (:func:`xrdmodels.predict.prior_hedge`: the training label prior within each crystal
system, weighted by the model's belief in the system), so the hedge acts as (1 - q_g)·w·h_g, in full where the
library finds nothing and not at all where it is sure; p_g passes 1 only where the model is sure of a common
group, which then leads either way: such a group scores p_g, above every group below 1 (1 - (1 - p)(1 - q) with
p > 1 would fall as q rises, so that a library match would push one of two such groups below the other). On the
shared RRUFF dev set this lifts the combined hit@5 from 0.707-0.727 to 0.743-0.747 over four seeds of the
measured pipeline, hit@1 0.544-0.553 to 0.546-0.560 (docs/benchmarks.md, "Hedging towards the label prior").

Calibration (docs/benchmarks.md, "The library search scans the cell"): a logistic regression of "the library's
best group is the labelled one" on that group's cosine, over the 443 single-phase patterns of the shared RRUFF dev
set searched, with the default cell scan (±3%), against the read phases of the measured pipeline's bank (1,219
curated structures and the AFLOW prototypes; its generated crystals are not searched). The even and the odd rows
alone give slopes 14.4 / 13.8 and midpoints 0.756 / 0.749; before the cell scan the fit was slope 14.4, midpoint
0.733. pipelines/fit_library_calibration.py reproduces the fit; a library of another size or make, or another
``--library-cell-scan``, may warrant its own. The constants are the search's, whatever the model.

The combined predicted set (:func:`combined_set`) is the top of the combined ranking, as many groups as the model's
own predicted set: the library changes which groups are named, not how many, as the prior's hedge does for the
model's set. Its calibrated probability is the chance that the library's *best* group is a labelled one, not a
presence probability of every group: the near relatives of a matched phase score almost as high, and a set sized
by it held 6.1-6.7 groups per single-phase RRUFF mineral (set F1 0.38 against the model's 0.56; docs/benchmarks.md,
"The combined ranking's predicted set"). The model's size may be 0 (under a threshold no group reaches), and the
combined set is then empty too.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .config import N_SPACE_GROUPS
from .library_search import LibraryResult
from .spacegroups import crystal_system, symbol

LIBRARY_FOM_MIDPOINT = 0.752
"""Library figure of merit (cosine) at which the calibrated probability is 1/2."""
LIBRARY_FOM_SLOPE = 14.1
"""Slope of the calibration's logit per unit of cosine."""


@dataclass
class CombinedGroup:
    """One space group of the combined ranking.

    score: 1 - (1 - model_probability)(1 - library_probability), or model_probability where that passes 1: the
        ranking key (module docstring), never lower for a higher term of either.
    model_probability: the model's term: its probability for the group (for phase-cluster models, the largest
        slot's), plus the hedge towards the training label prior where its ranking has one.
    library_probability: the calibrated probability of the library's figure of merit; 0 for a group without a
        phase in the library.
    neighbour_probability: the calibrated probability of the group's margin in the neighbour search
        (:mod:`xrdmodels.neighbours`); 0 without one.
    """

    spacegroup: int
    symbol: str
    crystal_system: str
    score: float
    model_probability: float
    library_probability: float
    neighbour_probability: float = 0.0


def library_probability(fom: np.ndarray) -> np.ndarray:
    """Calibrated probability that a group is present given its library figure of merit (cosine); NaN (no phase
    in the library) gives 0."""
    fom = np.asarray(fom, dtype=np.float64)
    q = 1.0 / (1.0 + np.exp(-LIBRARY_FOM_SLOPE * (fom - LIBRARY_FOM_MIDPOINT)))
    return np.where(np.isnan(fom), 0.0, q)


def group_fom(result: LibraryResult) -> np.ndarray:
    """(230,) the figure of merit of each space group in a library search (index g - 1), NaN where the result
    does not rank the group (no phase of it in the library, or cut by ``top_k``)."""
    fom = np.full(N_SPACE_GROUPS, np.nan)
    for match in result.ranked:
        fom[match.spacegroup - 1] = match.score
    return fom


def noisy_or(model_probability: np.ndarray, *terms: np.ndarray) -> np.ndarray:
    """(230,) the ranking key of the model's hedged probability p (230,) and independent detections ``terms``
    (each (230,), 0..1): 1 - (1 - p)·Π(1 - t), or p where p passes 1 (module docstring)."""
    p = np.asarray(model_probability, dtype=np.float64)
    missed = 1.0 - p
    for term in terms:
        missed = missed * (1.0 - np.asarray(term, dtype=np.float64))
    return np.where(p > 1.0, p, 1.0 - missed)


def combine(
    model_probability: np.ndarray, library: LibraryResult, neighbours: np.ndarray | None = None
) -> list[CombinedGroup]:
    """All 230 space groups, best first, by the noisy-OR of the model's probability (230,; hedged, module
    docstring), the library's calibrated figure of merit and, when given, the neighbour search's calibrated
    probability (230,; :func:`xrdmodels.neighbours.neighbour_probability`); ties keep space-group order."""
    p = np.asarray(model_probability, dtype=np.float64)
    n = np.zeros(N_SPACE_GROUPS) if neighbours is None else np.asarray(neighbours, dtype=np.float64)
    for name, value in (("model_probability", p), ("neighbours", n)):
        if value.shape != (N_SPACE_GROUPS,):
            raise ValueError(f"{name} must have shape ({N_SPACE_GROUPS},), got {value.shape}")
    q = library_probability(group_fom(library))
    score = noisy_or(p, q, n)
    return [
        CombinedGroup(int(c) + 1, symbol(int(c) + 1), crystal_system(int(c) + 1), float(score[c]), float(p[c]),
                      float(q[c]), float(n[c]))
        for c in np.argsort(-score, kind="stable")
    ]  # fmt: skip


def combined_set(combined: list[CombinedGroup], size: int) -> list[int]:
    """The combined ranking's predicted set (module docstring): the space groups of its top ``size`` entries
    (``size``: the model's predicted set's), ascending; ``combined`` is the whole ranking, best first."""
    if not 0 <= size <= len(combined):
        raise ValueError(f"a set of {size} groups cannot be taken from a ranking of {len(combined)}")
    return sorted(g.spacegroup for g in combined[:size])
