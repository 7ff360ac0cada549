"""SNIP background removal at the model's input (xrdmodels.models.background) against a naive loop and physics."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from xrdmodels.config import preset
from xrdmodels.models import SpaceGroupModel
from xrdmodels.models.background import remove_background, snip_background, window_percentile


def naive_snip(values: np.ndarray, first: int, last: int, half_width: int) -> np.ndarray:
    """SNIP as written in Ryan et al. (1988), bin by bin in float64; beyond [first, last] a neighbour is the
    odd reflection about the end bin, floored at 0."""
    v = values.astype(np.float64).copy()

    def neighbour(v: np.ndarray, j: int) -> float:
        if j < first:
            return max(2.0 * v[first] - v[min(2 * first - j, last)], 0.0)
        if j > last:
            return max(2.0 * v[last] - v[max(2 * last - j, first)], 0.0)
        return v[j]

    for p in range(1, half_width + 1):
        new = v.copy()
        for i in range(first, last + 1):
            new[i] = min(v[i], 0.5 * (neighbour(v, i - p) + neighbour(v, i + p)))
        v = new
    out = np.zeros_like(v)
    out[first : last + 1] = v[first : last + 1]
    return out


def windows_batch(
    rng: np.random.Generator, n_bins: int
) -> tuple[torch.Tensor, torch.Tensor, list[tuple[int, int]]]:
    windows = [(0, n_bins), (17, 240), (100, 101), (5, n_bins), (0, 0), (31, 90)]
    x = torch.tensor(rng.gamma(0.5, 1.0, (len(windows), n_bins)), dtype=torch.float32)
    mask = torch.zeros(len(windows), n_bins, dtype=torch.bool)
    for row, (lo, hi) in enumerate(windows):
        mask[row, lo:hi] = True
    return x, mask, windows


def test_snip_matches_the_naive_loop_on_every_window_shape():
    x, mask, windows = windows_batch(np.random.default_rng(0), 256)
    background = snip_background(x, mask, 9).numpy()
    for row, (lo, hi) in enumerate(windows):
        if hi == lo:
            assert not background[row].any()
            continue
        expected = naive_snip(x[row].numpy(), lo, hi - 1, 9)
        np.testing.assert_allclose(background[row], expected, atol=2e-6, err_msg=f"window {lo}..{hi}")
        assert np.all(background[row, lo:hi] <= x[row, lo:hi].numpy() + 1e-7)


def test_window_percentile_matches_numpy():
    x, mask, windows = windows_batch(np.random.default_rng(1), 256)
    got = window_percentile(x, mask, 99.0).squeeze(-1).numpy()
    for row, (lo, hi) in enumerate(windows):
        expected = np.percentile(x[row, lo:hi].numpy(), 99.0) if hi > lo else 0.0
        assert got[row] == pytest.approx(expected, rel=1e-6), (lo, hi)


def gaussian(two_theta: np.ndarray, center: float, fwhm: float) -> np.ndarray:
    return np.exp(-4.0 * np.log(2.0) * (two_theta - center) ** 2 / fwhm**2)


def test_snip_removes_curvature_and_air_scatter_keeps_bragg_peaks_and_part_of_a_hump():
    """The default 1° half-width on peaks of 0.15-1.2° FWHM (training reaches ~1°) over the lab recipe's
    background terms: the log-Chebyshev curvature and the air scatter are recovered between the peaks, every
    peak keeps its height, and an 8°-wide amorphous hump is concave, so SNIP clips into it: only part of it is
    taken as background (docs/physics.md)."""
    step = 0.02
    two_theta = np.arange(10.0, 90.0, step)
    centers = np.array([18.0, 27.5, 33.0, 41.0, 52.5, 61.0, 74.0, 83.0])
    fwhms = np.array([0.15, 0.3, 0.5, 0.8, 1.0, 1.2, 0.8, 1.0])
    heights = np.array([1.0, 0.3, 0.6, 0.15, 0.8, 0.4, 0.25, 0.5])
    peaks = sum(h * gaussian(two_theta, c, f) for h, c, f in zip(heights, centers, fwhms, strict=True))
    u = (two_theta - 50.0) / 40.0
    smooth = 0.2 * np.exp(0.5 * u - 0.3 * u**2) + 0.5 * np.exp(-(two_theta - 10.0) / 3.0)
    hump = 0.25 * gaussian(two_theta, 25.0, 8.0)
    grid = preset("cpu", n_bins=4000, two_theta_min_deg=10.0, two_theta_max_deg=90.0)
    assert grid.background_half_width_bins == round(1.0 / step)
    mask = torch.ones(1, len(two_theta), dtype=torch.bool)
    far_from_peaks = np.all(np.abs(two_theta[:, None] - centers) > 2.5, axis=1)
    at_peaks = np.searchsorted(two_theta, centers)

    x = torch.tensor(peaks + smooth, dtype=torch.float32)[None]
    background = snip_background(x, mask, 50)[0].numpy()
    assert np.abs(background - smooth)[far_from_peaks].max() < 0.006
    np.testing.assert_allclose((x[0].numpy() - background)[at_peaks], heights, rtol=0.06)

    x = torch.tensor(peaks + smooth + hump, dtype=torch.float32)[None]
    left_of_hump = (x[0].numpy() - snip_background(x, mask, 50)[0].numpy())[np.searchsorted(two_theta, 25.0)]
    assert 0.05 < left_of_hump < 0.15  # of the hump's 0.25


def test_remove_background_is_blind_to_an_added_linear_baseline_up_to_the_window_edges():
    step = 0.05
    two_theta = np.arange(5.0, 120.0, step)
    peaks = sum(gaussian(two_theta, c, 0.3) * h for c, h in [(30.0, 1.0), (45.0, 0.5), (70.0, 0.7)])
    ramp = 0.4 - 0.003 * (two_theta - 5.0)
    x = torch.tensor(np.stack([peaks, peaks + ramp]), dtype=torch.float32)
    mask = torch.zeros_like(x, dtype=torch.bool)
    mask[:, 100:1500] = True
    clean, with_ramp = remove_background(x, mask, 40).numpy()
    np.testing.assert_allclose(with_ramp, clean, atol=1e-5)
    assert not with_ramp[:100].any() and not with_ramp[1500:].any()
    assert np.percentile(clean[100:1500], 99.0) == pytest.approx(1.0, rel=1e-5)


def test_model_with_snip_sees_raw_and_background_subtracted_patterns_alike():
    """The point of doing it in the model: a pattern with a smooth background and the same pattern already
    background-subtracted (a database export) give the same predictions."""
    config = preset("small", background_removal="snip", background_half_width_deg=2.0)
    assert config.background_half_width_bins == round(2.0 / (115.0 / config.n_bins))
    torch.manual_seed(0)
    model = SpaceGroupModel(config).eval()
    two_theta = config.two_theta_min_deg + (np.arange(config.n_bins) + 0.5) * 115.0 / config.n_bins
    peaks = sum(gaussian(two_theta, c, 0.4) * h for c, h in [(28.0, 1.0), (47.0, 0.6), (56.0, 0.4)])
    baseline = 0.3 * np.exp(-(((two_theta - 60.0) / 50.0) ** 2))
    mask = torch.zeros(2, config.n_bins, dtype=torch.bool)
    mask[:, 200:1400] = True
    x = torch.tensor(np.stack([peaks, peaks + baseline]), dtype=torch.float32)
    with torch.no_grad():
        probs = model(x, mask).set_probs
        plain = SpaceGroupModel(config.model_copy(update={"background_removal": "none"})).eval()
        plain.load_state_dict(model.state_dict())
        plain_probs = plain(x, mask).set_probs
    assert torch.allclose(probs[0], probs[1], atol=2e-3)
    assert not torch.allclose(plain_probs[0], plain_probs[1], atol=2e-3)


SCALES = {
    "sqrt": lambda v: np.sign(v) * np.sqrt(np.abs(v)),
    "log": lambda v: np.sign(v) * np.log(1.0 + np.abs(v) / 0.01) / np.log(101.0),
}


@pytest.mark.parametrize("scale", sorted(SCALES))
@pytest.mark.parametrize("background_removal", ["none", "snip"])
def test_intensity_scale_feeds_the_network_the_signed_transform(background_removal, scale):
    """intensity_scale 'sqrt' ('log') is the linear model fed sign(x)·sqrt(|x|) (sign(x)·ln(1 + |x|/0.01)/ln 101)
    of what it would otherwise see (after the background removal; a negative bin keeps its sign), computed here
    with numpy."""
    config = preset("small", background_removal=background_removal, intensity_scale=scale)
    torch.manual_seed(0)
    model = SpaceGroupModel(config).eval()
    linear = SpaceGroupModel(config.model_copy(update={"intensity_scale": "linear"})).eval()
    linear.load_state_dict(model.state_dict())
    rng = np.random.default_rng(0)
    x = torch.tensor(rng.normal(0.2, 0.5, size=(2, config.n_bins)) ** 2 - 0.05, dtype=torch.float32)
    mask = torch.zeros(2, config.n_bins, dtype=torch.bool)
    mask[0, 100:1800] = True
    mask[1, 400:1200] = True
    with torch.no_grad():
        seen = (
            remove_background(x, mask, config.background_half_width_bins)
            if background_removal == "snip"
            else x
        )
        seen = seen.numpy().astype(np.float64)
        rooted = torch.tensor(SCALES[scale](seen), dtype=torch.float32)
        probs = model(x, mask).set_probs
        no_background = linear.config.model_copy(update={"background_removal": "none"})
        reference = SpaceGroupModel(no_background).eval()
        reference.load_state_dict(model.state_dict())
        expected = reference(rooted, mask).set_probs
        assert (seen > 1).any() and (background_removal == "snip" or (seen < 0).any())
        torch.testing.assert_close(probs, expected, atol=1e-5, rtol=1e-4)
        assert not torch.allclose(probs, linear(x, mask).set_probs, atol=1e-4)
