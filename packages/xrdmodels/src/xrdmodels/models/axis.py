"""The model's input axis (not in the paper): the stores' 2θ grid, or a grid uniform in ln d.

A crystal whose cell is scaled by s has every d-spacing scaled by s, so on a ln d axis its whole pattern moves by
ln s as one piece, while on the 2θ axis each peak moves by its own amount (Δ2θ ∝ tan θ). Isotypes of one
structure type (garnets, spinels, rock salts of different cations) differ mainly by such a scale: on ln d their
patterns differ by a shift, which the convolutions see as the same motifs (docs/physics.md, "The model's input
axis"). The stores stay on their 2θ grid; the model resamples each pattern inside `SpaceGroupModel.forward`,
so training, `predict` and `score-measured` see the same axis.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn


def log_d_edges_in_bins(
    two_theta_min_deg: float, two_theta_max_deg: float, n_bins: int, n_log_bins: int
) -> Tensor:
    """Edges of `n_log_bins` bins uniform in ln sin θ (= ln λ/2 - ln d) between the 2θ grid's bounds, in
    fractional bins of the 2θ grid (0 = its lower edge, n_bins = its upper edge): float64 (n_log_bins + 1,),
    increasing, so the new bins keep the 2θ grid's order (decreasing d)."""
    lo = math.log(math.sin(math.radians(two_theta_min_deg) / 2.0))
    hi = math.log(math.sin(math.radians(two_theta_max_deg) / 2.0))
    log_sin = torch.linspace(lo, hi, n_log_bins + 1, dtype=torch.float64)
    two_theta_deg = torch.rad2deg(2.0 * torch.asin(torch.exp(log_sin).clamp(max=1.0)))
    bin_width_deg = (two_theta_max_deg - two_theta_min_deg) / n_bins
    edges = (two_theta_deg - two_theta_min_deg) / bin_width_deg
    edges[0], edges[-1] = 0.0, float(n_bins)
    return edges


class LogDRebin(nn.Module):
    """Area-conserving rebinning from the 2θ grid onto `log_d_edges_in_bins`: each new bin holds the mean
    intensity of the measured 2θ grid it covers (the pattern taken as constant within each 2θ bin), so
    integrated intensities are kept where the new bins are wider and values are repeated where they are
    narrower. A new bin is measured when at least half of what it covers was measured.

    forward(x (B, N) float, mask (B, N) bool) -> (x (B, M) float, mask (B, M) bool).
    """

    def __init__(
        self, two_theta_min_deg: float, two_theta_max_deg: float, n_bins: int, n_log_bins: int
    ) -> None:
        super().__init__()
        edges = log_d_edges_in_bins(two_theta_min_deg, two_theta_max_deg, n_bins, n_log_bins)
        index = edges.floor().long().clamp(0, n_bins - 1)
        self.n_bins = n_bins
        self.register_buffer("edge_index", index, persistent=False)
        self.register_buffer("edge_fraction", edges - index, persistent=False)

    def _cumulative(self, values: Tensor) -> Tensor:
        """Integral of the piecewise-constant `values` (B, N) from 0 to each edge: (B, M + 1), float64."""
        values = values.double()
        prefix = torch.nn.functional.pad(torch.cumsum(values, dim=-1), (1, 0))
        return prefix[:, self.edge_index] + self.edge_fraction * values[:, self.edge_index]

    def forward(self, x: Tensor, mask: Tensor) -> tuple[Tensor, Tensor]:
        if x.shape[-1] != self.n_bins:
            raise ValueError(
                f"pattern must have n_bins={self.n_bins} bins of the 2θ grid, got {tuple(x.shape)}"
            )
        measured = mask.to(torch.float64)
        area = torch.diff(self._cumulative(x * mask), dim=-1)
        covered = torch.diff(self._cumulative(measured), dim=-1)
        width = torch.diff(self.edge_fraction + self.edge_index)
        mean = torch.where(covered > 0, area / covered.clamp(min=1e-12), 0.0)
        return mean.to(x.dtype), covered >= 0.5 * width
