"""Token encoders (A.3): tokens (B, L, d) + valid (B, L) bool -> encoded tokens Z (B, L, d).

Invalid (unmeasured) tokens never influence valid outputs: the Transformer excludes them as attention keys,
the token CNN zeroes them before and after every convolution. Their own outputs are meaningless and must be
ignored downstream (pooling and slot attention do).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from xrdmodels.config import ModelConfig


def rope_tables(n_positions: int, head_dim: int, base: float, device: torch.device) -> tuple[Tensor, Tensor]:
    """(cos, sin), each (n_positions, head_dim), for rotary embeddings over token index (~ 2θ, uniform grid).

    Channel j and j + head_dim/2 form one rotated pair with angular frequency base^(-2j/head_dim) per token.
    """
    inv_freq = base ** (-torch.arange(0, head_dim, 2, device=device, dtype=torch.float32) / head_dim)
    angles = torch.arange(n_positions, device=device, dtype=torch.float32)[:, None] * inv_freq[None, :]
    angles = torch.cat([angles, angles], dim=-1)
    return angles.cos(), angles.sin()


def apply_rope(x: Tensor, cos: Tensor, sin: Tensor) -> Tensor:
    """Rotate (..., L, head_dim) queries or keys by their position, so q_m . k_n depends only on m - n."""
    first, second = x.chunk(2, dim=-1)
    rotated_half = torch.cat([-second, first], dim=-1)
    return x * cos.to(x.dtype) + rotated_half * sin.to(x.dtype)


def key_padding_mask(valid: Tensor) -> Tensor:
    """(B, L) valid tokens -> (B, 1, 1, L) bool attention mask, True = may be attended to.

    A sample with no valid token at all would make every softmax row empty (NaN); such a sample attends to
    all tokens instead, which keeps the batch finite without a device-to-host check. Its outputs carry no
    information, as its input had none.
    """
    keys = valid | ~valid.any(dim=1, keepdim=True)
    return keys[:, None, None, :]


class MultiHeadAttention(nn.Module):
    """Multi-head attention through `F.scaled_dot_product_attention` (fused kernels on GPU).

    forward(query (B, Lq, d), context (B, Lk, d), attn_mask (B, 1, 1, Lk) bool, rope tables or None)
    -> (B, Lq, d). With rope, query and context must share positions (self-attention).
    """

    def __init__(self, d_model: int, n_heads: int, dropout: float) -> None:
        super().__init__()
        self.n_heads = n_heads
        self.to_q = nn.Linear(d_model, d_model)
        self.to_kv = nn.Linear(d_model, 2 * d_model)
        self.proj = nn.Linear(d_model, d_model)
        self.attn_dropout = dropout
        self.resid_dropout = nn.Dropout(dropout)

    def forward(
        self, query: Tensor, context: Tensor, attn_mask: Tensor, rope: tuple[Tensor, Tensor] | None = None
    ) -> Tensor:
        batch, n_query, d_model = query.shape
        head_dim = d_model // self.n_heads
        q = self.to_q(query).view(batch, n_query, self.n_heads, head_dim).transpose(1, 2)
        k, v = self.to_kv(context).view(batch, -1, 2, self.n_heads, head_dim).permute(2, 0, 3, 1, 4)
        if rope is not None:
            q, k = apply_rope(q, *rope), apply_rope(k, *rope)
        dropout_p = self.attn_dropout if self.training else 0.0
        if dropout_p == 0.0 and q.device.type == "cpu" and torch.is_autocast_enabled("cpu"):
            # Without dropout the CPU runs a fused attention kernel whose bf16 backward is ~4x slower than its
            # fp32 one (torch 2.13; docs/benchmarks.md, training speed), so under bf16 autocast the attention
            # itself stays in fp32 and only the projections around it run in bf16.
            with torch.autocast("cpu", enabled=False):
                y = F.scaled_dot_product_attention(q.float(), k.float(), v.float(), attn_mask=attn_mask)
        else:
            y = F.scaled_dot_product_attention(q, k, v, attn_mask=attn_mask, dropout_p=dropout_p)
        return self.resid_dropout(self.proj(y.transpose(1, 2).reshape(batch, n_query, d_model)))


class FeedForward(nn.Module):
    """Position-wise FFN d -> hidden -> d with GELU and dropout."""

    def __init__(self, d_model: int, hidden: int, dropout: float) -> None:
        super().__init__()
        self.net = nn.Sequential(
            nn.Linear(d_model, hidden), nn.GELU(), nn.Linear(hidden, d_model), nn.Dropout(dropout)
        )

    def forward(self, x: Tensor) -> Tensor:
        return self.net(x)


class TransformerLayer(nn.Module):
    """Pre-LayerNorm encoder layer; the paper does not say pre/post-norm, pre-norm trains 18 layers stably."""

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        self.norm_attn = nn.LayerNorm(config.d_model)
        self.attn = MultiHeadAttention(config.d_model, config.n_heads, config.dropout)
        self.norm_ffn = nn.LayerNorm(config.d_model)
        self.ffn = FeedForward(config.d_model, config.ffn_dim, config.dropout)

    def forward(self, x: Tensor, attn_mask: Tensor, rope: tuple[Tensor, Tensor]) -> Tensor:
        h = self.norm_attn(x)
        x = x + self.attn(h, h, attn_mask, rope)
        return x + self.ffn(self.norm_ffn(x))


class TransformerEncoder(nn.Module):
    """n_layers RoPE Transformer layers with key padding mask, then a final LayerNorm (A.3)."""

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        self.config = config
        self.layers = nn.ModuleList(TransformerLayer(config) for _ in range(config.n_layers))
        self.norm = nn.LayerNorm(config.d_model)

    def forward(self, tokens: Tensor, valid: Tensor) -> Tensor:
        head_dim = self.config.d_model // self.config.n_heads
        rope = rope_tables(tokens.shape[1], head_dim, self.config.rope_base, tokens.device)
        attn_mask = key_padding_mask(valid)
        x = tokens
        for layer in self.layers:
            x = layer(x, attn_mask, rope)
        return self.norm(x)


class TokenConvBlock(nn.Module):
    """conv(k, dilation) -> GELU -> dropout -> conv(k, dilation), residual; invalid tokens held at zero (A.3)."""

    def __init__(self, d_model: int, kernel_size: int, dilation: int, dropout: float) -> None:
        super().__init__()
        padding = dilation * (kernel_size - 1) // 2
        self.conv1 = nn.Conv1d(d_model, d_model, kernel_size, dilation=dilation, padding=padding)
        self.conv2 = nn.Conv1d(d_model, d_model, kernel_size, dilation=dilation, padding=padding)
        self.dropout = nn.Dropout(dropout)

    def forward(self, h: Tensor, keep: Tensor) -> Tensor:
        # Masking after conv1 as well as after the block (A.3) stops conv1's bias at invalid tokens from
        # reaching valid ones through conv2: each convolution sees exactly zero-padding at invalid tokens.
        u = self.dropout(F.gelu(self.conv1(h)) * keep)
        return (h + self.conv2(u)) * keep


class TokenCNNEncoder(nn.Module):
    """n_layers masked residual dilated conv blocks over tokens, dilations cycling, final LayerNorm (A.3)."""

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        cycle = config.token_cnn_dilations
        self.blocks = nn.ModuleList(
            TokenConvBlock(
                config.d_model, config.token_cnn_kernel_size, cycle[i % len(cycle)], config.dropout
            )
            for i in range(config.n_layers)
        )
        self.norm = nn.LayerNorm(config.d_model)

    def forward(self, tokens: Tensor, valid: Tensor) -> Tensor:
        keep = valid[:, None, :].to(tokens.dtype)
        h = tokens.transpose(1, 2) * keep
        for block in self.blocks:
            h = block(h, keep)
        return self.norm(h.transpose(1, 2))


def build_encoder(config: ModelConfig) -> nn.Module:
    """The encoder named by `config.encoder`."""
    return TransformerEncoder(config) if config.encoder == "transformer" else TokenCNNEncoder(config)
