"""Two-phase measured patterns from the shared RRUFF set: pairs of real single-phase patterns summed, a development
set for reading a second phase with hundreds of files instead of the 14 multi-phase files in ../shared
(docs/benchmarks.md, "Two measured phases: RRUFF pairs").

Every RRUFF dev file is measured with Cu Kα on one grid (5.00-89.99° 2θ, step 0.01°), background-subtracted and
scaled to a maximum of 1000, so a pair is the point-by-point sum (1 - f)·y_a + f·y_b, rounded to integers as the
RRUFF files are, with the minor phase's share f drawn uniformly in [--minor-min, --minor-max] (its strongest line
then stands at f / (1 - f) of the major phase's). Diffracted intensities of a physical mixture add the same way (up
to the phases' different absorption, which only rescales f). The two phases come from different space groups and
different mineral groups (RRUFF's `group`: near-identical samples of one mineral), and no space group accepted for
one phase is accepted for the other, so that each pair asks for two groups, like the NIST duplex steel. The pairs
are drawn with a fixed seed; the same seed gives the same files.

Writes OUT/labels.csv (the columns of ../shared/data/experimental/all_labels.csv, set `rruff_pairs`; `notes` names
the two source files and f) and OUT/pairs/<a>+<b>.xy. Score them with `xrdmodels score-measured CKPT --labels
OUT/labels.csv --out D`, and compare models with `pipelines/measured/compare.py` (its "every phase in the top 3"
column).

Usage: .venv/bin/python pipelines/measured/rruff_pairs.py --out runs/rruff_pairs [--n 300] [--seed 0]
           [--minor-min 0.25] [--minor-max 0.5] [--experimental ../shared/data/experimental]
"""

from __future__ import annotations

import argparse
import csv
from pathlib import Path

import numpy as np

from xrdmodels.measured import MeasuredFormatError, read_pattern
from xrdmodels.measured_eval import parse_phases

REPO = Path(__file__).resolve().parents[2]
LABEL_COLUMNS = (
    "set",
    "file",
    "n_phases",
    "spacegroups",
    "spacegroups_accept",
    "extra_or_trace",
    "wavelength_angstrom",
    "radiation",
    "two_theta_min",
    "two_theta_max",
    "confidence",
    "notes",
)


def read_rruff(experimental: Path) -> list[dict]:
    """RRUFF's rows of all_labels.csv, each with its mineral group (rruff/labels.csv), the space groups it accepts
    (`accepted`, read once here) and its pattern."""
    for needed in (experimental / "all_labels.csv", experimental / "rruff" / "labels.csv"):
        if not needed.is_file():
            raise SystemExit(
                f"{needed} not found: give --experimental the shared folder of measured patterns"
            )
    groups = {}
    with open(experimental / "rruff" / "labels.csv", newline="", encoding="utf-8") as handle:
        for row in csv.DictReader(handle):
            groups[f"rruff/{row['file']}"] = row["group"]
    rows = []
    with open(experimental / "all_labels.csv", newline="", encoding="utf-8") as handle:
        for row in csv.DictReader(handle):
            if row["set"] != "rruff":
                continue
            try:
                pattern = read_pattern(experimental / row["file"])
            except MeasuredFormatError as error:
                raise SystemExit(str(error)) from error
            if row["file"] not in groups:
                raise SystemExit(
                    f"{row['file']} has no mineral group in {experimental / 'rruff' / 'labels.csv'}: the pairs "
                    "keep near-identical samples apart by it"
                )
            rows.append(
                {
                    **row,
                    "group": groups[row["file"]],
                    "accepted": accepted(row),
                    "two_theta": pattern.two_theta_deg,
                    "intensity": pattern.intensity,
                }
            )
    if not rows:
        raise SystemExit(
            f"no rruff rows in {experimental / 'all_labels.csv'}: give --experimental the shared folder"
        )
    grid = rows[0]["two_theta"]
    for row in rows:
        if row["two_theta"].shape != grid.shape or not np.allclose(row["two_theta"], grid, atol=1e-6):
            raise SystemExit(
                f"{row['file']} is not on the common RRUFF grid ({grid[0]}-{grid[-1]}°, {grid.size} points)"
            )
    return rows


def accepted(row: dict) -> set[int]:
    """The space groups a single-phase labels row accepts for its phase (`spacegroups_accept`, `a|b`; else
    `spacegroups`), read as score-measured reads them."""
    try:
        (phase,) = parse_phases(row.get("spacegroups_accept") or "", row["spacegroups"] or "")
    except ValueError as error:  # also a row naming several phases: the set is single-phase
        raise SystemExit(f"{row['file']}: its labels are not one phase's space groups ({error})") from error
    return phase


def draw_pairs(
    rows: list[dict], n: int, seed: int, minor_min: float, minor_max: float
) -> list[tuple[int, int, float]]:
    """`n` distinct (major index, minor index, minor share f): no space group either phase accepts in common, and
    different mineral groups."""
    if not 0.0 < minor_min <= minor_max <= 0.5:
        raise SystemExit(
            f"--minor-min {minor_min} and --minor-max {minor_max} must satisfy 0 < min <= max <= 0.5"
        )
    rng = np.random.default_rng(seed)
    chosen: list[tuple[int, int, float]] = []
    seen = set()
    for _ in range(100 * n):
        if len(chosen) == n:
            break
        a, b = (int(i) for i in rng.choice(len(rows), size=2, replace=False))
        share = float(rng.uniform(minor_min, minor_max))
        if rows[a]["accepted"] & rows[b]["accepted"] or rows[a]["group"] == rows[b]["group"]:
            continue
        if frozenset((a, b)) in seen:
            continue
        seen.add(frozenset((a, b)))
        chosen.append((a, b, share))
    if len(chosen) < n:
        raise SystemExit(f"only {len(chosen)} distinct pairs could be drawn, asked for {n}")
    return chosen


def write_pairs(rows: list[dict], pairs: list[tuple[int, int, float]], out: Path) -> Path:
    """The summed patterns and their labels table; returns the table's path."""
    (out / "pairs").mkdir(parents=True, exist_ok=True)
    labels = out / "labels.csv"
    with open(labels, "w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=LABEL_COLUMNS)
        writer.writeheader()
        for a, b, share in pairs:
            major, minor = rows[a], rows[b]
            name = f"pairs/{Path(major['file']).stem}+{Path(minor['file']).stem}.xy"
            summed = np.rint((1.0 - share) * major["intensity"] + share * minor["intensity"])
            nonzero = np.flatnonzero(summed > 0)
            two_theta = major["two_theta"]
            np.savetxt(
                out / name,
                np.column_stack([two_theta, summed]),
                fmt=["%.2f", "%d"],
                header=f"RRUFF pair: (1 - f)·{major['file']} + f·{minor['file']}, f = {share:.3f}; Cu K-alpha",
            )
            writer.writerow(
                {
                    "set": "rruff_pairs",
                    "file": name,
                    "n_phases": 2,
                    "spacegroups": f"{major['spacegroups']};{minor['spacegroups']}",
                    "spacegroups_accept": ";".join(
                        "|".join(map(str, sorted(row["accepted"]))) for row in (major, minor)
                    ),
                    "extra_or_trace": "",
                    "wavelength_angstrom": major["wavelength_angstrom"],
                    "radiation": major["radiation"],
                    "two_theta_min": f"{two_theta[nonzero[0]]:.2f}" if nonzero.size else "",
                    "two_theta_max": f"{two_theta[nonzero[-1]]:.2f}" if nonzero.size else "",
                    "confidence": "high"
                    if major["confidence"] == minor["confidence"] == "high"
                    else "medium",
                    "notes": f"major {major['file']}, minor {minor['file']}, f = {share:.3f}",
                }
            )
    return labels


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", required=True, type=Path, help="folder for labels.csv and pairs/")
    parser.add_argument("--n", type=int, default=300, help="number of pairs (default 300)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the draw (default 0)")
    parser.add_argument(
        "--minor-min", type=float, default=0.25, help="smallest share f of the minor phase (default 0.25)"
    )
    parser.add_argument(
        "--minor-max", type=float, default=0.5, help="largest share f of the minor phase (default 0.5)"
    )
    parser.add_argument(
        "--experimental",
        type=Path,
        default=REPO.parent / "shared/data/experimental",
        help="the shared measured patterns (default ../shared/data/experimental)",
    )
    args = parser.parse_args(argv)
    if args.n < 1:
        raise SystemExit(f"--n {args.n}: ask for at least one pair")
    rows = read_rruff(args.experimental)
    pairs = draw_pairs(rows, args.n, args.seed, args.minor_min, args.minor_max)
    labels = write_pairs(rows, pairs, args.out)
    print(f"{len(pairs)} pairs of {len(rows)} RRUFF files -> {labels}")


if __name__ == "__main__":
    main()
