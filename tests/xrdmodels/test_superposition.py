"""Superposed pairs (xrdmodels.superposition) against numpy and a plain loop."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from xrdmodels.superposition import (
    NORMALISATION_QUANTILE,
    SHARE_RANGE,
    superpose,
    superposition_hinge,
)


def _batch(seed: int = 0, n: int = 12, n_bins: int = 64):
    rng = np.random.default_rng(seed)
    pattern = rng.uniform(0.0, 2.0, (n, n_bins)).astype(np.float32)
    mask = np.ones((n, n_bins), dtype=bool)
    for r in range(n):
        start = int(rng.integers(0, 20))
        mask[r, :start] = False
        pattern[r, :start] = 0.0
    labels = np.zeros((n, 5), dtype=np.int64)
    labels[:, 0] = rng.integers(1, 231, n)
    labels[: n // 3, 1] = rng.integers(1, 231, n // 3)  # the first third are two-phase mixtures
    labels[2, 0] = labels[5, 0]  # two single-phase patterns of one group
    return pattern, mask, labels


def test_pairs_are_normalised_sums_of_single_phase_patterns() -> None:
    pattern, mask, labels = _batch()
    pairs = superpose(
        torch.from_numpy(pattern), torch.from_numpy(mask), torch.from_numpy(labels), 40,
        torch.Generator().manual_seed(7),
    )  # fmt: skip
    assert pairs is not None
    # The same draws, replayed: rows of the single-phase patterns, then the shares.
    replay = torch.Generator().manual_seed(7)
    single = np.flatnonzero((labels > 0).sum(axis=1) == 1)
    draws = torch.randint(single.size, (2, 40), generator=replay).numpy()
    share = (SHARE_RANGE[0] + (SHARE_RANGE[1] - SHARE_RANGE[0]) * torch.rand(40, generator=replay)).numpy()
    first, second = single[draws[0]], single[draws[1]]
    keep = (labels[first, 0] != labels[second, 0]) & (first != second)
    assert keep.sum() < 40 and np.all(labels[first[keep], 1] == 0)  # some left out, as the docstring says
    np.testing.assert_array_equal(pairs.first.numpy(), first[keep])
    np.testing.assert_array_equal(pairs.second.numpy(), second[keep])
    for r, (a, b, s) in enumerate(zip(first[keep], second[keep], share[keep], strict=True)):
        both = mask[a] & mask[b]
        summed = np.where(both, (1 - s) * pattern[a] + s * pattern[b], 0.0)
        expected = summed / np.quantile(summed[both], NORMALISATION_QUANTILE)
        np.testing.assert_allclose(pairs.pattern[r].numpy(), expected, rtol=1e-5, atol=1e-6)
        np.testing.assert_array_equal(pairs.mask[r].numpy(), both)
        assert pairs.labels[r].tolist() == [labels[a, 0], labels[b, 0], 0, 0, 0]


def test_no_pairs_without_two_single_phase_patterns() -> None:
    pattern, mask, labels = _batch()
    labels[:, 1] = 7  # every pattern now a mixture
    labels[0, 1] = 0  # one single-phase pattern
    args = (torch.from_numpy(pattern), torch.from_numpy(mask), torch.from_numpy(labels))
    assert superpose(*args, 8, torch.Generator().manual_seed(0)) is None
    with pytest.raises(ValueError, match="at least 2 columns"):
        superpose(*args[:2], args[2][:, :1], 8, torch.Generator())


def test_the_hinge_is_the_stated_sum_and_only_the_pairs_learn_from_it() -> None:
    pattern, mask, labels = _batch(seed=1)
    pairs = superpose(
        torch.from_numpy(pattern), torch.from_numpy(mask), torch.from_numpy(labels), 10,
        torch.Generator().manual_seed(3),
    )  # fmt: skip
    n_batch, n_pairs = pattern.shape[0], pairs.labels.shape[0]
    logits = torch.randn(
        n_batch + n_pairs, 230, generator=torch.Generator().manual_seed(4), requires_grad=True
    )
    value = superposition_hinge(logits, n_batch, pairs)
    plain, held = 0.0, logits.detach()
    for r in range(n_pairs):
        for column, row in ((0, int(pairs.first[r])), (1, int(pairs.second[r]))):
            g = int(pairs.labels[r, column]) - 1
            plain += max(0.0, float(held[row, g]) - float(held[n_batch + r, g]))
    assert float(value.detach()) == pytest.approx(plain / (230 * (n_batch + n_pairs)), rel=1e-6)
    assert plain > 0
    value.backward()
    assert torch.all(logits.grad[:n_batch] == 0)  # the single-phase logits are targets, not learners
    assert torch.any(logits.grad[n_batch:] < 0)
