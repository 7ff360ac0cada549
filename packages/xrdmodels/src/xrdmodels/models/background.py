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
    the odd reflection about the window's end bin, v_{lo-k} = max(2 v_lo - v_{lo+min(k, n-1)}, 0) (n bins in the
    window; likewise at the high end): a sloped baseline continues straight instead of being clipped at the edge
    (a constant continuation would clip a falling air scatter at the window start), and unmeasured bins never
    enter. x: (B, N) float; mask: (B, N) bool, a contiguous window per row. Returns (B, N) with
    background <= x inside the window and 0 outside.
    """
    p_max = half_width_bins
    batch, n_bins = x.shape
    first, last = window_bounds(mask)
    n = torch.where(mask.any(dim=-1), last - first + 1, 1).unsqueeze(-1)
    # Every row shifted so that its window starts at column p_max, with p_max columns of room before it and
    # after the longest window: the neighbours of every iteration are then two plain slices, and only the 2·p_max
    # reflected columns need per-row indexing. One gather in, one out.
    columns = torch.arange(n_bins + 2 * p_max, device=x.device)
    source = (first.unsqueeze(-1) + columns - p_max).clamp(0, n_bins - 1)
    v = torch.gather(torch.where(mask, x.float(), 0.0), -1, source)
    k = torch.arange(1, p_max + 1, device=x.device).expand(batch, -1)
    reach = torch.minimum(k, n - 1)
    left_source = p_max + reach.flip(-1)  # column p_max - k reflects column p_max + min(k, n - 1)
    high = p_max + n - 1  # the window's last column
    right_column = high + k
    right_source = high - reach
    for p in range(1, p_max + 1):
        v[:, :p_max] = (2.0 * v[:, p_max : p_max + 1] - v.gather(-1, left_source)).clamp_min(0.0)
        v.scatter_(-1, right_column, (2.0 * v.gather(-1, high) - v.gather(-1, right_source)).clamp_min(0.0))
        inner = v[:, p_max : p_max + n_bins]
        inner.copy_(
            torch.minimum(
                inner, 0.5 * (v[:, p_max - p : p_max - p + n_bins] + v[:, p_max + p : p_max + p + n_bins])
            )
        )
    back = (torch.arange(n_bins, device=x.device) - first.unsqueeze(-1) + p_max).clamp(
        0, n_bins + 2 * p_max - 1
    )
    return torch.where(mask, torch.gather(v, -1, back), 0.0)


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
