"""Plain-numpy reference of the lab recipe's rendering: slow and written for obviousness, not speed.

Written from docs/physics.md, "The lab recipe (beyond A.1)", not from the engine. It takes the parameters drawn
by `xrdsynth.recipe.sample_mixture_parameters` under a `RecipeConfig` with `lab` set and renders them with
none of the engine's shortcuts: every line of every stick is integrated over every bin edge of the grid (no
tail truncation), the pseudo-Voigt CDF uses scipy's erf, and the Poisson quantile below λ = 16 is scipy's
exact one. The axial-divergence aberration is a 400-point midpoint rule, converged far below the engine's
node spacing; the defocusing box is a 200-point midpoint rule (the engine's is exact). Only the anode line table (`config.anode_lines_angstrom`) and the A.1 reference's TCH mixing
rule and orientation envelope are shared with other code.
"""

from __future__ import annotations

import numpy as np
from reference_recipe import envelope, synthetic_library, tch
from scipy.special import erf
from scipy.stats import norm, poisson

from xrdsynth.config import ANODES, GridConfig, RecipeConfig, anode_lines_angstrom
from xrdsynth.recipe import MixtureParameters, PhaseLibrary

# Below this mean the spec draws the exact Poisson quantile, at and above it the Cornish-Fisher one.
EXACT_POISSON_BELOW = 16.0


def march_dollase(r: float, cosines: np.ndarray, shares: np.ndarray) -> float:
    """Σ_j ω_j (r² c_j² + (1 - c_j²)/r)^(-3/2) over one peak's reflections (Dollase 1986)."""
    c2 = cosines**2
    return float(np.sum(shares * (r**2 * c2 + (1.0 - c2) / r) ** -1.5))


def beam(anode: int, monochromatic: bool, kalpha2_ratio: float, kbeta_ratio: float):
    """(reader wavelength λ_r, [(λ_i, v_i), ...]) of one pattern's beam, in Å."""
    kalpha_mean, kalpha1, kalpha2, kbeta1 = anode_lines_angstrom(ANODES[anode])
    lines = [(kalpha1, 1.0)]
    if not monochromatic and kalpha2_ratio > 0.0:
        lines.append((kalpha2, kalpha2_ratio))
    if kbeta_ratio > 0.0:
        lines.append((kbeta1, kbeta_ratio))
    return (kalpha1 if monochromatic else kalpha_mean), lines


def _grid_axes(grid: GridConfig) -> tuple[np.ndarray, np.ndarray]:
    edges = grid.two_theta_min_deg + grid.bin_width_deg * np.arange(grid.n_bins + 1)
    return edges, 0.5 * (edges[1:] + edges[:-1])


def _check_lab(config: RecipeConfig) -> None:
    if config.lab is None:
        raise ValueError("reference_lab renders the lab recipe: RecipeConfig.lab must be set")


def render_lab_clean(
    parameters: MixtureParameters, library: PhaseLibrary, config: RecipeConfig, grid: GridConfig
) -> tuple[np.ndarray, np.ndarray]:
    """Clean mixtures float64 (n, n_bins), 0 outside the window, and the model-grid window bins int (n, 2)."""
    _check_lab(config)
    p = parameters.params
    edges, centers = _grid_axes(grid)
    span = grid.two_theta_max_deg - grid.two_theta_min_deg
    model_wavelength = config.wavelength_angstrom
    n = parameters.n_phases.size
    out = np.zeros((n, grid.n_bins))
    windows = np.zeros((n, 2), dtype=np.int64)
    for s in range(n):
        reader_wavelength, lines = beam(
            int(p["anode"][s]), bool(p["monochromatic"][s]), p["kalpha2_ratio"][s], p["kbeta_ratio"][s]
        )
        q = reader_wavelength / model_wavelength
        # The window lies in model 2θ (a d-range), as in A.1: [first bin whose centre is >= low, first bin whose
        # centre is > high).
        low, high = p["window_low_deg"][s], p["window_high_deg"][s]
        windows[s] = (np.sum(centers < low), np.sum(centers <= high))
        u = config.instrument_u_deg2 + p["instrument_du_deg2"][s]
        v = config.instrument_v_deg2 + p["instrument_dv_deg2"][s]
        w = config.instrument_w_deg2 + p["instrument_dw_deg2"][s]
        zero_shift = p["zero_shift_deg"][s]
        displacement = p["sample_displacement_deg"][s]
        mixture = np.zeros(grid.n_bins)
        for k in range(parameters.n_phases[s]):
            m = parameters.phase_material[s, k]
            first, last = library.peak_offsets[m], library.peak_offsets[m + 1]
            position = library.peak_two_theta_deg[first:last]
            area = library.peak_intensity[first:last].copy()
            area /= area.max() if config.pre_mix_normalization == "strongest_line" else area.sum()
            area *= parameters.phase_weight[s, k]
            if p["orientation_applied"][s, k]:
                t = (position - grid.two_theta_min_deg) / span
                raw = p["orientation_coefficients"][s, k]
                area *= envelope(t, p["orientation_strength"][s, k], raw, config, (centers - edges[0]) / span)
            r = p["texture_r"][s, k]
            if r != 1.0:
                axis = p["texture_axis"][s, k]
                ro = library.reflection_offsets
                area *= [
                    march_dollase(
                        r,
                        library.reflection_direction[ro[j] : ro[j + 1]] @ axis,
                        library.reflection_weight[ro[j] : ro[j + 1]],
                    )
                    for j in range(first, last)
                ]
            sin_model = np.sin(np.radians(position / 2))
            # Debye-Waller: exp(-2B s²), s = sinθ/λ at the bank's angle and wavelength.
            area *= np.exp(-2.0 * p["debye_waller_b_a2"][s, k] * (sin_model / model_wavelength) ** 2)
            log_sd = p["intensity_log_sd"][s, k]
            if log_sd:
                seed = int(p["intensity_seed"][s, k])
                area *= [intensity_factor(seed, j, log_sd) for j in range(last - first)]
            strain = p["lattice_strain"][s, k]
            if strain.any():
                # 1/d² -> (1 - 2δ)/d², δ the share-weighted mean of nᵀεn over the peak's reflections.
                ro = library.reflection_offsets
                n_j = library.reflection_direction
                delta = np.array(
                    [
                        np.sum(
                            library.reflection_weight[ro[j] : ro[j + 1]]
                            * np.einsum("ri,ij,rj->r", n_j[ro[j] : ro[j + 1]], strain, n_j[ro[j] : ro[j + 1]])
                        )
                        for j in range(first, last)
                    ]
                )
                strained = sin_model * np.sqrt(1.0 - 2.0 * delta)
                area = area * lorentz_polarisation(strained) / lorentz_polarisation(sin_model)
                sin_model = strained
            strain = config.strain_fwhm_factor * p["microstrain"][s, k]
            size_nm = p["crystallite_size_nm"][s, k]
            for wavelength, line_share in lines:
                sin_line = wavelength / reader_wavelength * sin_model
                sin_instrument = q * sin_line
                seen = (sin_line < 1.0) & (sin_instrument < 1.0)
                theta = np.arcsin(sin_line[seen])
                theta_instrument = np.arcsin(sin_instrument[seen])
                jacobian = np.cos(theta_instrument) / (q * np.cos(theta))
                center = np.degrees(2 * theta) + jacobian * (
                    zero_shift + displacement * np.cos(theta_instrument)
                )
                tan_i = np.tan(theta_instrument)
                caglioti = np.maximum(u * tan_i**2 + v * tan_i + w, 0.0)
                fwhm_gauss = np.sqrt(np.degrees(strain * np.tan(theta)) ** 2 + jacobian**2 * caglioti)
                # Scherrer in the instrument frame, at the line's own wavelength, carried onto the grid by J.
                fwhm_lorentz = jacobian * np.degrees(
                    config.scherrer_k * wavelength / 10 / (size_nm * np.cos(theta_instrument))
                )
                fwhm, eta = tch(fwhm_gauss, fwhm_lorentz)
                # Axial divergence: the aberration (1/√t - 1) on t = ε/ε_m ∈ (0, 1], ε_m = -A·cot2θ', is 2(1 - u)
                # du in u = √t; a fine midpoint rule in u stands for the exact convolution.
                extent = -jacobian * p["axial_divergence_deg"][s] / np.tan(2 * theta_instrument)
                nodes = [(0.0, 1.0)] if not p["axial_divergence_deg"][s] else _axial_midpoints()
                # Defocusing: a box of full width B (instrument 2θ, J·B on the model grid) as a midpoint rule.
                box = jacobian * p["defocus_box_deg"][s]
                box_nodes = [(0.0, 1.0)] if not p["defocus_box_deg"][s] else _box_midpoints()
                nodes = [(t, a * b, offset) for t, a in nodes for offset, b in box_nodes]
                sigma = (fwhm / (2 * np.sqrt(2 * np.log(2))))[:, None]
                for t, weight, offset in nodes:
                    x = edges[None, :] - (center + extent * t + box * offset)[:, None]
                    cdf = (1 - eta)[:, None] * 0.5 * (1 + erf(x / (sigma * np.sqrt(2)))) + eta[:, None] * (
                        0.5 + np.arctan(x / (fwhm / 2)[:, None]) / np.pi
                    )
                    mixture += ((weight * line_share * area[seen])[:, None] * np.diff(cdf, axis=1)).sum(
                        axis=0
                    )
        lo, hi = windows[s]
        out[s, lo:hi] = mixture[lo:hi]
    return out, windows


AXIAL_REFERENCE_NODES = 400


def _axial_midpoints() -> list[tuple[float, float]]:
    """(t, weight) of the midpoint rule in u = √t for the density 2(1 - u) on [0, 1]."""
    u = (np.arange(AXIAL_REFERENCE_NODES) + 0.5) / AXIAL_REFERENCE_NODES
    return list(zip(u**2, 2 * (1 - u) / AXIAL_REFERENCE_NODES, strict=True))


DEFOCUS_REFERENCE_NODES = 200


def _box_midpoints() -> list[tuple[float, float]]:
    """(offset, weight) of the midpoint rule for the uniform density on offsets in [-1/2, 1/2] (units of B)."""
    offsets = (np.arange(DEFOCUS_REFERENCE_NODES) + 0.5) / DEFOCUS_REFERENCE_NODES - 0.5
    return [(float(x), 1.0 / DEFOCUS_REFERENCE_NODES) for x in offsets]


def intensity_factor(seed: int, peak: int, log_sd: float) -> float:
    """exp(σ√3·v), v = 2u - 1 with u the top 53 bits of splitmix64(seed·2^32 + peak) (Steele et al. 2014), in
    Python integers."""
    mask = (1 << 64) - 1
    z = ((seed << 32) + peak + 0x9E3779B97F4A7C15) & mask
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & mask
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & mask
    z ^= z >> 31
    return float(np.exp(log_sd * np.sqrt(3.0) * (2.0 * (z >> 11) / 2.0**53 - 1.0)))


def lorentz_polarisation(sin_theta: np.ndarray) -> np.ndarray:
    """(1 + cos²2θ) / (sin²θ cosθ), as in pymatgen's XRDCalculator."""
    theta = np.arcsin(sin_theta)
    return (1 + np.cos(2 * theta) ** 2) / (np.sin(theta) ** 2 * np.cos(theta))


def lab_background(params: dict[str, np.ndarray], s: int, two_theta_deg: np.ndarray) -> np.ndarray:
    """B_b over the window's bin centres `two_theta_deg` (relative to the highest clean bin)."""
    n = two_theta_deg.size
    u = -1.0 + 2.0 * np.arange(n) / max(n - 1, 1)
    # Column j of background_coefficients multiplies T_{j+1}: the level carries the constant term.
    log_chebyshev = sum(
        c * np.cos((j + 1) * np.arccos(u)) for j, c in enumerate(params["background_coefficients"][s])
    )
    background = params["background_level"][s] * np.exp(log_chebyshev)
    if params["hump_height"][s] > 0:
        offset = two_theta_deg - params["hump_center_deg"][s]
        background += params["hump_height"][s] * np.exp(
            -4 * np.log(2) * offset**2 / params["hump_fwhm_deg"][s] ** 2
        )
    if params["air_scatter_height"][s] > 0:
        background += params["air_scatter_height"][s] * np.exp(
            -(two_theta_deg - two_theta_deg[0]) / params["air_scatter_decay_deg"][s]
        )
    return background


def poisson_counts(mean: np.ndarray, standard_normal: np.ndarray) -> np.ndarray:
    """Poisson draws of `mean` by inversion of the unit normals: scipy's exact quantile F⁻¹(Φ(z)) below 16,
    ⌊λ + √λ z + (z² - 1)/6 + ½⌋ clipped at 0 (Cornish-Fisher with continuity correction) from 16 on."""
    mean = np.asarray(mean, dtype=np.float64)
    z = np.asarray(standard_normal, dtype=np.float64)
    counts = np.floor(mean + np.sqrt(mean) * z + (z**2 - 1) / 6 + 0.5).clip(0, None)
    exact = mean < EXACT_POISSON_BELOW
    counts[exact] = poisson.ppf(norm.cdf(z[exact]), mean[exact])
    return counts


def finish_lab_reference(
    clean: np.ndarray,
    windows: np.ndarray,
    parameters: MixtureParameters,
    config: RecipeConfig,
    grid: GridConfig,
) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """Background, Poisson counts and normalisation of clean mixtures (n, n_bins) in their windows: normalised
    patterns float64 (n, n_bins) and the Poisson means λ, delivered counts (minus the expected background for a
    background-subtracted pattern; both 0 outside the window) and levels (n,)."""
    p = parameters.params
    for name in ("baseline_amplitude", "floor_offset", "floor_slope", "noise_sigma"):
        if np.any(p[name] != 0):
            # docs/physics.md defines the lab background and counting noise in place of A.1's, not on top.
            raise ValueError(f"reference_lab: A.1 {name} must be 0 under the lab recipe (the `lab` preset)")
    _, centers = _grid_axes(grid)
    out, mean, counts = (np.zeros(clean.shape) for _ in range(3))
    levels = np.zeros(clean.shape[0])
    for s, (lo, hi) in enumerate(windows):
        if hi <= lo:
            # A window that maps beyond the model grid (the spec does not exclude it) holds nothing.
            continue
        x = clean[s, lo:hi]
        highest = x.max() if x.max() > 0 else 1.0
        relative_background = lab_background(p, s, centers[lo:hi])
        mean[s, lo:hi] = p["counts_at_max"][s] * (x / highest + relative_background)
        counts[s, lo:hi] = poisson_counts(mean[s, lo:hi], parameters.standard_normal[s, lo:hi])
        if p["background_subtracted"][s]:
            # Processed data: the expected background removed, its counting noise left, negatives clipped.
            counts[s, lo:hi] = np.clip(
                counts[s, lo:hi] - p["counts_at_max"][s] * relative_background, 0.0, None
            )
        values = counts[s, lo:hi]
        levels[s] = level = np.percentile(values, config.normalization_percentile)
        out[s, lo:hi] = values / level if level > 0 else values
    return out, {"mean": mean, "counts": counts, "levels": levels}


def render_lab_reference(
    parameters: MixtureParameters, library: PhaseLibrary, config: RecipeConfig, grid: GridConfig
) -> tuple[np.ndarray, np.ndarray, dict[str, np.ndarray]]:
    """Normalised lab patterns float64 (n, n_bins), window bins (n, 2) and the details of
    `finish_lab_reference` plus the clean mixtures ("clean")."""
    clean, windows = render_lab_clean(parameters, library, config, grid)
    out, details = finish_lab_reference(clean, windows, parameters, config, grid)
    return out, windows, {"clean": clean, **details}


def lab_library(
    rng: np.random.Generator, n_materials: int, grid: GridConfig, peaks: tuple[int, int] = (30, 120)
) -> PhaseLibrary:
    """The A.1 reference's random stick library plus 1-8 reflections per peak: random unit directions and
    random shares summing to 1."""
    sticks = synthetic_library(rng, n_materials, grid, peaks=peaks, with_dense=False)
    n_peaks = sticks.peak_two_theta_deg.size
    per_peak = rng.integers(1, 9, n_peaks)
    offsets = np.concatenate([[0], np.cumsum(per_peak)]).astype(np.int64)
    direction = rng.standard_normal((offsets[-1], 3))
    direction /= np.linalg.norm(direction, axis=1, keepdims=True)
    share = rng.uniform(0.2, 1.0, offsets[-1])
    share /= np.repeat(np.add.reduceat(share, offsets[:-1]), per_peak)
    return PhaseLibrary(
        sticks.peak_offsets,
        sticks.peak_two_theta_deg,
        sticks.peak_intensity,
        sticks.spacegroup,
        reflection_offsets=offsets,
        reflection_direction=direction,
        reflection_weight=share,
    )
