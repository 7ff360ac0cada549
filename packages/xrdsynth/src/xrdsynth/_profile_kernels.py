"""Numba kernels of the mixture recipe (A.1). Small, pure functions; the typed API lives in profiles.py/recipe.py.

Conventions: angles in degrees 2θ unless a name says otherwise; the grid is uniform with `grid_lo_deg`,
`bin_width_deg`, `n_bins`; bin b covers [grid_lo_deg + b·bin_width_deg, grid_lo_deg + (b+1)·bin_width_deg).
Rendered values are intensity per bin (peak area in the bin), accumulated in float64.

The batch kernels take their inputs grouped in the NamedTuples below (numba compiles attribute access to a
field read), built by keyword in recipe.py: `BinGrid`, `StickTable` (the library), `MixtureDraws` (what was
drawn for each sample), `RecipeConstants` (settings shared by a batch), `WidthTable` (the LUT) and
`Background`. A new augmentation adds a field, not a parameter to every signature. Peak widths come from
one place: `phase_width_factors` (per phase) and `stick_fwhm_eta` (per stick, TCH via `tch_fwhm_eta`).
"""

from __future__ import annotations

import math
from typing import NamedTuple

import numba as nb
import numpy as np

_FWHM_TO_SIGMA = 1.0 / (2.0 * math.sqrt(2.0 * math.log(2.0)))
_SQRT2 = math.sqrt(2.0)
_SQRT_PI = math.sqrt(math.pi)
# erf(4.6) = 1 - 2e-11: beyond this the Gaussian CDF is flat to float64 rendering precision.
_ERF_SATURATION = 4.6
_DEG = math.pi / 180.0

STRONGEST_LINE = 0
TOTAL_INTENSITY = 1
MULTIPLICATIVE = 0
ADDITIVE = 1


class BinGrid(NamedTuple):
    """The uniform 2θ grid of the batch."""

    lo_deg: float  # lower edge of bin 0
    bin_width_deg: float
    span_deg: float  # upper minus lower grid edge: the unit of the normalised angle t


class StickTable(NamedTuple):
    """The library's sticks, concatenated by material, each array float64 (P,) unless noted.

    tanθ, 1/cosθ, sin(πt), cos(πt) are per-stick constants of the library on one grid
    (`PhaseLibrary.stick_table`), so that rendering a stick needs no trigonometric call.
    """

    offsets: np.ndarray  # int64 (M+1,): the sticks of material m are [offsets[m], offsets[m+1])
    two_theta_deg: np.ndarray
    intensity: np.ndarray
    tan_theta: np.ndarray
    sec_theta: np.ndarray
    sin_pi_t: np.ndarray
    cos_pi_t: np.ndarray


class MixtureDraws(NamedTuple):
    """What was drawn for each sample s of a batch of n: (n,) per sample, (n, 5) per phase slot."""

    n_phases: np.ndarray  # int8 (n,)
    material: np.ndarray  # int32 (n, 5), index into the StickTable's materials
    weight: np.ndarray  # (n, 5)
    orientation_coefficients: np.ndarray  # (n, 5, b): strength·c/Σ|c|, all 0 for an unoriented phase
    orientation_mean: np.ndarray  # (n, 5): the envelope's mean over the grid centres
    microstrain: np.ndarray  # (n, 5)
    crystallite_size_nm: np.ndarray  # (n, 5)
    zero_shift_deg: np.ndarray  # (n,)
    caglioti_u_deg2: np.ndarray  # (n,) instrument U + ΔU
    caglioti_v_deg2: np.ndarray  # (n,)
    caglioti_w_deg2: np.ndarray  # (n,)
    tail_tolerance: np.ndarray  # (n,) rendering cut, intensity per bin (recipe.tail_tolerances)


class RecipeConstants(NamedTuple):
    """Recipe settings shared by every sample of a batch."""

    normalization_mode: int  # STRONGEST_LINE or TOTAL_INTENSITY
    orientation_order: int  # Chebyshev terms of the envelope basis, before the sin/cos pairs
    orientation_clip_lo: float
    orientation_clip_hi: float
    strain_fwhm_factor: float
    scherrer_k: float
    wavelength_nm: float


class WidthTable(NamedTuple):
    """The LUT engine's tables (`build_lut_tables`) and their log-spaced FWHM levels."""

    log_fwhm_min: float  # natural log of the smallest level (degrees)
    log_fwhm_step: float  # log ratio of consecutive levels
    gauss: np.ndarray  # (levels, sub-bin positions + 1, 2·max_offset + 1)
    lorentz: np.ndarray


class Background(NamedTuple):
    """Background, noise and normalisation of a batch of n: (n,) per sample unless noted."""

    baseline_coefficients: np.ndarray  # (n, order + 1): softplus argument polynomial in t
    baseline_amplitude: np.ndarray
    floor_offset: np.ndarray
    floor_slope: np.ndarray  # per unit t
    noise_sigma: np.ndarray
    standard_normal: np.ndarray  # float32 (n, n_bins) unit noise
    baseline_mode: int  # MULTIPLICATIVE or ADDITIVE
    percentile: float  # normalisation percentile


class LabPhysics(NamedTuple):
    """The lab recipe's per-sample beam and texture (docs/physics.md, "The lab recipe") and the library's
    per-reflection data that March-Dollase texture reads."""

    line_ratio: np.ndarray  # (n, 3) λ_i / λ_reader of Kα1, Kα2, Kβ1
    line_weight: np.ndarray  # (n, 3) intensity of each line relative to Kα1; 0 = no such line
    wavelength_ratio: np.ndarray  # (n,) q = λ_reader / λ_model: instrument sinθ' = q·sinθ
    sample_displacement_deg: np.ndarray  # (n,) D: instrument-angle shift D·cosθ'
    axial_divergence_deg: np.ndarray  # (n,) A: axial aberration out to ε_m = -A·cot2θ' (`add_axial_line`)
    defocus_box_deg: np.ndarray  # (n,) B: full width of the defocusing box in instrument 2θ; 0 = none
    texture_r: np.ndarray  # (n, 5) March-Dollase r; 1 = untextured
    texture_axis: np.ndarray  # (n, 5, 3) unit texture axis in the crystal's Cartesian reciprocal frame
    lattice_strain: np.ndarray  # (n, 5, 3, 3) symmetric strain tensor ε in that frame; 0 = the bank's cell
    debye_waller_b_a2: np.ndarray  # (n, 5) overall isotropic B (Å²); 0 = the bank's intensities
    intensity_log_sd: np.ndarray  # (n, 5) σ of each peak's log intensity factor; 0 = the bank's intensities
    intensity_seed: np.ndarray  # (n, 5) integer in [0, 2^24): which factors (`intensity_variation`)
    reflection_offsets: np.ndarray  # int64 (P+1,): reflections of stick p are [offsets[p], offsets[p+1])
    reflection_direction: np.ndarray  # (R, 3) unit scattering vectors
    reflection_weight: np.ndarray  # (R,) share of the stick's intensity, summing to 1 per stick
    noise_floor: np.ndarray  # (n,) smallest counting-noise std of the pattern relative to its highest bin
    tolerance_per_noise: float  # the rendering cut as a fraction of that noise (tail_tolerance_sigma)


class LabBackground(NamedTuple):
    """The lab recipe's background and counting noise for a batch of n: (n,) per sample unless noted."""

    level: np.ndarray
    chebyshev: np.ndarray  # (n, order): c_1..c_order of the log background, 0 beyond the sample's order
    hump_height: np.ndarray  # 0 = no hump
    hump_center_deg: np.ndarray
    hump_fwhm_deg: np.ndarray
    air_scatter_height: np.ndarray  # 0 = no air scatter
    air_scatter_decay_deg: np.ndarray
    counts_at_max: np.ndarray
    background_subtracted: np.ndarray  # bool: the expected background is subtracted after the Poisson draw
    standard_normal: np.ndarray  # float32 (n, n_bins): the unit normal each bin's Poisson draw inverts
    percentile: float


@nb.njit(cache=True)
def tch_fwhm_eta(fwhm_gauss_deg: float, fwhm_lorentz_deg: float) -> tuple[float, float]:
    """Thompson-Cox-Hastings total FWHM and Lorentzian fraction η of a pseudo-Voigt."""
    g = fwhm_gauss_deg
    lo = fwhm_lorentz_deg
    fwhm = (
        g**5
        + 2.69269 * g**4 * lo
        + 2.42843 * g**3 * lo**2
        + 4.47163 * g**2 * lo**3
        + 0.07842 * g * lo**4
        + lo**5
    ) ** 0.2
    if fwhm <= 0.0:
        return 0.0, 0.0
    q = lo / fwhm
    eta = 1.36603 * q - 0.47719 * q * q + 0.11116 * q * q * q
    return fwhm, min(max(eta, 0.0), 1.0)


# erf(x) ≈ 1 - (1 + Σ_i a_i x^i)^-16 on [0, 4.6] (the form of Abramowitz & Stegun 7.1.28, refitted here to
# degree 10 by iteratively reweighted least squares against mpmath): |error| < 1e-10, monotone, no exp and
# no branch, so the edge loops vectorise. test_profiles.py checks the bound against math.erf.
_ERF_A = (
    0.07052369811505714, 0.042275532841044745, 0.009287732773475787, 0.0001495733340062021,
    0.00023001957141324716, 0.00011155383204290888, -4.122823601269976e-05, 1.1765614791913945e-05,
    -1.61398715297148e-06, 1.1632758666058063e-07,
)  # fmt: skip
# atan(r) ≈ r·Σ_i b_i r^(2i) on [0, 1] (odd degree 23, same fit): |error| < 2.3e-11; |x| > 1 goes through
# atan(x) = π/2 - atan(1/x).
_ATAN_B = (
    0.9999999994299904, -0.33333327038621713, 0.19999793484179545, -0.14282550708643763,
    0.11083666486266561, -0.08941099390389595, 0.07143024236386604, -0.05251368419749695,
    0.03223158220814645, -0.014720519637215934, 0.004293365679151846, -0.0005876507990121571,
)  # fmt: skip
# Kernels with edge loops: no zero-division checks (they block SIMD) and contraction into FMAs. No
# reassociation, so each value is computed the same way whatever the loop is unrolled into.
_VECTOR = {"error_model": "numpy", "fastmath": {"contract", "nsz", "arcp"}}


@nb.njit(cache=True, **_VECTOR)
def erf_fast(x: float) -> float:
    """erf(x) to 1e-10 absolute, branch-free; saturates at |x| = 4.6 where erf is 1 - 2e-11."""
    a = min(abs(x), _ERF_SATURATION)
    c = _ERF_A
    q = 1.0 + a * (c[0] + a * (c[1] + a * (c[2] + a * (c[3] + a * (c[4] + a * (
        c[5] + a * (c[6] + a * (c[7] + a * (c[8] + a * c[9])))))))))  # fmt: skip
    q *= q
    q *= q
    q *= q
    q *= q
    return math.copysign(1.0 - 1.0 / q, x)


@nb.njit(cache=True, **_VECTOR)
def atan_fast(x: float) -> float:
    """atan(x) to 2.3e-11 absolute for any x, branch-free (a select, not a jump, between the two ranges)."""
    a = abs(x)
    r = min(a, 1.0) / max(a, 1.0)
    s = r * r
    c = _ATAN_B
    p = r * (c[0] + s * (c[1] + s * (c[2] + s * (c[3] + s * (c[4] + s * (c[5] + s * (
        c[6] + s * (c[7] + s * (c[8] + s * (c[9] + s * (c[10] + s * c[11])))))))))))  # fmt: skip
    return math.copysign(0.5 * math.pi - p if a > 1.0 else p, x)


# Edge loops run over a multiple of this many edges (the scratch has room), so that no scalar remainder
# loop of erf/atan evaluations follows the SIMD body (8 float64 lanes of AVX-512, 2 iterations of AVX2).
EDGE_PAD = 8


@nb.njit(cache=True, **_VECTOR)
def _lorentz_cdf_edges(cdf: np.ndarray, n_edges: int, z0: float, step: float, weight: float) -> None:
    """cdf[j] = weight·atan(z0 + j·step) for j < n_edges."""
    for j in range(n_edges):
        cdf[j] = weight * atan_fast(z0 + j * step)


# Bins where u = (b - a)/(1 + ab) <= this use atan_small: atan(b) - atan(a) = atan(u) for ab > -1.
LORENTZ_TAIL_U = 0.125


@nb.njit(cache=True, **_VECTOR)
def atan_small(u: float) -> float:
    """atan(u) for |u| <= LORENTZ_TAIL_U: its Taylor series to u^11, relative error < 1.2e-12 (the first term
    left out, u^13/13, bounds the error of this alternating series)."""
    s = u * u
    return u * (1.0 + s * (-1.0 / 3.0 + s * (0.2 + s * (-1.0 / 7.0 + s * (1.0 / 9.0 - s * (1.0 / 11.0))))))


@nb.njit(cache=True, **_VECTOR)
def _add_lorentz_tail(
    out: np.ndarray, first: int, n_bins: int, z0: float, step: float, weight: float
) -> None:
    """out[first + j] += weight·atan_small(step / (1 + z_j·z_(j+1))), z_j = z0 + j·step, for j < n_bins: bin
    integrals of a Lorentzian on bins of one side of its centre, far enough out for atan_small."""
    target = out[first : first + n_bins]
    for j in range(n_bins):
        z_lower = z0 + j * step
        target[j] += weight * atan_small(step / (1.0 + z_lower * (z_lower + step)))


@nb.njit(cache=True, error_model="numpy")
def add_lorentz_binned(out: np.ndarray, b0: int, b1: int, z0: float, step: float, weight: float) -> None:
    """out[b] += weight·(atan(z_(b+1)) - atan(z_b)) for b0 <= b < b1, z the bin edges in half-widths from the
    centre (z0 at b0, `step` apart): the Lorentzian's bin integrals, weight = η·area/π.

    Each bin is atan(u), u = step/(1 + z_b·z_(b+1)) (+π where 1 + z_b·z_(b+1) < 0, only possible in the bin
    holding the centre), instead of a difference of two arctangents near ±π/2: one arctangent per bin as before,
    but in the far tails, where u <= LORENTZ_TAIL_U, a short series (atan_small) in place of atan_fast, about
    twice as cheap there, and exact to 1e-12 of each bin rather than to 2e-11 of the area."""
    n_bins = b1 - b0
    # u <= LORENTZ_TAIL_U on a bin with both edges beyond ±z_tail, where z_lower·z_upper >= z_tail².
    z_tail = math.sqrt(max(step / LORENTZ_TAIL_U - 1.0, 0.0))
    left = int(min(max(math.floor((-z_tail - z0) / step), 0.0), float(n_bins)))
    right = int(min(max(math.ceil((z_tail - z0) / step), float(left)), float(n_bins)))
    _add_lorentz_tail(out, b0, left, z0, step, weight)
    for j in range(left, right):
        z_lower = z0 + j * step
        denominator = 1.0 + z_lower * (z_lower + step)
        value = atan_fast(step / denominator)
        if denominator < 0.0:
            value += math.pi
        out[b0 + j] += weight * value
    _add_lorentz_tail(out, b0 + right, n_bins - right, z0 + right * step, step, weight)


@nb.njit(cache=True, **_VECTOR)
def _gauss_cdf_edges(cdf: np.ndarray, n_edges: int, z0: float, step: float, weight: float) -> None:
    """cdf[j] = weight·erf(z0 + j·step) for j < n_edges."""
    for j in range(n_edges):
        cdf[j] = weight * erf_fast(z0 + j * step)


@nb.njit(cache=True, **_VECTOR)
def _pseudo_voigt_cdf_edges(
    cdf: np.ndarray,
    n_edges: int,
    zl0: float,
    zl_step: float,
    wl: float,
    zg0: float,
    zg_step: float,
    wg: float,
) -> None:
    """cdf[j] = wl·atan(zl0 + j·zl_step) + wg·erf(zg0 + j·zg_step) for j < n_edges."""
    for j in range(n_edges):
        cdf[j] = wl * atan_fast(zl0 + j * zl_step) + wg * erf_fast(zg0 + j * zg_step)


@nb.njit(cache=True, **_VECTOR)
def _add_differences(out: np.ndarray, first: int, cdf: np.ndarray, n_bins: int) -> None:
    """out[first + j] += cdf[j + 1] - cdf[j] for j < n_bins."""
    target = out[first : first + n_bins]
    lower = cdf[:n_bins]
    upper = cdf[1 : n_bins + 1]
    for j in range(n_bins):
        target[j] += upper[j] - lower[j]


@nb.njit(cache=True)
def part_extents(
    area: float, fwhm_deg: float, eta: float, bin_width_deg: float, tail_tolerance: float
) -> tuple[float, float, float]:
    """(erf argument beyond which the Gaussian part is dropped, half-width in degrees of the Gaussian part's
    support, half-width in degrees of the Lorentzian part's support); 0 where a part is not rendered.

    Each part is rendered out to where one bin would receive less than `tail_tolerance`: for the Gaussian
    where its bin value (1-η)·area·min(1, Δ/(σ√2π))·exp(-z²) falls below it (z = x/(σ√2), at most 4.6), for
    the Lorentzian where the far tail η·area·Δ·γ/(π x²) does (never, for η·area below it). Nothing is rendered
    for an area below the tolerance or a width of 0.
    """
    if area < tail_tolerance or fwhm_deg <= 0.0:
        return 0.0, 0.0, 0.0
    sigma = fwhm_deg * _FWHM_TO_SIGMA
    gauss_peak = (1.0 - eta) * area * min(1.0, bin_width_deg / (sigma * math.sqrt(2.0 * math.pi)))
    z_cut = 0.0
    if gauss_peak > tail_tolerance:
        z_cut = min(math.sqrt(math.log(gauss_peak / tail_tolerance)), _ERF_SATURATION)
    lorentz_half = 0.0
    if eta > 0.0 and eta * area > tail_tolerance:
        lorentz_half = math.sqrt(eta * area * bin_width_deg * 0.5 * fwhm_deg / (math.pi * tail_tolerance))
    return z_cut, z_cut * sigma * _SQRT2, lorentz_half


@nb.njit(cache=True)
def rendering_extent(
    area: float, fwhm_deg: float, eta: float, bin_width_deg: float, tail_tolerance: float
) -> tuple[float, float]:
    """(erf argument beyond which the Gaussian part is dropped, half-width in degrees of the rendered support):
    the wider of the two parts' supports (`part_extents`); a half-width of 0 means: skip the peak."""
    z_cut, gauss_half, lorentz_half = part_extents(area, fwhm_deg, eta, bin_width_deg, tail_tolerance)
    return z_cut, max(gauss_half, lorentz_half)


@nb.njit(cache=True, error_model="numpy")
def support_bins(
    center_deg: float,
    half_width_deg: float,
    first_bin: int,
    end_bin: int,
    grid_lo_deg: float,
    bin_width_deg: float,
) -> tuple[int, int]:
    """First bin and end bin of the support ±`half_width_deg` of a peak (`rendering_extent`) inside
    [first_bin, end_bin); first >= end when there is nothing to render. Both engines render exactly these bins."""
    if half_width_deg <= 0.0:
        return 0, 0
    # Clamp in floating point first: the half-width can be astronomically large for a tiny tolerance.
    b0 = int(max(float(first_bin), math.floor((center_deg - half_width_deg - grid_lo_deg) / bin_width_deg)))
    b1 = int(
        min(float(end_bin), math.floor((center_deg + half_width_deg - grid_lo_deg) / bin_width_deg) + 1.0)
    )
    return b0, b1


@nb.njit(cache=True, error_model="numpy")
def add_pseudo_voigt_binned(
    out: np.ndarray,
    cdf: np.ndarray,
    first_bin: int,
    end_bin: int,
    grid_lo_deg: float,
    bin_width_deg: float,
    center_deg: float,
    area: float,
    fwhm_deg: float,
    eta: float,
    tail_tolerance: float,
) -> None:
    """Add a pseudo-Voigt of `area`, integrated over each bin (CDF differences), to out[first:end].

    The CDF is evaluated once per bin edge (erf_fast, atan_fast) into `cdf` (scratch of at least
    end - first + 1 + EDGE_PAD values). The support is `support_bins` of `rendering_extent`: bins that would
    receive less than `tail_tolerance` are left out.
    """
    z_cut, half = rendering_extent(area, fwhm_deg, eta, bin_width_deg, tail_tolerance)
    b0, b1 = support_bins(center_deg, half, first_bin, end_bin, grid_lo_deg, bin_width_deg)
    if b0 >= b1:
        return
    n_edges = b1 - b0 + 1
    padded = (n_edges + EDGE_PAD - 1) // EDGE_PAD * EDGE_PAD
    x0 = grid_lo_deg + b0 * bin_width_deg - center_deg
    inv_l = 2.0 / fwhm_deg
    w_lorentz = eta * area / math.pi
    if z_cut > 0.0:
        # Beyond ±z_cut the Gaussian adds less than the tolerance per bin; erf_fast saturates by itself.
        inv_g = 1.0 / (fwhm_deg * _FWHM_TO_SIGMA * _SQRT2)
        _pseudo_voigt_cdf_edges(
            cdf, padded, x0 * inv_l, bin_width_deg * inv_l, w_lorentz,
            x0 * inv_g, bin_width_deg * inv_g, 0.5 * (1.0 - eta) * area,
        )  # fmt: skip
    else:
        _lorentz_cdf_edges(cdf, padded, x0 * inv_l, bin_width_deg * inv_l, w_lorentz)
    _add_differences(out, b0, cdf, n_edges - 1)


@nb.njit(cache=True, error_model="numpy")
def add_pseudo_voigt_parts(
    out: np.ndarray,
    cdf: np.ndarray,
    first_bin: int,
    end_bin: int,
    grid_lo_deg: float,
    bin_width_deg: float,
    center_deg: float,
    area: float,
    fwhm_deg: float,
    eta: float,
    tail_tolerance: float,
) -> None:
    """add_pseudo_voigt_binned with each part over its own support (`part_extents`): the Lorentzian's atan over
    its (wide) support, the Gaussian's erf only out to ±z_cut, instead of both over the wider of the two.

    Every bin left out of a part receives less than `tail_tolerance` from it, the cut add_pseudo_voigt_binned
    documents. Under the lab recipe's fine cut the Lorentzian support is several times the Gaussian one, and
    this skips ~3/4 of the erf evaluations. The lab recipe's renderer; A.1 keeps add_pseudo_voigt_binned.
    """
    z_cut, gauss_half, lorentz_half = part_extents(area, fwhm_deg, eta, bin_width_deg, tail_tolerance)
    b0, b1 = support_bins(center_deg, lorentz_half, first_bin, end_bin, grid_lo_deg, bin_width_deg)
    if b0 < b1:
        inv_l = 2.0 / fwhm_deg
        add_lorentz_binned(
            out, b0, b1, (grid_lo_deg + b0 * bin_width_deg - center_deg) * inv_l, bin_width_deg * inv_l,
            eta * area / math.pi,
        )  # fmt: skip
    b0, b1 = support_bins(center_deg, gauss_half, first_bin, end_bin, grid_lo_deg, bin_width_deg)
    if b0 < b1:
        n_edges = b1 - b0 + 1
        inv_g = 1.0 / (fwhm_deg * _FWHM_TO_SIGMA * _SQRT2)
        x0 = grid_lo_deg + b0 * bin_width_deg - center_deg
        _gauss_cdf_edges(
            cdf, (n_edges + EDGE_PAD - 1) // EDGE_PAD * EDGE_PAD, x0 * inv_g, bin_width_deg * inv_g,
            0.5 * (1.0 - eta) * area,
        )  # fmt: skip
        _add_differences(out, b0, cdf, n_edges - 1)


# Beyond this |z|, erf_integral takes its asymptote |z|: the terms it drops, |z|·erfc|z| and exp(-z²)/√π, are
# each below 2e-16 there, under the rounding of |z| itself.
_ERF_INTEGRAL_SATURATION = 6.0


@nb.njit(cache=True, **_VECTOR)
def erf_integral(z: float) -> float:
    """∫_0^z erf(t) dt + 1/√π = z·erf z + exp(-z²)/√π, exactly |z| beyond _ERF_INTEGRAL_SATURATION."""
    if abs(z) >= _ERF_INTEGRAL_SATURATION:
        return abs(z)
    return z * math.erf(z) + math.exp(-z * z) / _SQRT_PI


@nb.njit(cache=True, **_VECTOR)
def atan_integral(u: float) -> float:
    """∫_0^u atan(t) dt = u·atan u - ½ln(1 + u²)."""
    return u * math.atan(u) - 0.5 * math.log1p(u * u)


# Box tails of the Lorentzian: bins whose edges lie at least this many half-widths beyond the box's edges use
# `_box_lorentz_tail_bin`, where w = 1/u <= 1/8 and its series stop below 1e-13.
BOX_LORENTZ_TAIL_U = 8.0
# ... and where |δ| of its logarithm is at most this.
BOX_LORENTZ_TAIL_DELTA = 0.125


@nb.njit(cache=True, **_VECTOR)
def _atan_integral_remainder(u: float) -> float:
    """atan_integral(u) - (π|u|/2 - 1 - ln|u|) = Σ_k (-1)^k w^(2k) / (2k(2k+1)), w = 1/u, for |u| >= 8: to
    w^10, the first term left out below 1e-13."""
    w2 = 1.0 / (u * u)
    return w2 * (-1.0 / 6.0 + w2 * (1.0 / 20.0 + w2 * (-1.0 / 42.0 + w2 * (1.0 / 72.0 - w2 * (1.0 / 110.0)))))


@nb.njit(cache=True, **_VECTOR)
def _log1p_small(d: float) -> float:
    """ln(1 + d) for |d| <= BOX_LORENTZ_TAIL_DELTA: its series to d^13, relative error below 2e-13."""
    return d * (1.0 + d * (-1.0 / 2.0 + d * (1.0 / 3.0 + d * (-1.0 / 4.0 + d * (1.0 / 5.0 + d * (-1.0 / 6.0 + d * (
        1.0 / 7.0 + d * (-1.0 / 8.0 + d * (1.0 / 9.0 + d * (-1.0 / 10.0 + d * (1.0 / 11.0 + d * (
            -1.0 / 12.0 + d * (1.0 / 13.0)))))))))))))  # fmt: skip


@nb.njit(cache=True, **_VECTOR)
def _box_lorentz_tail_bin(u0: float, step: float, a: float) -> float:
    """The second difference A(u1 + a) - A(u1 - a) - A(u0 + a) + A(u0 - a), A = atan_integral, u1 = u0 + step, for
    a bin whose four points lie on one side of 0 at |u| >= BOX_LORENTZ_TAIL_U: the π|u|/2 and constant parts of
    A cancel, the logarithms combine into -ln(1 + δ) with δ = -2a·step / ((u1 - a)(u0 + a)) (no cancellation),
    and the remainders are short series."""
    u1 = u0 + step
    delta = -2.0 * a * step / ((u1 - a) * (u0 + a))
    return -_log1p_small(delta) + (
        _atan_integral_remainder(u1 + a) - _atan_integral_remainder(u1 - a)
        - _atan_integral_remainder(u0 + a) + _atan_integral_remainder(u0 - a)
    )  # fmt: skip


@nb.njit(cache=True, error_model="numpy")
def _add_box_differences(
    out: np.ndarray,
    cdf: np.ndarray,
    first: int,
    n_bins: int,
    z0: float,
    step: float,
    a: float,
    scale: float,
    lorentzian: bool,
) -> None:
    """out[first + j] += scale·(H_(j+1) - H_j) for j < n_bins, H_j = F(z_j + a) - F(z_j - a) at z_j = z0 + j·step,
    F = atan_integral or erf_integral."""
    for j in range(n_bins + 1):
        z = z0 + j * step
        if lorentzian:
            cdf[j] = atan_integral(z + a) - atan_integral(z - a)
        else:
            cdf[j] = erf_integral(z + a) - erf_integral(z - a)
    target = out[first : first + n_bins]
    for j in range(n_bins):
        target[j] += scale * (cdf[j + 1] - cdf[j])


@nb.njit(cache=True, **_VECTOR)
def _add_box_lorentz_tail(
    out: np.ndarray, first: int, n_bins: int, z0: float, step: float, a: float, scale: float
) -> None:
    """out[first + j] += scale·_box_lorentz_tail_bin(z0 + j·step, step, a) for j < n_bins."""
    target = out[first : first + n_bins]
    for j in range(n_bins):
        target[j] += scale * _box_lorentz_tail_bin(z0 + j * step, step, a)


@nb.njit(cache=True, error_model="numpy")
def _add_box_lorentz(
    out: np.ndarray, cdf: np.ndarray, b0: int, b1: int, z0: float, step: float, a: float, scale: float
) -> None:
    """The box-convolved Lorentzian's bins b0 <= b < b1, edges z_j = z0 + j·step in half-widths from the centre, box
    half-width a: its far tails on either side by `_add_box_lorentz_tail` (one short series per bin in place of two
    arctangents and two logarithms per edge), the bins between by `_add_box_differences`."""
    n_bins = b1 - b0
    # Tail bins: every point z ± a at |.| >= U and |δ| <= D, which holds for edges beyond a + v on either side.
    u_tail = BOX_LORENTZ_TAIL_U
    v = max(u_tail, math.sqrt(a * a + 2.0 * a * step / BOX_LORENTZ_TAIL_DELTA) - a)
    left = int(min(max(math.floor((-a - v - z0) / step), 0.0), float(n_bins)))
    right = int(min(max(math.ceil((a + v - z0) / step), float(left)), float(n_bins)))
    _add_box_lorentz_tail(out, b0, left, z0, step, a, scale)
    _add_box_differences(out, cdf, b0 + left, right - left, z0 + left * step, step, a, scale, True)
    _add_box_lorentz_tail(out, b0 + right, n_bins - right, z0 + right * step, step, a, scale)


@nb.njit(cache=True, error_model="numpy")
def add_box_pseudo_voigt(
    out: np.ndarray,
    cdf: np.ndarray,
    first_bin: int,
    end_bin: int,
    grid_lo_deg: float,
    bin_width_deg: float,
    center_deg: float,
    area: float,
    fwhm_deg: float,
    eta: float,
    box_deg: float,
    tail_tolerance: float,
) -> None:
    """A pseudo-Voigt of `area` convolved with a box of full width `box_deg` (docs/physics.md, "Defocusing"),
    integrated over each bin exactly: the convolution's CDF is (1/B)∫ CDF over [x - B/2, x + B/2], so a bin's
    integral is a second difference of each part's CDF antiderivative (`erf_integral`, `atan_integral`), no
    quadrature. Each part over its own support (`part_extents`, computed for the line before the box, which only
    lowers its bins) widened by B/2. `cdf` is scratch of at least end - first + 1 values."""
    _z_cut, gauss_half, lorentz_half = part_extents(area, fwhm_deg, eta, bin_width_deg, tail_tolerance)
    half_box = 0.5 * box_deg
    b0, b1 = support_bins(center_deg, lorentz_half + half_box, first_bin, end_bin, grid_lo_deg, bin_width_deg)
    if b0 < b1 and lorentz_half > 0.0:
        gamma = 0.5 * fwhm_deg
        z0 = (grid_lo_deg + b0 * bin_width_deg - center_deg) / gamma
        scale = eta * area / math.pi * gamma / box_deg
        _add_box_lorentz(out, cdf, b0, b1, z0, bin_width_deg / gamma, half_box / gamma, scale)
    b0, b1 = support_bins(center_deg, gauss_half + half_box, first_bin, end_bin, grid_lo_deg, bin_width_deg)
    if b0 < b1 and gauss_half > 0.0:
        width = fwhm_deg * _FWHM_TO_SIGMA * _SQRT2
        z0 = (grid_lo_deg + b0 * bin_width_deg - center_deg) / width
        scale = 0.5 * (1.0 - eta) * area * width / box_deg
        _add_box_differences(out, cdf, b0, b1 - b0, z0, bin_width_deg / width, half_box / width, scale, False)


@nb.njit(cache=True)
def orientation_envelope(
    t: float,
    sin_pi_t: float,
    cos_pi_t: float,
    coefficients: np.ndarray,
    mean_value: float,
    constants: RecipeConstants,
) -> float:
    """Unit-mean, clipped envelope 1 + Σ c_j φ_j(t) at normalised angle t in [0, 1].

    φ = T_1..T_order(2t-1), then sin(kπt), cos(kπt) for k = 1, 2, ...; `coefficients` already include the
    strength and the 1/Σ|c| bound, `mean_value` is the envelope's mean over the grid centres. sin(πt) and
    cos(πt) come from the caller, which has them precomputed for library sticks.
    """
    n = coefficients.shape[0]
    order = constants.orientation_order
    u = 2.0 * t - 1.0
    value = 1.0
    t_prev = 1.0
    t_cur = u
    for j in range(order):
        value += coefficients[j] * t_cur
        t_prev, t_cur = t_cur, 2.0 * u * t_cur - t_prev
    s1 = sin_pi_t
    c1 = cos_pi_t
    s = s1
    c = c1
    for j in range(order, n, 2):
        value += coefficients[j] * s + coefficients[j + 1] * c
        s, c = s * c1 + c * s1, c * c1 - s * s1
    return min(max(value / mean_value, constants.orientation_clip_lo), constants.orientation_clip_hi)


@nb.njit(cache=True)
def material_scale(sticks: StickTable, material: int, mode: int) -> float:
    """1 / (strongest stick) or 1 / (sum of sticks) of a material; 0 for a material without intensity."""
    total = 0.0
    for p in range(sticks.offsets[material], sticks.offsets[material + 1]):
        if mode == STRONGEST_LINE:
            total = max(total, sticks.intensity[p])
        else:
            total += sticks.intensity[p]
    return 1.0 / total if total > 0.0 else 0.0


@nb.njit(cache=True)
def stick_area(
    scale: float,
    intensity: float,
    two_theta_deg: float,
    sin_pi_t: float,
    cos_pi_t: float,
    oriented: bool,
    coefficients: np.ndarray,
    orientation_mean: float,
    constants: RecipeConstants,
    grid: BinGrid,
) -> float:
    """Area of one stick in the mixture: phase scale × stick intensity × orientation envelope at the stick."""
    area = scale * intensity
    if oriented:
        area *= orientation_envelope(
            (two_theta_deg - grid.lo_deg) / grid.span_deg,
            sin_pi_t,
            cos_pi_t,
            coefficients,
            orientation_mean,
            constants,
        )
    return area


@nb.njit(cache=True)
def phase_width_factors(
    microstrain: float, crystallite_size_nm: float, constants: RecipeConstants
) -> tuple[float, float]:
    """A phase's FWHM factors in degrees: (microstrain, Scherrer size), the factors of tanθ and 1/cosθ.

    Microstrain (Gaussian): strain_fwhm_factor·ε·tanθ radians (factor 4 = Stokes-Wilson); size (Lorentzian):
    K·λ/(L·cosθ) radians (Scherrer).
    """
    strain_deg = constants.strain_fwhm_factor * microstrain / _DEG
    size_deg = constants.scherrer_k * constants.wavelength_nm / crystallite_size_nm / _DEG
    return strain_deg, size_deg


@nb.njit(cache=True)
def stick_fwhm_eta(
    tan_theta: float,
    sec_theta: float,
    strain_deg: float,
    size_deg: float,
    instrument_tan_theta: float,
    instrument_scale: float,
    caglioti_u_deg2: float,
    caglioti_v_deg2: float,
    caglioti_w_deg2: float,
) -> tuple[float, float]:
    """TCH FWHM (degrees) and η of a stick from its tanθ and 1/cosθ: microstrain and instrument (Caglioti,
    negative squares clamped to 0) in quadrature as the Gaussian FWHM, Scherrer size as the Lorentzian.
    `strain_deg`, `size_deg` from `phase_width_factors`. The Caglioti width is evaluated at the instrument's
    own tanθ' and scaled by `instrument_scale` (J of the lab recipe); A.1 passes tanθ and 1."""
    return tch_fwhm_eta(
        *stick_gauss_lorentz_fwhm(
            tan_theta, sec_theta, strain_deg, size_deg, instrument_tan_theta, instrument_scale, caglioti_u_deg2,
            caglioti_v_deg2, caglioti_w_deg2,
        )
    )  # fmt: skip


@nb.njit(cache=True)
def stick_gauss_lorentz_fwhm(
    tan_theta: float,
    sec_theta: float,
    strain_deg: float,
    size_deg: float,
    instrument_tan_theta: float,
    instrument_scale: float,
    caglioti_u_deg2: float,
    caglioti_v_deg2: float,
    caglioti_w_deg2: float,
) -> tuple[float, float]:
    """The Gaussian and Lorentzian FWHM (degrees) that `stick_fwhm_eta` combines by TCH, from the same
    arguments."""
    strain = strain_deg * tan_theta
    t = instrument_tan_theta
    instrument_deg2 = max(caglioti_u_deg2 * t * t + caglioti_v_deg2 * t + caglioti_w_deg2, 0.0)
    instrument_deg2 *= instrument_scale * instrument_scale
    return math.sqrt(strain * strain + instrument_deg2), size_deg * sec_theta


@nb.njit(cache=True)
def stick_widths(
    tan_theta: np.ndarray,
    sec_theta: np.ndarray,
    microstrain: float,
    crystallite_size_nm: float,
    constants: RecipeConstants,
    caglioti_u_deg2: float,
    caglioti_v_deg2: float,
    caglioti_w_deg2: float,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(TCH FWHM, η, Lorentzian FWHM) in degrees of sticks at tanθ, 1/cosθ: `phase_width_factors` and
    `stick_fwhm_eta` over arrays, so that the numpy API (profiles.stick_fwhm_eta_deg) and the LUT's width range
    use the rendering engines' own formula."""
    n = tan_theta.shape[0]
    fwhm = np.empty(n)
    eta = np.empty(n)
    lorentz = np.empty(n)
    strain_deg, size_deg = phase_width_factors(microstrain, crystallite_size_nm, constants)
    for i in range(n):
        fwhm[i], eta[i] = stick_fwhm_eta(
            tan_theta[i], sec_theta[i], strain_deg, size_deg, tan_theta[i], 1.0, caglioti_u_deg2, caglioti_v_deg2,
            caglioti_w_deg2,
        )  # fmt: skip
        lorentz[i] = size_deg * sec_theta[i]
    return fwhm, eta, lorentz


@nb.njit(cache=True)
def march_dollase(
    direction: np.ndarray, weight: np.ndarray, first: int, end: int, axis: np.ndarray, r: float
) -> float:
    """March-Dollase factor of one stick: Σ_j ω_j (r² c_j² + (1 - c_j²)/r)^(-3/2) over its reflections
    [first, end), c_j the cosine between reflection j's unit scattering vector and the texture axis."""
    total = 0.0
    r2 = r * r
    inv_r = 1.0 / r
    for j in range(first, end):
        c = direction[j, 0] * axis[0] + direction[j, 1] * axis[1] + direction[j, 2] * axis[2]
        c2 = c * c
        x = r2 * c2 + (1.0 - c2) * inv_r
        total += weight[j] / (x * math.sqrt(x))
    return total


@nb.njit(cache=True)
def lattice_strain_shift(
    direction: np.ndarray, weight: np.ndarray, first: int, end: int, strain: np.ndarray
) -> float:
    """δ = Σ_j ω_j n_jᵀ ε n_j over a stick's reflections [first, end): its d moves to d/√(1 - 2δ), the
    reciprocal metric g'ᵀg' = gᵀ(I - 2ε)g of a deformed cell (d(1 + δ) to first order in ε)."""
    total = 0.0
    for j in range(first, end):
        x, y, z = direction[j, 0], direction[j, 1], direction[j, 2]
        total += weight[j] * (
            strain[0, 0] * x * x + strain[1, 1] * y * y + strain[2, 2] * z * z
            + 2.0 * (strain[0, 1] * x * y + strain[0, 2] * x * z + strain[1, 2] * y * z)
        )  # fmt: skip
    return total


_GOLDEN_GAMMA = np.uint64(0x9E3779B97F4A7C15)
_MIX_1 = np.uint64(0xBF58476D1CE4E5B9)
_MIX_2 = np.uint64(0x94D049BB133111EB)


@nb.njit(cache=True)
def intensity_variation(seed: float, peak: int, log_sd: float) -> float:
    """exp(σ√3·v) for peak `peak` (its index within the phase) of a phase with variation seed `seed`, v ~ U(-1, 1)
    from splitmix64 of (seed, peak): a counter-based draw, so a peak's factor depends on its sample's draws alone,
    never on how samples are split among workers, and needs no per-peak storage."""
    z = (np.uint64(seed) << np.uint64(32)) + np.uint64(peak) + _GOLDEN_GAMMA
    z = (z ^ (z >> np.uint64(30))) * _MIX_1
    z = (z ^ (z >> np.uint64(27))) * _MIX_2
    z = z ^ (z >> np.uint64(31))
    v = 2.0 * float(z >> np.uint64(11)) * 2.0**-53 - 1.0
    return math.exp(log_sd * math.sqrt(3.0) * v)


@nb.njit(cache=True)
def lorentz_polarisation(sin_theta: float) -> float:
    """(1 + cos²2θ) / (sin²θ cosθ), the unpolarised-beam Lorentz-polarisation factor pymatgen's intensities carry."""
    sin2 = sin_theta * sin_theta
    cos_two_theta = 1.0 - 2.0 * sin2
    return (1.0 + cos_two_theta * cos_two_theta) / (sin2 * math.sqrt(1.0 - sin2))


# Sub-bin positions tabulated by the LUT: a stick between two of them interpolates linearly, so its kernel is
# off by at most (1/16 bin)²/8 × the kernel's curvature (docs/physics.md, "lut").
LUT_SUBBIN_PHASES = 16


@nb.njit(cache=True)
def build_lut_tables(
    fwhm_levels_deg: np.ndarray, bin_width_deg: float, max_offset: int, n_subbin: int
) -> tuple[np.ndarray, np.ndarray]:
    """Unit-area bin-integrated Gaussian and Lorentzian kernels, (levels, n_subbin + 1, 2·max_offset + 1).

    Entry [l, j, max_offset + o] is the kernel of FWHM level l centred j/n_subbin of a bin above the lower
    edge of bin 0, integrated over bin o. Row n_subbin is row 0 one bin on, so that any position in the bin
    lies between two rows.
    """
    n_levels = fwhm_levels_deg.shape[0]
    width = 2 * max_offset + 1
    gauss = np.zeros((n_levels, n_subbin + 1, width))
    lorentz = np.zeros((n_levels, n_subbin + 1, width))
    cdf = np.empty(width + 1 + EDGE_PAD)
    for level in range(n_levels):
        for j in range(n_subbin + 1):
            center_deg = j / n_subbin * bin_width_deg
            add_pseudo_voigt_binned(
                gauss[level, j], cdf, 0, width, -max_offset * bin_width_deg, bin_width_deg,
                center_deg, 1.0, fwhm_levels_deg[level], 0.0, 1e-300,
            )  # fmt: skip
            add_pseudo_voigt_binned(
                lorentz[level, j], cdf, 0, width, -max_offset * bin_width_deg, bin_width_deg,
                center_deg, 1.0, fwhm_levels_deg[level], 1.0, 1e-300,
            )  # fmt: skip
    return gauss, lorentz


@nb.njit(cache=True, error_model="numpy")
def add_pseudo_voigt_lut(
    out: np.ndarray,
    first_bin: int,
    end_bin: int,
    grid_lo_deg: float,
    bin_width_deg: float,
    center_deg: float,
    area: float,
    fwhm_deg: float,
    eta: float,
    tail_tolerance: float,
    table: WidthTable,
) -> None:
    """add_pseudo_voigt_binned from the LUT: the same peak over the same bins, its bin-integrated kernel
    interpolated bilinearly between the two bracketing FWHM levels (in log FWHM) and the two bracketing
    sub-bin positions of `table`."""
    z_cut, half = rendering_extent(area, fwhm_deg, eta, bin_width_deg, tail_tolerance)
    b0, b1 = support_bins(center_deg, half, first_bin, end_bin, grid_lo_deg, bin_width_deg)
    if b0 >= b1:
        return
    log_fwhm_min = table.log_fwhm_min
    log_fwhm_step = table.log_fwhm_step
    gauss_table = table.gauss
    lorentz_table = table.lorentz
    n_levels, n_rows, width = gauss_table.shape
    n_subbin = n_rows - 1
    max_offset = (width - 1) // 2
    position = (center_deg - grid_lo_deg) / bin_width_deg
    source = math.floor(position)
    source_bin = int(source)
    subbin = (position - source) * n_subbin
    row = min(int(subbin), n_subbin - 1)
    right = subbin - row
    level_position = (math.log(fwhm_deg) - log_fwhm_min) / log_fwhm_step
    level_position = min(max(level_position, 0.0), n_levels - 1.0)
    level = min(int(level_position), n_levels - 2)
    wider = level_position - level
    o_lo = max(b0 - source_bin, -max_offset)
    o_hi = min(b1 - source_bin, max_offset + 1)
    if z_cut > 0.0:
        # The wider level's Gaussian rows are exactly 0 where erf saturates on both edges of a bin.
        sigma_bins = math.exp(log_fwhm_min + (level + 1) * log_fwhm_step) * _FWHM_TO_SIGMA / bin_width_deg
        gauss_half = int(_ERF_SATURATION * _SQRT2 * sigma_bins) + 2
        g_lo = min(max(o_lo, -gauss_half), o_hi)
        g_hi = max(min(o_hi, gauss_half + 1), g_lo)
    else:
        # As in add_pseudo_voigt_binned: no Gaussian bin could reach the tolerance.
        g_lo = g_hi = o_lo
    w_lorentz = eta * area
    c0 = w_lorentz * (1.0 - wider) * (1.0 - right)
    c1 = w_lorentz * (1.0 - wider) * right
    c2 = w_lorentz * wider * (1.0 - right)
    c3 = w_lorentz * wider * right
    w_gauss = (1.0 - eta) * area
    c4 = w_gauss * (1.0 - wider) * (1.0 - right)
    c5 = w_gauss * (1.0 - wider) * right
    c6 = w_gauss * wider * (1.0 - right)
    c7 = w_gauss * wider * right
    l00 = lorentz_table[level, row]
    l01 = lorentz_table[level, row + 1]
    l10 = lorentz_table[level + 1, row]
    l11 = lorentz_table[level + 1, row + 1]
    g00 = gauss_table[level, row]
    g01 = gauss_table[level, row + 1]
    g10 = gauss_table[level + 1, row]
    g11 = gauss_table[level + 1, row + 1]
    for o in range(o_lo, g_lo):
        i = o + max_offset
        out[source_bin + o] += c0 * l00[i] + c1 * l01[i] + c2 * l10[i] + c3 * l11[i]
    for o in range(g_lo, g_hi):
        i = o + max_offset
        out[source_bin + o] += (c0 * l00[i] + c1 * l01[i] + c2 * l10[i] + c3 * l11[i]) + (
            c4 * g00[i] + c5 * g01[i] + c6 * g10[i] + c7 * g11[i]
        )
    for o in range(g_hi, o_hi):
        i = o + max_offset
        out[source_bin + o] += c0 * l00[i] + c1 * l01[i] + c2 * l10[i] + c3 * l11[i]


@nb.njit(cache=True, error_model="numpy")
def render_lab_line(
    out: np.ndarray,
    cdf: np.ndarray,
    first_bin: int,
    end_bin: int,
    grid: BinGrid,
    area: float,
    tan_theta: float,
    sec_theta: float,
    sin_theta: float,
    two_theta_deg: float,
    line_ratio: float,
    wavelength_ratio: float,
    zero_shift_deg: float,
    displacement_deg: float,
    axial_deg: float,
    box_deg: float,
    strain_deg: float,
    size_deg: float,
    caglioti_u_deg2: float,
    caglioti_v_deg2: float,
    caglioti_w_deg2: float,
    tolerance: float,
) -> None:
    """One beam line of one stick in the lab frame (docs/physics.md, "The lab recipe"): model angle
    sinθ_i = ρ sinθ, instrument angle sinθ' = q sinθ_i, instrument widths and shifts scaled by
    J = cosθ' / (q cosθ_i), the Scherrer width by ρ, convolved with the axial aberration when A = `axial_deg` > 0 (`add_axial_line`)
    and with the defocusing box of B = `box_deg` when B > 0 (`add_line`); lines beyond 2θ = 180° in either
    frame are skipped. Exact engine only."""
    if line_ratio == 1.0:
        sec_m = sec_theta
        tan_m = tan_theta
        center = two_theta_deg
    else:
        sin_m = line_ratio * sin_theta
        if sin_m >= 1.0:
            return
        cos_m = math.sqrt(1.0 - sin_m * sin_m)
        sec_m = 1.0 / cos_m
        tan_m = sin_m * sec_m
        center = 2.0 * math.asin(sin_m) / _DEG
    if wavelength_ratio == 1.0:
        tan_i = tan_m
        cos_i = 1.0 / sec_m
        sin_i = tan_m * cos_i
        jacobian = 1.0
    else:
        sin_i = wavelength_ratio * tan_m / sec_m
        if sin_i >= 1.0:
            return
        cos_i = math.sqrt(1.0 - sin_i * sin_i)
        tan_i = sin_i / cos_i
        jacobian = cos_i * sec_m / wavelength_ratio
    # Scherrer's K·λ_i/(L cosθ'_i) in the instrument frame is J·that = ρ·K·λ_m/(L cosθ_i) here: the line's own λ.
    gauss_fwhm, lorentz_fwhm = stick_gauss_lorentz_fwhm(
        tan_m, sec_m, strain_deg, size_deg * line_ratio, tan_i, jacobian, caglioti_u_deg2, caglioti_v_deg2,
        caglioti_w_deg2,
    )  # fmt: skip
    center += jacobian * (zero_shift_deg + displacement_deg * cos_i)
    box = jacobian * box_deg
    if axial_deg != 0.0:
        # ε_m = -A·cot2θ' in instrument degrees, J·ε_m on the model grid.
        extent = -jacobian * axial_deg * (cos_i * cos_i - sin_i * sin_i) / (2.0 * sin_i * cos_i)
        fwhm, eta = tch_fwhm_eta(gauss_fwhm, lorentz_fwhm)
        add_axial_line(out, cdf, first_bin, end_bin, grid, center, extent, area, fwhm, eta, box, tolerance)
        return
    # ~40% of the lines fall outside the window: skip them before the TCH fifth root and the extent's logarithm.
    # (A boxed line's own supports clip it to the window.)
    if box == 0.0 and not may_reach_window(
        center, area, gauss_fwhm + lorentz_fwhm, first_bin, end_bin, grid, tolerance
    ):
        return
    fwhm, eta = tch_fwhm_eta(gauss_fwhm, lorentz_fwhm)
    add_line(out, cdf, first_bin, end_bin, grid, center, area, fwhm, eta, box, tolerance)


# A box narrower than this fraction of a line's FWHM is left out: it adds B²/12 to the line's variance, under
# 1e-4 of a Gaussian line's, while the second difference of the antiderivatives loses digits as B shrinks.
DEFOCUS_MIN_BOX_FWHM = 0.01


@nb.njit(cache=True, error_model="numpy")
def add_line(
    out: np.ndarray,
    cdf: np.ndarray,
    first_bin: int,
    end_bin: int,
    grid: BinGrid,
    center_deg: float,
    area: float,
    fwhm_deg: float,
    eta: float,
    box_deg: float,
    tolerance: float,
) -> None:
    """One lab line: the pseudo-Voigt (`add_pseudo_voigt_parts`), convolved with a box of full width `box_deg`
    when it is more than DEFOCUS_MIN_BOX_FWHM of the line's FWHM (`add_box_pseudo_voigt`)."""
    if box_deg > DEFOCUS_MIN_BOX_FWHM * fwhm_deg:
        add_box_pseudo_voigt(
            out, cdf, first_bin, end_bin, grid.lo_deg, grid.bin_width_deg, center_deg, area, fwhm_deg, eta,
            box_deg, tolerance,
        )  # fmt: skip
    else:
        add_pseudo_voigt_parts(
            out, cdf, first_bin, end_bin, grid.lo_deg, grid.bin_width_deg, center_deg, area, fwhm_deg, eta,
            tolerance,
        )  # fmt: skip


# Axial-divergence nodes lie at most this many FWHM apart; a line gets at most AXIAL_MAX_NODES of them.
AXIAL_NODE_SPACING_FWHM = 0.5
AXIAL_MAX_NODES = 64


@nb.njit(cache=True)
def axial_node_count(extent_deg: float, fwhm_deg: float) -> int:
    """Nodes of `add_axial_line` for a line of FWHM `fwhm_deg` whose aberration reaches `extent_deg`: node j
    sits at ε_m·t̄_j with t̄_j ∈ [(j/n)², ((j+1)/n)²], so neighbours are at most 2|ε_m|/n apart."""
    n = math.ceil(2.0 * abs(extent_deg) / (AXIAL_NODE_SPACING_FWHM * fwhm_deg))
    return min(max(n, 1), AXIAL_MAX_NODES)


@nb.njit(cache=True)
def axial_node(j: int, n: int) -> tuple[float, float]:
    """(t̄_j, w_j) of node j of n: the aberration (1/√t - 1) dt on t = ε/ε_m ∈ (0, 1] is 2(1 - u) du in
    u = √t; node j takes the probability w_j of u ∈ [j/n, (j+1)/n] and sits at that interval's mean of t, so the
    nodes keep the kernel's mean (1/6) exactly."""
    a = j / n
    b = (j + 1) / n
    weight = 2.0 * (b - a) - (b * b - a * a)
    mean_t = (2.0 * (b**3 - a**3) / 3.0 - 0.5 * (b**4 - a**4)) / weight
    return mean_t, weight


@nb.njit(cache=True, error_model="numpy")
def add_axial_line(
    out: np.ndarray,
    cdf: np.ndarray,
    first_bin: int,
    end_bin: int,
    grid: BinGrid,
    center_deg: float,
    extent_deg: float,
    area: float,
    fwhm_deg: float,
    eta: float,
    box_deg: float,
    tolerance: float,
) -> None:
    """One line convolved with the axial aberration (docs/physics.md, "Axial divergence"): the line (`add_line`,
    with its defocusing box) at `axial_node_count` nodes center + ε_m·t̄_j, each with its share w_j of the area."""
    n = axial_node_count(extent_deg, fwhm_deg)
    for j in range(n):
        mean_t, weight = axial_node(j, n)
        node_center = center_deg + extent_deg * mean_t
        node_area = area * weight
        if box_deg != 0.0 or may_reach_window(
            node_center, node_area, fwhm_deg, first_bin, end_bin, grid, tolerance
        ):
            add_line(
                out, cdf, first_bin, end_bin, grid, node_center, node_area, fwhm_deg, eta, box_deg, tolerance
            )


@nb.njit(cache=True)
def may_reach_window(
    center_deg: float,
    area: float,
    fwhm_bound_deg: float,
    first_bin: int,
    end_bin: int,
    grid: BinGrid,
    tail_tolerance: float,
) -> bool:
    """False only for a peak whose rendered support (`part_extents`) cannot reach bins [first_bin, end_bin),
    given an upper bound of its FWHM: g + l bounds the TCH FWHM of g and l (each coefficient of its quintic is
    at most the binomial one of (g + l)^5). Part_extents' half-widths are at most 4.6·σ√2 (Gaussian) and
    sqrt(area·Δ·FWHM/(2π τ)) (Lorentzian, η <= 1); one bin of margin covers support_bins' rounding."""
    width = grid.bin_width_deg
    distance = max(
        grid.lo_deg + (first_bin - 1) * width - center_deg, center_deg - grid.lo_deg - (end_bin + 1) * width
    )
    if distance <= _ERF_SATURATION * _SQRT2 * _FWHM_TO_SIGMA * fwhm_bound_deg:
        return True
    return distance * distance * (2.0 * math.pi * tail_tolerance) <= area * width * fwhm_bound_deg


# Lines at least this fraction of their phase's strongest stick make the first pass of `render_lab_sample`.
LAB_STRONG_LINE_FRACTION = 0.5


@nb.njit(cache=True, error_model="numpy")
def _render_lab_phases(
    out: np.ndarray,
    cdf: np.ndarray,
    s: int,
    first_bin: int,
    end_bin: int,
    grid: BinGrid,
    sticks: StickTable,
    draws: MixtureDraws,
    constants: RecipeConstants,
    lab: LabPhysics,
    tolerance: float,
    strong_kalpha1_only: bool,
) -> None:
    """Every phase of sample s in the lab frame into `out`: per stick the A.1 area times its March-Dollase
    factor, then each beam line (`render_lab_line`). `strong_kalpha1_only`: only the Kα1 line of sticks at
    least LAB_STRONG_LINE_FRACTION of their phase's strongest."""
    n_lines = 1 if strong_kalpha1_only else 3
    for k in range(draws.n_phases[s]):
        m = draws.material[s, k]
        scale = draws.weight[s, k] * material_scale(sticks, m, constants.normalization_mode)
        strongest = 0.0
        for p in range(sticks.offsets[m], sticks.offsets[m + 1]):
            strongest = max(strongest, sticks.intensity[p])
        coefficients = draws.orientation_coefficients[s, k]
        oriented = np.any(coefficients)
        strain_deg, size_deg = phase_width_factors(
            draws.microstrain[s, k], draws.crystallite_size_nm[s, k], constants
        )
        r = lab.texture_r[s, k]
        strain = lab.lattice_strain[s, k]
        strained = np.any(strain)
        # exp(-2B (sinθ/λ)²) at the bank's angle and wavelength: a function of d alone, whatever the beam.
        thermal = 2.0 * lab.debye_waller_b_a2[s, k] / (10.0 * constants.wavelength_nm) ** 2
        log_sd = lab.intensity_log_sd[s, k]
        for p in range(sticks.offsets[m], sticks.offsets[m + 1]):
            if strong_kalpha1_only and sticks.intensity[p] < LAB_STRONG_LINE_FRACTION * strongest:
                continue
            two_theta_deg = sticks.two_theta_deg[p]
            area = stick_area(
                scale, sticks.intensity[p], two_theta_deg, sticks.sin_pi_t[p], sticks.cos_pi_t[p], oriented,
                coefficients, draws.orientation_mean[s, k], constants, grid,
            )  # fmt: skip
            # One division per stick, not per line.
            tan_theta, sec_theta = sticks.tan_theta[p], sticks.sec_theta[p]
            sin_theta = tan_theta / sec_theta
            if r != 1.0:
                area *= march_dollase(
                    lab.reflection_direction, lab.reflection_weight, lab.reflection_offsets[p],
                    lab.reflection_offsets[p + 1], lab.texture_axis[s, k], r,
                )  # fmt: skip
            if thermal != 0.0:
                area *= math.exp(-thermal * sin_theta * sin_theta)
            if log_sd != 0.0:
                area *= intensity_variation(lab.intensity_seed[s, k], p - sticks.offsets[m], log_sd)
            if strained:
                # 1/d² -> (1 - 2δ)/d²: sinθ -> sinθ √(1 - 2δ); the A.1 envelope above stays at the bank's angle.
                metric = 1.0 - 2.0 * lattice_strain_shift(
                    lab.reflection_direction, lab.reflection_weight, lab.reflection_offsets[p],
                    lab.reflection_offsets[p + 1], strain,
                )  # fmt: skip
                if metric <= 0.0:
                    continue
                lorentz_bank = lorentz_polarisation(sin_theta)
                sin_theta *= math.sqrt(metric)
                if sin_theta >= 1.0:
                    continue
                # The bank's intensity carries LP at the bank's angle; the strained reflection diffracts at the new one.
                area *= lorentz_polarisation(sin_theta) / lorentz_bank
                cos_theta = math.sqrt(1.0 - sin_theta * sin_theta)
                tan_theta, sec_theta = sin_theta / cos_theta, 1.0 / cos_theta
                two_theta_deg = 2.0 * math.asin(sin_theta) / _DEG
            for i in range(n_lines):
                line_area = area * lab.line_weight[s, i]
                if line_area < tolerance:
                    continue
                render_lab_line(
                    out, cdf, first_bin, end_bin, grid, line_area, tan_theta, sec_theta, sin_theta, two_theta_deg,
                    lab.line_ratio[s, i], lab.wavelength_ratio[s], draws.zero_shift_deg[s], lab.sample_displacement_deg[s], lab.axial_divergence_deg[s], lab.defocus_box_deg[s], strain_deg, size_deg, draws.caglioti_u_deg2[s],
                    draws.caglioti_v_deg2[s], draws.caglioti_w_deg2[s], tolerance,
                )  # fmt: skip


@nb.njit(cache=True, error_model="numpy")
def render_lab_sample(
    out: np.ndarray,
    cdf: np.ndarray,
    s: int,
    first_bin: int,
    end_bin: int,
    grid: BinGrid,
    sticks: StickTable,
    draws: MixtureDraws,
    constants: RecipeConstants,
    lab: LabPhysics,
) -> None:
    """Sample s of the lab recipe, with a rendering cut that follows its counting noise: a first pass renders
    the strong Kα1 lines with A.1's cut to bound the pattern's highest bin M from below (every contribution is
    positive), then the cut becomes tolerance_per_noise × M_lower × noise_floor, a fraction of the smallest
    counting-noise std the pattern can have, and everything is rendered."""
    if end_bin <= first_bin:
        return
    _render_lab_phases(
        out, cdf, s, first_bin, end_bin, grid, sticks, draws, constants, lab, draws.tail_tolerance[s], True
    )
    highest = out[first_bin:end_bin].max()
    out[first_bin:end_bin] = 0.0
    tolerance = lab.tolerance_per_noise * highest * lab.noise_floor[s]
    if not tolerance > 0.0:
        tolerance = draws.tail_tolerance[s]
    _render_lab_phases(out, cdf, s, first_bin, end_bin, grid, sticks, draws, constants, lab, tolerance, False)


@nb.njit(cache=True, parallel=True, error_model="numpy")
def render_batch(
    mixture: np.ndarray,
    window_bins: np.ndarray,
    grid: BinGrid,
    sticks: StickTable,
    draws: MixtureDraws,
    constants: RecipeConstants,
    table: WidthTable | None,
    lab: LabPhysics | None,
) -> None:
    """Mixture of each sample s of `draws`, every stick with its own TCH width, into mixture[s] (n, n_bins)
    inside its window_bins[s] (n, 2); one sample per parallel task, so the result does not depend on threads.

    table None: the `exact` engine, each stick integrated analytically over its bins (add_pseudo_voigt_binned).
    A WidthTable: A.1's LUT variable-width convolution, the same sticks, areas, widths, zero-shifted positions
    and support, only the bin-integrated kernel read from the tables (add_pseudo_voigt_lut). numba compiles
    each case on its own (the `is None` test is resolved at compile time). Sticks whose area is below the
    sample's tolerance are skipped: none of their bins could reach it.

    lab None: A.1, one line per stick. A LabPhysics: the lab recipe's lines, texture, displacement and
    instrument frame, with a cut that follows the counting noise (`render_lab_sample`).
    """
    for s in nb.prange(mixture.shape[0]):
        out = mixture[s]
        first_bin = window_bins[s, 0]
        end_bin = window_bins[s, 1]
        cdf = np.empty(mixture.shape[1] + 1 + EDGE_PAD)
        if lab is not None:
            render_lab_sample(out, cdf, s, first_bin, end_bin, grid, sticks, draws, constants, lab)
            continue
        tolerance = draws.tail_tolerance[s]
        zero_shift_deg = draws.zero_shift_deg[s]
        caglioti_u = draws.caglioti_u_deg2[s]
        caglioti_v = draws.caglioti_v_deg2[s]
        caglioti_w = draws.caglioti_w_deg2[s]
        for k in range(draws.n_phases[s]):
            m = draws.material[s, k]
            scale = draws.weight[s, k] * material_scale(sticks, m, constants.normalization_mode)
            coefficients = draws.orientation_coefficients[s, k]
            oriented = np.any(coefficients)
            orientation_mean = draws.orientation_mean[s, k]
            strain_deg, size_deg = phase_width_factors(
                draws.microstrain[s, k], draws.crystallite_size_nm[s, k], constants
            )
            # Per-stick calls get scalars, not the StickTable: every array handed to a call is reference-counted,
            # which for the seven arrays of the table doubled the time per stick.
            for p in range(sticks.offsets[m], sticks.offsets[m + 1]):
                two_theta_deg = sticks.two_theta_deg[p]
                area = stick_area(
                    scale, sticks.intensity[p], two_theta_deg, sticks.sin_pi_t[p], sticks.cos_pi_t[p], oriented,
                    coefficients, orientation_mean, constants, grid,
                )  # fmt: skip
                if area < tolerance:
                    continue
                fwhm, eta = stick_fwhm_eta(
                    sticks.tan_theta[p],
                    sticks.sec_theta[p],
                    strain_deg,
                    size_deg,
                    sticks.tan_theta[p],
                    1.0,
                    caglioti_u,
                    caglioti_v,
                    caglioti_w,
                )
                center_deg = two_theta_deg + zero_shift_deg
                if table is None:
                    add_pseudo_voigt_binned(
                        out, cdf, first_bin, end_bin, grid.lo_deg, grid.bin_width_deg, center_deg, area, fwhm, eta,
                        tolerance,
                    )  # fmt: skip
                else:
                    add_pseudo_voigt_lut(
                        out, first_bin, end_bin, grid.lo_deg, grid.bin_width_deg, center_deg, area, fwhm, eta,
                        tolerance, table,
                    )  # fmt: skip


_SOFTPLUS_SERIES_LIMIT = 0.75


@nb.njit(cache=True)
def _softplus_series(x: float) -> float:
    """Taylor series of log(1 + e^x) at 0: error < 6e-9 for |x| < 0.75, no exp or log."""
    x2 = x * x
    return (
        0.6931471805599453
        + 0.5 * x
        + x2
        * (0.125 - x2 * (1.0 / 192.0 - x2 * (1.0 / 2880.0 - x2 * (17.0 / 645120.0 - x2 * 31.0 / 14515200.0))))
    )


@nb.njit(cache=True)
def softplus_(x: float) -> float:
    """log(1 + e^x). Near 0, where the A.1 baseline lives, the Taylor series (error < 6e-9 for |x| < 0.75)
    replaces an exp and a log1p per bin."""
    if abs(x) < _SOFTPLUS_SERIES_LIMIT:
        return _softplus_series(x)
    return max(x, 0.0) + math.log1p(math.exp(-abs(x)))


@nb.njit(cache=True)
def _top_values(values: np.ndarray, count: int) -> np.ndarray:
    """The `count` largest values, ascending, by one pass with a small sorted buffer (insertion)."""
    top = np.sort(values[:count])
    for i in range(count, values.shape[0]):
        v = values[i]
        if v > top[0]:
            j = 0
            while j + 1 < count and top[j + 1] < v:
                top[j] = top[j + 1]
                j += 1
            top[j] = v
    return top


@nb.njit(cache=True)
def percentile_linear(values: np.ndarray, percentile: float) -> float:
    """np.percentile(values, percentile) with numpy's default linear interpolation, by selection not sorting.

    A high percentile (at most 64 values above its rank, e.g. the 99th of the A.1 window) is found with one
    pass keeping the largest values; otherwise with np.partition. Both give the same order statistics.
    """
    n = values.shape[0]
    position = percentile / 100.0 * (n - 1)
    lo = int(math.floor(position))
    frac = position - lo
    if lo + 1 >= n:
        a = values.max()
        return a
    if n - lo <= 64:
        top = _top_values(values, n - lo)
        a = top[0]
        b = top[1]
    else:
        part = np.partition(values, lo)
        a = part[lo]
        b = part[lo + 1 :].min()
    # numpy's _lerp, written the same way so that the results agree to the last bit.
    diff = b - a
    return b - diff * (1.0 - frac) if frac >= 0.5 else a + diff * frac


@nb.njit(cache=True)
def normalise_window(values: np.ndarray, target: np.ndarray, percentile: float) -> None:
    """target = values / their `percentile` (numpy's linear interpolation), or values themselves when that is
    <= 0: the normalisation contract of both recipes (module docstring of recipe.py)."""
    level = percentile_linear(values, percentile)
    if level <= 0.0:
        level = 1.0
    for i in range(values.shape[0]):
        target[i] = values[i] / level


@nb.njit(cache=True, error_model="numpy", fastmath={"contract"})
def finish_sample(
    mixture: np.ndarray,
    out: np.ndarray,
    s: int,
    first_bin: int,
    end_bin: int,
    grid: BinGrid,
    background: Background,
) -> None:
    """Background, floor, noise, clip at 0 and percentile normalisation of sample s inside its window; 0
    outside."""
    out[:first_bin] = 0.0
    out[max(end_bin, first_bin) :] = 0.0
    if end_bin <= first_bin:
        return
    n = end_bin - first_bin
    step = grid.bin_width_deg / grid.span_deg
    t0 = (first_bin + 0.5) * step
    # Baseline polynomial first, in a loop of its own so that it vectorises.
    softplus = np.empty(n)
    baseline_coefficients = background.baseline_coefficients[s]
    n_coef = baseline_coefficients.shape[0]
    largest = 0.0
    for i in range(n):
        t = t0 + i * step
        poly = 0.0
        for j in range(n_coef - 1, -1, -1):
            poly = poly * t + baseline_coefficients[j]
        softplus[i] = poly
        largest = max(largest, abs(poly))
    if largest < _SOFTPLUS_SERIES_LIMIT:
        for i in range(n):
            softplus[i] = _softplus_series(softplus[i])
    else:
        for i in range(n):
            softplus[i] = softplus_(softplus[i])
    mix = mixture[first_bin:end_bin]
    noise = background.standard_normal[s, first_bin:end_bin]
    baseline_amplitude = background.baseline_amplitude[s]
    floor_offset = background.floor_offset[s]
    floor_slope = background.floor_slope[s]
    noise_sigma = background.noise_sigma[s]
    values = np.empty(n)
    multiplicative = 1.0 if background.baseline_mode == MULTIPLICATIVE else 0.0
    for i in range(n):
        t = t0 + i * step
        baseline = baseline_amplitude * softplus[i]
        x = mix[i] * (1.0 + multiplicative * baseline) + (1.0 - multiplicative) * baseline
        x += floor_offset + floor_slope * t + noise_sigma * noise[i]
        values[i] = max(x, 0.0)
    normalise_window(values, out[first_bin:end_bin], background.percentile)


@nb.njit(cache=True, parallel=True)
def finish_batch(
    mixture: np.ndarray, out: np.ndarray, window_bins: np.ndarray, grid: BinGrid, background: Background
) -> None:
    """finish_sample for each row of `mixture` into `out`; samples are independent, so the result does not
    depend on threads."""
    for s in nb.prange(mixture.shape[0]):
        finish_sample(mixture[s], out[s], s, window_bins[s, 0], window_bins[s, 1], grid, background)


# Below this mean the Poisson quantile is found by searching the CDF, above it by the Cornish-Fisher expansion,
# which is then within one count of the exact quantile (docs/physics.md, "The lab recipe").
POISSON_SEARCH_BELOW = 16.0


@nb.njit(cache=True)
def poisson_from_normal(mean: float, z: float) -> float:
    """A Poisson(mean) draw from the unit normal z by inversion at u = Φ(z): exact CDF search below
    POISSON_SEARCH_BELOW, ⌊mean + √mean z + (z² - 1)/6 + ½⌋ (clipped at 0) above."""
    if mean <= 0.0:
        return 0.0
    if mean >= POISSON_SEARCH_BELOW:
        return max(math.floor(mean + math.sqrt(mean) * z + (z * z - 1.0) / 6.0 + 0.5), 0.0)
    u = 0.5 * (1.0 + erf_fast(z / _SQRT2))
    probability = math.exp(-mean)
    cdf = probability
    k = 0
    # The bound only stops a u within rounding of 1 from searching forever (P(k > bound) < 1e-12).
    while cdf < u and k < 64:
        k += 1
        probability *= mean / k
        cdf += probability
    return float(k)


@nb.njit(cache=True, error_model="numpy")
def finish_lab_sample(
    mixture: np.ndarray,
    out: np.ndarray,
    s: int,
    first_bin: int,
    end_bin: int,
    grid: BinGrid,
    background: LabBackground,
) -> None:
    """Lab background, Poisson counts (minus the expected background when the sample is delivered
    background-subtracted, clipped at 0) and percentile normalisation of sample s inside its window; 0 outside
    (docs/physics.md, "The lab recipe")."""
    out[:first_bin] = 0.0
    out[max(end_bin, first_bin) :] = 0.0
    if end_bin <= first_bin:
        return
    n = end_bin - first_bin
    mix = mixture[first_bin:end_bin]
    highest = mix.max()
    if highest <= 0.0:
        highest = 1.0
    chebyshev = background.chebyshev[s]
    n_coef = chebyshev.shape[0]
    level = background.level[s]
    hump_height = background.hump_height[s]
    hump_center = background.hump_center_deg[s]
    hump_scale = 4.0 * math.log(2.0) / background.hump_fwhm_deg[s] ** 2
    air_height = background.air_scatter_height[s]
    air_rate = 1.0 / background.air_scatter_decay_deg[s]
    counts = background.counts_at_max[s]
    subtracted = background.background_subtracted[s]
    noise = background.standard_normal[s, first_bin:end_bin]
    first_center = grid.lo_deg + (first_bin + 0.5) * grid.bin_width_deg
    u_step = 2.0 / (n - 1) if n > 1 else 0.0
    values = np.empty(n)
    for i in range(n):
        u = -1.0 + i * u_step if n > 1 else 0.0
        log_background = 0.0
        t_prev = 1.0
        t_cur = u
        for j in range(n_coef):
            log_background += chebyshev[j] * t_cur
            t_prev, t_cur = t_cur, 2.0 * u * t_cur - t_prev
        offset = i * grid.bin_width_deg
        b = level * math.exp(log_background)
        if hump_height > 0.0:
            d = first_center + offset - hump_center
            b += hump_height * math.exp(-hump_scale * d * d)
        if air_height > 0.0:
            b += air_height * math.exp(-offset * air_rate)
        value = poisson_from_normal(counts * (mix[i] / highest + b), noise[i])
        if subtracted:
            value = max(value - counts * b, 0.0)
        values[i] = value
    normalise_window(values, out[first_bin:end_bin], background.percentile)


@nb.njit(cache=True, parallel=True)
def finish_lab_batch(
    mixture: np.ndarray, out: np.ndarray, window_bins: np.ndarray, grid: BinGrid, background: LabBackground
) -> None:
    """finish_lab_sample for each row; samples are independent, so the result does not depend on threads."""
    for s in nb.prange(mixture.shape[0]):
        finish_lab_sample(mixture[s], out[s], s, window_bins[s, 0], window_bins[s, 1], grid, background)


@nb.njit(cache=True)
def deposit_sticks(
    two_theta_deg: np.ndarray, intensity: np.ndarray, grid_lo_deg: float, bin_width_deg: float, n_bins: int
) -> np.ndarray:
    """Split each stick linearly between its two nearest bin centres (area and centroid kept); float64."""
    out = np.zeros(n_bins)
    for p in range(two_theta_deg.shape[0]):
        position = (two_theta_deg[p] - grid_lo_deg) / bin_width_deg
        if position < 0.0 or position >= n_bins:
            continue
        x = position - 0.5
        i0 = int(math.floor(x))
        frac = x - i0
        if i0 < 0:
            out[0] += intensity[p]
        elif i0 >= n_bins - 1:
            out[n_bins - 1] += intensity[p]
        else:
            out[i0] += (1.0 - frac) * intensity[p]
            out[i0 + 1] += frac * intensity[p]
    return out
