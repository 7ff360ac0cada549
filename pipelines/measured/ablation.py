"""Which training physics matters on measured patterns (issue 12, item 5): the measured pipeline
(pipelines/measured/run.py) with the same bank, mixture count and training budget for the `paper` recipe, the
`lab` recipe, the lab recipe without each of its effects and the model without its SNIP background removal
(`lab-no-snip`), then one table of their scores on the shared measured
sets beside the library search, and a second with each variant compared file by file against the first
(`compare.py`: paired splits on RRUFF and intervals over its sample groups).

Usage: .venv/bin/python pipelines/measured/ablation.py --bank runs/measured-lab/bank.zarr [--train-steps 2500]
           [--n-train 60k] [--variants lab paper lab-no-kalpha2 ...] [--seed 0] [--out runs/ablation]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
import compare  # noqa: E402
from run import LAB_EFFECTS, SHARED  # noqa: E402

#: Columns of the table: (set, metric) from score-measured's measured.json.
COLUMNS = [
    ("rruff", "hit@1"),
    ("rruff", "hit@5"),
    ("xrd_autoanalyzer", "recall@K*"),
    ("nist_duplex_steel", "recall@K*"),
    ("all", "hit@1"),
]
#: Every variant by default: the lab recipe, then A.1, then the lab recipe without each of its effects, the
#: effects ordered by how much earlier sessions found them to matter, so a stopped run has the informative rows.
ABLATION_ORDER = ("strain", "background", "subtraction", "kalpha2", "texture", "intensity", "poisson", "anodes",
                  "humps", "air", "displacement", "kbeta", "thermal")  # fmt: skip
DEFAULT_VARIANTS = ["lab", "paper", *(f"lab-no-{e}" for e in ABLATION_ORDER)]


def variant_arguments(variant: str) -> list[str]:
    if variant in ("paper", "lab"):
        return ["--recipe", variant]
    if variant == "lab-no-snip":
        return ["--recipe", "lab", "--background-removal", "none"]
    effect = variant.removeprefix("lab-no-")
    if not variant.startswith("lab-no-") or effect not in LAB_EFFECTS:
        raise SystemExit(
            f"ablation: unknown variant {variant!r}; use paper, lab, lab-no-snip (no background removal in the "
            f"model) or lab-no-<{'|'.join(LAB_EFFECTS)}>"
        )
    return ["--recipe", "lab", "--without", effect]


def row(name: str, summary: list[dict]) -> str:
    by_set = {r["set"]: r for r in summary}
    return f"| {name} | " + " | ".join(f"{by_set[s][m]:.3f}" for s, m in COLUMNS) + " |"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--bank", required=True, help="the bank every variant trains on (built by run.py)")
    parser.add_argument("--variants", nargs="+", default=DEFAULT_VARIANTS)
    parser.add_argument("--n-train", default="60k")
    parser.add_argument("--train-steps", type=int, default=2500, help="the same step count for every variant")
    parser.add_argument(
        "--seed",
        type=int,
        default=0,
        help="seed of every variant's mixtures and training (another repeats the table)",
    )
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--out", default="runs/ablation")
    args = parser.parse_args(argv)
    out = Path(args.out)
    lines = [
        f"Same bank ({args.bank}), {args.n_train} training mixtures and {args.train_steps} training steps of 32 per "
        f"variant, seed {args.seed}; one `cpu`-preset token CNN with the presence head (pipelines/measured/run.py "
        "--ensemble 1).\n",
        "| variant | " + " | ".join(f"{s} {m}" for s, m in COLUMNS) + " |",
        "|---" * (len(COLUMNS) + 1) + "|",
    ]
    library = None
    for variant in args.variants:
        run_out = out / variant
        subprocess.run(
            [sys.executable, str(HERE / "run.py"), *variant_arguments(variant), "--bank", args.bank, "--out",
             str(run_out), "--n-train", args.n_train, "--train-steps", str(args.train_steps), "--workers",
             str(args.workers), "--ensemble", "1", "--seed", str(args.seed), "--pairs", "0"],
            check=True,
        )  # fmt: skip
        scores = json.loads((run_out / "measured" / "measured.json").read_text())
        lines.append(row(variant, scores["summary"]))
        library = scores["library_summary"]
        print("\n".join(lines), flush=True)
    if library is not None:
        lines.append(row("library search (same bank)", library))
    # One seed per variant: only the paired split on the same RRUFF files, and intervals over its sample groups,
    # tell an effect from the seed-to-seed spread (~0.015 at hit@1).
    lines += [
        f"\nEach variant file by file against {args.variants[0]} (pipelines/measured/compare.py --groups):\n",
        compare.table(
            [out / v / "measured" / "measured.json" for v in args.variants],
            args.variants,
            "rruff",
            compare.read_groups(SHARED / "experimental" / "rruff" / "labels.csv"),
        ),
    ]
    table = "\n".join(lines) + "\n"
    (out / "ablation.md").write_text(table)
    print(f"\n{table}\nwritten to {out / 'ablation.md'}")


if __name__ == "__main__":
    main()
