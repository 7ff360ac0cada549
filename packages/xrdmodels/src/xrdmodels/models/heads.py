"""Prediction heads: global presence (A.3, A.5) and latent phase clustering (A.4), plus slot read-outs (A.7).

Class layout: space group s (1..230) is class index s - 1; slot distributions add NONE at index 230.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from xrdmodels.config import N_SPACE_GROUPS, NONE_CLASS, ModelConfig
from xrdmodels.models.encoders import FeedForward, MultiHeadAttention, key_padding_mask

#: ε of the masked mean pooling denominator (A.3); guards samples without a valid token.
POOL_EPS = 1e-6


def masked_flatten(z: Tensor, valid: Tensor) -> Tensor:
    """All tokens side by side with invalid ones zeroed: (B, L, d), (B, L) bool -> (B, L * d)."""
    return (z * valid.unsqueeze(-1).to(z.dtype)).flatten(1)


def masked_mean(z: Tensor, valid: Tensor) -> Tensor:
    """g = sum_l m_l Z_l / (sum_l m_l + ε): (B, L, d), (B, L) bool -> (B, d) (A.3)."""
    weight = valid.to(z.dtype).unsqueeze(-1)
    return (z * weight).sum(dim=1) / (weight.sum(dim=1) + POOL_EPS)


class PresenceHead(nn.Module):
    """Pooling + linear layer: (B, L, d) -> presence logits (B, 230) (A.3, A.5).

    pooling 'mean' is the paper's masked mean (A.3). 'attention' lets P learned queries attend to the valid
    tokens and classifies their concatenation: each query can weight tokens by content and position, where a
    mean keeps only their average. 'flatten' classifies all L tokens side by side (invalid ones zeroed), so
    every 2θ position has weights of its own, as in the CNN classifiers common in XRD. Neither is in the paper.
    """

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        self.pooling = config.presence_pooling
        if self.pooling == "flatten":
            pooled_width = config.n_tokens * config.d_model
        elif self.pooling == "attention":
            self.queries = nn.Parameter(torch.randn(config.pool_queries, config.d_model))
            self.attn = MultiHeadAttention(config.d_model, config.n_heads, config.dropout)
            self.norm = nn.LayerNorm(config.d_model)
            pooled_width = config.pool_queries * config.d_model
        else:
            pooled_width = config.d_model
        hidden = config.presence_hidden
        # A hidden layer lets a group's logit need several peaks together rather than add up single ones.
        self.classifier = (
            nn.Sequential(nn.Linear(pooled_width, hidden), nn.GELU(), nn.Linear(hidden, N_SPACE_GROUPS))
            if hidden
            else nn.Linear(pooled_width, N_SPACE_GROUPS)
        )

    def forward(self, z: Tensor, valid: Tensor) -> Tensor:
        if self.pooling == "mean":
            return self.classifier(masked_mean(z, valid))
        if self.pooling == "flatten":
            return self.classifier(masked_flatten(z, valid))
        queries = self.queries.to(z.dtype).expand(z.shape[0], -1, -1)
        pooled = self.norm(self.attn(queries, z, key_padding_mask(valid)))
        return self.classifier(pooled.flatten(1))


class SlotUpdateLayer(nn.Module):
    """S <- LN(S + Attn(S, Z, Z)); S <- LN(S + FFN(S)): cross-attention from slots to valid tokens (A.4)."""

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        self.attn = MultiHeadAttention(config.d_model, config.n_heads, config.dropout)
        self.norm_attn = nn.LayerNorm(config.d_model)
        self.ffn = FeedForward(config.d_model, config.ffn_dim, config.dropout)
        self.norm_ffn = nn.LayerNorm(config.d_model)

    def forward(self, slots: Tensor, z: Tensor, attn_mask: Tensor) -> Tensor:
        # No positional encoding here: the slot summary is invariant to the order of tokens (A.4).
        slots = self.norm_attn(slots + self.attn(slots, z, attn_mask))
        return self.norm_ffn(slots + self.ffn(slots))


class PhaseClusterHead(nn.Module):
    """K learnable slots, iterated masked cross-attention to tokens, per-slot (230 + NONE)-way logits (A.4).

    forward(z (B, L, d), valid (B, L) bool) -> (slots (B, K, d), slot_logits (B, K, 231)).
    """

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        # Unit-variance initial slots (like nn.Embedding) are distinct from the start, which breaks the
        # symmetry between slots that a permutation-invariant loss cannot break by itself.
        self.slot_embeddings = nn.Parameter(torch.randn(config.n_slots, config.d_model))
        # slot_init 'flatten': each slot also starts from its own linear view of all tokens side by side, so
        # where the peaks are reaches the slots directly instead of only through attention averages.
        self.from_tokens = (
            nn.Linear(config.n_tokens * config.d_model, config.n_slots * config.d_model)
            if config.slot_init == "flatten"
            else None
        )
        self.layers = nn.ModuleList(SlotUpdateLayer(config) for _ in range(config.n_slot_layers))
        self.classifier = nn.Linear(config.d_model, N_SPACE_GROUPS + 1)

    def forward(self, z: Tensor, valid: Tensor) -> tuple[Tensor, Tensor]:
        attn_mask = key_padding_mask(valid)
        slots = self.slot_embeddings.to(z.dtype).expand(z.shape[0], -1, -1)
        if self.from_tokens is not None:
            slots = slots + self.from_tokens(masked_flatten(z, valid)).view_as(slots)
        for layer in self.layers:
            slots = layer(slots, z, attn_mask)
        return slots, self.classifier(slots)

    @staticmethod
    def slot_diversity(slots: Tensor) -> Tensor:
        """Mean |cosine similarity| between different slots, averaged over the batch (Appendix D 4.2, Fig. A2).

        Computed on the per-sample slot representations S (B, K, d) after the cross-attention updates, not on
        the initial slot parameters: random initial embeddings in d dimensions are almost orthogonal, whereas
        the paper reports a high similarity at the start of training. Lower = more distinct slots.
        Returns a 0-d tensor.
        """
        n_slots = slots.shape[1]
        if n_slots < 2:
            raise ValueError(f"slot diversity needs at least 2 slots, got {n_slots}")
        unit = F.normalize(slots.float(), dim=-1)
        cosine = unit @ unit.transpose(1, 2)
        off_diagonal = ~torch.eye(n_slots, dtype=torch.bool, device=slots.device)
        return cosine.abs()[:, off_diagonal].mean()


def slot_gates(slot_logits: Tensor) -> Tensor:
    """Slot activation g_k = 1 - π_{k,NONE}: (B, K, 231) logits -> (B, K) in [0, 1] (A.4)."""
    return 1.0 - slot_logits.float().softmax(dim=-1)[..., NONE_CLASS]


def slot_union_scores(slot_logits: Tensor) -> Tensor:
    """Scores (B, 230) that reproduce the paper's slot-union rule (A.7) under any gate threshold τ.

    Each slot votes for its most probable space group (NONE excluded) with its gate g_k; a class scores the
    largest gate voting for it, and a class no slot votes for max_k π_{k,c} - 1 < 0 (as
    `xrdmodels.metrics.slot_set_scores`: below every voted class, never predicted at τ >= 0). Then
    {c : score_c >= τ} is exactly the A.7 prediction set "argmax class of every slot whose gate reaches τ"
    (space-group confidence threshold 0), for every τ >= 0.
    """
    probs = slot_logits.float().softmax(dim=-1)
    gates = 1.0 - probs[..., NONE_CLASS]
    group_probs = probs[..., :N_SPACE_GROUPS]
    best_class = group_probs.argmax(dim=-1)
    unvoted = group_probs.amax(dim=-2) - 1.0
    votes = torch.full_like(unvoted, -math.inf).scatter_reduce(-1, best_class, gates, reduce="amax")
    return torch.where(torch.isfinite(votes), votes, unvoted)


def slot_noisy_or_probs(slot_logits: Tensor) -> Tensor:
    """Soft set-level probability (B, 230): P(class c in the set) = 1 - prod_k (1 - π_{k,c}).

    π_{k,c} = g_k * p(c | slot k is a phase): the chance that at least one slot is a phase of space group c,
    treating slots as independent. Unlike `slot_union_scores` it ranks every class, which top-K metrics with
    K larger than the number of slots need. Not defined in the paper; an implementation choice.
    """
    log_probs = slot_logits.float().log_softmax(dim=-1)[..., :N_SPACE_GROUPS]
    # log(1 - π) summed over slots, in log space so that many small π do not round to 1 - 0.
    log_none_of_slots = torch.log1p(-log_probs.exp()).sum(dim=-2)
    return -torch.expm1(log_none_of_slots)
