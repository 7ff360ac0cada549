"""An independent reference for the expected F1 of a ranking's top k (tests only).

Counts instead of integrating: with the groups present independently, E[F1(k)] = Σ_{i<=k} q_i E[2 / (k + 1 + N_{-i})],
N_{-i} the number of the other groups present, whose distribution (Poisson-binomial) is built one group at a time.
"""

from __future__ import annotations

import numpy as np


def expected_f1_by_counting(q_in_rank_order: list[float] | np.ndarray, k: int) -> float:
    q = np.asarray(q_in_rank_order, dtype=np.float64)
    total = 0.0
    for i in range(k):
        others = np.delete(q, i)
        count = np.zeros(others.size + 1)
        count[0] = 1.0
        for p in others:
            count[1:] = count[1:] * (1 - p) + count[:-1] * p
            count[0] *= 1 - p
        total += q[i] * float((count * 2.0 / (k + 1 + np.arange(count.size))).sum())
    return total


def expected_f1_size_by_counting(q_in_rank_order: list[float] | np.ndarray, k_max: int = 8) -> int:
    """The smallest k in 1..k_max with the highest expected F1 (the sets in the tests are small)."""
    values = [expected_f1_by_counting(q_in_rank_order, k) for k in range(1, k_max + 1)]
    return int(np.argmax(values)) + 1
