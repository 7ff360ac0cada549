"""A measured pattern on the model's fixed 2θ grid, normalised as in training (A.1).

:func:`to_model_grid` runs four steps, one function each: the wavelength mapping
(:func:`measurement_wavelength`, :func:`to_model_wavelength`), the resampling (:func:`window_bins`,
:func:`resample`), the normalisation (:func:`normalise`) and the warnings about how far the pattern lies
from what the model was trained on (:func:`raw_signal_warnings`, :func:`coverage_warnings`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from ..config import preset
from .common import MeasuredFormatError, MeasuredPattern, MeasuredSignalError

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
MOSTLY_EMPTY_FRACTION = 0.5
"""A gridded pattern is 'mostly empty' when more than this fraction of its in-window bins are zero."""
MAJORITY_NEGATIVE_FRACTION = 0.5
"""A pattern with more than this fraction of negative intensities is refused; fewer are clipped to 0."""
INTERPOLATED_WARNING_FRACTION = 0.1
"""More than this fraction of interpolated window bins earns a warning (the measurement is coarser)."""
WAVELENGTH_CONFLICT_REL_TOL = 1e-3
"""A wavelength option that differs from the file's by more than this relative amount earns a warning."""

_BIN_EDGE_TOLERANCE = 1e-9


@dataclass
class GriddedPattern:
    """A measured pattern on the model grid, normalised as in training (A.1, normalization).

    Attributes:
        pattern: (n_bins,) float32; 0 outside the window, inside it clipped at 0 and divided by the 99th
            percentile of the in-window values.
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


def measurement_wavelength(
    pattern: MeasuredPattern, wavelength_angstrom: float | None
) -> tuple[float, list[str]]:
    """The wavelength the pattern was measured at: ``wavelength_angstrom`` if given, else the file's; and a
    warning when both are known and disagree.

    Raises:
        MeasuredFormatError: neither is known.
    """
    measured = wavelength_angstrom if wavelength_angstrom is not None else pattern.wavelength_angstrom
    if measured is None:
        raise MeasuredFormatError(
            pattern.source,
            "the file states no wavelength and none was given",
            "Give it with --wavelength on the command line (e.g. --wavelength 1.5406 or CuKa1) or "
            "wavelength_angstrom= in Python (1.5406 for Cu Kα1, 0.7093 for Mo Kα1)",
        )
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
    pattern: MeasuredPattern, measured_wavelength_angstrom: float, model_wavelength_angstrom: float
) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """(2θ at the model wavelength, intensity, warnings): every 2θ goes through its d-spacing
    (:func:`convert_two_theta_deg`); points the model wavelength cannot reach are dropped with a warning.

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
    if two_theta.size < 2:
        raise ValueError(
            f"{pattern.source}: fewer than 2 points remain after converting {measured_wavelength_angstrom} Å to "
            f"{model_wavelength_angstrom} Å; check both wavelengths"
        )
    return two_theta, intensity, warnings


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


def resample(
    two_theta_deg: np.ndarray,
    intensity: np.ndarray,
    two_theta_min_deg: float,
    bin_width_deg: float,
    n_bins: int,
    window: tuple[int, int],
) -> tuple[np.ndarray, list[str]]:
    """(n_bins,) float64 values, 0 outside ``window``: a window bin holding two or more points gets their
    mean, any other its linear interpolation at the centre (measurement coarser than the grid); a warning
    when more than :data:`INTERPOLATED_WARNING_FRACTION` of the window was interpolated."""
    first, end = window
    centres = two_theta_min_deg + (np.arange(n_bins) + 0.5) * bin_width_deg
    bin_index = np.floor((two_theta_deg - two_theta_min_deg) / bin_width_deg).astype(np.int64)
    on_grid = (bin_index >= 0) & (bin_index < n_bins)
    counts = np.bincount(bin_index[on_grid], minlength=n_bins)
    sums = np.bincount(bin_index[on_grid], weights=intensity[on_grid], minlength=n_bins)
    values = np.zeros(n_bins, dtype=np.float64)
    inside = slice(first, end)
    averaged = counts[inside] >= 2
    values[inside] = np.where(
        averaged,
        sums[inside] / np.maximum(counts[inside], 1),
        np.interp(centres[inside], two_theta_deg, intensity),
    )
    n_interpolated = int(np.count_nonzero(~averaged))
    if n_interpolated > INTERPOLATED_WARNING_FRACTION * (end - first):
        return values, [
            f"{n_interpolated} of {end - first} window bins were interpolated: the measurement step is "
            f"coarser than the grid's {bin_width_deg:.4f} deg bins there"
        ]
    return values, []


# --------------------------------------------------------------------------------------------------------
# Normalisation
# --------------------------------------------------------------------------------------------------------


def normalise(values: np.ndarray, window: tuple[int, int], *, source: str, where: str) -> list[str]:
    """Normalise the window of ``values`` in place as in training (A.1): clipped at 0, then divided by the
    99th percentile (``numpy.quantile``, linear) of the in-window values, or by their maximum (with a
    warning) when fewer than 1% of the bins hold signal and that percentile is 0.

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
    scale = float(np.quantile(values[inside], 0.99))
    warnings: list[str] = []
    if scale <= 0:
        n_window = window[1] - window[0]
        warnings.append(
            f"only {int(np.count_nonzero(values[inside]))} of {n_window} in-window bins hold signal: the "
            "99th percentile used to normalise in training (A.1) is 0, so the pattern was divided by its "
            "maximum instead; a prediction on so sparse a pattern is unreliable"
        )
        scale = peak
    values[inside] /= scale
    return warnings


# --------------------------------------------------------------------------------------------------------
# Warnings
# --------------------------------------------------------------------------------------------------------


def raw_signal_warnings(pattern: MeasuredPattern) -> list[str]:
    """Refuse a pattern whose intensities carry no measurable signal; warn about negative ones (clipped).

    Counts cannot be negative: a few negative values come from background subtraction and noise, a majority
    from a sign error or a wrong column, so those are refused rather than clipped into an empty pattern.
    """
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
    if n_negative > MAJORITY_NEGATIVE_FRACTION * n_points:
        raise MeasuredSignalError(
            pattern.source,
            f"{n_negative} of {n_points} intensities ({100 * n_negative / n_points:.0f}%) are negative, which "
            "counts cannot be",
            "Check the column order and the sign of the intensities, or redo an over-subtracted background; "
            "nothing was predicted",
        )
    if intensity.max() == intensity.min():
        raise MeasuredSignalError(
            pattern.source,
            f"all {n_points} intensities equal {intensity[0]:g}: a flat line has no peaks to identify",
            "Check that the second column holds the measured intensities; nothing was predicted",
        )
    if n_negative:
        return [
            f"{n_negative} of {n_points} intensities ({100 * n_negative / n_points:.1f}%) are negative, which "
            "counts cannot be (over-subtracted background or a sign error); they were clipped to 0 before "
            "normalising, as in training (A.1)"
        ]
    return []


def coverage_warnings(
    values: np.ndarray, window: tuple[int, int], two_theta_min_deg: float, two_theta_max_deg: float
) -> list[str]:
    """Warnings for a normalised pattern unlike the training data: a window narrower than the shortest
    training window, one outside the training windows' start and end ranges, a mostly empty window."""
    first, end = window
    width = (two_theta_max_deg - two_theta_min_deg) / values.size
    warnings: list[str] = []
    window_deg = (end - first) * width
    grid_deg = two_theta_max_deg - two_theta_min_deg
    if window_deg < MIN_TRAINING_WINDOW_DEG or window_deg < MIN_GRID_COVERAGE_FRACTION * grid_deg:
        warnings.append(
            f"measured range covers only {100 * window_deg / grid_deg:.0f}% of the model grid "
            f"({window_deg:.1f} of {grid_deg:.1f} deg); the paper's training windows were at least "
            f"{MIN_TRAINING_WINDOW_DEG:.0f} deg wide, {100 * MIN_GRID_COVERAGE_FRACTION:.0f}% of its grid (A.1)"
        )
    window_start, window_end = two_theta_min_deg + first * width, two_theta_min_deg + end * width
    if window_start > MAX_TRAINING_WINDOW_START_DEG or window_end < MIN_TRAINING_WINDOW_END_DEG:
        warnings.append(
            f"window {window_start:.1f}-{window_end:.1f} deg lies outside the paper's training windows "
            f"(start <= {MAX_TRAINING_WINDOW_START_DEG:.0f} deg, end >= {MIN_TRAINING_WINDOW_END_DEG:.0f} deg, "
            "A.1): the model never saw that part of the grid unmeasured"
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
) -> GriddedPattern:
    """Put a measured pattern on the model's input grid, normalised as in training.

    Steps:

    1. Wavelength: ``wavelength_angstrom`` if given, else ``pattern.wavelength_angstrom``; both None is an
       error. When it differs from ``model_wavelength_angstrom`` every 2θ goes through its d-spacing
       (:func:`convert_two_theta_deg`); points the model wavelength cannot reach are dropped.
    2. Resampling onto ``n_bins`` uniform bins over [two_theta_min_deg, two_theta_max_deg] (bin i centred
       at min + (i + 0.5) width): a bin holding two or more points gets their mean, any other bin in the
       measured range the linear interpolation at its centre (measurement coarser than the grid).
    3. Window: the bins whose centre lies inside the measured 2θ range (wholly or mostly inside).
    4. Normalisation (A.1): 0 outside the window; inside, clipped at 0 and divided by the 99th percentile
       (``numpy.quantile``, linear) of the in-window values when that is > 0.

    Warnings are added for a window shorter than the shortest training window
    (:data:`MIN_TRAINING_WINDOW_DEG` or :data:`MIN_GRID_COVERAGE_FRACTION` of the grid), a window that
    starts after :data:`MAX_TRAINING_WINDOW_START_DEG` or ends before :data:`MIN_TRAINING_WINDOW_END_DEG`
    (outside the training distribution), a mostly empty pattern (:data:`MOSTLY_EMPTY_FRACTION`), a pattern
    so sparse that its 99th percentile is 0 (then divided by its maximum instead), negative intensities
    (clipped to 0), points dropped by the wavelength conversion, more than 10% of the window bins
    interpolated, and a wavelength option that contradicts the file (by more than 0.1%).

    Raises:
        MeasuredSignalError: no measurable signal: every intensity 0, all equal, more than
            :data:`MAJORITY_NEGATIVE_FRACTION` of them negative, or nothing positive or nothing varying
            inside the model's 2θ range.
        MeasuredFormatError: no wavelength in the file or the option.
        ValueError: bad grid arguments, or the measured range does not overlap the grid.
    """
    if not (n_bins >= 1 and two_theta_max_deg > two_theta_min_deg):
        raise ValueError(
            f"model grid needs n_bins >= 1 and two_theta_max_deg > two_theta_min_deg, got n_bins={n_bins}, "
            f"[{two_theta_min_deg}, {two_theta_max_deg}]"
        )
    measured_wavelength, warnings = measurement_wavelength(pattern, wavelength_angstrom)
    two_theta, intensity, dropped = to_model_wavelength(
        pattern, measured_wavelength, model_wavelength_angstrom
    )
    warnings += dropped

    width = (two_theta_max_deg - two_theta_min_deg) / n_bins
    window = window_bins(two_theta, two_theta_min_deg, width, n_bins)
    measured_range = f"{two_theta[0]:.2f}-{two_theta[-1]:.2f} deg"
    if window[1] <= window[0]:
        raise ValueError(
            f"{pattern.source}: measured range {measured_range} (at {model_wavelength_angstrom} Å) does "
            f"not cover any bin centre of the model grid {two_theta_min_deg}-{two_theta_max_deg} deg; check the "
            "wavelength and the grid"
        )
    warnings += raw_signal_warnings(pattern)
    values, interpolated = resample(two_theta, intensity, two_theta_min_deg, width, n_bins, window)
    warnings += interpolated
    where = (
        f"inside the model's 2θ range {two_theta_min_deg:g}-{two_theta_max_deg:g} deg (measured {measured_range} "
        f"at {model_wavelength_angstrom} Å)"
    )
    warnings += normalise(values, window, source=pattern.source, where=where)
    warnings += coverage_warnings(values, window, two_theta_min_deg, two_theta_max_deg)
    return GriddedPattern(values.astype(np.float32), window, warnings)
