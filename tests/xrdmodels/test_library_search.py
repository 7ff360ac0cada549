"""Library search (xrdmodels.library_search) on a bank store written here from docs/formats.md with plain zarr.

Independent of xrdsynth on purpose, like store_factory.py: the reader is tested against the documented bank
format, so a writer change that breaks the contract fails here rather than being mirrored.
"""

from __future__ import annotations

import csv
import json
import logging
import math
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
import zarr
from checkpoint_factory import make_checkpoint
from click.testing import CliRunner
from store_factory import StoreSpec, write_store

from pipeline_scripts import load_script
from xrdmodels.checkpoint import load_checkpoint, save_checkpoint
from xrdmodels.checkpoint import main as checkpoint_main
from xrdmodels.cli import main
from xrdmodels.combined import library_probability
from xrdmodels.config import DEFAULT_LIBRARY_CELL_SCAN
from xrdmodels.evaluate import load_model
from xrdmodels.library_search import (
    CELL_SCALE_STEP,
    MAX_ZERO_SHIFT_DEG,
    LibraryFormatError,
    SpectralLibrary,
    axis_ties,
    typical_fwhm_bins,
)
from xrdmodels.measured import MeasuredPattern
from xrdmodels.models.model import ModelOutput
from xrdmodels.predict import neighbour_search, prior_hedge

BANK_WAVELENGTH = 1.54184
GRID = {"two_theta_min_deg": 5.0, "two_theta_max_deg": 120.0, "n_bins": 2048}
#: Two phases per group, so a group is found through either of its phases.
GROUPS = (2, 12, 14, 15, 62, 136, 141, 194, 221, 225, 227, 229)
ABSENT_GROUP = 230


def _phase_lines(rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """(d-spacings in Å descending, intensities with max 100) of a made-up phase: 6-30 lines between
    2θ = 10° and 110° at the bank wavelength, heavy-tailed intensities."""
    n_lines = int(rng.integers(6, 31))
    inverse_d = rng.uniform(
        2 * math.sin(math.radians(5.0)) / BANK_WAVELENGTH,
        2 * math.sin(math.radians(55.0)) / BANK_WAVELENGTH,
        n_lines,
    )
    intensity = rng.pareto(1.2, n_lines) + 0.05
    return 1.0 / np.sort(inverse_d), 100.0 * intensity / intensity.max()


def _two_theta_deg(d_spacing: np.ndarray, wavelength: float) -> np.ndarray:
    return 2.0 * np.degrees(np.arcsin(wavelength / (2.0 * d_spacing)))


def _deposit(two_theta: np.ndarray, intensity: np.ndarray) -> np.ndarray:
    """docs/formats.md `profile`: each stick split linearly between its two nearest bin centres."""
    lo, hi, n = GRID["two_theta_min_deg"], GRID["two_theta_max_deg"], GRID["n_bins"]
    position = (two_theta - lo) / ((hi - lo) / n) - 0.5
    left = np.floor(position).astype(int)
    upper = position - left
    profile = np.zeros(n)
    for index, weight in ((left, 1.0 - upper), (left + 1, upper)):
        inside = (index >= 0) & (index < n)
        np.add.at(profile, index[inside], (weight * intensity)[inside])
    return profile.astype(np.float32)


def write_bank(url: str, seed: int = 0, **attrs) -> list[dict]:
    """A complete bank store per docs/formats.md ("Bank store"), without per-reflection arrays; returns each
    phase's lines and group. ``attrs`` override attributes after the documented ones (a wrong format, version or
    completeness)."""
    rng = np.random.default_rng(seed)
    phases = []
    for k, group in enumerate(g for g in GROUPS for _ in range(2)):
        d, intensity = _phase_lines(rng)
        phases.append({"id": f"test:{group}:{k}", "group": group, "d": d, "intensity": intensity})
    _write_bank_store(url, phases, seed, **attrs)
    return phases


def _write_bank_store(url: str, phases: list[dict], seed: int, **attrs) -> None:
    """Phases (``d``, ``intensity`` per peak, ``group``, ``id``; and, for all or none, ``abc``, ``angles`` and
    ``reflections``: per peak a list of (unit direction, weight)) as a bank store."""
    n = len(phases)
    two_theta = [_two_theta_deg(p["d"], BANK_WAVELENGTH) for p in phases]
    offsets = np.concatenate([[0], np.cumsum([p["d"].size for p in phases])]).astype(np.int64)
    root = zarr.open_group(url, mode="w")
    root.attrs.update({"format": "xrdsynth.bank", "format_version": 2, "complete": False})
    entries = root.create_group("entries")
    text = {
        "id": [p["id"] for p in phases],
        "source": ["test"] * n,
        "provenance": [f"row {k}" for k in range(n)],
        "reduced_formula": [f"X{k}O{k + 1}" for k in range(n)],
        "spacegroup_symbol": ["?"] * n,
        "crystal_system": ["?"] * n,
        "split": ["train"] * n,
    }
    for name, values in text.items():
        entries.create_array(name, shape=(n,), dtype=str, chunks=(n,))[:] = np.array(values)
    numeric = {
        "spacegroup_number": np.array([p["group"] for p in phases], dtype=np.int16),
        "given_spacegroup": np.zeros(n, dtype=np.int16),
        "spacegroup_disagrees": np.zeros(n, dtype=bool),
        "lattice_abc_angstrom": np.array([p.get("abc", (5.0, 5.0, 5.0)) for p in phases], dtype=np.float64),
        "lattice_angles_deg": np.array(
            [p.get("angles", (90.0, 90.0, 90.0)) for p in phases], dtype=np.float64
        ),
        "n_sites": np.ones(n, dtype=np.int32),
        "disordered": np.zeros(n, dtype=bool),
        "synthetic": np.ones(n, dtype=bool),
        "e_above_hull_ev_per_atom": np.full(n, np.nan),
    }
    for name, values in numeric.items():
        entries.create_array(name, shape=values.shape, dtype=values.dtype, chunks=values.shape)[...] = values
    peaks = root.create_group("peaks")
    for name, values in (
        ("offsets", offsets),
        ("two_theta_deg", np.concatenate(two_theta)),
        ("d_spacing_angstrom", np.concatenate([p["d"] for p in phases])),
        ("intensity", np.concatenate([p["intensity"] for p in phases])),
    ):
        peaks.create_array(name, shape=values.shape, dtype=values.dtype, chunks=values.shape)[:] = values
    if "reflections" in phases[0]:
        per_peak = [r for p in phases for r in p["reflections"]]
        for name, values in (
            (
                "reflection_offsets",
                np.concatenate([[0], np.cumsum([len(r) for r in per_peak])]).astype(np.int64),
            ),
            ("reflection_direction", np.array([u for r in per_peak for u, _ in r], dtype=np.float32)),
            ("reflection_weight", np.array([w for r in per_peak for _, w in r], dtype=np.float32)),
        ):
            peaks.create_array(name, shape=values.shape, dtype=values.dtype, chunks=values.shape)[...] = (
                values
            )
    profile = np.stack([_deposit(t, p["intensity"]) for t, p in zip(two_theta, phases, strict=True)])
    root.create_array("profile", shape=profile.shape, dtype="float32", chunks=profile.shape)[:] = profile
    root.attrs.update(
        {
            "wavelength_angstrom": BANK_WAVELENGTH,
            "grid": GRID,
            "config": {},
            "seed": seed,
            "sources": ["test"],
            "build_key": "test",
            "n_entries": n,
            "n_skipped": 0,
            "skipped": [],
            "fingerprint": f"test-{seed}",
        }
    )
    root.attrs.update(attrs)
    if "complete" not in attrs:
        root.attrs["complete"] = True  # last, as the writer does


def measure(
    phases: list[dict],
    weights: list[float],
    *,
    wavelength: float = BANK_WAVELENGTH,
    two_theta_range: tuple[float, float] = (8.0, 100.0),
    fwhm_deg: float = 0.12,
    zero_shift_deg: float = 0.1,
    seed: int = 1,
) -> MeasuredPattern:
    """A lab-like scan of a mixture: Gaussian peaks at the measurement wavelength, intensities perturbed by
    +-30% per reflection (texture), a zero shift, a curved background with an amorphous hump, Poisson counts."""
    rng = np.random.default_rng(seed)
    two_theta = np.arange(*two_theta_range, 0.02)
    signal = np.zeros_like(two_theta)
    sigma = fwhm_deg / (2 * math.sqrt(2 * math.log(2)))
    for phase, weight in zip(phases, weights, strict=True):
        centres = _two_theta_deg(phase["d"], wavelength) + zero_shift_deg
        heights = weight * phase["intensity"] * rng.uniform(0.7, 1.3, phase["d"].size)
        for centre, height in zip(centres, heights, strict=True):
            signal += height * np.exp(-0.5 * ((two_theta - centre) / sigma) ** 2)
    background = 40 + 60 * np.exp(-two_theta / 15) + 15 * np.exp(-0.5 * ((two_theta - 25) / 5) ** 2)
    counts = rng.poisson(background + 2000 * signal / signal.max()).astype(float)
    return MeasuredPattern(two_theta, counts, wavelength, "simulated")


@pytest.fixture(scope="module")
def bank(tmp_path_factory) -> tuple[str, list[dict]]:
    url = str(tmp_path_factory.mktemp("bank") / "bank.zarr")
    return url, write_bank(url)


@pytest.mark.parametrize(
    ("wavelength", "two_theta_range", "fwhm_deg"),
    [
        (BANK_WAVELENGTH, (8.0, 100.0), 0.12),  # a Cu lab scan
        (0.7093, (4.0, 45.0), 0.06),  # Mo Kα1: searched through d-spacings
        (BANK_WAVELENGTH, (8.0, 100.0), 0.9),  # broad peaks (nanocrystalline)
    ],
)
def test_a_phase_pattern_ranks_its_space_group_first(bank, wavelength, two_theta_range, fwhm_deg) -> None:
    url, phases = bank
    library = SpectralLibrary.open(url)
    for k in (0, 7, 16):
        pattern = measure(
            [phases[k]],
            [1.0],
            wavelength=wavelength,
            two_theta_range=two_theta_range,
            fwhm_deg=fwhm_deg,
            seed=k,
        )
        result = library.search(pattern)
        assert result.ranked[0].spacegroup == phases[k]["group"], (k, result.ranked[:3])
        assert result.identified[0] == phases[k]["id"]
        assert result.ranked[0].score > 0.8 > result.ranked[1].score


def test_a_two_phase_mixture_puts_both_groups_in_the_top_three(bank) -> None:
    url, phases = bank
    library = SpectralLibrary.open(url)
    for first, second, seed in ((0, 9, 3), (4, 21, 4), (12, 19, 5)):
        pattern = measure([phases[first], phases[second]], [0.6, 0.4], seed=seed)
        top3 = [m.spacegroup for m in library.search(pattern, top_k=3).ranked]
        assert {phases[first]["group"], phases[second]["group"]} <= set(top3), (first, second, top3)


def _naive_best_cosine(
    library: SpectralLibrary, pattern: MeasuredPattern, phase: int, max_scale: float
) -> float:
    """The search's first-round figure of merit of one phase, scale by scale and shift by shift in plain loops:
    the cosine over the measured window of the phase's template and the measured template read at each cell
    scale and moved by each zero shift."""
    _, _, fwhm_deg, _ = library.measured_template(pattern)
    template = library.templates(library.width_level(fwhm_deg))[0][phase].astype(np.float64)
    reach = math.floor(max_scale / CELL_SCALE_STEP + 1e-9)
    max_shift = round(MAX_ZERO_SHIFT_DEG / library.bin_width_deg)
    best = -1.0
    for k in range(-reach, reach + 1):
        measured, (first, end), _, _ = library.measured_template(pattern, None, k * CELL_SCALE_STEP)
        for shift in range(-max_shift, max_shift + 1):
            moved = np.zeros(library.n_bins)
            for b in range(first, end):
                if first <= b - shift < end:
                    moved[b] = measured[b - shift]
            norm = math.sqrt(
                float(np.dot(template[first:end], template[first:end])) * float(np.dot(moved, moved))
            )
            if norm > 0:
                best = max(best, float(np.dot(template, moved)) / norm)
    return best


@pytest.mark.parametrize("cell_change", [-0.02, 0.025])
def test_a_phase_whose_cell_differs_is_found_by_the_cell_scan(bank, cell_change) -> None:
    """A measured phase 2-2.5% off the library's cell (a solid-solution member) ranks its group first with the
    scan, which reports the cell change; the library's cells alone score it lower. Its figure of merit equals the
    plain-loop reference."""
    url, phases = bank
    library = SpectralLibrary.open(url)
    for k in (3, 10, 22):
        strained = {**phases[k], "d": phases[k]["d"] * (1.0 + cell_change)}
        pattern = measure([strained], [1.0], zero_shift_deg=0.0, seed=k)
        scanned = library.search(pattern)
        fixed = library.search(pattern, cell_scan=0.0)
        top = scanned.ranked[0]
        assert top.spacegroup == phases[k]["group"] and top.phase_id == phases[k]["id"], (
            k,
            scanned.ranked[:3],
        )
        assert abs(top.cell_scale - cell_change) <= CELL_SCALE_STEP, top
        assert all(m.cell_scale == 0.0 for m in fixed.ranked)
        fixed_score = next(m.score for m in fixed.ranked if m.spacegroup == phases[k]["group"])
        assert top.score > fixed_score + 0.2, (top.score, fixed_score)
        reference = _naive_best_cosine(
            library,
            pattern,
            int(np.flatnonzero(library.phase_ids == phases[k]["id"])[0]),
            DEFAULT_LIBRARY_CELL_SCAN,
        )
        assert top.score == pytest.approx(reference, abs=1e-5)


def test_a_two_phase_mixture_with_changed_cells_puts_both_groups_in_the_top_three(bank) -> None:
    """The residual search takes the first phase's lines out at every cell scale: the second phase, at another
    cell, is still found."""
    url, phases = bank
    library = SpectralLibrary.open(url)
    for first, second, seed in ((0, 9, 3), (4, 21, 4), (12, 19, 5)):
        a = {**phases[first], "d": phases[first]["d"] * 1.015}
        b = {**phases[second], "d": phases[second]["d"] * 0.985}
        result = library.search(measure([a, b], [0.6, 0.4], zero_shift_deg=0.0, seed=seed), top_k=3)
        assert {phases[first]["group"], phases[second]["group"]} <= {m.spacegroup for m in result.ranked}
        assert result.identified[:2] == [phases[first]["id"], phases[second]["id"]], result.identified


def test_the_cell_scan_refuses_a_reach_outside_its_range(bank) -> None:
    library = SpectralLibrary.open(bank[0])
    pattern = measure([bank[1][0]], [1.0])
    with pytest.raises(ValueError, match="cell_scan"):
        library.search(pattern, cell_scan=-0.01)


#: Phases defined by their cells (space group, a b c in Å, α β γ in degrees), for the axis-by-axis refinement.
CELLS = (
    (221, (4.05, 4.05, 4.05), (90.0, 90.0, 90.0)),
    (225, (5.64, 5.64, 5.64), (90.0, 90.0, 90.0)),
    (136, (4.59, 4.59, 2.96), (90.0, 90.0, 90.0)),
    (141, (6.60, 6.60, 5.98), (90.0, 90.0, 90.0)),
    (62, (5.50, 7.60, 5.30), (90.0, 90.0, 90.0)),
    (14, (5.10, 8.30, 6.90), (90.0, 101.5, 90.0)),
    (194, (3.20, 3.20, 5.20), (90.0, 90.0, 120.0)),
    (167, (4.76, 4.76, 12.99), (90.0, 90.0, 120.0)),
)


def _reciprocal_rows(abc, angles) -> np.ndarray:
    """a*, b*, c* (rows, 1/Å) in the Busing-Levy frame: the lower Cholesky factor of the reciprocal metric."""
    a, b, c = abc
    ca, cb, cg = (math.cos(math.radians(x)) for x in angles)
    metric = np.array(
        [[a * a, a * b * cg, a * c * cb], [a * b * cg, b * b, b * c * ca], [a * c * cb, b * c * ca, c * c]]
    )
    return np.linalg.cholesky(np.linalg.inv(metric))


def _reflections(abc, angles, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(hkl (R, 3), d in Å (R,), intensity (R,)) of a cell's reflections, one per Friedel pair, between 2θ = 12°
    and 100° at the bank wavelength, with random intensities equal within a pair of the same d."""
    rows = _reciprocal_rows(abc, angles)
    hkl = np.array([v for v in np.ndindex(13, 13, 13)]) - 6
    positive = (hkl[:, 0] > 0) | ((hkl[:, 0] == 0) & ((hkl[:, 1] > 0) | ((hkl[:, 1] == 0) & (hkl[:, 2] > 0))))
    hkl = hkl[positive]
    d = 1.0 / np.linalg.norm(hkl @ rows, axis=1)
    two_theta = 2 * np.degrees(np.arcsin(np.clip(BANK_WAVELENGTH / (2 * d), 0, 1)))
    inside = (BANK_WAVELENGTH / (2 * d) < 1) & (two_theta > 12) & (two_theta < 100)
    hkl, d = hkl[inside], d[inside]
    _, peak, counts = np.unique(np.round(d, 9), return_inverse=True, return_counts=True)
    intensity = (rng.pareto(1.2, peak.max() + 1) + 0.05)[peak] / counts[peak]
    return hkl, d, intensity


def _strained_d(hkl: np.ndarray, abc, angles, axis_scales) -> np.ndarray:
    """d-spacings (Å) of the reflections once the cell is stretched by 1 + e along each Busing-Levy axis, from
    the stretched cell's parameters (orthogonal and hexagonal cells: a, b, c change, the angles do not)."""
    stretched = tuple(x * (1 + e) for x, e in zip(abc, axis_scales, strict=True))
    return 1.0 / np.linalg.norm(hkl @ _reciprocal_rows(stretched, angles), axis=1)


def write_cell_bank(url: str, seed: int = 0) -> list[dict]:
    """A bank store of the phases of :data:`CELLS` with their reflections (format version 2); returns each
    phase with its reflections' hkl, d and intensity."""
    rng = np.random.default_rng(seed)
    phases = []
    for k, (group, abc, angles) in enumerate(CELLS):
        hkl, d, intensity = _reflections(abc, angles, rng)
        directions = hkl @ _reciprocal_rows(abc, angles)
        directions /= np.linalg.norm(directions, axis=1, keepdims=True)
        peak_d, peak = np.unique(np.round(d, 9), return_inverse=True)
        peak_intensity = np.bincount(peak, weights=intensity)
        reflections = [
            [(directions[r], intensity[r] / peak_intensity[p]) for r in np.flatnonzero(peak == p)]
            for p in range(peak_d.size)
        ]
        scale = 100.0 / peak_intensity.max()
        phases.append(
            {
                "id": f"cell:{group}:{k}",
                "group": group,
                "abc": abc,
                "angles": angles,
                "d": peak_d[::-1],
                "intensity": peak_intensity[::-1] * scale,
                "reflections": reflections[::-1],
                "hkl": hkl,
                "reflection_d": d,
                "reflection_intensity": intensity * scale,
            }
        )
    _write_bank_store(url, phases, seed)
    return phases


@pytest.fixture(scope="module")
def cell_bank(tmp_path_factory) -> tuple[str, list[dict]]:
    url = str(tmp_path_factory.mktemp("cells") / "bank.zarr")
    return url, write_cell_bank(url)


@pytest.mark.parametrize(
    ("group", "abc", "angles", "ties"),
    [
        (225, (5.6, 5.6, 5.6), (90, 90, 90), [0, 0, 0]),
        (136, (4.6, 4.6, 3.0), (90, 90, 90), [0, 0, 1]),
        (136, (3.0, 4.6, 4.6), (90, 90, 90), [1, 0, 0]),
        (194, (3.2, 3.2, 5.2), (90, 90, 120), [0, 0, 1]),
        (167, (5.4, 5.4, 5.4), (55, 55, 55), [0, 0, 0]),  # a rhombohedral setting
        (62, (5.5, 7.6, 5.3), (90, 90, 90), [0, 1, 2]),
        (14, (5.1, 8.3, 6.9), (90, 101.5, 90), [0, 1, 2]),
    ],
)
def test_the_axes_a_cell_may_change_apart_follow_its_crystal_system(group, abc, angles, ties) -> None:
    assert axis_ties(group, np.array(abc), np.array(angles)).tolist() == ties


def test_strained_templates_put_each_reflection_where_the_stretched_cell_has_it(cell_bank) -> None:
    """A phase's template with its cell stretched axis by axis equals the template of a profile built from the
    stretched cell's own d-spacings (hkl through its reciprocal metric)."""
    url, phases = cell_bank
    library = SpectralLibrary.open(url)
    for k, axis_scales in ((2, (0.02, 0.02, -0.015)), (4, (-0.01, 0.025, 0.005)), (6, (0.012, 0.012, 0.03))):
        p = phases[k]
        d = _strained_d(p["hkl"], p["abc"], p["angles"], axis_scales)
        profile = _deposit(_two_theta_deg(d, BANK_WAVELENGTH), p["reflection_intensity"])
        reference = SpectralLibrary(
            "reference",
            np.array(["x"]),
            np.array(["x"]),
            np.array([p["group"]]),
            profile[None, :],
            wavelength_angstrom=BANK_WAVELENGTH,
            two_theta_min_deg=GRID["two_theta_min_deg"],
            two_theta_max_deg=GRID["two_theta_max_deg"],
        ).templates(2)[0][0]
        strained = library.strained_templates(k, np.array([axis_scales]), 2)[0]
        # float32 round-off near zero, amplified by the square root, stays far below a misplaced line (~max).
        np.testing.assert_allclose(strained, reference, atol=1e-3 * reference.max())


@pytest.mark.parametrize(
    ("k", "axis_scales"),
    [(2, (0.018, 0.018, 0.006)), (4, (-0.012, -0.002, 0.008)), (6, (-0.009, -0.009, 0.006))],
)
def test_a_phase_whose_axes_change_apart_is_found_and_its_change_reported(cell_bank, k, axis_scales) -> None:
    """A tetragonal, an orthorhombic and a hexagonal phase measured with their axes changed by different amounts
    rank first, with each axis's change within two steps, and score higher than the isotropic scan (the default)."""
    url, phases = cell_bank
    library = SpectralLibrary.open(url)
    p = phases[k]
    d = _strained_d(p["hkl"], p["abc"], p["angles"], axis_scales)
    pattern = measure([{"d": d, "intensity": p["reflection_intensity"]}], [1.0], zero_shift_deg=0.05, seed=k)
    top = library.search(pattern, refine_axes=True).ranked[0]
    assert (top.spacegroup, top.phase_id) == (p["group"], p["id"]), top
    assert top.cell_axes is not None
    assert np.max(np.abs(np.array(top.cell_axes) - axis_scales)) <= 2 * CELL_SCALE_STEP, top
    assert top.cell_scale == pytest.approx(float(np.mean(top.cell_axes)))
    isotropic = library.search(pattern).ranked  # the default: the isotropic scan only
    isotropic_score = next(m.score for m in isotropic if m.phase_id == p["id"])
    assert top.score > isotropic_score + 0.01, (top.score, isotropic_score)
    assert all(m.cell_axes is None for m in isotropic)


def test_a_bank_without_reflections_warns_that_cells_were_not_refined(bank, tmp_path) -> None:
    library = SpectralLibrary.open(bank[0])
    result = library.search(measure([bank[1][3]], [1.0]), refine_axes=True)
    assert any("per-reflection arrays" in w for w in result.warnings), result.warnings
    assert all(m.cell_axes is None for m in result.ranked)
    # predict's table and JSON and score-measured's files say it too (the library's own warnings were not shown).
    ckpt = make_checkpoint(tmp_path / "m.pt", wavelength_angstrom=BANK_WAVELENGTH)
    scan = _write_xy(tmp_path / "scan.xy", measure([bank[1][3]], [1.0], seed=9))
    base = [
        "predict",
        str(ckpt),
        str(scan),
        "--wavelength",
        "CuKa",
        "--library",
        bank[0],
        "--library-refine-axes",
    ]
    table = CliRunner().invoke(main, base)
    assert (
        table.exit_code == 0 and "warning: the library" in table.output and "per-reflection" in table.output
    )
    as_json = json.loads(CliRunner().invoke(main, [*base, "--json"]).stdout)["predictions"][0]
    assert any("per-reflection arrays" in w for w in as_json["warnings"]), as_json["warnings"]
    labels = tmp_path / "labels.csv"
    labels.write_text(
        f"set,file,spacegroups,wavelength_angstrom\ndemo,scan.xy,{bank[1][3]['group']},1.54184\n"
    )
    scored = CliRunner().invoke(
        main,
        ["score-measured", str(ckpt), "--labels", str(labels), "--library", bank[0], "--library-refine-axes"]
        + ["--out", str(tmp_path / "scored")],
    )
    assert scored.exit_code == 0, scored.output
    files = json.loads((tmp_path / "scored" / "measured.json").read_text())["files"]
    assert any("per-reflection arrays" in w for w in files[0]["warnings"]), files[0]["warnings"]


def test_a_cubic_phase_keeps_its_cell_whole(cell_bank) -> None:
    url, phases = cell_bank
    library = SpectralLibrary.open(url)
    p = phases[1]
    pattern = measure(
        [{"d": p["reflection_d"] * 1.018, "intensity": p["reflection_intensity"]}], [1.0], seed=3
    )
    top = library.search(pattern, refine_axes=True).ranked[0]
    assert (top.phase_id, top.cell_axes) == (p["id"], None)
    assert abs(top.cell_scale - 0.018) <= CELL_SCALE_STEP


def test_generated_crystals_are_left_out_of_the_search(tmp_path) -> None:
    """The bank's generated crystals (entries/synthetic) are never identified, even when the pattern is one of
    theirs; a bank of generated crystals only, or without the column, is searched whole."""
    url = str(tmp_path / "bank.zarr")
    phases = write_bank(url)
    entries = zarr.open_group(url, mode="r+")["entries"]
    generated = np.arange(len(phases)) % 2 == 1  # the second phase of every group
    entries["synthetic"][...] = generated
    library = SpectralLibrary.open(url)
    assert sorted(library.phase_ids) == sorted(
        p["id"] for p, g in zip(phases, generated, strict=True) if not g
    )
    pattern = measure([phases[1]], [1.0], seed=2)
    assert phases[1]["id"] not in library.search(pattern).identified
    entries["synthetic"][...] = np.ones(len(phases), dtype=bool)
    assert len(SpectralLibrary.open(url)) == len(phases)
    del entries["synthetic"]
    assert len(SpectralLibrary.open(url)) == len(phases)


def test_typical_peak_width_is_measured_in_bins() -> None:
    bins = np.arange(2000.0)
    for fwhm in (3.0, 12.0, 30.0):
        sigma = fwhm / (2 * math.sqrt(2 * math.log(2)))
        pattern = sum(
            h * np.exp(-0.5 * ((bins - c) / sigma) ** 2) for c, h in ((300, 1.0), (900, 0.5), (1500, 0.8))
        )
        assert typical_fwhm_bins(pattern) == pytest.approx(fwhm, rel=0.15)


def _mixture_store(url: str) -> None:
    write_store(url, StoreSpec(n_samples=8, n_bins=16, shard_size=8, chunk_rows=8))


def _without_profile(url: str) -> None:
    write_bank(url)
    root = zarr.open_group(url, mode="a")
    del root["profile"]


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (None, "no bank store at"),
        (_mixture_store, "that is a mixture store"),
        (lambda url: write_bank(url, format_version=3), "bank format version 3"),
        (lambda url: write_bank(url, complete=False), "is incomplete"),
        (_without_profile, "lacks the array 'profile'"),
        (lambda url: write_bank(url, grid={"n_bins": 2048}), "attributes grid"),
    ],
)
def test_a_bank_of_the_wrong_format_is_refused_naming_the_problem(tmp_path, make, message) -> None:
    url = str(tmp_path / "store.zarr")
    if make is not None:
        make(url)
    with pytest.raises(LibraryFormatError, match=message) as info:
        SpectralLibrary.open(url)
    assert url in str(info.value)


def _write_xy(path: Path, pattern: MeasuredPattern) -> Path:
    np.savetxt(path, np.column_stack([pattern.two_theta_deg, pattern.intensity]), fmt="%.4f")
    return path


def test_predict_reports_the_cell_change_and_takes_the_scan_reach_as_an_option(tmp_path, bank) -> None:
    """`--library-cell-scan`: the library's best match of a phase measured 2.4% off its cell reports the change in
    the table and in the JSON; 0 searches the library's cells only; a reach outside [0, 0.5) is refused by name."""
    url, phases = bank
    ckpt = make_checkpoint(tmp_path / "m.pt", wavelength_angstrom=BANK_WAVELENGTH)
    strained = {**phases[5], "d": phases[5]["d"] * 1.024}
    scan = _write_xy(tmp_path / "scan.xy", measure([strained], [1.0], zero_shift_deg=0.0, seed=9))
    base = ["predict", str(ckpt), str(scan), "--wavelength", "CuKa", "--library", url]
    result = CliRunner().invoke(main, base)
    assert result.exit_code == 0, result.output
    assert f"{phases[5]['id']}, cell +2.4%)" in result.output
    as_json = CliRunner().invoke(main, [*base, "--json"])
    best = json.loads(as_json.stdout)["predictions"][0]["library"]["ranked"][0]
    assert best["phase_id"] == phases[5]["id"] and best["cell_scale"] == pytest.approx(
        0.024, abs=CELL_SCALE_STEP
    )
    fixed = CliRunner().invoke(main, [*base, "--json", "--library-cell-scan", "0"])
    ranked = json.loads(fixed.stdout)["predictions"][0]["library"]["ranked"]
    assert all(r["cell_scale"] == 0.0 for r in ranked) and ranked[0]["score"] < best["score"] - 0.2
    refused = CliRunner().invoke(main, [*base, "--library-cell-scan", "0.6"])
    assert refused.exit_code != 0 and "--library-cell-scan" in refused.output
    assert "--library-cell-scan" in CliRunner().invoke(main, ["score-measured", "--help"]).output


def test_predict_and_score_measured_refine_axes_on_request(tmp_path, cell_bank) -> None:
    """`--library-refine-axes`: an orthorhombic phase measured with its axes changed by different amounts is
    printed with each axis's change, and the JSON carries them; without the flag the match is isotropic."""
    url, phases = cell_bank
    p = phases[4]
    d = _strained_d(p["hkl"], p["abc"], p["angles"], (-0.010, 0.002, 0.010))
    scan = _write_xy(
        tmp_path / "scan.xy",
        measure([{"d": d, "intensity": p["reflection_intensity"]}], [1.0], zero_shift_deg=0.0, seed=4),
    )
    ckpt = make_checkpoint(tmp_path / "m.pt", wavelength_angstrom=BANK_WAVELENGTH)
    base = ["predict", str(ckpt), str(scan), "--wavelength", "CuKa", "--library", url]
    refined = CliRunner().invoke(main, [*base, "--library-refine-axes"])
    assert refined.exit_code == 0, refined.output
    assert f"{p['id']}, cell a/b/c " in refined.output
    best = json.loads(CliRunner().invoke(main, [*base, "--library-refine-axes", "--json"]).stdout)[
        "predictions"
    ][0]
    axes = best["library"]["ranked"][0]["cell_axes"]
    assert np.max(np.abs(np.array(axes) - (-0.010, 0.002, 0.010))) <= 2 * CELL_SCALE_STEP, axes
    plain = json.loads(CliRunner().invoke(main, [*base, "--json"]).stdout)["predictions"][0]
    assert all(r["cell_axes"] is None for r in plain["library"]["ranked"])
    assert "--library-refine-axes" in CliRunner().invoke(main, ["score-measured", "--help"]).output


def test_predict_prints_the_library_ranking_beside_the_models(tmp_path, bank) -> None:
    url, phases = bank
    ckpt = make_checkpoint(tmp_path / "m.pt", wavelength_angstrom=BANK_WAVELENGTH)
    scan = _write_xy(tmp_path / "scan.xy", measure([phases[5]], [1.0], seed=9))
    result = CliRunner().invoke(
        main, ["predict", str(ckpt), str(scan), "--wavelength", "CuKa", "--top", "4", "--library", url]
    )
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    header = next(i for i, line in enumerate(lines) if "rank  SG" in line)
    assert "|  library SG" in lines[header]
    first_row = lines[header + 1].split("|")
    assert first_row[0].split()[0] == "1"  # the model's rank 1, left
    assert int(first_row[1].split()[0]) == phases[5]["group"]  # the library's best group, right
    assert phases[5]["id"] in first_row[1]
    assert len([line for line in lines[header + 1 :] if "|" in line]) == 4
    as_json = CliRunner().invoke(
        main, ["predict", str(ckpt), str(scan), "--wavelength", "CuKa", "--json", "--library", url]
    )
    prediction = json.loads(as_json.stdout)["predictions"][0]
    library = prediction["library"]
    assert library["ranked"][0]["spacegroup"] == phases[5]["group"] and library["library"] == url
    # The combined ranking: the model's probability of each group noisy-OR the calibrated library figure of
    # merit; the library's best match (cosine ~1) leads it whatever the untrained model says.
    combined = prediction["combined"]
    assert len(combined) == 10 and combined[0]["spacegroup"] == phases[5]["group"]
    fom = {r["spacegroup"]: r["score"] for r in library["ranked"]}
    model = {r["spacegroup"]: r["probability"] for r in prediction["ranked"]}
    for r in combined:
        if r["spacegroup"] in fom:
            assert r["library_probability"] == pytest.approx(library_probability(fom[r["spacegroup"]]))
        if r["spacegroup"] in model:
            assert r["model_probability"] == pytest.approx(model[r["spacegroup"]])
        assert r["score"] == pytest.approx(1 - (1 - r["model_probability"]) * (1 - r["library_probability"]))
    assert [r["score"] for r in combined] == sorted((r["score"] for r in combined), reverse=True)
    assert "model and library combined" in result.output
    # The combined set: the top of the combined ranking, as many groups as the model's predicted set.
    size = len(prediction["predicted_set"])  # an untrained model's flat probabilities give a large set
    assert len(prediction["combined_set"]) == size
    assert {r["spacegroup"] for r in combined[:size]} <= set(prediction["combined_set"])
    assert phases[5]["group"] in prediction["combined_set"]
    assert "combined set (the top of the combined ranking" in result.output
    # With a recorded label prior the model's term is hedged as its own ranking is: probability + w × prior.
    prior = np.linspace(1.0, 2.0, 230) / np.linspace(1.0, 2.0, 230).sum()
    hedged = make_checkpoint(
        tmp_path / "h.pt", wavelength_angstrom=BANK_WAVELENGTH, label_prior=prior.tolist()
    )
    as_json = CliRunner().invoke(
        main,
        [
            "predict",
            str(hedged),
            str(scan),
            "--wavelength",
            "CuKa",
            "--json",
            "--library",
            url,
            "--top",
            "230",
        ],
    )
    prediction = json.loads(as_json.stdout)["predictions"][0]
    probability = np.zeros(230)
    for r in prediction["ranked"]:
        probability[r["spacegroup"] - 1] = r["probability"]
    hedge = prior_hedge(probability, prior)  # tested against a plain loop in test_evaluate_predict
    for r in prediction["combined"]:
        g = r["spacegroup"]
        assert r["model_probability"] == pytest.approx(probability[g - 1] + 2.0 * hedge[g - 1], rel=1e-12)
        assert r["score"] == pytest.approx(1 - (1 - r["model_probability"]) * (1 - r["library_probability"]))
    wrong = tmp_path / "mix.zarr"
    _mixture_store(str(wrong))
    refused = CliRunner().invoke(main, ["predict", str(ckpt), str(scan), "--library", str(wrong)])
    assert refused.exit_code != 0 and "not a bank store" in refused.output
    assert "Traceback" not in refused.output


def test_the_combined_ranking_adds_the_neighbour_search_on_the_models_grid(tmp_path, bank) -> None:
    """A model on the bank's grid adds the neighbour search's term (xrdmodels.neighbours, tested against a naive
    computation in test_neighbours.py) to the noisy-OR; --no-library-neighbours leaves it out; a model on another
    grid predicts without it and says so."""
    url, phases = bank
    scan = _write_xy(tmp_path / "scan.xy", measure([phases[5]], [1.0], seed=9))
    on_grid = make_checkpoint(tmp_path / "g.pt", wavelength_angstrom=BANK_WAVELENGTH, n_bins=GRID["n_bins"])
    base = ["predict", str(on_grid), str(scan), "--wavelength", "CuKa", "--library", url, "--top", "230"]

    def combined(*extra: str) -> list[dict]:
        result = CliRunner().invoke(main, [*base, "--json", *extra])
        assert result.exit_code == 0, result.output
        return json.loads(result.stdout)["predictions"][0]["combined"]

    with_neighbours = combined()
    terms = np.array(
        [
            [r["model_probability"], r["library_probability"], r["neighbour_probability"]]
            for r in with_neighbours
        ]
    )
    assert terms[:, 2].max() > 0 and (terms[:, 2] <= 1).all()
    np.testing.assert_allclose(
        [r["score"] for r in with_neighbours], 1 - np.prod(1 - terms, axis=1), rtol=1e-12
    )
    assert all(r["neighbour_probability"] == 0 for r in combined("--no-library-neighbours"))
    # The neighbour term scans cells as far as the library search does (NeighbourSearch's scan is tested in
    # test_neighbours.py); --library-cell-scan 0 compares the library's own cells in both.
    model, state = load_model(on_grid)
    library = SpectralLibrary.open(url)
    for reach in (0.0, 0.02):
        search, note = neighbour_search(model, state, library, True, reach)
        assert note is None and search.cell_scan == reach
    unscanned = combined("--library-cell-scan", "0")
    assert [r["neighbour_probability"] for r in unscanned] != [
        r["neighbour_probability"] for r in with_neighbours
    ]
    table = CliRunner().invoke(main, base)
    assert "library  neighbours" in table.output
    # score-measured ranks the library's groups by the neighbour search too, beside the library's own ranking.
    labels = tmp_path / "labels.csv"
    labels.write_text(
        f"set,file,spacegroups,spacegroups_accept,wavelength_angstrom\nsynthetic,scan.xy,{phases[5]['group']},,{BANK_WAVELENGTH}\n"
    )
    scored = CliRunner().invoke(
        main,
        [
            "score-measured",
            str(on_grid),
            "--labels",
            str(labels),
            "--out",
            str(tmp_path / "s"),
            "--library",
            url,
        ],
    )
    assert scored.exit_code == 0, scored.output
    payload = json.loads((tmp_path / "s" / "measured.json").read_text())
    ranked = payload["files"][0]["neighbour_top10"]
    assert len(ranked) == 10 and set(ranked) <= set(GROUPS)
    assert {r["set"]: r for r in payload["neighbour_summary"]}["all"]["files"] == 1
    assert "in the model's eyes" in (tmp_path / "s" / "measured.md").read_text()
    off_grid = make_checkpoint(tmp_path / "o.pt", wavelength_angstrom=BANK_WAVELENGTH)  # 256 bins
    result = CliRunner().invoke(
        main, ["predict", str(off_grid), str(scan), "--wavelength", "CuKa", "--library", url]
    )
    assert result.exit_code == 0, result.output
    assert (
        "warning: the combined ranking has no neighbour term" in result.output
        and "2048 bins" in result.output
    )


def test_score_measured_reports_the_library_beside_the_model(tmp_path, bank) -> None:
    url, phases = bank
    ckpt = make_checkpoint(tmp_path / "m.pt", wavelength_angstrom=BANK_WAVELENGTH)
    files = {
        "single.xy": (measure([phases[2]], [1.0], seed=11), str(phases[2]["group"])),
        "mixture.xy": (
            measure([phases[8], phases[17]], [0.5, 0.5], seed=12),
            f"{phases[8]['group']};{phases[17]['group']}",
        ),
        # A phase the library holds under another group: the library cannot find the labelled one.
        "absent.xy": (measure([phases[10]], [1.0], seed=13), str(ABSENT_GROUP)),
    }
    labels = tmp_path / "labels.csv"
    with labels.open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["set", "file", "spacegroups", "spacegroups_accept", "wavelength_angstrom"])
        for name, (pattern, groups) in files.items():
            _write_xy(tmp_path / name, pattern)
            writer.writerow(["synthetic", name, groups, "", BANK_WAVELENGTH])
    out = tmp_path / "scores"
    result = CliRunner().invoke(
        main, ["score-measured", str(ckpt), "--labels", str(labels), "--out", str(out), "--library", url]
    )
    assert result.exit_code == 0, result.output
    assert "lib hit@1" in result.output and "lib in_library" in result.output
    payload = json.loads((out / "measured.json").read_text())
    library = {r["set"]: r for r in payload["library_summary"]}["all"]
    assert library["files"] == 3
    assert library["hit@1"] == pytest.approx(2 / 3)
    assert library["recall@K*"] == pytest.approx(2 / 3)  # both mixture phases in its top 2
    assert library["in_library"] == pytest.approx(2 / 3)
    # The absent group is ranked as if after every library group, in random order: (12 + 1 + 230) / 2.
    absent = next(f for f in payload["files"] if f["file"] == "absent.xy")
    assert ABSENT_GROUP not in absent["library_top10"]
    assert library["mean_first_rank"] == pytest.approx((1 + 1 + (len(GROUPS) + 1 + 230) / 2) / 3)
    model = {r["set"]: r for r in payload["summary"]}["all"]
    assert model["files"] == 3 and "in_library" not in model
    # The model's hits split by the library's rank of the truth, recomputed from the per-file top 10s.
    strata = {r["stratum"]: r for r in payload["by_library_rank"]}
    assert set(strata) == {"library top 1", "library rank > 10"}
    for name, members in (
        ("library top 1", ("single.xy", "mixture.xy")),
        ("library rank > 10", ("absent.xy",)),
    ):
        rows = [f for f in payload["files"] if f["file"] in members]
        hit = [any(g in set().union(*map(set, f["phases"])) for g in f["top10"][:1]) for f in rows]
        assert strata[name]["files"] == len(members)
        assert strata[name]["hit@1"] == pytest.approx(sum(hit) / len(rows))
    assert strata["library top 1"]["lib hit@5"] == 1.0 and strata["library rank > 10"]["lib hit@5"] == 0.0
    # The combined ranking's figures, recomputed from its per-file top 10s.
    combined = {r["set"]: r for r in payload["combined_summary"]}["all"]
    for k in (1, 3, 5, 10):
        hits = [
            any(g in set().union(*map(set, f["phases"])) for g in f["combined_top10"][:k])
            for f in payload["files"]
        ]
        assert combined[f"hit@{k}"] == pytest.approx(sum(hits) / 3)
    single = next(f for f in payload["files"] if f["file"] == "single.xy")
    assert single["combined_top10"][0] == phases[2]["group"]  # the library's near-perfect match leads
    # The combined set: the model's size, from the top of the combined ranking, scored as the model's set is.
    for f in payload["files"]:
        size = len(f["predicted_set"])
        assert len(f["combined_predicted_set"]) == size
        assert set(f["combined_top10"][:size]) <= set(f["combined_predicted_set"])
    assert phases[2]["group"] in single["combined_predicted_set"]
    sets = {r["set"]: r for r in payload["combined_set_summary"]}["all"]
    f1 = []
    for f in payload["files"]:
        named = sum(bool(set(p) & set(f["combined_predicted_set"])) for p in f["phases"])
        wrong = len(set(f["combined_predicted_set"]) - set().union(*map(set, f["phases"])))
        f1.append(2 * named / (named + wrong + len(f["phases"])))
    assert sets["F1"] == pytest.approx(sum(f1) / 3)
    assert sets["set size"] == pytest.approx(
        sum(len(f["combined_predicted_set"]) for f in payload["files"]) / 3
    )
    assert "combined ranking's predicted set" in (out / "measured.md").read_text()
    assert strata["library top 1"]["comb hit@1"] == 1.0
    assert "combined in one ranking" in result.output
    assert "library rank > 10" in (out / "measured.md").read_text()


def test_the_library_benchmark_scores_each_variant_on_labelled_files(tmp_path, cell_bank, capsys) -> None:
    """`pipelines/bench_library_search.py` on a labels table of two files: a single-phase file whose orthorhombic
    cell changed axis by axis and a two-phase mixture, both found by every variant."""
    url, phases = cell_bank
    p = phases[4]
    d = _strained_d(p["hkl"], p["abc"], p["angles"], (-0.010, 0.002, 0.010))
    _write_xy(
        tmp_path / "one.xy",
        measure([{"d": d, "intensity": p["reflection_intensity"]}], [1.0], zero_shift_deg=0.0, seed=4),
    )
    mixture = [
        {"d": q["reflection_d"], "intensity": q["reflection_intensity"]} for q in (phases[1], phases[6])
    ]
    _write_xy(tmp_path / "two.xy", measure(mixture, [0.6, 0.4], seed=5))
    labels = tmp_path / "labels.csv"
    with open(labels, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["set", "file", "spacegroups", "spacegroups_accept", "wavelength_angstrom"])
        writer.writerow(["cells", "one.xy", "62", "62", BANK_WAVELENGTH])
        writer.writerow(["cells", "two.xy", "225;194", "225;194", BANK_WAVELENGTH])
    bench = load_script("bench_library_search", "pipelines/bench_library_search.py")
    bench.main(["--bank", url, "--labels", str(labels), "--variants", "default", "axes", "no-scan"])
    out = capsys.readouterr().out
    for variant in ("default", "axes", "no-scan"):
        assert f"| {variant} | cells | 1 | 1.000 | 1.000 | 1 of 1 |" in out, out
    assert "axes against default, single-phase files: hit@1 +0 -0, hit@5 +0 -0" in out
    with pytest.raises(SystemExit, match="no bank at"):
        bench.main(["--bank", str(tmp_path / "missing.zarr"), "--labels", str(labels)])


def test_a_checkpoint_remembers_its_training_phases(tmp_path, bank) -> None:
    """`xrdmodels add-memory` keeps a bank's phases in a checkpoint; predict then ranks by the noisy-OR of the
    network's probability and the memory's calibrated neighbour term (xrdmodels.neighbours, tested against a naive
    computation in test_neighbours.py), keeps the network's own ranking beside it, and --no-memory gives the
    network alone; the combined ranking with a library takes the network's probabilities; a tampered memory, a
    bank off the model's grid or a split without phases are refused with messages that say what to do."""
    url, phases = bank
    scan = _write_xy(tmp_path / "scan.xy", measure([phases[5]], [1.0], seed=9))
    on_grid = make_checkpoint(tmp_path / "g.pt", wavelength_angstrom=BANK_WAVELENGTH, n_bins=GRID["n_bins"])
    remembering = tmp_path / "m.pt"
    added = CliRunner().invoke(main, ["add-memory", str(on_grid), url, str(remembering)])
    assert added.exit_code == 0, added.output
    assert f"{len(phases)} phases of the train split" in added.output
    base = ["predict", str(remembering), str(scan), "--wavelength", "CuKa", "--top", "230", "--json"]

    def predicted(*extra: str) -> dict:
        result = CliRunner().invoke(main, [*base, *extra])
        assert result.exit_code == 0, result.output
        return json.loads(result.stdout)["predictions"][0]

    remembered, alone = predicted(), predicted("--no-memory")
    assert remembered["memory"] == f"{len(phases)} phases of {url}"
    assert alone["memory"] is None and alone["network_ranked"] is None and remembered["prior_weight"] == 0
    terms = np.array([[r["probability"], r["memory_probability"]] for r in remembered["ranked"]])
    assert terms[:, 1].max() > 0 and set(np.flatnonzero(terms[:, 1] > 0)) <= {
        i for i, r in enumerate(remembered["ranked"]) if r["spacegroup"] in GROUPS
    }
    np.testing.assert_allclose(
        [r["score"] for r in remembered["ranked"]], 1 - np.prod(1 - terms, axis=1), rtol=1e-12
    )
    assert [r["score"] for r in remembered["ranked"]] == sorted(
        (r["score"] for r in remembered["ranked"]), reverse=True
    )
    assert remembered["network_ranked"] == [r["spacegroup"] for r in alone["ranked"]]
    ids = {p["id"]: p["group"] for p in phases}
    for r in remembered["ranked"]:  # "formula (id)" of a phase of the group, None for a group the bank lacks
        assert (r["memory_phase"] is None) == (r["spacegroup"] not in GROUPS)
        if r["memory_phase"] is not None:
            assert ids[r["memory_phase"].split(" (")[1].rstrip(")")] == r["spacegroup"]
    assert all(r["memory_phase"] is None for r in alone["ranked"])
    table = CliRunner().invoke(main, base[:-1])
    assert "ranked with the model's memory of its training phases" in table.output
    combined = predicted("--library", url)["combined"]
    network = {r["spacegroup"]: r["probability"] for r in alone["ranked"]}
    assert all(r["model_probability"] == pytest.approx(network[r["spacegroup"]]) for r in combined)
    # An ensemble manifest reads its first member's memory; two copies of one model rank as that model does.
    manifest = tmp_path / "ensemble.json"
    written = CliRunner().invoke(main, ["ensemble", str(manifest), str(remembering), str(remembering)])
    assert written.exit_code == 0, written.output
    pair = CliRunner().invoke(main, [base[0], str(manifest), *base[2:]])
    assert pair.exit_code == 0, pair.output
    ranked = json.loads(pair.stdout)["predictions"][0]["ranked"]
    assert [r["spacegroup"] for r in ranked] == [r["spacegroup"] for r in remembered["ranked"]]
    np.testing.assert_allclose(
        [r["score"] for r in ranked], [r["score"] for r in remembered["ranked"]], rtol=1e-6
    )
    # score-measured scores the model with its memory and the network alone side by side.
    labels = tmp_path / "labels.csv"
    labels.write_text(
        f"set,file,spacegroups,spacegroups_accept,wavelength_angstrom\nsynthetic,scan.xy,{phases[5]['group']},,{BANK_WAVELENGTH}\n"
    )
    scored = CliRunner().invoke(
        main, ["score-measured", str(remembering), "--labels", str(labels), "--out", str(tmp_path / "s")]
    )
    assert scored.exit_code == 0, scored.output
    payload = json.loads((tmp_path / "s" / "measured.json").read_text())
    assert payload["files"][0]["top10"] == [r["spacegroup"] for r in remembered["ranked"][:10]]
    assert payload["files"][0]["network_top10"] == remembered["network_ranked"][:10]
    assert {r["set"]: r for r in payload["network_summary"]}["all"]["files"] == 1
    assert "The network alone" in scored.output
    # Refusals.
    state = load_checkpoint(remembering)
    state["phase_memory"]["spacegroups"][0] = 0
    save_checkpoint(tmp_path / "t.pt", state)
    tampered = CliRunner().invoke(main, [*base[:1], str(tmp_path / "t.pt"), *base[2:]])
    assert tampered.exit_code != 0 and "phase_memory.spacegroups" in tampered.output
    assert "--no-memory" in tampered.output and "Traceback" not in tampered.output
    off_grid = make_checkpoint(tmp_path / "o.pt", wavelength_angstrom=BANK_WAVELENGTH)  # 256 bins
    refused = CliRunner().invoke(main, ["add-memory", str(off_grid), url, str(tmp_path / "x.pt")])
    assert refused.exit_code != 0 and "2048 bins" in refused.output and "Traceback" not in refused.output
    empty = CliRunner().invoke(
        main, ["add-memory", str(on_grid), url, str(tmp_path / "x.pt"), "--split", "val"]
    )
    assert empty.exit_code != 0 and "holds no read phase of the val split" in empty.output
    assert not (tmp_path / "x.pt").exists()
    # A checkpoint whose training store is readable takes only that store's bank (it took any bank before).
    import zarr

    trained_on = tmp_path / "train.zarr"
    zarr.open_group(str(trained_on), mode="w").attrs.update(
        {"format": "xrdsynth.mixtures", "format_version": 1, "bank_fingerprint": "another-bank"}
    )
    state = load_checkpoint(on_grid)
    state["data"] = {**state["data"], "train_store": str(trained_on)}
    save_checkpoint(tmp_path / "s.pt", state)
    other = CliRunner().invoke(main, ["add-memory", str(tmp_path / "s.pt"), url, str(tmp_path / "x.pt")])
    assert other.exit_code != 0 and "is not the bank the mixtures were written from" in other.output


def test_remote_banks_and_stores_are_read_with_storage_options(
    tmp_path, bank, s3_endpoint, capsys, caplog
) -> None:
    """`predict --library`, `score-measured --library`, `add-memory`, `evaluate --store` and `python -m
    xrdmodels.checkpoint add-label-prior` read a bank and a mixture store on S3 (moto on loopback) with --storage-option and answer what they answer for the local copies;
    the options apply only to remote URLs (the local runs of add-memory and evaluate are given them too), and the
    credentials are printed, logged and written nowhere."""
    s3fs = pytest.importorskip("s3fs")
    caplog.set_level(logging.DEBUG, logger="xrdmodels")
    url, phases = bank
    secret = "s3cr3t-k3y"
    options = {"key": "testing", "secret": secret, "client_kwargs": {"endpoint_url": s3_endpoint}}
    fs = s3fs.S3FileSystem(**options)
    fs.mkdir("xrdmodels-bucket")
    fs.put(url, "xrdmodels-bucket/bank.zarr", recursive=True)
    remote_bank = "s3://xrdmodels-bucket/bank.zarr"
    store = str(tmp_path / "test.zarr")
    write_store(store, StoreSpec(n_samples=40, n_bins=256, shard_size=40, chunk_rows=40), seed=3)
    fs.put(store, "xrdmodels-bucket/test.zarr", recursive=True)
    args = ["--storage-option", f"endpoint_url={s3_endpoint}", "--storage-option", "key=testing"]
    args += ["--storage-option", f"secret={secret}"]
    ckpt = make_checkpoint(tmp_path / "m.pt", wavelength_angstrom=BANK_WAVELENGTH, n_bins=GRID["n_bins"])
    scan = _write_xy(tmp_path / "scan.xy", measure([phases[5]], [1.0], seed=9))
    printed = []

    def run(*argv: str) -> str:
        result = CliRunner().invoke(main, list(argv))
        assert result.exit_code == 0, result.output
        printed.append(result.output)
        return result.stdout

    def library_answer(bank_url: str, *extra: str) -> tuple[list, list]:
        out = json.loads(
            run(
                "predict",
                str(ckpt),
                str(scan),
                "--wavelength",
                "CuKa",
                "--json",
                "--library",
                bank_url,
                *extra,
            )
        )
        found = out["predictions"][0]
        return found["library"]["ranked"], found["combined"]

    assert library_answer(remote_bank, *args) == library_answer(url)
    assert library_answer(url, *args) == library_answer(url)  # a local path ignores the options

    labels = tmp_path / "labels.csv"
    labels.write_text(
        f"set,file,spacegroups,wavelength_angstrom\nsynthetic,scan.xy,{phases[5]['group']},1.54184\n"
    )
    scored = {}
    for name, bank_url, extra in (("remote", remote_bank, args), ("local", url, [])):
        out = tmp_path / f"scores-{name}"
        run(
            "score-measured",
            str(ckpt),
            "--labels",
            str(labels),
            "--out",
            str(out),
            "--library",
            bank_url,
            *extra,
        )
        scored[name] = json.loads((out / "measured.json").read_text())["library_summary"]
    assert scored["remote"] == scored["local"]

    remembered = {}
    for name, bank_url, extra in (("remote", remote_bank, args), ("local", url, args)):
        run("add-memory", str(ckpt), bank_url, str(tmp_path / f"{name}.pt"), *extra)
        remembered[name] = load_checkpoint(tmp_path / f"{name}.pt")["phase_memory"]
    remote_memory, local_memory = remembered["remote"], remembered["local"]
    assert remote_memory["source"] == remote_bank and local_memory["source"] == url
    assert remote_memory["phase_ids"] == local_memory["phase_ids"] and len(local_memory["phase_ids"]) == len(
        phases
    )
    for key in ("spacegroups", "profiles"):
        np.testing.assert_array_equal(remote_memory[key].numpy(), local_memory[key].numpy())

    small = make_checkpoint(tmp_path / "small.pt", n_bins=256)
    tables = {}
    for name, store_url, extra in (
        ("remote", "s3://xrdmodels-bucket/test.zarr", args),
        ("local", store, args),
    ):
        run(
            "evaluate",
            str(small),
            "--store",
            f"test={store_url}",
            "--out",
            str(tmp_path / f"e-{name}"),
            *extra,
        )
        rows = json.loads((tmp_path / f"e-{name}" / "results.json").read_text())["results"]
        tables[name] = [{k: v for k, v in r.items() if k != "checkpoint"} for r in rows]
    assert tables["remote"] == tables["local"]

    priors = {}
    for name, store_url in (("remote", "s3://xrdmodels-bucket/test.zarr"), ("local", store)):
        checkpoint_main(["add-label-prior", str(small), store_url, str(tmp_path / f"p-{name}.pt"), *args])
        priors[name] = load_checkpoint(tmp_path / f"p-{name}.pt")["data"]["label_prior"]
    assert priors["remote"] == priors["local"] and len(priors["local"]) == 230
    printed.append("".join(capsys.readouterr()))

    assert secret not in "".join(printed), "a credential was printed"
    assert secret not in caplog.text, "a credential was logged"
    for path in tmp_path.rglob("*"):
        if path.is_file():
            assert secret.encode() not in path.read_bytes(), f"a credential was written to {path}"
    for pair in ("s3cr3t-bare", "=s3cr3t-bare"):  # a mistyped pair may be a secret: refused, not echoed
        unreadable = CliRunner().invoke(
            main, ["add-memory", str(ckpt), remote_bank, str(tmp_path / "x.pt"), "--storage-option", pair]
        )
        assert unreadable.exit_code != 0 and "must look like KEY=VALUE" in unreadable.output
        assert "s3cr3t-bare" not in unreadable.output


class _FixedPresenceModel(torch.nn.Module):
    """A presence model whose probabilities are `probability` (230,) whatever the input."""

    def __init__(self, probability: np.ndarray) -> None:
        super().__init__()
        self.config = SimpleNamespace(head="presence", encoder="cnn")
        self.probability = torch.tensor(probability, dtype=torch.float32)

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> ModelOutput:
        return ModelOutput(set_probs=self.probability.expand(x.shape[0], -1))


def test_the_combined_set_names_the_librarys_match_at_the_models_size(tmp_path, bank, monkeypatch) -> None:
    """A model sure of group 11 alone (a set of one) and a library whose near-perfect match is another group: the
    combined set is that match, where the model's set is {11}; under a threshold no group reaches, both are
    empty (the combined set takes the model's size, even 0)."""
    import xrdmodels.predict as predict_module

    url, phases = bank
    match = phases[5]["group"]
    assert match != 11
    probability = np.linspace(0.01, 0.02, 230)
    probability[10] = 0.9
    state = {
        "model_config": {**GRID},
        "data": {"wavelength_angstrom": BANK_WAVELENGTH},
        "val_metrics": {"best_threshold": 0.5},
        "step": 1,
    }
    monkeypatch.setattr(
        predict_module,
        "load_model",
        lambda checkpoint, device="cpu": (_FixedPresenceModel(probability), state),
    )
    ckpt = tmp_path / "fixed.pt"
    ckpt.write_bytes(b"not read: load_model is replaced")
    scan = _write_xy(tmp_path / "scan.xy", measure([phases[5]], [1.0], seed=9))

    def predicted(*args: str) -> dict:
        # No neighbour search: the fixed model has no features to compare.
        command = ["predict", str(ckpt), str(scan), "--wavelength", "CuKa", "--json", "--library", url]
        result = CliRunner().invoke(main, [*command, "--no-library-neighbours", *args])
        assert result.exit_code == 0, result.output
        return json.loads(result.stdout)["predictions"][0]

    default = predicted()
    assert default["predicted_set"] == [11]
    assert default["combined"][0]["spacegroup"] == match
    assert default["combined_set"] == [match]
    nothing = predicted("--threshold", "0.99")
    assert nothing["predicted_set"] == [] and nothing["combined_set"] == []
