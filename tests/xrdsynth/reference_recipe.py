"""Plain-numpy reference of the A.1 mixture rendering: slow and written for obviousness, not speed.

It takes the parameters drawn by `xrdsynth.recipe.sample_mixture_parameters` (the sampling itself is tested
statistically) and renders them without any of the fast engine's shortcuts: every stick is integrated over
every bin edge of the whole grid (no tail truncation), formulas are written out again from the paper and
the standard references rather than imported from xrdsynth.
"""

from __future__ import annotations

import numpy as np
from scipy.special import erf

from xrdsynth.config import GridConfig, RecipeConfig
from xrdsynth.recipe import MixtureParameters, PhaseLibrary


def tch(fwhm_gauss: np.ndarray, fwhm_lorentz: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Thompson, Cox & Hastings, J. Appl. Cryst. 20 (1987) 79, eqs. for H and η."""
    g, lo = fwhm_gauss, fwhm_lorentz
    coefficients = [1.0, 2.69269, 2.42843, 4.47163, 0.07842, 1.0]
    fwhm = sum(c * g ** (5 - i) * lo**i for i, c in enumerate(coefficients)) ** 0.2
    q = lo / fwhm
    return fwhm, 1.36603 * q - 0.47719 * q**2 + 0.11116 * q**3


def envelope(
    t: np.ndarray, strength: float, raw: np.ndarray, config: RecipeConfig, t_grid: np.ndarray
) -> np.ndarray:
    """Orientation envelope 1 + s·b(t), b = Σ c_j φ_j / Σ|c_j|, divided by its grid mean, then clipped."""

    def b(x: np.ndarray) -> np.ndarray:
        u = 2 * x - 1
        basis = [np.cos(j * np.arccos(u)) for j in range(1, config.preferred_orientation_chebyshev_order + 1)]
        for k in range(1, config.preferred_orientation_fourier_terms + 1):
            basis += [np.sin(k * np.pi * x), np.cos(k * np.pi * x)]
        return sum(c * f for c, f in zip(raw, basis, strict=True)) / np.abs(raw).sum()

    mean = np.mean(1 + strength * b(t_grid))
    return np.clip((1 + strength * b(t)) / mean, *config.preferred_orientation_clip)


def render_reference(
    parameters: MixtureParameters,
    library: PhaseLibrary,
    config: RecipeConfig,
    grid: GridConfig,
    return_levels: bool = False,
    clean: bool = False,
) -> np.ndarray | tuple[np.ndarray, np.ndarray]:
    """Normalised patterns float64 (n, n_bins) for the drawn parameters (and the percentile levels (n,)).

    clean=True: the broadened mixture inside the window instead, before background, noise and normalisation.
    """
    p = parameters.params
    edges = grid.two_theta_min_deg + grid.bin_width_deg * np.arange(grid.n_bins + 1)
    centers = 0.5 * (edges[1:] + edges[:-1])
    span = grid.two_theta_max_deg - grid.two_theta_min_deg
    t_centers = (centers - grid.two_theta_min_deg) / span
    out = np.zeros((parameters.n_phases.size, grid.n_bins))
    levels = np.zeros(parameters.n_phases.size)
    for s in range(parameters.n_phases.size):
        mixture = np.zeros(grid.n_bins)
        u = config.instrument_u_deg2 + p["instrument_du_deg2"][s]
        v = config.instrument_v_deg2 + p["instrument_dv_deg2"][s]
        w = config.instrument_w_deg2 + p["instrument_dw_deg2"][s]
        for k in range(parameters.n_phases[s]):
            m = parameters.phase_material[s, k]
            sl = slice(library.peak_offsets[m], library.peak_offsets[m + 1])
            position = library.peak_two_theta_deg[sl]
            intensity = library.peak_intensity[sl].copy()
            if config.pre_mix_normalization == "strongest_line":
                intensity /= intensity.max()
            else:
                intensity /= intensity.sum()
            intensity *= parameters.phase_weight[s, k]
            if p["orientation_applied"][s, k]:
                t = (position - grid.two_theta_min_deg) / span
                raw = p["orientation_coefficients"][s, k]
                intensity *= envelope(t, p["orientation_strength"][s, k], raw, config, t_centers)
            theta = np.radians(position / 2)
            strain_rad = config.strain_fwhm_factor * p["microstrain"][s, k] * np.tan(theta)
            instrument_deg2 = u * np.tan(theta) ** 2 + v * np.tan(theta) + w
            fwhm_gauss = np.sqrt(np.degrees(strain_rad) ** 2 + instrument_deg2)
            size_nm = p["crystallite_size_nm"][s, k]
            fwhm_lorentz = np.degrees(
                config.scherrer_k * config.wavelength_angstrom / 10 / (size_nm * np.cos(theta))
            )
            fwhm, eta = tch(fwhm_gauss, fwhm_lorentz)
            x = edges[None, :] - (position + p["zero_shift_deg"][s])[:, None]
            sigma = (fwhm / (2 * np.sqrt(2 * np.log(2))))[:, None]
            gamma = (fwhm / 2)[:, None]
            cdf = (1 - eta)[:, None] * 0.5 * (1 + erf(x / (sigma * np.sqrt(2)))) + eta[:, None] * (
                0.5 + np.arctan(x / gamma) / np.pi
            )
            mixture += (intensity[:, None] * np.diff(cdf, axis=1)).sum(axis=0)
        inside = (centers >= p["window_low_deg"][s]) & (centers <= p["window_high_deg"][s])
        if clean:
            out[s, inside] = mixture[inside]
            continue
        polynomial = sum(c * t_centers**j for j, c in enumerate(p["baseline_coefficients"][s]))
        softplus = np.log1p(np.exp(polynomial))
        if config.baseline_mode == "multiplicative":
            mixture = mixture * (1 + p["baseline_amplitude"][s] * softplus)
        else:
            mixture = mixture + p["baseline_amplitude"][s] * softplus
        mixture += p["floor_offset"][s] + p["floor_slope"][s] * t_centers
        mixture += p["noise_sigma"][s] * parameters.standard_normal[s].astype(np.float64)
        values = np.clip(mixture[inside], 0, None)
        levels[s] = level = np.percentile(values, config.normalization_percentile)
        out[s, inside] = values / level if level > 0 else values
    return (out, levels) if return_levels else out


def synthetic_library(
    rng: np.random.Generator,
    n_materials: int,
    grid: GridConfig,
    peaks: tuple[int, int] = (50, 400),
    with_dense: bool = True,
) -> PhaseLibrary:
    """A library of random stick patterns of realistic size: heavy-tailed intensities scaled to max 100."""
    from xrdsynth.profiles import deposit_sticks

    counts = rng.integers(peaks[0], peaks[1] + 1, n_materials)
    offsets = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)
    position = np.concatenate(
        [np.sort(rng.uniform(grid.two_theta_min_deg, grid.two_theta_max_deg, c)) for c in counts]
    )
    intensity = np.concatenate([(lambda x: 100 * x / x.max())(rng.pareto(1.5, c) + 0.01) for c in counts])
    dense = None
    if with_dense:
        dense = np.stack(
            [
                deposit_sticks(position[a:b], intensity[a:b], grid)
                for a, b in zip(offsets[:-1], offsets[1:], strict=True)
            ]
        )
    return PhaseLibrary(
        offsets, position, intensity, rng.integers(1, 231, n_materials).astype(np.int16), dense
    )
