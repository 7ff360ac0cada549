"""Peak profiles on the fixed 2θ grid (A.1): TCH pseudo-Voigt widths, stick deposition, exact bin-integrated
rendering and its LUT approximation. Angles in degrees 2θ; FWHMs in degrees 2θ.

Intensities on the grid are per bin: a peak of area A contributes the integral of its profile over each bin,
so the sum over bins of a peak well inside the grid is A, whatever its width.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass

import numpy as np

from xrdsynth import _profile_kernels as _k
from xrdsynth.config import CU_KA_ANGSTROM, GridConfig, RecipeConfig

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


def stick_fwhm_eta_deg(
    two_theta_deg: np.ndarray | float,
    *,
    microstrain: float,
    crystallite_size_nm: float,
    caglioti_u_deg2: float = 0.0,
    caglioti_v_deg2: float = 0.0,
    caglioti_w_deg2: float = 0.0,
    strain_fwhm_factor: float = 4.0,
    scherrer_k: float = 0.9,
    wavelength_angstrom: float = CU_KA_ANGSTROM,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(TCH FWHM, η, Lorentzian FWHM), FWHMs in degrees 2θ, of sticks at `two_theta_deg` as both rendering
    engines give them (A.1): Gaussian part √((f ε tanθ)² + U tan²θ + V tanθ + W) with f ε tanθ in radians
    (f = 4, Stokes-Wilson) and negative Caglioti squares clamped to 0, Lorentzian part K λ / (L cosθ) radians
    (Scherrer). Computed by the kernels' own functions (`_k.stick_widths`), one formula for every path."""
    theta = np.radians(np.atleast_1d(np.asarray(two_theta_deg, dtype=np.float64)) / 2.0)
    constants = _k.RecipeConstants(
        normalization_mode=_k.STRONGEST_LINE,
        orientation_order=0,
        orientation_clip_lo=1.0,
        orientation_clip_hi=1.0,
        strain_fwhm_factor=strain_fwhm_factor,
        scherrer_k=scherrer_k,
        wavelength_nm=wavelength_angstrom / 10.0,
    )
    return _k.stick_widths(
        np.tan(theta), 1.0 / np.cos(theta), microstrain, crystallite_size_nm, constants, caglioti_u_deg2,
        caglioti_v_deg2, caglioti_w_deg2,
    )  # fmt: skip


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

    Tables are (levels, sub-bin positions + 1, 2·max_offset + 1): the kernel centred j/(sub-bin positions) of
    a bin above a bin's lower edge, at offsets -max_offset..max_offset bins from that bin (column max_offset).
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

    @property
    def max_offset(self) -> int:
        return (self.gauss_table.shape[2] - 1) // 2

    @property
    def table(self) -> _k.WidthTable:
        """The tables as the LUT kernels read them."""
        return _k.WidthTable(
            log_fwhm_min=self.log_fwhm_min,
            log_fwhm_step=self.log_fwhm_step,
            gauss=self.gauss_table,
            lorentz=self.lorentz_table,
        )


def _recipe_widths_deg(config: RecipeConfig, grid: GridConfig) -> np.ndarray:
    """Smallest TCH FWHM, largest TCH FWHM and largest Scherrer FWHM (degrees) at each grid edge, (3, n_bins + 1)."""
    edges = np.linspace(grid.two_theta_min_deg, grid.two_theta_max_deg, grid.n_bins + 1)
    fwhm = []
    lorentz = []
    for pick in (0, 1):
        width, _, size = stick_fwhm_eta_deg(
            edges,
            microstrain=config.microstrain[pick],
            crystallite_size_nm=10.0 ** config.crystallite_size_log10_nm[1 - pick],
            caglioti_u_deg2=config.instrument_u_deg2 + config.instrument_du_deg2[pick],
            caglioti_v_deg2=config.instrument_v_deg2 + config.instrument_dv_deg2[pick],
            caglioti_w_deg2=config.instrument_w_deg2 + config.instrument_dw_deg2[pick],
            strain_fwhm_factor=config.strain_fwhm_factor,
            scherrer_k=config.scherrer_k,
            wavelength_angstrom=config.wavelength_angstrom,
        )
        fwhm.append(width)
        lorentz.append(size)
    return np.stack([fwhm[0], fwhm[1], lorentz[1]])


def fwhm_bounds_deg(config: RecipeConfig, grid: GridConfig) -> tuple[float, float]:
    """Smallest and largest TCH FWHM (degrees) the recipe can give a stick on the grid (edges included)."""
    widths = _recipe_widths_deg(config, grid)
    return float(widths[0].min()), float(widths[1].max())


def lut_support_bins(config: RecipeConfig, grid: GridConfig, smallest_tolerance: float) -> int:
    """Half-width in bins that covers the rendered support of any stick of the recipe (at most n_bins).

    A stick's area is at most max(1, orientation clip high) (weights <= 1, phases scaled to a strongest line
    or a total of 1). The Gaussian part reaches at most to erf's saturation, 4.6·σ√2 of the widest FWHM; the
    Lorentzian part to sqrt(A·Δ·η·H/(2π τ)) (`rendering_extent`), where η·H <= 1.36603·L by the TCH
    polynomial. `smallest_tolerance` <= 0 (noise σ drawn from a range that starts at 0): the whole grid.
    """
    if smallest_tolerance <= 0.0:
        return grid.n_bins
    widths = _recipe_widths_deg(config, grid)
    area = max(1.0, config.preferred_orientation_clip[1])
    # 4.6: where erf_fast saturates (_profile_kernels).
    gauss_deg = 4.6 * math.sqrt(2.0) * widths[1].max() / (2.0 * math.sqrt(2.0 * math.log(2.0)))
    lorentz_deg = math.sqrt(
        area * grid.bin_width_deg * 0.5 * 1.36603 * widths[2].max() / (math.pi * smallest_tolerance)
    )
    return min(grid.n_bins, math.ceil(max(gauss_deg, lorentz_deg) / grid.bin_width_deg) + 2)


@functools.lru_cache(maxsize=8)
def build_width_lut(config: RecipeConfig, grid: GridConfig, smallest_tolerance: float) -> WidthLut:
    """LUT of `config.lut_levels` log-spaced FWHMs spanning the recipe's range on `grid`, each tabulated at
    `_k.LUT_SUBBIN_PHASES` sub-bin positions out to `lut_support_bins` (cached)."""
    lo, hi = fwhm_bounds_deg(config, grid)
    levels = np.geomspace(lo, max(hi, lo * 1.0001), config.lut_levels)
    gauss, lorentz = _k.build_lut_tables(
        levels, grid.bin_width_deg, lut_support_bins(config, grid, smallest_tolerance), _k.LUT_SUBBIN_PHASES
    )
    return WidthLut(levels, gauss, lorentz)


def render_pseudo_voigt_lut(
    center_deg: np.ndarray,
    area: np.ndarray,
    fwhm_deg: np.ndarray,
    eta: np.ndarray,
    lut: WidthLut,
    grid: GridConfig,
    tail_tolerance: float = 1e-5,
) -> np.ndarray:
    """`render_pseudo_voigt` through the LUT (A.1): the same peaks over the same bins, each bin-integrated
    kernel interpolated between the two bracketing FWHM levels (linear in log FWHM) and sub-bin positions.
    Supports are capped at `lut.max_offset` bins from the peak. Returns float64 (n_bins)."""
    centers = np.atleast_1d(np.asarray(center_deg, dtype=np.float64))
    areas, fwhms, etas = (
        np.broadcast_to(np.asarray(a, dtype=np.float64), centers.shape) for a in (area, fwhm_deg, eta)
    )
    out = np.zeros(grid.n_bins)
    table = lut.table
    for c, a, f, e in zip(centers, areas, fwhms, etas, strict=True):
        _k.add_pseudo_voigt_lut(
            out, 0, grid.n_bins, grid.two_theta_min_deg, grid.bin_width_deg, c, a, f, e, tail_tolerance, table
        )
    return out
