"""Fit the library search's calibration for the combined ranking (xrdmodels/combined.py) on labelled measured files.

Searches every single-phase file of a labels CSV (default: RRUFF dev of ../shared/data/experimental) against a
bank, then fits a logistic regression of "the library's best group is a labelled one" on that group's figure of
merit (cosine): q(c) = 1 / (1 + exp(-slope (c - midpoint))). Prints the fit on all files and on each half (even /
odd rows), and the fraction right per cosine band, beside the constants combined.py ships.

Usage: .venv/bin/python pipelines/fit_library_calibration.py --bank runs/measured-lab/bank.zarr [--set rruff]
       [--cell-scan 0.03]
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from xrdmodels.combined import LIBRARY_FOM_MIDPOINT, LIBRARY_FOM_SLOPE
from xrdmodels.config import DEFAULT_LIBRARY_CELL_SCAN
from xrdmodels.library_search import SpectralLibrary
from xrdmodels.measured_eval import read_labelled

LABELS = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "experimental" / "all_labels.csv"


def fit_logistic(fom: np.ndarray, right: np.ndarray) -> tuple[float, float]:
    """(slope, midpoint) of the maximum-likelihood logistic regression of `right` on `fom` (Newton's method)."""
    x = np.stack([np.ones_like(fom), fom], axis=1)
    w = np.zeros(2)
    for _ in range(50):
        p = 1.0 / (1.0 + np.exp(-x @ w))
        hessian = (x * (p * (1.0 - p))[:, None]).T @ x
        w += np.linalg.solve(hessian, x.T @ (right - p))
    return float(w[1]), float(-w[0] / w[1])


def print_fits(what: str, x: np.ndarray, right: np.ndarray) -> None:
    """Print the logistic fit of `right` on `x` over all files and over the even and the odd rows."""
    for name, rows in (
        ("all", slice(None)),
        ("even rows", slice(0, None, 2)),
        ("odd rows", slice(1, None, 2)),
    ):
        slope, midpoint = fit_logistic(x[rows], right[rows])
        print(f"  {what}fit on {name:9s}: slope {slope:.1f}, midpoint {midpoint:.3f}")


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--bank", required=True, help="bank store searched (the library)")
    parser.add_argument(
        "--labels", default=str(LABELS), help="labels CSV (default ../shared/.../all_labels.csv)"
    )
    parser.add_argument("--set", default="rruff", help="set of the labels CSV to fit on (default rruff)")
    parser.add_argument(
        "--cell-scan",
        type=float,
        default=DEFAULT_LIBRARY_CELL_SCAN,
        help=f"the search's cell scan, a fraction of d (default {DEFAULT_LIBRARY_CELL_SCAN}, what predict and "
        "score-measured use; the constants combined.py ships were fitted at it)",
    )
    args = parser.parse_args()
    library = SpectralLibrary.open(args.bank)
    labelled, failures = read_labelled(args.labels, sets=[args.set])
    for file, reason in failures:
        print(f"skipped {file}: {reason}")
    foms, right = [], []
    for item in labelled:
        if len(item.phases) != 1:
            continue
        found = library.search(
            item.pattern, wavelength_angstrom=item.wavelength_angstrom, top_k=1, cell_scan=args.cell_scan
        )
        best = found.ranked[0]
        foms.append(best.score)
        right.append(float(best.spacegroup in item.phases[0]))
    fom, hit = np.array(foms), np.array(right)
    print(
        f"{len(fom)} single-phase files of set {args.set!r}; the library's best group right in {hit.mean():.3f}"
    )
    print_fits("", fom, hit)
    print(f"  combined.py ships: slope {LIBRARY_FOM_SLOPE}, midpoint {LIBRARY_FOM_MIDPOINT}")
    for low in np.arange(0.0, 1.0, 0.1):
        band = (fom >= low) & (fom < low + 0.1 + (1e-9 if low >= 0.9 else 0.0))
        if band.any():
            print(f"  cosine {low:.1f}-{low + 0.1:.1f}: {band.sum():4d} files, right {hit[band].mean():.2f}")


if __name__ == "__main__":
    main()
