"""The ln d input axis (xrdmodels.models.axis) against a brute-force rebinning and Bragg's law."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from xrdmodels.config import preset
from xrdmodels.models import SpaceGroupModel
from xrdmodels.models.axis import LogDRebin, log_d_edges_in_bins

LO_DEG, HI_DEG, N_BINS, N_LOG = 5.0, 120.0, 512, 700
CU_KA_ANGSTROM = 1.54184


def naive_rebin(values: np.ndarray, measured: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Each ln-d bin's edges from ln sinθ by hand, then the overlap of every 2θ bin with it, in float64:
    (mean of the measured intensity it covers, measured share of it)."""
    bin_deg = (HI_DEG - LO_DEG) / N_BINS
    lo = math.log(math.sin(math.radians(LO_DEG / 2)))
    hi = math.log(math.sin(math.radians(HI_DEG / 2)))
    edges_deg = [2 * math.degrees(math.asin(math.exp(lo + (hi - lo) * j / N_LOG))) for j in range(N_LOG + 1)]
    mean = np.zeros(N_LOG)
    share = np.zeros(N_LOG)
    for j in range(N_LOG):
        a, b = edges_deg[j], edges_deg[j + 1]
        area = covered = 0.0
        for i in range(N_BINS):
            overlap = min(b, LO_DEG + (i + 1) * bin_deg) - max(a, LO_DEG + i * bin_deg)
            if overlap > 0 and measured[i]:
                area += overlap * values[i]
                covered += overlap
        mean[j] = area / covered if covered > 0 else 0.0
        share[j] = covered / (b - a)
    return mean, share


def test_rebin_matches_brute_force_overlaps() -> None:
    rng = np.random.default_rng(0)
    values = rng.gamma(0.5, 1.0, (3, N_BINS))
    masks = np.zeros((3, N_BINS), dtype=bool)
    masks[0] = True
    masks[1, 37:401] = True  # a window inside the grid
    masks[2, 200:201] = True  # a single measured bin
    rebin = LogDRebin(LO_DEG, HI_DEG, N_BINS, N_LOG)
    got, got_mask = rebin(torch.tensor(values, dtype=torch.float32), torch.tensor(masks))
    assert got.shape == (3, N_LOG) and got.dtype == torch.float32 and got_mask.dtype == torch.bool
    for row in range(3):
        mean, share = naive_rebin(values[row], masks[row])
        np.testing.assert_allclose(got[row].numpy(), mean, rtol=1e-5, atol=1e-6)
        np.testing.assert_array_equal(got_mask[row].numpy(), share >= 0.5 - 1e-9)


def test_rebin_conserves_integrated_intensity() -> None:
    rng = np.random.default_rng(1)
    values = torch.tensor(rng.gamma(0.5, 1.0, (2, N_BINS)))
    mask = torch.ones_like(values, dtype=torch.bool)
    got, _ = LogDRebin(LO_DEG, HI_DEG, N_BINS, N_LOG)(values, mask)
    widths = torch.diff(log_d_edges_in_bins(LO_DEG, HI_DEG, N_BINS, N_LOG))
    torch.testing.assert_close((got * widths).sum(-1), values.sum(-1), rtol=1e-12, atol=0.0)


def peak_pattern(d_spacings_angstrom: list[float], n_bins: int) -> torch.Tensor:
    """Narrow Gaussian peaks (0.02° σ) at the Cu Kα Bragg angles of the given d-spacings, on the 2θ grid."""
    centres = LO_DEG + (HI_DEG - LO_DEG) / n_bins * (torch.arange(n_bins, dtype=torch.float64) + 0.5)
    pattern = torch.zeros(n_bins, dtype=torch.float64)
    for d in d_spacings_angstrom:
        two_theta = 2 * math.degrees(math.asin(CU_KA_ANGSTROM / (2 * d)))
        pattern += torch.exp(-0.5 * ((centres - two_theta) / 0.02) ** 2)
    return pattern.unsqueeze(0)


@pytest.mark.parametrize("scale", [1.0, 1.04, 1.13])
def test_scaled_cell_moves_the_whole_pattern_by_ln_scale(scale: float) -> None:
    """Bragg: a cell scaled by s scales every d by s, so each peak lands ln(s)/Δ bins lower on the ln d axis."""
    n_bins, n_log = 4096, 4096
    rebin = LogDRebin(LO_DEG, HI_DEG, n_bins, n_log)
    step = (
        math.log(math.sin(math.radians(HI_DEG / 2))) - math.log(math.sin(math.radians(LO_DEG / 2)))
    ) / n_log
    base = [4.1, 2.9, 2.05, 1.67, 1.29]  # well apart, all inside 5-120° at Cu Kα
    mask = torch.ones(1, n_bins, dtype=torch.bool)
    reference, _ = rebin(peak_pattern(base, n_bins), mask)
    scaled, _ = rebin(peak_pattern([d * scale for d in base], n_bins), mask)
    shift = math.log(scale) / step

    def peak_bins(row: torch.Tensor) -> list[float]:
        """Intensity-weighted centre of each peak (its bins within 30 of its maximum)."""
        row = row[0].double()
        found = []
        work = row.clone()
        for _ in base:
            top = int(work.argmax())
            lo, hi = max(top - 30, 0), min(top + 31, row.numel())
            weights = row[lo:hi]
            found.append(float((weights * torch.arange(lo, hi)).sum() / weights.sum()))
            work[lo:hi] = 0.0
        return sorted(found)

    moved = np.array(peak_bins(reference)) - np.array(peak_bins(scaled))
    np.testing.assert_allclose(moved, shift, atol=0.5)


def test_model_on_the_log_d_axis() -> None:
    config = preset("small", encoder="cnn", head="presence", n_bins=256, input_axis="log_d", log_d_bins=320)
    assert config.axis_bins == 320 and config.n_tokens == 20
    model = SpaceGroupModel(config).eval()
    x = torch.rand(2, 256)
    mask = torch.zeros(2, 256, dtype=torch.bool)
    mask[:, 40:200] = True
    out = model(x, mask)
    assert out.set_probs.shape == (2, 230) and torch.isfinite(out.set_probs).all()
    # Unmeasured bins never reach the network, on this axis as on 2θ.
    noisy = x.clone()
    noisy[:, :40] = 100.0
    torch.testing.assert_close(model(noisy, mask).set_probs, out.set_probs)
    with pytest.raises(ValueError, match="n_bins=256"):
        model(torch.rand(2, 320), torch.ones(2, 320, dtype=torch.bool))
