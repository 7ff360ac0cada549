"""The full space-group model: CNN front-end (A.2) -> token encoder (A.3) -> presence or phase-cluster head (A.4).

pattern x (B, N), mask (B, N) bool
  -> [SNIP background removal, when config.background_removal == "snip"]
  -> [signed square root or logarithm of the intensities, when config.intensity_scale is "sqrt" or "log"]
  -> CNNFrontEnd        tokens (B, L, d), valid (B, L)      L = N / 16 for the paper's strides
  -> encoder            Z (B, L, d)                          Transformer (RoPE) or token CNN
  -> head               presence logits (B, 230)             or slots (B, K, d) + slot logits (B, K, 231)
  -> ModelOutput        set-level scores (B, 230) for evaluation
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from xrdmodels.config import ModelConfig
from xrdmodels.models.background import remove_background
from xrdmodels.models.encoders import build_encoder
from xrdmodels.models.frontend import CNNFrontEnd
from xrdmodels.models.heads import (
    PhaseClusterHead,
    PresenceHead,
    slot_gates,
    slot_noisy_or_probs,
    slot_union_scores,
)

#: Intensity (of the pattern's maximum, 1) below which `intensity_scale: log` is close to linear: noise and the
#: floor stay small while a 1% reflection rises to 0.15 and a 10% one to 0.52 of the strongest.
LOG_INTENSITY_FLOOR = 0.01


@dataclass(frozen=True)
class ModelOutput:
    """What a forward pass returns. Class index c = space group c + 1; index 230 of slot logits is NONE.

    set_probs: (B, 230) probability that each space group is in the mixture: sigmoid of the presence logits,
        or the soft slot union 1 - prod_k (1 - π_{k,c}) for phase-cluster models. Evaluate,
        predict and score-measured rank and threshold classes by one rule instead (`evaluate.set_scores`).
    presence_logits: (B, 230), presence models only (A.5).
    slot_logits: (B, K, 231), phase-cluster models only (A.4).
    slot_gates: (B, K) g_k = 1 - π_{k,NONE} (A.4), phase-cluster models only.
    slots: (B, K, d) slot representations, for `PhaseClusterHead.slot_diversity` (Fig. A2).
    slot_union_scores: (B, 230) the paper's slot-union read-out (A.7): thresholding it at a gate τ gives the
        set of per-slot argmax space groups whose gate reaches τ. Phase-cluster models only.
    """

    set_probs: Tensor
    presence_logits: Tensor | None = None
    slot_logits: Tensor | None = None
    slot_gates: Tensor | None = None
    slots: Tensor | None = None
    slot_union_scores: Tensor | None = None


class SpaceGroupModel(nn.Module):
    """One of the paper's three variants, chosen by `config.encoder` and `config.head` (Sec. 2.1, A.2-A.4)."""

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        self.config = config
        self.frontend = CNNFrontEnd(config)
        self.encoder = build_encoder(config)
        self.head: PresenceHead | PhaseClusterHead = (
            PresenceHead(config) if config.head == "presence" else PhaseClusterHead(config)
        )

    def forward(self, x: Tensor, mask: Tensor) -> ModelOutput:
        """x: (B, N) normalised intensity; mask: (B, N) bool, True = measured bin. Unmeasured bins are ignored."""
        z, valid = self.features(x, mask)
        if isinstance(self.head, PresenceHead):
            logits = self.head(z, valid)
            return ModelOutput(set_probs=torch.sigmoid(logits.float()), presence_logits=logits)
        slots, slot_logits = self.head(z, valid)
        return ModelOutput(
            set_probs=slot_noisy_or_probs(slot_logits),
            slot_logits=slot_logits,
            slot_gates=slot_gates(slot_logits),
            slots=slots,
            slot_union_scores=slot_union_scores(slot_logits),
        )

    def features(self, x: Tensor, mask: Tensor) -> tuple[Tensor, Tensor]:
        """The encoded tokens Z (B, L, d) the head reads, and which of them are valid (B, L) bool: what a pattern
        looks like to the model (compared between patterns by :mod:`xrdmodels.neighbours`). Arguments as
        :meth:`forward`."""
        if self.config.background_removal == "snip":
            x = remove_background(x, mask, self.config.background_half_width_bins)
        if self.config.intensity_scale == "sqrt":
            x = torch.sign(x) * torch.sqrt(torch.abs(x))
        elif self.config.intensity_scale == "log":
            x = (
                torch.sign(x)
                * torch.log1p(torch.abs(x) / LOG_INTENSITY_FLOOR)
                / math.log1p(1.0 / LOG_INTENSITY_FLOOR)
            )
        tokens, valid = self.frontend(x, mask)
        return self.encoder(tokens, valid), valid

    def num_parameters(self) -> int:
        """Number of trainable parameters."""
        return sum(p.numel() for p in self.parameters() if p.requires_grad)
