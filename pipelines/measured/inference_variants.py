"""Changes at inference time to a trained model, scored on the shared measured sets against the model as it is
(docs/benchmarks.md, "Ensembles"): the mean of several checkpoints of one run, the mean over 2θ shifts of each
pattern, the mean over d-spacing scalings of each pattern (as if its cell were larger or smaller), a Bayes
correction from the training mixtures' label prior to the bank's prior of curated groups, a mixture of the
model's normalised scores with that prior, the model's probabilities plus w times the training label prior, and
plus w times `xrdmodels.predict.prior_hedge` of it (the ranking `predict` uses, with w = `--prior-weight`). Each
variant is paired with the first checkpoint's probabilities alone, file by file.

Usage: .venv/bin/python pipelines/measured/inference_variants.py runs/measured/models/cnn_presence/last.pt
           [more checkpoints of the same run] --run runs/measured [--shifts 0.05 0.1] [--scales 0.01 0.02]
           [--out variants.md]

`--run` is the measured pipeline's output folder: its bank (the curated structures' groups, split `train`) and
its training mixtures (the label prior the model learned) are read from there.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
import warnings
from pathlib import Path

import numpy as np
import zarr

from xrdmodels.evaluate import load_model
from xrdmodels.measured import MeasuredPattern
from xrdmodels.measured_eval import (
    LabelledPattern,
    MeasuredScore,
    paired_changes,
    read_labelled,
    summarise,
)
from xrdmodels.predict import model_probabilities, predict_one, prior_hedge, training_ranges

REPO = Path(__file__).resolve().parents[2]
LABELS = REPO.parent / "shared" / "data" / "experimental" / "all_labels.csv"
N_GROUPS = 230
#: Rows of the training store read for its label prior: enough for every group's frequency to 1e-3.
PRIOR_ROWS = 200_000
#: (pseudo-count added to each group's bank count, strength of the correction on the logit)
PRIOR_CORRECTIONS = [(a, t) for a in (0.5, 1.0, 3.0) for t in (0.25, 0.5, 1.0)]
#: Weights of the bank's prior in a mixture with the model's normalised scores.
PRIOR_MIXTURES = (0.02, 0.05, 0.1, 0.2)
#: Weights w of the training label prior added to the model's probabilities (predict's --prior-weight).
PRIOR_WEIGHTS = (0.5, 1.0, 2.0, 3.0, 4.0)


def probabilities(
    checkpoint: str, patterns: list[LabelledPattern], shift_deg: float = 0.0, d_scale: float = 1.0
) -> np.ndarray:
    """(files, 230) presence probabilities of the model, each pattern's d-spacings multiplied by `d_scale`
    (sin θ divided by it; points whose sin θ would pass 1 are dropped), then its 2θ axis moved by `shift_deg`;
    NaN for a file the model refuses (it then counts as a miss, never as groups 1, 2, 3 ... in order)."""
    model, state = load_model(checkpoint)
    training = training_ranges(state, checkpoint)
    out = np.full((len(patterns), N_GROUPS), np.nan)
    for i, item in enumerate(patterns):
        scaled = scale_d_spacings(item.pattern, d_scale)
        moved = dataclasses.replace(scaled, two_theta_deg=scaled.two_theta_deg + shift_deg)
        try:
            pred, _ = predict_one(
                model,
                state,
                moved,
                wavelength_angstrom=item.wavelength_angstrom,
                top_k=N_GROUPS,
                training=training,
                prior_weight=0.0,  # the probabilities alone; the variants below add the prior themselves
            )
        except ValueError:  # a shift that moves the scan off the model's grid: the file scores nothing
            continue
        out[i] = model_probabilities(pred.ranked)
    return out


def scale_d_spacings(pattern: MeasuredPattern, d_scale: float) -> MeasuredPattern:
    """The pattern with every point's d-spacing multiplied by `d_scale` (sin θ divided by it, at any
    wavelength); points whose sin θ would reach 1 are dropped."""
    sin_theta = np.sin(np.radians(pattern.two_theta_deg / 2.0)) / d_scale
    keep = sin_theta < 1.0
    return dataclasses.replace(
        pattern,
        two_theta_deg=2.0 * np.degrees(np.arcsin(sin_theta[keep])),
        intensity=pattern.intensity[keep],
    )


def priors(run: Path, bank_url: Path) -> tuple[np.ndarray, np.ndarray]:
    """Counts per group (230,) of the training mixtures' phases and of the bank's curated training entries."""
    for store in (run / "mixtures" / "train.zarr", bank_url):
        if not (store / "zarr.json").is_file():
            sys.exit(f"inference_variants: no Zarr store at {store} (--run is the pipeline's output folder; --bank "
                     "names the bank where the run was made with --bank)")  # fmt: skip
    mixtures = zarr.open_group(str(run / "mixtures" / "train.zarr"), mode="r")
    groups = mixtures["phase_spacegroup"][:PRIOR_ROWS]
    training = np.bincount(groups[groups > 0], minlength=N_GROUPS + 1)[1:].astype(float)
    entries = zarr.open_group(str(bank_url), mode="r")["entries"]
    curated = (~entries["synthetic"][:]) & (np.array([str(x) for x in entries["split"][:]]) == "train")
    bank = np.bincount(entries["spacegroup_number"][:][curated], minlength=N_GROUPS + 1)[1:].astype(float)
    return training, bank


def scores_of(patterns: list[LabelledPattern], scores: np.ndarray) -> list[MeasuredScore]:
    """Each file ranked by its (230,) scores, highest first; a file with scores that are not numbers (refused by
    the model) ranks nothing, a miss."""
    return [
        MeasuredScore(
            item.row["set"],
            item.row["file"],
            item.phases,
            (np.argsort(-s, kind="stable") + 1).tolist() if np.isfinite(s).all() else [],
            [],
        )
        for item, s in zip(patterns, scores, strict=True)
    ]


def mean_of(variants: list[np.ndarray]) -> np.ndarray:
    """The mean of several (files, 230) probabilities over the variants that a file was scored in (NaN where
    none: a miss)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # a file refused in every variant: its NaN is kept
        return np.nanmean(variants, axis=0)


def row_of(name: str, scored: list[MeasuredScore], base: list[MeasuredScore]) -> str:
    """One markdown row: hit@k of the single-phase set (`rruff`, else all files) with its paired changes
    against ``base``, recall@K* of `xrd_autoanalyzer` and how many NIST scans hold both phases in the top 3
    (a dash for a set the labels do not have)."""
    table = {r["set"]: r for r in summarise(scored)}
    single = "rruff" if "rruff" in table else "all"
    members = [i for i, s in enumerate(scored) if single in ("all", s.set)]
    paired = []
    for k in (1, 5):
        gained, lost = paired_changes([base[i] for i in members], [scored[i] for i in members], k)
        paired.append(f"+{gained} −{lost}")
    r = table[single]
    multi = table.get("xrd_autoanalyzer")
    nist = [s for s in scored if s.set.startswith("nist")]
    both = f"{sum({225, 229} <= set(s.ranked[:3]) for s in nist)} of {len(nist)}" if nist else "–"
    return (
        f"| {name} | {r['hit@1']:.3f} / {r['hit@3']:.3f} / {r['hit@5']:.3f} / {r['hit@10']:.3f} | "
        f"{' / '.join(paired)} | {'–' if multi is None else format(multi['recall@K*'], '.3f')} | {both} |"
    )


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("checkpoints", nargs="+", help="checkpoints of one run; the first is the baseline")
    parser.add_argument("--run", type=Path, required=True, help="the measured pipeline's output folder")
    parser.add_argument(
        "--bank",
        type=Path,
        help="the run's bank (default RUN/bank.zarr; a run made with --bank names it there)",
    )
    parser.add_argument("--labels", type=Path, default=LABELS, help="labels table of the measured files")
    parser.add_argument("--shifts", type=float, nargs="*", default=[0.05, 0.1], help="2θ shifts in degrees")
    parser.add_argument(
        "--scales",
        type=float,
        nargs="*",
        default=[0.01, 0.02],
        help="relative d-spacing scalings ε: the mean over d·(1 - ε), d, d·(1 + ε)",
    )
    parser.add_argument("--out", type=Path, help="also write the table to this markdown file")
    args = parser.parse_args()

    training, bank = priors(args.run, args.bank or args.run / "bank.zarr")
    patterns, failures = read_labelled(args.labels)
    for file, reason in failures:
        print(f"skipped {file}: {reason}")
    per_checkpoint = [probabilities(c, patterns) for c in args.checkpoints]
    base_probs = per_checkpoint[0]
    base = scores_of(patterns, base_probs)
    lines = [
        f"{len(patterns)} files of {args.labels}; baseline {args.checkpoints[0]}",
        "",
        "| variant | RRUFF (else all files) hit@1 / @3 / @5 / @10 | paired vs baseline hit@1 / hit@5 | xrd_autoanalyzer "
        "recall@K* | NIST both in top 3 |",
        "|---|---|---|---|---|",
        row_of("the first checkpoint", base, base),
    ]
    if len(per_checkpoint) > 1:
        lines.append(
            row_of(
                f"mean of {len(per_checkpoint)} checkpoints",
                scores_of(patterns, mean_of(per_checkpoint)),
                base,
            )
        )
    for shift in args.shifts:
        moved = [probabilities(args.checkpoints[0], patterns, s) for s in (-shift, shift)]
        mean = mean_of([base_probs, *moved])
        lines.append(row_of(f"mean over 2θ shifts 0, ±{shift}°", scores_of(patterns, mean), base))
    for scale in args.scales:
        scaled = [probabilities(args.checkpoints[0], patterns, d_scale=1.0 + e) for e in (-scale, scale)]
        mean = mean_of([base_probs, *scaled])
        lines.append(row_of(f"mean over d-spacing scalings 1, 1 ± {scale}", scores_of(patterns, mean), base))
    training_prior = training / training.sum()
    eps = 1e-6
    logit = np.log(np.clip(base_probs, eps, 1 - eps)) - np.log(np.clip(1 - base_probs, eps, 1))
    for pseudo_count, strength in PRIOR_CORRECTIONS:
        bank_prior = (bank + pseudo_count) / (bank + pseudo_count).sum()
        corrected = logit + strength * (np.log(bank_prior) - np.log(training_prior + 1e-9))
        name = f"label-prior correction, pseudo-count {pseudo_count}, strength {strength}"
        lines.append(row_of(name, scores_of(patterns, corrected), base))
    normalised = base_probs / np.clip(base_probs.sum(1, keepdims=True), eps, None)
    for weight in PRIOR_MIXTURES:
        mixed = (1 - weight) * normalised + weight * bank / bank.sum()
        lines.append(
            row_of(f"mixed with the bank's prior, weight {weight}", scores_of(patterns, mixed), base)
        )
    hedges = np.stack([prior_hedge(p, training_prior) for p in base_probs])
    for weight in PRIOR_WEIGHTS:
        plain = base_probs + weight * training_prior
        lines.append(row_of(f"plus {weight} x the training label prior", scores_of(patterns, plain), base))
        hedged = base_probs + weight * hedges
        lines.append(row_of(f"plus {weight} x predict's hedge", scores_of(patterns, hedged), base))
    text = "\n".join(lines)
    print(text)
    if args.out:
        args.out.write_text(text + "\n")


if __name__ == "__main__":
    main()
