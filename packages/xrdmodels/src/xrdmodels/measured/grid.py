"""A measured pattern on the model's fixed 2θ grid, normalised as in training (A.1).

:func:`to_model_grid` runs these steps, one function each: the wavelength mapping
(:func:`measurement_wavelength`, :func:`to_model_wavelength` with the Lorentz-polarisation re-weighting
:func:`lp_reweighting`), the peak-width check and optional broadening (:func:`match_training_widths`), the
resampling (:func:`window_bins`, :func:`resample`), the normalisation (:func:`normalise`) and the warnings
about how far the pattern lies from what the model was trained on (:func:`raw_signal_warnings`,
:func:`coverage_warnings`, :func:`width_warnings`). What it was trained on is a :class:`TrainingRanges`:
:meth:`TrainingRanges.from_recipe` of the recipe the checkpoint records, or :data:`A1` (the paper's).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..config import CU_KA_ANGSTROM, preset
from .common import READER_NOTES, MeasuredFormatError, MeasuredPattern, MeasuredSignalError

MAX_TRAINING_WINDOW_START_DEG = 20.0
"""Latest window start seen in training: 2θ_lo ~ U(5°, 20°) (A.1, measurement windowing)."""
MIN_TRAINING_WINDOW_END_DEG = 80.0
"""Earliest window end seen in training: 2θ_hi ~ U(80°, 120°) (A.1, measurement windowing)."""
MIN_TRAINING_WINDOW_DEG = MIN_TRAINING_WINDOW_END_DEG - MAX_TRAINING_WINDOW_START_DEG
"""Shortest measurement window seen in training, degrees 2θ (A.1): 80° - 20° = 60°."""
_PAPER_MODEL = preset("paper")
MIN_GRID_COVERAGE_FRACTION = MIN_TRAINING_WINDOW_DEG / (
    _PAPER_MODEL.two_theta_max_deg - _PAPER_MODEL.two_theta_min_deg
)
"""Shortest training window over the span of the paper's grid (A.1, the ``paper`` model preset's
[5°, 120°]), about 0.52: a window covering less of whatever grid the model uses is narrower than anything it
was trained on."""
MIN_MEASURED_WINDOW_DEG = 5.0
"""Narrowest measured range, degrees 2θ on the model grid, that is predicted at all: a few lines at most, far
below any training window (the paper's shortest is 60°), from which no set of space groups can be read."""
MIN_MEASURED_POINTS = 10
"""Fewest measured points inside the model's 2θ range that are predicted at all."""
MOSTLY_EMPTY_FRACTION = 0.5
"""A gridded pattern is 'mostly empty' when more than this fraction of its in-window bins are zero."""
MAJORITY_NEGATIVE_FRACTION = 0.5
"""A pattern whose strongest excursions are negative (its peaks point down: the :data:`EXTREME_RANK`-th lowest
value's magnitude above the as-ranked highest, or equal to it with more than this fraction of its intensities
negative) is refused; otherwise negative values are clipped to 0, however many (a background-subtracted
export's noise sits around 0, so a small residual offset makes most of its baseline negative)."""
EXTREME_RANK = 3
"""Which way a pattern's peaks point is read from its k-th lowest and k-th highest values, k this or 0.1% of the
points if more, so that one dropout (-9999) or one cosmic-ray spike does not decide it."""
GAP_WARNING_DEG = 0.5
"""A run of window bins without a measured point wider than this (degrees 2θ on the model grid, several peak
widths) is a gap in the scan, warned about with its range: it is filled by a straight line."""
INTERPOLATED_WARNING_FRACTION = 0.1
"""More than this fraction of interpolated window bins earns a warning (the measurement is coarser)."""
WAVELENGTH_CONFLICT_REL_TOL = 1e-3
"""A wavelength option that differs from the file's by more than this relative amount earns a warning."""

_BIN_EDGE_TOLERANCE = 1e-9


@dataclass
class GriddedPattern:
    """A measured pattern on the model grid, normalised as in training (A.1, normalization).

    Attributes:
        pattern: (n_bins,) float32; 0 outside the window, inside it clipped at 0 and divided by the training
            recipe's percentile (A.1: 99th) of the in-window values.
        window_bins: half-open bin range [first bin inside the measured range, first bin after it).
        warnings: human-readable reasons to distrust a prediction on this pattern.
    """

    pattern: np.ndarray
    window_bins: tuple[int, int]
    warnings: list[str] = field(default_factory=list)


# --------------------------------------------------------------------------------------------------------
# Wavelength mapping
# --------------------------------------------------------------------------------------------------------


def convert_two_theta_deg(
    two_theta_deg: np.ndarray, *, from_wavelength_angstrom: float, to_wavelength_angstrom: float
) -> np.ndarray:
    """Map 2θ (degrees) measured at one wavelength to the 2θ of the same d-spacing at another.

    d = λ_from / (2 sin θ_from), 2θ_to = 2 asin(λ_to / (2 d)). Returns NaN where the reflection cannot be
    reached at ``to_wavelength_angstrom`` (λ_to / (2 d) > 1).
    """
    if not (from_wavelength_angstrom > 0 and to_wavelength_angstrom > 0):
        raise ValueError(
            f"wavelengths must be positive ångström values, got {from_wavelength_angstrom} and "
            f"{to_wavelength_angstrom}"
        )
    sin_theta_to = (to_wavelength_angstrom / from_wavelength_angstrom) * np.sin(
        np.radians(np.asarray(two_theta_deg, dtype=np.float64)) / 2.0
    )
    out = np.full(sin_theta_to.shape, np.nan)
    reachable = sin_theta_to <= 1.0
    out[reachable] = 2.0 * np.degrees(np.arcsin(sin_theta_to[reachable]))
    return out


#: The wavelength a pattern is read at when its file states none and none is given (Å): Cu Kα, the Kα1/Kα2 mean
#: (pymatgen's "CuKa"). Laboratory powder work is mostly Cu and plain two-column exports rarely say so; the
#: field's tools assume it likewise (pymatgen's XRDCalculator, XRD-AutoAnalyzer). A warning says it was assumed.
ASSUMED_WAVELENGTH_ANGSTROM = CU_KA_ANGSTROM


def measurement_wavelength(
    pattern: MeasuredPattern, wavelength_angstrom: float | None
) -> tuple[float, list[str]]:
    """The wavelength the pattern was measured at: ``wavelength_angstrom`` if given, else the file's, else
    :data:`ASSUMED_WAVELENGTH_ANGSTROM` (Cu Kα); and a warning when it was assumed, or when the given and the
    file's disagree.

    Raises:
        MeasuredFormatError: none is given and the file states one that cannot be read (a ``<kAlpha1>`` of
            ``1,5406``): that file says it is not Cu by default, so nothing is assumed.
    """
    measured = wavelength_angstrom if wavelength_angstrom is not None else pattern.wavelength_angstrom
    if measured is None:
        unreadable = pattern.metadata.get("wavelength_unreadable")
        if unreadable:
            raise MeasuredFormatError(
                pattern.source,
                f"the file's wavelength cannot be read (its {unreadable})",
                "Give it with --wavelength on the command line (e.g. --wavelength 1.5406 or CuKa1) or "
                "wavelength_angstrom= in Python",
            )
        return ASSUMED_WAVELENGTH_ANGSTROM, [
            f"the file states no wavelength: read as Cu Kα ({ASSUMED_WAVELENGTH_ANGSTROM} Å), the laboratory "
            "default; if it was measured with another source give it with --wavelength (e.g. MoKa, 0.7093; "
            "wavelength_angstrom= in Python)"
        ]
    if (
        wavelength_angstrom is not None
        and pattern.wavelength_angstrom is not None
        and not math.isclose(
            wavelength_angstrom, pattern.wavelength_angstrom, rel_tol=WAVELENGTH_CONFLICT_REL_TOL
        )
    ):
        return measured, [
            f"using wavelength {wavelength_angstrom} Å from the option; the file says "
            f"{pattern.wavelength_angstrom:.6g} Å ({pattern.metadata.get('wavelength_kind', 'unknown kind')})"
        ]
    return measured, []


def to_model_wavelength(
    pattern: MeasuredPattern,
    measured_wavelength_angstrom: float,
    model_wavelength_angstrom: float,
    *,
    lp_correction: bool = True,
) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """(2θ at the model wavelength, intensity, warnings): every 2θ goes through its d-spacing
    (:func:`convert_two_theta_deg`); points the model wavelength cannot reach are dropped with a warning.
    With ``lp_correction`` the intensities become densities per degree of model 2θ with the model
    wavelength's Lorentz-polarisation factor (:func:`lp_reweighting`); without, they are kept as measured.

    Raises:
        ValueError: fewer than 2 points remain.
    """
    two_theta, intensity = pattern.two_theta_deg, pattern.intensity
    warnings: list[str] = []
    if not math.isclose(measured_wavelength_angstrom, model_wavelength_angstrom, rel_tol=1e-12):
        two_theta = convert_two_theta_deg(
            two_theta,
            from_wavelength_angstrom=measured_wavelength_angstrom,
            to_wavelength_angstrom=model_wavelength_angstrom,
        )
        reachable = np.isfinite(two_theta)
        if not np.all(reachable):
            lost = pattern.two_theta_deg[~reachable]
            warnings.append(
                f"{lost.size} points above {lost.min():.2f} deg measured 2θ have no 2θ at the model wavelength "
                f"{model_wavelength_angstrom} Å (d < λ/2) and were dropped"
            )
        two_theta, intensity = two_theta[reachable], intensity[reachable]
        if lp_correction:
            intensity = intensity * lp_reweighting(
                pattern.two_theta_deg[reachable],
                source_wavelength_angstrom=measured_wavelength_angstrom,
                model_wavelength_angstrom=model_wavelength_angstrom,
            )
    if two_theta.size < 2:
        raise ValueError(
            f"{pattern.source}: fewer than 2 points remain after converting {measured_wavelength_angstrom} Å to "
            f"{model_wavelength_angstrom} Å; check both wavelengths"
        )
    return two_theta, intensity, warnings


# --------------------------------------------------------------------------------------------------------
# Intensities and peak widths at the model wavelength
# --------------------------------------------------------------------------------------------------------

TRAINING_MICROSTRAIN = (0.0, 0.0025)
"""Microstrain ε of the A.1 recipe (``RecipeConfig.microstrain``); Gaussian FWHM = 4 ε tanθ rad."""
TRAINING_STRAIN_FWHM_FACTOR = 4.0
"""Stokes-Wilson apparent-strain constant of the A.1 recipe (``RecipeConfig.strain_fwhm_factor``)."""
TRAINING_CRYSTALLITE_SIZE_NM = (10**2.0, 10**2.4)
"""Crystallite sizes L of the A.1 recipe (``RecipeConfig.crystallite_size_log10_nm`` = [2.0, 2.4])."""
TRAINING_SCHERRER_K = 0.9
"""Scherrer constant of the A.1 recipe (``RecipeConfig.scherrer_k``); Lorentzian FWHM = K λ / (L cosθ) rad."""
TRAINING_CAGLIOTI_U_DEG2 = (0.0, 0.004)
"""Caglioti U of the A.1 recipe (base 0 + ΔU, ``RecipeConfig.instrument_du_deg2``); V is 0."""
TRAINING_CAGLIOTI_W_DEG2 = (0.0018, 0.002)
"""Caglioti W of the A.1 recipe (base 0 + ΔW, ``RecipeConfig.instrument_dw_deg2``)."""
PEAK_SEARCH_HALF_SPAN_DEG = 2.0
"""A strong peak's base is the lowest intensity within this many degrees (model 2θ) either side of it: wider
than twice the widest training FWHM below 110° (about 0.9°), so a peak's own tails never set its base."""
MAX_WIDTH_PEAKS = 10
"""At most this many of the most prominent peaks enter the width estimate."""
MIN_RELATIVE_PROMINENCE = 0.1
"""Only peaks at least this fraction as prominent as the most prominent one enter the width estimate, so
that noise bumps do not."""
ANODE_KALPHA_ANGSTROM = {
    "Cu": 1.54184,
    "Co": 1.79026,
    "Mo": 0.71073,
    "Fe": 1.93735,
    "Cr": 2.291,
    "Ag": 0.560885,
}
"""Kα mean wavelengths (Å) of the tube anodes a `lab` recipe draws (pymatgen's ``WAVELENGTHS`` table, as
xrdsynth's ``config.anode_lines_angstrom``): the wavelength the reader is told for a doublet beam."""


@dataclass(frozen=True)
class TrainingRanges:
    """What the warnings compare a measured pattern with: the ranges of the recipe a model was trained on.

    Built from the recipe a checkpoint records (:meth:`from_recipe`); :data:`A1` is the paper's recipe,
    assumed for checkpoints that record none. Widths follow docs/physics.md (Widths; for a `lab` recipe
    "The lab recipe": the instrument's Caglioti width is evaluated at the instrument angle
    sinθ' = q sinθ, q = λ_anode/λ_model, and scaled onto the model grid by J = cosθ'/(q cosθ)).

    Attributes:
        max_window_start_deg: latest window start drawn (model 2θ, degrees).
        min_window_end_deg: earliest window end drawn.
        microstrain: (min, max) microstrain ε.
        strain_fwhm_factor: Gaussian FWHM = factor · ε · tanθ (rad).
        crystallite_size_nm: (min, max) crystallite size L.
        scherrer_k: Lorentzian FWHM = K λ / (L cosθ) (rad).
        caglioti_u_deg2, caglioti_v_deg2, caglioti_w_deg2: (min, max) Caglioti U, V, W (base + increment).
        instrument_wavelength_ratios: q = λ_anode/λ_model of every anode drawn with probability > 0; (1.0,)
            when the instrument measures at the model wavelength (A.1).
        normalization_percentile: the in-window percentile patterns were divided by (A.1: 99), which
            :func:`to_model_grid` divides a measured pattern by too.
        description: how messages name the recipe.
    """

    max_window_start_deg: float
    min_window_end_deg: float
    microstrain: tuple[float, float]
    strain_fwhm_factor: float
    crystallite_size_nm: tuple[float, float]
    scherrer_k: float
    caglioti_u_deg2: tuple[float, float]
    caglioti_v_deg2: tuple[float, float]
    caglioti_w_deg2: tuple[float, float]
    instrument_wavelength_ratios: tuple[float, ...] = (1.0,)
    normalization_percentile: float = 99.0
    description: str = field(default="the training recipe", compare=False)

    @property
    def min_window_deg(self) -> float:
        """Shortest measurement window drawn in training, degrees 2θ."""
        return self.min_window_end_deg - self.max_window_start_deg

    @property
    def min_grid_coverage_fraction(self) -> float:
        """The shortest training window over the span of the paper's grid (the ``paper`` model preset's
        [5°, 120°]): a window covering less of whatever grid the model uses is narrower than any in training."""
        return self.min_window_deg / (_PAPER_MODEL.two_theta_max_deg - _PAPER_MODEL.two_theta_min_deg)

    @classmethod
    def from_recipe(cls, recipe: dict[str, Any]) -> TrainingRanges:
        """The ranges of a recipe as a mixture store records it (attribute ``recipe``, xrdsynth's
        ``RecipeConfig`` as JSON); a field it lacks takes its A.1 default, as ``RecipeConfig`` does. With a
        ``lab`` object, every anode of ``lab.anode_probabilities`` with probability > 0 bounds the instrument
        widths (its Kα mean wavelength, :data:`ANODE_KALPHA_ANGSTROM`; a Kα1-only beam differs by under 0.1%).

        Raises:
            ValueError: a field of the wrong shape or type, or an unknown anode, named.
        """
        if not isinstance(recipe, dict):
            raise ValueError(f"recipe must be a JSON object, got {type(recipe).__name__}")
        model_wavelength = _recipe_number(recipe, "wavelength_angstrom", 1.54184)
        ratios: tuple[float, ...] = (1.0,)
        lab = recipe.get("lab")
        if lab is not None:
            probabilities = lab.get("anode_probabilities") if isinstance(lab, dict) else None
            if not isinstance(probabilities, dict) or not probabilities:
                raise ValueError(
                    f"recipe field lab.anode_probabilities must be an object of anode -> probability, got "
                    f"{probabilities!r}"
                )
            unknown = sorted(set(probabilities) - set(ANODE_KALPHA_ANGSTROM))
            if unknown:
                raise ValueError(
                    f"recipe field lab.anode_probabilities names unknown anodes {unknown}; known: "
                    f"{', '.join(ANODE_KALPHA_ANGSTROM)}"
                )
            drawn = [a for a, p in probabilities.items() if _is_number(p) and p > 0]
            if not drawn:
                raise ValueError(
                    f"recipe field lab.anode_probabilities {probabilities} gives no anode a chance"
                )
            ratios = tuple(sorted({ANODE_KALPHA_ANGSTROM[a] / model_wavelength for a in drawn}))
        base_u = _recipe_number(recipe, "instrument_u_deg2", 0.0)
        base_v = _recipe_number(recipe, "instrument_v_deg2", 0.0)
        base_w = _recipe_number(recipe, "instrument_w_deg2", 0.0)
        du = _recipe_range(recipe, "instrument_du_deg2", A1.caglioti_u_deg2)
        dv = _recipe_range(recipe, "instrument_dv_deg2", A1.caglioti_v_deg2)
        dw = _recipe_range(recipe, "instrument_dw_deg2", A1.caglioti_w_deg2)
        log_size = _recipe_range(recipe, "crystallite_size_log10_nm", (2.0, 2.4))
        percentile = _recipe_number(recipe, "normalization_percentile", 99.0)
        if not 0.0 < percentile <= 100.0:
            raise ValueError(f"recipe field normalization_percentile must be in (0, 100], got {percentile}")
        return cls(
            max_window_start_deg=_recipe_range(
                recipe, "window_low_deg", (5.0, MAX_TRAINING_WINDOW_START_DEG)
            )[1],
            min_window_end_deg=_recipe_range(recipe, "window_high_deg", (MIN_TRAINING_WINDOW_END_DEG, 120.0))[
                0
            ],
            microstrain=_recipe_range(recipe, "microstrain", A1.microstrain),
            strain_fwhm_factor=_recipe_number(recipe, "strain_fwhm_factor", A1.strain_fwhm_factor),
            crystallite_size_nm=(10.0 ** log_size[0], 10.0 ** log_size[1]),
            scherrer_k=_recipe_number(recipe, "scherrer_k", A1.scherrer_k),
            caglioti_u_deg2=(base_u + du[0], base_u + du[1]),
            caglioti_v_deg2=(base_v + dv[0], base_v + dv[1]),
            caglioti_w_deg2=(base_w + dw[0], base_w + dw[1]),
            instrument_wavelength_ratios=ratios,
            normalization_percentile=percentile,
        )


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def _recipe_number(recipe: dict[str, Any], name: str, default: float) -> float:
    value = recipe.get(name, default)
    if not _is_number(value):
        raise ValueError(f"recipe field {name} must be a finite number, got {value!r}")
    return float(value)


def _recipe_range(recipe: dict[str, Any], name: str, default: tuple[float, float]) -> tuple[float, float]:
    value = recipe.get(name, default)
    if not (isinstance(value, list | tuple) and len(value) == 2 and all(map(_is_number, value))):
        raise ValueError(f"recipe field {name} must be a [low, high] pair of finite numbers, got {value!r}")
    if value[0] > value[1]:
        raise ValueError(f"recipe field {name} {list(value)} must be [low, high] with low <= high")
    return float(value[0]), float(value[1])


A1 = TrainingRanges(
    max_window_start_deg=MAX_TRAINING_WINDOW_START_DEG,
    min_window_end_deg=MIN_TRAINING_WINDOW_END_DEG,
    microstrain=TRAINING_MICROSTRAIN,
    strain_fwhm_factor=TRAINING_STRAIN_FWHM_FACTOR,
    crystallite_size_nm=TRAINING_CRYSTALLITE_SIZE_NM,
    scherrer_k=TRAINING_SCHERRER_K,
    caglioti_u_deg2=TRAINING_CAGLIOTI_U_DEG2,
    caglioti_v_deg2=(0.0, 0.0),
    caglioti_w_deg2=TRAINING_CAGLIOTI_W_DEG2,
    description="the paper's A.1 recipe",
)
"""The paper's recipe (A.1): what a model was trained on when its checkpoint records no recipe."""


def lp_reweighting(
    source_two_theta_deg: np.ndarray,
    *,
    source_wavelength_angstrom: float,
    model_wavelength_angstrom: float,
) -> np.ndarray:
    """The factor that turns an intensity density measured at ``source_two_theta_deg`` into the density, per
    degree of model 2θ, of the same reflections rendered as in training at the model wavelength.

    A peak's area in 2θ is |F|² m LP(θ), with LP(θ) = (1 + cos²2θ) / (sin²θ cosθ) for an unpolarised beam,
    the factor pymatgen's ``XRDCalculator`` gives the training bank's sticks (A.1); so the measured density
    is divided by LP(θ_source) and multiplied by LP(θ_model); the change of variable 2θ_source -> 2θ_model multiplies a density by the Jacobian
    d(2θ_source)/d(2θ_model) = λ_source cosθ_model / (λ_model cosθ_source), so that a peak keeps its area
    (training bins hold a peak's area per bin). With sinθ_source / sinθ_model = λ_source / λ_model the
    product reduces to (1 + cos²2θ_model) / (1 + cos²2θ_source) · (λ_source / λ_model)³: in d-spacing the
    powder intensity depends on the wavelength only through the polarisation. The reduced form is used (it
    stays finite where LP(θ_source) does not, at 2θ_source -> 180°).
    """
    two_theta_model = convert_two_theta_deg(
        source_two_theta_deg,
        from_wavelength_angstrom=source_wavelength_angstrom,
        to_wavelength_angstrom=model_wavelength_angstrom,
    )
    source = np.radians(np.asarray(source_two_theta_deg, dtype=np.float64))
    model = np.radians(two_theta_model)
    polarisation_ratio = (1.0 + np.cos(model) ** 2) / (1.0 + np.cos(source) ** 2)
    return polarisation_ratio * (source_wavelength_angstrom / model_wavelength_angstrom) ** 3


def _tch_fwhm_deg(gauss_fwhm_deg: np.ndarray, lorentz_fwhm_deg: np.ndarray) -> np.ndarray:
    """Thompson-Cox-Hastings pseudo-Voigt FWHM, the rule the A.1 recipe combines widths with."""
    g, lo = gauss_fwhm_deg, lorentz_fwhm_deg
    return (
        g**5
        + 2.69269 * g**4 * lo
        + 2.42843 * g**3 * lo**2
        + 4.47163 * g**2 * lo**3
        + 0.07842 * g * lo**4
        + lo**5
    ) ** 0.2


def training_fwhm_range_deg(
    two_theta_deg: np.ndarray, wavelength_angstrom: float, training: TrainingRanges = A1
) -> tuple[np.ndarray, np.ndarray]:
    """(narrowest, widest) peak FWHM in degrees 2θ that the ``training`` recipe (default :data:`A1`)
    renders at ``two_theta_deg`` on a grid at ``wavelength_angstrom`` (the recipe's Scherrer wavelength):
    strain, Caglioti and crystallite size at the ends of their ranges, combined as the recipe does
    (docs/physics.md, Widths), over every anode of the recipe (the Caglioti width at the anode's own angle
    θ', times J = cosθ'/(q cosθ)); NaN where no anode of the recipe reaches the angle. For A.1 about
    0.062-0.16° at 20°, 0.065-0.39° at 60°, 0.071-0.64° at 90° and 0.085-1.1° at 120° for Cu Kα."""
    theta = np.radians(np.asarray(two_theta_deg, dtype=np.float64)) / 2.0
    tan_theta, cos_theta = np.tan(theta), np.cos(theta)

    def instrument_fwhm_sq(q: float, u_deg2: float, v_deg2: float, w_deg2: float) -> np.ndarray:
        if q == 1.0:
            tan_instrument, jacobian = tan_theta, 1.0
        else:
            sin_instrument = q * np.sin(theta)
            cos_instrument = np.sqrt(np.where(sin_instrument < 1.0, 1.0 - sin_instrument**2, np.nan))
            tan_instrument = sin_instrument / cos_instrument
            jacobian = cos_instrument / (q * cos_theta)
        caglioti = u_deg2 * tan_instrument**2 + v_deg2 * tan_instrument + w_deg2
        return jacobian**2 * np.maximum(caglioti, 0.0)

    def fwhm(pick: int, q: float) -> np.ndarray:
        strain_deg = np.degrees(training.strain_fwhm_factor * training.microstrain[pick] * tan_theta)
        instrument = instrument_fwhm_sq(
            q, training.caglioti_u_deg2[pick], training.caglioti_v_deg2[pick], training.caglioti_w_deg2[pick]
        )
        gauss = np.sqrt(strain_deg**2 + instrument)
        size_nm = training.crystallite_size_nm[1 - pick]
        lorentz = np.degrees(training.scherrer_k * wavelength_angstrom / (10.0 * size_nm * cos_theta))
        return _tch_fwhm_deg(gauss, lorentz)

    ratios = training.instrument_wavelength_ratios
    # fmin/fmax skip an anode that does not reach an angle (NaN) without warning.
    narrowest = np.fmin.reduce(np.stack([fwhm(0, q) for q in ratios]), axis=0)
    widest = np.fmax.reduce(np.stack([fwhm(1, q) for q in ratios]), axis=0)
    return narrowest, widest


def _sliding_min(values: np.ndarray, half_span: int) -> np.ndarray:
    """Minimum of ``values`` over [i - half_span, i + half_span] (clipped to the array) for every i, in O(n)
    (van Herk / Gil-Werman: block-wise prefix and suffix minima)."""
    n, window = values.size, 2 * half_span + 1
    n_blocks = -(-(n + 2 * half_span) // window)
    padded = np.full(n_blocks * window, np.inf)
    padded[half_span : half_span + n] = values
    blocks = padded.reshape(n_blocks, window)
    prefix = np.minimum.accumulate(blocks, axis=1).ravel()
    suffix = np.minimum.accumulate(blocks[:, ::-1], axis=1)[:, ::-1].ravel()
    # Window [i, i + window - 1] of the padded array is centred on values[i].
    return np.minimum(suffix[:n], prefix[window - 1 : window - 1 + n])


def strong_peak_widths(two_theta_deg: np.ndarray, intensity: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(2θ, FWHM) in degrees of up to :data:`MAX_WIDTH_PEAKS` of the most prominent peaks of a pattern
    (ascending ``two_theta_deg``), the strongest first.

    A peak's prominence is its height above the lowest intensity within :data:`PEAK_SEARCH_HALF_SPAN_DEG`;
    its FWHM is the distance between the two linearly interpolated crossings of half that prominence
    (scipy's ``peak_widths`` at rel_height 0.5, with this base). Peaks are taken greedily by prominence,
    each hiding the local maxima within 3 FWHM of it (its own noisy flanks); those less prominent than
    :data:`MIN_RELATIVE_PROMINENCE` of the first, or without a crossing on both sides within the span, are
    left out.
    """
    n = two_theta_deg.size
    if n < 3:
        return np.empty(0), np.empty(0)
    step = float(np.median(np.diff(two_theta_deg)))
    half_span = max(1, min(n, math.ceil(PEAK_SEARCH_HALF_SPAN_DEG / step)))
    prominence = intensity - _sliding_min(intensity, half_span)
    interior = np.arange(1, n - 1)
    is_max = (intensity[interior] >= intensity[interior - 1]) & (
        intensity[interior] > intensity[interior + 1]
    )
    candidates = interior[is_max]
    candidates = candidates[np.argsort(-prominence[candidates], kind="stable")]
    if candidates.size == 0 or prominence[candidates[0]] <= 0:
        return np.empty(0), np.empty(0)
    floor = MIN_RELATIVE_PROMINENCE * prominence[candidates[0]]
    hidden = np.zeros(n, dtype=bool)
    centres: list[float] = []
    widths: list[float] = []
    for i in candidates:
        if len(widths) == MAX_WIDTH_PEAKS or prominence[i] < floor:
            break
        if hidden[i]:
            continue
        half = intensity[i] - prominence[i] / 2.0
        lo, hi = max(0, i - half_span), min(n, i + half_span + 1)
        left_below = np.flatnonzero(intensity[lo:i] < half)
        right_below = np.flatnonzero(intensity[i + 1 : hi] < half)
        if left_below.size == 0 or right_below.size == 0:
            hidden[i] = True
            continue
        j, k = lo + left_below[-1], i + 1 + right_below[0]
        left = np.interp(half, intensity[j : j + 2], two_theta_deg[j : j + 2])
        right = np.interp(half, intensity[k - 1 : k + 1][::-1], two_theta_deg[k - 1 : k + 1][::-1])
        fwhm = right - left
        centres.append(float(two_theta_deg[i]))
        widths.append(float(fwhm))
        hidden |= np.abs(two_theta_deg - two_theta_deg[i]) <= 3.0 * fwhm
    return np.asarray(centres), np.asarray(widths)


WIDTH_WARNING_MARGIN = 1.25
"""Widths are flagged when the median over the strong peaks of FWHM / narrowest training FWHM at their angle
is below 1 / this, or of FWHM / widest training FWHM above this: a margin for peaks at the corners of the
training ranges and for the estimate's own error (Kα2 shoulders, noise, 0.01-0.03° measurement steps)."""


def width_warnings(
    centres_deg: np.ndarray,
    fwhm_deg: np.ndarray,
    model_wavelength_angstrom: float,
    mapped_from: str,
    training: TrainingRanges = A1,
) -> list[str]:
    """A warning when the strong peaks (:func:`strong_peak_widths`, in model 2θ) are narrower or wider than
    anything the ``training`` recipe (default :data:`A1`) renders at their angles
    (:func:`training_fwhm_range_deg`), beyond :data:`WIDTH_WARNING_MARGIN`; ``mapped_from`` says which
    wavelength mapping scaled the widths, if any. Peaks at angles no anode of the recipe reaches are left out."""
    narrowest, widest = training_fwhm_range_deg(centres_deg, model_wavelength_angstrom, training)
    reached = np.isfinite(narrowest)
    fwhm_deg, narrowest, widest = fwhm_deg[reached], narrowest[reached], widest[reached]
    if fwhm_deg.size == 0:
        return []
    measured = (
        f"median FWHM {np.median(fwhm_deg):.3f} deg over the {fwhm_deg.size} strongest peaks{mapped_from}"
    )
    if np.median(fwhm_deg / narrowest) < 1.0 / WIDTH_WARNING_MARGIN:
        return [
            f"peaks narrower than any in training: {measured}, where {training.description}'s narrowest are "
            f"{np.median(narrowest):.3f} deg; broaden_to_training=True adds the missing Gaussian width"
        ]
    if np.median(fwhm_deg / widest) > WIDTH_WARNING_MARGIN:
        return [
            f"peaks wider than any in training: {measured}, where {training.description}'s widest are "
            f"{np.median(widest):.3f} deg (nanocrystalline or strained sample, coarse instrument, or "
            "overlapping reflections); the model never saw peaks this broad"
        ]
    return []


def missing_gaussian_fwhm_deg(
    centres_deg: np.ndarray,
    fwhm_deg: np.ndarray,
    model_wavelength_angstrom: float,
    training: TrainingRanges = A1,
) -> float:
    """FWHM of the Gaussian that brings the strong peaks to the narrowest width of the ``training`` recipe
    (default :data:`A1`) at their angles (median over the peaks of sqrt(narrowest² - FWHM²), widths adding
    in quadrature); 0 when they are not narrower than that."""
    narrowest, _ = training_fwhm_range_deg(centres_deg, model_wavelength_angstrom, training)
    reached = np.isfinite(narrowest)
    if not np.any(reached):
        return 0.0
    missing_sq = narrowest[reached] ** 2 - fwhm_deg[reached] ** 2
    return float(np.median(np.sqrt(np.clip(missing_sq, 0.0, None))))


def gaussian_broaden(two_theta_deg: np.ndarray, intensity: np.ndarray, fwhm_deg: float) -> np.ndarray:
    """``intensity`` (a density over ascending ``two_theta_deg``) convolved with a unit-area Gaussian of
    ``fwhm_deg``, evaluated at the same points. The convolution runs on cells a tenth of the FWHM wide that
    hold the average of the interpolated curve (:func:`integral_of_interpolant`, so areas are kept however
    fine the points), with the end cells continued beyond the ends so that the edges do not sag."""
    cell = fwhm_deg / 10.0
    n_cells = max(1, math.ceil((two_theta_deg[-1] - two_theta_deg[0]) / cell))
    edges = two_theta_deg[0] + cell * np.arange(n_cells + 1)
    averages = np.diff(integral_of_interpolant(two_theta_deg, intensity, edges)) / cell
    sigma_cells = fwhm_deg / (2.0 * math.sqrt(2.0 * math.log(2.0))) / cell
    half = math.ceil(5.0 * sigma_cells)
    kernel = np.exp(-0.5 * (np.arange(-half, half + 1) / sigma_cells) ** 2)
    padded = np.pad(averages, half, mode="edge")
    smoothed = np.convolve(padded, kernel / kernel.sum(), mode="valid")
    return np.interp(two_theta_deg, edges[:-1] + cell / 2.0, smoothed)


def match_training_widths(
    two_theta_deg: np.ndarray,
    intensity: np.ndarray,
    *,
    measured_wavelength_angstrom: float,
    model_wavelength_angstrom: float,
    broaden: bool,
    training: TrainingRanges = A1,
) -> tuple[np.ndarray, list[str]]:
    """(intensity, warnings) for a pattern already at the model wavelength: the strong peaks' widths
    (:func:`strong_peak_widths`) checked against the ``training`` recipe (default :data:`A1`,
    :func:`width_warnings`); with ``broaden``, peaks
    narrower than training first get the missing Gaussian width (:func:`gaussian_broaden`), said in a
    warning, and are checked again."""
    centres, fwhm = strong_peak_widths(two_theta_deg, intensity)
    mapped_from = ""
    if centres.size and not math.isclose(
        measured_wavelength_angstrom, model_wavelength_angstrom, rel_tol=1e-12
    ):
        source = convert_two_theta_deg(
            centres,
            from_wavelength_angstrom=model_wavelength_angstrom,
            to_wavelength_angstrom=measured_wavelength_angstrom,
        )
        # d(2θ_model)/d(2θ_source) = λ_model cosθ_source / (λ_source cosθ_model).
        stretch = (model_wavelength_angstrom * np.cos(np.radians(source) / 2.0)) / (
            measured_wavelength_angstrom * np.cos(np.radians(centres) / 2.0)
        )
        mapped_from = (
            f" at the model wavelength (mapping from {measured_wavelength_angstrom:g} Å widened them "
            f"{stretch.min():.2f}-{stretch.max():.2f}x)"
        )
    warnings: list[str] = []
    added_fwhm = (
        missing_gaussian_fwhm_deg(centres, fwhm, model_wavelength_angstrom, training) if broaden else 0.0
    )
    if added_fwhm > 0.0 and width_warnings(centres, fwhm, model_wavelength_angstrom, mapped_from, training):
        intensity = gaussian_broaden(two_theta_deg, intensity, added_fwhm)
        warnings.append(
            f"peaks narrower than in training (median FWHM {np.median(fwhm):.3f} deg) were convolved with a "
            f"{added_fwhm:.3f} deg FWHM Gaussian (broaden_to_training)"
        )
        centres, fwhm = strong_peak_widths(two_theta_deg, intensity)
    return intensity, warnings + width_warnings(
        centres, fwhm, model_wavelength_angstrom, mapped_from, training
    )


# --------------------------------------------------------------------------------------------------------
# Resampling
# --------------------------------------------------------------------------------------------------------


def window_bins(
    two_theta_deg: np.ndarray, two_theta_min_deg: float, bin_width_deg: float, n_bins: int
) -> tuple[int, int]:
    """Half-open range of the bins whose centre (min + (i + 0.5) width) lies inside the measured range
    (ascending ``two_theta_deg``), within a 1e-9 bin tolerance; empty when none does."""
    low, high = float(two_theta_deg[0]), float(two_theta_deg[-1])
    first = max(0, math.ceil((low - two_theta_min_deg) / bin_width_deg - 0.5 - _BIN_EDGE_TOLERANCE))
    end = min(n_bins, math.floor((high - two_theta_min_deg) / bin_width_deg - 0.5 + _BIN_EDGE_TOLERANCE) + 1)
    return first, end


def integral_of_interpolant(
    two_theta_deg: np.ndarray, intensity: np.ndarray, at_deg: np.ndarray
) -> np.ndarray:
    """Integral from the first point to each of ``at_deg`` (clipped to the points' range) of the linear
    interpolation of ``intensity`` over ascending ``two_theta_deg``: whole trapezoids plus part of one."""
    at_deg = np.clip(at_deg, two_theta_deg[0], two_theta_deg[-1])
    cumulative = np.concatenate(
        ([0.0], np.cumsum(np.diff(two_theta_deg) * (intensity[1:] + intensity[:-1]) / 2.0))
    )
    segment = np.clip(np.searchsorted(two_theta_deg, at_deg, side="right") - 1, 0, two_theta_deg.size - 2)
    at_value = np.interp(at_deg, two_theta_deg, intensity)
    return cumulative[segment] + (at_deg - two_theta_deg[segment]) * (intensity[segment] + at_value) / 2.0


def resample(
    two_theta_deg: np.ndarray,
    intensity: np.ndarray,
    two_theta_min_deg: float,
    bin_width_deg: float,
    n_bins: int,
    window: tuple[int, int],
) -> tuple[np.ndarray, list[str]]:
    """(n_bins,) float64 values, 0 outside ``window``: each window bin gets the average over the bin (over
    its measured part at the ends of the range) of the linear interpolation of the points, so a peak's area
    is kept whatever its width and however the points fall in the bins, as in training, where every bin
    holds the integral of the profile over it (docs/physics.md). With points in a bin that is the bin average
    of the measured curve; a bin with none (a step coarser than the bin) gets the interpolation across it, and
    a warning says so when more than :data:`INTERPOLATED_WARNING_FRACTION` of the window has none."""
    first, end = window
    bin_index = np.floor((two_theta_deg - two_theta_min_deg) / bin_width_deg).astype(np.int64)
    on_grid = (bin_index >= 0) & (bin_index < n_bins)
    counts = np.bincount(bin_index[on_grid], minlength=n_bins)
    edges = two_theta_min_deg + np.arange(first, end + 1) * bin_width_deg
    edges = np.clip(edges, two_theta_deg[0], two_theta_deg[-1])
    integral = integral_of_interpolant(two_theta_deg, intensity, edges)
    values = np.zeros(n_bins, dtype=np.float64)
    values[first:end] = np.diff(integral) / np.diff(edges)
    # One point in a bin is measured there (a 0.05° step on 0.056° bins): only empty bins are interpolated.
    empty = counts[first:end] == 0
    n_interpolated = int(np.count_nonzero(empty))
    warnings = []
    if n_interpolated > INTERPOLATED_WARNING_FRACTION * (end - first):
        warnings.append(
            f"{n_interpolated} of {end - first} window bins were interpolated: the measurement step is "
            f"coarser than the grid's {bin_width_deg:.4f} deg bins there"
        )
    # Runs of empty bins: starts and ends where the padded mask changes.
    change = np.flatnonzero(np.diff(np.concatenate([[False], empty, [False]]).astype(np.int8)))
    gaps = [
        (a, b)
        for a, b in zip(change[::2], change[1::2], strict=True)
        if (b - a) * bin_width_deg > GAP_WARNING_DEG
    ]
    if gaps:
        a, b = max(gaps, key=lambda gap: gap[1] - gap[0])
        lo, hi = (two_theta_min_deg + (first + i) * bin_width_deg for i in (a, b))
        warnings.append(
            f"the scan has {len(gaps)} gap(s) without a measured point wider than {GAP_WARNING_DEG} deg, the "
            f"widest {lo:.2f}-{hi:.2f} deg on the model grid: a straight line fills them, so no peak there can be "
            "seen (training patterns have none)"
        )
    return values, warnings


# --------------------------------------------------------------------------------------------------------
# Normalisation
# --------------------------------------------------------------------------------------------------------


def normalise(
    values: np.ndarray, window: tuple[int, int], *, source: str, where: str, percentile: float = 99.0
) -> list[str]:
    """Normalise the window of ``values`` in place as in training (A.1): clipped at 0, then divided by the
    ``percentile`` (training's, A.1: 99th; ``numpy.quantile``, linear) of the in-window values, or by their
    maximum (with a warning) when that percentile is 0 (too few bins hold signal).

    Raises:
        MeasuredSignalError: nothing in the window is positive or varies; the message names ``source`` and
            says ``where`` the window lies.
    """
    inside = slice(*window)
    values[inside] = np.clip(values[inside], 0.0, None)
    peak = float(values[inside].max())
    if peak <= 0 or peak == float(values[inside].min()):
        raise MeasuredSignalError(
            source,
            f"{'no positive intensity' if peak <= 0 else 'a flat line'} {where}: nothing the model could identify",
            "Check the wavelength (--wavelength on the command line, wavelength_angstrom= in Python) and that "
            "the second column holds the measured intensities",
        )
    scale = float(np.quantile(values[inside], percentile / 100.0))
    warnings: list[str] = []
    if scale <= 0:
        n_window = window[1] - window[0]
        warnings.append(
            f"only {int(np.count_nonzero(values[inside]))} of {n_window} in-window bins hold signal: the "
            f"{percentile:g}th percentile used to normalise in training (A.1) is 0, so the pattern was divided by its "
            "maximum instead; a prediction on so sparse a pattern is unreliable"
        )
        scale = peak
    values[inside] /= scale
    return warnings


# --------------------------------------------------------------------------------------------------------
# Warnings
# --------------------------------------------------------------------------------------------------------


def raw_signal_warnings(pattern: MeasuredPattern) -> list[str]:
    """Refuse a pattern whose intensities carry no measurable signal; warn about negative ones (clipped), and
    repeat what the reader noted about the file (``metadata["reader_notes"]``: a footer left out, decimal
    commas, an encoding).

    Counts cannot be negative: negative values from background subtraction and noise (however many: a residual
    offset below 0 makes most of a subtracted baseline negative) are clipped, but peaks pointing down come from a
    sign error or a wrong column and are refused rather than clipped into an empty pattern
    (:data:`MAJORITY_NEGATIVE_FRACTION`).
    """
    notes = pattern.metadata.get(READER_NOTES, "").splitlines()
    intensity = pattern.intensity
    n_points = intensity.size
    n_negative = int(np.count_nonzero(intensity < 0))
    if not np.any(intensity):
        raise MeasuredSignalError(
            pattern.source,
            f"all {n_points} intensities are 0: the pattern holds no measurable signal",
            "Check that the file holds the measured counts (not an empty scan or a blank column); nothing "
            "was predicted",
        )
    # The k-th most extreme values, not the single ones: a dropout written as -9999 or one cosmic-ray spike must
    # not decide which way the peaks point.
    k = max(EXTREME_RANK, n_points // 1000)
    if n_points >= 2 * k:
        ordered = np.partition(intensity, (k - 1, n_points - k))
        lowest, highest = float(ordered[k - 1]), float(ordered[n_points - k])
    else:
        lowest, highest = float(intensity.min()), float(intensity.max())
    mostly_negative = n_negative > MAJORITY_NEGATIVE_FRACTION * n_points
    if -lowest > highest or (mostly_negative and -lowest >= highest):
        raise MeasuredSignalError(
            pattern.source,
            f"{n_negative} of {n_points} intensities ({100 * n_negative / n_points:.0f}%) are negative, which "
            f"counts cannot be, and the strongest excursions point down (the {k}th lowest value {lowest:g} against "
            f"the {k}th highest {highest:g})",
            "Check the column order and the sign of the intensities; nothing was predicted",
        )
    if intensity.max() == intensity.min():
        raise MeasuredSignalError(
            pattern.source,
            f"all {n_points} intensities equal {intensity[0]:g}: a flat line has no peaks to identify",
            "Check that the second column holds the measured intensities; nothing was predicted",
        )
    if n_negative:
        notes.append(
            f"{n_negative} of {n_points} intensities ({100 * n_negative / n_points:.1f}%) are negative, which "
            "counts cannot be (over-subtracted background or a sign error); they were clipped to 0 before "
            "normalising, as in training (A.1)"
        )
    return notes


def coverage_warnings(
    values: np.ndarray,
    window: tuple[int, int],
    two_theta_min_deg: float,
    two_theta_max_deg: float,
    training: TrainingRanges = A1,
) -> list[str]:
    """Warnings for a normalised pattern unlike the ``training`` recipe's data (default :data:`A1`): a window
    narrower than the shortest training window, one outside the training windows' start and end ranges, a
    mostly empty window."""
    first, end = window
    width = (two_theta_max_deg - two_theta_min_deg) / values.size
    warnings: list[str] = []
    window_deg = (end - first) * width
    grid_deg = two_theta_max_deg - two_theta_min_deg
    shortest, fraction = training.min_window_deg, training.min_grid_coverage_fraction
    if window_deg < shortest or window_deg < fraction * grid_deg:
        warnings.append(
            f"measured range covers only {100 * window_deg / grid_deg:.0f}% of the model grid "
            f"({window_deg:.1f} of {grid_deg:.1f} deg); the training windows of {training.description} were "
            f"at least {shortest:.0f} deg wide, {100 * fraction:.0f}% of the paper's grid"
        )
    window_start, window_end = two_theta_min_deg + first * width, two_theta_min_deg + end * width
    if window_start > training.max_window_start_deg or window_end < training.min_window_end_deg:
        warnings.append(
            f"window {window_start:.1f}-{window_end:.1f} deg lies outside the training windows of "
            f"{training.description} (start <= {training.max_window_start_deg:.0f} deg, end >= "
            f"{training.min_window_end_deg:.0f} deg): the model never saw that part of the grid unmeasured"
        )
    empty_fraction = float(np.mean(values[first:end] <= 0))
    if empty_fraction > MOSTLY_EMPTY_FRACTION:
        warnings.append(
            f"pattern is mostly empty: {100 * empty_fraction:.0f}% of the in-window bins are zero after "
            "clipping negatives (no data, padding or over-subtracted background)"
        )
    return warnings


# --------------------------------------------------------------------------------------------------------
# All steps
# --------------------------------------------------------------------------------------------------------


def to_model_grid(
    pattern: MeasuredPattern,
    *,
    wavelength_angstrom: float | None,
    model_wavelength_angstrom: float,
    two_theta_min_deg: float,
    two_theta_max_deg: float,
    n_bins: int,
    lp_correction: bool = True,
    broaden_to_training: bool = False,
    training: TrainingRanges = A1,
) -> GriddedPattern:
    """Put a measured pattern on the model's input grid, normalised as in training.

    Steps:

    1. Wavelength: ``wavelength_angstrom`` if given, else ``pattern.wavelength_angstrom``; with neither, Cu Kα
       (1.54184 Å) with a warning (:func:`measurement_wavelength`). When it differs from ``model_wavelength_angstrom`` every 2θ goes through its d-spacing
       (:func:`convert_two_theta_deg`); points the model wavelength cannot reach are dropped. With
       ``lp_correction`` (default) the intensities are re-weighted to the model wavelength's
       Lorentz-polarisation factor, per degree of model 2θ so that peak areas carry over
       (:func:`lp_reweighting`): relative peak areas then match a pattern measured at the model wavelength.
       Peak widths are estimated on the strong peaks (:func:`strong_peak_widths`); with
       ``broaden_to_training`` peaks narrower than the narrowest training peaks are convolved with the
       missing Gaussian width (:func:`missing_gaussian_fwhm_deg`, :func:`gaussian_broaden`). Off by
       default: no model has been scored on broadened patterns yet.
    2. Resampling onto ``n_bins`` uniform bins over [two_theta_min_deg, two_theta_max_deg] (bin i centred
       at min + (i + 0.5) width): each bin in the measured range holds the average over the bin of the
       linear interpolation of the points (:func:`resample`), so peak areas are kept as in training.
    3. Window: the bins whose centre lies inside the measured 2θ range (wholly or mostly inside).
    4. Normalisation (A.1): 0 outside the window; inside, clipped at 0 and divided by the training recipe's
       percentile (``training.normalization_percentile``, A.1: 99th; ``numpy.quantile``, linear) of the
       in-window values when that is > 0.

    Warnings compare the pattern with ``training``, the ranges of the recipe the model was trained on
    (:meth:`TrainingRanges.from_recipe` of the recipe its checkpoint records; default :data:`A1`, the paper's,
    whose windows give :data:`MIN_TRAINING_WINDOW_DEG`, :data:`MIN_GRID_COVERAGE_FRACTION`,
    :data:`MAX_TRAINING_WINDOW_START_DEG` and :data:`MIN_TRAINING_WINDOW_END_DEG`). They are added for a
    window shorter than the shortest training window (in degrees or as a fraction of the grid), a window that
    starts after the latest training start or ends before the earliest training end (outside the training
    distribution), a mostly empty pattern (:data:`MOSTLY_EMPTY_FRACTION`), a pattern
    so sparse that its normalisation percentile is 0 (then divided by its maximum instead), negative intensities
    (clipped to 0), points dropped by the wavelength conversion, more than 10% of the window bins
    interpolated, a gap in the scan wider than :data:`GAP_WARNING_DEG`, a wavelength assumed (Cu Kα: neither the file nor the option states one) or an option that
    contradicts the file (by more than 0.1%), strong peaks narrower or
    wider than the training recipe renders at their angles (:func:`width_warnings`), and the Gaussian width
    added by ``broaden_to_training``.

    Raises:
        MeasuredSignalError: no measurable signal: every intensity 0, all equal, the peaks pointing down
            (:data:`MAJORITY_NEGATIVE_FRACTION`), or nothing positive or nothing varying
            inside the model's 2θ range; or too little measured: a window narrower than
            :data:`MIN_MEASURED_WINDOW_DEG` or fewer than :data:`MIN_MEASURED_POINTS` points on the grid.
        MeasuredFormatError: the file states a wavelength that cannot be read and none was given.
        ValueError: bad grid arguments, or the measured range does not overlap the grid.
    """
    if not (n_bins >= 1 and two_theta_max_deg > two_theta_min_deg):
        raise ValueError(
            f"model grid needs n_bins >= 1 and two_theta_max_deg > two_theta_min_deg, got n_bins={n_bins}, "
            f"[{two_theta_min_deg}, {two_theta_max_deg}]"
        )
    measured_wavelength, warnings = measurement_wavelength(pattern, wavelength_angstrom)
    two_theta, intensity, dropped = to_model_wavelength(
        pattern, measured_wavelength, model_wavelength_angstrom, lp_correction=lp_correction
    )
    warnings += dropped
    intensity, width_notes = match_training_widths(
        two_theta,
        intensity,
        measured_wavelength_angstrom=measured_wavelength,
        model_wavelength_angstrom=model_wavelength_angstrom,
        broaden=broaden_to_training,
        training=training,
    )
    warnings += width_notes

    width = (two_theta_max_deg - two_theta_min_deg) / n_bins
    window = window_bins(two_theta, two_theta_min_deg, width, n_bins)
    measured_range = f"{two_theta[0]:.2f}-{two_theta[-1]:.2f} deg"
    if window[1] <= window[0]:
        raise ValueError(
            f"{pattern.source}: measured range {measured_range} (at {model_wavelength_angstrom} Å) does "
            f"not cover any bin centre of the model grid {two_theta_min_deg}-{two_theta_max_deg} deg; check the "
            "wavelength, the grid and that the first column is 2θ in degrees (not radians)"
        )
    n_inside = int(np.count_nonzero((two_theta >= two_theta_min_deg) & (two_theta <= two_theta_max_deg)))
    window_deg = (window[1] - window[0]) * width
    if window_deg < MIN_MEASURED_WINDOW_DEG or n_inside < MIN_MEASURED_POINTS:
        raise MeasuredSignalError(
            pattern.source,
            f"the measured range {measured_range} (at {model_wavelength_angstrom} Å) puts {n_inside} points over "
            f"{window_deg:.1f} deg of the model grid: too little to identify phases (at least "
            f"{MIN_MEASURED_POINTS} points over {MIN_MEASURED_WINDOW_DEG:g} deg are needed; the training windows "
            f"were at least {training.min_window_deg:.0f} deg wide)",
            "Measure a wider 2θ range, or check the wavelength and that the first column is 2θ in degrees (not "
            "radians); nothing was predicted",
        )
    warnings += raw_signal_warnings(pattern)
    values, interpolated = resample(two_theta, intensity, two_theta_min_deg, width, n_bins, window)
    warnings += interpolated
    where = (
        f"inside the model's 2θ range {two_theta_min_deg:g}-{two_theta_max_deg:g} deg (measured {measured_range} "
        f"at {model_wavelength_angstrom} Å)"
    )
    warnings += normalise(
        values, window, source=pattern.source, where=where, percentile=training.normalization_percentile
    )
    warnings += coverage_warnings(values, window, two_theta_min_deg, two_theta_max_deg, training)
    return GriddedPattern(values.astype(np.float32), window, warnings)
