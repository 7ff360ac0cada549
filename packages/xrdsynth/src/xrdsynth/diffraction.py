"""Exact, fast powder-diffraction stick patterns (peak positions and intensities).

Reproduces pymatgen 2026.10.24 ``XRDCalculator(wavelength).get_pattern(structure, scaled=True,
two_theta_range=...)``, the calculator the paper uses to build its single-phase bank (A.1.1): the same
reciprocal points in the shell min_r <= |g| <= max_r, the same per-element scattering factors
(Z - 41.78214 s**2 sum a_i exp(-b_i s**2), table ``atomic_scattering_params.json``), occupancies, optional
Debye-Waller factors (per element B, or U11_cif..U12_cif site properties), the Lorentz-polarisation factor
(1 + cos**2 2theta) / (sin**2 theta cos theta), Friedel halving, merging of reflections whose 2-theta round
to the same multiple of TWO_THETA_TOL, the SCALED_INTENSITY_TOL cut and scaling to a maximum of 100.
Each kept peak also lists the reflections merged into it (one per Friedel pair): the direction of g in the
crystal's Busing-Levy frame and its share of the peak's intensity, what per-reflection texture needs.

Positions, d-spacings and merge decisions are bit-identical to pymatgen: |g| is summed in the same order
as pymatgen's neighbour search and 2-theta comes from the same numpy arcsin/degrees calls. Intensities
agree to ~1e-13 relative (the phase factors are evaluated differently).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
from pymatgen.analysis.diffraction.core import (
    AbstractDiffractionPatternCalculator,
    get_ustar,
)
from pymatgen.analysis.diffraction.xrd import ATOMIC_SCATTERING_PARAMS
from pymatgen.core import Structure

from xrdsynth import _peak_kernels
from xrdsynth.config import CU_KA_ANGSTROM

__all__ = [
    "Peaks",
    "ScatteringError",
    "StructureArrays",
    "busing_levy_frame",
    "compute_peaks",
    "compute_peaks_arrays",
    "structure_to_arrays",
]

TWO_THETA_TOL_DEG: float = AbstractDiffractionPatternCalculator.TWO_THETA_TOL
"""Reflections whose 2-theta (deg) round to the same multiple of this are merged into one peak."""
SCALED_INTENSITY_TOL: float = AbstractDiffractionPatternCalculator.SCALED_INTENSITY_TOL
"""Merged peaks at or below this scaled intensity (max = 100) are dropped."""


class ScatteringError(ValueError):
    """A species has no X-ray scattering factors in pymatgen's atomic_scattering_params.json."""


@dataclass(frozen=True)
class Peaks:
    """Stick pattern: merged peaks in ascending 2-theta, intensities scaled so the largest is 100."""

    two_theta_deg: np.ndarray
    """(n_peaks,) float64 peak positions 2-theta in degrees, ascending."""
    d_spacing_angstrom: np.ndarray
    """(n_peaks,) float64 interplanar spacing d = 1/|g| in Å of each peak's first reflection."""
    intensity: np.ndarray
    """(n_peaks,) float64 integrated intensity, scaled to max 100 (pymatgen get_pattern(scaled=True))."""
    reflection_offsets: np.ndarray
    """(n_peaks + 1,) int64: the reflections of peak p are rows reflection_offsets[p]:reflection_offsets[p + 1]
    of the two arrays below (at least one per peak), by ascending |g| then enumeration order."""
    reflection_direction: np.ndarray
    """(R, 3) float32 unit vector of each reflection's scattering vector g, one per Friedel pair (g and -g
    diffract alike; the listed one has (h, k, l) lexicographically positive), in the crystal's Busing-Levy
    Cartesian frame (:func:`busing_levy_frame`): x along a*, y in the a*-b* plane, z along c."""
    reflection_weight: np.ndarray
    """(R,) float32 each reflection's share of its peak's intensity (its Lorentz-polarisation x |F|**2 term,
    Debye-Waller factors included, over the peak's sum of them); the shares of one peak sum to 1."""

    @classmethod
    def empty(cls) -> Peaks:
        """No peak at all (a 2-theta range without reflections)."""
        return cls(
            two_theta_deg=np.empty(0, dtype=np.float64),
            d_spacing_angstrom=np.empty(0, dtype=np.float64),
            intensity=np.empty(0, dtype=np.float64),
            reflection_offsets=np.zeros(1, dtype=np.int64),
            reflection_direction=np.empty((0, 3), dtype=np.float32),
            reflection_weight=np.empty(0, dtype=np.float32),
        )


@dataclass(frozen=True)
class StructureArrays:
    """A crystal as plain numpy arrays (picklable, cheap to send to worker processes).

    One *entry* per (site, species) pair; entries are grouped by element in order of first appearance,
    as XRDCalculator groups them.
    """

    lattice_matrix_angstrom: np.ndarray
    """(3, 3) float64 direct lattice, rows a, b, c in Å (pymatgen Lattice.matrix)."""
    frac_coords: np.ndarray
    """(n_entries, 3) float64 fractional coordinates of each entry."""
    occupancy: np.ndarray
    """(n_entries,) float64 site occupancy of each entry's species."""
    element_start: np.ndarray
    """(n_elements + 1,) int64: element e owns entries element_start[e]:element_start[e + 1]."""
    element_symbols: tuple[str, ...]
    """Element symbols, one per element (oxidation states dropped, as pymatgen's lookup does)."""
    atomic_number: np.ndarray
    """(n_elements,) int64 atomic number Z."""
    scattering_coeffs: np.ndarray
    """(n_elements, 4, 2) float64 (a_i, b_i) of f = Z - 41.78214 s**2 sum a_i exp(-b_i s**2), s in 1/Å."""
    ustar: np.ndarray | None = None
    """(n_entries, 3, 3) float64 dimensionless U* from U11_cif..U12_cif site properties, or None."""


def structure_to_arrays(structure: Structure) -> StructureArrays:
    """Flatten a pymatgen Structure into :class:`StructureArrays`.

    Raises:
        ScatteringError: a species' element has no scattering factors (e.g. a DummySpecies).
        ValueError: U11_cif..U12_cif site properties are present on some sites only.
    """
    groups: dict[str, list[tuple[int, float]]] = {}
    atomic_numbers: dict[str, int] = {}
    for site_index, site in enumerate(structure):
        for species, occupancy in site.species.items():
            symbol = species.symbol
            if symbol not in ATOMIC_SCATTERING_PARAMS:
                raise ScatteringError(
                    f"no X-ray scattering factors for species {species!s} (element symbol {symbol!r}) at site "
                    f"{site_index} of {structure.composition.reduced_formula}: pymatgen's "
                    "atomic_scattering_params.json has none; replace or remove that species"
                )
            if symbol not in groups:
                groups[symbol] = []
                atomic_numbers[symbol] = species.Z
            groups[symbol].append((site_index, float(occupancy)))

    site_ustar = get_ustar(structure)
    site_indices = np.array([i for members in groups.values() for i, _ in members], dtype=np.int64)
    symbols = tuple(groups)
    return StructureArrays(
        lattice_matrix_angstrom=np.array(structure.lattice.matrix, dtype=np.float64),
        frac_coords=np.ascontiguousarray(structure.frac_coords[site_indices], dtype=np.float64),
        occupancy=np.array([occ for members in groups.values() for _, occ in members], dtype=np.float64),
        element_start=np.cumsum([0] + [len(members) for members in groups.values()], dtype=np.int64),
        element_symbols=symbols,
        atomic_number=np.array([atomic_numbers[s] for s in symbols], dtype=np.int64),
        scattering_coeffs=np.array([ATOMIC_SCATTERING_PARAMS[s] for s in symbols], dtype=np.float64).reshape(
            len(symbols), -1, 2
        ),
        ustar=None
        if site_ustar is None
        else np.ascontiguousarray(site_ustar[site_indices], dtype=np.float64),
    )


def busing_levy_frame(lattice_matrix_angstrom: np.ndarray) -> np.ndarray:
    """(3, 3) float64 matrix F with g = (h, k, l) @ F in 1/Å in the Busing-Levy Cartesian frame of the crystal.

    The frame (Busing & Levy 1967) has x along a*, y in the plane of a* and b*, z along c (perpendicular to
    a* and b*); the rows of F are a*, b*, c* in it (no 2 pi). It depends on the lattice parameters only, not
    on how the input oriented its cell, so it is rebuilt from a, b, c, alpha, beta, gamma alone: F is the
    lower Cholesky factor of the reciprocal metric tensor G* = (a*_i . a*_j).
    """
    return _peak_kernels.busing_levy_frame(
        np.linalg.inv(np.asarray(lattice_matrix_angstrom, dtype=np.float64)).T
    )


def _shell_radii(
    wavelength_angstrom: float, two_theta_range_deg: tuple[float, float] | None
) -> tuple[float, float]:
    """(min_r, max_r) in 1/Å, with XRDCalculator's exact float expression."""
    if two_theta_range_deg is None:
        return 0.0, 2 / wavelength_angstrom
    lo, hi = (2 * math.sin(math.radians(t / 2)) / wavelength_angstrom for t in two_theta_range_deg)
    return lo, hi


def compute_peaks_arrays(
    arrays: StructureArrays,
    wavelength_angstrom: float = CU_KA_ANGSTROM,
    two_theta_range_deg: tuple[float, float] | None = (5.0, 120.0),
    debye_waller_factors: Mapping[str, float] | None = None,
) -> Peaks:
    """Merged, scaled stick pattern of one structure.

    Args:
        arrays: the structure (see :func:`structure_to_arrays`).
        wavelength_angstrom: X-ray wavelength in Å (default ``CU_KA_ANGSTROM``, Cu K-alpha (A.1.1)).
        two_theta_range_deg: (min, max) 2-theta in degrees, or None for the whole limiting sphere.
        debye_waller_factors: isotropic B in Å**2 per element symbol (pymatgen's XRDCalculator
            ``debye_waller_factors``); elements not listed get none.

    Returns:
        Peaks with their reflections; empty arrays when no reflection falls in the range (pymatgen raises
        instead).

    Raises:
        ValueError: both debye_waller_factors and U* (U11_cif site properties) are given, as in pymatgen.
    """
    dw_map = dict(debye_waller_factors or {})
    if arrays.ustar is not None and dw_map:
        raise ValueError(
            "debye_waller_factors cannot be combined with the U11_cif..U12_cif site properties "
            "(pymatgen refuses this too); drop one of them"
        )
    wavelength = float(wavelength_angstrom)
    min_r, max_r = _shell_radii(wavelength, two_theta_range_deg)

    # Same float ops as Lattice.reciprocal_lattice_crystallographic, so |g| matches pymatgen bit for bit.
    recip = np.linalg.inv(arrays.lattice_matrix_angstrom).T * 2 * np.pi / (2 * np.pi)
    # |h| = |g . a| <= max_r |a|; +1 absorbs rounding, the exact sphere test decides.
    hkl_max = (np.floor(max_r * np.linalg.norm(arrays.lattice_matrix_angstrom, axis=1)) + 1).astype(np.int64)
    hkl, g = _peak_kernels.half_sphere_points(recip, hkl_max, max_r, min_r)
    if g.shape[0] == 0:
        return Peaks.empty()

    # numpy (not numba) arcsin/degrees/round: the very calls pymatgen makes, so merge keys are identical.
    theta = np.arcsin(np.clip(wavelength * g / 2, -1, 1))
    two_theta = np.degrees(2 * theta)
    bin_key = np.round(two_theta / TWO_THETA_TOL_DEG).astype(np.int64)

    # f_e = Z - 41.78214 s2 sum_i a_i exp(-b_i s2) for all elements at once: (n_elements, M).
    s2 = (g / 2) ** 2
    a_coeff = arrays.scattering_coeffs[:, :, 0, None]
    b_coeff = arrays.scattering_coeffs[:, :, 1, None]
    form_factor = arrays.atomic_number[:, None] - 41.78214 * s2 * np.sum(
        a_coeff * np.exp(-b_coeff * s2), axis=1
    )
    for e, symbol in enumerate(arrays.element_symbols):
        if dw_map.get(symbol, 0):
            form_factor[e] *= np.exp(-dw_map[symbol] * s2)
    ustar = np.empty((0, 3, 3), dtype=np.float64) if arrays.ustar is None else arrays.ustar
    f_squared = _peak_kernels.structure_factor_squared(
        hkl, form_factor, arrays.frac_coords, arrays.occupancy, arrays.element_start, ustar
    )
    lorentz = (1 + np.cos(2 * theta) ** 2) / (np.sin(theta) ** 2 * np.cos(theta))
    # Factor 2: the -g half-space is identical (Friedel's law; scattering factors are real).
    intensity = 2 * f_squared * lorentz

    two_theta_peak, d_peak, intensity_peak, order, bin_start = _peak_kernels.merge_bins(
        g, two_theta, bin_key, intensity
    )
    keep = intensity_peak / intensity_peak.max() * 100 > SCALED_INTENSITY_TOL
    kept = intensity_peak[keep]

    reflection_offsets, direction, weight = _peak_kernels.peak_reflections(
        order,
        bin_start,
        np.flatnonzero(keep),
        hkl,
        intensity,
        intensity_peak,
        _peak_kernels.busing_levy_frame(recip),
    )
    return Peaks(
        two_theta_deg=two_theta_peak[keep],
        d_spacing_angstrom=d_peak[keep],
        intensity=kept / (kept.max() / 100),
        reflection_offsets=reflection_offsets,
        reflection_direction=direction,
        reflection_weight=weight,
    )


def compute_peaks(
    structure: Structure,
    wavelength_angstrom: float = CU_KA_ANGSTROM,
    two_theta_range_deg: tuple[float, float] | None = (5.0, 120.0),
    debye_waller_factors: Mapping[str, float] | None = None,
) -> Peaks:
    """Stick pattern of a pymatgen Structure; see :func:`compute_peaks_arrays` for the arguments."""
    return compute_peaks_arrays(
        structure_to_arrays(structure), wavelength_angstrom, two_theta_range_deg, debye_waller_factors
    )
