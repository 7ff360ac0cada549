"""All benchmarks (`./dev.sh bench [--quick] [--only NAME]`); each prints ratios against a baseline from the same run.

  peaks     our numba peak kernel vs pymatgen's XRDCalculator, identical output checked (issue: >= 30x)
  mixtures  the A.1 recipe kernel, mixtures/s on one core vs the numpy reference (>= 10,000/s, >= 10x)
  generate  end-to-end `mixtures generate` to local disk, 1 vs N workers, MB/s and compression (1M <= 3 min)
  loader    streaming samples/s from local disk and loopback S3 vs the 4,000 samples/s an H100 needs
  learning  learning curves of the three model families vs the label prior and 1-NN retrieval (minutes each)
  memorise  which read-out lets a CPU-size model memorise 256 fixed patterns (the paper's vs the cpu preset's)
  train_speed  samples/s of the `cpu` preset's training steps (front-end, dropout, fused AdamW, threads, bf16,
            torch.compile) vs the demo's model when issue 10 was filed, and where a step's time goes (3x)
  wavelength  a checkpoint's scores on the same phases simulated at Cu, Mo, Ag and synchrotron wavelengths,
            read through the measured-data reader with and without each of its steps, beside a library search
  random_crystals  the `random:N` source's pyxtal crystals with one shared tolerance table vs pyxtal's own per call
  library_search  the library search's variants (cell scan reach, axis-by-axis refinement) on the shared measured
            sets, file by file against the default, with ms per pattern (needs the measured pipeline's bank)

Record the figures with the command and machine in docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import importlib.util
import platform
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
BENCHES = {
    "peaks": "bench_peaks.py",
    "mixtures": "bench_mixtures.py",
    "generate": "bench_generate.py",
    "loader": "bench_loader.py",
    "learning": "bench_learning.py",
    "memorise": "bench_memorise.py",
    "train_speed": "bench_train_speed.py",
    "wavelength": "bench_wavelength.py",
    "random_crystals": "bench_random_crystals.py",
    "library_search": "bench_library_search.py",
}


def load(name: str):
    module_name = BENCHES[name].removesuffix(".py")
    spec = importlib.util.spec_from_file_location(module_name, HERE / BENCHES[name])
    module = importlib.util.module_from_spec(spec)
    sys.modules[module_name] = module  # worker processes unpickle its functions by module name
    spec.loader.exec_module(module)
    return module


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="small sizes: a smoke run of every benchmark")
    parser.add_argument(
        "--only", action="append", choices=sorted(BENCHES), help="run only these (repeatable)"
    )
    args = parser.parse_args(argv)
    import os

    print(
        f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, Python "
        f"{platform.python_version()}, {time.strftime('%Y-%m-%d')}"
    )
    failed = []
    for name in args.only or BENCHES:
        print(f"\n### {name}", flush=True)
        try:
            load(name).main(["--quick"] if args.quick else [])
        except SystemExit as exc:
            # A benchmark that cannot run here (e.g. no trained checkpoint yet) says why; the others still run.
            if exc.code not in (None, 0):
                print(f"### {name}: not run: {exc.code}", flush=True)
                failed.append(name)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
