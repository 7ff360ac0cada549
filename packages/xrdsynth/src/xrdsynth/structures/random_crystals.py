"""``random:N[:GROUPS]`` and ``random-ionic:N[:GROUPS]``: N pyxtal crystals per space group, each a function of
(seed, group, index) only.

``random:`` crystals are small: 1-3 species, each on one Wyckoff orbit, the smallest orbits first.
``random-ionic:`` crystals are built as inorganic compounds usually are: 1-3 cations and one anion species, the
anion spread over 1-5 orbits and each cation over 1-2, every orbit drawn from all of the group's multiplicities
(the general position as often as any), up to 96 atoms in the primitive cell, so that their structure factors
come from many independent sites. Sites, peaks and effective peaks of both, against the read structures', are
in docs/physics.md, "Random crystals".
"""

from __future__ import annotations

import functools
import warnings
from typing import TYPE_CHECKING

import numpy as np
from pymatgen.core import Structure

from .base import ACCEPTED_FORMS, Entry, ItemKind, MetadataValue, NamedSource, SourceItem, StructureError

if TYPE_CHECKING:
    from pyxtal.tolerance import Tol_matrix

# Elements drawn for random crystals: common, well-tabulated scatterers across the periodic table.
RANDOM_ELEMENTS = (
    "Li", "Na", "K", "Mg", "Ca", "Sr", "Ba", "B", "Al", "Ga", "C", "Si", "Ge", "Sn", "N", "P", "O", "S",
    "Se", "F", "Cl", "Br", "Ti", "V", "Cr", "Mn", "Fe", "Co", "Ni", "Cu", "Zn", "Zr", "Nb", "Mo", "Ag", "La",
)  # fmt: skip
# Anions of random-ionic crystals, oxygen weighted as in the oxides and oxysalts that dominate inorganic databases.
IONIC_ANIONS = ("O", "O", "O", "O", "O", "O", "S", "Se", "N", "F", "Cl", "Br")
# Cations of random-ionic crystals: the metals and metalloids of RANDOM_ELEMENTS.
IONIC_CATIONS = tuple(e for e in RANDOM_ELEMENTS if e not in set(IONIC_ANIONS) | {"C", "P", "B"})
# Random crystals are kept small (atoms per primitive cell) so that generating all 230 groups stays fast.
_RANDOM_MAX_ATOMS = 64
_IONIC_MAX_ATOMS = 96
_RANDOM_MAX_ATTEMPTS = 40
# Random crystals must show their target group even at this loose tolerance, so that any bank symprec
# up to it detects the target rather than an accidental supergroup.
_RANDOM_CHECK_SYMPREC = 0.1


def _parse_groups(text: str, source: str) -> list[int]:
    groups: set[int] = set()
    for part in text.split(","):
        part = part.strip()
        low, dash, high = part.partition("-")
        try:
            bounds = (int(low), int(high)) if dash else (int(part), int(part))
        except ValueError:
            raise ValueError(
                f"source {source!r}: bad space-group list entry {part!r}; use e.g. '1-10' or '2,14,225'"
            ) from None
        if bounds[0] > bounds[1]:
            raise ValueError(
                f"source {source!r}: the range {part!r} runs backwards; write it low-high ({bounds[1]}-{bounds[0]})"
            )
        if not 1 <= bounds[0] <= bounds[1] <= 230:
            raise ValueError(f"source {source!r}: space groups must lie in 1-230, got {part!r}")
        groups.update(range(bounds[0], bounds[1] + 1))
    return sorted(groups)


def _list_random(source: str, seed: int) -> list[SourceItem]:
    parts = source.strip().split(":")
    style = parts[0]
    if len(parts) not in (2, 3) or not parts[1].isdigit() or int(parts[1]) < 1:
        raise ValueError(
            f"source {source!r}: expected '{style}:N' or '{style}:N:GROUPS' with N >= 1; accepted: {ACCEPTED_FORMS}"
        )
    per_group = int(parts[1])
    groups = _parse_groups(parts[2], source) if len(parts) == 3 else list(range(1, 231))
    return [
        SourceItem(source, "random", f"{style}:{sg}:{k}", f"{style}:{sg}:{k}:s{seed}")
        for sg in groups
        for k in range(per_group)
    ]


# Lattice points per conventional cell by centring letter; R groups are generated on hexagonal axes.
_CENTRING_POINTS = {"P": 1, "A": 2, "B": 2, "C": 2, "I": 2, "R": 3, "F": 4}


@functools.lru_cache(maxsize=256)
def _wyckoff_multiplicities(sg: int) -> tuple[tuple[int, ...], int]:
    """(distinct Wyckoff multiplicities in the conventional cell, smallest first; lattice points per cell)."""
    from pyxtal.symmetry import Group

    group = Group(sg)
    multiplicities = tuple(sorted({int(wp.multiplicity) for wp in group.Wyckoff_positions}))
    return multiplicities, _CENTRING_POINTS[group.symbol[0]]


@functools.cache
def _pyxtal_tolerances() -> Tol_matrix:
    """pyxtal's default distance tolerances, built once per process and used by every random crystal.

    pyxtal 1.1 builds ``Tol_matrix(prototype="atomic")`` (a 119 x 119 table, ~10 ms) for every crystal that
    is not given one, and its Wyckoff ``merge`` calls ``check_images(..., tol=tol)`` without a table, so that
    ``check_images`` builds one per call and, ``tol`` being given, does not use it: half of the time of a
    random crystal. Passing the same default table, built once, to both leaves every crystal unchanged
    (tests/xrdsynth/test_structures.py compares crystals made both ways)."""
    import pyxtal.symmetry
    from pyxtal.operations import check_images
    from pyxtal.tolerance import Tol_matrix

    table = Tol_matrix(prototype="atomic")
    # Only where pyxtal still merges through this very function; another pyxtal is left as it is (slower).
    if getattr(pyxtal.symmetry, "check_images", None) is check_images:
        pyxtal.symmetry.check_images = functools.partial(check_images, tm=table)
    return table


def _one_orbit_composition(
    rng: np.random.Generator, attempt: int, multiplicities: tuple[int, ...]
) -> tuple[list[str], list[int]]:
    """1-3 species of RANDOM_ELEMENTS, each on one orbit; early attempts admit only the smallest orbits, and every
    second attempt the next larger one."""
    choices = multiplicities[: 2 + attempt // 2]
    n_species = int(rng.integers(1, 4))
    species = [str(e) for e in rng.choice(RANDOM_ELEMENTS, size=n_species, replace=False)]
    return species, [int(rng.choice(choices)) for _ in species]


def _ionic_composition(
    rng: np.random.Generator, attempt: int, multiplicities: tuple[int, ...]
) -> tuple[list[str], list[int]]:
    """1-3 cations on 1-2 orbits each and one anion on 1-5 orbits, every orbit drawn from all multiplicities
    (``attempt`` is unused: every attempt draws from the same orbits)."""
    n_cations = int(rng.integers(1, 4))
    species = [str(e) for e in rng.choice(IONIC_CATIONS, size=n_cations, replace=False)]
    species.append(str(rng.choice(IONIC_ANIONS)))
    orbits = [int(rng.integers(1, 3)) for _ in range(n_cations)] + [int(rng.integers(1, 6))]
    return species, [int(sum(rng.choice(multiplicities, size=n))) for n in orbits]


def random_structure(
    sg: int, k: int, seed: int, *, ionic: bool = False
) -> tuple[Structure, dict[str, MetadataValue]]:
    """The k-th random crystal of space group ``sg`` for ``seed``, generated with pyxtal.

    The generator is seeded from ``SeedSequence([seed, sg, k])`` only (``[seed, sg, k, 1]`` for ``ionic``), so
    the crystal does not depend on the order or process it is made in. Compositions (module docstring): by
    default 1-3 species from :data:`RANDOM_ELEMENTS`, each on one Wyckoff orbit, with at most 64 atoms in the
    primitive cell, early attempts using only the smallest orbits; with ``ionic``, 1-3 of
    :data:`IONIC_CATIONS` on 1-2 orbits each and one of :data:`IONIC_ANIONS` on 1-5, at most 96 atoms. The
    conventional cell is returned. A composition pyxtal cannot place, or a crystal whose spglib group at symprec
    0.1 Å is not ``sg`` (an accidental supergroup, common when every atom sits on a fixed special position), is
    replaced by the next draw of the same generator.
    """
    from pymatgen.symmetry.analyzer import SpacegroupAnalyzer
    from pyxtal import pyxtal

    tolerances = _pyxtal_tolerances()
    rng = np.random.default_rng(np.random.SeedSequence([seed, sg, k, 1] if ionic else [seed, sg, k]))
    multiplicities, lattice_points = _wyckoff_multiplicities(sg)
    draw, max_atoms = (
        (_ionic_composition, _IONIC_MAX_ATOMS) if ionic else (_one_orbit_composition, _RANDOM_MAX_ATOMS)
    )
    reasons: list[str] = []
    for attempt in range(_RANDOM_MAX_ATTEMPTS):
        species, counts = draw(rng, attempt, multiplicities)
        if sum(counts) > max_atoms * lattice_points:
            continue
        crystal = pyxtal()
        # pyxtal and spglib warn on every rejected placement; the reasons are kept below instead.
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            try:
                crystal.from_random(3, sg, species, counts, random_state=rng, tm=tolerances)
            except Exception as exc:  # noqa: BLE001 - pyxtal signals incompatible compositions with many types
                reasons.append(f"{species}{counts}: {type(exc).__name__}")
                continue
            if not crystal.valid:
                reasons.append(f"{species}{counts}: not valid")
                continue
            structure = crystal.to_pymatgen()
            detected = SpacegroupAnalyzer(structure, symprec=_RANDOM_CHECK_SYMPREC).get_space_group_number()
        if detected != sg:
            reasons.append(f"{species}{counts}: spglib finds {detected}")
            continue
        import pyxtal as pyxtal_module

        metadata: dict[str, MetadataValue] = {
            "generator": f"pyxtal {pyxtal_module.__version__}",
            "target_spacegroup": sg,
            "seed": seed,
            "k": k,
            "attempt": attempt + 1,
        }
        if ionic:
            metadata["style"] = "ionic"
        return structure, metadata
    raise StructureError(
        f"{'random-ionic' if ionic else 'random'}:{sg}:{k}:s{seed}",
        f"pyxtal placed no composition in {_RANDOM_MAX_ATTEMPTS} attempts ({'; '.join(reasons[-3:])})",
    )


def _load_random(item: SourceItem, seed: int, max_sites: int | None) -> Entry:
    style, sg_text, k_text = item.locator.split(":")
    if not item.entry_id.endswith(f":s{seed}"):
        raise ValueError(
            f"item {item.entry_id!r} was listed with another seed than load_entry's seed={seed}; "
            "pass the same seed to list_items and load_entry"
        )
    structure, metadata = random_structure(int(sg_text), int(k_text), seed, ionic=style == "random-ionic")
    return Entry(item.entry_id, item.source, item.locator, structure, int(sg_text), metadata, synthetic=True)


NAMED_SOURCE = NamedSource(lambda text: text.startswith(("random:", "random-ionic:")), _list_random)
ITEM_KIND = ItemKind("random", _load_random, lambda item: None)
