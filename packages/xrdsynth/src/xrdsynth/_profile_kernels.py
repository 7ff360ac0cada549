"""Numba kernels of the mixture recipe (A.1). Small, pure functions; the typed API lives in profiles.py/recipe.py.

Conventions: angles in degrees 2θ unless a name says otherwise; the grid is uniform with `grid_lo_deg`,
`bin_width_deg`, `n_bins`; bin b covers [grid_lo_deg + b·bin_width_deg, grid_lo_deg + (b+1)·bin_width_deg).
Rendered values are intensity per bin (peak area in the bin), accumulated in float64.
"""

from __future__ import annotations

import math

import numba as nb
import numpy as np

_FWHM_TO_SIGMA = 1.0 / (2.0 * math.sqrt(2.0 * math.log(2.0)))
_SQRT2 = math.sqrt(2.0)
# erf(4.6) = 1 - 2e-11: beyond this the Gaussian CDF is flat to float64 rendering precision.
_ERF_SATURATION = 4.6
_DEG = math.pi / 180.0

STRONGEST_LINE = 0
TOTAL_INTENSITY = 1
MULTIPLICATIVE = 0
ADDITIVE = 1


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


@nb.njit(cache=True)
def sample_fwhms_deg(
    two_theta_deg: float,
    microstrain: float,
    strain_fwhm_factor: float,
    crystallite_size_nm: float,
    scherrer_k: float,
    wavelength_nm: float,
    caglioti_u: float,
    caglioti_v: float,
    caglioti_w: float,
) -> tuple[float, float]:
    """(Gaussian, Lorentzian) FWHM in degrees: strain and instrument in quadrature, Scherrer size."""
    theta = 0.5 * two_theta_deg * _DEG
    tan_t = math.tan(theta)
    strain_deg = strain_fwhm_factor * microstrain * tan_t / _DEG
    instrument_deg2 = max(caglioti_u * tan_t * tan_t + caglioti_v * tan_t + caglioti_w, 0.0)
    gauss = math.sqrt(strain_deg * strain_deg + instrument_deg2)
    # 1/cosθ = sqrt(1 + tan²θ) saves a second trigonometric call per peak.
    lorentz = scherrer_k * wavelength_nm * math.sqrt(1.0 + tan_t * tan_t) / crystallite_size_nm / _DEG
    return gauss, lorentz


@nb.njit(cache=True)
def _atan_difference(a: float, b: float) -> float:
    """atan(b) - atan(a), cheap and accurate in the far tails where both are close."""
    ab = a * b
    if ab > -1.0:
        z = (b - a) / (1.0 + ab)
        if abs(z) < 0.1:
            z2 = z * z
            return z * (1.0 - z2 * (1.0 / 3.0 - z2 * (0.2 - z2 * (1.0 / 7.0 - z2 / 9.0))))
        return math.atan(z)
    return math.atan(b) - math.atan(a)


@nb.njit(cache=True)
def _clipped_erf(z: float, z_cut: float) -> float:
    """erf(z), saturated to ±1 beyond ±z_cut (the Gaussian tail there is below the rendering tolerance)."""
    if z >= z_cut:
        return 1.0
    if z <= -z_cut:
        return -1.0
    return math.erf(z)


@nb.njit(cache=True)
def rendering_extent(
    area: float, fwhm_deg: float, eta: float, bin_width_deg: float, tail_tolerance: float
) -> tuple[float, float]:
    """(erf argument beyond which the Gaussian part is dropped, half-width in degrees of the rendered support).

    Each part is rendered out to where one bin would receive less than `tail_tolerance`: for the Gaussian
    where its bin value (1-η)·area·min(1, Δ/(σ√2π))·exp(-z²) falls below it (z = x/(σ√2), at most 4.6), for
    the Lorentzian where the far tail η·area·Δ·γ/(π x²) does. A half-width of 0 means: skip the peak.
    """
    sigma = fwhm_deg * _FWHM_TO_SIGMA
    gauss_peak = (1.0 - eta) * area * min(1.0, bin_width_deg / (sigma * math.sqrt(2.0 * math.pi)))
    z_cut = 0.0
    if gauss_peak > tail_tolerance:
        z_cut = min(math.sqrt(math.log(gauss_peak / tail_tolerance)), _ERF_SATURATION)
    half = z_cut * sigma * _SQRT2
    if eta > 0.0 and eta * area > tail_tolerance:
        half = max(half, math.sqrt(eta * area * bin_width_deg * 0.5 * fwhm_deg / (math.pi * tail_tolerance)))
    return z_cut, half


@nb.njit(cache=True)
def add_pseudo_voigt_binned(
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
) -> None:
    """Add a pseudo-Voigt of `area`, integrated exactly over each bin (CDF differences), to out[first:end].

    The support is limited by `rendering_extent`: bins that would receive less than `tail_tolerance`.
    """
    if area < tail_tolerance or fwhm_deg <= 0.0:
        return
    z_cut, half = rendering_extent(area, fwhm_deg, eta, bin_width_deg, tail_tolerance)
    if half <= 0.0:
        return
    # Clamp in floating point first: `half` can be astronomically large for a tiny tolerance.
    b0 = int(max(float(first_bin), math.floor((center_deg - half - grid_lo_deg) / bin_width_deg)))
    b1 = int(min(float(end_bin), math.floor((center_deg + half - grid_lo_deg) / bin_width_deg) + 1.0))
    if b0 >= b1:
        return
    sigma = fwhm_deg * _FWHM_TO_SIGMA
    inv_g = 1.0 / (sigma * _SQRT2)
    inv_l = 2.0 / fwhm_deg
    w_gauss = 0.5 * (1.0 - eta) * area if z_cut > 0.0 else 0.0
    w_lorentz = eta * area / math.pi
    x = grid_lo_deg + b0 * bin_width_deg - center_deg
    erf_prev = _clipped_erf(x * inv_g, z_cut)
    zl_prev = x * inv_l
    for b in range(b0, b1):
        x = grid_lo_deg + (b + 1) * bin_width_deg - center_deg
        erf_next = _clipped_erf(x * inv_g, z_cut)
        zl_next = x * inv_l
        out[b] += w_gauss * (erf_next - erf_prev) + w_lorentz * _atan_difference(zl_prev, zl_next)
        erf_prev = erf_next
        zl_prev = zl_next


@nb.njit(cache=True)
def orientation_envelope(
    t: float,
    coefficients: np.ndarray,
    chebyshev_order: int,
    mean_value: float,
    clip_lo: float,
    clip_hi: float,
) -> float:
    """Unit-mean, clipped envelope 1 + Σ c_j φ_j(t) at normalised angle t in [0, 1].

    φ = T_1..T_order(2t-1), then sin(kπt), cos(kπt) for k = 1, 2, ...; `coefficients` already include the
    strength and the 1/Σ|c| bound, `mean_value` is the envelope's mean over the grid centres.
    """
    n = coefficients.shape[0]
    u = 2.0 * t - 1.0
    value = 1.0
    t_prev = 1.0
    t_cur = u
    for j in range(chebyshev_order):
        value += coefficients[j] * t_cur
        t_prev, t_cur = t_cur, 2.0 * u * t_cur - t_prev
    s1 = math.sin(math.pi * t)
    c1 = math.cos(math.pi * t)
    s = s1
    c = c1
    for j in range(chebyshev_order, n, 2):
        value += coefficients[j] * s + coefficients[j + 1] * c
        s, c = s * c1 + c * s1, c * c1 - s * s1
    return min(max(value / mean_value, clip_lo), clip_hi)


@nb.njit(cache=True)
def material_scale(peak_offsets: np.ndarray, peak_intensity: np.ndarray, material: int, mode: int) -> float:
    """1 / (strongest stick) or 1 / (sum of sticks) of a material; 0 for a material without intensity."""
    total = 0.0
    for p in range(peak_offsets[material], peak_offsets[material + 1]):
        if mode == STRONGEST_LINE:
            total = max(total, peak_intensity[p])
        else:
            total += peak_intensity[p]
    return 1.0 / total if total > 0.0 else 0.0


@nb.njit(cache=True)
def render_exact_sample(
    out: np.ndarray,
    first_bin: int,
    end_bin: int,
    grid_lo_deg: float,
    bin_width_deg: float,
    grid_span_deg: float,
    peak_offsets: np.ndarray,
    peak_two_theta_deg: np.ndarray,
    peak_intensity: np.ndarray,
    materials: np.ndarray,
    n_phases: int,
    weights: np.ndarray,
    orientation_coefficients: np.ndarray,
    orientation_mean: np.ndarray,
    orientation_order: int,
    orientation_clip_lo: float,
    orientation_clip_hi: float,
    microstrain: np.ndarray,
    crystallite_size_nm: np.ndarray,
    zero_shift_deg: float,
    caglioti_u: float,
    caglioti_v: float,
    caglioti_w: float,
    strain_fwhm_factor: float,
    scherrer_k: float,
    wavelength_nm: float,
    normalization_mode: int,
    tail_tolerance: float,
) -> None:
    """Mixture of one sample, every stick rendered analytically with its own TCH width, into out[first:end]."""
    for k in range(n_phases):
        m = materials[k]
        scale = weights[k] * material_scale(peak_offsets, peak_intensity, m, normalization_mode)
        coefficients = orientation_coefficients[k]
        oriented = np.any(coefficients)
        for p in range(peak_offsets[m], peak_offsets[m + 1]):
            two_theta = peak_two_theta_deg[p]
            t = (two_theta - grid_lo_deg) / grid_span_deg
            area = scale * peak_intensity[p]
            if oriented:
                area *= orientation_envelope(
                    t,
                    coefficients,
                    orientation_order,
                    orientation_mean[k],
                    orientation_clip_lo,
                    orientation_clip_hi,
                )
            gauss, lorentz = sample_fwhms_deg(
                two_theta,
                microstrain[k],
                strain_fwhm_factor,
                crystallite_size_nm[k],
                scherrer_k,
                wavelength_nm,
                caglioti_u,
                caglioti_v,
                caglioti_w,
            )
            fwhm, eta = tch_fwhm_eta(gauss, lorentz)
            add_pseudo_voigt_binned(
                out,
                first_bin,
                end_bin,
                grid_lo_deg,
                bin_width_deg,
                two_theta + zero_shift_deg,
                area,
                fwhm,
                eta,
                tail_tolerance,
            )


@nb.njit(cache=True)
def build_lut_tables(fwhm_levels_deg: np.ndarray, bin_width_deg: float, max_offset: int) -> tuple:
    """Unit-area bin-integrated Gaussian and Lorentzian kernels, (levels, 2·max_offset+1), centred at max_offset."""
    n_levels = fwhm_levels_deg.shape[0]
    gauss = np.zeros((n_levels, 2 * max_offset + 1))
    lorentz = np.zeros((n_levels, 2 * max_offset + 1))
    for level in range(n_levels):
        add_pseudo_voigt_binned(
            gauss[level], 0, 2 * max_offset + 1, -(max_offset + 0.5) * bin_width_deg, bin_width_deg,
            0.0, 1.0, fwhm_levels_deg[level], 0.0, 1e-300,
        )  # fmt: skip
        add_pseudo_voigt_binned(
            lorentz[level], 0, 2 * max_offset + 1, -(max_offset + 0.5) * bin_width_deg, bin_width_deg,
            0.0, 1.0, fwhm_levels_deg[level], 1.0, 1e-300,
        )  # fmt: skip
    return gauss, lorentz


@nb.njit(cache=True)
def add_lut_kernel(
    out: np.ndarray,
    first_bin: int,
    end_bin: int,
    source_bin: int,
    amount: float,
    fwhm_deg: float,
    eta: float,
    bin_width_deg: float,
    log_fwhm_min: float,
    log_fwhm_step: float,
    gauss_table: np.ndarray,
    lorentz_table: np.ndarray,
    tail_tolerance: float,
) -> None:
    """Spread `amount` from source_bin with the pseudo-Voigt kernel interpolated between two LUT levels."""
    if amount < tail_tolerance or fwhm_deg <= 0.0:
        return
    n_levels, width = gauss_table.shape
    max_offset = (width - 1) // 2
    position = (math.log(fwhm_deg) - log_fwhm_min) / log_fwhm_step
    position = min(max(position, 0.0), n_levels - 1.0)
    level = min(int(position), n_levels - 2)
    frac = position - level
    half_deg = rendering_extent(amount, fwhm_deg, eta, bin_width_deg, tail_tolerance)[1]
    if half_deg <= 0.0:
        return
    half = int(min(half_deg / bin_width_deg + 1.0, float(max_offset)))
    lo = max(first_bin - source_bin, -half)
    hi = min(end_bin - source_bin, half + 1)
    a0 = amount * (1.0 - frac) * (1.0 - eta)
    a1 = amount * (1.0 - frac) * eta
    a2 = amount * frac * (1.0 - eta)
    a3 = amount * frac * eta
    g0 = gauss_table[level]
    l0 = lorentz_table[level]
    g1 = gauss_table[level + 1]
    l1 = lorentz_table[level + 1]
    for o in range(lo, hi):
        i = o + max_offset
        out[source_bin + o] += a0 * g0[i] + a1 * l0[i] + a2 * g1[i] + a3 * l1[i]


@nb.njit(cache=True)
def render_lut_sample(
    out: np.ndarray,
    scratch: np.ndarray,
    first_bin: int,
    end_bin: int,
    grid_lo_deg: float,
    bin_width_deg: float,
    grid_span_deg: float,
    dense_profile: np.ndarray,
    peak_offsets: np.ndarray,
    peak_intensity: np.ndarray,
    materials: np.ndarray,
    n_phases: int,
    weights: np.ndarray,
    orientation_coefficients: np.ndarray,
    orientation_mean: np.ndarray,
    orientation_order: int,
    orientation_clip_lo: float,
    orientation_clip_hi: float,
    microstrain: np.ndarray,
    crystallite_size_nm: np.ndarray,
    zero_shift_deg: float,
    caglioti_u: float,
    caglioti_v: float,
    caglioti_w: float,
    strain_fwhm_factor: float,
    scherrer_k: float,
    wavelength_nm: float,
    normalization_mode: int,
    log_fwhm_min: float,
    log_fwhm_step: float,
    gauss_table: np.ndarray,
    lorentz_table: np.ndarray,
    tail_tolerance: float,
) -> None:
    """A.1's variable-width convolution of the dense clean profiles, then the zero shift by linear resampling.

    Each clean bin is spread with the kernel of its own angle (a scatter, so area is kept); instrument
    broadening is folded into that kernel. `scratch` (n_bins, float64) holds the unshifted mixture.
    """
    n_bins = dense_profile.shape[1]
    shift_bins = zero_shift_deg / bin_width_deg
    # The unshifted mixture is needed one bin beyond the window on the side the shift reads from.
    margin = int(math.ceil(abs(shift_bins))) + 1
    lo = max(first_bin - margin, 0)
    hi = min(end_bin + margin, n_bins)
    scratch[:] = 0.0
    for k in range(n_phases):
        m = materials[k]
        scale = weights[k] * material_scale(peak_offsets, peak_intensity, m, normalization_mode)
        coefficients = orientation_coefficients[k]
        oriented = np.any(coefficients)
        row = dense_profile[m]
        for j in range(n_bins):
            value = row[j]
            if value == 0.0:
                continue
            two_theta = grid_lo_deg + (j + 0.5) * bin_width_deg
            t = (j + 0.5) * bin_width_deg / grid_span_deg
            amount = scale * value
            if oriented:
                amount *= orientation_envelope(
                    t,
                    coefficients,
                    orientation_order,
                    orientation_mean[k],
                    orientation_clip_lo,
                    orientation_clip_hi,
                )
            gauss, lorentz = sample_fwhms_deg(
                two_theta,
                microstrain[k],
                strain_fwhm_factor,
                crystallite_size_nm[k],
                scherrer_k,
                wavelength_nm,
                caglioti_u,
                caglioti_v,
                caglioti_w,
            )
            fwhm, eta = tch_fwhm_eta(gauss, lorentz)
            add_lut_kernel(
                scratch, lo, hi, j, amount, fwhm, eta, bin_width_deg,
                log_fwhm_min, log_fwhm_step, gauss_table, lorentz_table, tail_tolerance,
            )  # fmt: skip
    for i in range(first_bin, end_bin):
        source = i - shift_bins
        i0 = int(math.floor(source))
        frac = source - i0
        left = scratch[i0] if 0 <= i0 < n_bins else 0.0
        right = scratch[i0 + 1] if 0 <= i0 + 1 < n_bins else 0.0
        out[i] += (1.0 - frac) * left + frac * right


@nb.njit(cache=True)
def softplus_(x: float) -> float:
    """log(1 + e^x). Near 0, where the A.1 baseline lives, the Taylor series (error < 6e-9 for |x| < 0.75)
    replaces an exp and a log1p per bin."""
    if abs(x) < 0.75:
        x2 = x * x
        return (
            0.6931471805599453
            + 0.5 * x
            + x2
            * (
                0.125
                - x2 * (1.0 / 192.0 - x2 * (1.0 / 2880.0 - x2 * (17.0 / 645120.0 - x2 * 31.0 / 14515200.0)))
            )
        )
    return max(x, 0.0) + math.log1p(math.exp(-abs(x)))


@nb.njit(cache=True)
def percentile_linear(values: np.ndarray, percentile: float) -> float:
    """np.percentile(values, percentile) with numpy's default linear interpolation, by selection not sorting."""
    n = values.shape[0]
    position = percentile / 100.0 * (n - 1)
    lo = int(math.floor(position))
    frac = position - lo
    part = np.partition(values, lo)
    a = part[lo]
    if lo + 1 >= n:
        return a
    b = part[lo + 1 :].min()
    # numpy's _lerp, written the same way so that the results agree to the last bit.
    diff = b - a
    return b - diff * (1.0 - frac) if frac >= 0.5 else a + diff * frac


@nb.njit(cache=True)
def finish_sample(
    mixture: np.ndarray,
    out: np.ndarray,
    first_bin: int,
    end_bin: int,
    grid_lo_deg: float,
    bin_width_deg: float,
    grid_span_deg: float,
    baseline_coefficients: np.ndarray,
    baseline_amplitude: float,
    baseline_mode: int,
    floor_offset: float,
    floor_slope: float,
    noise_sigma: float,
    standard_normal: np.ndarray,
    percentile: float,
) -> None:
    """Background, floor, noise, clip at 0 and percentile normalisation inside the window; 0 outside."""
    out[:] = 0.0
    if end_bin <= first_bin:
        return
    values = np.empty(end_bin - first_bin)
    n_coef = baseline_coefficients.shape[0]
    for i in range(first_bin, end_bin):
        t = (i + 0.5) * bin_width_deg / grid_span_deg
        poly = 0.0
        for j in range(n_coef - 1, -1, -1):
            poly = poly * t + baseline_coefficients[j]
        softplus = softplus_(poly)
        x = mixture[i]
        if baseline_mode == MULTIPLICATIVE:
            x *= 1.0 + baseline_amplitude * softplus
        else:
            x += baseline_amplitude * softplus
        x += floor_offset + floor_slope * t + noise_sigma * standard_normal[i]
        values[i - first_bin] = max(x, 0.0)
    level = percentile_linear(values, percentile)
    if level > 0.0:
        values /= level
    for i in range(first_bin, end_bin):
        out[i] = values[i - first_bin]


@nb.njit(cache=True, parallel=True)
def finish_batch(
    mixture: np.ndarray,
    out: np.ndarray,
    window_bins: np.ndarray,
    grid_lo_deg: float,
    bin_width_deg: float,
    grid_span_deg: float,
    baseline_coefficients: np.ndarray,
    baseline_amplitude: np.ndarray,
    baseline_mode: int,
    floor_offset: np.ndarray,
    floor_slope: np.ndarray,
    noise_sigma: np.ndarray,
    standard_normal: np.ndarray,
    percentile: float,
) -> None:
    """finish_sample over a batch; samples are independent, so the result does not depend on threads."""
    for s in nb.prange(mixture.shape[0]):
        finish_sample(
            mixture[s], out[s], window_bins[s, 0], window_bins[s, 1], grid_lo_deg, bin_width_deg, grid_span_deg,
            baseline_coefficients[s], baseline_amplitude[s], baseline_mode, floor_offset[s], floor_slope[s],
            noise_sigma[s], standard_normal[s], percentile,
        )  # fmt: skip


@nb.njit(cache=True, parallel=True)
def render_exact_batch(
    mixture, window_bins, grid_lo_deg, bin_width_deg, grid_span_deg,
    peak_offsets, peak_two_theta_deg, peak_intensity,
    materials, n_phases, weights, orientation_coefficients, orientation_mean, orientation_order,
    orientation_clip_lo, orientation_clip_hi, microstrain, crystallite_size_nm, zero_shift_deg,
    caglioti_u, caglioti_v, caglioti_w, strain_fwhm_factor, scherrer_k, wavelength_nm,
    normalization_mode, tail_tolerance,
):  # fmt: skip
    """render_exact_sample over a batch (one sample per parallel task)."""
    for s in nb.prange(mixture.shape[0]):
        render_exact_sample(
            mixture[s], window_bins[s, 0], window_bins[s, 1], grid_lo_deg, bin_width_deg, grid_span_deg,
            peak_offsets, peak_two_theta_deg, peak_intensity, materials[s], n_phases[s], weights[s],
            orientation_coefficients[s], orientation_mean[s], orientation_order, orientation_clip_lo,
            orientation_clip_hi, microstrain[s], crystallite_size_nm[s], zero_shift_deg[s], caglioti_u[s],
            caglioti_v[s], caglioti_w[s], strain_fwhm_factor, scherrer_k, wavelength_nm, normalization_mode,
            tail_tolerance,
        )  # fmt: skip


@nb.njit(cache=True, parallel=True)
def render_lut_batch(
    mixture, window_bins, grid_lo_deg, bin_width_deg, grid_span_deg, dense_profile, peak_offsets, peak_intensity,
    materials, n_phases, weights, orientation_coefficients, orientation_mean, orientation_order,
    orientation_clip_lo, orientation_clip_hi, microstrain, crystallite_size_nm, zero_shift_deg,
    caglioti_u, caglioti_v, caglioti_w, strain_fwhm_factor, scherrer_k, wavelength_nm, normalization_mode,
    log_fwhm_min, log_fwhm_step, gauss_table, lorentz_table, tail_tolerance,
):  # fmt: skip
    """render_lut_sample over a batch (one sample per parallel task, each with its own scratch row)."""
    n_bins = mixture.shape[1]
    for s in nb.prange(mixture.shape[0]):
        scratch = np.empty(n_bins)
        render_lut_sample(
            mixture[s], scratch, window_bins[s, 0], window_bins[s, 1], grid_lo_deg, bin_width_deg,
            grid_span_deg, dense_profile, peak_offsets, peak_intensity, materials[s], n_phases[s], weights[s],
            orientation_coefficients[s], orientation_mean[s], orientation_order, orientation_clip_lo,
            orientation_clip_hi, microstrain[s], crystallite_size_nm[s], zero_shift_deg[s], caglioti_u[s],
            caglioti_v[s], caglioti_w[s], strain_fwhm_factor, scherrer_k, wavelength_nm, normalization_mode,
            log_fwhm_min, log_fwhm_step, gauss_table, lorentz_table, tail_tolerance,
        )  # fmt: skip


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
