"""Benchmark of the training input pipeline: decoded samples/s of ShardStream + DataLoader.

Writes a mixture store of realistic, compressible patterns (a few hundred narrow peaks + noise, normalised as
docs/formats.md says) with tests/xrdmodels/store_factory.py (zarr only, no xrdsynth), then streams one epoch
from local disk and from a loopback S3 endpoint (moto), for each DataLoader worker count, and compares the
rate with the target a paper-size model consumes on one H100.

Usage: .venv/bin/python pipelines/bench_loader.py [--n-samples 65536] [--workers 0 2] [--out DIR] [--no-s3]
"""

from __future__ import annotations

import argparse
import logging
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests" / "xrdmodels"))

#: Samples/s a paper-size model (A.3: 18 layers, d=768) trains at on one H100 with batch 256.
TARGET_SAMPLES_PER_S = 4000.0


def measure(url: str, batch_size: int, num_workers: int, storage_options: dict | None, epochs: int) -> dict:
    """One full pass per epoch; returns decoded samples/s over all epochs and the time to the first batch."""
    from torch.utils.data import DataLoader

    from xrdmodels.data import ShardStream

    stream = ShardStream(url, batch_size, seed=0, storage_options=storage_options, drop_last=False)
    loader = DataLoader(
        stream, batch_size=None, num_workers=num_workers, prefetch_factor=4 if num_workers else None
    )
    n_samples, first_batch_s = 0, None
    t0 = time.perf_counter()
    for epoch in range(epochs):
        stream.set_epoch(epoch)
        for batch in loader:
            if first_batch_s is None:
                first_batch_s = time.perf_counter() - t0
            n_samples += len(batch["pattern"])
    wall_s = time.perf_counter() - t0
    return {
        "samples": n_samples,
        "wall_s": wall_s,
        "samples_per_s": n_samples / wall_s,
        "first_batch_s": first_batch_s,
    }


def store_size_mb(path: Path) -> float:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file()) / 2**20


def reusable(path: Path, spec: Any) -> bool:
    """Whether `path` already holds a complete store of this shape (reruns with --out skip the writing)."""
    from xrdmodels.data import MixtureStore, StoreFormatError

    if not path.exists():
        return False
    try:
        store = MixtureStore(str(path))
    except StoreFormatError:
        return False
    return (store.n_samples, store.grid.n_bins, store.shard_size) == (
        spec.n_samples,
        spec.n_bins,
        spec.shard_size,
    )


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--n-samples", type=int, default=65536, help="samples in the store (default 65536)")
    parser.add_argument("--n-bins", type=int, default=2048, help="bins per pattern (default 2048, A.1)")
    parser.add_argument("--shard-size", type=int, default=4096, help="rows per shard (default 4096)")
    parser.add_argument("--batch-size", type=int, default=256, help="batch size (default 256, the paper's)")
    parser.add_argument(
        "--workers", type=int, nargs="+", default=[0, 2], help="DataLoader workers (default 0 2)"
    )
    parser.add_argument("--epochs", type=int, default=1, help="passes per measurement (default 1)")
    parser.add_argument(
        "--out", default=None, help="folder for the store, reused by reruns (default: a temporary folder)"
    )
    parser.add_argument("--no-s3", action="store_true", help="skip the loopback S3 measurement")
    args = parser.parse_args(argv)

    from store_factory import StoreSpec, write_store

    with tempfile.TemporaryDirectory() as tmp:
        out = Path(args.out) if args.out else Path(tmp)
        out.mkdir(parents=True, exist_ok=True)
        local = out / "bench.zarr"
        spec = StoreSpec(
            n_samples=args.n_samples, n_bins=args.n_bins, shard_size=args.shard_size, chunk_rows=256
        )
        raw_mb = args.n_samples * args.n_bins * 2 / 2**20
        if reusable(local, spec):
            print(f"reusing {local}", flush=True)
        else:
            t0 = time.perf_counter()
            write_store(str(local), spec, seed=0, realistic=True, keep=False)
            print(
                f"wrote {local}: {args.n_samples} x {args.n_bins} float16 in {time.perf_counter() - t0:.0f} s",
                flush=True,
            )
        print(f"store: {store_size_mb(local):.0f} MiB on disk ({raw_mb:.0f} MiB of patterns uncompressed)")

        sources: list[tuple[str, str, dict | None]] = [("local", str(local), None)]
        server = None
        if not args.no_s3:
            import s3fs
            from moto.server import ThreadedMotoServer

            logging.getLogger("werkzeug").setLevel(logging.ERROR)  # one log line per request otherwise
            server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
            server.start()
            host, port = server.get_host_and_port()
            options = {"client_kwargs": {"endpoint_url": f"http://{host}:{port}"}, "key": "x", "secret": "x"}
            fs = s3fs.S3FileSystem(**options)
            fs.mkdir("bench-loader")
            t0 = time.perf_counter()
            fs.put(str(local), "bench-loader/", recursive=True)
            print(f"uploaded to the loopback S3 endpoint in {time.perf_counter() - t0:.0f} s", flush=True)
            sources.append(("s3 (moto)", "s3://bench-loader/bench.zarr", options))

        try:
            print(
                f"\n{'source':<10} {'workers':>7} {'samples/s':>10} {'x target':>9} {'1st batch s':>11} {'wall s':>7}"
            )
            for name, url, options in sources:
                for num_workers in args.workers:
                    r = measure(url, args.batch_size, num_workers, options, args.epochs)
                    print(
                        f"{name:<10} {num_workers:>7} {r['samples_per_s']:>10.0f} "
                        f"{r['samples_per_s'] / TARGET_SAMPLES_PER_S:>9.2f} {r['first_batch_s']:>11.2f} "
                        f"{r['wall_s']:>7.1f}",
                        flush=True,
                    )
            print(
                f"\ntarget: {TARGET_SAMPLES_PER_S:.0f} samples/s (paper-size model, one H100, batch "
                f"{args.batch_size}); 'x target' above 1 means the loader keeps up"
            )
        finally:
            if server is not None:
                server.stop()


if __name__ == "__main__":
    main()
