"""The augmented multi-phase mixture recipe of A.1, one small function per step, and batch generation.

All random numbers are drawn with numpy, vectorised over the batch, in a fixed order (the order of the
functions in `sample_mixture_parameters`); rendering is deterministic numba code that parallelises over
samples only, so the same generator state gives byte-identical patterns for any numba thread count.

Normalisation contract (mirrored by the measured-data reader in xrdmodels): bins outside the measurement
window are 0; inside it values are clipped at 0 and divided by the 99th percentile (numpy's default linear
interpolation) of the in-window values, if that percentile is > 0.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import numpy as np

from xrdsynth import _profile_kernels as _k
from xrdsynth.config import ANODES, MAX_PHASES, GridConfig, LabConfig, RecipeConfig, anode_lines_angstrom
from xrdsynth.profiles import build_width_lut

# A.1's smallest noise std (pre-normalisation units): the reference of the rendering cut when σ = 0.
SMALLEST_NOISE_SIGMA = 0.0008


@dataclass(frozen=True)
class PhaseLibrary:
    """Stick patterns of the bank, the input of the recipe.

    peak_offsets: int64 (M+1,), peaks of material m are [peak_offsets[m], peak_offsets[m+1]).
    peak_two_theta_deg: float64 (P,), ascending within each material.
    peak_intensity: float64 (P,), each material scaled to max 100 (pymatgen convention).
    spacegroup: int16 (M,), 1..230.
    dense_profile: float32 (M, n_bins) clean sticks from profiles.deposit_sticks() (the bank's clean profiles);
        not needed for rendering: both engines render the sticks.
    reflection_offsets: int64 (P+1,) or None, reflections of peak p are [reflection_offsets[p],
        reflection_offsets[p+1]) (at least one each); the three reflection arrays are given together or not at all.
    reflection_direction: float64 (R, 3) or None, unit vector of each reflection's g (one per Friedel pair) in its
        crystal's Busing-Levy frame (x along a*, y in the a*-b* plane, z along c; diffraction.busing_levy_frame).
    reflection_weight: float64 (R,) or None, each reflection's share of its peak's intensity (sums to 1 per peak).
    thermal_displacement: bool (M,) or None (none does), whether a material's sticks already include its
        input's atomic displacement parameters (the bank's thermal_displacement column).
    isotype: bool (M,) or None (none is), whether a material is a substituted relative of another (the bank's
        isotype_of column is set); RecipeConfig.isotype_weight sets how often these are drawn.
    synthetic: bool (M,) or None (none is), whether a material was generated (random crystals; the bank's
        synthetic column); RecipeConfig.synthetic_weight sets how often these are drawn.
    element_mask: uint64 (M, 2) or None, the chemical elements of each material's formula as bits (atomic
        number Z sets bit Z - 1 of the 128; :func:`element_masks`); RecipeConfig.related_phase_probability
        draws related phases with it.
    """

    peak_offsets: np.ndarray
    peak_two_theta_deg: np.ndarray
    peak_intensity: np.ndarray
    spacegroup: np.ndarray
    dense_profile: np.ndarray | None = None
    reflection_offsets: np.ndarray | None = None
    reflection_direction: np.ndarray | None = None
    reflection_weight: np.ndarray | None = None
    thermal_displacement: np.ndarray | None = None
    isotype: np.ndarray | None = None
    synthetic: np.ndarray | None = None
    element_mask: np.ndarray | None = None

    def __post_init__(self) -> None:
        n_materials = self.spacegroup.shape[0]
        for name in ("thermal_displacement", "isotype", "synthetic"):
            column = getattr(self, name)
            if column is not None and column.shape != (n_materials,):
                raise ValueError(
                    f"PhaseLibrary.{name} has shape {column.shape}; {n_materials} materials need ({n_materials},)"
                )
        if self.element_mask is not None and self.element_mask.shape != (n_materials, 2):
            raise ValueError(
                f"PhaseLibrary.element_mask has shape {self.element_mask.shape}; {n_materials} materials need "
                f"({n_materials}, 2)"
            )
        if self.peak_offsets.shape != (n_materials + 1,):
            raise ValueError(
                f"PhaseLibrary.peak_offsets has shape {self.peak_offsets.shape}; "
                f"{n_materials} materials need ({n_materials + 1},)"
            )
        n_peaks = self.peak_two_theta_deg.shape[0]
        if self.peak_intensity.shape != (n_peaks,) or int(self.peak_offsets[-1]) != n_peaks:
            raise ValueError(
                f"PhaseLibrary: peak_intensity {self.peak_intensity.shape}, peak_two_theta_deg ({n_peaks},) and "
                f"peak_offsets[-1] = {int(self.peak_offsets[-1])} must agree"
            )
        if self.dense_profile is not None and self.dense_profile.shape[0] != n_materials:
            raise ValueError(
                f"PhaseLibrary.dense_profile has {self.dense_profile.shape[0]} rows for {n_materials} materials"
            )
        reflections = (self.reflection_offsets, self.reflection_direction, self.reflection_weight)
        if any(a is not None for a in reflections):
            if any(a is None for a in reflections):
                raise ValueError(
                    "PhaseLibrary: reflection_offsets, reflection_direction and reflection_weight are given "
                    "together or not at all"
                )
            offsets = self.reflection_offsets
            if offsets.shape != (n_peaks + 1,) or int(offsets[0]) != 0 or bool(np.any(np.diff(offsets) < 1)):
                raise ValueError(
                    f"PhaseLibrary.reflection_offsets has shape {offsets.shape}; {n_peaks} peaks need "
                    f"({n_peaks + 1},), starting at 0 and increasing (every peak has a reflection)"
                )
            n_reflections = int(offsets[-1])
            if self.reflection_direction.shape != (n_reflections, 3) or self.reflection_weight.shape != (
                n_reflections,
            ):
                raise ValueError(
                    f"PhaseLibrary: reflection_direction {self.reflection_direction.shape} and reflection_weight "
                    f"{self.reflection_weight.shape} must be ({n_reflections}, 3) and ({n_reflections},) for "
                    f"reflection_offsets[-1] = {n_reflections}"
                )

    @property
    def n_materials(self) -> int:
        return int(self.spacegroup.shape[0])

    def stick_table(self, grid: GridConfig) -> _k.StickTable:
        """The sticks as the renderer reads them, with their per-stick constants on `grid`, float64 (P,) each:
        tanθ, 1/cosθ, sin(πt), cos(πt) with t = (2θ - grid start) / grid span. Computed once per library and
        grid, so that rendering a stick needs no trigonometric call."""
        key = (grid.two_theta_min_deg, grid.two_theta_max_deg)
        # The dataclass is frozen and its arrays are unhashable, so the cache lives in the instance dict.
        cache = self.__dict__.setdefault("_stick_table", {})
        if key not in cache:
            theta = np.radians(self.peak_two_theta_deg.astype(np.float64) / 2.0)
            t = (self.peak_two_theta_deg - key[0]) / (key[1] - key[0])
            tan_theta, sec_theta, sin_pi_t, cos_pi_t = (
                np.ascontiguousarray(a, dtype=np.float64)
                for a in (np.tan(theta), 1.0 / np.cos(theta), np.sin(np.pi * t), np.cos(np.pi * t))
            )
            cache[key] = _k.StickTable(
                offsets=self.peak_offsets,
                two_theta_deg=self.peak_two_theta_deg,
                intensity=self.peak_intensity,
                tan_theta=tan_theta,
                sec_theta=sec_theta,
                sin_pi_t=sin_pi_t,
                cos_pi_t=cos_pi_t,
            )
        return cache[key]


@dataclass(frozen=True)
class MixtureParameters:
    """Everything drawn for a batch: the phase set plus `params` (name -> (n,), (n, 5) or (n, 5, b) array)."""

    n_phases: np.ndarray  # int8 (n,)
    phase_material: np.ndarray  # int32 (n, 5), -1 pad
    phase_weight: np.ndarray  # float64 (n, 5), 0 pad, rows sum to 1
    params: dict[str, np.ndarray]
    standard_normal: np.ndarray  # float32 (n, n_bins), unit noise scaled by params["noise_sigma"]


@dataclass(frozen=True)
class MixtureBatch:
    """Generated mixtures and their targets; see the module docstring for the normalisation contract."""

    pattern: np.ndarray  # float32 (n, n_bins)
    window_bins: np.ndarray  # int32 (n, 2): first bin inside, first bin after the window
    n_phases: np.ndarray  # int8 (n,)
    phase_material: np.ndarray  # int32 (n, 5), index into the library, -1 pad
    phase_spacegroup: np.ndarray  # int16 (n, 5), 0 pad
    phase_weight: np.ndarray  # float32 (n, 5), 0 pad, rows sum to 1
    params: dict[str, np.ndarray]


_ELEMENT_SYMBOL = re.compile(r"[A-Z][a-z]?")


def element_masks(formulas) -> np.ndarray:
    """uint64 (M, 2): the elements of each chemical formula ("Fe", "Ca0.5Mg0.5CO3") as bits, atomic number Z
    setting bit Z - 1 of the 128 (the PhaseLibrary.element_mask column)."""
    from pymatgen.core.periodic_table import Element

    symbols = [set(_ELEMENT_SYMBOL.findall(str(formula))) for formula in formulas]
    bit = {s: Element(s).Z - 1 for s in set().union(*symbols)}
    masks = np.zeros((len(formulas), 2), dtype=np.uint64)
    for i, row in enumerate(symbols):
        for symbol in row:
            masks[i, bit[symbol] // 64] |= np.uint64(1) << np.uint64(bit[symbol] % 64)
    return masks


RELATED_PHASE_IGNORED_ELEMENTS = ("H", "O")
"""Elements that do not make two phases related (`draw_related_phases`): most minerals hold them, so sharing
them says nothing about the chemical system."""


def _element_bits(masks: np.ndarray) -> np.ndarray:
    """bool (n, 128): element_mask rows unpacked, column Z - 1 for atomic number Z."""
    octets = np.ascontiguousarray(masks, dtype="<u8").view(np.uint8).reshape(len(masks), 16)
    return np.unpackbits(octets, axis=1, bitorder="little").astype(bool)


RELATED_PHASE_TRIES = 16


def draw_related_phases(
    rng: np.random.Generator,
    materials: np.ndarray,
    pool: np.ndarray,
    weight: np.ndarray | None,
    library: PhaseLibrary,
    probability: float,
) -> np.ndarray:
    """`materials` with each phase after the first replaced, with `probability`, by a related pool material
    (RecipeConfig.related_phase_probability); int32 (n, 5), -1 pad.

    A related phase is drawn in two steps: one of the first phase's elements other than H and O, uniformly, then
    a pool material that holds it, with the pool's weights. A phase keeps its independent draw where the first
    holds no other element or every material drawn in RELATED_PHASE_TRIES tries is already in the mixture.
    """
    if library.element_mask is None:
        raise ValueError(
            "related_phase_probability > 0 needs the library's element_mask (Bank.library() reads it from the "
            "bank's reduced_formula column)"
        )
    keep = ~element_masks(["".join(RELATED_PHASE_IGNORED_ELEMENTS)])[0]
    # Pool materials grouped by element: member[start[e]:end[e]] hold element e, cumulative their weights.
    element, member = np.nonzero(_element_bits(library.element_mask[pool] & keep).T)
    if member.size == 0:
        return materials
    pool_weight = np.ones(pool.size) if weight is None else np.asarray(weight, dtype=np.float64)
    cumulative = np.cumsum(pool_weight[member])
    start = np.searchsorted(element, np.arange(128), side="left")
    end = np.searchsorted(element, np.arange(128), side="right")
    below = np.where(start > 0, cumulative[np.maximum(start - 1, 0)], 0.0)
    first_bits = _element_bits(library.element_mask[materials[:, 0]] & keep)
    n_elements = first_bits.sum(axis=1)
    replace = (rng.random(materials.shape) < probability) & (materials >= 0) & (n_elements > 0)[:, None]
    out = materials.copy()
    for slot in range(1, materials.shape[1]):
        rows = np.flatnonzero(replace[:, slot])
        for _ in range(RELATED_PHASE_TRIES):
            if rows.size == 0:
                break
            u = rng.random((rows.size, 2))
            nth = (u[:, 0] * n_elements[rows]).astype(np.int64)
            e = np.argmax(np.cumsum(first_bits[rows], axis=1) > nth[:, None], axis=1)
            x = below[e] + u[:, 1] * (cumulative[end[e] - 1] - below[e])
            pick = pool[member[np.minimum(np.searchsorted(cumulative, x, side="right"), end[e] - 1)]]
            others = out[rows]
            others[:, slot] = -1
            clash = (others == pick[:, None]).any(axis=1)
            out[rows[~clash], slot] = pick[~clash]
            rows = rows[clash]
    return out


def _uniform(rng: np.random.Generator, bounds: tuple[float, float], size) -> np.ndarray:
    return rng.uniform(bounds[0], bounds[1], size)


def _phase_slots(n_phases: np.ndarray) -> np.ndarray:
    """Boolean (n, 5): slot k holds a phase."""
    return np.arange(MAX_PHASES)[None, :] < n_phases[:, None]


def sample_phase_counts(rng: np.random.Generator, n: int, config: RecipeConfig) -> np.ndarray:
    """K* in 1..5 with probabilities `phase_count_probabilities` (A.1), int8 (n,)."""
    return (rng.choice(MAX_PHASES, size=n, p=np.asarray(config.phase_count_probabilities)) + 1).astype(
        np.int8
    )


def sample_materials(
    rng: np.random.Generator, pool: np.ndarray, n_phases: np.ndarray, weight: np.ndarray | None = None
) -> np.ndarray:
    """K* distinct materials per sample from `pool` (A.1 mixture sampler), int32 (n, 5), -1 pad.

    Each phase is pool[i] with probability proportional to weight[i] (uniform when `weight` is None, as in A.1).
    Rows with a repeated material are redrawn until none is left (rejection keeps the draw of each set
    proportional to the product of its weights).
    """
    max_k = int(n_phases.max(initial=0))
    if pool.size < max_k:
        raise ValueError(f"the material pool has {pool.size} materials, fewer than the {max_k} phases drawn")
    slots = _phase_slots(n_phases)
    if weight is None:

        def draw(rows: int) -> np.ndarray:
            return rng.integers(0, pool.size, size=(rows, MAX_PHASES))

    else:
        cumulative = np.cumsum(np.asarray(weight, dtype=np.float64))

        def draw(rows: int) -> np.ndarray:
            u = rng.random((rows, MAX_PHASES)) * cumulative[-1]
            return np.minimum(np.searchsorted(cumulative, u, side="right"), pool.size - 1)

    picks = draw(n_phases.size)
    while True:
        ordered = np.sort(np.where(slots, picks, -1 - np.arange(MAX_PHASES)), axis=1)
        repeated = np.flatnonzero((ordered[:, 1:] == ordered[:, :-1]).any(axis=1))
        if repeated.size == 0:
            break
        picks[repeated] = draw(repeated.size)
    return np.where(slots, pool[picks], -1).astype(np.int32)


def pool_weights(pool: np.ndarray, config: RecipeConfig, library: PhaseLibrary | None) -> np.ndarray | None:
    """Drawing weight of each pool material (`sample_materials`): RecipeConfig.isotype_weight for substituted
    relatives and RecipeConfig.synthetic_weight for generated crystals (1 for the rest) times
    n^-space_group_balance, n the pool's materials of the same space group; None (uniform) when that changes
    nothing."""
    if library is None:
        return None
    weight = np.ones(pool.size)
    if config.isotype_weight != 1.0 and library.isotype is not None:
        weight = np.where(library.isotype[pool], config.isotype_weight, 1.0)
    if config.synthetic_weight != 1.0 and library.synthetic is not None:
        weight = weight * np.where(library.synthetic[pool], config.synthetic_weight, 1.0)
    if config.space_group_balance != 0.0:
        groups = library.spacegroup[pool].astype(np.int64)
        weight = weight * np.bincount(groups, minlength=231)[groups] ** -config.space_group_balance
    return weight if weight.size and np.ptp(weight) > 0 else None


def sample_weights(rng: np.random.Generator, n_phases: np.ndarray, config: RecipeConfig) -> np.ndarray:
    """Dirichlet(α) proportions with the minimum weight enforced affinely (A.1), float64 (n, 5), 0 pad.

    w = w_min + (1 - K w_min)·d keeps Σw = 1 and w >= w_min and leaves the shape of the Dirichlet unchanged.
    """
    slots = _phase_slots(n_phases)
    gamma = rng.gamma(config.dirichlet_alpha, 1.0, size=(n_phases.size, MAX_PHASES)) * slots
    # A gamma draw can underflow to 0 for tiny α; fall back to equal shares rather than dividing by 0.
    gamma[gamma.sum(axis=1) == 0] = 1.0
    gamma *= slots
    dirichlet = gamma / gamma.sum(axis=1, keepdims=True)
    k = n_phases[:, None].astype(np.float64)
    return np.where(slots, config.min_phase_weight + (1.0 - k * config.min_phase_weight) * dirichlet, 0.0)


def orientation_basis(t: np.ndarray, config: RecipeConfig) -> np.ndarray:
    """Envelope basis at normalised angle t in [0, 1] (A.1): T_1..T_order(2t-1), then sin/cos(kπt); (len(t), b)."""
    u = 2.0 * np.asarray(t, dtype=np.float64) - 1.0
    columns = [
        np.polynomial.chebyshev.chebval(u, np.eye(config.preferred_orientation_chebyshev_order + 1)[j])
        for j in range(1, config.preferred_orientation_chebyshev_order + 1)
    ]
    for k in range(1, config.preferred_orientation_fourier_terms + 1):
        columns += [np.sin(k * np.pi * t), np.cos(k * np.pi * t)]
    return np.stack(columns, axis=-1) if columns else np.zeros((np.size(t), 0))


def sample_preferred_orientation(
    rng: np.random.Generator, n_phases: np.ndarray, config: RecipeConfig, grid: GridConfig
) -> dict[str, np.ndarray]:
    """Per-phase orientation envelope (A.1): applied flag, strength s and basis coefficients.

    The envelope is clip((1 + s Σ c_j φ_j / Σ|c_j|) / mean, clip range) with c_j ~ U(-1, 1), so |s| bounds
    the relative modulation; the mean is over the grid centres. Returns the flag (n, 5), strength (n, 5),
    raw coefficients (n, 5, b), plus the kernel's inputs `_coefficients` (s c / Σ|c|, 0 when not applied)
    and `_mean`.
    """
    n = n_phases.size
    n_basis = config.n_orientation_basis
    slots = _phase_slots(n_phases)
    applied = (rng.random((n, MAX_PHASES)) < config.preferred_orientation_probability) & slots
    strength = np.where(applied, _uniform(rng, config.preferred_orientation_strength, (n, MAX_PHASES)), 0.0)
    raw = np.where(applied[..., None], rng.uniform(-1.0, 1.0, (n, MAX_PHASES, n_basis)), 0.0)
    bound = np.abs(raw).sum(axis=-1, keepdims=True)
    scaled = strength[..., None] * np.divide(raw, bound, out=np.zeros_like(raw), where=bound > 0)
    basis_mean = orientation_basis((np.arange(grid.n_bins) + 0.5) / grid.n_bins, config).mean(axis=0)
    return {
        "orientation_applied": applied,
        "orientation_strength": strength,
        "orientation_coefficients": raw,
        "_coefficients": scaled,
        "_mean": 1.0 + scaled @ basis_mean,
    }


def sample_microstructure(
    rng: np.random.Generator, n_phases: np.ndarray, config: RecipeConfig
) -> dict[str, np.ndarray]:
    """Per-phase microstrain ε (uniform) and crystallite size L in nm (log-uniform) (A.1); 0 pad."""
    slots = _phase_slots(n_phases)
    shape = (n_phases.size, MAX_PHASES)
    strain = np.where(slots, _uniform(rng, config.microstrain, shape), 0.0)
    size_nm = np.where(slots, 10.0 ** _uniform(rng, config.crystallite_size_log10_nm, shape), 0.0)
    return {"microstrain": strain, "crystallite_size_nm": size_nm}


def sample_instrument(rng: np.random.Generator, n: int, config: RecipeConfig) -> dict[str, np.ndarray]:
    """Zero shift Δ (deg) and Caglioti increments ΔU, ΔV, ΔW (deg²) (A.1), each (n,)."""
    return {
        "zero_shift_deg": _uniform(rng, config.zero_shift_deg, n),
        "instrument_du_deg2": _uniform(rng, config.instrument_du_deg2, n),
        "instrument_dv_deg2": _uniform(rng, config.instrument_dv_deg2, n),
        "instrument_dw_deg2": _uniform(rng, config.instrument_dw_deg2, n),
    }


def sample_window(rng: np.random.Generator, n: int, config: RecipeConfig) -> dict[str, np.ndarray]:
    """Measurement window bounds 2θ_lo, 2θ_hi in degrees (A.1), each (n,)."""
    return {
        "window_low_deg": _uniform(rng, config.window_low_deg, n),
        "window_high_deg": _uniform(rng, config.window_high_deg, n),
    }


def sample_background(rng: np.random.Generator, n: int, config: RecipeConfig) -> dict[str, np.ndarray]:
    """Softplus baseline coefficients c_0..c_order (n, order+1) and amplitude, floor offset and slope (A.1)."""
    return {
        "baseline_coefficients": _uniform(rng, config.baseline_coefficient, (n, config.baseline_order + 1)),
        "baseline_amplitude": _uniform(rng, config.baseline_amplitude, n),
        "floor_offset": _uniform(rng, config.floor_offset, n),
        "floor_slope": _uniform(rng, config.floor_slope, n),
    }


def sample_noise(
    rng: np.random.Generator, n: int, config: RecipeConfig, grid: GridConfig
) -> tuple[np.ndarray, np.ndarray]:
    """Per-sample noise std (n,) and unit Gaussian noise float32 (n, n_bins) (A.1)."""
    sigma = _uniform(rng, config.noise_sigma, n)
    return sigma, rng.standard_normal((n, grid.n_bins), dtype=np.float32)


def _log_uniform(rng: np.random.Generator, bounds: tuple[float, float], size) -> np.ndarray:
    return np.exp(rng.uniform(np.log(bounds[0]), np.log(bounds[1]), size))


def _anode_line_table() -> np.ndarray:
    """(len(ANODES), 4) wavelengths in Å: Kα mean, Kα1, Kα2, Kβ1."""
    return np.array([anode_lines_angstrom(a) for a in ANODES])


def sample_beam(rng: np.random.Generator, n: int, lab: LabConfig) -> dict[str, np.ndarray]:
    """Anode, Kα1-only flag, Kα2 and residual Kβ ratios and specimen displacement per pattern (lab recipe)."""
    p = np.array([lab.anode_probabilities.get(a, 0.0) for a in ANODES])
    anode = rng.choice(len(ANODES), size=n, p=p / p.sum())
    monochromatic = rng.random(n) < lab.monochromatic_probability
    kalpha2 = np.where(monochromatic, 0.0, _uniform(rng, lab.kalpha2_ratio, n))
    # A crystal monochromator that selects Kα1 rejects Kβ as well.
    kbeta_present = (rng.random(n) < lab.kbeta_probability) & ~monochromatic
    kbeta = np.where(kbeta_present, _uniform(rng, lab.kbeta_ratio, n), 0.0)
    return {
        "anode": anode,
        "monochromatic": monochromatic,
        "kalpha2_ratio": kalpha2,
        "kbeta_ratio": kbeta,
        "sample_displacement_deg": _uniform(rng, lab.sample_displacement_deg, n),
    }


def sample_texture(
    rng: np.random.Generator, materials: np.ndarray, lab: LabConfig, library: PhaseLibrary
) -> dict[str, np.ndarray]:
    """March-Dollase r (1 = untextured) and texture axis per phase (lab recipe): the axis is the unit scattering
    vector of a reflection drawn uniformly from a peak drawn uniformly among the phase's
    `march_dollase_axis_peaks` lowest-angle peaks."""
    shape = materials.shape
    textured = (rng.random(shape) < lab.march_dollase_probability) & (materials >= 0)
    r = np.where(textured, _log_uniform(rng, lab.march_dollase_r, shape), 1.0)
    peak_pick, reflection_pick = rng.random(shape), rng.random(shape)
    axis = np.zeros(shape + (3,))
    if not textured.any():
        return {"texture_r": r, "texture_axis": axis}
    _require_reflections(library, "march_dollase_probability")
    m = np.maximum(materials, 0)
    first_peak = library.peak_offsets[m]
    n_peaks = library.peak_offsets[m + 1] - first_peak
    textured &= n_peaks > 0
    peak = first_peak + (peak_pick * np.minimum(n_peaks, lab.march_dollase_axis_peaks)).astype(np.int64)
    peak = np.minimum(peak, library.peak_offsets[-1] - 1)
    first_reflection = library.reflection_offsets[peak]
    n_reflections = library.reflection_offsets[peak + 1] - first_reflection
    reflection = first_reflection + (reflection_pick * n_reflections).astype(np.int64)
    axis = np.where(textured[..., None], library.reflection_direction[reflection], 0.0)
    return {"texture_r": np.where(textured, r, 1.0), "texture_axis": axis}


def _require_reflections(library: PhaseLibrary, field: str) -> None:
    if library.reflection_offsets is None:
        raise ValueError(
            f"recipe.lab.{field} > 0 needs the bank's per-reflection data, which this bank lacks: rebuild it with "
            f"this version's `xrdsynth bank build`, or set recipe.lab.{field} to 0"
        )


def sample_lattice_strain(
    rng: np.random.Generator, materials: np.ndarray, lab: LabConfig, library: PhaseLibrary
) -> dict[str, np.ndarray]:
    """Symmetric strain tensor per phase (n, 5, 3, 3), all 0 for an unstrained phase (lab recipe):
    ε = a·S, a ~ U(lattice_strain), S symmetric with entries U(-1, 1)."""
    shape = materials.shape
    strained = (rng.random(shape) < lab.lattice_strain_probability) & (materials >= 0)
    amplitude = np.where(strained, _uniform(rng, lab.lattice_strain, shape), 0.0)
    entries = rng.uniform(-1.0, 1.0, shape + (6,))
    upper = np.triu_indices(3)
    strain = np.zeros(shape + (3, 3))
    strain[..., upper[0], upper[1]] = entries
    strain = strain + np.swapaxes(np.triu(strain, 1), -1, -2)
    strain *= amplitude[..., None, None]
    if (amplitude > 0).any():
        _require_reflections(library, "lattice_strain_probability")
    return {"lattice_strain": strain}


def sample_debye_waller(
    rng: np.random.Generator, materials: np.ndarray, lab: LabConfig, library: PhaseLibrary
) -> dict[str, np.ndarray]:
    """Overall isotropic Debye-Waller B in Å² per phase (n, 5): U(debye_waller_b_a2) for a material at rest,
    U(debye_waller_extra_b_a2) for one whose sticks include its displacement parameters; 0 for empty slots."""
    u = rng.random(materials.shape)
    b = lab.debye_waller_b_a2[0] + (lab.debye_waller_b_a2[1] - lab.debye_waller_b_a2[0]) * u
    if library.thermal_displacement is not None:
        extra = (
            lab.debye_waller_extra_b_a2[0]
            + (lab.debye_waller_extra_b_a2[1] - lab.debye_waller_extra_b_a2[0]) * u
        )
        b = np.where(library.thermal_displacement[np.maximum(materials, 0)], extra, b)
    return {"debye_waller_b_a2": np.where(materials >= 0, b, 0.0)}


def sample_intensity_variation(
    rng: np.random.Generator, materials: np.ndarray, lab: LabConfig
) -> dict[str, np.ndarray]:
    """Per phase (n, 5): σ of its peaks' log intensity factors (0 when its intensities are the bank's) and the
    integer seed in [0, 2^24) of those factors (exact in the store's float32; the kernel draws each peak's factor
    from it, `_profile_kernels.intensity_variation`)."""
    shape = materials.shape
    varied = (rng.random(shape) < lab.intensity_variation_probability) & (materials >= 0)
    log_sd = np.where(varied, _uniform(rng, lab.intensity_variation_log_sd, shape), 0.0)
    seed = rng.integers(0, 2**24, size=shape).astype(np.float64)
    return {"intensity_log_sd": log_sd, "intensity_seed": np.where(varied, seed, 0.0)}


def sample_lab_background(rng: np.random.Generator, n: int, lab: LabConfig) -> dict[str, np.ndarray]:
    """Log-Chebyshev background, amorphous hump, air scatter, counting level and whether the pattern is delivered
    background-subtracted, per pattern (lab recipe)."""
    low, high = lab.background_chebyshev_order
    order = rng.integers(low, high + 1, size=n)
    a = lab.background_log_coefficient
    coefficients = rng.uniform(-a, a, (n, high)) / np.arange(1, high + 1)
    coefficients[np.arange(high)[None, :] >= order[:, None]] = 0.0
    hump = rng.random(n) < lab.amorphous_hump_probability
    air = rng.random(n) < lab.air_scatter_probability
    return {
        "background_level": _log_uniform(rng, lab.background_level, n),
        "background_coefficients": coefficients,
        "hump_height": np.where(hump, _log_uniform(rng, lab.amorphous_hump_height, n), 0.0),
        "hump_center_deg": _uniform(rng, lab.amorphous_hump_center_deg, n),
        "hump_fwhm_deg": _uniform(rng, lab.amorphous_hump_fwhm_deg, n),
        "air_scatter_height": np.where(air, _log_uniform(rng, lab.air_scatter_height, n), 0.0),
        "air_scatter_decay_deg": _uniform(rng, lab.air_scatter_decay_deg, n),
        "counts_at_max": _log_uniform(rng, lab.counts_at_max, n),
        "background_subtracted": rng.random(n) < lab.background_subtracted_probability,
    }


def beam_lines(
    params: dict[str, np.ndarray], config: RecipeConfig
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(line ratios ρ (n, 3), line weights (n, 3), q (n,)) of Kα1, Kα2, Kβ1 for the drawn beams: ρ = λ_line /
    λ_reader, with λ_reader Kα1 for a monochromatic beam and the Kα mean otherwise; q = λ_reader / λ_model."""
    lines = _anode_line_table()[params["anode"]]
    reader = np.where(params["monochromatic"], lines[:, 1], lines[:, 0])
    ratio = lines[:, 1:] / reader[:, None]
    weight = np.stack([np.ones_like(reader), params["kalpha2_ratio"], params["kbeta_ratio"]], axis=1)
    return ratio, weight, reader / config.wavelength_angstrom


def sample_mixture_parameters(
    rng: np.random.Generator,
    pool: np.ndarray,
    n: int,
    config: RecipeConfig,
    grid: GridConfig,
    library: PhaseLibrary | None = None,
) -> MixtureParameters:
    """Draw every random quantity of `n` mixtures, in the fixed order of A.1, then the lab recipe's (which
    needs the `library` for its texture axes; the material draw reads which entries are isotypes from it)."""
    pool = np.asarray(pool, dtype=np.int64)
    n_phases = sample_phase_counts(rng, n, config)
    weight = pool_weights(pool, config, library)
    materials = sample_materials(rng, pool, n_phases, weight)
    if config.related_phase_probability > 0:
        if library is None:
            raise ValueError(
                "related_phase_probability > 0 reads the materials' elements from the library: pass library="
            )
        # A stream of its own, so that every other draw stays what it is without related phases.
        materials = draw_related_phases(
            rng.spawn(1)[0], materials, pool, weight, library, config.related_phase_probability
        )
    weights = sample_weights(rng, n_phases, config)
    params: dict[str, np.ndarray] = {}
    params.update(sample_preferred_orientation(rng, n_phases, config, grid))
    params.update(sample_microstructure(rng, n_phases, config))
    params.update(sample_instrument(rng, n, config))
    params.update(sample_window(rng, n, config))
    params.update(sample_background(rng, n, config))
    params["noise_sigma"], standard_normal = sample_noise(rng, n, config, grid)
    if config.lab is not None:
        if library is None:
            raise ValueError("the lab recipe samples texture axes from the library: pass library=")
        params.update(sample_beam(rng, n, config.lab))
        params.update(sample_texture(rng, materials, config.lab, library))
        params.update(sample_lab_background(rng, n, config.lab))
        params.update(sample_lattice_strain(rng, materials, config.lab, library))
        params.update(sample_debye_waller(rng, materials, config.lab, library))
        params.update(sample_intensity_variation(rng, materials, config.lab))
        params["axial_divergence_deg"] = _uniform(rng, config.lab.axial_divergence_deg, n)
        defocused = rng.random(n) < config.lab.defocus_probability
        params["defocus_box_deg"] = np.where(defocused, _uniform(rng, config.lab.defocus_box_deg, n), 0.0)
    return MixtureParameters(n_phases, materials, weights, params, standard_normal)


def window_bins(low_deg: np.ndarray, high_deg: np.ndarray, grid: GridConfig) -> np.ndarray:
    """int32 (n, 2): [first bin whose centre is >= low, first bin whose centre is > high)."""
    centers = grid.centers_deg()
    return np.stack(
        [np.searchsorted(centers, low_deg, side="left"), np.searchsorted(centers, high_deg, side="right")],
        axis=1,
    ).astype(np.int32)


def counting_noise_floor(params: dict[str, np.ndarray]) -> np.ndarray:
    """(n,) the smallest counting-noise std a lab pattern can have, relative to its highest clean bin M:
    sqrt(b_min / counts_at_max), b_min = level · exp(-Σ|c_j|) the lowest the smooth background can reach
    (|T_j| <= 1; humps and air scatter only add)."""
    b_min = params["background_level"] * np.exp(-np.abs(params["background_coefficients"]).sum(axis=1))
    return np.sqrt(b_min / params["counts_at_max"])


def tail_tolerances(noise_sigma: np.ndarray, config: RecipeConfig) -> np.ndarray:
    """Per-sample rendering cut (n,), pre-normalisation intensity per bin: `tail_tolerance_sigma` × σ,
    with A.1's smallest σ standing in for σ = 0 (noise-free patterns)."""
    sigma = np.asarray(noise_sigma, dtype=np.float64)
    return config.tail_tolerance_sigma * np.where(sigma > 0.0, sigma, SMALLEST_NOISE_SIGMA)


def smallest_tail_tolerance(config: RecipeConfig) -> float:
    """The smallest rendering cut `tail_tolerances` can give under `config`; 0 when the noise σ range starts at
    0 but is not {0}, since σ can then be arbitrarily small."""
    low, high = config.noise_sigma
    if low > 0.0:
        return config.tail_tolerance_sigma * low
    return config.tail_tolerance_sigma * SMALLEST_NOISE_SIGMA if high == 0.0 else 0.0


def _bin_grid(grid: GridConfig) -> _k.BinGrid:
    return _k.BinGrid(
        lo_deg=grid.two_theta_min_deg,
        bin_width_deg=grid.bin_width_deg,
        span_deg=grid.two_theta_max_deg - grid.two_theta_min_deg,
    )


def render_clean_mixtures(
    parameters: MixtureParameters, library: PhaseLibrary, config: RecipeConfig, grid: GridConfig
) -> tuple[np.ndarray, np.ndarray]:
    """The broadened mixtures before background, noise and normalisation, float64 (n, n_bins), 0 outside the
    window, and the window bins int32 (n, 2)."""
    p = parameters.params
    lab = None
    if config.lab is not None:
        line_ratio, line_weight, wavelength_ratio = beam_lines(p, config)
        reflections = library.reflection_offsets
        lab = _k.LabPhysics(
            line_ratio=line_ratio,
            line_weight=line_weight,
            wavelength_ratio=wavelength_ratio,
            sample_displacement_deg=p["sample_displacement_deg"],
            axial_divergence_deg=p["axial_divergence_deg"],
            defocus_box_deg=p["defocus_box_deg"],
            texture_r=p["texture_r"],
            texture_axis=p["texture_axis"],
            lattice_strain=p["lattice_strain"],
            debye_waller_b_a2=p["debye_waller_b_a2"],
            intensity_log_sd=p["intensity_log_sd"],
            intensity_seed=p["intensity_seed"],
            reflection_offsets=reflections if reflections is not None else np.zeros(1, dtype=np.int64),
            reflection_direction=library.reflection_direction
            if reflections is not None
            else np.zeros((0, 3)),
            reflection_weight=library.reflection_weight if reflections is not None else np.zeros(0),
            noise_floor=counting_noise_floor(p),
            tolerance_per_noise=config.tail_tolerance_sigma,
        )
    windows = window_bins(p["window_low_deg"], p["window_high_deg"], grid)
    mixture = np.zeros((parameters.n_phases.size, grid.n_bins))
    normalization = {"strongest_line": _k.STRONGEST_LINE, "total_intensity": _k.TOTAL_INTENSITY}
    constants = _k.RecipeConstants(
        normalization_mode=normalization[config.pre_mix_normalization],
        orientation_order=config.preferred_orientation_chebyshev_order,
        orientation_clip_lo=config.preferred_orientation_clip[0],
        orientation_clip_hi=config.preferred_orientation_clip[1],
        strain_fwhm_factor=config.strain_fwhm_factor,
        scherrer_k=config.scherrer_k,
        wavelength_nm=config.wavelength_angstrom / 10.0,
    )
    draws = _k.MixtureDraws(
        n_phases=parameters.n_phases,
        material=parameters.phase_material,
        weight=parameters.phase_weight,
        orientation_coefficients=p["_coefficients"],
        orientation_mean=p["_mean"],
        microstrain=p["microstrain"],
        crystallite_size_nm=p["crystallite_size_nm"],
        zero_shift_deg=p["zero_shift_deg"],
        caglioti_u_deg2=config.instrument_u_deg2 + p["instrument_du_deg2"],
        caglioti_v_deg2=config.instrument_v_deg2 + p["instrument_dv_deg2"],
        caglioti_w_deg2=config.instrument_w_deg2 + p["instrument_dw_deg2"],
        tail_tolerance=tail_tolerances(p["noise_sigma"], config),
    )
    # No table: the exact engine.
    table = None
    if config.engine == "lut":
        table = build_width_lut(config, grid, smallest_tail_tolerance(config)).table
    _k.render_batch(
        mixture, windows, _bin_grid(grid), library.stick_table(grid), draws, constants, table, lab
    )
    return mixture, windows


def render_mixtures(
    parameters: MixtureParameters, library: PhaseLibrary, config: RecipeConfig, grid: GridConfig
) -> tuple[np.ndarray, np.ndarray]:
    """Render sampled parameters into normalised patterns float32 (n, n_bins) and window bins int32 (n, 2)."""
    p = parameters.params
    mixture, windows = render_clean_mixtures(parameters, library, config, grid)
    pattern = np.empty(mixture.shape, dtype=np.float32)
    if config.lab is not None:
        lab_background = _k.LabBackground(
            level=p["background_level"],
            chebyshev=p["background_coefficients"],
            hump_height=p["hump_height"],
            hump_center_deg=p["hump_center_deg"],
            hump_fwhm_deg=p["hump_fwhm_deg"],
            air_scatter_height=p["air_scatter_height"],
            air_scatter_decay_deg=p["air_scatter_decay_deg"],
            counts_at_max=p["counts_at_max"],
            background_subtracted=p["background_subtracted"],
            standard_normal=parameters.standard_normal,
            percentile=config.normalization_percentile,
        )
        _k.finish_lab_batch(mixture, pattern, windows, _bin_grid(grid), lab_background)
        return pattern, windows
    background = _k.Background(
        baseline_coefficients=p["baseline_coefficients"],
        baseline_amplitude=p["baseline_amplitude"],
        floor_offset=p["floor_offset"],
        floor_slope=p["floor_slope"],
        noise_sigma=p["noise_sigma"],
        standard_normal=parameters.standard_normal,
        baseline_mode=_k.MULTIPLICATIVE if config.baseline_mode == "multiplicative" else _k.ADDITIVE,
        percentile=config.normalization_percentile,
    )
    _k.finish_batch(mixture, pattern, windows, _bin_grid(grid), background)
    return pattern, windows


def generate_batch(
    rng: np.random.Generator,
    library: PhaseLibrary,
    pool: np.ndarray,
    n: int,
    config: RecipeConfig,
    grid: GridConfig,
) -> MixtureBatch:
    """`n` augmented mixtures of materials from `pool` (indices into `library`), following A.1."""
    pool = np.asarray(pool, dtype=np.int64)
    if pool.size and (pool.min() < 0 or pool.max() >= library.n_materials):
        raise ValueError(f"pool holds indices outside the library's 0..{library.n_materials - 1}")
    parameters = sample_mixture_parameters(rng, pool, n, config, grid, library)
    pattern, windows = render_mixtures(parameters, library, config, grid)
    materials = parameters.phase_material
    spacegroup = np.where(materials >= 0, library.spacegroup[np.maximum(materials, 0)], 0).astype(np.int16)
    params = {k: v for k, v in parameters.params.items() if not k.startswith("_")}
    return MixtureBatch(
        pattern=pattern,
        window_bins=windows,
        n_phases=parameters.n_phases,
        phase_material=materials,
        phase_spacegroup=spacegroup,
        phase_weight=parameters.phase_weight.astype(np.float32),
        params=params,
    )
