"""End-to-end mixture generation: samples/s, write MB/s, compression and bytes per sample, 1 vs N workers.

Builds (or reuses) a bank, then times `generate_all` for the train split on local disk with 1 worker and with
N workers in the same run, printing the scaling ratio, and extrapolates 1M and 10M samples.

Usage: .venv/bin/python pipelines/bench_generate.py [--n 1M] [--workers 2] [--bank PATH] [--quick]
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
import time
from pathlib import Path


def main(argv: list[str] | None = None) -> None:
    from xrdsynth.bank import Bank
    from xrdsynth.bank_build import build_bank
    from xrdsynth.cli import parse_count
    from xrdsynth.config import BankConfig, GenerateConfig, RecipeConfig
    from xrdsynth.generate import generate_all

    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--n", default="1M", help="train samples to generate with N workers (default 1M)")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument(
        "--bank", default=None, help="existing bank (default: builtin + random:1, built here)"
    )
    parser.add_argument("--engine", default="exact", choices=["exact", "lut"])
    parser.add_argument("--quick", action="store_true", help="50k samples, for a smoke run")
    args = parser.parse_args(argv)
    n = 50_000 if args.quick else parse_count(args.n)
    work = Path(tempfile.mkdtemp(prefix="bench-generate-"))
    try:
        if args.bank:
            bank = Bank.open(args.bank)
        else:
            print("building the bank (builtin + random:1) ...", flush=True)
            bank = build_bank(
                ["builtin", "random:1"], str(work / "bank.zarr"), BankConfig(), workers=args.workers
            )
        config = GenerateConfig(recipe=RecipeConfig(engine=args.engine))
        n_single = max(config.shard_size * 2, min(n // 10, 100_000))
        results = {}
        for workers, count in ((1, n_single), (args.workers, n)):
            out = work / f"mix-{workers}"
            t0 = time.perf_counter()
            (report,) = generate_all(bank.url, str(out), count, config, splits=("train",), workers=workers)
            seconds = time.perf_counter() - t0
            results[workers] = (count, seconds, report)
            stored = report.stored_bytes or 0
            print(
                f"workers {workers}: {count:,} samples in {seconds:.1f} s = {count / seconds:,.0f} samples/s; "
                f"stored {stored / 1e6:.0f} MB at {stored / 1e6 / seconds:.1f} MB/s, "
                f"{stored / count:.0f} B/sample, compression {report.uncompressed_bytes / max(stored, 1):.2f}x",
                flush=True,
            )
            shutil.rmtree(out)
        (c1, s1, _), (cn, sn, _) = results[1], results[args.workers]
        rate_n = cn / sn
        print(f"scaling {args.workers} workers vs 1: {rate_n / (c1 / s1):.2f}x")
        print(
            f"extrapolated at {args.workers} workers: 1M in {1e6 / rate_n / 60:.1f} min, "
            f"10M in {1e7 / rate_n / 60:.0f} min; 10M on W workers ≈ {1e7 / (c1 / s1) / 60:.0f} min / W "
            "(shards are independent)"
        )
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
