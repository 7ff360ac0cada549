"""Configuration models with the paper's defaults.

Every field cites the paragraph of the paper (Appendix A, `../shared/paper/`) it comes from, or says
why it departs from it. Units are in the field names or docstrings.
"""

from __future__ import annotations

import logging
import math
import re
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

# Cu K-alpha weighted mean (2:1 K-alpha1:K-alpha2), the value pymatgen calls "CuKa" and the paper uses (A.1).
CU_KA_ANGSTROM = 1.54184
# Most phases in one mixture (A.1: K* = 1..5): the length of `phase_count_probabilities` and of the mixture
# store's per-phase label arrays.
MAX_PHASES = 5

# The strong Bragg lines of inorganic crystals lie at d-spacings of about 1-10 Å (the Cu Kα 5-120° grid of A.1
# sees 0.9-17.7 Å): a grid that sees no d-spacing in this range records (nearly) empty patterns.
STRONG_LINE_D_ANGSTROM = (1.0, 10.0)
# The narrowest window a recipe can draw must hold at least this many grid bins (the smallest grid has 16).
MIN_WINDOW_BINS = 16


def two_theta_deg(d_angstrom: float, wavelength_angstrom: float) -> float:
    """Bragg angle 2θ in degrees of the d-spacing `d_angstrom` (180° where it is out of reach)."""
    s = wavelength_angstrom / (2.0 * d_angstrom)
    return 180.0 if s >= 1.0 else 2.0 * math.degrees(math.asin(s))


def d_spacing_angstrom(two_theta: float, wavelength_angstrom: float) -> float:
    """d-spacing in Å seen at 2θ = `two_theta` degrees (infinite at 0°)."""
    s = math.sin(math.radians(two_theta / 2.0))
    return math.inf if s <= 0.0 else wavelength_angstrom / (2.0 * s)


def resolve_wavelength(wavelength: str | float) -> float:
    """Return a wavelength in Å from a float (Å) or an X-ray line name known to pymatgen ("CuKa", "MoKa1"...)."""
    if isinstance(wavelength, int | float):
        value = float(wavelength)
    else:
        try:
            value = float(wavelength)
        except ValueError:
            lines = _line_table()
            if wavelength not in lines:
                known = ", ".join(sorted(lines))
                raise ValueError(
                    f"unknown X-ray line {wavelength!r}; use a value in Å or one of: {known}"
                ) from None
            value = float(lines[wavelength])
    if not 0.05 <= value <= 5.0:
        raise ValueError(f"wavelength {value} Å is outside the plausible X-ray range 0.05-5 Å")
    return value


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, validate_default=True)


class GridConfig(_Strict):
    """The shared fixed 2θ grid of every clean profile and mixture (A.1, first paragraph)."""

    two_theta_min_deg: float = Field(5.0, ge=0.0, lt=180.0, description="Lower grid bound, degrees 2θ (A.1).")
    two_theta_max_deg: float = Field(
        120.0, gt=0.0, le=180.0, description="Upper grid bound, degrees 2θ (A.1)."
    )
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


class BankConfig(_Strict):
    """How `xrdsynth bank build` turns structures into the bank of clean single-phase patterns."""

    wavelength: str | float = Field(
        "CuKa",
        description="X-ray wavelength: a value in Å or a pymatgen line name. A.1 uses Cu Kα, λ = 1.54184 Å.",
    )
    grid: GridConfig = Field(default_factory=GridConfig, description="Dense-profile grid (A.1).")
    symprec: float = Field(
        0.01, gt=0.0, le=1.0, description="spglib distance tolerance in Å for space-group detection."
    )
    angle_tolerance_deg: float = Field(5.0, gt=0.0, le=30.0, description="spglib angle tolerance in degrees.")
    max_e_above_hull_ev_per_atom: float | None = Field(
        0.1,
        ge=0.0,
        description="Drop entries whose metadata give e_above_hull above this (eV/atom); A.1 keeps <= 0.1. "
        "Entries without the field are kept. None disables the filter.",
    )
    max_sites: int = Field(
        1000,
        ge=1,
        description="Cells with more sites than this are skipped as too large (kernel cost grows with sites × reflections).",
    )
    min_volume_per_site_a3: float = Field(
        1.0,
        gt=0.0,
        description="Cells with less volume per site (Å³) are skipped as absurd (overlapping atoms).",
    )
    max_volume_per_site_a3: float = Field(
        500.0,
        gt=0.0,
        description="Cells with more volume per site (Å³) are skipped as absurd (nearly empty).",
    )
    split_fractions: tuple[float, float, float] = Field(
        (0.95, 0.025, 0.025),
        description="train / val / test fractions by material (section 2.2: 'ratios of 0.95, 0.025, and 0.025').",
    )
    split_seed: int = Field(0, ge=0, description="Seed of the deterministic id -> split hash.")
    group_polymorphs: bool = Field(
        True,
        description="Keep every entry of one reduced formula on the same side of the split, so that a test "
        "material is really unseen. False splits by material id only (the paper's behaviour).",
    )
    deduplicate: bool = Field(
        False,
        description="Drop near-duplicates across sources with pymatgen's StructureMatcher (first source wins).",
    )
    chunk_size: int = Field(
        64, ge=1, le=100_000, description="Entries per Dask task and per resumable chunk."
    )
    displacement_parameters: bool = Field(
        True,
        description="Damp each atom's scattering by the atomic displacement parameters its CIF lists "
        '(U or B, isotropic or anisotropic; docs/physics.md, "Thermal motion"), so that an entry\'s pattern is '
        "that of the refined room-temperature structure. False diffracts every structure as atoms at rest, "
        "as pymatgen's CifParser + XRDCalculator do (the paper's bank, A.1.1).",
    )
    isotypes_per_structure: int = Field(
        0,
        ge=0,
        le=20,
        description="Substituted relatives added per read structure (not in the paper; generated crystals get "
        "none): each replaces one or more elements on all their sites by chemically similar ones (docs/physics.md, "
        '"Isotypes") and takes the predicted cell volume, so the bank holds the isotypes and solid-solution '
        "members a measured mineral may be. They keep the parent's space group and split. 0 (default): the "
        "paper's bank, read structures only.",
    )
    isotype_min_pair_correlation: float = Field(
        3.0,
        gt=0.0,
        description="Least ICSD pair correlation (pymatgen's data-mined substitution probabilities, Hautier et "
        "al. 2011) between an element and its substitute at their shared oxidation state (1 = as often as chance; 3 keeps Ca↔Sr, Mg↔Fe, Al↔Ga, Si↔Ge and "
        "rejects Ca→Zn, Si→Mn).",
    )
    isotype_radius_tolerance: float = Field(
        0.25,
        gt=0.0,
        le=1.0,
        description="Largest relative difference of Shannon ionic radii between an element and its substitute "
        "(0.25 keeps Si↔Ge, 24%, and rejects Mg↔Ca, 33%).",
    )

    @field_validator("wavelength")
    @classmethod
    def _known_wavelength(cls, v: str | float) -> str | float:
        resolve_wavelength(v)
        return v

    @field_validator("split_fractions")
    @classmethod
    def _sum_to_one(cls, v: tuple[float, float, float]) -> tuple[float, float, float]:
        if min(v) < 0 or abs(sum(v) - 1.0) > 1e-9:
            raise ValueError(f"split_fractions {v} must be non-negative and sum to 1")
        return v

    @model_validator(mode="after")
    def _grid_sees_bragg_lines(self) -> BankConfig:
        wavelength = self.wavelength_angstrom
        d_low = d_spacing_angstrom(self.grid.two_theta_max_deg, wavelength)
        d_high = d_spacing_angstrom(self.grid.two_theta_min_deg, wavelength)
        d_min, d_max = STRONG_LINE_D_ANGSTROM
        if d_high >= d_min and d_low <= d_max:
            return self
        if d_high < d_min:
            fix = (
                f"lower grid.two_theta_min_deg below {two_theta_deg(d_min, wavelength):.3g}° "
                "or use a longer wavelength"
            )
        else:
            fix = (
                f"raise grid.two_theta_max_deg above {two_theta_deg(d_max, wavelength):.3g}° "
                "or use a shorter wavelength"
            )
        raise ValueError(
            f"wavelength {wavelength:.5g} Å on the grid {self.grid.two_theta_min_deg}-"
            f"{self.grid.two_theta_max_deg}° 2θ sees only d-spacings {d_low:.3g}-{d_high:.3g} Å, where crystals "
            f"have almost no Bragg lines (strong lines lie at d ≈ {d_min:g}-{d_max:g} Å): {fix}"
        )

    @property
    def wavelength_angstrom(self) -> float:
        return resolve_wavelength(self.wavelength)


def _ordered_range(name: str, value: tuple[float, float]) -> tuple[float, float]:
    if not value[0] <= value[1]:
        raise ValueError(
            f"{name} = {value}: the lower bound must not exceed the upper bound; swap the two values"
        )
    return value


Range = tuple[float, float]


# X-ray tube anodes of the lab recipe. Line wavelengths (Å) come from pymatgen's table (Bearden 1967 values, as
# in International Tables C 4.2.2): Kα1, Kα2, Kβ1 and the 2:1-weighted Kα mean a reader assumes for a doublet.
ANODES = ("Cu", "Co", "Mo", "Fe", "Cr", "Ag")
# pymatgen's table gives Co Kβ1 as 1.63079 Å; Bearden's value is 1.62079 Å (7,649.4 eV: 12,398.42 / 7,649.4), the
# table's every other line agreeing with its energy to 6e-5 Å.
_LINE_CORRECTIONS_ANGSTROM = {"CoKb1": 1.62079}


def _line_table() -> dict[str, float]:
    """X-ray lines in Å by name (``CuKa``, ``CoKb1``, ...): pymatgen's WAVELENGTHS with
    `_LINE_CORRECTIONS_ANGSTROM`."""
    from pymatgen.analysis.diffraction.xrd import WAVELENGTHS

    return {**WAVELENGTHS, **_LINE_CORRECTIONS_ANGSTROM}


def anode_lines_angstrom(anode: str) -> tuple[float, float, float, float]:
    """(Kα mean, Kα1, Kα2, Kβ1) wavelengths in Å of a tube anode (`_line_table`)."""
    table = _line_table()
    return tuple(float(table[f"{anode}{line}"]) for line in ("Ka", "Ka1", "Ka2", "Kb1"))  # type: ignore[return-value]


class LabConfig(_Strict):
    """Laboratory-diffractometer physics beyond A.1: the `lab` recipe (docs/physics.md, "The lab recipe", gives
    each effect's formula and source). Patterns are rendered on the model grid as the measured-data reader of
    xrdmodels delivers a measurement: 2θ mapped through d-spacing to the model wavelength, intensities at the
    model wavelength's Lorentz-polarisation factor. So the anode acts through its line ratios (doublet
    splitting, Kβ) and through the instrument profile, which is defined in the instrument's own 2θ. Every
    effect is off when its probability or range is 0, which is how the ablations remove one effect."""

    anode_probabilities: dict[str, float] = Field(
        default_factory=lambda: {"Cu": 0.80, "Co": 0.08, "Mo": 0.06, "Fe": 0.02, "Cr": 0.02, "Ag": 0.02},
        description="P(anode) per pattern, over Cu, Co, Mo, Fe, Cr, Ag. Cu dominates laboratory powder work; "
        "Co and Fe are used for Fe-rich samples, Mo and Ag for transmission and high-d-range work.",
    )
    monochromatic_probability: float = Field(
        0.2,
        ge=0.0,
        le=1.0,
        description="Probability of a Kα1-only beam (Johansson/Ge(111) primary monochromator or synchrotron); "
        "otherwise the Kα1/Kα2 doublet is rendered and the reader's 2:1 mean wavelength assumed.",
    )
    kalpha2_ratio: Range = Field(
        (0.46, 0.54),
        description="I(Kα2)/I(Kα1), uniform: 0.5 from the 2p3/2:2p1/2 occupancy ratio; measured Cu values are "
        "0.48-0.52 (Hölzer et al. 1997, Phys. Rev. A 56, 4554).",
    )
    kbeta_probability: float = Field(
        0.2,
        ge=0.0,
        le=1.0,
        description="Probability that residual Kβ passes the filter (never with a Kα1 monochromator).",
    )
    kbeta_ratio: Range = Field(
        (0.002, 0.02),
        description="I(Kβ1)/I(Kα1) when residual Kβ is present, uniform: about 0.2 unfiltered, 0.5-2% behind "
        "a Ni (Cu) or Zr (Mo) filter.",
    )
    sample_displacement_deg: Range = Field(
        (-0.12, 0.12),
        description="Specimen displacement shift D in degrees of instrument 2θ at 2θ = 0, uniform: "
        "Δ2θ = D·cosθ with D = -2s/R (rad); ±0.12° is s = ±0.2 mm on a 200 mm goniometer (Klug & Alexander "
        "1974, ch. 5). Added to the A.1 zero shift.",
    )
    axial_divergence_deg: Range = Field(
        (0.0, 0.0),
        description="Axial-divergence asymmetry A in degrees of instrument 2θ, uniform per pattern (not in the "
        "paper): each line is convolved with the aberration (ε_m/ε)^½ - 1 on ε between 0 and ε_m = -A·cot 2θ' "
        "(Cheary & Coelho 1998's simple axial model; Finger, Cox & Jephcoat 1994), a tail towards low angles "
        "below 2θ' = 90° and towards high angles above it, moving the centroid by ε_m/6. A = (H + S)²/(2L²) in "
        "radians for source and sample axial lengths H, S on a goniometer of radius L: ~0.05° (0.0008 rad) "
        "behind 2.5° Soller slits. 0 keeps the symmetric profile. Off by default: A ≤ 0.1° or ≤ 0.3° moved no "
        "shared measured set and costs ~27% of the lab generation rate at ≤ 0.1° (docs/benchmarks.md, "
        '"Axial-divergence asymmetry").',
    )
    defocus_probability: float = Field(
        0.0,
        ge=0.0,
        le=1.0,
        description="Probability that a pattern is defocused (not in the paper), as a tilted specimen is in a "
        "residual-stress or texture (ψ/χ) scan: every line is convolved with a box of full width B "
        "(`defocus_box_deg`), exactly (the second difference of each profile part's CDF antiderivative). The box "
        "stands for the measured shape: the tilted NIST duplex-steel scans have flat-topped peaks 1.5-3.5° wide "
        'at half height, nearly as wide at 44° as at 116° (docs/physics.md, "Defocusing"). Off by default: at '
        "0.15 the model read the NIST austenite first on 4 of 5 scans (1 without) but not the ferrite, RRUFF did not "
        'move, and generation ran at 0.4-0.7x (docs/benchmarks.md, "Defocusing in training").',
    )
    defocus_box_deg: Range = Field(
        (0.3, 3.0),
        description="Full width B of the defocusing box in degrees of instrument 2θ, uniform per defocused "
        'pattern, the same for every line (docs/physics.md, "Defocusing").',
    )
    march_dollase_probability: float = Field(
        0.5,
        ge=0.0,
        le=1.0,
        description="Probability that a phase is textured (March-Dollase, per reflection).",
    )
    march_dollase_r: Range = Field(
        (0.6, 1.6),
        description="March-Dollase parameter r, log-uniform: P(α) = (r² cos²α + sin²α / r)^(-3/2) per "
        "reflection, α the angle between its scattering vector and the texture axis (Dollase 1986, J. Appl. "
        "Cryst. 19, 267). r < 1 for plates, r > 1 for needles; 1 is untextured.",
    )
    march_dollase_axis_peaks: int = Field(
        5,
        ge=1,
        le=50,
        description="The texture axis is the scattering vector of a reflection of one of the phase's this-many "
        "lowest-angle peaks (low-index directions, the usual plate normals and needle axes).",
    )
    lattice_strain_probability: float = Field(
        0.8,
        ge=0.0,
        le=1.0,
        description="Probability that a phase's cell differs from the bank's (solid solution, composition, "
        "temperature: a measured mineral is rarely the database's exact cell), per phase.",
    )
    lattice_strain: Range = Field(
        (0.0, 0.1),
        description="Amplitude a of a strained phase's strain tensor, uniform: ε = a·S, S symmetric with entries "
        "U(-1, 1). A reflection of unit scattering vector n moves to d/√(1 - 2nᵀεn), the reciprocal metric "
        "gᵀ(I - 2ε)g of a deformed cell (d(1 + nᵀεn) to first order); a peak moves by the share-weighted mean "
        "of nᵀεn over its reflections, which for symmetry-equivalent reflections is the point-group average "
        "of ε, so the strained cell keeps its space group. Up to 1% is a typical difference "
        "between a natural sample's cell and a database entry of the same mineral; solid-solution series span "
        "3-8% (forsterite-fayalite ~3% in b, pyrope-andradite 5%), isotypes of one structure type more (halite "
        "5.64 Å, sylvite 6.29 Å: 11%). The default (a up to 0.1: |nᵀεn| typically 0-6%) makes a phase stand for "
        "its isotypes; measured on RRUFF dev against a = 0.01 in docs/benchmarks.md.",
    )
    debye_waller_b_a2: Range = Field(
        (0.0, 1.5),
        description="Overall isotropic Debye-Waller B of a phase in Å², uniform: every stick's area times "
        "exp(-2B (sinθ/λ)²) = exp(-B/(2d²)). Bank patterns of entries without displacement parameters in their "
        "CIF carry no thermal motion, measured ones do: at room temperature B is ~0.2-1.5 Å² for most elements and "
        "simple solids (Peng et al. 1996, Acta Cryst. A52, 257), and high-angle peaks fall by a third to a half "
        "at 2θ = 90-120° (Cu) for B = 1 Å². 0 is the bank's pattern. Entries whose CIF gave displacement "
        "parameters (the bank's thermal_displacement column) draw from debye_waller_extra_b_a2 instead.",
    )
    debye_waller_extra_b_a2: Range = Field(
        (0.0, 0.5),
        description="Extra overall B in Å², uniform, for entries whose pattern already includes their CIF's "
        "displacement parameters (BankConfig.displacement_parameters): those are room-temperature values, so "
        "only a sample's own temperature, static disorder and the spread of refined B values remain.",
    )
    intensity_variation_probability: float = Field(
        0.8,
        ge=0.0,
        le=1.0,
        description="Probability that a phase's peak intensities differ from the bank's, per phase (not in the "
        "paper): a measured mineral's composition, site occupancies and atomic positions are rarely the database "
        "entry's, and each changes its structure factors reflection by reflection (an isotype or solid-solution "
        "member has its own |F_hkl|²). 0 keeps the bank's intensities. 0.8 with log σ up to 1: RRUFF dev top-5 "
        '+0.02 and +0.04 over two seeds, top-1 level (docs/benchmarks.md, "Peak intensities").',
    )
    intensity_variation_log_sd: Range = Field(
        (0.0, 2.0),
        description="Standard deviation σ of the natural log of each peak's intensity factor, uniform per varied "
        "phase; the factors are exp(σ√3·v), v ~ U(-1, 1) independently per peak (symmetry-equivalent reflections "
        "share a peak, so the varied phase keeps its space group). σ = 2 changes a peak by up to a factor 32, "
        "1 by up to 5.7. Up to 2 rather than 1: at the measured pipeline's budget RRUFF dev top-5 0.686 -> 0.711 "
        "and top-1 0.524 -> 0.533 / 0.546 (two seeds), xrd_autoanalyzer recall 0.96 -> 0.78 / 0.87; the NIST tilt "
        "scans gain at 4,000 steps (1 -> 3-4 of 5), not at the full budget (3 and 1 of 5; "
        'docs/benchmarks.md, "Stronger peak-intensity variation").',
    )
    background_level: Range = Field(
        (0.003, 0.3),
        description="Scale of the smooth background relative to the highest clean bin, log-uniform: "
        "B(u) = level · exp(Σ_j c_j T_j(u)).",
    )
    background_chebyshev_order: tuple[int, int] = Field(
        (1, 6),
        description="Order of the background's log-Chebyshev polynomial over the window, uniform integer: "
        "B(u) = level · exp(Σ_j c_j T_j(u)), u in [-1, 1] across the window, positive with curvature.",
    )
    background_log_coefficient: float = Field(
        1.0,
        ge=0.0,
        le=5.0,
        description="c_j ~ U(-a, a) / j for the log-Chebyshev background (a = this value): higher orders bend less.",
    )
    amorphous_hump_probability: float = Field(
        0.3,
        ge=0.0,
        le=1.0,
        description="Probability of an amorphous hump (glass, polymer holder or film, amorphous phase).",
    )
    amorphous_hump_center_deg: Range = Field(
        (12.0, 35.0),
        description="Hump centre in model 2θ degrees, uniform: d ≈ 2.6-7.4 Å at Cu Kα, where silicate glass "
        "(~21-23°), Kapton and grease humps lie.",
    )
    amorphous_hump_fwhm_deg: Range = Field((4.0, 12.0), description="Hump FWHM in model 2θ degrees, uniform.")
    amorphous_hump_height: Range = Field(
        (0.01, 0.3), description="Hump height relative to the highest clean bin, log-uniform."
    )
    air_scatter_probability: float = Field(
        0.5, ge=0.0, le=1.0, description="Probability of low-angle air and beam-stop scatter."
    )
    air_scatter_height: Range = Field(
        (0.01, 1.0),
        description="Air scatter at the window start relative to the highest clean bin, log-uniform; it decays "
        "as exp(-(2θ - 2θ_start) / decay).",
    )
    air_scatter_decay_deg: Range = Field(
        (1.5, 8.0), description="Decay length of the air scatter in model 2θ degrees, uniform."
    )
    background_subtracted_probability: float = Field(
        0.3,
        ge=0.0,
        le=1.0,
        description="Probability that a pattern is delivered background-subtracted, as processed data often are "
        "(RRUFF and other databases, many users' own exports): after the Poisson draw the expected smooth "
        "background, humps and air scatter are subtracted from the counts, leaving their counting noise, and "
        "negative values are clipped at 0.",
    )
    counts_at_max: Range = Field(
        (10**2.5, 10**5),
        description="Poisson counting noise: counts of the highest clean bin, log-uniform (a few hundred for a "
        "fast scan to 10⁵ for a long one); every bin is a Poisson draw of its expected counts.",
    )

    @field_validator(
        "kalpha2_ratio", "kbeta_ratio", "sample_displacement_deg", "axial_divergence_deg", "defocus_box_deg", "march_dollase_r", "lattice_strain", "debye_waller_b_a2", "debye_waller_extra_b_a2",
        "intensity_variation_log_sd", "background_level",
        "amorphous_hump_center_deg", "amorphous_hump_fwhm_deg", "amorphous_hump_height", "air_scatter_height",
        "air_scatter_decay_deg", "counts_at_max",
    )  # fmt: skip
    @classmethod
    def _range_ordered(cls, v: Range, info) -> Range:
        return _ordered_range(info.field_name, v)

    @model_validator(mode="after")
    def _consistent(self) -> LabConfig:
        unknown = sorted(set(self.anode_probabilities) - set(ANODES))
        if unknown:
            raise ValueError(
                f"anode_probabilities names unknown anodes {unknown}; known: {', '.join(ANODES)}"
            )
        probabilities = list(self.anode_probabilities.values())
        if any(p < 0 for p in probabilities) or abs(sum(probabilities) - 1.0) > 1e-9:
            raise ValueError(
                f"anode_probabilities {self.anode_probabilities} must be non-negative and sum to 1"
            )
        positive = {
            "kalpha2_ratio": self.kalpha2_ratio,
            "march_dollase_r": self.march_dollase_r,
            "background_level": self.background_level,
            "amorphous_hump_fwhm_deg": self.amorphous_hump_fwhm_deg,
            "amorphous_hump_height": self.amorphous_hump_height,
            "air_scatter_height": self.air_scatter_height,
            "air_scatter_decay_deg": self.air_scatter_decay_deg,
            "counts_at_max": self.counts_at_max,
        }
        for name, (low, _high) in positive.items():
            if low <= 0.0:
                raise ValueError(
                    f"{name} {getattr(self, name)} must start above 0 (log-uniform or a divisor); "
                    "turn the effect off with its probability instead"
                )
        if self.kbeta_ratio[0] < 0.0:
            raise ValueError(f"kbeta_ratio {self.kbeta_ratio} must be >= 0")
        if self.lattice_strain[0] < 0.0 or self.lattice_strain[1] > 0.15:
            raise ValueError(
                f"lattice_strain {self.lattice_strain} must lie in [0, 0.15] (an amplitude; below 1/6 the "
                "strained metric I - 2ε stays positive definite)"
            )
        if self.axial_divergence_deg[0] < 0.0 or self.axial_divergence_deg[1] > 0.5:
            raise ValueError(
                f"axial_divergence_deg {self.axial_divergence_deg} must lie in [0, 0.5] degrees (~0.05 behind "
                "2.5° Soller slits, ~0.4 with none; 0 keeps the symmetric profile)"
            )
        if self.defocus_box_deg[0] < 0.0 or self.defocus_box_deg[1] > 10.0:
            raise ValueError(
                f"defocus_box_deg {self.defocus_box_deg} must lie in [0, 10] degrees of 2θ (the tilted NIST "
                "duplex-steel scans: 1.5-3.5; turn the effect off with defocus_probability 0)"
            )
        for name in ("debye_waller_b_a2", "debye_waller_extra_b_a2"):
            low, high = getattr(self, name)
            if low < 0.0 or high > 10.0:
                raise ValueError(
                    f"{name} {(low, high)} must lie in [0, 10] Å² (room-temperature solids: ~0.2-1.5; 0 keeps "
                    "the bank's intensities)"
                )
        low, high = self.intensity_variation_log_sd
        if low < 0.0 or high > 2.0:
            raise ValueError(
                f"intensity_variation_log_sd {(low, high)} must lie in [0, 2] (a log standard deviation; 2 already "
                "changes peaks by factors up to 30)"
            )
        low, high = self.background_chebyshev_order
        if not 0 <= low <= high <= 12:
            raise ValueError(
                f"background_chebyshev_order {self.background_chebyshev_order} must be 0 <= low <= high <= 12"
            )
        return self


class RecipeConfig(_Strict):
    """How one augmented multi-phase mixture is drawn and rendered (A.1).

    Every range is sampled uniformly unless the field says otherwise. Where A.1 is silent or ambiguous the
    choice is a field here and is explained in docs/physics.md.
    """

    # --- phase set (A.1 "Phase set sampling") ---
    phase_count_probabilities: tuple[float, float, float, float, float] = Field(
        (0.20, 0.40, 0.25, 0.10, 0.05),
        description="P(K* = 1..5), the number of phases in a mixture (A.1).",
    )
    isotype_weight: float = Field(
        1.0,
        gt=0.0,
        description="How often a substituted relative (bank column isotype_of, BankConfig.isotypes_per_structure) "
        "is drawn as a phase, relative to a read or random entry: each material is drawn with probability "
        "proportional to its weight (1 = uniform over the split, A.1; docs/physics.md, Isotypes). Below 1, the "
        "read entries keep more of the draws (measured on RRUFF dev in docs/benchmarks.md, Isotypes: it does not "
        "remove the relatives' top-1 cost).",
    )
    synthetic_weight: float = Field(
        1.0,
        gt=0.0,
        description="How often a generated crystal (bank column synthetic: the random:N and random-ionic:N "
        "sources) is drawn as a phase, relative to a read entry (1 = uniform over the split, A.1). Below 1, a "
        "bank can hold many random crystals for diversity while the read structures keep their share of the "
        "draws (docs/physics.md, Phase draws). Multiplies isotype_weight.",
    )
    space_group_balance: float = Field(
        0.0,
        ge=0.0,
        le=1.0,
        description="Exponent b that evens the draws out over space groups: each material is drawn with weight "
        "n^-b, n the number of materials of its space group in the split (0 = uniform over materials, A.1; 1 = "
        "every group of the split drawn equally often; docs/physics.md, Phase draws). Multiplies isotype_weight.",
    )
    related_phase_probability: float = Field(
        0.0,
        ge=0.0,
        le=1.0,
        description="Probability that each phase after the first is drawn only among the split's materials that "
        "share a chemical element other than H and O with the first phase (a polymorph, a solid solution, a "
        "reaction product: the phases one chemical system's sample holds), with the same weights; otherwise, and "
        "where no such material is left, from the whole split (0 = independent draws, A.1; docs/physics.md, "
        "Phase draws).",
    )
    dirichlet_alpha: float = Field(
        1.0, gt=0.0, description="Concentration of the Dirichlet mixture weights (A.1)."
    )
    min_phase_weight: float = Field(
        0.03,
        ge=0.0,
        lt=0.2,
        description="Smallest phase weight (A.1: 0.03); below 1/5 so that five phases can all reach it. Enforced as w = w_min + (1 - K w_min) w_dirichlet, "
        "which keeps the sum at 1 (docs/physics.md).",
    )
    pre_mix_normalization: Literal["strongest_line", "total_intensity"] = Field(
        "strongest_line",
        description="What each phase is scaled to before the convex combination (A1): 'strongest_line' divides "
        "the sticks by the strongest stick (the bank profile of A.1 at unit maximum); 'total_intensity' divides "
        "by the sum of the sticks, making w the fraction of diffracted intensity (docs/physics.md).",
    )

    # --- preferred orientation (A.1 "Phase-wise structural perturbations", first) ---
    preferred_orientation_probability: float = Field(
        0.6, ge=0.0, le=1.0, description="Probability that a phase gets the orientation envelope (A.1)."
    )
    preferred_orientation_strength: Range = Field(
        (-0.18, 0.18),
        description="Envelope strength s, uniform; the envelope is 1 + s b(2θ) with |b| <= 1 (A.1).",
    )
    preferred_orientation_chebyshev_order: int = Field(
        3, ge=0, le=8, description="Chebyshev terms T_1..T_order of the envelope basis (A.1: up to order 3)."
    )
    preferred_orientation_fourier_terms: int = Field(
        2,
        ge=0,
        le=8,
        description="Fourier pairs sin/cos(k π t), k = 1..n, of the envelope basis (A.1: 'a small number of "
        "Fourier terms'; 2 is this toolkit's reading).",
    )
    preferred_orientation_clip: Range = Field(
        (0.85, 1.2), description="The unit-mean envelope is clipped to this range (A.1)."
    )

    # --- sample broadening (A.1 "Phase-wise structural perturbations", second) ---
    microstrain: Range = Field(
        (0.0, 0.0025),
        description="Microstrain ε, uniform (A.1). Gaussian FWHM = strain_fwhm_factor · ε · tanθ in radians.",
    )
    strain_fwhm_factor: float = Field(
        4.0,
        gt=0.0,
        description="FWHM_G = factor · ε · tanθ (rad); 4 is the Stokes-Wilson apparent-strain constant.",
    )
    crystallite_size_log10_nm: Range = Field(
        (2.0, 2.4), description="log10 of the crystallite size L in nm, uniform, i.e. L log-uniform (A.1)."
    )
    scherrer_k: float = Field(
        0.9,
        gt=0.0,
        le=2.0,
        description="Scherrer constant K in FWHM_L = K λ / (L cosθ) (rad); 0.9 for spheres.",
    )
    wavelength_angstrom: float = Field(
        CU_KA_ANGSTROM, gt=0.05, le=5.0, description="Wavelength of the Scherrer term, Å (A.1: 1.54184 Å)."
    )

    # --- global measurement effects (A.1 "Mixture formation and global measurement effects") ---
    zero_shift_deg: Range = Field(
        (-0.06, 0.06), description="Global 2θ zero shift Δ in degrees, uniform (A.1)."
    )
    instrument_u_deg2: float = Field(
        0.0,
        ge=0.0,
        description="Base Caglioti U (deg²) to which ΔU is added; A.1 gives only increments, so 0.",
    )
    instrument_v_deg2: float = Field(
        0.0, description="Base Caglioti V (deg²) to which ΔV is added; A.1 gives only increments, so 0."
    )
    instrument_w_deg2: float = Field(
        0.0,
        ge=0.0,
        description="Base Caglioti W (deg²) to which ΔW is added; A.1 gives only increments, so 0.",
    )
    instrument_du_deg2: Range = Field(
        (0.0, 0.004), description="Caglioti increment ΔU in deg², uniform (A.1)."
    )
    instrument_dv_deg2: Range = Field((0.0, 0.0), description="Caglioti increment ΔV in deg² (A.1: 0).")
    instrument_dw_deg2: Range = Field(
        (0.0018, 0.002),
        description="Caglioti increment ΔW in deg², uniform (A.1 prints it as [0.002, 0.0018]).",
    )

    # --- window, background, noise (A.1 "Measurement windowing, background, and noise") ---
    window_low_deg: Range = Field(
        (5.0, 20.0), description="Lower window bound 2θ_lo in degrees, uniform (A.1)."
    )
    window_high_deg: Range = Field(
        (80.0, 120.0), description="Upper window bound 2θ_hi in degrees, uniform (A.1)."
    )
    baseline_order: int = Field(
        4, ge=0, le=10, description="Order of the softplus baseline polynomial (A.1: 4)."
    )
    baseline_coefficient: Range = Field(
        (-0.12, 0.12), description="Each baseline polynomial coefficient, uniform (A.1)."
    )
    baseline_amplitude: Range = Field((0.06, 0.18), description="Baseline amplitude a, uniform (A.1).")
    baseline_mode: Literal["multiplicative", "additive"] = Field(
        "multiplicative",
        description="'multiplicative' (A.1 wording): x · (1 + a · softplus(p(t))); 'additive': x + a · softplus(p(t)).",
    )
    floor_offset: Range = Field((0.003, 0.03), description="Additive floor constant, uniform (A.1).")
    floor_slope: Range = Field(
        (-0.01, 0.01),
        description="Additive floor slope per unit of normalised angle t in [0, 1], uniform (A.1).",
    )
    noise_sigma: Range = Field((0.0008, 0.0025), description="Per-sample Gaussian noise std, uniform (A.1).")
    normalization_percentile: float = Field(
        99.0, gt=0.0, le=100.0, description="In-window percentile the pattern is divided by (A.1: 99th)."
    )

    # --- rendering ---
    engine: Literal["exact", "lut"] = Field(
        "exact",
        description="'exact': each stick rendered analytically, bin-integrated; 'lut': A.1's variable-width "
        "convolution with log-spaced width levels, each stick's bin-integrated kernel read from tables at 16 "
        "sub-bin positions (docs/physics.md).",
    )
    lut_levels: int = Field(
        32,
        ge=2,
        le=128,
        description="Number of log-spaced FWHM levels of the LUT engine (A.1). Past ~64 the error stops falling "
        "(the 16 sub-bin positions limit it) while the tables grow (19 MB per worker at 128).",
    )
    tail_tolerance_sigma: float = Field(
        0.0125,
        gt=0.0,
        le=1.0,
        description="Rendering cut relative to the mixture's noise: a stick is rendered out to where one bin "
        "would receive less than this fraction of the sample's noise std σ (of A.1's smallest σ, 0.0008, when "
        "σ = 0), and sticks weaker than that are skipped. The dropped tails of all sticks add up to at most "
        "~0.35 σ_min (0.00028) before normalisation at the default, tested against the untruncated numpy "
        "reference (docs/physics.md). Smaller is more exact and slower.",
    )

    # --- beyond A.1 ---
    lab: LabConfig | None = Field(
        None,
        description="Laboratory physics beyond A.1 (Kα doublets and anodes, March-Dollase texture, displacement, "
        "curved backgrounds, amorphous humps, air scatter, Poisson counting; docs/physics.md, 'The lab "
        "recipe'). None: the paper's recipe. The `lab` preset (`--recipe lab`) also sets the A.1 fields it "
        "replaces (RECIPE_PRESETS).",
    )

    @field_validator(
        "preferred_orientation_strength",
        "preferred_orientation_clip",
        "microstrain",
        "crystallite_size_log10_nm",
        "zero_shift_deg",
        "instrument_du_deg2",
        "instrument_dv_deg2",
        "instrument_dw_deg2",
        "window_low_deg",
        "window_high_deg",
        "baseline_coefficient",
        "baseline_amplitude",
        "floor_offset",
        "floor_slope",
        "noise_sigma",
    )
    @classmethod
    def _range_ordered(cls, v: Range, info) -> Range:
        return _ordered_range(info.field_name, v)

    @field_validator("phase_count_probabilities")
    @classmethod
    def _probabilities(cls, v: tuple[float, ...]) -> tuple[float, ...]:
        if any(p < 0.0 for p in v) or abs(sum(v) - 1.0) > 1e-9:
            raise ValueError(f"phase_count_probabilities {v} must be non-negative and sum to 1")
        return v

    @model_validator(mode="after")
    def _consistent(self) -> RecipeConfig:
        lo, hi = self.preferred_orientation_clip
        if not 0.0 < lo <= 1.0 <= hi:
            raise ValueError(
                f"preferred_orientation_clip {self.preferred_orientation_clip} must contain 1 and start above 0 "
                "(an envelope clipped to 0 erases the phase)"
            )
        if self.microstrain[0] < 0.0:
            raise ValueError(f"microstrain {self.microstrain} must be >= 0")
        if self.crystallite_size_log10_nm[0] < 0.0 or self.crystallite_size_log10_nm[1] > 6.0:
            raise ValueError(
                f"crystallite_size_log10_nm {self.crystallite_size_log10_nm} must lie within [0, 6] "
                "(crystallites of 1 nm to 1 mm; below 1 nm the Scherrer broadening smears every line flat)"
            )
        if self.window_low_deg[0] < 0.0 or self.window_high_deg[1] > 180.0:
            raise ValueError(
                f"window_low_deg {self.window_low_deg} and window_high_deg {self.window_high_deg} must lie "
                "within 0-180° 2θ"
            )
        if self.window_low_deg[1] >= self.window_high_deg[0]:
            raise ValueError(
                f"window_low_deg {self.window_low_deg} must end below window_high_deg {self.window_high_deg}"
            )
        u = self.instrument_u_deg2 + self.instrument_du_deg2[0]
        v = self.instrument_v_deg2 + self.instrument_dv_deg2[0]
        w = self.instrument_w_deg2 + self.instrument_dw_deg2[0]
        if u < 0 or w <= 0:
            raise ValueError(
                "instrument U + ΔU must be >= 0 and W + ΔW must be > 0 (Caglioti FWHM² at 2θ -> 0)"
            )
        # FWHM² = U tan²θ + V tanθ + W must stay positive for every tanθ > 0 with the smallest U, V, W drawn.
        if v < 0 and v * v >= 4.0 * u * w:
            raise ValueError(
                f"instrument_v_deg2 + instrument_dv_deg2 (down to {v:g} deg²) makes the Caglioti FWHM² = "
                f"U tan²θ + V tanθ + W negative at some angle for U = {u:g}, W = {w:g}; raise V or U, W"
            )
        if self.lab is not None and self.engine != "exact":
            raise ValueError(
                "the lab recipe renders with the exact engine (its instrument widths leave the LUT's width range): "
                "set recipe.engine to 'exact'"
            )
        if self.noise_sigma[0] < 0.0 or self.noise_sigma[1] >= 1.0:
            raise ValueError(
                f"noise_sigma {self.noise_sigma} must lie in [0, 1): noise as high as the strongest line "
                "(height 1) buries every peak"
            )
        if self.baseline_amplitude[0] < 0.0:
            raise ValueError(
                f"baseline_amplitude {self.baseline_amplitude} must be >= 0 (a negative amplitude can cancel "
                "the pattern)"
            )
        if self.floor_offset[0] < 0.0 or max(-self.floor_slope[0], self.floor_slope[1]) > 1.0:
            raise ValueError(
                f"floor_offset {self.floor_offset} must be >= 0 and floor_slope {self.floor_slope} within "
                "[-1, 1]: a floor below 0 or tilted by more than the strongest line's height (1) is clipped "
                "away with the peaks"
            )
        return self

    @property
    def n_orientation_basis(self) -> int:
        """Number of envelope basis functions: Chebyshev T_1..T_order plus sin/cos pairs."""
        return self.preferred_orientation_chebyshev_order + 2 * self.preferred_orientation_fourier_terms


# Named recipes: field overrides of RecipeConfig. `lab` replaces the A.1 effects that the lab physics models
# properly (the 2θ envelope by March-Dollase texture, the softplus baseline and floor by curved backgrounds,
# Gaussian noise by Poisson counting) and widens sizes, windows and instrument profiles to laboratory ranges
# (docs/physics.md, "The lab recipe").
RECIPE_PRESETS: dict[str, dict] = {
    "paper": {},
    "lab": {
        "lab": {},
        "preferred_orientation_probability": 0.0,
        "microstrain": (0.0, 0.003),
        # 5 nm - 1 µm: nanocrystalline samples (Scherrer FWHM ~1.7-2.1° at 5 nm, Cu) as well as well-crystallised
        # ones (docs/physics.md, "The lab recipe"; docs/benchmarks.md, "Broad peaks").
        "crystallite_size_log10_nm": (0.7, 3.0),
        "zero_shift_deg": (-0.1, 0.1),
        "instrument_du_deg2": (0.0, 0.01),
        "instrument_dw_deg2": (0.0008, 0.012),
        "window_low_deg": (5.0, 40.0),
        "window_high_deg": (60.0, 120.0),
        "baseline_amplitude": (0.0, 0.0),
        "floor_offset": (0.0, 0.0),
        "floor_slope": (0.0, 0.0),
        "noise_sigma": (0.0, 0.0),
    },
}


def recipe_fields(name: str, overrides: dict) -> dict:
    """RecipeConfig fields of the named recipe (`RECIPE_PRESETS`) with `overrides` on top (a `lab` object is
    merged field by field), not yet validated."""
    if name not in RECIPE_PRESETS:
        raise ValueError(f"unknown recipe {name!r}; known: {', '.join(RECIPE_PRESETS)}")
    if not isinstance(overrides, dict):
        raise ValueError(
            f"recipe must be an object of recipe fields, got {overrides!r}; choose a preset with --recipe "
            f'({" or ".join(RECIPE_PRESETS)}) and give fields as {{"recipe": {{"zero_shift_deg": [-0.05, 0.05]}}}}'
        )
    fields = {**RECIPE_PRESETS[name], **overrides}
    lab_overrides = overrides.get("lab")
    if isinstance(lab_overrides, dict) and "lab" in RECIPE_PRESETS[name]:
        fields["lab"] = {**RECIPE_PRESETS[name]["lab"], **lab_overrides}
    return fields


def recipe_preset(name: str, **overrides) -> RecipeConfig:
    """The named recipe (`RECIPE_PRESETS`) with `overrides` (RecipeConfig fields) on top."""
    return RecipeConfig(**recipe_fields(name, overrides))


def check_recipe_on_grid(recipe: RecipeConfig, grid: GridConfig, wavelength_angstrom: float) -> None:
    """Raise ValueError, naming the recipe field, when `recipe` cannot give a measurable pattern on a bank with
    this grid and wavelength: every window it can draw must hold at least MIN_WINDOW_BINS grid bins, and its
    Scherrer wavelength must be the bank's (the line positions and the broadening must come from one λ)."""
    import numpy as np

    narrow_low, narrow_high = recipe.window_low_deg[1], recipe.window_high_deg[0]
    centers = grid.centers_deg()
    inside = int(np.count_nonzero((centers >= narrow_low) & (centers <= narrow_high)))
    if inside < MIN_WINDOW_BINS:
        raise ValueError(
            f"recipe.window_low_deg {recipe.window_low_deg} and recipe.window_high_deg "
            f"{recipe.window_high_deg} can draw the window {narrow_low:g}-{narrow_high:g}° 2θ, which holds "
            f"{inside} bins of the bank's grid {grid.two_theta_min_deg:g}-{grid.two_theta_max_deg:g}° "
            f"(at least {MIN_WINDOW_BINS} are needed for a measurable pattern): move the windows into the grid"
        )
    if not math.isclose(recipe.wavelength_angstrom, wavelength_angstrom, rel_tol=1e-4):
        raise ValueError(
            f"recipe.wavelength_angstrom ({recipe.wavelength_angstrom:g} Å, the Scherrer broadening) differs "
            f"from the bank's wavelength ({wavelength_angstrom:g} Å, the line positions): set "
            f"recipe.wavelength_angstrom to {wavelength_angstrom:g} in the --config file"
        )


def tiling_chunk_rows(shard_size: int, limit: int) -> int:
    """The largest chunk of at most `limit` rows that tiles a shard of `shard_size` rows (250 for 1000 and 256)."""
    return max(d for d in range(1, min(shard_size, limit) + 1) if shard_size % d == 0)


class GenerateConfig(_Strict):
    """`xrdsynth mixtures generate`: the recipe plus how samples are seeded, sized and stored."""

    recipe: RecipeConfig = Field(default_factory=RecipeConfig, description="The augmentation recipe (A.1).")
    seed: int = Field(
        0, ge=0, description="Master seed; each shard's stream is SeedSequence([seed, split, shard])."
    )
    n_eval: int | None = Field(
        None,
        ge=1,
        description="Samples in each of val, test and in-library; None = 2.5/95 of the train size (section 2.2's "
        "ratio, read as applying to the mixtures as well as to the materials).",
    )
    shard_size: int = Field(
        4096, ge=1, le=1 << 20, description="Samples per shard: one Dask task, one object per array."
    )
    chunk_rows: int = Field(
        256, ge=1, description="Rows per inner chunk, the smallest unit a reader fetches."
    )
    pattern_dtype: Literal["float16", "float32"] = Field(
        "float16",
        description="Stored pattern precision; float16 keeps 3 significant digits of the normalised pattern.",
    )

    @model_validator(mode="after")
    def _chunks_divide_shards(self) -> GenerateConfig:
        if self.shard_size % self.chunk_rows:
            raise ValueError(
                f"chunk_rows ({self.chunk_rows}) must divide shard_size ({self.shard_size}): set chunk_rows to "
                f"{tiling_chunk_rows(self.shard_size, self.chunk_rows)} (the largest divisor up to it) or "
                f"shard_size to a multiple of {self.chunk_rows}"
            )
        return self


# Up to the last @ of the authority (which ends at the first /, ?, # or blank): a password may hold an @ itself.
_URL_USER_INFO = re.compile(r"(?P<scheme>[A-Za-z][A-Za-z0-9+.-]*://)[^/?#\s\"'<>]*@")


def redact_url(url: Any) -> Any:
    """A store URL, or any text naming URLs (a message, a log line), with each URL's user name and password
    (scheme://user:password@host/...) replaced by `***`; anything but a string unchanged. Credentials are used to
    reach a store, never written into one or logged (docs/security.md)."""
    if not isinstance(url, str) or "@" not in url or "://" not in url:
        return url
    return _URL_USER_INFO.sub(r"\g<scheme>***@", url)


def redact_log_record(record: logging.LogRecord) -> bool:
    """A logging filter (``handler.addFilter``) that masks user:password in the URLs a log line names
    (:func:`redact_url`); it keeps every record."""
    try:
        message = record.getMessage()
    except Exception:  # noqa: BLE001 - a malformed log call is logging's to report, not the filter's to raise
        return True
    redacted = redact_url(message)
    if redacted != message:
        record.msg, record.args = redacted, ()
    return True
