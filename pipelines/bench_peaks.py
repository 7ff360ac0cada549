"""Benchmark xrdsynth.diffraction against pymatgen's XRDCalculator on the shared CIF collection.

1. Loads N curated CIFs (evenly spaced over bgmn, iucr, xrd_autoanalyzer, robocrys, aflow; parsing is not
   timed), then times pymatgen ``XRDCalculator("CuKa").get_pattern(s, two_theta_range=(5, 120))`` and
   ``xrdsynth.diffraction.compute_peaks`` on one core, alternating in blocks so that load from other
   processes hits both alike, and checks that every pattern agrees (peak count, 2-theta within 1e-6 deg,
   intensities within 1e-6 relative per peak).
2. Times ``compute_peaks_arrays`` on a bulk of structures (cycling through the loaded ones) in a pool of
   worker processes and prints the wall time, worker start-up included.

Usage: ``python pipelines/bench_peaks.py [--n-structures 600] [--n-bulk 10000] [--processes 2] [--quick]``
"""

from __future__ import annotations

import argparse
import itertools
import time
import warnings
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np
from pymatgen.analysis.diffraction.xrd import WAVELENGTHS, XRDCalculator
from pymatgen.core import Structure
from pymatgen.io.cif import CifParser

from xrdsynth.diffraction import Peaks, compute_peaks, compute_peaks_arrays, structure_to_arrays

REPO = Path(__file__).resolve().parents[1]
STRUCTURES = REPO.parent / "shared" / "data" / "structures"
CIF_SOURCES = ("bgmn", "iucr", "xrd_autoanalyzer", "robocrys", "aflow")
TWO_THETA_RANGE_DEG = (5.0, 120.0)
BLOCK = 25  # structures per timing block; pymatgen and xrdsynth alternate block by block


def load_structures(n_structures: int) -> tuple[list[str], list[Structure]]:
    """Parse ``n_structures`` CIFs spread evenly over the curated collection (sorted by path)."""
    paths = sorted(p for source in CIF_SOURCES for p in (STRUCTURES / source).glob("*.cif"))
    if not paths:
        raise SystemExit(
            f"no CIFs under {STRUCTURES}/{{{','.join(CIF_SOURCES)}}}; is shared/ next to the repo?"
        )
    picks = np.unique(np.linspace(0, len(paths) - 1, min(n_structures, len(paths))).round().astype(int))
    structures = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for index in picks:
            structures.append(CifParser(paths[index]).parse_structures(primitive=False)[0])
    return [str(paths[i].relative_to(STRUCTURES)) for i in picks], structures


def patterns_agree(ours: Peaks, x: np.ndarray, y: np.ndarray) -> bool:
    """Same peak count, 2-theta within 1e-6 deg, intensity within 1e-6 relative per peak."""
    return (
        ours.two_theta_deg.shape == x.shape
        and bool(np.all(np.abs(ours.two_theta_deg - x) <= 1e-6))
        and bool(np.all(np.abs(ours.intensity - y) <= 1e-6 * y))
    )


def compare_single_core(names: list[str], structures: list[Structure]) -> None:
    """Time both calculators structure by structure and verify the outputs."""
    calculator = XRDCalculator("CuKa")
    wavelength = WAVELENGTHS["CuKa"]
    compute_peaks(structures[0], wavelength, TWO_THETA_RANGE_DEG)  # JIT compile / load the numba cache
    pymatgen_s = np.empty(len(structures))
    ours_s = np.empty(len(structures))
    references: list[tuple[np.ndarray, np.ndarray]] = []
    results: list[Peaks] = []
    for start in range(0, len(structures), BLOCK):
        block = range(start, min(start + BLOCK, len(structures)))
        for i in block:
            t0 = time.perf_counter()
            pattern = calculator.get_pattern(structures[i], two_theta_range=TWO_THETA_RANGE_DEG)
            pymatgen_s[i] = time.perf_counter() - t0
            references.append((np.asarray(pattern.x), np.asarray(pattern.y)))
        for i in block:
            t0 = time.perf_counter()
            results.append(compute_peaks(structures[i], wavelength, TWO_THETA_RANGE_DEG))
            ours_s[i] = time.perf_counter() - t0

    mismatched = [
        name
        for name, ours, (x, y) in zip(names, results, references, strict=True)
        if not patterns_agree(ours, x, y)
    ]
    n_sites = np.array([len(s) for s in structures])
    print(f"structures: {len(structures)} (mean {n_sites.mean():.1f} sites, max {n_sites.max()})")
    print(
        f"pymatgen XRDCalculator.get_pattern: mean {pymatgen_s.mean() * 1e3:8.3f} ms/structure, "
        f"median {np.median(pymatgen_s) * 1e3:8.3f} ms"
    )
    print(
        f"xrdsynth compute_peaks:             mean {ours_s.mean() * 1e3:8.3f} ms/structure, "
        f"median {np.median(ours_s) * 1e3:8.3f} ms"
    )
    print(
        f"speed-up (ratio of totals): {pymatgen_s.sum() / ours_s.sum():.1f}x; "
        f"median per-structure ratio {np.median(pymatgen_s / ours_s):.1f}x"
    )
    print(f"outputs identical within tolerance: {len(structures) - len(mismatched)}/{len(structures)}")
    if mismatched:
        print(f"MISMATCHED: {mismatched}")


def _peak_count(arrays) -> int:
    return compute_peaks_arrays(arrays, WAVELENGTHS["CuKa"], TWO_THETA_RANGE_DEG).two_theta_deg.shape[0]


def time_bulk(structures: list[Structure], n_bulk: int, processes: int) -> None:
    """Wall time for ``n_bulk`` patterns in ``processes`` worker processes (start-up included)."""
    arrays = [structure_to_arrays(s) for s in structures]
    jobs = list(itertools.islice(itertools.cycle(arrays), n_bulk))
    t0 = time.perf_counter()
    with ProcessPoolExecutor(max_workers=processes) as pool:
        n_peaks = sum(pool.map(_peak_count, jobs, chunksize=64))
    wall = time.perf_counter() - t0
    print(
        f"bulk: {n_bulk} structures on {processes} processes in {wall:.1f} s wall "
        f"({wall / n_bulk * 1e3:.3f} ms/structure wall, {n_peaks} peaks in total)"
    )


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--n-structures", type=int, default=600, help="CIFs to load and compare (default 600)"
    )
    parser.add_argument("--n-bulk", type=int, default=10_000, help="patterns in the multi-process run")
    parser.add_argument("--processes", type=int, default=2, help="worker processes for the bulk run")
    parser.add_argument("--quick", action="store_true", help="smoke run: 60 structures, 1,000 bulk patterns")
    args = parser.parse_args(argv)
    n_structures, n_bulk = (60, 1_000) if args.quick else (args.n_structures, args.n_bulk)

    t0 = time.perf_counter()
    names, structures = load_structures(n_structures)
    print(f"parsed {len(structures)} CIFs in {time.perf_counter() - t0:.1f} s (not timed below)")
    compare_single_core(names, structures)
    time_bulk(structures, n_bulk, args.processes)


if __name__ == "__main__":
    main()
