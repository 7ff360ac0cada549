"""Where a model's misses on RRUFF are, by how many read (not random) structures of each file's labelled group
the bank holds (docs/benchmarks.md, "Ensembles": where the RRUFF misses are).

Reads `score-measured` outputs (measured.json, one per model) and the bank they were scored against; prints one
markdown row per coverage stratum: files, hit@1 and hit@5 of each model, the library search's hit@5 and the
combined ranking's hit@5 (both from the first file), then how many of the top-1 errors name a group of another
crystal system.

Usage: .venv/bin/python pipelines/measured/misses_by_coverage.py runs/full7/measured/measured.json [more.json]
           --bank runs/full7/bank.zarr [--split train] [--bounds 5 20]
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import zarr

from xrdmodels.spacegroups import crystal_system


def read_counts(bank: Path, split: str | None) -> np.ndarray:
    """(231,) read (non-synthetic) entries per space group, of one split or of all; exits naming a missing bank
    or a split the bank does not have."""
    if not (bank / "zarr.json").is_file():
        sys.exit(f"misses_by_coverage: no bank store at {bank} (--bank)")
    entries = zarr.open_group(str(bank), mode="r")["entries"]
    read = ~entries["synthetic"][:]
    if split is not None:
        splits = np.array([str(x) for x in entries["split"][:]])
        if split not in set(splits):
            sys.exit(
                f"misses_by_coverage: {bank} has no split {split!r}; its splits: {', '.join(sorted(set(splits)))}"
            )
        read &= splits == split
    return np.bincount(entries["spacegroup_number"][:][read], minlength=231)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("scores", nargs="+", type=Path, help="measured.json of score-measured, one per model")
    parser.add_argument("--bank", type=Path, required=True, help="the bank the scores were computed against")
    parser.add_argument("--split", default=None, help="count only this split's read entries (default: all)")
    parser.add_argument("--bounds", type=int, nargs="+", default=[5, 20], help="lower bounds of the strata")
    parser.add_argument("--set", default="rruff", help="the single-phase set of the labels table")
    args = parser.parse_args()

    counts = read_counts(args.bank, args.split)
    runs = [[f for f in json.loads(p.read_text())["files"] if f["set"] == args.set] for p in args.scores]
    bounds = sorted(args.bounds)
    edges = [0, *bounds, None]
    print(
        "| read entries of the true group | files | hit@1 | hit@5 | library hit@5 | combined hit@5 | top-1 errors in another crystal system |"
    )
    print("|---|---|---|---|---|---|---|")
    for lo, hi in reversed(list(zip(edges[:-1], edges[1:], strict=True))):
        label = f"{lo} or more" if hi is None else f"{lo}-{hi - 1}"
        picked = [
            [
                f
                for f in files
                if counts[f["phases"][0][0]] >= lo and (hi is None or counts[f["phases"][0][0]] < hi)
            ]
            for files in runs
        ]
        first = picked[0]
        if not first:
            continue

        def rate(files: list[dict], key: str, k: int) -> str:
            return f"{np.mean([f['phases'][0][0] in f[key][:k] for f in files]):.3f}"

        wrong = [f for f in first if f["top10"][0] != f["phases"][0][0]]
        other = sum(crystal_system(f["top10"][0]) != crystal_system(f["phases"][0][0]) for f in wrong)
        print(
            f"| {label} | {len(first)} | {' / '.join(rate(p, 'top10', 1) for p in picked)} | "
            f"{' / '.join(rate(p, 'top10', 5) for p in picked)} | {rate(first, 'library_top10', 5)} | "
            f"{' / '.join(rate(p, 'combined_top10', 5) for p in picked)} | {other} of {len(wrong)} |"
        )


if __name__ == "__main__":
    main()
