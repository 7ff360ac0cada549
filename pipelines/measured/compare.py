"""Models compared file by file on the shared measured sets: each `score-measured` output against the first.

Usage: .venv/bin/python pipelines/measured/compare.py BASE/measured.json OTHER/measured.json [...]
           [--names base other ...] [--single-set rruff] [--groups ../shared/data/experimental/rruff/labels.csv]
           [--ranking model|network|library|neighbours|combined] [--out compare.md]
       .venv/bin/python pipelines/measured/compare.py --pairs --groups LABELS.csv BASE0/measured.json
           OTHER0/measured.json BASE1/measured.json OTHER1/measured.json [...]

Prints one markdown row per model: hit@1 / hit@3 / hit@5 / hit@10 on the single-phase set, the files it gets
right that the first model gets wrong and the reverse (at hit@1 and hit@5) with the exact two-sided sign-test
p-value of that split (McNemar's test on the discordant files), recall@K* of every multi-phase set as
score-measured summarised it, and how many scans of each multi-phase set hold every labelled phase in the top 3
(of the single set too where it is multi-phase: `--single-set rruff_pairs` for pipelines/measured/rruff_pairs.py's
two-phase patterns, whose hit@k columns then count either phase).
This is how the levers in docs/benchmarks.md are compared: with 443 RRUFF files and a seed spread of ~0.015, a
paired split is what tells a lever from noise. `--ranking` compares the library's, its neighbour search's or the
combined ranking of each file instead of the model's (score-measured with `--library` writes them all), or the
network's alone where the model ranked with a memory of its training phases (`xrdmodels add-memory`).

With `--groups LABELS.csv` (a table with `file` and `group` columns, as RRUFF's labels.csv: near-identical samples
of one mineral share a group) two more columns give 95% intervals that treat each group, not each file, as one
draw: each model's hit@1 / hit@5 and its difference from the first model's, from a bootstrap over groups
(percentile intervals of BOOTSTRAP_RESAMPLES resamples, seed 0). RRUFF's 443 files fall in 218 groups, up to 38
files each, so a file-level interval or sign test understates the uncertainty.

With `--pairs` (and `--groups`) the files are read as BASE OTHER pairs, one pair per seed (e.g. the default and a
lever trained with seeds 0, 1, 2): one row per pair with both models' hit@1 / hit@5 and the difference, then the
difference pooled over the seeds file by file (each file's mean over the pairs), with its 95% interval from the
bootstrap over groups and the share of resamples at or below 0. This is how a lever measured over several seeds
is decided (docs/benchmarks.md). The bootstrap runs on each file's integer count of wins minus losses, so a pooled
difference of exactly 0 stays 0 and is counted as such.
"""

from __future__ import annotations

import argparse
import csv
import json
from math import comb
from pathlib import Path

import numpy as np

from xrdmodels.measured_eval import MeasuredScore, paired_changes

#: measured.json's per-file ranking key and summary key of each ranking `--ranking` may compare.
RANKINGS = {
    "model": ("top10", "summary"),
    "network": ("network_top10", "network_summary"),
    "library": ("library_top10", "library_summary"),
    "neighbours": ("neighbour_top10", "neighbour_summary"),
    "combined": ("combined_top10", "combined_summary"),
}
#: Resamples of the bootstrap over groups (`--groups`): the interval ends move by up to 0.003 between seeds (base0's
#: RRUFF hit@1 and hit@5, seeds 0-4).
BOOTSTRAP_RESAMPLES = 10_000


def read_scores(
    path: Path, ranking: str = "model"
) -> tuple[dict[tuple[str, str], MeasuredScore], list[dict]]:
    """The files of a score-measured `measured.json`, keyed by (set, file), ranked by `ranking` (a key of
    :data:`RANKINGS`), and that ranking's per-set summary rows."""
    top, summary = RANKINGS[ranking]
    try:
        data = json.loads(path.read_text())
        files = {
            (f["set"], f["file"]): MeasuredScore(
                f["set"], f["file"], [set(p) for p in f["phases"]], list(f[top]), f.get("warnings", [])
            )
            for f in data["files"]
        }
        return files, data[summary]
    except (OSError, ValueError, KeyError, TypeError) as error:
        raise SystemExit(
            f"{path}: not a score-measured measured.json with the {ranking} ranking ({error}); pass the file "
            "score-measured wrote (with --library for the library's and the combined ranking, from a checkpoint with a "
            "memory for the network's)"
        ) from None


def sign_test_p(wins: int, losses: int) -> float:
    """Exact two-sided p-value of `wins` against `losses` under a fair coin (1 when both are 0)."""
    n = wins + losses
    if n == 0:
        return 1.0
    tail = sum(comb(n, i) for i in range(min(wins, losses) + 1)) / 2**n
    return min(1.0, 2.0 * tail)


def read_groups(path: Path) -> dict[str, str]:
    """File name (without folders) -> group id, from a CSV with `file` and `group` columns."""
    try:
        with path.open(newline="") as f:
            rows = list(csv.DictReader(f))
        groups = {Path(row["file"]).name: row["group"] for row in rows}
    except (OSError, KeyError, csv.Error) as error:
        raise SystemExit(
            f"{path}: not a labels table with `file` and `group` columns ({error}); pass e.g. "
            "../shared/data/experimental/rruff/labels.csv"
        ) from None
    if len(groups) != len(rows):
        raise SystemExit(f"{path}: a file name appears twice; groups must name each file once")
    return groups


def bootstrap_group_means(
    values: np.ndarray, groups: list[str], resamples: int = BOOTSTRAP_RESAMPLES, seed: int = 0
) -> np.ndarray:
    """(resamples, M) means of the (N, M) per-file `values` over bootstrap resamples of the files' groups: each
    resample draws as many groups as there are, with replacement, and takes all files of every group drawn."""
    ids = {g: i for i, g in enumerate(dict.fromkeys(groups))}
    index = np.array([ids[g] for g in groups])
    sums = np.zeros((len(ids), values.shape[1]))
    np.add.at(sums, index, values)
    sizes = np.bincount(index, minlength=len(ids)).astype(float)
    draws = np.random.default_rng(seed).multinomial(
        len(ids), np.full(len(ids), 1.0 / len(ids)), size=resamples
    )
    return (draws @ sums) / (draws @ sizes)[:, None]


def _interval(samples: np.ndarray, signed: bool = False) -> str:
    lo, hi = np.percentile(samples, [2.5, 97.5])
    return f"{lo:+.3f} to {hi:+.3f}" if signed else f"{lo:.3f}-{hi:.3f}"


def _run_name(path: Path) -> str:
    """A run's name from its score file: runs/R/measured/measured.json -> R, else the file's folder."""
    return path.parent.parent.name if path.parent.name == "measured" else path.parent.name


def _single_phase_keys(
    files: dict[tuple[str, str], MeasuredScore], path: Path, single_set: str, groups: dict[str, str] | None
) -> list[tuple[str, str]]:
    """The (set, file) keys of `single_set` in `files`, checked to have a group in `groups` (when given)."""
    keys = sorted(k for k in files if k[0] == single_set)
    if not keys:
        raise SystemExit(f"no file of set {single_set!r} in {path}; pass --single-set with one of its sets")
    missing = [k[1] for k in keys if groups is not None and Path(k[1]).name not in groups]
    if missing:
        raise SystemExit(
            f"--groups names no group for {len(missing)} {single_set} files, e.g. {missing[0]}; pass the "
            f"labels table of the {single_set} set"
        )
    return keys


def _hits(files: dict[tuple[str, str], MeasuredScore], keys: list[tuple[str, str]]) -> np.ndarray:
    """int (len(keys), 2): whether each file's truth is in the top 1 and in the top 5."""
    return np.array([[any(files[k].found(n)) for n in (1, 5)] for k in keys], dtype=np.int64)


def table(
    paths: list[Path],
    names: list[str],
    single_set: str,
    groups: dict[str, str] | None = None,
    ranking: str = "model",
) -> str:
    """The markdown comparison table of the module docstring."""
    runs = [read_scores(p, ranking) for p in paths]
    base_files = runs[0][0]
    for path, (files, _) in zip(paths[1:], runs[1:], strict=True):
        if files.keys() != base_files.keys():
            raise SystemExit(
                f"{path} scores other files than {paths[0]}; compare outputs of one labels table"
            )
    keys = _single_phase_keys(base_files, paths[0], single_set, groups)
    # The single set too where its files hold several phases (the RRUFF pairs of rruff_pairs.py).
    multi_sets = sorted({k[0] for k, f in base_files.items() if k[0] != single_set or len(f.phases) > 1})
    columns = [
        "model",
        f"{single_set} hit@1 / hit@3 / hit@5 / hit@10",
        f"paired vs {names[0]}, hit@1 (p) / hit@5 (p)",
        *(f"{s} {what}" for s in multi_sets for what in ("recall@K*", "every phase in top 3")),
    ]
    if groups is not None:
        columns += ["hit@1 / hit@5, 95% over groups", "difference vs first, hit@1 / hit@5, 95% over groups"]
        resampled = bootstrap_group_means(
            np.concatenate([_hits(files, keys) for files, _ in runs], axis=1).astype(float),
            [groups[Path(k[1]).name] for k in keys],
        ).reshape(-1, len(runs), 2)
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    base = [base_files[k] for k in keys]
    for row, (name, (files, summary)) in enumerate(zip(names, runs, strict=True)):
        ordered = [files[k] for k in keys]
        hits = " / ".join(
            f"{sum(any(f.found(k)) for f in ordered) / len(ordered):.3f}" for k in (1, 3, 5, 10)
        )
        splits = []
        for k in (1, 5):
            wins, losses = paired_changes(base, ordered, k)
            splits.append(f"+{wins} −{losses} ({sign_test_p(wins, losses):.2g})")
        recall = {entry["set"]: entry["recall@K*"] for entry in summary}
        cells = []
        for s in multi_sets:
            scans = [f for key, f in files.items() if key[0] == s]
            cells.append(f"{recall.get(s, float('nan')):.3f}")
            cells.append(f"{sum(all(f.found(3)) for f in scans)} of {len(scans)}")
        paired_cell = " / ".join(splits) if row else ""  # the base row pairs with itself
        if groups is not None:
            cells.append(" / ".join(_interval(resampled[:, row, j]) for j in (0, 1)))
            difference = resampled[:, row] - resampled[:, 0]
            cells.append(" / ".join(_interval(difference[:, j], signed=True) for j in (0, 1)) if row else "")
        lines.append("| " + " | ".join([name, hits, paired_cell, *cells]) + " |")
    return "\n".join(lines)


def pooled_table(
    paths: list[Path],
    single_set: str,
    groups: dict[str, str],
    ranking: str = "model",
    base_ranking: str | None = None,
) -> str:
    """The `--pairs` table of the module docstring: `paths` are BASE, OTHER, BASE, OTHER, ... of several seeds,
    each BASE read by `base_ranking` (default `ranking`), so that one file can pair two of its own rankings."""
    if len(paths) < 2 or len(paths) % 2:
        raise SystemExit(f"--pairs needs BASE OTHER pairs of measured.json files, got {len(paths)} files")
    pairs = list(zip(paths[0::2], paths[1::2], strict=True))
    lines = [
        f"| seed pair (base / other) | {single_set} hit@1 / hit@5, base | other | difference |",
        "|---|---|---|---|",
    ]
    keys: list[tuple[str, str]] | None = None
    wins_minus_losses = None
    for base_path, other_path in pairs:
        (base, _), (other, _) = (
            read_scores(base_path, base_ranking or ranking),
            read_scores(other_path, ranking),
        )
        if keys is None:
            keys = _single_phase_keys(base, base_path, single_set, groups)
            wins_minus_losses = np.zeros((len(keys), 2), dtype=np.int64)
        for path, files in ((base_path, base), (other_path, other)):
            if sorted(k for k in files if k[0] == single_set) != keys:
                raise SystemExit(f"{path} scores other {single_set} files than {paths[0]}")
        base_hits, other_hits = _hits(base, keys), _hits(other, keys)
        wins_minus_losses += other_hits - base_hits
        b, o = base_hits.mean(axis=0), other_hits.mean(axis=0)
        lines.append(
            f"| {_run_name(base_path)} / {_run_name(other_path)} | {b[0]:.3f} / {b[1]:.3f} | "
            f"{o[0]:.3f} / {o[1]:.3f} | {o[0] - b[0]:+.3f} / {o[1] - b[1]:+.3f} |"
        )
    resampled = bootstrap_group_means(
        wins_minus_losses.astype(float), [groups[Path(k[1]).name] for k in keys]
    ) / len(pairs)
    mean = wins_minus_losses.mean(axis=0) / len(pairs)
    cells = [
        f"{mean[j]:+.4f}, 95% over groups {_interval(resampled[:, j], signed=True)}, "
        f"{(resampled[:, j] <= 0).mean():.4f} of resamples ≤ 0"
        for j in (0, 1)
    ]
    lines.append(f"| pooled over {len(pairs)} seeds, hit@1 / hit@5 | {cells[0]} | {cells[1]} | |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "scores", nargs="+", type=Path, help="measured.json of score-measured; the first is the base"
    )
    parser.add_argument("--names", nargs="+", help="one row name per file (default: each file's folder)")
    parser.add_argument(
        "--single-set", default="rruff", help="the single-phase set of the labels table (rruff)"
    )
    parser.add_argument(
        "--groups",
        type=Path,
        help="labels table with `file` and `group` columns (e.g. ../shared/data/experimental/rruff/labels.csv): "
        "adds 95%% intervals from a bootstrap over groups of near-identical samples",
    )
    parser.add_argument(
        "--pairs",
        action="store_true",
        help="read the files as BASE OTHER pairs of several seeds and pool their paired differences (needs --groups)",
    )
    parser.add_argument(
        "--ranking",
        choices=sorted(RANKINGS),
        default="model",
        help="which ranking of each file to compare (default model; the others need score-measured --library)",
    )
    parser.add_argument(
        "--base-ranking",
        choices=sorted(RANKINGS),
        help="with --pairs, the ranking of each BASE file (default: --ranking's), e.g. `--base-ranking network "
        "--ranking model A.json A.json`: a model with its memory against the network alone, in one file",
    )
    parser.add_argument("--out", type=Path, help="also write the table to this markdown file")
    args = parser.parse_args(argv)
    if args.base_ranking and not args.pairs:
        parser.error("--base-ranking pairs files of --pairs; add --pairs")
    if args.pairs:
        if not args.groups:
            parser.error("--pairs needs --groups (the labels table with `file` and `group` columns)")
        if args.names:
            parser.error("--pairs names each row after its runs' folders; leave out --names")
        text = pooled_table(
            args.scores, args.single_set, read_groups(args.groups), args.ranking, args.base_ranking
        )
    else:
        names = args.names or [_run_name(p) for p in args.scores]
        if len(names) != len(args.scores):
            parser.error(f"--names gives {len(names)} names for {len(args.scores)} files")
        text = table(
            args.scores,
            names,
            args.single_set,
            read_groups(args.groups) if args.groups else None,
            args.ranking,
        )
    print(text)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(text + "\n")


if __name__ == "__main__":
    main()
