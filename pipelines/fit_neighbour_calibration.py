"""Fit the neighbour search's calibration for the combined ranking (xrdmodels/neighbours.py) on labelled measured files.

For each checkpoint, compares every single-phase file of a labels CSV (default: RRUFF dev of
../shared/data/experimental) with a bank's read phases in that model's eyes (or, with `--memory`, with the
checkpoint's own memory of its training phases, `xrdmodels add-memory`), scanning cells as far as `--cell-scan`
(default 3%, what predict does), then fits a logistic regression of
"the best group is a labelled one" on its margin over the best other group: q(m) = 1 / (1 + exp(-slope (m -
midpoint))). Prints, per checkpoint, the fit on all files and on each half (even / odd rows), the fit on the best
cosine itself (whose midpoint moves from model to model, which is why the margin is used), and the constants
neighbours.py ships.

With `--store STORE` the patterns are the first `--samples` single-phase rows of a mixture store instead of measured
files, a fit that no measured pattern has seen; the label is the row's phase's space group. The measured pipeline's
`in_library.zarr` holds mixtures of the bank's training split. Their read phases are those a memory keeps; its
generated crystals (24% of runs/mem29's single-phase rows) the memory leaves out and can only get wrong.

Usage: .venv/bin/python pipelines/fit_neighbour_calibration.py --bank runs/ionic20/bank.zarr
           --checkpoint runs/ionic20/models/cnn_presence/last.pt [--checkpoint ...] [--set rruff] [--cell-scan 0]
       .venv/bin/python pipelines/fit_neighbour_calibration.py --memory --checkpoint runs/mem29/models/cnn_presence/model.pt
           [--store runs/mem29/mixtures/in_library.zarr --samples 1000]
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
from fit_library_calibration import LABELS, fit_logistic, print_fits

from xrdmodels.config import DEFAULT_LIBRARY_CELL_SCAN
from xrdmodels.data import MixtureStore
from xrdmodels.evaluate import load_model
from xrdmodels.library_search import SpectralLibrary
from xrdmodels.measured_eval import read_labelled
from xrdmodels.neighbours import (
    NEIGHBOUR_MARGIN_MIDPOINT,
    NEIGHBOUR_MARGIN_SLOPE,
    NeighbourSearch,
    ReferencePhases,
)
from xrdmodels.predict import memory_search, model_grid, predict_one
from xrdmodels.train import check_grid

Sample = tuple[np.ndarray, tuple[int, int], set[int]]
"""A pattern on the model grid, its window of bins and the space groups that count as its phase."""


def store_patterns(store: str, samples: int, model_config) -> list[Sample]:
    """The first ``samples`` single-phase rows of a mixture store (docs/formats.md) on the model's grid."""
    mixtures = MixtureStore(store)
    check_grid(mixtures, model_config)
    arrays = mixtures.arrays
    rows = np.flatnonzero(arrays["n_phases"][:] == 1)[:samples]
    patterns = arrays["pattern"].oindex[rows, :].astype(np.float64)
    windows = arrays["window_bins"].oindex[rows, :]
    groups = arrays["phase_spacegroup"].oindex[rows, 0]
    return [(x, (int(w[0]), int(w[1])), {int(g)}) for x, w, g in zip(patterns, windows, groups, strict=True)]


def measured_patterns(model, state: dict, labelled: list) -> list[Sample]:
    """Labelled measured files (:class:`~xrdmodels.measured_eval.LabelledPattern`) put on the model grid as
    ``predict`` puts them."""
    samples = []
    for item in labelled:
        _, gridded = predict_one(
            model, state, item.pattern, wavelength_angstrom=item.wavelength_angstrom, top_k=1
        )
        samples.append((gridded.pattern, gridded.window_bins, item.phases[0]))
    return samples


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--bank", help="bank store whose read phases are compared (the library)")
    parser.add_argument(
        "--memory",
        action="store_true",
        help="compare with each checkpoint's memory of its training phases instead of --bank",
    )
    parser.add_argument(
        "--cell-scan",
        type=float,
        default=DEFAULT_LIBRARY_CELL_SCAN,
        help=f"reach of the cell scan (default {DEFAULT_LIBRARY_CELL_SCAN}, predict's for both; 0: none)",
    )
    parser.add_argument(
        "--checkpoint", action="append", required=True, help="a model on the bank's grid (repeat for several)"
    )
    parser.add_argument(
        "--labels", default=str(LABELS), help="labels CSV (default ../shared/.../all_labels.csv)"
    )
    parser.add_argument("--set", default="rruff", help="set of the labels CSV to fit on (default rruff)")
    parser.add_argument(
        "--store",
        help="fit on the single-phase rows of this mixture store (on the model's grid) instead of the labels CSV",
    )
    parser.add_argument(
        "--samples", type=int, default=1000, help="single-phase rows of --store to use, the first ones (1000)"
    )
    args = parser.parse_args()
    if args.memory == bool(args.bank):
        parser.error("give --bank or --memory (one of them)")
    library = None if args.memory else SpectralLibrary.open(args.bank)
    if args.store:
        what = f"single-phase rows of {args.store}"
    else:
        labelled, failures = read_labelled(args.labels, sets=[args.set])
        for file, reason in failures:
            print(f"skipped {file}: {reason}")
        single, what = (
            [item for item in labelled if len(item.phases) == 1],
            f"single-phase files of set {args.set!r}",
        )
    for checkpoint in args.checkpoint:
        model, state = load_model(checkpoint)
        if library is None:
            search = memory_search(model, state, True, checkpoint, args.cell_scan)
            if search is None:
                parser.error(f"{checkpoint} carries no memory: write one with `xrdmodels add-memory`")
        else:
            references = ReferencePhases.from_library(library)
            search = NeighbourSearch(model, references, model_grid(state), args.cell_scan)
        if args.store:
            samples = store_patterns(args.store, args.samples, model.config)
        else:
            samples = measured_patterns(model, state, single)
        margins, cosines, right = [], [], []
        for pattern, window, groups in samples:
            similarity = np.nan_to_num(search.similarity(pattern, window), nan=-np.inf)
            best, second = np.sort(similarity)[-1], np.sort(similarity)[-2]
            margins.append(best - second)
            cosines.append(best)
            right.append(float(int(np.argmax(similarity)) + 1 in groups))
        margin, cosine, hit = np.array(margins), np.array(cosines), np.array(right)
        print(f"{Path(checkpoint)}: {len(hit)} {what}; the best group right in {hit.mean():.3f}")
        print_fits("margin, ", margin, hit)
        slope, midpoint = fit_logistic(cosine, hit)
        print(f"  best cosine, fit on all  : slope {slope:.1f}, midpoint {midpoint:.3f}")
    print(f"neighbours.py ships: slope {NEIGHBOUR_MARGIN_SLOPE}, midpoint {NEIGHBOUR_MARGIN_MIDPOINT}")


if __name__ == "__main__":
    main()
