"""Scoring a checkpoint on measured patterns with known phases (e.g. ../shared/data/experimental/all_labels.csv).

The labels file lists one measured file per row with its phases: `spacegroups` (the target set),
`spacegroups_accept` (one entry per phase, `a|b` meaning either is acceptable) and `extra_or_trace` (minor
phases that are neither required nor penalised). Per set of files it reports hit@k (some phase in the top k),
recall@K* (mean fraction of phases found in the top K*) and cover@K* (every phase in the top K*), with 95%
intervals of hit@1 and hit@5 (:func:`wilson_interval`), so that a difference can be read against the set's
size; and how well the model's predicted set, the answer `predict` gives, agrees with the labelled one
(:func:`summarise_sets`: its size, precision, recall, F1 and exact match).

With a library (a bank store, :mod:`xrdmodels.library_search`), the same files are also searched against it
and the same figures are reported for the library's ranking, beside the model's, with the fraction of the
phases whose space group the library holds at all (no search can find the others), the same for the model and
the library combined in one ranking (:mod:`xrdmodels.combined`), and the model's hits by where the library ranks
the truth (`by_library_rank`).
"""

from __future__ import annotations

import csv
import io
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np

from .config import (
    DEFAULT_EXPECTED_PHASES,
    DEFAULT_LIBRARY_CELL_SCAN,
    DEFAULT_MEMORY_CELL_SCAN,
    N_SPACE_GROUPS,
)
from .measured import MeasuredPattern, read_pattern
from .measured.common import DEFAULT_MAX_PATTERN_BYTES, WAVELENGTH_PLAUSIBLE_ANGSTROM
from .measured.grid import WAVELENGTH_CONFLICT_REL_TOL
from .predict import DEFAULT_PRIOR_WEIGHT, Ranker, check_expected_phases, check_threshold

HIT_KS = (1, 3, 5, 10)
#: hit@k whose 95% interval every summary row carries (`hit@k lo`, `hit@k hi`).
INTERVAL_KS = (1, 5)
#: Standard normal quantile of a two-sided 95% interval.
Z_95 = 1.959963984540054


def wilson_interval(successes: int, n: int, z: float = Z_95) -> tuple[float, float]:
    """Wilson score interval of a proportion, successes of n (95% for the default z): the p whose normal test
    does not reject the observed share, |successes/n - p| <= z·sqrt(p(1 - p)/n). It stays inside [0, 1] and
    is honest near 0 and 1 where the plain p̂ ± z·se is not. Files are taken as independent; near-identical
    samples in a set (RRUFF's `group` column) make the true interval wider: about twice on RRUFF
    (`pipelines/measured/compare.py --groups`, docs/benchmarks.md)."""
    if n <= 0:
        raise ValueError(f"an interval needs at least one file, got n = {n}")
    if not 0 <= successes <= n:
        raise ValueError(f"successes must lie in [0, {n}], got {successes}")
    share = successes / n
    z2 = z * z
    centre = (share + z2 / (2 * n)) / (1 + z2 / n)
    half = z / (1 + z2 / n) * math.sqrt(share * (1 - share) / n + z2 / (4 * n * n))
    # At 0 or n successes one end is exactly 0 or 1; rounding would leave it a few ulps inside.
    lo = 0.0 if successes == 0 else max(0.0, centre - half)
    hi = 1.0 if successes == n else min(1.0, centre + half)
    return lo, hi


@dataclass
class MeasuredScore:
    set: str
    file: str
    phases: list[set[int]]  # acceptable space groups of each phase
    ranked: list[int]  # space groups, most probable first (all 230)
    warnings: list[str]
    library_ranked: list[int] | None = None  # the library's groups, best first ([] when its search failed)
    # model and library in one ranking (the model's alone when the search failed)
    combined_ranked: list[int] | None = None
    prior_weight: float = 0.0  # of the training label prior in `ranked` (predict.predict_one)
    # the library's groups by their phases' likeness in the model's eyes (xrdmodels.neighbours), best first
    neighbour_ranked: list[int] | None = None
    # the network's own ranking where the checkpoint's memory of its training phases re-ranked `ranked`
    network_ranked: list[int] | None = None
    # the model's predicted set, the answer `predict` gives (Prediction.predicted_set)
    predicted: list[int] | None = None
    # groups of minor phases (`extra_or_trace`): neither required nor penalised in the predicted set
    extra: set[int] = field(default_factory=set)
    # how the predicted set's size was chosen (Prediction.set_rule): under how many phases per sample
    # (Prediction.expected_phases) or at which threshold (Prediction.threshold)
    set_rule: str | None = None
    expected_phases: float | None = None
    threshold: float | None = None
    # the combined ranking's predicted set (xrdmodels.combined.combined_set), when a library was searched
    combined_predicted: list[int] | None = None

    @property
    def k_star(self) -> int:
        return len(self.phases)

    def set_agreement(self, chosen: list[int] | None = None) -> tuple[int, int]:
        """(phases the set names, its groups that name neither a labelled phase nor a minor one) of ``chosen``
        (default: the model's predicted set)."""
        chosen = set((self.predicted if chosen is None else chosen) or [])
        named = sum(bool(p & chosen) for p in self.phases)
        wrong = len(chosen - set().union(*self.phases) - self.extra)
        return named, wrong

    def found(self, k: int, ranked: list[int] | None = None) -> list[bool]:
        """Per phase, whether one of its acceptable groups is in the top k of ``ranked`` (default: the
        model's ranking)."""
        top = set((self.ranked if ranked is None else ranked)[:k])
        return [bool(p & top) for p in self.phases]


def paired_changes(base: list[MeasuredScore], other: list[MeasuredScore], k: int) -> tuple[int, int]:
    """(files `other` finds a phase of in its top k and `base` does not, the reverse), over the same files in
    order: the paired split that tells two models apart on one labelled set."""
    pairs = [(any(b.found(k)), any(o.found(k))) for b, o in zip(base, other, strict=True)]
    return sum(o and not b for b, o in pairs), sum(b and not o for b, o in pairs)


LABEL_COLUMNS = ("set", "file", "spacegroups")
"""Columns every labels table must have; ``spacegroups_accept``, ``wavelength_angstrom`` and others are optional."""


def parse_groups(column: str, text: str) -> set[int]:
    """Space groups of a labels column that lists them with ';' or '|' between (`extra_or_trace`); empty: none.

    Raises:
        ValueError: an entry that is not a space-group number 1-230.
    """
    try:
        groups = {int(x) for x in text.replace("|", ";").split(";") if x.strip()}
    except ValueError:
        groups = {0}
    if any(not 1 <= g <= N_SPACE_GROUPS for g in groups):
        raise ValueError(
            f"{column} {text!r} is not a list of space-group numbers 1-{N_SPACE_GROUPS} separated by ';' or '|'"
        )
    return groups


def parse_phases(accept: str, primary: str) -> list[set[int]]:
    """Acceptable space groups per phase from `spacegroups_accept` (`a|b;c`), else from `spacegroups` (`a;c`).

    Raises:
        ValueError: an entry that is not a space-group number 1-230, or no space group at all.
    """
    column, text = (
        ("spacegroups_accept", accept.strip()) if accept.strip() else ("spacegroups", primary.strip())
    )
    phases = []
    for entry in text.split(";"):
        try:
            groups = {int(x) for x in entry.split("|") if x.strip()}
        except ValueError:
            groups = {0}
        if any(not 1 <= g <= N_SPACE_GROUPS for g in groups):
            raise ValueError(
                f"{column} {text!r} is not a list of space-group numbers 1-{N_SPACE_GROUPS} (';' between phases, "
                "'|' between acceptable alternatives of one phase)"
            )
        if groups:
            phases.append(groups)
    if not phases:
        raise ValueError("the row names no space group: give the phases' groups in spacegroups")
    return phases


def _labelled_wavelength(row: dict[str, str], labels_csv: str | Path) -> float:
    text = (row.get("wavelength_angstrom") or "").strip()
    try:
        wavelength = float(text)
    except ValueError:
        wavelength = math.nan
    low, high = WAVELENGTH_PLAUSIBLE_ANGSTROM
    if not low < wavelength < high:
        raise ValueError(
            f"the file states no wavelength and its row of {labels_csv} has wavelength_angstrom {text!r}: give the "
            f"wavelength in Å in that column (X-ray wavelengths lie between {low} and {high} Å)"
        )
    return wavelength


def _row_conflict(row: dict[str, str], pattern: MeasuredPattern, labels_csv: str | Path) -> list[str]:
    """A warning when the file states a wavelength (which is used) and its row gives another, as predict warns
    for a --wavelength that contradicts the file."""
    try:
        stated = float((row.get("wavelength_angstrom") or "").strip())
    except ValueError:
        return []
    own = pattern.wavelength_angstrom
    if (
        own is None
        or not math.isfinite(stated)
        or math.isclose(stated, own, rel_tol=WAVELENGTH_CONFLICT_REL_TOL)
    ):
        return []
    return [f"using the file's wavelength {own:.6g} Å; its row of {labels_csv} says {stated:g} Å"]


@dataclass
class LabelledPattern:
    """One row of a labels table with its file read."""

    row: dict[str, str]
    path: Path
    pattern: MeasuredPattern
    wavelength_angstrom: float  # the file's own, else the row's `wavelength_angstrom`
    phases: list[set[int]]  # acceptable space groups per phase (:func:`parse_phases`)
    extra: set[int]  # groups of minor phases, `extra_or_trace` (:func:`parse_groups`)
    warnings: list[str] = field(default_factory=list)  # the row's wavelength contradicting the file's


def _labels_text(path: Path) -> str:
    """A labels table's text: UTF-8 (with or without the byte-order mark spreadsheets write), else Windows-1252,
    Excel's "CSV (Comma delimited)" on Western Windows.

    Raises:
        ValueError: neither (UTF-16 or binary content).
    """
    data = path.read_bytes()
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        if b"\x00" not in data:
            try:
                return data.decode("cp1252")
            except UnicodeDecodeError:
                pass
        raise ValueError(
            f"{path}: neither UTF-8 nor Windows-1252 text ({exc.reason}): save it as UTF-8 CSV"
        ) from None


def read_labelled(
    labels_csv: str | Path,
    *,
    sets: list[str] | None = None,
    limit: int | None = None,
    max_bytes: int = DEFAULT_MAX_PATTERN_BYTES,
) -> tuple[list[LabelledPattern], list[tuple[str, str]]]:
    """Read the files of a labels table (rows of ``sets`` only, the first ``limit`` of them; files larger than
    ``max_bytes`` refused); returns those that read and the others as (file, reason), a row whose labels are
    unusable, that names no file or repeats an earlier row's file in the same set as (table and row, reason).
    A file's own wavelength is used where it states one, else its row's ``wavelength_angstrom``.

    Raises:
        ValueError: the table is neither UTF-8 nor Windows-1252 text, lacks a column of :data:`LABEL_COLUMNS`,
            or holds no row of a set named in ``sets`` (the message lists its sets).
    """
    base = Path(labels_csv).parent
    reader = csv.DictReader(io.StringIO(_labels_text(Path(labels_csv)), newline=""))
    missing = [c for c in LABEL_COLUMNS if c not in (reader.fieldnames or [])]
    if missing:
        one_column = len(reader.fieldnames or []) == 1 and any(c in reader.fieldnames[0] for c in ";\t")
        raise ValueError(
            f"{labels_csv}: no column {', '.join(missing)} in its header {reader.fieldnames}: a labels table "
            f"needs {', '.join(LABEL_COLUMNS)} (and may have spacegroups_accept, extra_or_trace, wavelength_angstrom)"
            + ("; its header reads as one column: separate the columns with commas" if one_column else "")
        )
    # reader.line_num: the file line a row ends on (a quoted field may span lines, blank lines are skipped).
    every_row = [(reader.line_num, r) for r in reader]
    present = {r["set"] or "" for _, r in every_row}  # a short row lacks the column: None
    unknown = [name for name in sets or [] if name not in present]
    if unknown:
        raise ValueError(
            f"{labels_csv}: no row of set {', '.join(map(repr, unknown))}; its sets are "
            f"{', '.join(name or '(empty)' for name in sorted(present)) or 'none (no rows)'}"
        )
    rows = [(line, r) for line, r in every_row if not sets or r["set"] in sets]
    read, failures, first_line = [], [], {}
    for line, row in rows[:limit]:
        where = f"{labels_csv} line {line} ({row['file']})"
        if not (row["file"] or "").strip():
            failures.append((where, "the row names no file: give the pattern file, relative to the table"))
            continue
        key = (row["set"], (base / row["file"]).resolve())
        if key in first_line:
            failures.append(
                (where, f"repeats line {first_line[key]}'s file in set {row['set']!r}: scored once")
            )
            continue
        try:
            phases = parse_phases(row.get("spacegroups_accept") or "", row["spacegroups"] or "")
            extra = parse_groups("extra_or_trace", row.get("extra_or_trace") or "")
        except ValueError as exc:
            failures.append((where, str(exc)))
            continue
        path = base / row["file"]
        try:
            pattern = read_pattern(path, max_bytes=max_bytes)
            wavelength = pattern.wavelength_angstrom or _labelled_wavelength(row, labels_csv)
        except (ValueError, OSError) as exc:
            failures.append((str(path), str(exc)))
            continue
        first_line[key] = line  # only a row that reads: a bad first row does not hide a good repeat
        read.append(
            LabelledPattern(
                row, path, pattern, wavelength, phases, extra, _row_conflict(row, pattern, labels_csv)
            )
        )
    return read, failures


def score_measured(
    checkpoint: str,
    labels_csv: str,
    *,
    sets: list[str] | None = None,
    limit: int | None = None,
    library: str | None = None,
    prior_weight: float = DEFAULT_PRIOR_WEIGHT,
    library_cell_scan: float = DEFAULT_LIBRARY_CELL_SCAN,
    library_refine_axes: bool = False,
    library_neighbours: bool = True,
    memory: bool = True,
    memory_cell_scan: float = DEFAULT_MEMORY_CELL_SCAN,
    storage_options: dict | None = None,
    threshold: float | str | None = None,
    expected_phases: float | str = DEFAULT_EXPECTED_PHASES,
    max_bytes: int = DEFAULT_MAX_PATTERN_BYTES,
) -> tuple[list[MeasuredScore], list[tuple[str, str]]]:
    """Predict every labelled file (:func:`read_labelled`, with ``sets``, ``limit`` and ``max_bytes``); returns
    the per-file scores and the files that failed (file, reason).

    With ``library`` (a bank store URL; ``storage_options``: fsspec options used where it is remote) each file is
    also searched against that library; a file the model
    predicts but the library search cannot use keeps its model score, counts as a miss for the library and
    carries the reason as a warning. ``prior_weight``: the model's ranking hedged towards the training label
    prior (:func:`~xrdmodels.predict.predict_one`). ``library_cell_scan``, ``library_refine_axes``: the library
    search's cell scan and axis-by-axis refinement (:meth:`~xrdmodels.library_search.SpectralLibrary.search`,
    ``cell_scan`` and ``refine_axes``). ``library_neighbours``: the combined ranking also holds the library's
    neighbour search in the model's eyes (:mod:`xrdmodels.neighbours`). ``memory``: the model's ranking uses the
    checkpoint's memory of its training phases where it carries one (:func:`~xrdmodels.predict.predict_one`), and
    each score keeps the network's own ranking too (``network_ranked``); ``memory_cell_scan``: its cell scan
    (:func:`~xrdmodels.predict.memory_search`). ``threshold``: how the predicted set's size is chosen, as
    ``predict`` chooses it (:func:`~xrdmodels.predict.predict_one`: None for the expected-F1 size, a number, or
    "validation" for the checkpoint's validation threshold or gate); ``expected_phases``: the mean number of
    phases per sample the expected-F1 size reads the model's probabilities under (a number in [1, 5], or
    "training").

    Raises:
        LibraryFormatError: ``library`` is not a usable bank store (before any file is read).
        ValueError: the checkpoint's recorded training recipe or label prior is malformed, the prior weight
            is negative, the cell scan outside [0, 0.5), the threshold not a number >= 0 or "validation" or the
            expected phases not in [1, 5] or "training" (before any file is read). A library not on the model's
            grid has no neighbour search, which each file's warnings say.
    """
    threshold = check_threshold(threshold)
    expected_phases = check_expected_phases(expected_phases)
    ranker = Ranker.open(
        checkpoint,
        library=library,
        prior_weight=prior_weight,
        library_cell_scan=library_cell_scan,
        library_refine_axes=library_refine_axes,
        library_neighbours=library_neighbours,
        memory=memory,
        memory_cell_scan=memory_cell_scan,
        storage_options=storage_options,
    )
    labelled, failures = read_labelled(labels_csv, sets=sets, limit=limit, max_bytes=max_bytes)
    scores = []
    for item in labelled:
        pattern, wl = item.pattern, item.wavelength_angstrom
        try:
            pred, gridded = ranker.predict(pattern, wl, threshold=threshold, expected_phases=expected_phases)
        except ValueError as exc:
            failures.append((str(item.path), str(exc)))
            continue
        warnings, library_ranked, combined_ranked, neighbour_ranked = (
            [*item.warnings, *pred.warnings],
            None,
            None,
            None,
        )
        combined_predicted = None
        if ranker.library is not None:
            try:
                reading = ranker.search(pred, gridded, pattern, wl)
            except ValueError as exc:
                library_ranked, combined_ranked = [], [r.spacegroup for r in pred.ranked]
                combined_predicted = list(pred.predicted_set)
                warnings.append(f"library search failed: {exc}")
            else:
                library_ranked = [m.spacegroup for m in reading.found.ranked]
                warnings.extend(reading.warnings_beyond(warnings))
                similarity = reading.neighbour_similarity
                if similarity is not None:
                    known = np.flatnonzero(~np.isnan(similarity))
                    neighbour_ranked = [
                        int(c) + 1 for c in known[np.argsort(-similarity[known], kind="stable")]
                    ]
                if ranker.neighbour_note:
                    warnings.append(ranker.neighbour_note)
                combined_ranked = [g.spacegroup for g in reading.combined]
                combined_predicted = reading.combined_set
        scores.append(
            MeasuredScore(
                item.row["set"],
                item.row["file"],
                item.phases,
                [r.spacegroup for r in pred.ranked],
                warnings,
                library_ranked,
                combined_ranked,
                pred.prior_weight,
                neighbour_ranked,
                pred.network_ranked,
                list(pred.predicted_set),
                item.extra,
                pred.set_rule,
                pred.expected_phases,
                pred.threshold,
                combined_predicted,
            )
        )
    return scores, failures


def _first_rank(score: MeasuredScore, ranked: list[int]) -> float:
    """Rank of the best-ranked true group; when no true group is ranked (absent from a library), the mean
    rank it would get if the unranked groups followed the ranked ones in random order."""
    ranks = [ranked.index(g) + 1 for p in score.phases for g in p if g in ranked]
    return float(min(ranks)) if ranks else (len(ranked) + 1 + N_SPACE_GROUPS) / 2


Ranking = Literal["model", "network", "library", "neighbours", "combined"]


def _ranking(score: MeasuredScore, ranking: Ranking) -> list[int]:
    if ranking == "library":
        return score.library_ranked or []
    if ranking == "neighbours":
        return score.neighbour_ranked or []
    if ranking == "combined":
        return score.combined_ranked or []
    if ranking == "network":
        return score.ranked if score.network_ranked is None else score.network_ranked
    return score.ranked


def summarise(
    scores: list[MeasuredScore], *, ranking: Ranking = "model"
) -> list[dict[str, float | str | int]]:
    """One row per set (and one for all files): hit@k, recall@K*, cover@K*, mean rank of the first true phase,
    of the model's ranking, the network's alone (without the checkpoint's memory), the library's (which adds
    ``in_library``: the mean fraction of a file's phases whose space group the library holds), the library's in
    the model's eyes (:mod:`xrdmodels.neighbours`) or all combined (:mod:`xrdmodels.combined`)."""
    library = ranking == "library"
    out = []
    groups = {s.set for s in scores}
    for name in [*sorted(groups), "all"]:
        members = [s for s in scores if name in ("all", s.set)]
        if not members:
            continue
        ranked = {id(s): _ranking(s, ranking) for s in members}
        row: dict[str, float | str | int] = {"set": name, "files": len(members)}
        for k in HIT_KS:
            hits = sum(any(s.found(k, ranked[id(s)])) for s in members)
            row[f"hit@{k}"] = hits / len(members)
            if k in INTERVAL_KS:
                row[f"hit@{k} lo"], row[f"hit@{k} hi"] = wilson_interval(hits, len(members))
        row["recall@K*"] = sum(sum(s.found(s.k_star, ranked[id(s)])) / s.k_star for s in members) / len(
            members
        )
        row["cover@K*"] = sum(all(s.found(s.k_star, ranked[id(s)])) for s in members) / len(members)
        row["mean_first_rank"] = sum(_first_rank(s, ranked[id(s)]) for s in members) / len(members)
        if library:
            row["in_library"] = sum(
                sum(s.found(N_SPACE_GROUPS, ranked[id(s)])) / s.k_star for s in members
            ) / len(members)
        out.append(row)
    return out


_METRICS = [*[f"hit@{k}" for k in HIT_KS], "recall@K*", "cover@K*", "mean_first_rank"]

SET_METRICS = ("set size", "empty", "precision", "recall", "F1", "exact")


def summarise_sets(
    scores: list[MeasuredScore], which: Literal["model", "combined"] = "model"
) -> list[dict[str, float | str | int]] | None:
    """One row per set (and one for all files) on the model's predicted set, the answer `predict` gives (or with
    ``which`` "combined", the combined ranking's set): its
    mean size, the share of files it leaves empty, and per file averaged: precision m / (m + f), recall m / K*,
    F1 2m / (m + f + K*) (their harmonic mean) and exact (m = K*, f = 0), where m counts the labelled phases the
    set names (one of a phase's acceptable groups is enough) and f its groups that name no labelled phase; a
    group of a minor phase (`extra_or_trace`) counts neither way. A set that names no labelled phase and no wrong
    group (empty, or minor phases only) has precision 0. None when no score carries such a set."""

    def chosen_of(s: MeasuredScore) -> list[int] | None:
        return s.predicted if which == "model" else s.combined_predicted

    if all(chosen_of(s) is None for s in scores):
        return None
    out = []
    for name in [*sorted({s.set for s in scores}), "all"]:
        members = [s for s in scores if name in ("all", s.set) and chosen_of(s) is not None]
        if not members:
            continue
        per_file = []
        for s in members:
            m, f = s.set_agreement(chosen_of(s))
            per_file.append(
                (
                    m / (m + f) if m + f else 0.0,
                    m / s.k_star,
                    2 * m / (m + f + s.k_star),
                    m == s.k_star and f == 0,
                )
            )
        precision, recall, f1, exact = (sum(column) / len(members) for column in zip(*per_file, strict=True))
        out.append(
            {
                "set": name,
                "files": len(members),
                "set size": sum(len(chosen_of(s) or []) for s in members) / len(members),
                "empty": sum(not chosen_of(s) for s in members) / len(members),
                "precision": precision,
                "recall": recall,
                "F1": f1,
                "exact": exact,
            }
        )
    return out


#: Strata of `by_library_rank`: (name, lowest, highest library rank of the first true phase).
LIBRARY_RANK_STRATA = (
    ("library top 1", 1, 1),
    ("library rank 2-10", 2, 10),
    ("library rank > 10", 11, math.inf),
)


def by_library_rank(scores: list[MeasuredScore]) -> list[dict[str, float | str | int]]:
    """The model's hit@1 and hit@5 on the files where the library search ranks a true phase first, 2nd-10th,
    or lower (or not at all: not in the library), beside the library's hit@5 and the combined ranking's hit@1
    and hit@5 there: whether the model adds anything beyond a search of the same bank, whether it reads phases
    the library does not hold, and what combining the two keeps of each. Strata without files are left out."""
    searched = [s for s in scores if s.library_ranked is not None]
    rank = {id(s): _first_rank(s, s.library_ranked or []) for s in searched}
    out = []
    for name, low, high in LIBRARY_RANK_STRATA:
        members = [s for s in searched if low <= rank[id(s)] <= high]
        if members:
            out.append(
                {
                    "stratum": name,
                    "files": len(members),
                    "hit@1": sum(any(s.found(1)) for s in members) / len(members),
                    "hit@5": sum(any(s.found(5)) for s in members) / len(members),
                    "lib hit@5": sum(any(s.found(5, s.library_ranked)) for s in members) / len(members),
                    "comb hit@1": sum(any(s.found(1, s.combined_ranked)) for s in members) / len(members),
                    "comb hit@5": sum(any(s.found(5, s.combined_ranked)) for s in members) / len(members),
                }
            )
    return out


def _table(cols: list[str], rows: list[dict]) -> str:
    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    for r in rows:
        lines.append(
            "| " + " | ".join(f"{r[c]:.3f}" if isinstance(r[c], float) else str(r[c]) for c in cols) + " |"
        )
    return "\n".join(lines) + "\n"


def _set_rule_text(scores: list[MeasuredScore]) -> str:
    """How the predicted sets of ``scores`` were sized, in words."""
    texts = []
    for rule in sorted({s.set_rule for s in scores if s.predicted is not None and s.set_rule is not None}):
        if rule == "expected-f1":
            phases = sorted({s.expected_phases for s in scores if s.set_rule == rule and s.expected_phases})
            texts.append(
                "the size of highest expected F1 under the model's probabilities (the default), read at "
                f"{' / '.join(f'{p:g}' for p in phases) or '?'} phases per sample (--expected-phases), at most a "
                "training mixture's most phases"
            )
        else:
            thresholds = sorted(
                {s.threshold for s in scores if s.set_rule == rule and s.threshold is not None}
            )
            texts.append(
                f"as many groups as score >= {' / '.join(f'{t:g}' for t in thresholds) or '?'} (--threshold)"
            )
    return " / ".join(texts) or "not recorded"


def markdown(
    summary: list[dict],
    library_summary: list[dict] | None = None,
    combined_summary: list[dict] | None = None,
    neighbour_summary: list[dict] | None = None,
    network_summary: list[dict] | None = None,
    set_summary: list[dict] | None = None,
    set_rule: str = "not recorded",
    combined_set_summary: list[dict] | None = None,
) -> str:
    """The per-set table; with ``set_summary``, the model's predicted set against the labels
    (:func:`summarise_sets`; ``set_rule``: how its sizes were chosen, in words); with ``library_summary``, the library's columns (``lib ...``) beside the model's; with
    ``network_summary``, a table for the network without the checkpoint's memory; with ``neighbour_summary``, a table for the library's phases in the model's eyes; with ``combined_summary``, one for
    the rankings combined, and with ``combined_set_summary`` one for the combined ranking's predicted set; then the 95% intervals of hit@1 and hit@5 of each ranking, set by set."""
    cols = ["set", "files", *_METRICS]
    rows = [dict(r) for r in summary]
    if library_summary is not None:
        library_cols = [*_METRICS, "in_library"]
        cols += [f"lib {c}" for c in library_cols]
        by_set = {r["set"]: r for r in library_summary}
        for r in rows:
            r.update({f"lib {c}": by_set[r["set"]][c] for c in library_cols})
    text = _table(cols, rows)
    if set_summary is not None:
        text += (
            "\nThe model's predicted set, the answer `predict` gives, against the labelled phases (precision, "
            "recall, F1 and exact match per file, averaged; a set naming no phase, empty or minor phases only, has "
            f"precision 0). Its size: {set_rule}.\n\n"
        )
        text += _table(["set", "files", *SET_METRICS], set_summary)
    if network_summary is not None:
        text += (
            "\nThe network alone, without the checkpoint's memory of its training phases (--no-memory):\n\n"
        )
        text += _table(["set", "files", *_METRICS], network_summary)
    if neighbour_summary is not None:
        text += "\nThe library's phases ranked by their likeness to the pattern in the model's eyes (xrdmodels.neighbours):\n\n"
        text += _table(["set", "files", *_METRICS], neighbour_summary)
    if combined_summary is not None:
        text += "\nThe model and the library combined in one ranking (xrdmodels.combined):\n\n"
        text += _table(["set", "files", *_METRICS], combined_summary)
    if combined_set_summary is not None:
        text += (
            "\nThe combined ranking's predicted set (its top, as many groups as the model's predicted set; "
            "xrdmodels.combined.combined_set), against the labelled phases as above:\n\n"
        )
        text += _table(["set", "files", *SET_METRICS], combined_set_summary)
    rankings = [
        ("model", summary),
        ("network", network_summary),
        ("library", library_summary),
        ("neighbours", neighbour_summary),
        ("combined", combined_summary),
    ]
    text += (
        "\n95% intervals of hit@1 and hit@5 (Wilson score, files taken as independent; near-identical samples "
        "widen them: about twofold on the shared RRUFF set, where a bootstrap over its groups gives hit@1 ±0.10, "
        "docs/benchmarks.md):\n\n"
    )
    interval_rows = [
        {
            "set": r["set"],
            "ranking": name,
            **{
                f"hit@{k}": f"{r[f'hit@{k}']:.3f} ({r[f'hit@{k} lo']:.3f}-{r[f'hit@{k} hi']:.3f})"
                for k in INTERVAL_KS
            },
        }
        for name, rows_of in rankings
        if rows_of is not None
        for r in rows_of
    ]
    text += _table(["set", "ranking", *[f"hit@{k}" for k in INTERVAL_KS]], interval_rows)
    return text


def write(
    scores: list[MeasuredScore], failures: list[tuple[str, str]], out_dir: str | Path
) -> tuple[list[dict], list[dict] | None, list[dict] | None]:
    """Write measured.md and measured.json; returns the model's summary, the library's and the combined
    ranking's (both None without a library)."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    summary = summarise(scores)
    searched = any(s.library_ranked is not None for s in scores)
    library_summary = summarise(scores, ranking="library") if searched else None
    combined_summary = summarise(scores, ranking="combined") if searched else None
    neighbours = any(s.neighbour_ranked is not None for s in scores)
    neighbour_summary = summarise(scores, ranking="neighbours") if neighbours else None
    remembered = any(s.network_ranked is not None for s in scores)
    network_summary = summarise(scores, ranking="network") if remembered else None
    strata = by_library_rank(scores) if searched else None
    set_summary = summarise_sets(scores)
    combined_set_summary = summarise_sets(scores, which="combined") if searched else None
    table = markdown(
        summary,
        library_summary,
        combined_summary,
        neighbour_summary,
        network_summary,
        set_summary,
        _set_rule_text(scores),
        combined_set_summary,
    )
    weights = sorted({s.prior_weight for s in scores})
    if weights != [0.0]:
        table = (
            "The model ranks each group by its score + w × (its share of the training phases within its crystal "
            "system × the model's belief in that system), w = "
            f"{' / '.join(f'{w:g}' for w in weights)} (--prior-weight; 0: the model's scores alone).\n\n"
            + table
        )
    if strata is not None:
        table += "\nThe model by where the library search ranks the true phase (all files):\n\n"
        table += _table(
            ["stratum", "files", "hit@1", "hit@5", "lib hit@5", "comb hit@1", "comb hit@5"], strata
        )
    (out / "measured.md").write_text(table)
    (out / "measured.json").write_text(
        json.dumps(
            {
                "summary": summary,
                "library_summary": library_summary,
                "combined_summary": combined_summary,
                "neighbour_summary": neighbour_summary,
                "network_summary": network_summary,
                "by_library_rank": strata,
                "set_summary": set_summary,
                "combined_set_summary": combined_set_summary,
                "files": [
                    {
                        "set": s.set,
                        "file": s.file,
                        "phases": [sorted(p) for p in s.phases],
                        "top10": s.ranked[:10],
                        "library_top10": None if s.library_ranked is None else s.library_ranked[:10],
                        "combined_top10": None if s.combined_ranked is None else s.combined_ranked[:10],
                        "neighbour_top10": None if s.neighbour_ranked is None else s.neighbour_ranked[:10],
                        "network_top10": None if s.network_ranked is None else s.network_ranked[:10],
                        "predicted_set": s.predicted,
                        "combined_predicted_set": s.combined_predicted,
                        "set_rule": s.set_rule,
                        "expected_phases": s.expected_phases,
                        "threshold": s.threshold,
                        "extra_or_trace": sorted(s.extra),
                        "warnings": s.warnings,
                        "prior_weight": s.prior_weight,
                    }
                    for s in scores
                ],
                "failures": [{"file": f, "error": e} for f, e in failures],
            },
            indent=2,
        )
    )
    return summary, library_summary, combined_summary
