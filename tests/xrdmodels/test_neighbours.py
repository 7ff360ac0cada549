"""The neighbour search (xrdmodels.neighbours) against a naive computation: each phase broadened by a direct
Gaussian convolution, normalised and encoded on its own, compared with the pattern token by token."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from xrdmodels.config import preset
from xrdmodels.ensemble import PresenceEnsemble
from xrdmodels.library_search import PEAK_FWHM_DEG, SpectralLibrary
from xrdmodels.models.model import SpaceGroupModel
from xrdmodels.neighbours import (
    NEIGHBOUR_MARGIN_MIDPOINT,
    NEIGHBOUR_MARGIN_SLOPE,
    NeighbourSearch,
    ReferencePhases,
    cell_scales,
    neighbour_probability,
    stretch_in_d,
)

N_BINS = 256
LOW, HIGH, WAVELENGTH = 5.0, 120.0, 1.54184
GRID = (LOW, HIGH, N_BINS, WAVELENGTH)
GROUPS = np.array([2, 14, 14, 62, 225, 229])


def _model(seed: int) -> SpaceGroupModel:
    torch.manual_seed(seed)
    config = preset("small", n_bins=N_BINS, cnn_channels=[8, 8, 16, 16], d_model=32, ffn_dim=64)
    return SpaceGroupModel(config).eval()


def _library() -> SpectralLibrary:
    rng = np.random.default_rng(3)
    profiles = np.zeros((GROUPS.size, N_BINS), dtype=np.float32)
    for row in profiles:
        bins = rng.choice(np.arange(20, N_BINS - 20), size=12, replace=False)
        row[bins] = rng.pareto(1.2, bins.size) + 0.05
    return SpectralLibrary(
        "memory://test",
        np.array([f"phase-{k}" for k in range(GROUPS.size)]),
        np.array(["X"] * GROUPS.size),
        GROUPS,
        profiles,
        wavelength_angstrom=WAVELENGTH,
        two_theta_min_deg=LOW,
        two_theta_max_deg=HIGH,
    )


def _broadened(profile: np.ndarray) -> np.ndarray:
    """Direct convolution with a Gaussian of the library's narrowest FWHM, normalised by the 99th percentile."""
    sigma = PEAK_FWHM_DEG / ((HIGH - LOW) / N_BINS) / (2 * math.sqrt(2 * math.log(2)))
    offsets = np.arange(-40, 41)
    kernel = np.exp(-0.5 * (offsets / sigma) ** 2)
    out = np.convolve(profile.astype(np.float64), kernel / kernel.sum(), mode="same")
    return out / np.quantile(out, 0.99)


def _naive_similarity(
    members: list[SpaceGroupModel], library: SpectralLibrary, x: np.ndarray, window
) -> np.ndarray:
    mask = np.zeros(N_BINS, dtype=bool)
    mask[window[0] : window[1]] = True
    cosine = np.zeros(len(library))
    with torch.no_grad():
        for member in members:
            z, valid = member.features(torch.tensor(x[None], dtype=torch.float32), torch.tensor(mask[None]))
            seen = z[0][valid[0]].numpy().ravel()
            for k, profile in enumerate(library.profiles):
                reference = torch.tensor(_broadened(profile)[None], dtype=torch.float32)
                tokens, _ = member.features(reference, torch.ones_like(reference, dtype=torch.bool))
                phase = tokens[0][valid[0]].numpy().ravel()
                cosine[k] += phase @ seen / (np.linalg.norm(phase) * np.linalg.norm(seen)) / len(members)
    best = np.full(230, np.nan)
    for group in np.unique(library.spacegroups):
        best[group - 1] = cosine[library.spacegroups == group].max()
    return best


@pytest.mark.parametrize("window", [(0, N_BINS), (40, 200)])
def test_similarity_is_the_cosine_of_the_models_tokens_over_the_patterns_window(window) -> None:
    library = _library()
    model = _model(0)
    pattern = _broadened(library.profiles[3])
    similarity = NeighbourSearch(model, ReferencePhases.from_library(library), GRID).similarity(
        pattern, window
    )
    np.testing.assert_allclose(similarity, _naive_similarity([model], library, pattern, window), atol=1e-4)
    assert np.isnan(similarity[np.setdiff1d(np.arange(230), GROUPS - 1)]).all()
    if window == (0, N_BINS):  # the phase itself, seen whole: cosine 1, its group first
        assert similarity[GROUPS[3] - 1] == pytest.approx(1.0, abs=1e-5)
        assert np.nanargmax(similarity) == GROUPS[3] - 1
    # Each group's nearest phase: the one whose cosine is the group's (group 14 holds phases 1 and 2).
    search = NeighbourSearch(model, ReferencePhases.from_library(library), GRID)
    best, phase = search.nearest(pattern, window)
    np.testing.assert_array_equal(best, similarity)
    assert [library.spacegroups[phase[g - 1]] for g in GROUPS] == list(GROUPS)
    assert (phase[np.setdiff1d(np.arange(230), GROUPS - 1)] == -1).all()
    if window == (0, N_BINS):
        assert phase[GROUPS[3] - 1] == 3
    assert search.phase_name(int(phase[13])) in {"X (phase-1)", "X (phase-2)"}


def test_an_ensemble_averages_its_members_cosines() -> None:
    library = _library()
    members = [_model(0), _model(1)]
    pattern = _broadened(library.profiles[1]) + 0.3 * _broadened(library.profiles[4])
    pattern /= np.quantile(pattern, 0.99)
    similarity = NeighbourSearch(
        PresenceEnsemble(members), ReferencePhases.from_library(library), GRID
    ).similarity(pattern, (10, 240))
    np.testing.assert_allclose(similarity, _naive_similarity(members, library, pattern, (10, 240)), atol=1e-4)


def test_a_library_off_the_models_grid_is_refused_naming_both_grids() -> None:
    with pytest.raises(
        ValueError,
        match=r"the phases of memory://test are on the grid 5-120 deg, 256 bins at 1.54184 Å, the model on 5-120 deg, 256 bins at 1.5406 Å",
    ):
        NeighbourSearch(_model(0), ReferencePhases.from_library(_library()), (LOW, HIGH, N_BINS, 1.5406))


def test_neighbour_probability_is_the_logistic_of_each_groups_margin_over_the_best_other() -> None:
    similarity = np.full(230, np.nan)
    similarity[[1, 13, 224]] = [0.8, 0.9, 0.5]

    def q(margin: float) -> float:
        return 1.0 / (1.0 + math.exp(-NEIGHBOUR_MARGIN_SLOPE * (margin - NEIGHBOUR_MARGIN_MIDPOINT)))

    expected = np.zeros(230)
    expected[[1, 13, 224]] = [q(0.8 - 0.9), q(0.9 - 0.8), q(0.5 - 0.9)]
    np.testing.assert_allclose(neighbour_probability(similarity), expected, rtol=1e-12)
    one = np.full(230, np.nan)
    one[5] = 0.9
    np.testing.assert_array_equal(neighbour_probability(one), np.zeros(230))  # no other group: no margin


def test_a_phase_without_a_line_on_the_grid_is_never_a_neighbour() -> None:
    library = _library()
    library.profiles[5] = 0.0  # group 229's only phase: no line between 5 and 120 degrees
    similarity = NeighbourSearch(_model(0), ReferencePhases.from_library(library), GRID).similarity(
        _broadened(library.profiles[3]), (0, N_BINS)
    )
    assert np.isnan(similarity[228]) and not np.isnan(similarity[224])


def test_a_memory_in_a_checkpoint_gives_the_librarys_similarities() -> None:
    """ReferencePhases written as a checkpoint entry (half-precision profiles) and read back compare a pattern
    with the phases as the library's own do, to half precision."""
    library = _library()
    references = ReferencePhases.from_library(library)
    back = ReferencePhases.from_checkpoint(references.to_checkpoint("train"), "model.pt")
    np.testing.assert_array_equal(back.spacegroups, library.spacegroups)
    np.testing.assert_array_equal(back.phase_ids, library.phase_ids)
    assert back.grid == GRID and back.source == "memory://test"
    model = _model(0)
    pattern = _broadened(library.profiles[2])
    np.testing.assert_allclose(
        NeighbourSearch(model, back, GRID).similarity(pattern, (30, 220)),
        NeighbourSearch(model, references, GRID).similarity(pattern, (30, 220)),
        atol=2e-3,
    )
    kept = ReferencePhases.from_library(library, library.spacegroups == 14)
    assert len(kept) == 2 and set(kept.phase_ids) == {"phase-1", "phase-2"}


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("spacegroups", torch.tensor([2, 14, 14, 62, 225, 231], dtype=torch.int16), "must lie in 1-230"),
        ("spacegroups", torch.tensor([2, 14], dtype=torch.int16), "must be 6 space-group numbers"),
        ("phase_ids", ["a"], "must be 6 strings"),
        ("profiles", torch.zeros(6), "must be a \\(phases, bins\\) tensor"),
        ("grid", [5.0, 120.0, 512, 1.54], "must be \\[2θ min, 2θ max, 256 bins"),
    ],
)
def test_a_malformed_memory_is_refused_naming_the_checkpoint_and_the_field(field, value, message) -> None:
    entry = ReferencePhases.from_library(_library()).to_checkpoint("train")
    entry[field] = value
    with pytest.raises(ValueError, match=rf"model.pt: its phase memory \(phase_memory.{field}\) {message}"):
        ReferencePhases.from_checkpoint(entry, "model.pt")


def _lines(d_spacings: np.ndarray) -> np.ndarray:
    """Gaussian lines (FWHM 4 bins, so that linear interpolation keeps them to ~1%) at ``d_spacings`` on the test
    grid, at the grid's wavelength."""
    centres = LOW + (HIGH - LOW) / N_BINS * (np.arange(N_BINS) + 0.5)
    two_theta = np.degrees(2 * np.arcsin(WAVELENGTH / (2 * d_spacings)))
    sigma = 4 * (HIGH - LOW) / N_BINS / 2.3548
    return np.exp(-0.5 * ((centres[:, None] - two_theta[None, :]) / sigma) ** 2).sum(axis=1)


def test_a_stretch_in_d_moves_a_samples_lines_to_its_references_cell() -> None:
    """A sample whose cell is 1.02 times a reference's, stretched by s = 0.02, has the reference's lines."""
    d = np.array([3.1, 2.4, 1.9, 1.55, 1.3])
    stretched, window = stretch_in_d(_lines(d * 1.02), (0, N_BINS), GRID, 0.02)
    np.testing.assert_allclose(stretched, _lines(d), atol=0.05)
    assert window[0] > 0 and window[1] == N_BINS  # the lowest bins' sources lie below the grid
    same, kept = stretch_in_d(_lines(d), (40, 200), GRID, 0.0)
    np.testing.assert_array_equal(same, _lines(d))
    assert kept == (40, 200)
    np.testing.assert_allclose(cell_scales(0.012), [0, 0.005, -0.005, 0.01, -0.01])


def test_a_cell_scan_takes_each_phases_best_cosine_over_the_stretches() -> None:
    """The scanned similarity is the best, over the scan's stretches, of the unscanned one (the same model);
    a phase measured with its cell 2% larger is its own nearest neighbour again, at cosine ~1."""
    library = _library()
    model = _model(0)
    references = ReferencePhases.from_library(library)
    pattern = _broadened(library.profiles[3]) + 0.2 * _broadened(library.profiles[0])
    pattern /= np.quantile(pattern, 0.99)
    scanned = NeighbourSearch(model, references, GRID, cell_scan=0.01).similarity(pattern, (20, 230))
    plain = NeighbourSearch(model, references, GRID)
    by_stretch = np.stack(
        [plain.similarity(*stretch_in_d(pattern, (20, 230), GRID, s)) for s in cell_scales(0.01)]
    )
    np.testing.assert_allclose(scanned, np.max(by_stretch, axis=0), atol=1e-5)
    d = np.array([3.3, 2.7, 2.2, 1.8, 1.6, 1.4])
    own = ReferencePhases("memory://one", np.array(["a", "b"]), np.array(["X", "Y"]), np.array([225, 229]),
                          np.stack([_lines(d), _lines(d * 0.8)]).astype(np.float32), np.zeros(2, dtype=bool), GRID)  # fmt: skip
    measured = _lines(d * 1.02)
    assert NeighbourSearch(model, own, GRID, cell_scan=0.03).similarity(measured, (0, N_BINS))[
        224
    ] == pytest.approx(NeighbourSearch(model, own, GRID).similarity(_lines(d), (0, N_BINS))[224], abs=0.02)
    with pytest.raises(ValueError, match="cell scan 0.6 must lie in"):
        NeighbourSearch(model, own, GRID, cell_scan=0.6)
