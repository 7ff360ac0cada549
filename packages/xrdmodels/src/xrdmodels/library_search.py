"""Library search: rank a bank's space groups by how well their phases explain a measured pattern.

The classical baseline a model has to beat: search-match of the measured pattern against the user's own
library of single-phase patterns (a bank store, docs/formats.md, read here with plain zarr; xrdmodels never
imports xrdsynth).

Figure of merit (per phase): the weighted cross-correlation (WCC) similarity of de Gelder, Wehrens and
Hageman (J. Comput. Chem. 22, 273, 2001), maximised over a small zero shift, on square-root intensities:

1. The measured pattern goes onto the bank's 2θ grid at the bank's wavelength through its d-spacings
   (:func:`~xrdmodels.measured.convert_two_theta_deg`), so any wavelength is searched against the same
   library; bins hold the mean of the interpolated pattern over them (:func:`~xrdmodels.measured.grid.resample`).
2. Background: a morphological top-hat (rolling minimum then rolling maximum over
   :data:`BACKGROUND_WINDOW_DEG`, smoothed by a rolling mean of the same width) is subtracted, and the noise
   floor (median of what remains plus :data:`NOISE_THRESHOLD_SIGMA` standard deviations of the counting noise,
   estimated from bin-to-bin differences) is cut off, so only peaks are compared.
3. Each read phase's stored profile (its sticks on the grid; generated crystals, the bank's ``synthetic``
   entries, are left out: :func:`_searched_entries`) is broadened by a Gaussian as wide as the measured
   peaks (the median FWHM of the strongest ones, :func:`typical_fwhm_bins`, rounded to a ladder of widths
   from :data:`PEAK_FWHM_DEG` to :data:`MAX_PEAK_FWHM_DEG`), so broad peaks are compared with broad lines.
4. Both sides are square-rooted (the variance-stabilising transform of counting statistics, which also
   keeps preferred orientation from letting one reflection dominate) and box-filtered over
   +-:data:`MATCH_TOLERANCE_DEG`: the dot product of two box-filtered vectors is the WCC numerator with a
   triangular weight of twice that half-width, so peaks that are close but not on the same bin still agree.
5. The phase's score is the cosine of the two vectors over the measured window, maximised over zero
   shifts of the measured pattern within +-:data:`MAX_ZERO_SHIFT_DEG` and over isotropic changes of its cell
   within +-``cell_scan`` (default :data:`~xrdmodels.config.DEFAULT_LIBRARY_CELL_SCAN`, 3%: its d-spacings
   divided by 1 + s before step 1, s in steps of :data:`CELL_SCALE_STEP`): a measured mineral is rarely the
   library entry's exact cell (solid solution, composition, temperature), and a search that only tolerates a
   zero shift misses it where the cells differ by more than a fraction of a per cent; 1 is a perfect match.
6. Axis by axis, on request (``refine_axes``; ``--library-refine-axes`` on the command line): a solid
   solution rarely changes its cell by the same fraction along every axis. The phases that score best in the
   first round (:data:`REFINED_PHASES`) are compared again with their cell changed along each axis their
   crystal system lets change on its own (:func:`axis_ties`: none for cubic cells, the basal plane and the
   unique axis for tetragonal, trigonal and hexagonal ones, three axes otherwise), each within
   +-:data:`MAX_AXIS_DEPARTURE` of the isotropic change and +-``cell_scan`` of the library's cell; their
   templates are rendered from their reflections (the bank's ``peaks/reflection_*`` arrays,
   :meth:`SpectralLibrary.strained_templates`) on grids of cell changes, coarse and broad first
   (:data:`REFINEMENT_STAGES`). A phase keeps the better of its two figures of merit, and the match reports
   each axis's change. Off by default: on RRUFF dev it moved the library's top-1 from 0.515 to 0.524 (13 files
   gained, 9 lost: no gain beyond chance), and the combined ranking's top-1 up but its top-5 down on one of two
   models, at about 3.4x the search's time (docs/benchmarks.md, "Axis by axis").

Mixtures: the search runs in rounds, as a residual search does (Hanawalt search on the unexplained lines).
After each round the best phase's strong lines (its template above :data:`COVERED_FRACTION` of its maximum)
are taken out of the window, and the next round scores the remaining phases on what is left, until
:data:`MAX_ROUNDS` phases are identified or less than :data:`MIN_UNEXPLAINED_FRACTION` of the measured signal
remains unexplained. A phase's score is its best over the rounds; a space group's score is the best score of
its phases.

Cost: the whole ``profile`` array is read once and kept with the templates of the last 3 peak widths used,
about 35 bytes per bin and phase (90 MB for 1,219 phases of 2,048 bins); a search is one matrix product
per round over every zero shift and cell scale. On one thread, the 1,219 read phases of the measured pipeline's
bank search the 443 RRUFF dev files in 16 s without the cell scan and 60 s with it (about 36 and 135 ms a pattern,
reading the files and the bank included; docs/benchmarks.md, "The library search scans the cell").
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial

import numpy as np
import zarr

from .config import DEFAULT_LIBRARY_CELL_SCAN, N_SPACE_GROUPS, is_local_url
from .measured import MeasuredPattern, MeasuredSignalError, convert_two_theta_deg
from .measured.grid import measurement_wavelength, raw_signal_warnings, resample, window_bins
from .spacegroups import crystal_system, symbol

BANK_FORMAT = "xrdsynth.bank"
BANK_FORMAT_VERSIONS = (1, 2)
"""The bank format versions this module reads (docs/formats.md, "Bank store"): version 2 only adds per-reflection
arrays, which a library search does not need."""

PEAK_FWHM_DEG = 0.15
"""Narrowest FWHM (degrees 2θ at the bank's wavelength) given to the bank's sticks: a sharp lab peak."""
MAX_PEAK_FWHM_DEG = 2.0
"""Broadest FWHM (degrees 2θ) given to the bank's sticks, for broad measured peaks (nanocrystals, strain)."""
PEAK_FWHM_STEP = 1.25
"""Ratio between successive template peak widths; measured widths are rounded to the nearest one."""
N_WIDTH_PEAKS = 8
"""Strongest measured peaks whose median FWHM sets the template peak width."""
WIDTH_PEAK_MIN_FRACTION = 0.1
"""Only peaks at least this fraction of the highest one are measured for the width."""
MATCH_TOLERANCE_DEG = 0.2
"""Half-width (degrees 2θ) of the box filter; the WCC triangle it makes is twice as wide."""
MAX_ZERO_SHIFT_DEG = 0.3
"""Largest zero shift (degrees 2θ) tried between the measured pattern and the library."""
CELL_SCALE_STEP = 0.003
"""Step of the cell scan, a fraction of d: at 2θ = 90° neighbouring scales move a peak by 0.34°, less than the
zero-shift scan and the match window together cover."""
REFINED_PHASES = 16
"""Phases (the best of the first round) whose cell is then refined axis by axis where their crystal system lets
the axes change apart (module docstring, step 6)."""
MAX_AXIS_DEPARTURE = 0.012
"""Most an axis's change may depart from the cell's best isotropic change (a fraction of d) in the axis-by-axis
refinement."""
REFINEMENT_STAGES = ((2, 3), (1, 0))
"""The axis-by-axis refinement's stages, coarse to fine: (grid step in :data:`CELL_SCALE_STEP`, template width
above the measured one in :data:`PEAK_FWHM_STEP` levels) (module docstring, step 6)."""
BACKGROUND_WINDOW_DEG = 4.0
"""Width (degrees 2θ) of the top-hat background window: wider than a cluster of overlapping peaks."""
NOISE_THRESHOLD_SIGMA = 2.0
"""Intensity above the background median, in noise standard deviations, below which a bin counts as noise."""
COVERED_FRACTION = 0.3
"""An identified phase covers the bins where its template exceeds this fraction of its maximum."""
MIN_UNEXPLAINED_FRACTION = 0.2
"""The residual search stops when less than this fraction of the measured signal is left unexplained."""
MAX_ROUNDS = 3
"""Most phases the residual search identifies one after the other."""

_REQUIRED_ARRAYS = (
    "entries/id",
    "entries/reduced_formula",
    "entries/spacegroup_number",
    "peaks/offsets",
    "profile",
)
_TEMPLATE_BLOCK_ROWS = 1024
_CACHED_WIDTHS = 3


def check_cell_scan(cell_scan: float) -> None:
    """Raise ValueError unless ``cell_scan`` (a fraction of d) lies in [0, 0.5)."""
    if not 0.0 <= cell_scan < 0.5:
        raise ValueError(
            f"library cell scan {cell_scan} must lie in [0, 0.5), a fraction of d (--library-cell-scan on the "
            f"command line, cell_scan= in Python; 0 compares the library's cells only, default "
            f"{DEFAULT_LIBRARY_CELL_SCAN})"
        )


class LibraryFormatError(ValueError):
    """A bank store that cannot serve as a library: missing, another format or version, incomplete, damaged."""


@dataclass
class LibraryMatch:
    """One space group of a library-search ranking.

    score: the best figure of merit of the group's phases (cosine, 0..1; module docstring).
    phase_id, formula: the library entry that gave it.
    zero_shift_deg: measured minus library peak positions (degrees 2θ at the bank's wavelength) at the match,
        after the cell scale.
    cell_scale: the measured phase's d-spacings over the library phase's, minus 1, at the match (0.01: the
        sample's cell is 1% larger than the library's).
    round: the residual-search round in which it scored best (1: against the whole pattern).
    cell_axes: where the axis-by-axis refinement (module docstring, step 6; off by default) gave the match,
        the d-spacing change along each axis of the phase's Busing-Levy frame (a*, the normal to a* in the a*-b*
        plane, c: a, b, c where the axes are orthogonal), as fractions like ``cell_scale``, which is then their
        mean; otherwise None.
    """

    spacegroup: int
    symbol: str
    crystal_system: str
    score: float
    phase_id: str
    formula: str
    zero_shift_deg: float
    cell_scale: float
    round: int
    cell_axes: tuple[float, float, float] | None = None


@dataclass
class LibraryResult:
    """The library search on one pattern: ranked groups (best first), the phases the rounds identified."""

    file: str
    library: str
    ranked: list[LibraryMatch]
    identified: list[str]
    warnings: list[str] = field(default_factory=list)


def _open_group(url: str, storage_options: dict | None = None) -> zarr.Group:
    storage_options = storage_options or None  # zarr refuses even {} for a local path
    if storage_options and is_local_url(url):
        raise LibraryFormatError(
            f"{url} is a local path, which takes no storage_options (they are for fsspec URLs such as "
            "s3://bucket/bank.zarr): leave them out, or give the bank as a URL"
        )
    try:
        return zarr.open_group(url, mode="r", storage_options=storage_options)
    except Exception as exc:  # noqa: BLE001 - zarr and fsspec raise many types for a missing or foreign path
        raise LibraryFormatError(
            f"no bank store at {url} ({type(exc).__name__}: {exc}); give a bank built by "
            "`xrdsynth bank build` (--library of predict and score-measured, the BANK argument of add-memory, "
            "library= in Python)"
        ) from None


def _check_bank(group: zarr.Group, url: str) -> None:
    attrs = group.attrs
    fmt = attrs.get("format")
    if fmt != BANK_FORMAT:
        hint = (
            " (that is a mixture store; give the bank it was generated from, its bank_url attribute)"
            if fmt == "xrdsynth.mixtures"
            else ""
        )
        raise LibraryFormatError(
            f"{url} is not a bank store: its format attribute is {fmt!r}, expected {BANK_FORMAT!r}{hint}; "
            "build one with `xrdsynth bank build`"
        )
    if attrs.get("format_version") not in BANK_FORMAT_VERSIONS:
        raise LibraryFormatError(
            f"{url} has bank format version {attrs.get('format_version')!r}; this xrdmodels reads versions "
            f"{', '.join(map(str, BANK_FORMAT_VERSIONS))} (docs/formats.md); rebuild it with a matching "
            "`xrdsynth bank build`"
        )
    if attrs.get("complete") is not True:
        raise LibraryFormatError(
            f"{url} is incomplete (its build was interrupted): rerun `xrdsynth bank build` to finish it"
        )
    for name in _REQUIRED_ARRAYS:
        if name not in group:
            raise LibraryFormatError(
                f"{url} lacks the array {name!r} that every bank store holds (docs/formats.md); the store is "
                "damaged: rebuild it with `xrdsynth bank build`"
            )
    grid = attrs.get("grid")
    try:
        lo, hi, n_bins = (
            float(grid["two_theta_min_deg"]),
            float(grid["two_theta_max_deg"]),
            int(grid["n_bins"]),
        )
        wavelength = float(attrs["wavelength_angstrom"])
    except (TypeError, KeyError, ValueError):
        raise LibraryFormatError(
            f"{url}: attributes grid ({grid!r}) and wavelength_angstrom "
            f"({attrs.get('wavelength_angstrom')!r}) must give two_theta_min_deg, two_theta_max_deg, n_bins "
            "and a wavelength in Å (docs/formats.md); rebuild it with `xrdsynth bank build`"
        ) from None
    if not (n_bins >= 8 and hi > lo and wavelength > 0):
        raise LibraryFormatError(
            f"{url}: grid {lo}-{hi}° in {n_bins} bins at {wavelength} Å is not a usable grid (docs/formats.md)"
        )


def _searched_entries(group: zarr.Group, n: int, url: str) -> np.ndarray:
    """bool (n,): the entries a search compares with, the read structures. Generated crystals (the optional
    ``entries/synthetic`` column: the bank's ``random:N`` and ``random-ionic:N`` sources) are there to teach a
    model the space groups no read structure holds, not phases a sample can contain: searched, they outscore
    real phases on some patterns (docs/benchmarks.md, "Random crystals built as ionic compounds"). A bank
    without the column, or of generated crystals only, is searched whole."""
    if "synthetic" not in group["entries"]:
        return np.ones(n, dtype=bool)
    read = ~np.asarray(group["entries/synthetic"][...], dtype=bool)
    if read.shape != (n,):
        raise LibraryFormatError(
            f"{url}: entries/synthetic has shape {read.shape} for {n} entries; the store is "
            "damaged: rebuild it"
        )
    return read if read.any() else np.ones(n, dtype=bool)


def _splits(group: zarr.Group, n: int, keep: np.ndarray) -> np.ndarray | None:
    """str: the kept entries' splits (``entries/split``), None where the bank has no such column of n rows."""
    if "split" not in group["entries"] or group["entries/split"].shape != (n,):
        return None
    return np.array(group["entries/split"][...].tolist(), dtype=str)[keep]


@dataclass(frozen=True)
class PhaseReflections:
    """The searched phases' reflections, read from the bank's ``peaks/*`` arrays (docs/formats.md), for the
    axis-by-axis cell refinement (module docstring, step 6).

    offsets: int64 (M+1,), phase m's reflections are rows ``offsets[m]:offsets[m+1]``.
    d_spacing_angstrom: float64 (R,), the reflection's peak d-spacing in Å.
    intensity: float64 (R,), its share of its peak's intensity (the bank's ``reflection_weight × intensity``).
    direction_squared: float64 (R, 3), squared components of its unit scattering direction in the phase's
        Busing-Levy frame.
    axis_ties: int64 (M, 3), per phase, which free cell change each frame axis follows (module docstring, step
        6): [0, 0, 0] cubic (nothing to refine), [0, 0, 1] a uniaxial cell along c, [0, 1, 2] three axes.
    """

    offsets: np.ndarray
    d_spacing_angstrom: np.ndarray
    intensity: np.ndarray
    direction_squared: np.ndarray
    axis_ties: np.ndarray


def axis_ties(spacegroup: int, abc_angstrom: np.ndarray, angles_deg: np.ndarray) -> np.ndarray:
    """int64 (3,): which independent cell change each axis of a phase's Busing-Levy frame (a*, the normal to a*
    in the a*-b* plane, c) follows, as the crystal system allows a solid solution to change its cell.

    Cubic cells change as a whole (all 0). Tetragonal, trigonal and hexagonal cells change in their basal plane
    and along their unique axis, found in the cell: the two equal lengths with all angles 90° or the third 120°
    (a = b: [0, 0, 1]; b = c: [1, 0, 0]; a = c: [0, 1, 0]); a rhombohedral setting, whose unique axis lies along
    no frame axis, changes as a whole. Orthorhombic, monoclinic and triclinic cells change along each axis
    ([0, 1, 2]; for the latter two the diagonal of the change only, in this frame).
    """
    system = crystal_system(spacegroup)
    if system == "cubic":
        return np.zeros(3, dtype=np.int64)
    if system in ("orthorhombic", "monoclinic", "triclinic"):
        return np.arange(3, dtype=np.int64)
    a, b, c = (float(x) for x in abc_angstrom)
    right = [abs(float(x) - 90.0) < 0.5 for x in angles_deg]
    hexagonal = [abs(float(x) - 120.0) < 0.5 for x in angles_deg]
    for (i, j, unique), opposite in (((0, 1, 2), 2), ((1, 2, 0), 0), ((0, 2, 1), 1)):
        equal = abs((a, b, c)[i] - (a, b, c)[j]) <= 1e-3 * max(a, b, c)
        others = [right[k] for k in range(3) if k != opposite]
        if equal and all(others) and (right[opposite] or hexagonal[opposite]):
            ties = np.zeros(3, dtype=np.int64)
            ties[unique] = 1
            return ties
    return np.zeros(3, dtype=np.int64)


def _read_reflections(group: zarr.Group, keep: np.ndarray) -> PhaseReflections | None:
    """The kept entries' reflections, or None where the bank lacks an array they need."""
    needed = (
        "peaks/d_spacing_angstrom",
        "peaks/intensity",
        "peaks/reflection_offsets",
        "peaks/reflection_direction",
        "peaks/reflection_weight",
        "entries/lattice_abc_angstrom",
        "entries/lattice_angles_deg",
    )
    if not all(name in group for name in needed):
        return None
    peak_offsets = np.asarray(group["peaks/offsets"][...], dtype=np.int64)
    reflection_offsets = np.asarray(group["peaks/reflection_offsets"][...], dtype=np.int64)
    per_peak = np.diff(reflection_offsets)
    entry_first = reflection_offsets[peak_offsets]
    kept_reflections = np.repeat(keep, np.diff(entry_first))
    peak_of_reflection = np.repeat(np.arange(per_peak.size), per_peak)[kept_reflections]
    direction = np.asarray(group["peaks/reflection_direction"][...], dtype=np.float64)[kept_reflections]
    weight = np.asarray(group["peaks/reflection_weight"][...], dtype=np.float64)[kept_reflections]
    spacegroups = np.asarray(group["entries/spacegroup_number"][...])[keep]
    abc = np.asarray(group["entries/lattice_abc_angstrom"][...])[keep]
    angles = np.asarray(group["entries/lattice_angles_deg"][...])[keep]
    return PhaseReflections(
        offsets=np.concatenate([[0], np.cumsum(np.diff(entry_first)[keep])]).astype(np.int64),
        d_spacing_angstrom=np.asarray(group["peaks/d_spacing_angstrom"][...], dtype=np.float64)[
            peak_of_reflection
        ],
        intensity=np.asarray(group["peaks/intensity"][...], dtype=np.float64)[peak_of_reflection] * weight,
        direction_squared=direction * direction,
        axis_ties=np.stack(
            [axis_ties(int(g), x, y) for g, x, y in zip(spacegroups, abc, angles, strict=True)]
        ),
    )


def _box_rows(values: np.ndarray, width_bins: int) -> np.ndarray:
    """Each row's running sum over ``width_bins`` centred bins (zero beyond the ends), by cumulative sums."""
    if width_bins <= 1:
        return values
    left = width_bins // 2
    padded = np.pad(values, [(0, 0)] * (values.ndim - 1) + [(left + 1, width_bins - left)])
    cumulative = np.cumsum(padded, axis=-1, dtype=np.float64)
    n = values.shape[-1]
    return (cumulative[..., width_bins : width_bins + n] - cumulative[..., :n]).astype(values.dtype)


def _rolling(values: np.ndarray, width: int, how: str) -> np.ndarray:
    half = width // 2
    padded = np.pad(values, (half, width - 1 - half), mode="edge")
    windows = np.lib.stride_tricks.sliding_window_view(padded, width)
    return getattr(windows, how)(axis=-1)


def peaks_above_background(values: np.ndarray, window_width_bins: int) -> np.ndarray:
    """Measured intensities with the background and the noise floor removed (module docstring, step 2).

    ``values`` is the in-window part of a pattern on a uniform grid; the result is >= 0, same length.
    """
    width = max(3, min(window_width_bins, values.size))
    opened = _rolling(_rolling(values, width, "min"), width, "max")
    background = _rolling(opened, width, "mean")
    peaks = np.clip(values - background, 0.0, None)
    # Counting noise from bin-to-bin differences (MAD, Gaussian-consistent): peaks barely change between
    # neighbouring bins when the grid samples them finely, noise does.
    noise_sigma = (
        1.4826 * float(np.median(np.abs(np.diff(peaks)))) / math.sqrt(2.0) if peaks.size > 1 else 0.0
    )
    floor = float(np.median(peaks)) + NOISE_THRESHOLD_SIGMA * noise_sigma
    return np.clip(peaks - floor, 0.0, None)


def typical_fwhm_bins(peaks: np.ndarray) -> float:
    """Median FWHM, in bins, of the :data:`N_WIDTH_PEAKS` strongest peaks of a background-free pattern.

    Peaks are the local maxima of the pattern lightly smoothed over 3 bins (so that noise does not split a
    broad peak) at least :data:`WIDTH_PEAK_MIN_FRACTION` of the highest (so that noise spikes do not count),
    strongest first, skipping any within two widths of a peak already measured; a peak's width
    is where it falls to half its height on both sides, linearly interpolated. 0 when nothing is positive.
    """
    smooth = _box_rows(peaks[None, :].astype(np.float64), 3)[0] / 3.0
    n = smooth.size
    if n < 3:
        return 0.0
    inner = np.arange(1, n - 1)
    strong = smooth[1:-1] >= WIDTH_PEAK_MIN_FRACTION * smooth.max()
    maxima = inner[(smooth[1:-1] >= smooth[:-2]) & (smooth[1:-1] > smooth[2:]) & strong & (smooth[1:-1] > 0)]
    widths: list[float] = []
    taken: list[tuple[int, int]] = []
    for top in maxima[np.argsort(-smooth[maxima], kind="stable")]:
        if len(widths) == N_WIDTH_PEAKS:
            break
        if any(lo <= top <= hi for lo, hi in taken):
            continue
        half = smooth[top] / 2.0
        left = top
        while left > 0 and smooth[left] > half:
            left -= 1
        right = top
        while right < n - 1 and smooth[right] > half:
            right += 1
        # Interpolate the half-height crossings between the last bin above half and the first below.
        left_cross = left + (half - smooth[left]) / max(smooth[left + 1] - smooth[left], 1e-300)
        right_cross = right - (half - smooth[right]) / max(smooth[right - 1] - smooth[right], 1e-300)
        width = max(right_cross - left_cross, 1.0)
        widths.append(width)
        reach = math.ceil(2 * width)
        taken.append((top - reach, top + reach))
    if not widths:
        return 0.0
    # The 3-bin smoothing added its variance (3² - 1) / 12 bins² to every Gaussian peak: take it out again.
    smoothing_fwhm_squared = 8.0 * math.log(2.0) * (3**2 - 1) / 12.0
    return math.sqrt(max(float(np.median(widths)) ** 2 - smoothing_fwhm_squared, 1.0))


def _cosines(
    templates: np.ndarray, templates_squared: np.ndarray, shifted: np.ndarray, masks: np.ndarray
) -> np.ndarray:
    """(phases, scales, shifts) cosine of each template with each shifted measured template of each cell scale
    (``shifted``: (scales, shifts, bins)) over the bins of that scale's mask (``masks``: (scales, bins);
    ``shifted`` is already 0 outside it); phases with no intensity there score 0."""
    n_scales, n_shifts, n_bins = shifted.shape
    numerator = (templates @ shifted.reshape(-1, n_bins).T).reshape(-1, n_scales, n_shifts)
    phase_norm = np.sqrt(np.clip(templates_squared @ masks.T, 0.0, None))
    measured_norm = np.linalg.norm(shifted, axis=2)
    denominator = phase_norm[:, :, None] * measured_norm[None, :, :]
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(denominator > 0, numerator / denominator, 0.0).astype(np.float64)


class SpectralLibrary:
    """A bank store's phases as search templates (module docstring), ready to search measured patterns.

    Attributes:
        url: where the bank was read from.
        phase_ids, formulas: per phase, from ``entries/id`` and ``entries/reduced_formula``.
        spacegroups: int (M,), from ``entries/spacegroup_number``.
        wavelength_angstrom, two_theta_min_deg, two_theta_max_deg, n_bins: the bank's grid.
        profiles: float32 (M, n_bins), the stored clean profiles; :meth:`templates` gives the search templates.
        reflections: the phases' reflections for the axis-by-axis refinement (None for a bank without them).
        splits: str (M,), per phase its split in the bank (``entries/split``: train, val or test), or None.
        fingerprint: the bank's ``fingerprint`` attribute (what mixture stores record as ``bank_fingerprint``),
            or None.
    """

    fingerprint: str | None = None

    def __init__(
        self,
        url: str,
        phase_ids: np.ndarray,
        formulas: np.ndarray,
        spacegroups: np.ndarray,
        profiles: np.ndarray,
        *,
        wavelength_angstrom: float,
        two_theta_min_deg: float,
        two_theta_max_deg: float,
        reflections: PhaseReflections | None = None,
        splits: np.ndarray | None = None,
    ) -> None:
        self.url = url
        self.splits = splits
        self.phase_ids = phase_ids
        self.formulas = formulas
        self.spacegroups = spacegroups.astype(np.int64)
        self.wavelength_angstrom = wavelength_angstrom
        self.two_theta_min_deg = two_theta_min_deg
        self.two_theta_max_deg = two_theta_max_deg
        self.n_bins = profiles.shape[1]
        self.bin_width_deg = (two_theta_max_deg - two_theta_min_deg) / self.n_bins
        self.profiles = profiles
        self._reflections = reflections
        self._reflection_reader: Callable[[], PhaseReflections | None] | None = None
        self._profile_spectrum: np.ndarray | None = None
        self._templates: dict[int, tuple[np.ndarray, np.ndarray]] = {}

    @classmethod
    def open(cls, url: str, storage_options: dict | None = None) -> SpectralLibrary:
        """Read a bank store (docs/formats.md, "Bank store") with zarr; ``storage_options``: fsspec options of a
        remote ``url`` (endpoint, credentials; without them, the environment's).

        Raises:
            LibraryFormatError: no store at ``url``, another format or version, an interrupted build, a
                missing array or attribute, arrays whose shapes disagree, or no phases.
        """
        url = str(url)
        group = _open_group(url, storage_options)
        _check_bank(group, url)
        grid = group.attrs["grid"]
        n_bins = int(grid["n_bins"])
        phase_ids = np.array(group["entries/id"][...].tolist(), dtype=str)
        formulas = np.array(group["entries/reduced_formula"][...].tolist(), dtype=str)
        spacegroups = np.asarray(group["entries/spacegroup_number"][...])
        profile = group["profile"]
        n = phase_ids.size
        if n == 0:
            raise LibraryFormatError(
                f"{url} holds no phases: nothing to search; build it from some structures"
            )
        if (
            profile.shape != (n, n_bins)
            or formulas.shape != (n,)
            or spacegroups.shape != (n,)
            or group["peaks/offsets"].shape != (n + 1,)
        ):
            raise LibraryFormatError(
                f"{url}: array shapes disagree (entries/id {n}, entries/reduced_formula {formulas.shape}, "
                f"entries/spacegroup_number {spacegroups.shape}, profile {profile.shape} for {n_bins} bins, "
                f"peaks/offsets {group['peaks/offsets'].shape}); the store is damaged: rebuild it"
            )
        if not np.all((spacegroups >= 1) & (spacegroups <= N_SPACE_GROUPS)):
            bad = spacegroups[(spacegroups < 1) | (spacegroups > N_SPACE_GROUPS)]
            raise LibraryFormatError(
                f"{url}: entries/spacegroup_number holds {bad[:5].tolist()}, outside 1-{N_SPACE_GROUPS}"
            )
        keep = _searched_entries(group, n, url)
        library = cls(
            url,
            phase_ids[keep],
            formulas[keep],
            spacegroups[keep],
            np.asarray(profile[...], dtype=np.float32)[keep],
            wavelength_angstrom=float(group.attrs["wavelength_angstrom"]),
            two_theta_min_deg=float(grid["two_theta_min_deg"]),
            two_theta_max_deg=float(grid["two_theta_max_deg"]),
            splits=_splits(group, n, keep),
        )
        # Only the axis-by-axis refinement needs the reflections: read them when it first asks.
        library._reflection_reader = partial(_read_reflections, group, keep)
        fingerprint = group.attrs.get("fingerprint")
        library.fingerprint = None if fingerprint is None else str(fingerprint)
        return library

    @property
    def reflections(self) -> PhaseReflections | None:
        """The phases' reflections (None for a bank without them), read from the bank on first use."""
        if self._reflection_reader is not None:
            self._reflections, self._reflection_reader = self._reflection_reader(), None
        return self._reflections

    def __len__(self) -> int:
        return int(self.phase_ids.size)

    def _bins(self, degrees: float) -> int:
        return max(1, round(degrees / self.bin_width_deg))

    def width_level(self, fwhm_deg: float) -> int:
        """Index of the template peak width used for measured peaks of FWHM ``fwhm_deg``: widths run from
        :data:`PEAK_FWHM_DEG` up to :data:`MAX_PEAK_FWHM_DEG` in steps of a factor :data:`PEAK_FWHM_STEP`."""
        top = round(math.log(MAX_PEAK_FWHM_DEG / PEAK_FWHM_DEG) / math.log(PEAK_FWHM_STEP))
        ratio = max(fwhm_deg, PEAK_FWHM_DEG) / PEAK_FWHM_DEG
        return min(top, round(math.log(ratio) / math.log(PEAK_FWHM_STEP)))

    def templates(self, level: int = 0) -> tuple[np.ndarray, np.ndarray]:
        """(templates, templates squared), float32 (M, n_bins), with peaks of FWHM
        ``PEAK_FWHM_DEG * PEAK_FWHM_STEP**level``: profiles broadened, square-rooted and box-filtered.

        The last few widths used are kept, so a run over many similar patterns computes them once.
        """
        if level not in self._templates:
            if len(self._templates) >= _CACHED_WIDTHS:
                self._templates.pop(next(iter(self._templates)))
            templates = np.concatenate(
                [
                    self._templates_from_spectra(self._spectra()[i : i + _TEMPLATE_BLOCK_ROWS], level)
                    for i in range(0, len(self), _TEMPLATE_BLOCK_ROWS)
                ]
            )
            self._templates[level] = (templates, templates * templates)
        return self._templates[level]

    def _templates_from_spectra(self, spectra: np.ndarray, level: int) -> np.ndarray:
        """float32 (K, n_bins) search templates of profiles given by their spectra on the zero-padded grid
        (padding wide enough that no peak wraps around): convolved with a Gaussian of FWHM
        ``PEAK_FWHM_DEG * PEAK_FWHM_STEP**level``, square-rooted and box-filtered."""
        box = 2 * self._bins(MATCH_TOLERANCE_DEG) + 1
        return _box_rows(np.sqrt(self._broadened_from_spectra(spectra, level)), box)

    def _broadened_from_spectra(self, spectra: np.ndarray, level: int) -> np.ndarray:
        """float32 (K, n_bins), non-negative: profiles given by their spectra on the zero-padded grid, convolved
        with a Gaussian of FWHM ``PEAK_FWHM_DEG * PEAK_FWHM_STEP**level``."""
        fwhm_bins = PEAK_FWHM_DEG * PEAK_FWHM_STEP**level / self.bin_width_deg
        broadened = np.fft.irfft(spectra * self._gaussian(fwhm_bins), n=self._n_padded, axis=1)[
            :, : self.n_bins
        ]
        return np.clip(broadened.astype(np.float32), 0.0, None)

    def broadened_profiles(self, level: int) -> np.ndarray:
        """float32 (M, n_bins): every phase's profile with peaks of FWHM ``PEAK_FWHM_DEG * PEAK_FWHM_STEP**level``
        (degrees 2θ): the phases as a measurement of them would look, before the search's square root and box
        filter (:mod:`xrdmodels.neighbours` shows them to a model)."""
        return np.concatenate(
            [
                self._broadened_from_spectra(self._spectra()[i : i + _TEMPLATE_BLOCK_ROWS], level)
                for i in range(0, len(self), _TEMPLATE_BLOCK_ROWS)
            ]
        )

    def _spectra(self) -> np.ndarray:
        """The profiles' spectra on the zero-padded grid, computed once."""
        if self._profile_spectrum is None:
            self._profile_spectrum = np.fft.rfft(self.profiles, n=self._n_padded, axis=1).astype(np.complex64)
        return self._profile_spectrum

    @property
    def _n_padded(self) -> int:
        return self.n_bins + 2 * math.ceil(3 * MAX_PEAK_FWHM_DEG / self.bin_width_deg)

    def _gaussian(self, fwhm_bins: float) -> np.ndarray:
        """The frequency response of a Gaussian of ``fwhm_bins`` on the zero-padded grid."""
        sigma = fwhm_bins / (2.0 * math.sqrt(2.0 * math.log(2.0)))
        frequency = np.fft.rfftfreq(self._n_padded)
        return np.exp(-2.0 * (math.pi * sigma * frequency) ** 2).astype(np.float32)

    def strained_templates(self, phase: int, axis_scales: np.ndarray, level: int) -> np.ndarray:
        """float32 (K, n_bins): search templates (as :meth:`templates` at ``level``) of library phase ``phase``
        with its cell stretched along the axes of its Busing-Levy frame, d-spacings along axis i times
        1 + ``axis_scales[k, i]`` (``axis_scales``: (K, 3)), rendered from its reflections.

        A reflection of unit scattering direction n and spacing d moves to d / sqrt(sum_i n_i² / (1 + e_i)²),
        the exact spacing once the lattice is stretched by 1 + e_i along axis i (d (1 + e) when every e_i = e).

        Raises:
            ValueError: the bank holds no reflections (format version 1).
        """
        if self.reflections is None:
            raise ValueError(f"{self.url} holds no per-reflection arrays (bank format version 2 does)")
        rows = slice(self.reflections.offsets[phase], self.reflections.offsets[phase + 1])
        squared_direction = self.reflections.direction_squared[rows]
        stretch = np.sqrt((squared_direction[None, :, :] / (1.0 + axis_scales[:, None, :]) ** 2).sum(axis=2))
        sin_theta = self.wavelength_angstrom * stretch / (2.0 * self.reflections.d_spacing_angstrom[rows])
        reachable = sin_theta < 1.0
        two_theta = 2.0 * np.degrees(np.arcsin(np.where(reachable, sin_theta, 0.0)))
        # docs/formats.md `profile`: each stick split linearly between its two nearest bin centres.
        position = (two_theta - self.two_theta_min_deg) / self.bin_width_deg - 0.5
        left = np.floor(position).astype(np.int64)
        upper = position - left
        n_rows = axis_scales.shape[0]
        row_start = (np.arange(n_rows) * self.n_bins)[:, None]
        intensity = self.reflections.intensity[rows][None, :]
        profiles = np.zeros(n_rows * self.n_bins)
        for index, weight in ((left, 1.0 - upper), (left + 1, upper)):
            inside = reachable & (index >= 0) & (index < self.n_bins)
            profiles += np.bincount(
                (row_start + index)[inside], weights=(weight * intensity)[inside], minlength=profiles.size
            )
        spectra = np.fft.rfft(profiles.reshape(n_rows, self.n_bins), n=self._n_padded, axis=1)
        return self._templates_from_spectra(spectra, level)

    def measured_template(
        self, pattern: MeasuredPattern, wavelength_angstrom: float | None = None, cell_scale: float = 0.0
    ) -> tuple[np.ndarray, tuple[int, int], float, list[str]]:
        """(template on the bank grid, window [first, end) bins, typical peak FWHM in degrees 2θ at the
        bank's wavelength, warnings) of a measured pattern whose d-spacings are divided by 1 + ``cell_scale``
        (0: as measured).

        Raises:
            MeasuredSignalError: no measurable signal (all zero, flat, peaks pointing down, no peaks).
            MeasuredFormatError: the file states a wavelength that cannot be read and none was given.
            ValueError: the pattern does not reach the bank's 2θ range at the bank's wavelength.
        """
        measured_wavelength, warnings = measurement_wavelength(pattern, wavelength_angstrom)
        warnings = list(warnings) + raw_signal_warnings(pattern)
        template, window, peaks = self._template_at(pattern, measured_wavelength, cell_scale)
        return template, window, typical_fwhm_bins(peaks) * self.bin_width_deg, warnings

    def _template_at(
        self, pattern: MeasuredPattern, measured_wavelength: float, cell_scale: float
    ) -> tuple[np.ndarray, tuple[int, int], np.ndarray]:
        """(template, window, background-free peaks in the window) of :meth:`measured_template`, for a pattern
        measured at ``measured_wavelength``: the part the cell scan repeats at every scale."""
        # d = λ / (2 sin θ): reading the scan at λ / (1 + s) divides its d-spacings by 1 + s.
        two_theta = convert_two_theta_deg(
            pattern.two_theta_deg,
            from_wavelength_angstrom=measured_wavelength / (1.0 + cell_scale),
            to_wavelength_angstrom=self.wavelength_angstrom,
        )
        reachable = np.isfinite(two_theta)
        two_theta, intensity = two_theta[reachable], pattern.intensity[reachable]
        window = (
            window_bins(two_theta, self.two_theta_min_deg, self.bin_width_deg, self.n_bins)
            if two_theta.size >= 2
            else (0, 0)
        )
        if window[1] - window[0] < 2:
            raise ValueError(
                f"{pattern.source}: measured 2θ range at {measured_wavelength} Å does not overlap the library "
                f"{self.url} ({self.two_theta_min_deg:g}-{self.two_theta_max_deg:g} deg at "
                f"{self.wavelength_angstrom} Å); check the wavelength"
            )
        values, _ = resample(
            two_theta, intensity, self.two_theta_min_deg, self.bin_width_deg, self.n_bins, window
        )
        first, end = window
        peaks = peaks_above_background(values[first:end], self._bins(BACKGROUND_WINDOW_DEG))
        if not np.any(peaks > 0):
            raise MeasuredSignalError(
                pattern.source,
                "no peak stands above the background and noise inside the library's 2θ range",
                "Check the wavelength and that the second column holds the measured intensities",
            )
        template = np.zeros(self.n_bins, dtype=np.float32)
        template[first:end] = peaks
        template = _box_rows(np.sqrt(template)[None, :], 2 * self._bins(MATCH_TOLERANCE_DEG) + 1)[0]
        template[:first] = 0.0
        template[end:] = 0.0
        return template, window, peaks

    def search(
        self,
        pattern: MeasuredPattern,
        *,
        wavelength_angstrom: float | None = None,
        top_k: int | None = None,
        cell_scan: float = DEFAULT_LIBRARY_CELL_SCAN,
        refine_axes: bool = False,
    ) -> LibraryResult:
        """Rank the library's space groups for one measured pattern (module docstring for the method).

        ``wavelength_angstrom`` overrides the file's wavelength. ``ranked`` holds the library's space groups
        only (a group without a phase in the library cannot be found), best first, at most ``top_k``.
        ``cell_scan``: the cell scan's reach, a fraction of d (default
        :data:`~xrdmodels.config.DEFAULT_LIBRARY_CELL_SCAN`; 0 compares the library's cells only; the combined
        ranking's calibration, :mod:`xrdmodels.combined`, was fitted at the default). ``refine_axes``: also
        refine the best phases' cells axis by axis (module docstring, step 6; within the cell scan, so nothing
        is refined when ``cell_scan`` is 0; needs the bank's per-reflection arrays, else the result warns and the
        cells are scanned as a whole).

        Raises:
            MeasuredSignalError, MeasuredFormatError, ValueError: as :meth:`measured_template` at the
                measured cell.
        """
        check_cell_scan(cell_scan)
        measured, (first, end), fwhm_deg, warnings = self.measured_template(pattern, wavelength_angstrom)
        if refine_axes and self.reflections is None:
            warnings.append(
                f"the library {self.url} holds no per-reflection arrays (bank format version 2 does): cells were "
                "scanned as a whole, not refined axis by axis"
            )
        wavelength, _ = measurement_wavelength(pattern, wavelength_angstrom)
        reach = math.floor(cell_scan / CELL_SCALE_STEP + 1e-9)
        scales, templates_by_scale, windows = [], [], []
        for k in range(-reach, reach + 1):
            scale = k * CELL_SCALE_STEP
            if k == 0:
                template, window = measured, (first, end)
            else:
                try:
                    template, window, _ = self._template_at(pattern, wavelength, scale)
                except ValueError:  # this cell puts the scan outside the library's range
                    continue
            scales.append(scale)
            templates_by_scale.append(template)
            windows.append(window)
        scales_array = np.array(scales)
        unscaled = scales.index(0.0)
        templates, templates_squared = self.templates(self.width_level(fwhm_deg))
        max_shift = self._bins(MAX_ZERO_SHIFT_DEG)
        shifts = np.arange(-max_shift, max_shift + 1)
        shifted = np.zeros((len(scales), shifts.size, self.n_bins), dtype=np.float32)
        masks = np.zeros((len(scales), self.n_bins), dtype=np.float32)
        for j, (template, (lo_bin, hi_bin)) in enumerate(zip(templates_by_scale, windows, strict=True)):
            masks[j, lo_bin:hi_bin] = 1.0
            for k, s in enumerate(shifts):
                # Row k is the measured template moved by s bins: the measured pattern with its zero shifted.
                lo, hi = max(lo_bin, lo_bin + s), min(hi_bin, hi_bin + s)
                shifted[j, k, lo:hi] = template[lo - s : hi - s]
        n = len(self)
        best = np.full(n, -1.0)
        best_shift = np.zeros(n, dtype=np.int64)
        best_scale = np.zeros(n)
        best_round = np.zeros(n, dtype=np.int64)
        best_axes = np.full((n, 3), np.nan)
        level = self.width_level(fwhm_deg)
        total_signal = float(measured[first:end].sum())
        available = np.ones(n, dtype=bool)
        identified: list[str] = []
        for round_number in range(1, MAX_ROUNDS + 1):
            cosine = _cosines(templates, templates_squared, shifted * masks[:, None, :], masks).reshape(n, -1)
            cosine[~available] = -1.0
            k_best = np.argmax(cosine, axis=1)
            score = cosine[np.arange(n), k_best]
            scale_index, shift_index = np.divmod(k_best, shifts.size)
            better = score > best
            best[better], best_shift[better], best_scale[better], best_round[better] = (
                score[better],
                shifts[shift_index[better]],
                scales_array[scale_index[better]],
                round_number,
            )
            refined: dict[int, np.ndarray] = {}
            if round_number == 1 and refine_axes and reach > 0 and self.reflections is not None:
                measured_rows = shifted[unscaled] * masks[unscaled]
                for phase in np.argsort(-score, kind="stable")[:REFINED_PHASES]:
                    found = self._refine(
                        int(phase), float(best_scale[phase]), reach, level, measured_rows, masks[unscaled]
                    )
                    if found is not None and found[0] > score[phase]:
                        value, shift_index_refined, axes, refined[int(phase)] = found
                        score[phase] = best[phase] = value
                        best_shift[phase] = shifts[shift_index_refined]
                        best_scale[phase] = float(axes.mean())
                        best_axes[phase] = axes
            winner = int(np.argmax(score))
            if score[winner] <= 0:
                break
            identified.append(str(self.phase_ids[winner]))
            available[winner] = False
            if winner in refined:
                # The refined template shows the winner's lines where the scan read as measured (scale 0) has them.
                template, (lo_bin, hi_bin), winner_scale = refined[winner], windows[unscaled], 0.0
            else:
                at = int(scale_index[winner])
                template, (lo_bin, hi_bin), winner_scale = (
                    templates[winner],
                    windows[at],
                    float(scales_array[at]),
                )
            strong = template > COVERED_FRACTION * template[lo_bin:hi_bin].max(initial=0.0)
            self._take_out(masks, strong, scales_array, winner_scale)
            if float((measured * masks[unscaled]).sum()) < MIN_UNEXPLAINED_FRACTION * total_signal:
                break
        return LibraryResult(
            str(pattern.source),
            self.url,
            self._rank_groups(best, best_shift, best_scale, best_axes, best_round, top_k),
            identified,
            warnings,
        )

    def _refine(
        self,
        phase: int,
        start_scale: float,
        reach: int,
        level: int,
        measured_rows: np.ndarray,
        mask: np.ndarray,
    ) -> tuple[float, int, np.ndarray, np.ndarray] | None:
        """(cosine, zero-shift row, per-axis cell changes (3,), template) of ``phase`` at its best cell found
        axis by axis (module docstring, step 6), starting from the isotropic ``start_scale``, against the
        masked, shifted measured templates ``measured_rows`` (shifts, bins) read as measured, over the bins of
        ``mask``; None for a phase whose cell changes only as a whole."""
        assert self.reflections is not None
        ties = self.reflections.axis_ties[phase]
        n_free = int(ties.max()) + 1
        if n_free == 1:
            return None
        isotropic = round(start_scale / CELL_SCALE_STEP)
        departure = math.floor(MAX_AXIS_DEPARTURE / CELL_SCALE_STEP + 1e-9)
        low, high = max(-reach, isotropic - departure), min(reach, isotropic + departure)
        centre = np.full(n_free, isotropic)
        found = None
        for steps, broader in REFINEMENT_STAGES:
            # A full grid of 5 values per free axis around the best so far, coarse and broad first: a coarse step
            # moves high-angle lines by more than a peak width, so its templates are broadened to keep the
            # right cell's basin in view.
            offsets = np.arange(-2, 3) * steps
            grid = np.stack(np.meshgrid(*[offsets] * n_free, indexing="ij"), axis=-1).reshape(-1, n_free)
            trial = np.unique(np.clip(centre + grid, low, high), axis=0)
            stage_level = min(level + broader, self.width_level(MAX_PEAK_FWHM_DEG))
            templates = self.strained_templates(phase, (trial * CELL_SCALE_STEP)[:, ties], stage_level)
            cosine = _cosines(templates, templates * templates, measured_rows[None], mask[None])[:, 0, :]
            k, shift_row = np.unravel_index(int(np.argmax(cosine)), cosine.shape)
            centre = trial[k]
            found = (
                float(cosine[k, shift_row]),
                int(shift_row),
                centre[ties] * CELL_SCALE_STEP,
                templates[k],
            )
        return found

    def _take_out(
        self, masks: np.ndarray, strong: np.ndarray, scales: np.ndarray, winner_scale: float
    ) -> None:
        """Zero, in each scale's mask, the bins that hold the lines of a phase identified at ``winner_scale``
        (``strong``: bool (bins,), where its template passes :data:`COVERED_FRACTION` of its maximum).

        The masks live in the library's frame, where a scan read at scale s shows a line of d-spacing d_lib
        (found at ``winner_scale``) at d_lib (1 + winner_scale) / (1 + s): the winner's lines are moved there
        for each scale, so no later round matches them again at another cell.
        """
        centres = self.two_theta_min_deg + self.bin_width_deg * (np.arange(self.n_bins) + 0.5)
        sin_theta = np.sin(np.radians(centres) / 2.0)
        for j, scale in enumerate(scales):
            # The library-frame bin whose line shows at each bin of this scale's frame.
            source = sin_theta * (1.0 + winner_scale) / (1.0 + scale)
            inside = source < 1.0
            index = np.full(self.n_bins, -1)
            index[inside] = np.floor(
                (2.0 * np.degrees(np.arcsin(source[inside])) - self.two_theta_min_deg) / self.bin_width_deg
            ).astype(np.int64)
            valid = (index >= 0) & (index < self.n_bins)
            taken = np.zeros(self.n_bins, dtype=bool)
            taken[valid] = strong[index[valid]]
            masks[j, taken] = 0.0

    def _rank_groups(
        self,
        best: np.ndarray,
        best_shift: np.ndarray,
        best_scale: np.ndarray,
        best_axes: np.ndarray,
        best_round: np.ndarray,
        top_k: int | None,
    ) -> list[LibraryMatch]:
        # Phases by score (ties by library order), then the first phase seen of each group is its best.
        order = np.lexsort((np.arange(len(self)), -best))
        ranked: list[LibraryMatch] = []
        seen: set[int] = set()
        for i in order:
            group = int(self.spacegroups[i])
            if group in seen:
                continue
            seen.add(group)
            ranked.append(
                LibraryMatch(
                    group,
                    symbol(group),
                    crystal_system(group),
                    float(max(best[i], 0.0)),
                    str(self.phase_ids[i]),
                    str(self.formulas[i]),
                    # Row s moved the measured pattern by s bins onto the library: its zero is off by -s.
                    float(-best_shift[i] * self.bin_width_deg),
                    float(best_scale[i]),
                    int(best_round[i]),
                    None if np.isnan(best_axes[i, 0]) else tuple(float(x) for x in best_axes[i]),
                )
            )
            if top_k is not None and len(ranked) >= top_k:
                break
        return ranked
