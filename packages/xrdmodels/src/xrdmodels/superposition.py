"""Superposed pairs (not in the paper): two single-phase training patterns summed into a two-phase one, and the
consistency that one phase's lines never lower the presence network's logit of the other phase.

A pattern of two phases is the sum of theirs (intensities add), yet the presence network reads a phase it reads
first on its own at a median probability of 0.76 at 0.28 once another phase's lines are added (docs/benchmarks.md,
"What a second phase does to the first"): it weighs lines it cannot place as evidence against a group. Each step,
``pairs`` such sums are made from the batch's single-phase patterns (the second phase's share uniform in
:data:`SHARE_RANGE`, so that both are clearly there), normalised as the stores' patterns are (docs/formats.md:
divided by the 99th percentile of the window's values), and trained like any mixture with the presence loss on
their two labels, plus a hinge relu(ℓ_alone − ℓ_pair) on each phase's logit, ℓ_alone from the same forward pass
and not differentiated (:func:`superposition_hinge`).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

from xrdmodels.config import N_SPACE_GROUPS

#: Share of the second phase's pattern in a superposed pair, uniform in this range (the first's is 1 - share).
SHARE_RANGE = (0.25, 0.75)
#: The normalisation contract of the mixture stores (docs/formats.md): in-window values over this quantile.
NORMALISATION_QUANTILE = 0.99


@dataclass
class SuperposedPairs:
    """Pairs made from one batch: patterns and masks (n, N), labels (n, P) as the batch's (the two groups, then
    0), and the batch rows of each pair's two single-phase patterns, ``first`` and ``second`` (n,)."""

    pattern: Tensor
    mask: Tensor
    labels: Tensor
    first: Tensor
    second: Tensor


def superpose(
    pattern: Tensor, mask: Tensor, labels: Tensor, n_pairs: int, generator: torch.Generator
) -> SuperposedPairs | None:
    """Up to ``n_pairs`` superposed pairs of the batch's single-phase patterns (module docstring), drawn with
    ``generator`` (a CPU generator); pairs of one space group, of a pattern with itself or whose two windows do
    not overlap are left out. None when no pair is left (fewer than two single-phase patterns, for instance).

    pattern, mask: (B, N) normalised intensities and measured bins; labels: (B, P) space-group numbers, 0 padding,
    P >= 2.
    """
    if labels.shape[1] < 2:
        raise ValueError(f"superposed pairs need labels of at least 2 columns, got {tuple(labels.shape)}")
    single = torch.nonzero((labels > 0).sum(dim=1) == 1).flatten().cpu()
    if single.numel() < 2 or n_pairs < 1:
        return None
    group = labels.max(dim=1).values.cpu()
    draws = torch.randint(single.numel(), (2, n_pairs), generator=generator)
    first, second = single[draws[0]], single[draws[1]]
    share = SHARE_RANGE[0] + (SHARE_RANGE[1] - SHARE_RANGE[0]) * torch.rand(n_pairs, generator=generator)
    keep = (group[first] != group[second]) & (first != second)
    first, second, share = first[keep], second[keep], share[keep]
    device = pattern.device
    first, second, share = first.to(device), second.to(device), share.to(device, pattern.dtype)
    both = mask[first] & mask[second]
    summed = ((1.0 - share)[:, None] * pattern[first] + share[:, None] * pattern[second]).clamp_min(0.0)
    summed = summed * both
    rows = []
    for r in range(summed.shape[0]):
        inside = summed[r][both[r]]
        scale = (
            torch.quantile(inside.float(), NORMALISATION_QUANTILE) if inside.numel() else inside.new_zeros(())
        )
        rows.append(bool(scale > 0))
        if rows[-1]:
            summed[r] = summed[r] / scale.to(summed.dtype)
    usable = torch.tensor(rows, dtype=torch.bool, device=device)
    if not bool(usable.any()):
        return None
    pair_labels = torch.zeros(int(usable.sum()), labels.shape[1], dtype=labels.dtype, device=device)
    pair_labels[:, 0] = labels[first[usable]].max(dim=1).values
    pair_labels[:, 1] = labels[second[usable]].max(dim=1).values
    return SuperposedPairs(summed[usable], both[usable], pair_labels, first[usable], second[usable])


def superposition_hinge(presence_logits: Tensor, n_batch: int, pairs: SuperposedPairs) -> Tensor:
    """Σ relu(ℓ_alone − ℓ_pair) over each pair's two phases, ℓ a phase's group logit alone (rows < ``n_batch``
    of ``presence_logits``, not differentiated) and in the pair (the rows after them, in ``pairs``' order),
    divided by 230 × the rows: each term weighs as one term of the presence BCE's average (A.5) does."""
    alone = presence_logits[:n_batch].detach().float()
    paired = presence_logits[n_batch:].float()
    if paired.shape[0] != pairs.labels.shape[0]:
        raise ValueError(
            f"{paired.shape[0]} logit rows after the batch's {n_batch}, for {pairs.labels.shape[0]} pairs"
        )
    index = torch.arange(paired.shape[0], device=paired.device)
    total = paired.new_zeros(())
    for column, rows in ((0, pairs.first), (1, pairs.second)):
        group = pairs.labels[:, column].long() - 1
        total = total + F.relu(alone[rows, group] - paired[index, group]).sum()
    return total / (N_SPACE_GROUPS * presence_logits.shape[0])
