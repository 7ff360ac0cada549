"""Configuration models with the paper's defaults.

Every field cites the paragraph of the paper (Appendix A, `../shared/paper/`) it comes from, or says
why it departs from it. Units are in the field names or docstrings.
"""

from __future__ import annotations

from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

# Cu K-alpha weighted mean (2:1 K-alpha1:K-alpha2), the value pymatgen calls "CuKa" and the paper uses (A.1).
CU_KA_ANGSTROM = 1.54184


def resolve_wavelength(wavelength: str | float) -> float:
    """Return a wavelength in Å from a float (Å) or an X-ray line name known to pymatgen ("CuKa", "MoKa1"...)."""
    if isinstance(wavelength, int | float):
        value = float(wavelength)
    else:
        try:
            value = float(wavelength)
        except ValueError:
            from pymatgen.analysis.diffraction.xrd import WAVELENGTHS

            if wavelength not in WAVELENGTHS:
                known = ", ".join(sorted(WAVELENGTHS))
                raise ValueError(f"unknown X-ray line {wavelength!r}; use a value in Å or one of: {known}") from None
            value = float(WAVELENGTHS[wavelength])
    if not 0.05 <= value <= 5.0:
        raise ValueError(f"wavelength {value} Å is outside the plausible X-ray range 0.05-5 Å")
    return value


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, validate_default=True)


class GridConfig(_Strict):
    """The shared fixed 2θ grid of every clean profile and mixture (A.1, first paragraph)."""

    two_theta_min_deg: float = Field(5.0, ge=0.0, lt=180.0, description="Lower grid bound, degrees 2θ (A.1).")
    two_theta_max_deg: float = Field(120.0, gt=0.0, le=180.0, description="Upper grid bound, degrees 2θ (A.1).")
    n_bins: int = Field(2048, ge=16, le=1 << 20, description="Number of uniform bins (A.1: 2,048).")

    @model_validator(mode="after")
    def _ordered(self) -> GridConfig:
        if self.two_theta_max_deg <= self.two_theta_min_deg:
            raise ValueError(
                f"two_theta_max_deg ({self.two_theta_max_deg}) must exceed two_theta_min_deg ({self.two_theta_min_deg})"
            )
        return self

    @property
    def bin_width_deg(self) -> float:
        return (self.two_theta_max_deg - self.two_theta_min_deg) / self.n_bins

    def centers_deg(self):
        """Bin centres in degrees 2θ, float64 array of length n_bins."""
        import numpy as np

        w = self.bin_width_deg
        return self.two_theta_min_deg + w * (np.arange(self.n_bins) + 0.5)


Fraction = Annotated[float, Field(ge=0.0, le=1.0)]


class BankConfig(_Strict):
    """How `xrdsynth bank build` turns structures into the bank of clean single-phase patterns."""

    wavelength: str | float = Field(
        "CuKa",
        description="X-ray wavelength: a value in Å or a pymatgen line name. A.1 uses Cu Kα, λ = 1.54184 Å.",
    )
    grid: GridConfig = Field(default_factory=GridConfig, description="Dense-profile grid (A.1).")
    symprec: float = Field(0.01, gt=0.0, le=1.0, description="spglib distance tolerance in Å for space-group detection.")
    angle_tolerance_deg: float = Field(5.0, gt=0.0, le=30.0, description="spglib angle tolerance in degrees.")
    max_e_above_hull_ev_per_atom: float | None = Field(
        0.1,
        ge=0.0,
        description="Drop entries whose metadata give e_above_hull above this (eV/atom); A.1 keeps <= 0.1. "
        "Entries without the field are kept. None disables the filter.",
    )
    max_sites: int = Field(
        1000, ge=1, description="Cells with more sites than this are skipped as too large (kernel cost grows with sites × reflections)."
    )
    min_volume_per_site_a3: float = Field(
        1.0, gt=0.0, description="Cells with less volume per site (Å³) are skipped as absurd (overlapping atoms)."
    )
    max_volume_per_site_a3: float = Field(
        500.0, gt=0.0, description="Cells with more volume per site (Å³) are skipped as absurd (nearly empty)."
    )
    split_fractions: tuple[Fraction, Fraction, Fraction] = Field(
        (0.95, 0.025, 0.025), description="train / val / test fractions by material (A.1)."
    )
    split_seed: int = Field(0, ge=0, description="Seed of the deterministic id -> split hash.")
    group_polymorphs: bool = Field(
        True,
        description="Keep every entry of one reduced formula on the same side of the split, so that a test "
        "material is really unseen. False splits by material id only (the paper's behaviour).",
    )
    deduplicate: bool = Field(
        False, description="Drop near-duplicates across sources with pymatgen's StructureMatcher (first source wins)."
    )
    chunk_size: int = Field(64, ge=1, le=100_000, description="Entries per Dask task and per resumable chunk.")

    @field_validator("wavelength")
    @classmethod
    def _known_wavelength(cls, v: str | float) -> str | float:
        resolve_wavelength(v)
        return v

    @field_validator("split_fractions")
    @classmethod
    def _sum_to_one(cls, v: tuple[float, float, float]) -> tuple[float, float, float]:
        if abs(sum(v) - 1.0) > 1e-9:
            raise ValueError(f"split_fractions {v} must sum to 1")
        return v

    @property
    def wavelength_angstrom(self) -> float:
        return resolve_wavelength(self.wavelength)
