"""How noisy measured patterns are against training mixtures, measured the same way on the model's input grid
(docs/benchmarks.md, "Counting noise").

The statistic is a robust per-bin noise: 1.4826 · MAD of the first differences / √2 over a pattern's window,
after the normalisation every pattern gets before the model (divided by its in-window 99th percentile). Most
bins are background, so the median ignores the peaks. Measured files go through `to_model_grid` exactly as
`score-measured` reads them (Cu Kα 1.5418 Å assumed, the shared sets' radiation); store patterns are read as
stored (float16, already normalised), single-phase mixtures on their own and all mixtures together.

Usage: .venv/bin/python pipelines/measured/noise_levels.py [--measured ../shared/data/experimental]
           [--stores runs/a/mixtures/train.zarr ...] [--n 6000]
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import zarr

from xrdmodels.measured.grid import to_model_grid
from xrdmodels.measured.registry import read_pattern

PERCENTILES = (10, 25, 50, 75, 90, 95, 99)
MEASURED_WAVELENGTH_ANGSTROM = 1.5418


def robust_noise(values: np.ndarray) -> float:
    """Standard deviation of i.i.d. bin noise estimated from the MAD of first differences."""
    d = np.diff(values)
    return float(1.4826 * np.median(np.abs(d - np.median(d))) / np.sqrt(2.0))


def measured_noise(folder: Path, grid: dict) -> list[float]:
    noise = []
    for path in sorted(folder.glob("*.xy")):
        gridded = to_model_grid(read_pattern(path), wavelength_angstrom=MEASURED_WAVELENGTH_ANGSTROM, **grid)
        lo, hi = gridded.window_bins
        noise.append(robust_noise(np.asarray(gridded.pattern, dtype=np.float64)[lo:hi]))
    return noise


def row(name: str, noise) -> str:
    values = np.percentile(np.asarray(noise), PERCENTILES)
    return f"| {name} | {len(noise)} | " + " | ".join(f"{v:.4f}" for v in values) + " |"


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--measured",
        type=Path,
        default=Path(__file__).resolve().parents[3] / "shared" / "data" / "experimental",
        help="folder of the shared measured sets (one sub-folder of .xy files per set)",
    )
    parser.add_argument("--stores", nargs="*", type=Path, default=[], help="mixture stores (train.zarr)")
    parser.add_argument("--n", type=int, default=6000, help="patterns read from the start of each store")
    args = parser.parse_args()

    print("| patterns | n | " + " | ".join(f"p{p}" for p in PERCENTILES) + " |")
    print("|---|---|" + "---|" * len(PERCENTILES))
    # Measured files go onto the stores' grid and wavelength (the last store's; without stores the A.1 grid, Cu Kα).
    grid = {"model_wavelength_angstrom": 1.54184, "two_theta_min_deg": 5.0, "two_theta_max_deg": 120.0,
            "n_bins": 2048}  # fmt: skip
    for store_path in args.stores:
        store = zarr.open_group(str(store_path), mode="r")
        grid = {"model_wavelength_angstrom": store.attrs["wavelength_angstrom"], **store.attrs["grid"]}
        patterns = store["pattern"][: args.n].astype(np.float64)
        windows = store["window_bins"][: args.n]
        n_phases = store["n_phases"][: args.n]
        noise = np.array([robust_noise(p[lo:hi]) for p, (lo, hi) in zip(patterns, windows, strict=True)])
        print(row(f"{store_path} single-phase", noise[n_phases == 1]))
        print(row(f"{store_path} all", noise))
    if not args.measured.is_dir():
        print(f"(no measured sets at {args.measured}: measured rows skipped)")
        return
    for folder in sorted(p for p in args.measured.iterdir() if p.is_dir()):
        noise = measured_noise(folder, grid)
        if noise:
            print(row(folder.name, noise))


if __name__ == "__main__":
    main()
