"""Peak-profile primitives (A.1): TCH widths, stick deposition, exact bin-integrated rendering, LUT convolution."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy.integrate import quad

from xrdsynth import _profile_kernels as kernels
from xrdsynth.config import GridConfig, RecipeConfig
from xrdsynth.profiles import (
    build_width_lut,
    deposit_sticks,
    pseudo_voigt_density,
    render_pseudo_voigt,
    render_pseudo_voigt_lut,
    stick_fwhm_eta_deg,
    tch_fwhm_eta,
)

GRID = GridConfig()


def test_tch_hand_computed_values():
    # G = L = 1: H = (1 + 2.69269 + 2.42843 + 4.47163 + 0.07842 + 1)^(1/5) = 11.67117^0.2 = exp(0.2·2.457121) = 1.634643;
    # q = 1/H = 0.611754, η = 1.36603 q - 0.47719 q² + 0.11116 q³ = 0.835676 - 0.178586 + 0.025450 = 0.682540.
    fwhm, eta = tch_fwhm_eta(1.0, 1.0)
    assert fwhm == pytest.approx(1.634643, abs=2e-6)
    assert eta == pytest.approx(0.682540, abs=2e-6)
    # Pure Gaussian and pure Lorentzian limits: H is the component FWHM, η = 0 and 1.36603 - 0.47719 + 0.11116 = 1.
    assert tch_fwhm_eta(0.3, 0.0) == pytest.approx((0.3, 0.0))
    assert tch_fwhm_eta(0.0, 0.3) == pytest.approx((0.3, 1.0), abs=1e-12)
    # H is homogeneous of degree 1 and η depends only on the ratio.
    assert tch_fwhm_eta(0.2, 0.2) == pytest.approx((0.2 * 1.634643, 0.682540), abs=2e-6)


def test_tch_kernel_matches_numpy_api():
    rng = np.random.default_rng(0)
    g, lo = rng.uniform(0, 1, 50), rng.uniform(0, 1, 50)
    fwhm, eta = tch_fwhm_eta(g, lo)
    for i in range(50):
        assert kernels.tch_fwhm_eta(g[i], lo[i]) == pytest.approx((fwhm[i], eta[i]), rel=1e-12)


def test_fast_erf_and_atan_meet_their_stated_bounds():
    # The engine's branch-free approximations against libm, densely over the whole range that matters.
    x = np.concatenate([np.linspace(-6.0, 6.0, 240_001), [0.0, 4.6, -4.6, 1e-9]])
    erf_error = max(abs(kernels.erf_fast(v) - math.erf(v)) for v in x[::7])
    assert erf_error < 1e-10
    z = np.concatenate(
        [np.linspace(-3.0, 3.0, 60_001), np.geomspace(1.0, 1e8, 20_001), -np.geomspace(1e-9, 1e8, 101)]
    )
    atan_error = max(abs(kernels.atan_fast(v) - math.atan(v)) for v in z[::3])
    assert atan_error < 2.5e-11
    # Monotone: bin values (CDF differences) are never negative beyond rounding.
    values = np.array([kernels.erf_fast(v) for v in np.linspace(0.0, 4.6, 20_001)])
    assert (np.diff(values) >= -1e-15).all()


def test_width_formulas():
    # 2θ = 90°: tanθ = 1, cosθ = 1/√2. Each term alone (a 1 m crystallite has no size broadening to speak of).
    def widths(**terms):
        fwhm, eta, lorentz = stick_fwhm_eta_deg(
            90.0, **{"microstrain": 0.0, "crystallite_size_nm": 1e9, **terms}
        )
        return fwhm[0], eta[0], lorentz[0]

    assert widths(microstrain=0.001)[0] == pytest.approx(math.degrees(4 * 0.001), rel=1e-6)
    scherrer = math.degrees(0.9 * 0.154184 / 100 * math.sqrt(2))
    fwhm, eta, lorentz = widths(crystallite_size_nm=100.0)
    assert (
        lorentz == pytest.approx(scherrer)
        and fwhm == pytest.approx(scherrer)
        and eta == pytest.approx(1.0, abs=1e-4)
    )
    assert widths(caglioti_u_deg2=0.004, caglioti_w_deg2=0.002)[0] == pytest.approx(
        math.sqrt(0.006), rel=1e-6
    )
    # Both together, in quadrature, against the TCH polynomial written out.
    fwhm, eta, lorentz = widths(microstrain=0.001, caglioti_w_deg2=0.002, crystallite_size_nm=100.0)
    g, lo = math.hypot(math.degrees(0.004), math.sqrt(0.002)), scherrer
    expected = (
        g**5
        + 2.69269 * g**4 * lo
        + 2.42843 * g**3 * lo**2
        + 4.47163 * g**2 * lo**3
        + 0.07842 * g * lo**4
        + lo**5
    ) ** 0.2
    assert fwhm == pytest.approx(expected, rel=1e-12)


@pytest.mark.parametrize("fwhm_deg", [0.01, 0.08, 0.6])
@pytest.mark.parametrize("eta", [0.0, 0.4, 1.0])
def test_exact_rendering_conserves_area(fwhm_deg, eta):
    center = 61.37
    profile = render_pseudo_voigt(center, 2.5, fwhm_deg, eta, GRID, tail_tolerance=1e-12)
    # Expected: the analytic mass of the pseudo-Voigt inside the grid (Lorentzian tails leave the grid).
    lo, hi = GRID.two_theta_min_deg - center, GRID.two_theta_max_deg - center
    sigma = fwhm_deg / (2 * math.sqrt(2 * math.log(2)))
    gauss = 0.5 * (math.erf(hi / (sigma * math.sqrt(2))) - math.erf(lo / (sigma * math.sqrt(2))))
    lorentz = (math.atan(hi / (fwhm_deg / 2)) - math.atan(lo / (fwhm_deg / 2))) / math.pi
    assert profile.sum() == pytest.approx(2.5 * ((1 - eta) * gauss + eta * lorentz), rel=1e-9)


@pytest.mark.parametrize("fwhm_deg, eta", [(0.03, 0.3), (0.12, 0.7), (0.5, 0.5)])
def test_exact_rendering_matches_fine_sampling(fwhm_deg, eta):
    center = 47.123
    profile = render_pseudo_voigt(center, 1.0, fwhm_deg, eta, GRID, tail_tolerance=1e-12)
    sub = 400
    x = GRID.two_theta_min_deg + GRID.bin_width_deg * (np.arange(GRID.n_bins * sub) + 0.5) / sub
    sampled = pseudo_voigt_density(x, center, fwhm_deg, eta).reshape(GRID.n_bins, sub).mean(axis=1)
    sampled *= GRID.bin_width_deg
    np.testing.assert_allclose(profile, sampled, rtol=2e-4, atol=1e-9)


def test_tail_tolerance_bounds_the_truncation():
    center, fwhm, eta = 70.0, 0.1, 0.8
    full = render_pseudo_voigt(center, 1.0, fwhm, eta, GRID, tail_tolerance=1e-14)
    cut = render_pseudo_voigt(center, 1.0, fwhm, eta, GRID, tail_tolerance=1e-5)
    # Dropped bins each held less than the tolerance (to the far-tail approximation, hence the factor 1.1).
    assert np.abs(full - cut).max() < 1.1e-5
    assert np.count_nonzero(cut) < np.count_nonzero(full)


@pytest.mark.parametrize("eta", [0.0, 0.45, 1.0])
@pytest.mark.parametrize("box_fwhm", [0.05, 1.0, 25.0])
def test_box_convolved_rendering_matches_quadrature(eta, box_fwhm):
    # Independent route: each bin's integral of the box convolution is (1/B)∫ over the box of the line's bin
    # integral shifted by t, by adaptive quadrature of the exact CDF; the kernel takes second differences of the
    # CDF antiderivatives. The window [40, 300) clips the support on the left.
    center, area, fwhm = GRID.two_theta_min_deg + 45.3 * GRID.bin_width_deg, 1.7, 0.09
    box = box_fwhm * fwhm
    sigma = fwhm / (2 * math.sqrt(2 * math.log(2)))

    def cdf(x: float) -> float:
        gauss = 0.5 * (1 + math.erf(x / (sigma * math.sqrt(2))))
        return area * ((1 - eta) * gauss + eta * (0.5 + math.atan(x / (fwhm / 2)) / math.pi))

    first, end = 40, 300

    def render(tolerance: float) -> np.ndarray:
        out = np.zeros(GRID.n_bins)
        lo, width = GRID.two_theta_min_deg, GRID.bin_width_deg
        scratch = np.zeros(GRID.n_bins + 1)
        kernels.add_box_pseudo_voigt(
            out, scratch, first, end, lo, width, center, area, fwhm, eta, box, tolerance
        )
        return out

    def shifted_bin(t: float, b: int) -> float:
        return cdf(edges[b + 1] - t) - cdf(edges[b] - t)

    out = render(1e-13)
    edges = GRID.two_theta_min_deg + GRID.bin_width_deg * np.arange(GRID.n_bins + 1) - center
    expected = np.zeros(GRID.n_bins)
    for b in range(first, end):
        expected[b] = quad(shifted_bin, -box / 2, box / 2, args=(b,), epsabs=1e-15, limit=200)[0] / box
    np.testing.assert_allclose(out, expected, rtol=0, atol=1e-11 * area)
    assert out[:first].sum() == 0.0 and out[end:].sum() == 0.0
    # Dropped bins each held less than the tolerance.
    cut = render(1e-4)
    assert np.abs(cut - expected).max() < 1e-4
    assert np.count_nonzero(cut) < np.count_nonzero(out)


@pytest.mark.parametrize("a", [0.02, 1.0, 40.0, 900.0])
@pytest.mark.parametrize("step", [0.01, 0.5, 6.0])
def test_box_lorentz_tail_bins_are_exact_to_their_last_digits(a, step):
    # Far out, a bin of the box-convolved Lorentzian (half-widths as unit, box half-width a) is the integral over
    # the bin of atan(z + a) - atan(z - a) = atan(2a / (1 + z² - a²)), a small positive function that quadrature
    # integrates to near machine precision; the kernel's series must match it bin by bin, relatively.
    v = max(kernels.BOX_LORENTZ_TAIL_U, math.sqrt(a * a + 2 * a * step / kernels.BOX_LORENTZ_TAIL_DELTA) - a)
    for u0 in a + v + np.array([0.0, 3.7, 50.0, 4000.0]):
        expected = quad(lambda z: math.atan(2 * a / (1 + z * z - a * a)), u0, u0 + step, epsrel=1e-14)[0]
        for side, lower in ((1, u0), (-1, -u0 - step)):
            assert kernels._box_lorentz_tail_bin(lower, step, a) == pytest.approx(expected, rel=1e-10), side


def test_deposit_sticks_keeps_area_and_centroid():
    rng = np.random.default_rng(3)
    position = np.sort(rng.uniform(6.0, 119.0, 200))
    intensity = rng.uniform(0.1, 100.0, 200)
    dense = deposit_sticks(position, intensity, GRID)
    assert dense.dtype == np.float32 and dense.shape == (GRID.n_bins,)
    assert dense.sum(dtype=np.float64) == pytest.approx(intensity.sum(), rel=1e-6)
    centroid = (dense * GRID.centers_deg()).sum(dtype=np.float64) / dense.sum(dtype=np.float64)
    assert centroid == pytest.approx((position * intensity).sum() / intensity.sum(), rel=1e-6)
    # One stick a quarter bin right of a centre goes 3/4 : 1/4 to that centre and the next.
    one = deposit_sticks(
        np.array([GRID.centers_deg()[100] + 0.25 * GRID.bin_width_deg]), np.array([8.0]), GRID
    )
    np.testing.assert_allclose(one[100:102], [6.0, 2.0], rtol=1e-6)
    assert deposit_sticks(np.array([4.0, 121.0]), np.array([1.0, 1.0]), GRID).sum() == 0.0


def test_lut_tables_hold_unit_area_kernels_at_every_sub_bin_position():
    lut = build_width_lut(RecipeConfig(lut_levels=4), GRID, 1e-5)
    n_subbin = kernels.LUT_SUBBIN_PHASES
    assert lut.gauss_table.shape == lut.lorentz_table.shape == (4, n_subbin + 1, 2 * lut.max_offset + 1)
    np.testing.assert_allclose(lut.gauss_table.sum(axis=2), 1.0, rtol=0, atol=1e-9)
    # The Lorentzian rows stop max_offset bins out: their area is the arctan mass inside.
    gamma_bins = lut.fwhm_levels_deg[:, None] / 2 / GRID.bin_width_deg
    center = np.arange(n_subbin + 1)[None, :] / n_subbin
    inside = (
        np.arctan((lut.max_offset + 1 - center) / gamma_bins)
        + np.arctan((lut.max_offset + center) / gamma_bins)
    ) / math.pi
    np.testing.assert_allclose(lut.lorentz_table.sum(axis=2), inside, rtol=0, atol=1e-9)
    # The last sub-bin row is the first one a bin on, so that every position has two bracketing rows.
    for table in (lut.gauss_table, lut.lorentz_table):
        np.testing.assert_allclose(table[:, n_subbin, 1:], table[:, 0, :-1], rtol=0, atol=1e-12)


def _lut_peak_error(levels: int) -> float:
    """Largest |LUT - exact| over 40 peaks at random sub-bin positions, relative to the largest bin."""
    lut = build_width_lut(RecipeConfig(lut_levels=levels), GRID, 1e-5)
    rng = np.random.default_rng(5)
    centers = np.sort(rng.uniform(10.0, 110.0, 40))
    fwhm, eta, _ = stick_fwhm_eta_deg(
        centers, microstrain=0.002, crystallite_size_nm=120.0, caglioti_u_deg2=0.002, caglioti_w_deg2=0.0019
    )
    areas = rng.uniform(0.1, 1.0, 40)
    exact = render_pseudo_voigt(centers, areas, fwhm, eta, GRID)
    table = render_pseudo_voigt_lut(centers, areas, fwhm, eta, lut, GRID)
    return float(np.abs(table - exact).max() / exact.max())


def test_lut_peaks_converge_to_exact_rendering_at_any_sub_bin_position():
    # Peaks anywhere in their bin: what is left is the interpolation between FWHM levels (falls as levels⁻²:
    # 7.0e-2, 3.5e-3, 7.6e-4 at 4, 16, 32 levels) and between sub-bin rows (the 4e-4 floor from 64 levels on).
    errors = [_lut_peak_error(levels) for levels in (4, 16, 64)]
    assert errors[0] > errors[1] > errors[2]
    assert errors[2] < 1e-3


def test_softplus_and_percentile_kernels_match_numpy():
    x = np.linspace(-3.0, 3.0, 1201)
    np.testing.assert_allclose([kernels.softplus_(v) for v in x], np.logaddexp(0.0, x), rtol=0, atol=6e-9)
    rng = np.random.default_rng(4)
    for n in (1, 2, 7, 1800):
        values = rng.exponential(size=n)
        for q in (0.0, 50.0, 99.0, 100.0):
            assert kernels.percentile_linear(values, q) == np.percentile(values, q)
