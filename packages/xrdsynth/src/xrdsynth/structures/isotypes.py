"""Isotypes: a read structure's chemically plausible relatives by element substitution (not in the paper).

A measured mineral is often not the database entry but an isotype or solid-solution member of it: the same
structure type and space group with other elements on the sites (forsterite Mg2SiO4 / fayalite Fe2SiO4,
calcite CaCO3 / rhodochrosite MnCO3, halite NaCl / sylvite KCl). Its peaks then differ from the entry's in
position (the cell) and, reflection by reflection, in intensity (the substituted sites' form factors), in a
correlated way. The lab recipe's lattice strain and peak-intensity variation imitate each effect alone and
at random; an isotype is the physical version of both.

:func:`isotype` replaces every site of one or more elements by another element that (a) shares the
oxidation state the element plausibly has in the compound, (b) substitutes for it more often than chance
in the ICSD (pymatgen's data-mined substitution probabilities, Hautier et al., Inorg. Chem. 50, 656 (2011):
pair correlation >= ``min_pair_correlation``) and (c) has a Shannon ionic radius within ``radius_tolerance``
of it; then it scales the cell to the volume pymatgen's reference-lattice-scaling predictor gives for the new
composition (:class:`~pymatgen.analysis.structure_prediction.volume_predictor.RLSVolumePredictor`, atomic
radii). Every site of an element gets the same new element, and no new element is one the structure already
holds, so the substitution is a bijection of the species and keeps every symmetry operation: the space group
is that of the parent (the bank still checks it with spglib).
"""

from __future__ import annotations

import functools
import hashlib
import warnings

import numpy as np
from pymatgen.core import Element, Species, Structure

#: Elements an isotype may introduce: stable (Z <= 83, not Tc or Pm), not noble gases, not hydrogen (whose
#: sites many inputs omit).
_EXCLUDED = {"H", "Tc", "Pm"}


def _eligible(symbol: str) -> bool:
    element = Element(symbol)
    return element.Z <= 83 and not element.is_noble_gas and symbol not in _EXCLUDED


@functools.cache
def _substitution_table() -> object:
    from pymatgen.analysis.structure_prediction.substitution_probability import SubstitutionProbability

    return SubstitutionProbability()


@functools.cache
def substitutes(
    symbol: str, anion: bool, min_pair_correlation: float = 3.0, radius_tolerance: float = 0.25
) -> tuple[str, ...]:
    """Elements that may replace ``symbol`` on all its sites, sorted.

    ``anion``: the element is the compound's most electronegative, so only its negative common oxidation
    states count; otherwise only its positive ones. A candidate must share one such state q as a common
    oxidation state, have a pair correlation >= ``min_pair_correlation`` with ``symbol`` at q, and an ionic
    radius at q within ``radius_tolerance`` (relative) of ``symbol``'s.
    """
    table = _substitution_table()
    out: set[str] = set()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # pymatgen warns for every species without a tabulated radius
        for q in Element(symbol).common_oxidation_states:
            if (q < 0) != anion or q == 0:
                continue
            own = Species(symbol, q)
            if own not in table.species or not own.ionic_radius:
                continue
            for other in table.species:
                name = other.symbol
                if other.oxi_state != q or name == symbol or not _eligible(name):
                    continue
                if q not in Element(name).common_oxidation_states or not other.ionic_radius:
                    continue
                if abs(other.ionic_radius - own.ionic_radius) > radius_tolerance * own.ionic_radius:
                    continue
                if table.pair_corr(own, other) >= min_pair_correlation:
                    out.add(name)
    return tuple(sorted(out))


def isotype_rng(seed: int, entry_id: str, index: int) -> np.random.Generator:
    """The generator of isotype ``index`` of ``entry_id``: a hash, so independent of chunking and workers."""
    digest = hashlib.blake2b(f"{seed}\x00{entry_id}\x00isotype\x00{index}".encode(), digest_size=8).digest()
    return np.random.default_rng(int.from_bytes(digest, "little"))


def isotype(
    structure: Structure,
    rng: np.random.Generator,
    *,
    substitution_probability: float = 0.5,
    min_pair_correlation: float = 3.0,
    radius_tolerance: float = 0.25,
) -> tuple[Structure, dict[str, str]] | None:
    """One substituted relative of ``structure`` and its element mapping, or None when no element of it has
    a substitute (module docstring).

    Each element with substitutes is replaced with probability ``substitution_probability`` (at least one
    always is), by a substitute drawn uniformly; the cell keeps its shape and takes the predicted volume.
    """
    from pymatgen.analysis.structure_prediction.volume_predictor import RLSVolumePredictor

    elements = sorted({el.symbol for el in structure.composition.elements})
    # pymatgen gives NaN for elements without a Pauling electronegativity (noble gases): they rank last.
    most_electronegative = max(elements, key=lambda s: np.nan_to_num(Element(s).X, nan=0.0))
    options = {
        s: [
            t
            for t in substitutes(s, s == most_electronegative, min_pair_correlation, radius_tolerance)
            if t not in elements
        ]
        for s in elements
    }
    candidates = [s for s in elements if options[s]]
    if not candidates:
        return None
    chosen = [s for s in candidates if rng.random() < substitution_probability]
    if not chosen:
        chosen = [candidates[int(rng.integers(len(candidates)))]]
    mapping: dict[str, str] = {}
    for s in chosen:
        free = [t for t in options[s] if t not in mapping.values()]
        if free:
            mapping[s] = free[int(rng.integers(len(free)))]
    if not mapping:
        return None
    new = structure.copy()
    new.replace_species(mapping)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        volume = RLSVolumePredictor(check_isostructural=False, radii_type="atomic").predict(new, structure)
    new.scale_lattice(volume)
    return new, mapping
