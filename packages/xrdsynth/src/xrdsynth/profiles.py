"""Peak profiles on the fixed 2θ grid (A.1): TCH pseudo-Voigt widths, stick deposition, exact bin-integrated
rendering and the LUT variable-width convolution. Angles in degrees 2θ; FWHMs in degrees 2θ.

Intensities on the grid are per bin: a peak of area A contributes the integral of its profile over each bin,
so the sum over bins of a peak well inside the grid is A, whatever its width.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass

import numpy as np

from xrdsynth import _profile_kernels as _k
from xrdsynth.config import GridConfig, RecipeConfig

_TCH_VECTORISED = np.vectorize(_k.tch_fwhm_eta, otypes=[np.float64, np.float64])


def tch_fwhm_eta(
    fwhm_gauss_deg: np.ndarray | float, fwhm_lorentz_deg: np.ndarray | float
) -> tuple[np.ndarray, np.ndarray]:
    """Thompson-Cox-Hastings (1987) pseudo-Voigt FWHM and Lorentzian fraction η.

    H = (G⁵ + 2.69269 G⁴L + 2.42843 G³L² + 4.47163 G²L³ + 0.07842 GL⁴ + L⁵)^(1/5),
    η = 1.36603 q - 0.47719 q² + 0.11116 q³ with q = L/H. Inputs and H in the same angular unit.
    """
    g = np.asarray(fwhm_gauss_deg, dtype=np.float64)
    lo = np.asarray(fwhm_lorentz_deg, dtype=np.float64)
    if np.any(g < 0) or np.any(lo < 0):
        raise ValueError("tch_fwhm_eta: FWHMs must be >= 0")
    # One formula for both paths: the numba scalar the kernels use, applied elementwise.
    fwhm, eta = _TCH_VECTORISED(g, lo)
    return fwhm, eta


def strain_fwhm_deg(two_theta_deg: np.ndarray | float, microstrain: float, factor: float = 4.0) -> np.ndarray:
    """Gaussian microstrain FWHM in degrees 2θ: factor · ε · tanθ radians (A.1; factor 4 = Stokes-Wilson)."""
    theta = np.radians(np.asarray(two_theta_deg, dtype=np.float64) / 2.0)
    return np.degrees(factor * microstrain * np.tan(theta))


def scherrer_fwhm_deg(
    two_theta_deg: np.ndarray | float, crystallite_size_nm: float, wavelength_angstrom: float, k: float = 0.9
) -> np.ndarray:
    """Lorentzian size FWHM in degrees 2θ: K λ / (L cosθ) radians (Scherrer, A.1)."""
    theta = np.radians(np.asarray(two_theta_deg, dtype=np.float64) / 2.0)
    return np.degrees(k * (wavelength_angstrom / 10.0) / (crystallite_size_nm * np.cos(theta)))


def caglioti_fwhm_deg(
    two_theta_deg: np.ndarray | float, u_deg2: float, v_deg2: float, w_deg2: float
) -> np.ndarray:
    """Instrument Gaussian FWHM in degrees 2θ: sqrt(U tan²θ + V tanθ + W), negative squares clamped to 0."""
    tan_t = np.tan(np.radians(np.asarray(two_theta_deg, dtype=np.float64) / 2.0))
    return np.sqrt(np.maximum(u_deg2 * tan_t**2 + v_deg2 * tan_t + w_deg2, 0.0))


def pseudo_voigt_density(
    two_theta_deg: np.ndarray, center_deg: float, fwhm_deg: float, eta: float
) -> np.ndarray:
    """Unit-area pseudo-Voigt density (per degree) η·Lorentz + (1-η)·Gauss, both of FWHM `fwhm_deg`."""
    x = np.asarray(two_theta_deg, dtype=np.float64) - center_deg
    sigma = fwhm_deg / (2.0 * math.sqrt(2.0 * math.log(2.0)))
    gamma = fwhm_deg / 2.0
    gauss = np.exp(-0.5 * (x / sigma) ** 2) / (sigma * math.sqrt(2.0 * math.pi))
    lorentz = gamma / (math.pi * (x**2 + gamma**2))
    return eta * lorentz + (1.0 - eta) * gauss


def deposit_sticks(two_theta_deg: np.ndarray, intensity: np.ndarray, grid: GridConfig) -> np.ndarray:
    """Dense clean profile, float32 (n_bins): each stick split linearly between its two nearest bin centres.

    Area and centroid are preserved; sticks between the grid edge and the outermost centre go wholly to the
    edge bin, sticks outside [two_theta_min_deg, two_theta_max_deg) are dropped.
    """
    two_theta = np.ascontiguousarray(two_theta_deg, dtype=np.float64)
    weights = np.ascontiguousarray(intensity, dtype=np.float64)
    if two_theta.shape != weights.shape or two_theta.ndim != 1:
        raise ValueError(
            f"deposit_sticks: two_theta_deg {two_theta.shape} and intensity {weights.shape} must be equal 1-D shapes"
        )
    return _k.deposit_sticks(
        two_theta, weights, grid.two_theta_min_deg, grid.bin_width_deg, grid.n_bins
    ).astype(np.float32)


def render_pseudo_voigt(
    center_deg: np.ndarray,
    area: np.ndarray,
    fwhm_deg: np.ndarray,
    eta: np.ndarray,
    grid: GridConfig,
    tail_tolerance: float = 1e-5,
) -> np.ndarray:
    """Sum of pseudo-Voigt peaks integrated over each bin (erf / arctan CDF differences), float64.

    The CDFs come from branch-free approximations (erf to 1e-10, arctan to 2.3e-11 absolute), so a bin is
    exact to about 1e-10 × area. Peaks narrower than a bin keep their area. Lorentzian tails stop where a bin would receive less than
    `tail_tolerance` (same units as `area`).
    """
    centers = np.atleast_1d(np.asarray(center_deg, dtype=np.float64))
    areas, fwhms, etas = (
        np.broadcast_to(np.asarray(a, dtype=np.float64), centers.shape) for a in (area, fwhm_deg, eta)
    )
    out = np.zeros(grid.n_bins)
    cdf = np.empty(grid.n_bins + 1 + _k.EDGE_PAD)
    for c, a, f, e in zip(centers, areas, fwhms, etas, strict=True):
        _k.add_pseudo_voigt_binned(
            out, cdf, 0, grid.n_bins, grid.two_theta_min_deg, grid.bin_width_deg, c, a, f, e, tail_tolerance
        )
    return out


@dataclass(frozen=True)
class WidthLut:
    """Log-spaced FWHM levels (degrees) and their unit-area bin-integrated Gaussian/Lorentzian kernels.

    Tables are (levels, 2·max_offset+1), offset 0 at column max_offset.
    """

    fwhm_levels_deg: np.ndarray
    gauss_table: np.ndarray
    lorentz_table: np.ndarray

    @property
    def log_fwhm_min(self) -> float:
        return float(np.log(self.fwhm_levels_deg[0]))

    @property
    def log_fwhm_step(self) -> float:
        return float(np.log(self.fwhm_levels_deg[1] / self.fwhm_levels_deg[0]))


def fwhm_bounds_deg(config: RecipeConfig, grid: GridConfig) -> tuple[float, float]:
    """Smallest and largest TCH FWHM (degrees) the recipe can produce on the grid."""
    centers = grid.centers_deg()
    bounds = []
    for pick in (0, 1):
        gauss = np.hypot(
            strain_fwhm_deg(centers, config.microstrain[pick], config.strain_fwhm_factor),
            caglioti_fwhm_deg(
                centers,
                config.instrument_u_deg2 + config.instrument_du_deg2[pick],
                config.instrument_v_deg2 + config.instrument_dv_deg2[pick],
                config.instrument_w_deg2 + config.instrument_dw_deg2[pick],
            ),
        )
        size_nm = 10.0 ** config.crystallite_size_log10_nm[1 - pick]
        lorentz = scherrer_fwhm_deg(centers, size_nm, config.wavelength_angstrom, config.scherrer_k)
        bounds.append(tch_fwhm_eta(gauss, lorentz)[0])
    return float(bounds[0].min()), float(bounds[1].max())


@functools.lru_cache(maxsize=8)
def build_width_lut(config: RecipeConfig, grid: GridConfig) -> WidthLut:
    """LUT of `config.lut_levels` log-spaced FWHMs spanning the recipe's range on `grid` (cached)."""
    lo, hi = fwhm_bounds_deg(config, grid)
    levels = np.geomspace(lo, max(hi, lo * 1.0001), config.lut_levels)
    gauss, lorentz = _k.build_lut_tables(levels, grid.bin_width_deg, grid.n_bins - 1)
    return WidthLut(levels, gauss, lorentz)


def convolve_variable_width(
    profile: np.ndarray, fwhm_gauss_deg: np.ndarray, fwhm_lorentz_deg: np.ndarray, lut: WidthLut, grid: GridConfig,
    tail_tolerance: float = 1e-5,
) -> np.ndarray:  # fmt: skip
    """A.1's LUT convolution of one dense profile: each bin spread with the TCH kernel of its own widths.

    `fwhm_gauss_deg`, `fwhm_lorentz_deg`: per-bin component FWHMs (n_bins). The kernel FWHM is interpolated
    linearly in log FWHM between the two bracketing LUT levels; η is exact. Returns float64 (n_bins).
    """
    values = np.asarray(profile, dtype=np.float64)
    if values.shape != (grid.n_bins,):
        raise ValueError(
            f"convolve_variable_width: profile has shape {values.shape}, the grid needs ({grid.n_bins},)"
        )
    fwhm, eta = tch_fwhm_eta(
        np.broadcast_to(fwhm_gauss_deg, values.shape), np.broadcast_to(fwhm_lorentz_deg, values.shape)
    )
    out = np.zeros(grid.n_bins)
    for j in np.flatnonzero(values):
        _k.add_lut_kernel(
            out, 0, grid.n_bins, int(j), values[j], fwhm[j], eta[j], grid.bin_width_deg,
            lut.log_fwhm_min, lut.log_fwhm_step, lut.gauss_table, lut.lorentz_table, tail_tolerance,
        )  # fmt: skip
    return out
