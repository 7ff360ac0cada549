"""Background removal on the model's input (not in the paper): SNIP clipping, inside the model.

Measured patterns arrive with every kind of background (raw scans with curved baselines, amorphous humps and air
scatter; database exports already background-subtracted), and training patterns are drawn with their own. Done
inside `SpaceGroupModel.forward`, the same clipping runs on every training batch and on every pattern that
`predict` and `score-measured` read, so both sides reach the network alike whatever their source did
(docs/physics.md, "Background removal at the model's input").
"""

from __future__ import annotations

import torch
from torch import Tensor


def window_bounds(mask: Tensor) -> tuple[Tensor, Tensor]:
    """First and last measured bin of each row of a contiguous window mask (B, N): two (B,) int64 tensors.

    A row without measured bins gets (0, 0)."""
    n = mask.shape[-1]
    any_measured = mask.any(dim=-1)
    first = torch.argmax(mask.to(torch.uint8), dim=-1)
    last = n - 1 - torch.argmax(mask.flip(-1).to(torch.uint8), dim=-1)
    return torch.where(any_measured, first, 0), torch.where(any_measured, last, 0)


@torch.no_grad()
def snip_background(x: Tensor, mask: Tensor, half_width_bins: int) -> Tensor:
    """SNIP background (Ryan et al. 1988, Nucl. Instrum. Methods B 34, 396; Morháč et al. 1997, NIM A 401, 113).

    For p = 1 .. `half_width_bins`: v_i <- min(v_i, (v_{i-p} + v_{i+p}) / 2). Features narrower than about
    twice the half-width are clipped away; broader ones are kept where they are convex (curvature, air
    scatter) and partly eroded where they are concave (amorphous humps). Run on linear intensity (no
    log-log-sqrt transform), so the estimate scales with the pattern. Beyond the measured window a neighbour is
    the odd reflection about the window's end bin, v_{lo-k} = max(2 v_lo - v_{lo+k}, 0): a sloped baseline
    continues straight instead of being clipped at the edge (a constant continuation would clip a falling air
    scatter at the window start), and unmeasured bins never enter. x: (B, N) float; mask: (B, N) bool, a
    contiguous window per row. Returns (B, N) with background <= x inside the window and 0 outside.
    """
    v = torch.where(mask, x.float(), 0.0)
    first, last = window_bounds(mask)
    idx = torch.arange(x.shape[-1], device=x.device).expand_as(v)
    low, high = first.unsqueeze(-1), last.unsqueeze(-1)
    for p in range(1, half_width_bins + 1):
        v_low, v_high = v.gather(-1, low), v.gather(-1, high)
        left, right = idx - p, idx + p
        below, beyond = left < low, right > high
        left_value = v.gather(-1, torch.where(below, torch.minimum(2 * low - left, high), left.clamp_min(0)))
        right_value = v.gather(
            -1, torch.where(beyond, torch.maximum(2 * high - right, low), right.clamp_max(x.shape[-1] - 1))
        )
        left_value = torch.where(below, (2.0 * v_low - left_value).clamp_min(0.0), left_value)
        right_value = torch.where(beyond, (2.0 * v_high - right_value).clamp_min(0.0), right_value)
        v = torch.minimum(v, 0.5 * (left_value + right_value))
    return torch.where(mask, v, 0.0)


def window_percentile(x: Tensor, mask: Tensor, q: float) -> Tensor:
    """The q-th percentile (0-100) of each row's measured values, numpy's default linear interpolation: (B, 1).

    A row without measured bins gets 0."""
    n = mask.sum(dim=-1, keepdim=True)
    # Unmeasured bins sort after every measured value, so the first n sorted values are the window's.
    ordered = torch.sort(torch.where(mask, x, torch.inf), dim=-1).values
    position = (q / 100.0) * (n - 1).clamp_min(0)
    below = position.floor().long()
    above = torch.minimum(below + 1, (n - 1).clamp_min(0))
    frac = position - below
    low, high = ordered.gather(-1, below), ordered.gather(-1, above)
    value = low + frac * (high - low)
    return torch.where(n > 0, value, 0.0)


def remove_background(x: Tensor, mask: Tensor, half_width_bins: int) -> Tensor:
    """x minus its SNIP background, divided by the 99th percentile of the window as the store's patterns are
    (docs/physics.md, "Normalisation contract"); 0 outside the window."""
    net = torch.where(mask, x.float() - snip_background(x, mask, half_width_bins), 0.0)
    scale = window_percentile(net, mask, 99.0)
    return (net / torch.where(scale > 0, scale, 1.0)).to(x.dtype)
