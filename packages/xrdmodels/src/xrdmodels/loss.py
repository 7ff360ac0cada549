"""Training objectives (A.5): presence BCE and the permutation-invariant slot assignment loss.

Labels are (B, P) integer space-group numbers, one column per phase, 0 = padding (no phase); duplicates are
allowed (two phases may share a space group). Space group s is class index s - 1; NONE is index 230.
"""

from __future__ import annotations

import itertools
from functools import lru_cache
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor

from xrdmodels.config import N_SPACE_GROUPS, NONE_CLASS, PresenceLoss
from xrdmodels.models.model import ModelOutput


def _check_labels(labels: Tensor) -> None:
    if labels.ndim != 2 or labels.dtype.is_floating_point or labels.dtype == torch.bool:
        raise ValueError(
            f"labels must be an integer tensor (batch, phases) of space-group numbers, got {labels.dtype} "
            f"{tuple(labels.shape)}"
        )
    if bool(((labels < 0) | (labels > N_SPACE_GROUPS)).any()):
        raise ValueError(
            f"labels must be space-group numbers 1..{N_SPACE_GROUPS} or 0 for padding, got values from "
            f"{int(labels.min())} to {int(labels.max())}"
        )


def labels_to_multi_hot(labels: Tensor) -> Tensor:
    """(B, P) space-group numbers (0 = padding) -> (B, 230) float multi-hot y_c (A.5); duplicates count once."""
    _check_labels(labels)
    # Column 0 collects the padding and is dropped, so no masking of the scatter is needed.
    hot = torch.zeros(labels.shape[0], N_SPACE_GROUPS + 1, device=labels.device)
    hot.scatter_(1, labels.long(), 1.0)
    return hot[:, 1:]


def _check_presence(presence_logits: Tensor, targets: Tensor) -> None:
    if presence_logits.shape != targets.shape or presence_logits.shape[-1] != N_SPACE_GROUPS:
        raise ValueError(
            f"presence logits {tuple(presence_logits.shape)} and targets {tuple(targets.shape)} must both be "
            f"(batch, {N_SPACE_GROUPS})"
        )


def presence_bce_loss(presence_logits: Tensor, targets: Tensor, care: Tensor | None = None) -> Tensor:
    """L_pres: binary cross-entropy averaged over the 230 classes and the batch (A.5). Returns a 0-d tensor.

    presence_logits: (B, 230) raw logits ℓ_c; targets: (B, 230) multi-hot y_c in {0, 1}; care: optional (B, 230)
    0/1, a 0 leaves the term out (`trace_mask`) while the mean still runs over all B x 230 terms.
    """
    _check_presence(presence_logits, targets)
    return F.binary_cross_entropy_with_logits(
        presence_logits.float(), targets.float(), weight=None if care is None else care.float()
    )


def asymmetric_presence_loss(
    presence_logits: Tensor,
    targets: Tensor,
    gamma_negative: float = 4.0,
    gamma_positive: float = 0.0,
    clip: float = 0.05,
    care: Tensor | None = None,
) -> Tensor:
    """The asymmetric loss of Ridnik et al. (ICCV 2021, "Asymmetric Loss For Multi-Label Classification"),
    averaged over the 230 classes and the batch like L_pres. Returns a 0-d tensor. Not in the paper.

    With p = σ(ℓ_c): a present group costs -(1 - p)^γ+ log p; an absent one, with the shifted probability
    p_m = max(p - clip, 0), costs -p_m^γ- log(1 - p_m). A mixture holds 1-5 of 230 groups, so (Ridnik et al.'s argument)
    BCE's gradient is mostly the many easy absent groups; γ- > 0 and the clip take those out and leave the present phases, minor
    ones included, and the absent groups the model confuses with them. γ- = γ+ = clip = 0 is BCE. `care` as in
    `presence_bce_loss`.
    """
    _check_presence(presence_logits, targets)
    logits, y = presence_logits.float(), targets.float()
    p = torch.sigmoid(logits)
    # log(1 - p_m) = log(min(1 - p + clip, 1)); at clip 0 the stable log σ(-ℓ) keeps BCE's precision.
    log_absent = F.logsigmoid(-logits) if clip == 0 else torch.log((1 - p + clip).clamp(min=1e-8, max=1.0))
    present = -((1 - p) ** gamma_positive) * F.logsigmoid(logits)
    absent = -((p - clip).clamp(min=0) ** gamma_negative) * log_absent
    terms = y * present + (1 - y) * absent
    return (terms if care is None else terms * care.float()).mean()


@lru_cache(maxsize=16)
def _slot_permutations(n_slots: int, device: torch.device) -> Tensor:
    """(K!, K) long: row p gives, for each slot k, the label column it is assigned in permutation p."""
    return torch.tensor(list(itertools.permutations(range(n_slots))), dtype=torch.long, device=device)


def assignment_loss(
    slot_logits: Tensor, labels: Tensor, reduction: Literal["mean", "none"] = "mean"
) -> Tensor:
    """L_assign: min over injections of phases into slots of the summed slot cross-entropies, / K (A.4, A.5).

    For each sample, every injective map g of its M true phases into the K slots costs
    sum_m -log π_{g(m)}[c_m] + sum_{k unused} -log π_k[NONE]; the minimum is taken exactly. The paper uses
    "its normalized cost" without a formula; dividing by K makes the loss the mean per-slot cross-entropy
    (each of the K slots contributes exactly one term). Mixture weights do not enter the loss (A.5).

    Evaluated batched without Python loops over samples: labels are padded with NONE to K columns, and the
    K! slot permutations of those columns cover every injection (permutations that differ only in where the
    NONE columns go have equal cost), so the minimum over K! gathered sums is the minimum over injections.

    slot_logits: (B, K, 231); labels: (B, P) with P <= K, 0 = padding.
    Returns a 0-d tensor (reduction "mean", over the batch) or (B,) per-sample losses (reduction "none").
    """
    _check_labels(labels)
    batch, n_slots, n_classes = slot_logits.shape
    if n_classes != N_SPACE_GROUPS + 1:
        raise ValueError(f"slot logits need {N_SPACE_GROUPS + 1} classes (230 + NONE), got {n_classes}")
    if labels.shape[0] != batch or labels.shape[1] > n_slots:
        raise ValueError(
            f"labels {tuple(labels.shape)} must be (batch={batch}, phases <= n_slots={n_slots}); a mixture "
            "cannot have more phases than the model has slots"
        )
    targets = torch.where(labels > 0, labels.long() - 1, NONE_CLASS)
    targets = F.pad(targets, (0, n_slots - labels.shape[1]), value=NONE_CLASS)

    log_probs = slot_logits.float().log_softmax(dim=-1)
    # cost[b, k, j] = cross-entropy of slot k against the class of label column j.
    cost = -log_probs.gather(2, targets[:, None, :].expand(batch, n_slots, n_slots))
    perms = _slot_permutations(n_slots, slot_logits.device)
    slot_index = torch.arange(n_slots, device=slot_logits.device)
    per_permutation = cost[:, slot_index, perms].sum(dim=-1)  # (B, K!)
    per_sample = per_permutation.amin(dim=-1) / n_slots
    if reduction == "none":
        return per_sample
    return per_sample.mean()


def trace_mask(labels: Tensor, phase_weight: Tensor, weight_below: float) -> Tensor:
    """(B, 230) float: 0 for a group held only by trace phases (mixture weight < `weight_below`), else 1.

    labels: (B, P) space groups, 0 = padding; phase_weight: (B, P) mixture weights (sum 1 over the phases)."""
    if phase_weight.shape != labels.shape:
        raise ValueError(f"phase_weight {tuple(phase_weight.shape)} must match labels {tuple(labels.shape)}")
    present = labels_to_multi_hot(labels)
    # Each group's heaviest phase (column 0 collects the padding and is dropped, as in labels_to_multi_hot).
    heaviest = torch.zeros(labels.shape[0], N_SPACE_GROUPS + 1, device=labels.device)
    heaviest.scatter_reduce_(1, labels.long(), phase_weight.to(heaviest), reduce="amax")
    return 1 - present * (heaviest[:, 1:] < weight_below).to(present)


def model_loss(
    output: ModelOutput,
    labels: Tensor,
    presence: PresenceLoss | None = None,
    phase_weight: Tensor | None = None,
) -> Tensor:
    """The paper's objective L = λ_pres L_pres + λ_assign L_assign with (1, 0) for presence models and (0, 1)
    for phase-cluster models (A.5): whichever head produced `output` decides. Returns a 0-d tensor.

    `presence` picks the presence models' L_pres (default: A.5's BCE); slot models ignore it. With
    `presence.trace_weight_below` > 0, `phase_weight` (B, P) is required and trace groups are left out of L_pres
    (`trace_mask`)."""
    if output.presence_logits is not None:
        targets = labels_to_multi_hot(labels).to(output.presence_logits)
        care = None
        if presence is not None and presence.trace_weight_below > 0:
            if phase_weight is None:
                raise ValueError("presence_loss.trace_weight_below > 0 needs the mixtures' phase_weight")
            care = trace_mask(labels, phase_weight, presence.trace_weight_below)
        if presence is None or presence.kind == "bce":
            return presence_bce_loss(output.presence_logits, targets, care)
        return asymmetric_presence_loss(
            output.presence_logits,
            targets,
            presence.gamma_negative,
            presence.gamma_positive,
            presence.clip,
            care,
        )
    if output.slot_logits is None:
        raise ValueError("model output has neither presence logits nor slot logits")
    return assignment_loss(output.slot_logits, labels)
