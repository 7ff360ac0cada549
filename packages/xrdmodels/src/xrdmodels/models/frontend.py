"""1D CNN front-end (A.2) and token conditioning (A.3): pattern (B, N) -> tokens (B, L, d) + valid mask (B, L)."""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from xrdmodels.config import ModelConfig


class MultiScaleDilatedBlock(nn.Module):
    """Multi-scale dilated residual block (A.2).

    Parallel branches Conv1D(k_j, d_j, stride) -> concat -> BN -> GELU -> 1x1 conv to C_out -> dropout,
    plus a shortcut (identity, or a strided 1x1 conv when stride or width changes).
    (B, C_in, L_in) -> (B, C_out, ceil(L_in / stride)).
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        stride: int,
        kernel_sizes: list[int],
        dilations: list[int],
        dropout: float,
    ) -> None:
        super().__init__()
        # Padding d*(k-1)/2 keeps every branch at length ceil(L/stride), so the stride alone sets resolution.
        self.branches = nn.ModuleList(
            nn.Conv1d(in_channels, out_channels, k, stride=stride, dilation=d, padding=d * (k - 1) // 2)
            for k, d in zip(kernel_sizes, dilations, strict=True)
        )
        self.norm = nn.BatchNorm1d(out_channels * len(kernel_sizes))
        self.mix = nn.Conv1d(out_channels * len(kernel_sizes), out_channels, kernel_size=1)
        self.dropout = nn.Dropout(dropout)
        if stride != 1 or in_channels != out_channels:
            self.shortcut: nn.Module = nn.Conv1d(in_channels, out_channels, kernel_size=1, stride=stride)
        else:
            self.shortcut = nn.Identity()

    def forward(self, h: Tensor) -> Tensor:
        u = torch.cat([branch(h) for branch in self.branches], dim=1)
        u = self.dropout(self.mix(F.gelu(self.norm(u))))
        return u + self.shortcut(h)


def angle_fourier_features(scaled_angle: Tensor, n_frequencies: int, max_frequency: float) -> Tensor:
    """sin/cos(π f_j θ̃) for F frequencies f_j spaced geometrically from 1 to `max_frequency`: (..., L) -> (..., 2F).

    θ̃ is 2θ scaled to [-1, 1]. With `max_frequency` near the token count / 2 the finest pair changes sign from
    one token to the next, so every token gets a distinct code; the coarse pairs keep nearby angles similar.
    """
    frequencies = torch.logspace(
        0.0, math.log10(max_frequency), n_frequencies, device=scaled_angle.device, dtype=torch.float32
    )
    phase = math.pi * scaled_angle.float().unsqueeze(-1) * frequencies
    return torch.cat([phase.sin(), phase.cos()], dim=-1).to(scaled_angle.dtype)


class CNNFrontEnd(nn.Module):
    """Strided multi-scale CNN, mask down-sampling and 2θ conditioning (A.2, A.3).

    forward(x (B, N) float, mask (B, N) bool) -> (tokens (B, L, d), valid (B, L) bool), where a token is valid
    when any measured bin falls in its stride window (staged max-pooling of the mask, A.3).
    """

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        self.config = config
        widths = [1, *config.cnn_channels]
        self.blocks = nn.ModuleList(
            MultiScaleDilatedBlock(
                widths[i],
                widths[i + 1],
                stride,
                config.branch_kernel_sizes,
                config.branch_dilations,
                config.cnn_dropout,
            )
            for i, stride in enumerate(config.cnn_strides)
        )
        self.to_tokens = nn.Linear(config.cnn_channels[-1], config.d_model)
        # Conditioning on (scaled token angle, local mask mean); hidden width is not given by the paper (A.3).
        # With angle_encoding 'fourier' the angle enters as 2F Fourier features instead of one scalar: one
        # smooth MLP of a scalar cannot tell tokens a fraction of a degree apart, and a mean-pooled read-out
        # then cannot tell where the peaks are (docs/benchmarks.md, learning ablations).
        n_angle = 1 if config.angle_encoding == "mlp" else 2 * config.angle_frequencies
        self.condition = nn.Sequential(
            nn.Linear(n_angle + 1, config.d_model), nn.GELU(), nn.Linear(config.d_model, config.d_model)
        )
        # Bin-centre 2θ scaled to [-1, 1] by the global grid bounds, pooled to token resolution (A.3). The grid
        # is fixed (A.1), so this is a constant buffer: bin i has centre lo + (i + 1/2) * (hi - lo) / N.
        centres = (torch.arange(config.n_bins, dtype=torch.float32) + 0.5) / config.n_bins
        scaled_angle = self._pool(2.0 * centres - 1.0, F.avg_pool1d)
        self.register_buffer("token_angle", scaled_angle, persistent=False)
        if config.angle_encoding == "fourier":
            angle_code = angle_fourier_features(
                scaled_angle, config.angle_frequencies, max(1.0, config.n_tokens / 2)
            )
        else:
            angle_code = scaled_angle.unsqueeze(-1)
        # (L, n_angle): what the conditioning MLP sees of each token's angle.
        self.register_buffer("angle_code", angle_code, persistent=False)

    def _pool(self, signal: Tensor, pool: Callable[..., Tensor]) -> Tensor:
        """Staged pooling with the CNN strides, rounding lengths up like the convolutions: (..., N) -> (..., L)."""
        out = signal.reshape(-1, 1, signal.shape[-1])
        for stride in self.config.cnn_strides:
            out = pool(out, kernel_size=stride, stride=stride, ceil_mode=True)
        return out.reshape(*signal.shape[:-1], out.shape[-1])

    def forward(self, x: Tensor, mask: Tensor) -> tuple[Tensor, Tensor]:
        if x.ndim != 2 or x.shape[-1] != self.config.n_bins:
            raise ValueError(
                f"pattern must have shape (batch, n_bins={self.config.n_bins}), got {tuple(x.shape)}; "
                "set ModelConfig.n_bins to the data grid length"
            )
        if mask.shape != x.shape or mask.dtype != torch.bool:
            raise ValueError(
                f"mask must be a bool tensor shaped like the pattern {tuple(x.shape)}, "
                f"got {mask.dtype} {tuple(mask.shape)}"
            )
        # Zero unmeasured bins so their content can never reach the network (the paper's x is "after masking").
        h = (x * mask).unsqueeze(1)
        for block in self.blocks:
            h = block(h)
        tokens = self.to_tokens(h.transpose(1, 2))

        mask_f = mask.to(x.dtype)
        valid = self._pool(mask_f, F.max_pool1d) > 0.5
        mask_mean = self._pool(mask_f, F.avg_pool1d)
        angle = self.angle_code.to(x.dtype).expand(*mask_mean.shape, -1)
        tokens = tokens + self.condition(torch.cat([angle, mask_mean.unsqueeze(-1)], dim=-1))
        return tokens, valid
