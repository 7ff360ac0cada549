"""Library search on the shared measured sets: how each part of the search moves its answers, and what it costs.

Searches every file of a labels CSV (default: all of ../shared/data/experimental) against a bank with each variant
of `xrdmodels.library_search` named on the command line, all in one run, and prints per variant and set:
single-phase files with a labelled group first (hit@1) and in the first five (hit@5); multi-phase files with every
phase's group in the first three; milliseconds per pattern on this thread (reading excluded); and, against the
first variant, the single-phase files each one gains and loses at hit@1 and hit@5 (a paired comparison on the same
files). Variants:

  default          the search as `predict --library` runs it (the isotropic cell scan, +-3%)
  axes             the default and the axis-by-axis refinement (`--library-refine-axes`)
  no-scan          the library's cells only (zero-shift scan alone)
  scan-N           the default with the cell scan's reach at N per cent (e.g. scan-2, scan-6)

Usage: OMP_NUM_THREADS=1 OPENBLAS_NUM_THREADS=1 .venv/bin/python pipelines/bench_library_search.py
       [--bank runs/measured-lab/bank.zarr] [--variants default axes no-scan] [--sets rruff nist_duplex_steel]
       [--quick]   (`./dev.sh bench --only library_search`; --quick: the two multi-phase sets only, 14 files)
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from xrdmodels.config import DEFAULT_LIBRARY_CELL_SCAN
from xrdmodels.library_search import SpectralLibrary
from xrdmodels.measured_eval import MeasuredScore, paired_changes, read_labelled

REPO = Path(__file__).resolve().parents[1]
LABELS = REPO.parent / "shared" / "data" / "experimental" / "all_labels.csv"
DEFAULT_BANK = REPO / "runs" / "measured-lab" / "bank.zarr"
QUICK_SETS = ["xrd_autoanalyzer", "nist_duplex_steel"]


def _variant(name: str) -> tuple[float, bool]:
    """(cell scan, axis-by-axis refinement) of a variant name."""
    if name == "default":
        return DEFAULT_LIBRARY_CELL_SCAN, False
    if name == "axes":
        return DEFAULT_LIBRARY_CELL_SCAN, True
    if name == "no-scan":
        return 0.0, False
    if name.startswith("scan-"):
        return float(name.removeprefix("scan-")) / 100.0, False
    raise SystemExit(f"unknown variant {name!r}: use default, axes, no-scan or scan-N (N in per cent)")


def _hit_rate(scores: list[MeasuredScore], k: int) -> float:
    """Share of files with a labelled group within the first ``k``."""
    return sum(any(s.found(k)) for s in scores) / max(len(scores), 1)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--bank",
        default=str(DEFAULT_BANK),
        help="bank store searched (the library; default the measured pipeline's, runs/measured-lab/bank.zarr)",
    )
    parser.add_argument(
        "--labels",
        default=str(LABELS),
        help="labels CSV (default ../shared/data/experimental/all_labels.csv)",
    )
    parser.add_argument("--sets", nargs="*", default=None, help="sets of the labels CSV (default: all)")
    parser.add_argument(
        "--variants", nargs="+", default=["default", "axes", "no-scan"], help="variants (see above)"
    )
    parser.add_argument("--quick", action="store_true", help=f"only the sets {', '.join(QUICK_SETS)}")
    args = parser.parse_args(argv)
    if not Path(args.labels).exists():
        raise SystemExit(
            f"no labels at {args.labels}: give --labels (the shared measured sets' all_labels.csv)"
        )
    if "://" not in args.bank and not Path(args.bank).exists():
        raise SystemExit(
            f"no bank at {args.bank}: build one (`.venv/bin/python pipelines/measured/run.py` writes "
            "runs/measured-lab/bank.zarr) or give --bank"
        )
    if args.quick and args.sets is None:
        args.sets = QUICK_SETS
    settings = {name: _variant(name) for name in args.variants}
    library = SpectralLibrary.open(args.bank)
    labelled, failures = read_labelled(args.labels, sets=args.sets)
    for file, reason in failures:
        print(f"skipped {file}: {reason}")
    print(f"{len(library)} searched phases in {args.bank}; {len(labelled)} files")
    # Each variant's library ranking of each file, scored as score-measured scores a ranking.
    scores: dict[str, list[MeasuredScore]] = {}
    seconds: dict[str, float] = {}
    for name, (cell_scan, refine_axes) in settings.items():
        scores[name], start = [], time.perf_counter()
        for item in labelled:
            ranked = library.search(
                item.pattern,
                wavelength_angstrom=item.wavelength_angstrom,
                top_k=10,
                cell_scan=cell_scan,
                refine_axes=refine_axes,
            ).ranked
            groups = [m.spacegroup for m in ranked]
            scores[name].append(MeasuredScore(item.row["set"], str(item.path), item.phases, groups, []))
        seconds[name] = time.perf_counter() - start
    sets = sorted({item.row["set"] for item in labelled})
    print(
        "\n| variant | set | single-phase files | hit@1 | hit@5 | multi-phase files all in top 3 | ms per pattern |"
    )
    print("|---|---|---:|---:|---:|---:|---:|")
    for name in settings:
        for set_name in sets:
            single = [s for s in scores[name] if s.set == set_name and s.k_star == 1]
            multi = [s for s in scores[name] if s.set == set_name and s.k_star > 1]
            multi_text = f"{sum(all(s.found(3)) for s in multi)} of {len(multi)}" if multi else "-"
            print(
                f"| {name} | {set_name} | {len(single)} | {_hit_rate(single, 1):.3f} | {_hit_rate(single, 5):.3f} | "
                f"{multi_text} | {1000 * seconds[name] / len(labelled):.0f} |"
            )
    base = args.variants[0]
    for name in args.variants[1:]:
        single_pairs = [(b, o) for b, o in zip(scores[base], scores[name], strict=True) if b.k_star == 1]
        counts = []
        for k in (1, 5):
            gained, lost = paired_changes([b for b, _ in single_pairs], [o for _, o in single_pairs], k)
            counts.append(f"hit@{k} +{gained} -{lost}")
        print(f"{name} against {base}, single-phase files: {', '.join(counts)}")


if __name__ == "__main__":
    main()
