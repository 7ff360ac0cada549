"""Wavelength benchmark: does a pattern measured at another wavelength reach the model like a Cu one (issue 12)?

For N single-phase materials of a trained model's bank (its read entries: generated crystals are left out),
simulates one measured-like pattern per material and instrument, each from the crystal structure at the
instrument's own wavelength:

  Cu Kα 1.54184 Å on 5-90°, Mo Kα 0.71073 Å on 2-40°, Ag Kα 0.56 Å on 2-32°, synchrotron 0.459 Å on 1.5-26°
  (all cover d from about 17 Å to 1 Å), at step 0.01°, with the same sample and instrument: crystallite
  100 nm (Scherrer, K = 0.9), Caglioti U = V = 0, W = 0.003 deg² in the instrument's 2θ, TCH pseudo-Voigt,
  a flat background of 1% of the strongest point and Poisson counts (10^4 at the strongest point); plus a
  high-resolution synchrotron (W = 0.0001 deg², 1 µm crystallites, step 0.002° so that its 0.01° peaks are
  sampled finely enough to keep their areas), whose peaks are narrower than any in training, so that the
  reader's broadening has something to do.

Peaks come from `xrdsynth.diffraction.compute_peaks` on the structure, rebuilt from the bank's sources with
`xrdsynth.structures` (the bank stores no structures) and checked against the bank: its Cu peaks must equal
the bank's (count, 2θ within 1e-6°, intensity within 1e-6 relative). A material whose structure cannot be
rebuilt, or disagrees, falls back to the bank's Cu peaks moved through their d-spacings, intensities
re-weighted by LP(θ_λ) / LP(θ_Cu) with LP = (1 + cos²2θ) / (sin²θ cosθ); the report counts both.

Each pattern is written as a two-column .xy with a `# wavelength = ... Angstrom` header and goes through the
real reader: `xrdmodels.measured.read_pattern`, then `xrdmodels.predict.predict_one` (what `xrdmodels
predict` and `score-measured` run) for the reader's defaults, and `xrdmodels.measured.to_model_grid` with
the same grid and the same forward pass for the other reader options (LP re-weighting off, broadening to
the training widths on). The library search (`xrdmodels.library_search.SpectralLibrary` on the same bank,
the classical 1-NN baseline; the phase itself is in that library) is scored on the same files.

Columns: top-1 / top-5 (the true space group is the best / among the 5 best ranked), top-1 as at Cu (same
best group as the Cu pattern of the material with the reader's defaults, right or wrong: consistency
independent of the model's accuracy), input cosine vs Cu (cosine of the gridded, normalised model input with
the Cu one over their common window: how alike the model's inputs are), the share of patterns the reader
warns are narrower / wider than training, and files the reader refused.

Usage: .venv/bin/python pipelines/bench_wavelength.py [--checkpoint PATH] [--bank PATH] [--n 200]
       [--out runs/bench_wavelength/wavelength.md] [--quick]
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import sys
import tempfile
import time
import warnings
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch
import zarr

if TYPE_CHECKING:
    from xrdmodels.measured import GriddedPattern
    from xrdmodels.models.model import SpaceGroupModel

REPO = Path(__file__).resolve().parents[1]
DEFAULT_CHECKPOINTS = (
    REPO / "runs/measured-lab/models/cnn_presence/last.pt",
    REPO / "runs/demo/models/presence/last.pt",
)
SCHERRER_K = 0.9
TOP_K = 5


@dataclass(frozen=True)
class Instrument:
    """A diffractometer: its wavelength, 2θ axis (degrees) and the sample's and its own peak widths."""

    name: str
    wavelength_angstrom: float
    two_theta_min_deg: float
    two_theta_max_deg: float
    step_deg: float = 0.01
    crystallite_nm: float = 100.0
    caglioti_u_deg2: float = 0.0
    caglioti_v_deg2: float = 0.0
    caglioti_w_deg2: float = 0.003

    def axis(self) -> np.ndarray:
        n = round((self.two_theta_max_deg - self.two_theta_min_deg) / self.step_deg) + 1
        return self.two_theta_min_deg + self.step_deg * np.arange(n)


INSTRUMENTS = (
    Instrument("Cu Kα 1.54184 Å, 5-90°", 1.54184, 5.0, 90.0),
    Instrument("Mo Kα 0.71073 Å, 2-40°", 0.71073, 2.0, 40.0),
    Instrument("Ag Kα 0.56 Å, 2-32°", 0.56, 2.0, 32.0),
    Instrument("synchrotron 0.459 Å, 1.5-26°", 0.459, 1.5, 26.0),
    Instrument(
        "synchrotron 0.459 Å high-res (W 1e-4 deg², 1 µm, step 0.002°)",
        0.459,
        1.5,
        26.0,
        step_deg=0.002,
        crystallite_nm=1000.0,
        caglioti_w_deg2=1e-4,
    ),
)


def instruments(lab_caglioti_w_deg2: float) -> tuple[Instrument, ...]:
    """:data:`INSTRUMENTS` with the Caglioti W of the Cu, Mo, Ag and synchrotron ones (not the high-resolution
    one) set to ``lab_caglioti_w_deg2``; 0 leaves only the Scherrer width, the same in d-spacing at every
    wavelength, so their patterns should reach the model as the Cu one does."""
    return tuple(
        dataclasses.replace(inst, caglioti_w_deg2=lab_caglioti_w_deg2)
        if inst.caglioti_w_deg2 == 0.003
        else inst
        for inst in INSTRUMENTS
    )


#: Reader options compared: (label, lp_correction, broaden_to_training); the first is `xrdmodels predict`'s.
READERS = (
    ("reader defaults (LP on, broaden off)", True, False),
    ("LP off", False, False),
    ("broaden on", True, True),
    ("LP off, broaden on", False, True),
)


@dataclass
class Material:
    """One bank entry: its label, and its structure (None: simulated from the bank's peaks instead)."""

    index: int
    entry_id: str
    formula: str
    spacegroup: int
    split: str
    structure: object | None = None
    origin: str = "structure"


@dataclass
class Setup:
    """What a run scored: the checkpoint, its grid (for people), the bank and the materials."""

    checkpoint: Path
    bank: Path
    grid: str
    materials: list[Material]
    instruments: tuple[Instrument, ...]


@dataclass
class Tally:
    """Per (instrument, method): the scores of the patterns scored so far."""

    top1: list[bool] = field(default_factory=list)
    top5: list[bool] = field(default_factory=list)
    same_as_cu: list[bool] = field(default_factory=list)
    cosine_vs_cu: list[float] = field(default_factory=list)
    narrow: int = 0
    wide: int = 0
    failed: list[str] = field(default_factory=list)

    def add(self, truth: int, ranked: list[int]) -> None:
        self.top1.append(bool(ranked) and ranked[0] == truth)
        self.top5.append(truth in ranked[:TOP_K])


# --------------------------------------------------------------------------------------------------------
# Inputs: checkpoint, bank, materials
# --------------------------------------------------------------------------------------------------------


def default_checkpoint() -> Path:
    existing = [p for p in DEFAULT_CHECKPOINTS if p.is_file()]
    if not existing:
        raise SystemExit(
            "no checkpoint given and none of "
            + ", ".join(str(p.relative_to(REPO)) for p in DEFAULT_CHECKPOINTS)
            + " exists; train one (pipelines/demo/run.py) or give --checkpoint PATH"
        )
    return max(existing, key=lambda p: p.stat().st_mtime)


def sibling_bank(checkpoint: Path) -> Path:
    """runs/RUN/models/NAME/last.pt -> runs/RUN/bank.zarr."""
    bank = checkpoint.resolve().parents[2] / "bank.zarr"
    if not bank.exists():
        raise SystemExit(f"{bank} (the bank beside {checkpoint}) does not exist; give --bank PATH")
    return bank


def pick_materials(bank: zarr.Group, n: int, seed: int, split: str) -> list[Material]:
    """``n`` read entries of ``split`` (``all``: any) drawn without replacement, in bank order, labelled as the
    model was trained. Generated crystals (``entries/synthetic``) are left out where the bank holds read ones: a
    measured sample is a real structure, and the library search, the 1-NN column, does not search them."""
    ids = bank["entries/id"][...].tolist()
    splits = bank["entries/split"][...].tolist()
    read = (
        ~np.asarray(bank["entries/synthetic"][...], dtype=bool)
        if "synthetic" in bank["entries"]
        else np.ones(len(ids), dtype=bool)
    )
    if not read.any():
        read[:] = True
    pool = np.flatnonzero([split in ("all", s) and r for s, r in zip(splits, read, strict=True)])
    if pool.size == 0:
        raise SystemExit(f"the bank holds no read entry of split {split!r}; choose another --split")
    picks = np.sort(np.random.default_rng(seed).choice(pool, size=min(n, pool.size), replace=False))
    formulas = bank["entries/reduced_formula"][...].tolist()
    groups = np.asarray(bank["entries/spacegroup_number"][...])
    return [Material(int(i), str(ids[i]), str(formulas[i]), int(groups[i]), str(splits[i])) for i in picks]


def bank_peaks(bank: zarr.Group, index: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(2θ at the bank's wavelength, d-spacing, intensity) of one bank entry."""
    lo, hi = (int(v) for v in bank["peaks/offsets"][index : index + 2])
    return (
        np.asarray(bank["peaks/two_theta_deg"][lo:hi]),
        np.asarray(bank["peaks/d_spacing_angstrom"][lo:hi]),
        np.asarray(bank["peaks/intensity"][lo:hi]),
    )


def attach_structures(bank: zarr.Group, materials: list[Material]) -> None:
    """Rebuild each material's structure from its bank source and keep it when its Cu peaks are the bank's."""
    from xrdsynth.diffraction import compute_peaks
    from xrdsynth.structures import list_items, load_entry

    seed = int(bank.attrs.get("seed", 0))
    grid = bank.attrs["grid"]
    bank_range = (float(grid["two_theta_min_deg"]), float(grid["two_theta_max_deg"]))
    bank_wavelength = float(bank.attrs["wavelength_angstrom"])
    max_sites = int(bank.attrs.get("config", {}).get("max_sites", 1000))
    sources = bank["entries/source"][...].tolist()
    items_by_source: dict[str, dict[str, object] | str] = {}
    for material in materials:
        source = str(sources[material.index])
        if source not in items_by_source:
            try:
                items_by_source[source] = {item.entry_id: item for item in list_items(source, seed=seed)}
            except ValueError as exc:
                items_by_source[source] = f"source {source!r} cannot be listed here ({exc})"
        listed = items_by_source[source]
        if isinstance(listed, str):
            material.origin = listed
            continue
        item = listed.get(material.entry_id)
        if item is None:
            material.origin = f"{material.entry_id} is no longer in source {source!r}"
            continue
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                structure = load_entry(item, seed=seed, max_sites=max_sites).structure
                cu = compute_peaks(structure, bank_wavelength, bank_range)
        except ValueError as exc:
            material.origin = f"structure cannot be loaded ({exc})"
            continue
        two_theta, _, intensity = bank_peaks(bank, material.index)
        if not (
            cu.two_theta_deg.shape == two_theta.shape
            and np.all(np.abs(cu.two_theta_deg - two_theta) <= 1e-6)
            and np.all(np.abs(cu.intensity - intensity) <= 1e-6 * intensity)
        ):
            material.origin = "rebuilt structure's peaks differ from the bank's"
            continue
        material.structure = structure


# --------------------------------------------------------------------------------------------------------
# Simulated measurements
# --------------------------------------------------------------------------------------------------------


def lorentz_polarisation(two_theta_deg: np.ndarray) -> np.ndarray:
    """LP(θ) = (1 + cos²2θ) / (sin²θ cosθ), unpolarised beam (pymatgen's XRDCalculator)."""
    theta = np.radians(two_theta_deg) / 2.0
    return (1.0 + np.cos(2.0 * theta) ** 2) / (np.sin(theta) ** 2 * np.cos(theta))


def peaks_at(material: Material, bank: zarr.Group, instrument: Instrument) -> tuple[np.ndarray, np.ndarray]:
    """(2θ, integrated intensity) of the material's peaks at the instrument's wavelength and range."""
    lo, hi, wavelength = (
        instrument.two_theta_min_deg,
        instrument.two_theta_max_deg,
        instrument.wavelength_angstrom,
    )
    if material.structure is not None:
        from xrdsynth.diffraction import compute_peaks

        peaks = compute_peaks(material.structure, wavelength, (lo, hi))
        return peaks.two_theta_deg, peaks.intensity
    two_theta_bank, d_spacing, intensity = bank_peaks(bank, material.index)
    return peaks_through_d_spacing(two_theta_bank, d_spacing, intensity, wavelength, (lo, hi))


def peaks_through_d_spacing(
    two_theta_deg: np.ndarray,
    d_spacing_angstrom: np.ndarray,
    intensity: np.ndarray,
    wavelength_angstrom: float,
    two_theta_range_deg: tuple[float, float],
) -> tuple[np.ndarray, np.ndarray]:
    """(2θ, integrated intensity) at ``wavelength_angstrom`` of peaks computed at another wavelength (at
    ``two_theta_deg``): positions through their d-spacings, intensities times LP(θ_new) / LP(θ_old), since
    |F|² and the multiplicity do not depend on the wavelength; only peaks inside the range are kept."""
    sin_theta = wavelength_angstrom / (2.0 * d_spacing_angstrom)
    reachable = sin_theta < 1.0
    moved = np.full(d_spacing_angstrom.shape, np.nan)
    moved[reachable] = 2.0 * np.degrees(np.arcsin(sin_theta[reachable]))
    lo, hi = two_theta_range_deg
    inside = reachable & (moved >= lo) & (moved <= hi)
    reweighted = (
        intensity[inside] * lorentz_polarisation(moved[inside]) / lorentz_polarisation(two_theta_deg[inside])
    )
    return moved[inside], reweighted


def render(instrument: Instrument, two_theta_deg: np.ndarray, area: np.ndarray) -> np.ndarray:
    """Clean pattern on the instrument's axis: each peak a unit-area TCH pseudo-Voigt times its intensity,
    with widths in the instrument's 2θ (Scherrer at its wavelength, Caglioti in its degrees)."""
    from xrdsynth.profiles import stick_fwhm_eta_deg

    axis = instrument.axis()
    fwhm, eta, _ = stick_fwhm_eta_deg(
        two_theta_deg,
        microstrain=0.0,
        crystallite_size_nm=instrument.crystallite_nm,
        caglioti_u_deg2=instrument.caglioti_u_deg2,
        caglioti_v_deg2=instrument.caglioti_v_deg2,
        caglioti_w_deg2=instrument.caglioti_w_deg2,
        scherrer_k=SCHERRER_K,
        wavelength_angstrom=instrument.wavelength_angstrom,
    )
    out = np.zeros(axis.size)
    for lo in range(0, two_theta_deg.size, 128):
        sl = slice(lo, lo + 128)
        x2 = ((axis[None, :] - two_theta_deg[sl, None]) / fwhm[sl, None]) ** 2
        gaussian = math.sqrt(4.0 * math.log(2.0) / math.pi) * np.exp(-4.0 * math.log(2.0) * x2)
        lorentzian = (2.0 / math.pi) / (1.0 + 4.0 * x2)
        shape = (eta[sl, None] * lorentzian + (1.0 - eta[sl, None]) * gaussian) / fwhm[sl, None]
        out += area[sl] @ shape
    return out


def measure(clean: np.ndarray, rng: np.random.Generator, background: float, peak_counts: float) -> np.ndarray:
    """Counts: the clean pattern scaled to ``peak_counts`` at its maximum over a flat background of
    ``background`` of it, drawn as Poisson counts; without noise (``peak_counts`` <= 0), scaled to 1."""
    expected = clean / clean.max() + background
    if peak_counts <= 0:
        return expected
    return rng.poisson(expected * peak_counts).astype(np.float64)


def write_xy(path: Path, wavelength_angstrom: float, two_theta_deg: np.ndarray, counts: np.ndarray) -> None:
    """Two-column text with the wavelength in a header line the reader understands."""
    lines = [f"# wavelength = {wavelength_angstrom} Angstrom"]
    lines += [f"{x:.4f} {y:.6g}" for x, y in zip(two_theta_deg, counts, strict=True)]
    path.write_text("\n".join(lines) + "\n")


# --------------------------------------------------------------------------------------------------------
# Scoring
# --------------------------------------------------------------------------------------------------------


@torch.no_grad()
def rank_gridded(model: SpaceGroupModel, gridded: GriddedPattern, n_bins: int) -> list[int]:
    """Space groups (1-230) best first for a gridded pattern: the forward pass and ranking of predict_one."""
    from xrdmodels.evaluate import set_scores
    from xrdmodels.metrics import rank_classes

    x = torch.from_numpy(gridded.pattern[None, :].astype(np.float32))
    mask = torch.zeros(1, n_bins, dtype=torch.bool)
    mask[0, gridded.window_bins[0] : gridded.window_bins[1]] = True
    scores = set_scores(model(x, mask))
    return [int(c) + 1 for c in rank_classes(scores)[0]]


def width_flags(warnings_: list[str]) -> tuple[bool, bool]:
    """Whether the reader warned that the strong peaks are (narrower, wider) than any in training."""
    return (
        any(w.startswith("peaks narrower than any in training") for w in warnings_),
        any(w.startswith("peaks wider than any in training") for w in warnings_),
    )


def window_cosine(a: GriddedPattern, b: GriddedPattern) -> float:
    """Cosine of two gridded patterns over their common window (NaN when they share no bin)."""
    lo, hi = max(a.window_bins[0], b.window_bins[0]), min(a.window_bins[1], b.window_bins[1])
    if hi <= lo:
        return float("nan")
    x, y = a.pattern[lo:hi].astype(np.float64), b.pattern[lo:hi].astype(np.float64)
    norm = np.linalg.norm(x) * np.linalg.norm(y)
    return float(x @ y / norm) if norm > 0 else float("nan")


def run_bench(args: argparse.Namespace) -> str:
    """Simulate, read and score every material at every instrument; returns the markdown report."""
    from xrdmodels.checkpoint import CheckpointError
    from xrdmodels.evaluate import load_model
    from xrdmodels.library_search import LibraryFormatError, SpectralLibrary
    from xrdmodels.measured import read_pattern, to_model_grid
    from xrdmodels.predict import model_grid, predict_one

    t0 = time.perf_counter()
    checkpoint = Path(args.checkpoint) if args.checkpoint else default_checkpoint()
    bank_url = Path(args.bank) if args.bank else sibling_bank(checkpoint)
    try:
        model, state = load_model(checkpoint)
    except (CheckpointError, OSError) as exc:
        raise SystemExit(f"cannot load the checkpoint {checkpoint}: {exc}") from None
    lo, hi, n_bins, model_wavelength = model_grid(state)
    if not (bank_url / "zarr.json").is_file():
        raise SystemExit(f"{bank_url} is not a bank store (no zarr.json); give the model's bank with --bank")
    bank = zarr.open_group(str(bank_url), mode="r")
    try:
        library: SpectralLibrary | None = SpectralLibrary.open(str(bank_url))
        library_note = ""
    except LibraryFormatError as exc:
        library, library_note = None, f"library search not run: {exc}"
    materials = pick_materials(bank, args.n, args.seed, args.split)
    attach_structures(bank, materials)
    t_setup = time.perf_counter() - t0
    print(
        f"checkpoint {checkpoint}, bank {bank_url}: {len(materials)} materials in {t_setup:.0f} s", flush=True
    )

    methods = [label for label, _, _ in READERS] + ["library search (1-NN)"]
    simulated = instruments(args.caglioti_w)
    tallies = {(inst.name, m): Tally() for inst in simulated for m in methods}
    cu_gridded: dict[int, GriddedPattern] = {}
    cu_top1: dict[int, int] = {}
    grid_args = dict(
        model_wavelength_angstrom=model_wavelength, two_theta_min_deg=lo, two_theta_max_deg=hi, n_bins=n_bins
    )
    timings: dict[str, float] = defaultdict(float)
    with tempfile.TemporaryDirectory(dir=args.patterns_dir) as tmp:
        for k, instrument in enumerate(simulated):
            for material in materials:
                t = time.perf_counter()
                rng = np.random.default_rng([args.seed, material.index, k])
                two_theta, intensity = peaks_at(material, bank, instrument)
                if two_theta.size == 0:
                    for m in methods:
                        tallies[instrument.name, m].failed.append(f"{material.entry_id}: no peak in range")
                    continue
                counts = measure(
                    render(instrument, two_theta, intensity), rng, args.background, args.peak_counts
                )
                path = Path(tmp) / f"{k}-{material.index}.xy"
                write_xy(path, instrument.wavelength_angstrom, instrument.axis(), counts)
                timings["simulate and write"] += time.perf_counter() - t
                t = time.perf_counter()
                pattern = read_pattern(path)
                if pattern.wavelength_angstrom != instrument.wavelength_angstrom:
                    raise SystemExit(
                        f"reader bug: {path} states wavelength {instrument.wavelength_angstrom} Å, the reader "
                        f"returned {pattern.wavelength_angstrom}"
                    )
                timings["read"] += time.perf_counter() - t
                t = time.perf_counter()
                for label, lp_correction, broaden in READERS:
                    tally = tallies[instrument.name, label]
                    try:
                        if (lp_correction, broaden) == (True, False):
                            prediction, gridded = predict_one(
                                model, state, pattern, wavelength_angstrom=None, top_k=TOP_K
                            )
                            ranked = [r.spacegroup for r in prediction.ranked]
                        else:
                            gridded = to_model_grid(
                                pattern,
                                wavelength_angstrom=None,
                                lp_correction=lp_correction,
                                broaden_to_training=broaden,
                                **grid_args,
                            )
                            ranked = rank_gridded(model, gridded, n_bins)
                    except (
                        ValueError
                    ) as exc:  # the reader's refusals (MeasuredSignalError, ...) are ValueErrors
                        tally.failed.append(f"{material.entry_id}: {exc}")
                        continue
                    tally.add(material.spacegroup, ranked)
                    narrow, wide = width_flags(gridded.warnings)
                    tally.narrow += narrow
                    tally.wide += wide
                    if k == 0 and label == READERS[0][0]:
                        cu_gridded[material.index], cu_top1[material.index] = gridded, ranked[0]
                    if material.index in cu_gridded:
                        tally.same_as_cu.append(ranked[0] == cu_top1[material.index])
                        tally.cosine_vs_cu.append(window_cosine(gridded, cu_gridded[material.index]))
                timings["reader and model"] += time.perf_counter() - t
                if library is not None:
                    t = time.perf_counter()
                    tally = tallies[instrument.name, methods[-1]]
                    try:
                        found = library.search(pattern)
                        tally.add(material.spacegroup, [m.spacegroup for m in found.ranked])
                    except ValueError as exc:
                        tally.failed.append(f"{material.entry_id}: {exc}")
                    timings["library search"] += time.perf_counter() - t
            print(f"[{instrument.name}] done at {time.perf_counter() - t0:.0f} s", flush=True)

    setup = Setup(
        checkpoint, bank_url, f"{lo:g}-{hi:g}° in {n_bins} bins at {model_wavelength} Å", materials, simulated
    )
    return report(args, setup, tallies, methods, library_note, timings, time.perf_counter() - t0)


def mean(values: list[bool] | list[float]) -> str:
    """Mean over the finite values, 3 decimals; empty when there is none."""
    finite = [v for v in values if not (isinstance(v, float) and math.isnan(v))]
    return f"{np.mean(finite):.3f}" if finite else ""


def report(
    args: argparse.Namespace,
    setup: Setup,
    tallies: dict[tuple[str, str], Tally],
    methods: list[str],
    library_note: str,
    timings: dict[str, float],
    total_s: float,
) -> str:
    """The markdown report: what was run, then one table row per instrument and method."""
    materials = setup.materials
    origins: dict[str, int] = defaultdict(int)
    for material in materials:
        origins[material.origin] += 1
    splits: dict[str, int] = defaultdict(int)
    for material in materials:
        splits[material.split] += 1
    noise = (
        f"Poisson counts, {args.peak_counts:g} at the strongest point" if args.peak_counts > 0 else "no noise"
    )
    lines = [
        f"Checkpoint `{setup.checkpoint}` (grid {setup.grid}), "
        f"bank `{setup.bank}`; {len(materials)} single-phase materials (seed {args.seed}; splits "
        + ", ".join(f"{k} {v}" for k, v in sorted(splits.items()))
        + "); peaks from "
        + "; ".join(
            f"{'the rebuilt structure (Cu peaks equal to the bank)' if k == 'structure' else 'bank peaks via d-spacing and LP, because ' + k}: {v}"
            for k, v in sorted(origins.items())
        )
        + f". Crystallite 100 nm, Caglioti W {args.caglioti_w:g} deg² (in each instrument's 2θ) but where the "
        f"row says otherwise; background {100 * args.background:g}% of the strongest point, {noise}. "
        f"{total_s:.0f} s in all (" + ", ".join(f"{k} {v:.0f} s" for k, v in timings.items()) + ").",
        "",
        "| instrument | method | top-1 | top-5 | top-1 as at Cu | input cosine vs Cu | narrower / wider warnings | refused |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for instrument in setup.instruments:
        for m in methods:
            tally = tallies[instrument.name, m]
            scored = len(tally.top1)
            if not scored and not tally.failed:
                continue
            library = m == methods[-1]
            lines.append(
                f"| {instrument.name} | {m} | {mean(tally.top1)} | {mean(tally.top5)} | "
                f"{'' if library else mean(tally.same_as_cu)} | {'' if library else mean(tally.cosine_vs_cu)} | "
                + (
                    ""
                    if library
                    else f"{tally.narrow / max(scored, 1):.2f} / {tally.wide / max(scored, 1):.2f}"
                )
                + f" | {len(tally.failed)} |"
            )
    if library_note:
        lines += ["", library_note]
    refusals = [f"{name} / {m}: {tally.failed[0]}" for (name, m), tally in tallies.items() if tally.failed]
    if refusals:
        lines += ["", "First refusal of each row:", ""] + [f"- {r}" for r in refusals]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--checkpoint",
        help="trained checkpoint (default: the newest of "
        + ", ".join(str(p.relative_to(REPO)) for p in DEFAULT_CHECKPOINTS)
        + ")",
    )
    parser.add_argument("--bank", help="its bank store (default: bank.zarr of the checkpoint's run)")
    parser.add_argument("--n", type=int, default=200, help="single-phase materials of the bank")
    parser.add_argument(
        "--split",
        default="all",
        choices=["all", "train", "val", "test"],
        help="draw materials from this split",
    )
    parser.add_argument("--seed", type=int, default=0, help="material draw and counting noise")
    parser.add_argument(
        "--caglioti-w",
        type=float,
        default=0.003,
        help="Caglioti W (deg² of the instrument's 2θ) of all but the high-resolution instrument; 0 with "
        "--peak-counts 0 --background 0 checks the reader's mapping alone",
    )
    parser.add_argument("--background", type=float, default=0.01, help="flat background / strongest point")
    parser.add_argument(
        "--peak-counts", type=float, default=1e4, help="Poisson counts at the strongest point (0: no noise)"
    )
    parser.add_argument("--out", default="runs/bench_wavelength/wavelength.md", help="markdown report")
    parser.add_argument("--patterns-dir", help="where the temporary .xy files go (default: the system's)")
    parser.add_argument("--threads", type=int, default=2, help="torch intra-op threads")
    parser.add_argument("--quick", action="store_true", help="smoke run: 20 materials")
    args = parser.parse_args(argv)
    if args.quick:
        args.n = 20
    if args.n < 1:
        parser.error(f"--n must be at least 1, got {args.n}")
    torch.set_num_threads(args.threads)
    table = run_bench(args)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(f"# Wavelength benchmark (`pipelines/bench_wavelength.py`)\n\n{table}\n")
    print(f"\n{table}\n\nwritten to {out}", flush=True)


if __name__ == "__main__":
    sys.exit(main())
