"""Neighbours in the model's eyes: rank a library's space groups by how alike a model sees a pattern and each phase.

The library search (:mod:`xrdmodels.library_search`) compares peaks bin by bin, so texture, strain, intensity
changes or a shifted cell that a measured mineral shows against its library entry lower its figure of merit. A
model trained on the lab recipe has learned features that carry the phase through exactly those changes. Here
the pattern and every read phase of a bank (the library search's, :class:`SpectralLibrary`) go through the same
model, and they are compared by what the model's head reads:

1. Each phase's stored profile is broadened to sharp lab peaks (:meth:`SpectralLibrary.broadened_profiles` at the
   library search's narrowest width, :data:`~xrdmodels.library_search.PEAK_FWHM_DEG`) and normalised as a
   measured pattern is (:func:`~xrdmodels.measured.grid.normalise`, the 99th percentile). One width serves every
   pattern: the model was trained on peaks from nanocrystals to sharp instrument lines, and its view of a phase
   changes little with the width, while a narrow reference keeps every line apart. On RRUFF dev the measured
   peaks' own width (the library search's ladder) gave the combined ranking 0.576 / 0.774 at hit@1 / hit@5 where
   the narrowest gives 0.582 / 0.777 (one model), at several times the cost (a choice made on that set:
   docs/benchmarks.md, "Neighbours in the model's eyes").
   With a cell scan (the library's ``--library-cell-scan``, the memory's ``--memory-cell-scan``; 3% by default)
   the pattern is also stretched in d by each scale s, |s| within the reach in steps of :data:`CELL_SCALE_STEP`
   (:func:`stretch_in_d`), and a phase's cosine is its best over the stretches: a measured mineral's cell is rarely
   its bank entry's (docs/benchmarks.md, "A memory of the training phases").
2. The model encodes both (:meth:`~xrdmodels.models.model.SpaceGroupModel.features`: tokens Z, (L, d)). A phase's
   similarity is the cosine between its tokens and the pattern's over the tokens valid in the pattern's window; a
   space group's similarity c_g is its best phase's. An ensemble averages its members' cosines.
3. The margin m_g = c_g - max over h != g of c_h (positive for the best group only) becomes a probability by
   q_g = 1 / (1 + exp(-NEIGHBOUR_MARGIN_SLOPE (m_g - NEIGHBOUR_MARGIN_MIDPOINT))), which the combined ranking
   (:mod:`xrdmodels.combined`) adds as a third independent detection.

Calibration: a logistic regression of "the best group is a labelled one" on its margin, over the 443 RRUFF dev
patterns, for three models of the measured pipeline (runs/ionic20's seeds 0 and 1, and the 1,024-unit hidden-layer
run of docs/benchmarks.md) against that run's bank: slopes 20.7, 21.7, 18.3 and midpoints 0.065, 0.064, 0.068; two
more models, fitted after the constants were fixed, give 18.2 and 22.0, 0.061 and 0.070. The margin, unlike the
cosine itself, carries over between models: the cosine's fitted midpoint is 0.475 for one seed
and 0.562 for the other. All three are presence models with the token-CNN encoder; another architecture (the
phase-cluster Transformer of the demo) is ranked with the same constants but may warrant its own fit, which
pipelines/fit_neighbour_calibration.py makes (it reproduces the fit above).

A model's memory: the same search over the training phases the model learned from, kept in its checkpoint
(:meth:`ReferencePhases.to_checkpoint`, entry :data:`MEMORY_KEY`, written by ``xrdmodels add-memory``), adds the
calibrated margin to the model's own ranking (:func:`xrdmodels.predict.predict_one`) where no library is given: a
pattern of a phase the model was trained on is then named by its nearest training phase as well as by the head.
The constants are the library's: the memory holds the same bank's read phases of its training split (1,437 of
1,506 for the measured pipeline). With a library the combined ranking takes the network's probabilities and the
library's neighbour term, so a phase in both counts once.

The model grid and the bank grid must be the same (2θ range, bins and wavelength): the measured pipeline trains on
its bank's grid. Cost: every phase is embedded once, at the first pattern (1,506 phases of 2,048 bins: a few
seconds on this project's 2-core CPU for the measured pipeline's model; their tokens take 25 MB), then a pattern
is one forward pass and one matrix product per stretch of the cell scan (13 at ±3%, in one batch).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn

from .config import N_SPACE_GROUPS, redact_url
from .library_search import PEAK_FWHM_DEG, SpectralLibrary
from .measured import MeasuredSignalError
from .measured.grid import normalise

NEIGHBOUR_MARGIN_MIDPOINT = 0.066
"""Margin of a group's similarity over the best other group's at which the calibrated probability is 1/2."""
NEIGHBOUR_MARGIN_SLOPE = 20.0
"""Slope of the calibration's logit per unit of margin."""
CELL_SCALE_STEP = 0.005
"""Step of the cell scan (a fraction of the cell): a step moves a line at 2θ = 60° by ~0.33°, about a quarter of the
measured pipeline's token (32 bins of 0.042°). Not varied (docs/benchmarks.md, "A memory of the training phases")."""
MEMORY_KEY = "phase_memory"
"""Checkpoint entry of a model's memory of its training phases (:meth:`ReferencePhases.to_checkpoint`)."""
MEMORY_SPLITS = ("train", "val", "test", "all")
"""What a memory can keep of a bank's read phases: those of one split, or every one."""
_BLOCK_ROWS = 128
_GRID_TOLERANCE = 1e-6


def cell_scales(cell_scan: float) -> np.ndarray:
    """The scales s a cell scan of ±``cell_scan`` compares, 0 first: k·:data:`CELL_SCALE_STEP` for |k| up to
    ``cell_scan`` / step."""
    reach = math.floor(cell_scan / CELL_SCALE_STEP + 1e-9)
    return np.array([0.0, *(k * sign * CELL_SCALE_STEP for k in range(1, reach + 1) for sign in (1, -1))])


def stretch_in_d(
    pattern: np.ndarray, window_bins: tuple[int, int], grid: tuple[float, float, int, float], scale: float
) -> tuple[np.ndarray, tuple[int, int]]:
    """A pattern on ``grid`` as it would read if the sample's cell were 1 / (1 + ``scale``) times its own: every
    d-spacing divided by 1 + s, so that a reference phase of cell a matches a sample of cell a (1 + s).

    Returns the stretched pattern (n_bins,), linearly interpolated in 2θ and 0 outside the source, and its window:
    the bins whose source lies inside ``window_bins`` (empty, (0, 0), where none does).
    """
    lo, hi, n_bins, wavelength = grid
    centres = lo + (hi - lo) / n_bins * (np.arange(n_bins) + 0.5)
    if scale == 0.0:
        return np.asarray(pattern, dtype=np.float64), window_bins
    d_spacing = wavelength / (2.0 * np.sin(np.radians(centres / 2.0)))
    sine = wavelength / (2.0 * d_spacing * (1.0 + scale))
    source = np.where(sine < 1.0, np.degrees(2.0 * np.arcsin(np.minimum(sine, 1.0))), np.inf)
    stretched = np.interp(source, centres, pattern, left=0.0, right=0.0)
    first, last = centres[window_bins[0]], centres[window_bins[1] - 1]
    inside = np.flatnonzero((source >= first) & (source <= last))
    if inside.size == 0:
        return stretched, (0, 0)
    return stretched, (int(inside[0]), int(inside[-1]) + 1)


def neighbour_probability(similarity: np.ndarray) -> np.ndarray:
    """(230,) calibrated probability from per-group similarities (230,; NaN where the library has no phase of the
    group, which gets 0): the logistic of each group's margin over the best other group (module docstring)."""
    c = np.asarray(similarity, dtype=np.float64)
    known = ~np.isnan(c)
    if np.count_nonzero(known) < 2:
        return np.zeros(c.shape)
    filled = np.where(known, c, -np.inf)
    order = np.argsort(-filled, kind="stable")
    best, second = filled[order[0]], filled[order[1]]
    margin = c - np.where(np.arange(c.size) == order[0], second, best)
    q = 1.0 / (1.0 + np.exp(-NEIGHBOUR_MARGIN_SLOPE * (margin - NEIGHBOUR_MARGIN_MIDPOINT)))
    return np.where(known, q, 0.0)


@dataclass(frozen=True)
class ReferencePhases:
    """Phases as the neighbour search shows them to a model (module docstring, step 1).

    source: where they were read from (a bank's URL, credentials removed).
    phase_ids, formulas: str (M,); spacegroups: int64 (M,), 1-230.
    profiles: float32 (M, n_bins): each phase broadened to :data:`~xrdmodels.library_search.PEAK_FWHM_DEG` and
        normalised as a measured pattern is; all zero for a phase without a line on the grid (``lineless``).
    lineless: bool (M,): phases that are never a neighbour.
    grid: (2θ min, 2θ max, n_bins, wavelength Å) of the profiles.
    """

    source: str
    phase_ids: np.ndarray
    formulas: np.ndarray
    spacegroups: np.ndarray
    profiles: np.ndarray
    lineless: np.ndarray
    grid: tuple[float, float, int, float]

    def __len__(self) -> int:
        return int(self.spacegroups.size)

    @classmethod
    def from_library(cls, library: SpectralLibrary, keep: np.ndarray | None = None) -> ReferencePhases:
        """The read phases of ``library`` (those where the bool mask ``keep`` (M,) is true, default all)."""
        keep = np.ones(len(library), dtype=bool) if keep is None else np.asarray(keep, dtype=bool)
        profiles = library.broadened_profiles(0)[keep].astype(np.float64)
        phase_ids = library.phase_ids[keep]
        lineless = np.zeros(len(profiles), dtype=bool)
        for k, (row, phase_id) in enumerate(zip(profiles, phase_ids, strict=True)):
            try:
                normalise(row, (0, row.size), source=str(phase_id), where="in the library's range")
            except MeasuredSignalError:
                lineless[k] = True  # no line in the grid's range: nothing to compare
                row[:] = 0.0
        grid = (
            library.two_theta_min_deg,
            library.two_theta_max_deg,
            library.n_bins,
            library.wavelength_angstrom,
        )
        return cls(
            redact_url(library.url), phase_ids, library.formulas[keep], library.spacegroups[keep],
            profiles.astype(np.float32), lineless, grid,
        )  # fmt: skip

    def to_checkpoint(self, split: str) -> dict[str, Any]:
        """The checkpoint entry :data:`MEMORY_KEY` (docs/formats.md, "Checkpoints"): plain values only; the
        profiles as float16 (their 99th percentile is 1, so half precision keeps ~3 significant digits)."""
        return {
            "source": self.source,
            "split": split,
            "reference_fwhm_deg": PEAK_FWHM_DEG,
            "grid": [float(self.grid[0]), float(self.grid[1]), int(self.grid[2]), float(self.grid[3])],
            "phase_ids": [str(i) for i in self.phase_ids],
            "formulas": [str(f) for f in self.formulas],
            "spacegroups": torch.from_numpy(self.spacegroups.astype(np.int16)),
            "profiles": torch.from_numpy(self.profiles.astype(np.float16)),
        }

    @classmethod
    def from_checkpoint(cls, entry: Any, checkpoint: str) -> ReferencePhases:
        """The memory a checkpoint carries (:meth:`to_checkpoint`).

        Raises:
            ValueError: a malformed entry; the message names ``checkpoint`` and the field.
        """

        def bad(field: str, why: str) -> ValueError:
            return ValueError(
                f"{checkpoint}: its phase memory ({MEMORY_KEY}.{field}) {why}; the file was altered or not written "
                "by `xrdmodels add-memory` (write it again, or predict with --no-memory)"
            )

        if not isinstance(entry, dict):
            raise bad("", "is not a table")
        profiles, groups = entry.get("profiles"), entry.get("spacegroups")
        if not isinstance(profiles, torch.Tensor) or profiles.ndim != 2:
            raise bad("profiles", "must be a (phases, bins) tensor")
        n = profiles.shape[0]
        if not isinstance(groups, torch.Tensor) or tuple(groups.shape) != (n,):
            raise bad("spacegroups", f"must be {n} space-group numbers, one per profile")
        space_groups = groups.numpy().astype(np.int64)
        if n and not (1 <= space_groups.min() and space_groups.max() <= N_SPACE_GROUPS):
            raise bad("spacegroups", f"must lie in 1-{N_SPACE_GROUPS}")
        for name in ("phase_ids", "formulas"):
            values = entry.get(name)
            if (
                not isinstance(values, list)
                or len(values) != n
                or not all(isinstance(v, str) for v in values)
            ):
                raise bad(name, f"must be {n} strings, one per profile")
        grid = entry.get("grid")
        if not isinstance(grid, list) or len(grid) != 4 or int(grid[2]) != profiles.shape[1]:
            raise bad("grid", f"must be [2θ min, 2θ max, {profiles.shape[1]} bins, wavelength]")
        values = profiles.float().numpy()
        if not np.isfinite(values).all():
            raise bad("profiles", "holds values that are not finite")
        return cls(
            str(entry.get("source", "")), np.array(entry["phase_ids"], dtype=str),
            np.array(entry["formulas"], dtype=str), space_groups, values, ~(values > 0).any(axis=1),
            (float(grid[0]), float(grid[1]), int(grid[2]), float(grid[3])),
        )  # fmt: skip


def bank_memory(
    bank: str,
    split: str,
    grid: tuple[float, float, int, float],
    storage_options: dict | None = None,
    fingerprint: str | None = None,
) -> tuple[ReferencePhases, dict[str, Any]]:
    """A model's memory of ``bank``'s read phases of ``split`` (``all``: every read phase), checked against the
    model's ``grid``: the phases and their checkpoint entry (:meth:`ReferencePhases.to_checkpoint`).
    ``storage_options``: fsspec options of a remote ``bank`` (:meth:`SpectralLibrary.open`). ``fingerprint``: the
    bank a training store records (``bank_fingerprint``), which the bank read must be where both are known.

    Raises:
        LibraryFormatError: ``bank`` is not a usable bank store.
        ValueError: an unknown split, a bank that records no splits or holds no read phase of ``split``, a bank
            on another grid than the model's, or another bank than ``fingerprint`` names.
    """
    if split not in MEMORY_SPLITS:
        raise ValueError(f"split {split!r} is not one of {', '.join(MEMORY_SPLITS)}")
    library = SpectralLibrary.open(bank, storage_options)
    where = redact_url(bank)
    if fingerprint and library.fingerprint and library.fingerprint != fingerprint:
        raise ValueError(
            f"{where} (fingerprint {library.fingerprint}) is not the bank the mixtures were written from "
            f"({fingerprint}): it was rebuilt or replaced since"
        )
    if split == "all":
        keep = np.ones(len(library), dtype=bool)
    elif library.splits is None:
        raise ValueError(f"{where} records no splits (entries/split): keep every phase with split 'all'")
    else:
        keep = library.splits == split
    if not keep.any():
        raise ValueError(f"{where} holds no read phase of the {split} split: nothing to remember")
    references = ReferencePhases.from_library(library, keep)
    NeighbourSearch(nn.Identity(), references, grid)  # refuses a bank on another grid
    return references, references.to_checkpoint(split)


class NeighbourSearch:
    """Reference phases as a model sees them, ready to rank space groups for patterns on the model grid.

    ``model``: a :class:`~xrdmodels.models.model.SpaceGroupModel` or an ensemble of them (``members``), in eval
    mode. ``references``: a library's read phases (:meth:`ReferencePhases.from_library`) or a checkpoint's memory
    of its training phases. ``grid``: the model's (two_theta_min_deg, two_theta_max_deg, n_bins,
    wavelength_angstrom), as :func:`xrdmodels.predict.model_grid` reads it from the checkpoint. ``cell_scan``: each
    phase is also compared with cells scaled by 1 + s, |s| <= ``cell_scan`` in steps of :data:`CELL_SCALE_STEP`
    (:func:`stretch_in_d`); 0 compares the references' own cells only.

    Raises:
        ValueError: the references' grid is not the model's, or a cell scan outside [0, 0.5).
    """

    def __init__(
        self,
        model: nn.Module,
        references: ReferencePhases,
        grid: tuple[float, float, int, float],
        cell_scan: float = 0.0,
    ) -> None:
        lo, hi, n_bins, wavelength = grid
        theirs = references.grid
        if theirs[2] != n_bins or not all(
            math.isclose(a, b, abs_tol=_GRID_TOLERANCE) for a, b in zip(theirs, grid, strict=True)
        ):
            raise ValueError(
                f"the phases of {references.source} are on the grid {theirs[0]:g}-{theirs[1]:g} deg, "
                f"{theirs[2]} bins at {theirs[3]} Å, the model on {lo:g}-{hi:g} deg, {n_bins} bins at "
                f"{wavelength} Å: the neighbour search needs both on one grid (a bank built on the model's grid)"
            )
        if not 0.0 <= cell_scan < 0.5:
            raise ValueError(
                f"cell scan {cell_scan} must lie in [0, 0.5): a fraction of the cell, 0.03 for ±3%"
            )
        self.references = references
        self.grid = grid
        self.cell_scan = cell_scan
        self.members: list[nn.Module] = list(getattr(model, "members", [model]))
        self._tokens: list[tuple[torch.Tensor, torch.Tensor]] | None = None

    def _reference(self) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """Per member, float32: every phase's tokens side by side (M, L·d) and each token's squared norm (M, L)
        (module docstring, step 2), so that a pattern's window selects tokens without copying them."""
        if self._tokens is None:
            x = torch.from_numpy(self.references.profiles)
            mask = torch.ones_like(x, dtype=torch.bool)
            self._tokens = []
            with torch.no_grad():
                for member in self.members:
                    tokens = torch.cat(
                        [
                            member.features(x[i : i + _BLOCK_ROWS], mask[i : i + _BLOCK_ROWS])[0].float()
                            for i in range(0, x.shape[0], _BLOCK_ROWS)
                        ]
                    )
                    self._tokens.append((tokens.flatten(1), tokens.square().sum(dim=2)))
        return self._tokens

    def phase_name(self, index: int) -> str:
        """Reference phase ``index`` as "formula (id)"."""
        return f"{self.references.formulas[index]} ({self.references.phase_ids[index]})"

    def similarity(self, pattern: np.ndarray, window_bins: tuple[int, int]) -> np.ndarray:
        """(230,): for each space group the best cosine (module docstring) between the model's view of a pattern
        and of the group's phases, NaN for groups without a phase among the references.

        ``pattern``: (n_bins,) normalised intensities on the model grid, measured in bins [``window_bins``)
        (:class:`~xrdmodels.measured.grid.GriddedPattern`).
        """
        return self.nearest(pattern, window_bins)[0]

    @torch.no_grad()
    def nearest(self, pattern: np.ndarray, window_bins: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
        """(:meth:`similarity`, int (230,)): the similarities and, for each group, the index of its nearest phase
        among the references (-1 where it has none). With a cell scan, each phase's cosine is its best over the
        pattern's stretches (:func:`stretch_in_d`)."""
        stretches = [stretch_in_d(pattern, window_bins, self.grid, s) for s in cell_scales(self.cell_scan)]
        stretches = [(x, w) for x, w in stretches if w[1] - w[0] > 0]
        if not stretches:
            return np.full(N_SPACE_GROUPS, np.nan), np.full(N_SPACE_GROUPS, -1)
        x = torch.from_numpy(np.stack([x for x, _ in stretches]).astype(np.float32))
        mask = torch.zeros_like(x, dtype=torch.bool)
        for row, (_, (start, stop)) in enumerate(stretches):
            mask[row, start:stop] = True
        cosine = torch.zeros(len(self.references), len(stretches))
        for member, (phases, token_squares) in zip(self.members, self._reference(), strict=True):
            z, valid = member.features(x, mask)
            # The pattern's unmeasured tokens zeroed: the dot products then run over the measured ones only.
            seen = (z.float() * valid[:, :, None]).flatten(1)  # (S, L·d)
            phase_norms = (
                token_squares @ valid.float().T
            ).sqrt()  # (M, S): over each stretch's measured tokens
            cosine += (phases @ seen.T) / (phase_norms * seen.norm(dim=1)).clamp_min(1e-12)
        measured = valid.any(dim=1)  # stretches with a measured token (the same for every member: one grid)
        if not measured.any():  # no token measured: nothing to compare
            return np.full(N_SPACE_GROUPS, np.nan), np.full(N_SPACE_GROUPS, -1)
        cosine = cosine[:, measured] / len(self.members)
        similarity = cosine.max(dim=1).values.numpy().astype(np.float64)
        similarity[self.references.lineless] = -np.inf
        groups = self.references.spacegroups - 1
        # Phases by group, most similar first: the first of each group is its nearest.
        order = np.lexsort((-similarity, groups))
        present, first = np.unique(groups[order], return_index=True)
        best = np.full(N_SPACE_GROUPS, np.nan)
        phase = np.full(N_SPACE_GROUPS, -1)
        nearest = order[first]
        seen = np.isfinite(similarity[nearest])
        best[present[seen]] = similarity[nearest[seen]]
        phase[present[seen]] = nearest[seen]
        return best, phase
