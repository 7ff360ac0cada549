"""xrdsynth.diffraction against its reference, pymatgen 2026.10.24 XRDCalculator itself.

Tolerances, for every compared pattern:
- same number of peaks;
- 2-theta within 1e-6 deg and d-spacings within 1e-9 relative (in practice bit-identical: |g|, arcsin and
  the merge keys are computed with the very same float operations);
- intensities within 1e-6 *relative to each peak* (not to the maximum). Per-peak is the strict choice and it
  holds for the tiny peaks too: every kept peak exceeds 1e-5 of the maximum (SCALED_INTENSITY_TOL), and the
  two codes differ only by rounding in the phase sums (~1e-13 of the largest |F|**2), so even the smallest
  kept peak agrees to ~1e-8.
Any structure that differs beyond this must be listed in KNOWN_MISMATCHES with its explanation; an
unlisted mismatch fails, and so does a listed one that no longer differs.

Each peak's reflections (directions and intensity shares) are checked against pymatgen's hkl families and
multiplicities, against the crystal's symmetry operations, and against a brute-force numpy |F|**2.
"""

from __future__ import annotations

import csv
import math
import pickle
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import NamedTuple

import numpy as np
import pytest
from pymatgen.analysis.diffraction.core import AbstractDiffractionPatternCalculator, get_unique_families
from pymatgen.analysis.diffraction.xrd import ATOMIC_SCATTERING_PARAMS, WAVELENGTHS, XRDCalculator
from pymatgen.core import DummySpecies, Lattice, Structure
from pymatgen.io.cif import CifParser
from pymatgen.symmetry.analyzer import SpacegroupAnalyzer

from xrdsynth import _peak_kernels
from xrdsynth.diffraction import (
    Peaks,
    ScatteringError,
    busing_levy_frame,
    compute_peaks,
    compute_peaks_arrays,
    structure_to_arrays,
)

REPO = Path(__file__).resolve().parents[2]
STRUCTURES = REPO.parent / "shared" / "data" / "structures"
CIF_SOURCES = ("bgmn", "iucr", "xrd_autoanalyzer", "robocrys", "aflow")
CSV_SETS = ("perov5/test.csv", "perov5/val.csv", "carbon24/test.csv", "carbon24/val.csv")
CSV_SUBSET_STRIDE = 40  # every 40th row of each CSV: ~290 structures in the default run

POSITION_TOL_DEG = 1e-6
D_SPACING_RTOL = 1e-9
INTENSITY_RTOL = 1e-6

# "<source>/<id>" (or "<csv>#<row>", "pyxtal/<sg>") -> why pymatgen and xrdsynth legitimately differ.
# Empty: no structure of any set differs beyond the tolerances above.
KNOWN_MISMATCHES: dict[str, str] = {}


def _require_structures() -> None:
    if not STRUCTURES.is_dir():
        pytest.skip(f"shared structure collection not found at {STRUCTURES}")


def _load_cif(path: Path) -> Structure:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return CifParser(path).parse_structures(primitive=False)[0]


def _cif_paths(source: str) -> list[Path]:
    return sorted((STRUCTURES / source).glob("*.cif"))


def _csv_structures(name: str, stride: int) -> Iterator[tuple[str, Structure]]:
    csv.field_size_limit(1 << 30)
    with open(STRUCTURES / name, newline="") as handle:
        for row_index, row in enumerate(csv.DictReader(handle)):
            if row_index % stride == 0:
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    structure = Structure.from_str(row["cif"], fmt="cif")
                yield f"{name}#{row_index}", structure


class _Pattern(NamedTuple):
    """pymatgen's pattern: positions, d-spacings, intensities and each peak's {hkl family: multiplicity}."""

    two_theta_deg: np.ndarray
    d_spacing_angstrom: np.ndarray
    intensity: np.ndarray
    families: list[dict[tuple[int, ...], int]]


def _reference(
    structure: Structure,
    wavelength: str | float = "CuKa",
    two_theta_range: tuple[float, float] | None = (5.0, 120.0),
    debye_waller_factors: dict[str, float] | None = None,
) -> _Pattern:
    calculator = XRDCalculator(wavelength=wavelength, debye_waller_factors=debye_waller_factors)
    pattern = calculator.get_pattern(structure, scaled=True, two_theta_range=two_theta_range)
    return _Pattern(
        two_theta_deg=np.asarray(pattern.x, dtype=float),
        d_spacing_angstrom=np.asarray(pattern.d_hkls, dtype=float),
        intensity=np.asarray(pattern.y, dtype=float),
        families=[{tuple(f["hkl"]): f["multiplicity"] for f in peak} for peak in pattern.hkls],
    )


def _mismatch(ours: Peaks, ref: Peaks | _Pattern) -> str | None:
    """Describe how ``ours`` differs from ``ref`` beyond the tolerances, or None."""
    if ours.two_theta_deg.shape != ref.two_theta_deg.shape:
        return f"{len(ours.two_theta_deg)} peaks, pymatgen {len(ref.two_theta_deg)}"
    if ours.two_theta_deg.size == 0:
        return None
    position_err = np.abs(ours.two_theta_deg - ref.two_theta_deg).max()
    if position_err > POSITION_TOL_DEG:
        return f"2-theta differs by up to {position_err:.3g} deg"
    d_err = (np.abs(ours.d_spacing_angstrom - ref.d_spacing_angstrom) / ref.d_spacing_angstrom).max()
    if d_err > D_SPACING_RTOL:
        return f"d-spacing differs by up to {d_err:.3g} relative"
    intensity_err = (np.abs(ours.intensity - ref.intensity) / ref.intensity).max()
    if intensity_err > INTENSITY_RTOL:
        return f"intensity differs by up to {intensity_err:.3g} relative"
    return None


def _check_all(
    cases: Iterator[tuple[str, Structure]],
    wavelength: str | float = "CuKa",
    two_theta_range: tuple[float, float] | None = (5.0, 120.0),
) -> int:
    """Compare every case; fail on unexplained mismatches and on stale KNOWN_MISMATCHES entries."""
    wavelength_angstrom = WAVELENGTHS[wavelength] if isinstance(wavelength, str) else wavelength
    unexplained: dict[str, str] = {}
    stale: list[str] = []
    n_cases = 0
    for case_id, structure in cases:
        n_cases += 1
        ours = compute_peaks(structure, wavelength_angstrom, two_theta_range)
        problem = _mismatch(ours, _reference(structure, wavelength, two_theta_range))
        if problem is not None and case_id not in KNOWN_MISMATCHES:
            unexplained[case_id] = problem
        elif problem is None and case_id in KNOWN_MISMATCHES:
            stale.append(case_id)
    assert not unexplained, f"{len(unexplained)}/{n_cases} structures differ from pymatgen: {unexplained}"
    assert not stale, f"KNOWN_MISMATCHES entries that now agree (remove them): {stale}"
    return n_cases


def _cif_cases(source: str, stride: int = 1) -> Iterator[tuple[str, Structure]]:
    for path in _cif_paths(source)[::stride]:
        yield f"{source}/{path.stem}", _load_cif(path)


# (a) every curated CIF: ~1,219 structures, ~3 minutes on one core (pymatgen's own time dominates). BGMN's 887
# run as 4 interleaved parts, so that the suite's two workers share them.
CIF_PARTS = {"bgmn": 4}


@pytest.mark.parametrize(
    ("source", "part"),
    [(source, part) for source in CIF_SOURCES for part in range(CIF_PARTS.get(source, 1))],
)
def test_every_shared_cif_matches_pymatgen(source: str, part: int) -> None:
    _require_structures()
    paths = _cif_paths(source)[part :: CIF_PARTS.get(source, 1)]
    n_cases = _check_all((f"{source}/{path.stem}", _load_cif(path)) for path in paths)
    assert n_cases == len(paths) > 0


# (b) CDVAE CSV sets: every 40th row of each, and every row of three of them (~7.8k structures; slow). perov5's
# val split, 3,786 more five-atom perovskites from the same generator as its test split, is left to the subset:
# its full comparison cost 75 s of the suite's ~11 minutes on this 2-core machine.
CSV_FULL_SETS = ("perov5/test.csv", "carbon24/test.csv", "carbon24/val.csv")


@pytest.mark.parametrize("csv_name", CSV_SETS)
def test_csv_subset_matches_pymatgen(csv_name: str) -> None:
    _require_structures()
    assert _check_all(_csv_structures(csv_name, CSV_SUBSET_STRIDE)) > 40


@pytest.mark.slow
@pytest.mark.parametrize("csv_name", CSV_FULL_SETS)
def test_full_csv_sets_match_pymatgen(csv_name: str) -> None:
    _require_structures()
    assert _check_all(_csv_structures(csv_name, 1)) > 2000


# (c) one seeded random crystal for each of the 230 space groups.
def _pyxtal_crystal(space_group: int) -> Structure:
    """Small random crystal of ``space_group``; falls back to other compositions when pyxtal fails."""
    from pyxtal import pyxtal
    from pyxtal.symmetry import Group

    multiplicities = sorted({wp.multiplicity for wp in Group(space_group).Wyckoff_positions})
    attempts = [
        (["Mg", "O"], [multiplicities[0], multiplicities[min(1, len(multiplicities) - 1)]]),
        (["Si"], [multiplicities[0]]),
        (["C"], [multiplicities[-1]]),
    ]
    for attempt, (species, counts) in enumerate(attempts):
        crystal = pyxtal()
        try:
            crystal.from_random(3, space_group, species, counts, random_state=10 * space_group + attempt)
        except Exception:  # pyxtal signals "could not place atoms" with several exception types
            continue
        if crystal.valid:
            return crystal.to_pymatgen()
    raise AssertionError(f"pyxtal could not generate space group {space_group} with any of {attempts}")


def test_random_crystal_of_every_space_group_matches_pymatgen() -> None:
    pytest.importorskip("pyxtal")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        cases = [(f"pyxtal/{sg}", _pyxtal_crystal(sg)) for sg in range(1, 231)]
    assert _check_all(iter(cases)) == 230


# (d) other wavelengths and ranges, including max |g| < 1/Å (pymatgen's neighbour search then
# switches to a radius-1 search plus a distance filter) and the whole limiting sphere (range None).
# MoKa's sphere holds ~9x the reflections of CuKa's (pymatgen then needs ~0.3 s per structure), hence a
# sparser sample there.
@pytest.mark.parametrize(
    ("wavelength", "two_theta_range", "stride"),
    [("MoKa", (5.0, 120.0), 60), ("CuKa", (20.0, 60.0), 25), ("CrKa", (10.0, 80.0), 25), ("CuKa", None, 40)],
)
def test_other_wavelengths_and_ranges_match_pymatgen(
    wavelength: str, two_theta_range: tuple[float, float] | None, stride: int
) -> None:
    _require_structures()
    cases = (case for source in CIF_SOURCES for case in _cif_cases(source, stride=stride))
    assert _check_all(cases, wavelength=wavelength, two_theta_range=two_theta_range) > 15


def test_float_wavelength_matches_pymatgen() -> None:
    structure = Structure(Lattice.cubic(5.64), ["Na", "Cl"], [[0, 0, 0], [0.5, 0.5, 0.5]])
    ours = compute_peaks(structure, wavelength_angstrom=1.2, two_theta_range_deg=(3.0, 170.0))
    assert _mismatch(ours, _reference(structure, wavelength=1.2, two_theta_range=(3.0, 170.0))) is None


def _sample_structure() -> Structure:
    """A low-symmetry disordered structure from the shared set, or a built-in one when it is absent."""
    path = STRUCTURES / "bgmn"
    disordered = sorted(path.glob("*.cif"))[:200] if path.is_dir() else []
    for candidate in disordered:
        structure = _load_cif(candidate)
        if not structure.is_ordered and len(structure) < 60:
            return structure
    return Structure(
        Lattice.monoclinic(5.1, 6.3, 7.2, 101.0),
        [{"Fe": 0.6, "Mg": 0.4}, "O", "Si", "O"],
        [[0.1, 0.2, 0.3], [0.4, 0.15, 0.8], [0.7, 0.6, 0.05], [0.25, 0.9, 0.55]],
    )


def test_half_sphere_points_are_pymatgens_reciprocal_points() -> None:
    """Same hkl set and bit-identical |g| as Lattice.get_points_in_sphere, for r above and below 1/Å."""
    structure = _sample_structure()
    recip = structure.lattice.reciprocal_lattice_crystallographic
    bound = (np.floor(2.5 * np.linalg.norm(structure.lattice.matrix, axis=1)) + 1).astype(np.int64)
    for max_r, min_r in [(1.1234, 0.0567), (0.7, 0.0), (0.999999, 0.3), (2.4, 0.0)]:
        points = recip.get_points_in_sphere([[0, 0, 0]], [0, 0, 0], max_r)
        expected = {}
        for frac, dist, *_ in points:
            h, k, ell = (int(v) for v in np.round(frac))
            if (h, k, ell) > (0, 0, 0) and (not min_r or dist >= min_r):
                expected[(h, k, ell)] = dist
        hkl, g = _peak_kernels.half_sphere_points(np.array(recip.matrix), bound, max_r, min_r)
        ours = {tuple(int(v) for v in row): gm for row, gm in zip(hkl, g, strict=True)}
        assert ours.keys() == expected.keys()
        assert all(ours[key] == expected[key] for key in ours)  # bit-identical, not approximately equal


def test_oxidation_states_use_the_element_factors_like_pymatgen() -> None:
    structure = Structure(
        Lattice.hexagonal(5.03, 13.75),
        ["Fe", "Fe", "O", "O", "O"],
        [[0, 0, 0.355], [0, 0, 0.645], [0.306, 0, 0.25], [0, 0.306, 0.25], [0.694, 0.694, 0.25]],
    )
    charged = structure.copy()
    charged.add_oxidation_state_by_element({"Fe": 3, "O": -2})
    ours = compute_peaks(charged)
    assert _mismatch(ours, _reference(charged)) is None
    assert _mismatch(ours, compute_peaks(structure)) is None


def test_debye_waller_factors_match_pymatgen() -> None:
    structure = _sample_structure()
    elements = sorted({el.symbol for el in structure.composition.elements})
    factors = {symbol: 0.3 + 0.4 * i for i, symbol in enumerate(elements)}
    ours = compute_peaks(structure, debye_waller_factors=factors)
    assert _mismatch(ours, _reference(structure, debye_waller_factors=factors)) is None
    assert _mismatch(ours, compute_peaks(structure)) is not None  # the factors really changed something


def test_anisotropic_displacement_site_properties_match_pymatgen() -> None:
    structure = _sample_structure().copy()
    rng = np.random.default_rng(7)
    n_sites = len(structure)
    diagonal = rng.uniform(0.005, 0.03, size=(n_sites, 3))
    off_diagonal = rng.uniform(-0.002, 0.002, size=(n_sites, 3))
    for column, name in enumerate(("U11_cif", "U22_cif", "U33_cif")):
        structure.add_site_property(name, diagonal[:, column].tolist())
    for column, name in enumerate(("U23_cif", "U13_cif", "U12_cif")):
        structure.add_site_property(name, off_diagonal[:, column].tolist())
    assert _mismatch(compute_peaks(structure), _reference(structure)) is None
    with pytest.raises(ValueError, match="debye_waller_factors"):
        compute_peaks(structure, debye_waller_factors={"O": 0.5})


def test_arrays_survive_pickling() -> None:
    arrays = structure_to_arrays(_sample_structure())
    restored = pickle.loads(pickle.dumps(arrays))
    first, second = compute_peaks_arrays(arrays), compute_peaks_arrays(restored)
    for field in Peaks.__dataclass_fields__:
        np.testing.assert_array_equal(getattr(first, field), getattr(second, field))


def test_peaks_are_ascending_and_scaled() -> None:
    peaks = compute_peaks(_sample_structure())
    assert peaks.two_theta_deg.dtype == np.float64
    assert np.all(np.diff(peaks.two_theta_deg) > 0)
    assert peaks.intensity.max() == pytest.approx(100.0, rel=1e-15)
    assert 5.0 <= peaks.two_theta_deg.min() and peaks.two_theta_deg.max() <= 120.0


def test_unknown_species_raises_scattering_error_naming_it() -> None:
    structure = Structure(Lattice.cubic(4.0), ["Na", DummySpecies("Xx")], [[0, 0, 0], [0.5, 0.5, 0.5]])
    with pytest.raises(ScatteringError, match="Xx"):
        compute_peaks(structure)
    with pytest.raises(ValueError, match="Xx"):  # pymatgen refuses it too
        XRDCalculator().get_pattern(structure)


def test_range_without_reflections_gives_empty_peaks() -> None:
    """Deliberate difference: pymatgen fails on max() of no peaks, xrdsynth returns empty arrays."""
    structure = Structure(Lattice.cubic(3.0), ["Cu"], [[0, 0, 0]])
    peaks = compute_peaks(structure, two_theta_range_deg=(5.0, 20.0))
    assert peaks.two_theta_deg.size == peaks.d_spacing_angstrom.size == peaks.intensity.size == 0
    np.testing.assert_array_equal(peaks.reflection_offsets, [0])
    assert peaks.reflection_direction.shape == (0, 3) and peaks.reflection_weight.shape == (0,)
    with pytest.raises(ValueError):
        XRDCalculator().get_pattern(structure, two_theta_range=(5.0, 20.0))


# ----------------------------------------------------------------------------------- reflections of a peak

# Real crystals of three systems from the shared collection: CaF2, ZnO (4-index hkl in pymatgen) and ZrO2.
FAMILY_CIFS = (
    "bgmn/Minerals__Fluorite.cif",
    "bgmn/Minerals__Zincite.cif",
    "bgmn/Alumina-Titania-Zirconia-Yttria__ZrO2-m.cif",
)


def _busing_levy_b(lattice: Lattice) -> np.ndarray:
    """Busing & Levy (1967) B from the cell parameters: its columns are a*, b*, c* (1/Å, no 2 pi) in the frame
    with x along a*, y in the a*-b* plane, z along c. Written out here, independently of busing_levy_frame."""
    recip = lattice.reciprocal_lattice_crystallographic
    a_star, b_star, c_star = recip.abc
    alpha_star, beta_star, gamma_star = np.radians(recip.angles)
    alpha = math.radians(lattice.angles[0])
    return np.array(
        [
            [a_star, b_star * math.cos(gamma_star), c_star * math.cos(beta_star)],
            [0.0, b_star * math.sin(gamma_star), -c_star * math.sin(beta_star) * math.cos(alpha)],
            [0.0, 0.0, 1.0 / lattice.c],
        ]
    )


def _reflection_hkl(lattice: Lattice, peaks: Peaks) -> np.ndarray:
    """(R, 3) Miller indices of the listed reflections, read back from each direction and its peak's |g| = 1/d.

    Fails unless every direction is that of a reciprocal lattice vector h a* + k b* + l c* in the
    Busing-Levy frame (integer hkl, and the unit vector of B hkl).
    """
    b_matrix = _busing_levy_b(lattice)
    direction = peaks.reflection_direction.astype(np.float64)
    g = np.repeat(1.0 / peaks.d_spacing_angstrom, np.diff(peaks.reflection_offsets))
    hkl_float = np.linalg.solve(b_matrix, (direction * g[:, None]).T).T
    hkl = np.round(hkl_float).astype(np.int64)
    assert np.abs(hkl_float - hkl).max() < 1e-3
    g_vec = hkl @ b_matrix.T
    np.testing.assert_allclose(g_vec / np.linalg.norm(g_vec, axis=1, keepdims=True), direction, atol=1e-6)
    return hkl


def _peak_members(peaks: Peaks, p: int) -> slice:
    return slice(int(peaks.reflection_offsets[p]), int(peaks.reflection_offsets[p + 1]))


def _friedel_rep(hkl: np.ndarray) -> tuple[int, int, int]:
    """The member of {hkl, -hkl} that is lexicographically positive (the one the half-sphere lists)."""
    t = tuple(int(v) for v in hkl)
    return t if t > (0, 0, 0) else tuple(-v for v in t)


def test_peaks_list_their_reflections_consistently() -> None:
    peaks = compute_peaks(_sample_structure())
    n_peaks = peaks.intensity.size
    assert peaks.reflection_offsets.dtype == np.int64 and peaks.reflection_offsets.shape == (n_peaks + 1,)
    assert peaks.reflection_offsets[0] == 0 and np.all(np.diff(peaks.reflection_offsets) >= 1)
    n_reflections = int(peaks.reflection_offsets[-1])
    assert peaks.reflection_direction.dtype == np.float32
    assert peaks.reflection_direction.shape == (n_reflections, 3)
    assert peaks.reflection_weight.dtype == np.float32 and peaks.reflection_weight.shape == (n_reflections,)
    np.testing.assert_allclose(np.linalg.norm(peaks.reflection_direction, axis=1), 1.0, atol=1e-6)
    assert np.all(peaks.reflection_weight > 0)
    per_peak = np.add.reduceat(peaks.reflection_weight.astype(np.float64), peaks.reflection_offsets[:-1])
    np.testing.assert_allclose(per_peak, 1.0, atol=1e-6)


def test_busing_levy_frame_depends_on_the_cell_parameters_only() -> None:
    """The same cell turned in space gives the same frame: directions are fixed to the crystal."""
    lattice = Lattice.from_parameters(5.1, 6.3, 7.2, 84.0, 101.0, 95.0)
    turn = np.array(
        [[math.cos(0.7), -math.sin(0.7), 0.0], [math.sin(0.7), math.cos(0.7), 0.0], [0.0, 0.0, 1.0]]
    ) @ np.array([[1.0, 0.0, 0.0], [0.0, math.cos(1.1), -math.sin(1.1)], [0.0, math.sin(1.1), math.cos(1.1)]])
    turned = lattice.matrix @ turn.T
    expected = _busing_levy_b(lattice).T  # rows a*, b*, c*
    np.testing.assert_allclose(busing_levy_frame(lattice.matrix), expected, atol=1e-12)
    np.testing.assert_allclose(busing_levy_frame(turned), expected, atol=1e-12)
    structure = Structure(lattice, ["Na", "Cl"], [[0.1, 0.2, 0.3], [0.6, 0.55, 0.8]])
    moved = Structure(Lattice(turned), ["Na", "Cl"], [[0.1, 0.2, 0.3], [0.6, 0.55, 0.8]])
    first, second = compute_peaks(structure), compute_peaks(moved)
    np.testing.assert_array_equal(first.reflection_offsets, second.reflection_offsets)
    np.testing.assert_allclose(first.reflection_direction, second.reflection_direction, atol=1e-6)


@pytest.mark.parametrize("name", FAMILY_CIFS)
def test_reflections_are_pymatgens_hkl_families(name: str) -> None:
    """Per peak: 2 x (reflections) = the sum of pymatgen's multiplicities, and the reflections (with their
    Friedel mates) group into exactly pymatgen's families."""
    _require_structures()
    structure = _load_cif(STRUCTURES / name)
    ours = compute_peaks(structure)
    reference = _reference(structure)
    assert _mismatch(ours, reference) is None
    hkl = _reflection_hkl(structure.lattice, ours)
    is_hex = structure.lattice.is_hexagonal()
    assert is_hex == name.endswith("Zincite.cif")
    n_multi = 0
    for p, expected in enumerate(reference.families):
        members = [tuple(int(v) for v in row) for row in hkl[_peak_members(ours, p)]]
        assert 2 * len(members) == sum(expected.values()), f"peak {p} at {ours.two_theta_deg[p]:.4f} deg"
        with_mates = [m for h in members for m in (h, tuple(-v for v in h))]
        if is_hex:
            with_mates = [(h, k, -h - k, ell) for h, k, ell in with_mates]
        assert get_unique_families(with_mates) == expected, f"peak {p} at {ours.two_theta_deg[p]:.4f} deg"
        n_multi += len(members) > 1
    assert n_multi > 5  # the structures do have peaks of several reflections


@pytest.mark.parametrize("name", FAMILY_CIFS)
def test_symmetry_equivalent_reflections_share_their_peak_and_weight(name: str) -> None:
    """|F(h W)| = |F(h)| for every rotation W of the space group: its images of a peak's reflections are in
    the same peak (up to Friedel) and carry the same share of its intensity."""
    _require_structures()
    structure = _load_cif(STRUCTURES / name)
    peaks = compute_peaks(structure)
    hkl = _reflection_hkl(structure.lattice, peaks)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # spglib's notice about its error handling
        operations = SpacegroupAnalyzer(structure).get_symmetry_operations(cartesian=False)
    rotations = {tuple(np.round(op.rotation_matrix).astype(np.int64).ravel()) for op in operations}
    assert len(rotations) > 2
    for p in range(peaks.intensity.size):
        members = _peak_members(peaks, p)
        weight = dict(
            zip(
                (_friedel_rep(h) for h in hkl[members]),
                peaks.reflection_weight[members].astype(np.float64),
                strict=True,
            )
        )
        for rotation in rotations:
            images = hkl[members] @ np.array(rotation).reshape(3, 3)
            for original, image in zip(hkl[members], images, strict=True):
                key = _friedel_rep(image)
                assert key in weight, f"{tuple(image)} (image of {tuple(original)}) missing from peak {p}"
                assert weight[key] == pytest.approx(weight[_friedel_rep(original)], rel=1e-5)


def test_reflection_weights_reproduce_brute_force_intensities() -> None:
    """weight x peak intensity = that reflection's 2 |F|**2 LP (with Debye-Waller factors), from plain numpy.

    A cubic cell with atoms at general positions: reflections of equal h**2 + k**2 + l**2 share a peak with
    different |F|**2, so the shares are far from equal.
    """
    structure = Structure(
        Lattice.cubic(4.7),
        ["Fe", "O", "Si", "O"],
        [[0.1, 0.2, 0.3], [0.6, 0.15, 0.8], [0.35, 0.7, 0.55], [0.85, 0.45, 0.05]],
    )
    b_factors = {"Fe": 0.5, "O": 1.2, "Si": 0.7}
    wavelength = WAVELENGTHS["CuKa"]
    two_theta_range = (5.0, 120.0)
    peaks = compute_peaks(structure, wavelength, two_theta_range, debye_waller_factors=b_factors)

    # Every (h, k, l) of the Friedel half-space in the shell, by brute force.
    min_r, max_r = (2 * math.sin(math.radians(t / 2)) / wavelength for t in two_theta_range)
    n = int(max_r * 4.7) + 1
    grid = np.stack(np.meshgrid(*[np.arange(-n, n + 1)] * 3, indexing="ij"), axis=-1).reshape(-1, 3)
    half = (
        (grid[:, 0] > 0)
        | ((grid[:, 0] == 0) & (grid[:, 1] > 0))
        | ((grid[:, :2] == 0).all(1) & (grid[:, 2] > 0))
    )
    g = np.linalg.norm(grid @ structure.lattice.reciprocal_lattice_crystallographic.matrix, axis=1)
    inside = half & (g >= min_r) & (g <= max_r)
    grid, g = grid[inside], g[inside]
    s2 = (g / 2) ** 2
    structure_factor = np.zeros(len(g), dtype=complex)
    for site in structure:
        symbol = site.specie.symbol
        coeffs = np.array(ATOMIC_SCATTERING_PARAMS[symbol])
        f = site.specie.Z - 41.78214 * s2 * (coeffs[:, 0] * np.exp(-coeffs[:, 1] * s2[:, None])).sum(1)
        f *= np.exp(-b_factors[symbol] * s2)
        structure_factor += f * np.exp(2j * np.pi * grid @ site.frac_coords)
    theta = np.arcsin(wavelength * g / 2)
    lorentz_polarisation = (1 + np.cos(2 * theta) ** 2) / (np.sin(theta) ** 2 * np.cos(theta))
    brute = dict(
        zip(map(tuple, grid.tolist()), 2 * np.abs(structure_factor) ** 2 * lorentz_polarisation, strict=True)
    )

    hkl = _reflection_hkl(structure.lattice, peaks)
    listed = np.array([brute[tuple(h)] for h in hkl.tolist()])
    assert len(set(map(tuple, hkl.tolist()))) == len(hkl)
    peak_sum = np.add.reduceat(listed, peaks.reflection_offsets[:-1])
    per_reflection_peak = np.repeat(peaks.intensity, np.diff(peaks.reflection_offsets))
    scaled = listed * 100 / peak_sum.max()
    weight = peaks.reflection_weight.astype(np.float64)
    np.testing.assert_allclose(weight * per_reflection_peak, scaled, rtol=2e-6, atol=1e-9 * scaled.max())
    np.testing.assert_allclose(
        weight, listed / np.repeat(peak_sum, np.diff(peaks.reflection_offsets)), rtol=2e-6
    )
    assert sum(np.ptp(weight[_peak_members(peaks, p)]) > 0.05 for p in range(peaks.intensity.size)) > 5
    # Every reflection that pymatgen's rule would keep is listed: bins of 2-theta, the SCALED_INTENSITY_TOL cut.
    bins = np.round(np.degrees(2 * theta) / AbstractDiffractionPatternCalculator.TWO_THETA_TOL).astype(
        np.int64
    )
    totals = {key: 0.0 for key in bins.tolist()}
    for key, intensity in zip(bins.tolist(), brute.values(), strict=True):
        totals[key] += intensity
    top = max(totals.values())
    tolerance = AbstractDiffractionPatternCalculator.SCALED_INTENSITY_TOL
    kept = {
        tuple(h)
        for h, key in zip(grid.tolist(), bins.tolist(), strict=True)
        if totals[key] / top * 100 > tolerance
    }
    assert kept == set(map(tuple, hkl.tolist()))
