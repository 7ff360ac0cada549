"""Scoring a checkpoint on measured patterns with known phases (e.g. ../shared/data/experimental/all_labels.csv).

The labels file lists one measured file per row with its phases: `spacegroups` (the target set),
`spacegroups_accept` (one entry per phase, `a|b` meaning either is acceptable) and `extra_or_trace` (minor
phases that are neither required nor penalised). Per set of files it reports hit@k (some phase in the top k),
recall@K* (mean fraction of phases found in the top K*) and cover@K* (every phase in the top K*).
"""

from __future__ import annotations

import csv
import json
from dataclasses import dataclass
from pathlib import Path

from .config import N_SPACE_GROUPS
from .evaluate import load_model
from .measured import read_pattern
from .predict import predict_one

HIT_KS = (1, 3, 5, 10)


@dataclass
class MeasuredScore:
    set: str
    file: str
    phases: list[set[int]]  # acceptable space groups of each phase
    ranked: list[int]  # space groups, most probable first (all 230)
    warnings: list[str]

    @property
    def k_star(self) -> int:
        return len(self.phases)

    def found(self, k: int) -> list[bool]:
        top = set(self.ranked[:k])
        return [bool(p & top) for p in self.phases]


def parse_phases(accept: str, primary: str) -> list[set[int]]:
    """Acceptable space groups per phase from `spacegroups_accept` (`a|b;c`), else from `spacegroups` (`a;c`)."""
    text = accept.strip() or primary.strip()
    phases = []
    for entry in text.split(";"):
        groups = {int(x) for x in entry.split("|") if x.strip()}
        if groups:
            phases.append(groups)
    return phases


def _labelled_wavelength(row: dict[str, str], labels_csv: str) -> float:
    text = (row.get("wavelength_angstrom") or "").strip()
    try:
        return float(text)
    except ValueError:
        raise ValueError(
            f"{labels_csv}: the file states no wavelength and its row's wavelength_angstrom is {text!r}; give "
            "the wavelength in Å in that column"
        ) from None


def score_measured(
    checkpoint: str, labels_csv: str, *, sets: list[str] | None = None, limit: int | None = None
) -> tuple[list[MeasuredScore], list[tuple[str, str]]]:
    """Predict every labelled file; returns the per-file scores and the files that failed (file, reason)."""
    model, state = load_model(checkpoint)
    base = Path(labels_csv).parent
    scores, failures = [], []
    with open(labels_csv, newline="") as f:
        rows = [r for r in csv.DictReader(f) if not sets or r["set"] in sets]
    for row in rows[:limit]:
        path = base / row["file"]
        try:
            pattern = read_pattern(path)
            wl = pattern.wavelength_angstrom or _labelled_wavelength(row, labels_csv)
            pred, _ = predict_one(model, state, pattern, wavelength_angstrom=wl, top_k=N_SPACE_GROUPS)
        except (ValueError, OSError) as exc:
            failures.append((str(path), str(exc)))
            continue
        scores.append(
            MeasuredScore(
                row["set"],
                row["file"],
                parse_phases(row["spacegroups_accept"], row["spacegroups"]),
                [r.spacegroup for r in pred.ranked],
                pred.warnings,
            )
        )
    return scores, failures


def summarise(scores: list[MeasuredScore]) -> list[dict[str, float | str | int]]:
    """One row per set (and one for all files): hit@k, recall@K*, cover@K*, mean rank of the first true phase."""
    out = []
    groups = {s.set for s in scores}
    for name in [*sorted(groups), "all"]:
        members = [s for s in scores if name in ("all", s.set)]
        if not members:
            continue
        row: dict[str, float | str | int] = {"set": name, "files": len(members)}
        for k in HIT_KS:
            row[f"hit@{k}"] = sum(any(s.found(k)) for s in members) / len(members)
        row["recall@K*"] = sum(sum(s.found(s.k_star)) / s.k_star for s in members) / len(members)
        row["cover@K*"] = sum(all(s.found(s.k_star)) for s in members) / len(members)
        row["mean_first_rank"] = sum(
            min(s.ranked.index(g) + 1 for p in s.phases for g in p if g in s.ranked) for s in members
        ) / len(members)
        out.append(row)
    return out


def markdown(summary: list[dict]) -> str:
    cols = ["set", "files", *[f"hit@{k}" for k in HIT_KS], "recall@K*", "cover@K*", "mean_first_rank"]
    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    for r in summary:
        lines.append(
            "| " + " | ".join(f"{r[c]:.3f}" if isinstance(r[c], float) else str(r[c]) for c in cols) + " |"
        )
    return "\n".join(lines) + "\n"


def write(scores: list[MeasuredScore], failures: list[tuple[str, str]], out_dir: str | Path) -> list[dict]:
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    summary = summarise(scores)
    (out / "measured.md").write_text(markdown(summary))
    (out / "measured.json").write_text(
        json.dumps(
            {
                "summary": summary,
                "files": [
                    {
                        "set": s.set,
                        "file": s.file,
                        "phases": [sorted(p) for p in s.phases],
                        "top10": s.ranked[:10],
                        "warnings": s.warnings,
                    }
                    for s in scores
                ],
                "failures": [{"file": f, "error": e} for f, e in failures],
            },
            indent=2,
        )
    )
    return summary
