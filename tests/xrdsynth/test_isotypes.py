"""Isotypes (structures/isotypes.py) and the bank's substituted relatives (BankConfig.isotypes_per_structure)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from pymatgen.core import Element, Lattice, Structure
from pymatgen.symmetry.analyzer import SpacegroupAnalyzer

from xrdsynth.bank import split_of
from xrdsynth.bank_build import build_bank
from xrdsynth.config import BankConfig
from xrdsynth.diffraction import compute_peaks
from xrdsynth.structures.isotypes import isotype, isotype_rng, substitutes


def _prototypes() -> dict[str, Structure]:
    return {
        "MgO rock salt": Structure.from_spacegroup(
            "Fm-3m", Lattice.cubic(4.21), ["Mg", "O"], [[0, 0, 0], [0.5, 0.5, 0.5]]
        ),
        "TiO2 rutile": Structure.from_spacegroup(
            "P4_2/mnm", Lattice.tetragonal(4.59, 2.96), ["Ti", "O"], [[0, 0, 0], [0.305, 0.305, 0]]
        ),
        "Al2O3 corundum": Structure.from_spacegroup(
            "R-3c", Lattice.hexagonal(4.76, 12.99), ["Al", "O"], [[0, 0, 0.352], [0.306, 0, 0.25]]
        ),
        "CaTiO3 perovskite": Structure.from_spacegroup(
            "Pm-3m", Lattice.cubic(3.84), ["Ca", "Ti", "O"], [[0.5, 0.5, 0.5], [0, 0, 0], [0.5, 0, 0]]
        ),
        "Mg2SiO4 olivine": Structure.from_spacegroup(
            "Pnma",
            Lattice.orthorhombic(10.20, 5.98, 4.76),
            ["Mg", "Mg", "Si", "O", "O", "O"],
            [
                [0, 0, 0],
                [0.277, 0.25, 0.992],
                [0.094, 0.25, 0.427],
                [0.092, 0.25, 0.766],
                [0.448, 0.25, 0.221],
                [0.163, 0.033, 0.278],
            ],
        ),
    }


def test_substitutes_follow_oxidation_state_radius_and_icsd_frequency() -> None:
    magnesium = substitutes("Mg", anion=False)
    assert {"Fe", "Mn", "Ni", "Co", "Zn"} <= set(magnesium)
    assert "Ca" not in magnesium  # Ca2+ is 33% larger than Mg2+
    assert "Pd" not in magnesium  # a rare substitute in the ICSD (pair correlation 2.7 < 3)
    assert "Sr" in substitutes("Ca", anion=False)
    assert "Ge" in substitutes("Si", anion=False)
    assert "Ga" in substitutes("Al", anion=False)
    # An element's role decides which oxidation states count: chloride Cl⁻ -> Br⁻, never the N⁵⁺ of chlorate.
    chloride = substitutes("Cl", anion=True)
    assert "Br" in chloride and "N" not in chloride
    assert substitutes("O", anion=True) == ()  # S²⁻ is 35% larger
    for symbol in ("Mg", "Fe", "Ca", "Al", "Si", "Ti"):
        for other in substitutes(symbol, anion=False):
            element = Element(other)
            assert element.Z <= 83 and not element.is_noble_gas and other not in ("H", "Tc", "Pm")
    assert set(substitutes("Mg", anion=False, min_pair_correlation=1.0)) > set(magnesium)  # looser: more


def _naive_volume_ratio(new: Structure, old: Structure) -> float:
    """Reference lattice scaling with atomic radii, written out: (Σ r n^(1/3) new / Σ r n^(1/3) old)³."""

    def length(s: Structure) -> float:
        return sum(el.atomic_radius * n ** (1 / 3) for el, n in s.composition.items())

    return (length(new) / length(old)) ** 3


@pytest.mark.parametrize("name", list(_prototypes()))
def test_isotypes_keep_the_space_group_sites_and_take_the_predicted_volume(name: str) -> None:
    parent = _prototypes()[name]
    group = SpacegroupAnalyzer(parent, symprec=0.01).get_space_group_number()
    present = {el.symbol for el in parent.composition.elements}
    seen = 0
    for k in range(6):
        made = isotype(parent, isotype_rng(0, name, k))
        if made is None:
            continue
        child, mapping = made
        seen += 1
        assert mapping and not set(mapping.values()) & present  # only new elements
        assert len(set(mapping.values())) == len(mapping)  # a bijection of the species
        for site, old in zip(child, parent, strict=True):
            assert site.specie.symbol == mapping.get(old.specie.symbol, old.specie.symbol)
            np.testing.assert_allclose(site.frac_coords, old.frac_coords)
        np.testing.assert_allclose(child.lattice.angles, parent.lattice.angles)
        np.testing.assert_allclose(
            child.volume / parent.volume, _naive_volume_ratio(child, parent), rtol=1e-9
        )
        assert SpacegroupAnalyzer(child, symprec=0.01).get_space_group_number() == group
    assert seen > 0


def test_isotypes_are_reproducible_from_the_seed_and_id() -> None:
    parent = _prototypes()["Mg2SiO4 olivine"]
    a = isotype(parent, isotype_rng(7, "olivine", 1))
    b = isotype(parent, isotype_rng(7, "olivine", 1))
    assert a is not None and b is not None
    assert a[1] == b[1] and a[0] == b[0]
    draws = {tuple(sorted(isotype(parent, isotype_rng(7, "olivine", k))[1].items())) for k in range(12)}
    assert len(draws) > 1  # different indices draw different relatives


def test_a_structure_without_substitutes_has_no_isotype() -> None:
    # Li and F: no substitute passes both the ICSD frequency and the radius rules.
    lif = Structure.from_spacegroup("Fm-3m", Lattice.cubic(4.03), ["Li", "F"], [[0, 0, 0], [0.5, 0.5, 0.5]])
    assert isotype(lif, isotype_rng(0, "LiF", 1)) is None


def _rock_salts(root: Path) -> Path:
    folder = root / "cifs"
    folder.mkdir()
    for name, a, species in (
        ("MgO", 4.21, ["Mg", "O"]),
        ("NaCl", 5.64, ["Na", "Cl"]),
        ("NaBr", 5.97, ["Na", "Br"]),
    ):
        s = Structure.from_spacegroup("Fm-3m", Lattice.cubic(a), species, [[0, 0, 0], [0.5, 0.5, 0.5]])
        s.to(filename=str(folder / f"{name}.cif"))
    return folder


def test_bank_isotypes_follow_their_parent_and_never_cross_splits(tmp_path) -> None:
    folder = _rock_salts(tmp_path)
    fractions = (0.5, 0.25, 0.25)
    # A split seed that puts NaCl and NaBr in different splits: NaCl's only relative (Cl→Br) is NaBr, a read
    # entry of another split, so it must be dropped and reported.
    seed = next(s for s in range(100) if split_of("NaCl", s, fractions) != split_of("NaBr", s, fractions))
    config = BankConfig(isotypes_per_structure=3, split_fractions=fractions, split_seed=seed)
    bank = build_bank([str(folder)], str(tmp_path / "bank.zarr"), config, workers=0)
    ids, parents = list(bank.column("id")), list(bank.column("isotype_of"))
    formula, split = bank.column("reduced_formula"), bank.column("split")
    group = bank.column("spacegroup_number")
    relatives = [i for i, p in enumerate(parents) if p]
    expected = {"MgO": {"FeO", "MnO", "NiO", "CoO", "ZnO", "CuO"}, "NaCl": {"NaI"}, "NaBr": {"NaI"}}
    for i in relatives:
        assert str(formula[i]) in expected[parents[i]]
        parent = ids.index(parents[i])
        assert split[i] == split[parent] and group[i] == 225
        assert ids[i].startswith(f"{parents[i]}~iso")
        assert f"{ids[parent]}" in bank.column("provenance")[i] and "→" in bank.column("provenance")[i]
    # The mixture recipe reads the same column (RecipeConfig.isotype_weight draws relatives by it).
    np.testing.assert_array_equal(bank.library().isotype, np.array(parents) != "")
    for name in expected:  # no relative twice
        mine = [str(formula[i]) for i in relatives if parents[i] == name]
        assert len(set(mine)) == len(mine)
    # NaCl's Cl→Br relative is NaBr and NaBr's Br→Cl relative NaCl, read entries of the other split: dropped
    # and reported, wherever the draws put them.
    crossing = {("NaCl", "NaBr"), ("NaBr", "NaCl")}
    assert not any((parents[i], str(formula[i])) in crossing for i in relatives)
    assert any(
        f"its formula {f} is a read entry's" in s.reason for s in bank.skipped for f in ("NaBr", "NaCl")
    )
    # The relative's peaks are those of the parent with the substitution and the predicted cell, replayed.
    i = next(i for i in relatives if parents[i] == "MgO")
    k = int(ids[i].split("~iso")[1])
    parent = Structure.from_file(folder / "MgO.cif")
    child, _ = isotype(parent, isotype_rng(0, "MgO", k), min_pair_correlation=3.0, radius_tolerance=0.25)
    reference = compute_peaks(child, config.wavelength_angstrom, (5.0, 120.0))
    two_theta, _, intensity = bank.peaks(i)
    np.testing.assert_array_equal(two_theta, reference.two_theta_deg)
    np.testing.assert_array_equal(intensity, reference.intensity)


def test_isotypes_are_off_by_default(tmp_path) -> None:
    bank = build_bank([str(_rock_salts(tmp_path))], str(tmp_path / "bank.zarr"), BankConfig(), workers=0)
    assert len(bank) == 3 and not any(bank.column("isotype_of"))
