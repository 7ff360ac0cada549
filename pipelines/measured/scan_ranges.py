"""How a model's answers on measured single-phase patterns depend on how the scan was taken: each file cropped to
the 2θ ranges labs commonly scan, and thinned to coarser steps, scored like `score-measured` scores the whole file
(docs/benchmarks.md, "A fifth and a sixth seed on a fresh VM", its table "Scan range and step").

A shared RRUFF file runs 5-90° at 0.01°. A crop keeps the points inside [lo, hi]; a coarser step keeps every k-th
point, as a scan with that step and the same counting time per point would have measured them. Nothing else
changes: the same reader, grid mapping, model and ranking (`predict_one`, the checkpoint's prior hedge). A file
the model refuses after the cut (too little of it left) counts as a miss and is counted in the `refused` column.

Usage: .venv/bin/python pipelines/measured/scan_ranges.py CHECKPOINT [--labels ../shared/data/experimental/
           all_labels.csv] [--set rruff] [--limit N] [--prior-weight 2]
"""

from __future__ import annotations

import argparse
from dataclasses import replace
from pathlib import Path

import numpy as np

from xrdmodels.config import DEFAULT_PRIOR_WEIGHT, N_SPACE_GROUPS
from xrdmodels.evaluate import load_model
from xrdmodels.measured_eval import MeasuredScore, read_labelled
from xrdmodels.predict import predict_one, training_ranges

REPO = Path(__file__).resolve().parents[2]
#: (name, 2θ low, 2θ high in degrees, keep every k-th point)
VARIANTS = (
    ("as measured (5-90°, 0.01°)", 0.0, 180.0, 1),
    ("10-80°", 10.0, 80.0, 1),
    ("10-70°", 10.0, 70.0, 1),
    ("5-60°", 5.0, 60.0, 1),
    ("20-90°", 20.0, 90.0, 1),
    ("30-90°", 30.0, 90.0, 1),
    ("step 0.02°", 0.0, 180.0, 2),
    ("step 0.05°", 0.0, 180.0, 5),
    ("10-70°, step 0.02°", 10.0, 70.0, 2),
)


def scan(pattern, lo_deg: float, hi_deg: float, every: int):
    """The part of `pattern` a scan over [lo_deg, hi_deg] with `every` times its step would have recorded."""
    keep = (pattern.two_theta_deg >= lo_deg) & (pattern.two_theta_deg <= hi_deg)
    return replace(
        pattern,
        two_theta_deg=pattern.two_theta_deg[keep][::every],
        intensity=pattern.intensity[keep][::every],
    )


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("checkpoint", help="trained checkpoint (or ensemble manifest) to score")
    parser.add_argument(
        "--labels",
        default=str(REPO.parent / "shared/data/experimental/all_labels.csv"),
        help="labels table of measured files (default ../shared/data/experimental/all_labels.csv)",
    )
    parser.add_argument("--set", default="rruff", help="single-phase set to score (default rruff)")
    parser.add_argument("--limit", type=int, default=None, help="first N files only")
    parser.add_argument(
        "--prior-weight",
        type=float,
        default=DEFAULT_PRIOR_WEIGHT,
        help="weight of the training label prior in the ranking, as in score-measured "
        f"(default {DEFAULT_PRIOR_WEIGHT:g})",
    )
    args = parser.parse_args(argv)
    model, state = load_model(args.checkpoint)
    training = training_ranges(state, args.checkpoint)
    try:
        labelled, failures = read_labelled(args.labels, sets=[args.set], limit=args.limit)
    except (
        OSError,
        ValueError,
    ) as exc:  # a missing table, a set it does not hold (the message lists its sets)
        parser.error(str(exc))
    for path, reason in failures:
        print(f"unreadable: {path}: {reason}")
    print(f"{len(labelled)} files of {args.set}, {args.checkpoint}, prior weight {args.prior_weight:g}\n")
    print("| scan | files | refused | hit@1 | hit@5 | files that lose hit@5 / gain it, vs as measured |")
    print("|---|---|---|---|---|---|")
    reference = None
    for name, lo, hi, every in VARIANTS:
        hits, refused = [], 0
        for item in labelled:
            try:
                pred, _ = predict_one(
                    model, state, scan(item.pattern, lo, hi, every),
                    wavelength_angstrom=item.wavelength_angstrom, top_k=N_SPACE_GROUPS, training=training,
                    prior_weight=args.prior_weight,
                )  # fmt: skip
            except ValueError:
                refused += 1
                hits.append((False, False))
                continue
            score = MeasuredScore(
                item.row["set"], item.row["file"], item.phases, [r.spacegroup for r in pred.ranked], []
            )
            hits.append((any(score.found(1)), any(score.found(5))))
        hits_array = np.array(hits)
        if reference is None:
            reference = hits_array
        lost = int((reference[:, 1] & ~hits_array[:, 1]).sum())
        gained = int((~reference[:, 1] & hits_array[:, 1]).sum())
        print(
            f"| {name} | {len(hits)} | {refused} | {hits_array[:, 0].mean():.3f} | "
            f"{hits_array[:, 1].mean():.3f} | {lost} / {gained} |",
            flush=True,
        )


if __name__ == "__main__":
    main()
