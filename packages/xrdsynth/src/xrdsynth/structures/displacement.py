"""Atomic displacement parameters of a CIF as pymatgen's U11_cif..U12_cif site properties.

pymatgen's CifParser drops the ``_atom_site_[UB]_iso_or_equiv`` and ``_atom_site_aniso_[UB]_ij`` columns, so
a structure read from a CIF diffracts as atoms at rest. Its XRD calculator does read anisotropic U in the
CIF convention from the site properties U11_cif, U22_cif, U33_cif, U23_cif, U13_cif, U12_cif (Å²) and damps
each atom's scattering factor by exp(-2π² gᵀU*g); these functions turn the CIF's columns into them.

Conversions (Trueblood et al. 1996, Acta Cryst. A52, 770): B = 8π²U; an isotropic U becomes the CIF-convention
tensor U_ij = U·cos(a*_i, a*_j) (the angles between reciprocal axes), for which U* = U·G* and the damping of
|F|² is exp(-2B(sinθ/λ)²), the same as pymatgen's per-element ``debye_waller_factors``.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
from pymatgen.core import Structure

# Site-property names pymatgen's get_ustar reads, in the order of the CIF's aniso columns below.
U_CIF_PROPERTIES = ("U11_cif", "U22_cif", "U33_cif", "U23_cif", "U13_cif", "U12_cif")
_ANISO_SUFFIXES = ("11", "22", "33", "23", "13", "12")
_B_PER_U = 8.0 * math.pi**2


def _number(value: Any) -> float | None:
    """A CIF number without its standard uncertainty ('0.0123(4)' -> 0.0123); None for '?', '.' or text."""
    if not isinstance(value, str):
        return None
    text = value.strip().strip("'\"").split("(", 1)[0]
    try:
        number = float(text)
    except ValueError:
        return None
    return number if math.isfinite(number) else None


def _column(tags: dict[str, Any], name: str) -> list[Any] | None:
    """A loop column by case-insensitive tag name, as a list (a single value becomes a one-row list)."""
    for tag, values in tags.items():
        if tag.lower() == name:
            return values if isinstance(values, list) else [values]
    return None


def _isotropic_by_label(tags: dict[str, Any]) -> dict[str, float]:
    """U_iso in Å² per atom-site label, from U_iso_or_equiv or B_iso_or_equiv (unreadable values left out)."""
    labels = _column(tags, "_atom_site_label")
    if labels is None:
        return {}
    for name, scale in (("_atom_site_u_iso_or_equiv", 1.0), ("_atom_site_b_iso_or_equiv", 1.0 / _B_PER_U)):
        values = _column(tags, name)
        if values is not None and len(values) == len(labels):
            return {
                label: number * scale
                for label, value in zip(labels, values, strict=True)
                if (number := _number(value)) is not None
            }
    return {}


def _anisotropic_by_label(tags: dict[str, Any]) -> dict[str, tuple[float, ...]]:
    """(U11, U22, U33, U23, U13, U12) in Å² per label of the aniso loop, from its U_ij or B_ij columns."""
    labels = _column(tags, "_atom_site_aniso_label")
    if labels is None:
        return {}
    for letter, scale in (("u", 1.0), ("b", 1.0 / _B_PER_U)):
        columns = [_column(tags, f"_atom_site_aniso_{letter}_{s}") for s in _ANISO_SUFFIXES]
        if all(c is not None and len(c) == len(labels) for c in columns):
            by_label = {}
            for row, label in enumerate(labels):
                numbers = [_number(c[row]) for c in columns]  # type: ignore[index]
                if all(n is not None for n in numbers):
                    by_label[label] = tuple(n * scale for n in numbers)  # type: ignore[operator]
            return by_label
    return {}


def isotropic_u_cif(u_iso_a2: float, structure: Structure) -> tuple[float, ...]:
    """The CIF-convention tensor (U11, U22, U33, U23, U13, U12) in Å² of an isotropic U on this lattice."""
    reciprocal = structure.lattice.reciprocal_lattice_crystallographic
    alpha, beta, gamma = (math.radians(x) for x in reciprocal.angles)
    return (
        u_iso_a2,
        u_iso_a2,
        u_iso_a2,
        u_iso_a2 * math.cos(alpha),
        u_iso_a2 * math.cos(beta),
        u_iso_a2 * math.cos(gamma),
    )


def cif_displacement_properties(structure: Structure, tags: dict[str, Any]) -> tuple[dict[str, list], str]:
    """U11_cif..U12_cif site properties of a structure parsed from a CIF block with these raw tags.

    Returns (properties, how): empty properties when the block gives none, when a site's label has no
    readable value, or when every value is 0 (templates that leave thermal motion unset); ``how`` says
    which columns were read or why none were used, for the entry's metadata. Each site takes the values
    of its atom-site label (pymatgen keeps the label on every symmetry copy and on merged mixed sites);
    an aniso row wins over the isotropic column for its label.
    """
    anisotropic = _anisotropic_by_label(tags)
    isotropic = _isotropic_by_label(tags)
    if not anisotropic and not isotropic:
        return {}, "none in the CIF"
    rows = []
    for index, site in enumerate(structure):
        label = getattr(site, "label", None)
        if label in anisotropic:
            rows.append(anisotropic[label])
        elif label in isotropic:
            rows.append(isotropic_u_cif(isotropic[label], structure))
        else:
            return {}, f"ignored: site {index} (label {label!r}) has no readable displacement parameter"
    values = np.array(rows, dtype=np.float64)
    if not np.any(values):
        return {}, "ignored: every displacement parameter is 0"
    if np.any(values[:, :3] < 0.0):
        return {}, "ignored: a negative U_ii or B_ii"
    how = "anisotropic" if anisotropic else "isotropic"
    return {name: values[:, k].tolist() for k, name in enumerate(U_CIF_PROPERTIES)}, how
