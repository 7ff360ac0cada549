"""Validation and description of a loaded entry: cell and site checks, the A.1 hull filter and the space group
spglib detects, as the per-entry record the bank stores."""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass

from ..config import BankConfig
from .base import Entry, StructureError

# Metadata keys that carry the energy above the convex hull in eV/atom (A.1 filters on it).
_E_ABOVE_HULL_KEYS = ("e_above_hull", "e_above_hull_ev_per_atom", "energy_above_hull")


@dataclass(frozen=True)
class EntryInfo:
    """What the bank stores per entry; lattice values are those of the cell as loaded."""

    reduced_formula: str
    spacegroup_number: int
    spacegroup_symbol: str
    crystal_system: str
    lattice_abc_angstrom: tuple[float, float, float]
    lattice_angles_deg: tuple[float, float, float]
    n_sites: int
    disordered: bool
    spacegroup_disagrees: bool
    e_above_hull_ev_per_atom: float | None = None  # from the metadata (any of its accepted names)


def _e_above_hull(entry: Entry) -> float | None:
    for key in _E_ABOVE_HULL_KEYS:
        value = entry.metadata.get(key)
        if value is None or value == "":
            continue
        try:
            return float(value)
        except (TypeError, ValueError):
            raise StructureError(
                f"{entry.entry_id} ({entry.provenance})",
                f"metadata {key}={value!r} is not a number (eV/atom)",
            ) from None
    return None


def describe(entry: Entry, config: BankConfig) -> EntryInfo:
    """Validate an entry against ``config`` and detect its space group with spglib.

    Raises :class:`StructureError` for an empty or degenerate cell, a volume per site outside
    [``min_volume_per_site_a3``, ``max_volume_per_site_a3``] Å³, more than ``max_sites`` sites, an
    ``e_above_hull`` above ``max_e_above_hull_ev_per_atom`` eV/atom (A.1), or a failed detection.
    ``spacegroup_disagrees`` is True when the input carried a label that differs from the detected group
    (at ``config.symprec`` Å and ``config.angle_tolerance_deg``).
    """
    from pymatgen.symmetry.analyzer import SpacegroupAnalyzer

    where = f"{entry.entry_id} ({entry.provenance})"
    structure = entry.structure
    e_hull = _e_above_hull(entry)
    limit = config.max_e_above_hull_ev_per_atom
    if e_hull is not None and limit is not None and e_hull > limit:
        raise StructureError(
            where, f"e_above_hull {e_hull:g} eV/atom exceeds max_e_above_hull_ev_per_atom={limit:g}"
        )
    n_sites = len(structure)
    if n_sites == 0:
        raise StructureError(where, "empty cell: the structure has no sites")
    if n_sites > config.max_sites:
        raise StructureError(where, f"too many sites: {n_sites} > max_sites={config.max_sites}")
    volume = float(structure.volume)
    if not math.isfinite(volume) or volume <= 0.0:
        raise StructureError(where, f"degenerate cell: volume {volume:g} Å³")
    volume_per_site = volume / n_sites
    if not config.min_volume_per_site_a3 <= volume_per_site <= config.max_volume_per_site_a3:
        raise StructureError(
            where,
            f"absurd cell: {volume_per_site:.3g} Å³ per site is outside "
            f"[{config.min_volume_per_site_a3:g}, {config.max_volume_per_site_a3:g}] "
            "(min_volume_per_site_a3 / max_volume_per_site_a3)",
        )
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            analyzer = SpacegroupAnalyzer(
                structure, symprec=config.symprec, angle_tolerance=config.angle_tolerance_deg
            )
            number = int(analyzer.get_space_group_number())
            symbol = str(analyzer.get_space_group_symbol())
            crystal_system = str(analyzer.get_crystal_system())
    except Exception as exc:  # noqa: BLE001 - spglib failures surface as several exception types
        raise StructureError(
            where, f"spglib found no space group at symprec={config.symprec} ({type(exc).__name__}: {exc})"
        ) from exc
    lattice = structure.lattice
    return EntryInfo(
        reduced_formula=structure.composition.reduced_formula,
        spacegroup_number=number,
        spacegroup_symbol=symbol,
        crystal_system=crystal_system,
        lattice_abc_angstrom=tuple(float(x) for x in lattice.abc),  # type: ignore[arg-type]
        lattice_angles_deg=tuple(float(x) for x in lattice.angles),  # type: ignore[arg-type]
        n_sites=n_sites,
        disordered=not structure.is_ordered,
        spacegroup_disagrees=entry.given_spacegroup is not None and entry.given_spacegroup != number,
        e_above_hull_ev_per_atom=e_hull,
    )
