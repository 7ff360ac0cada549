"""The main job on the embedded default: bank -> mixtures -> (models, evaluation, prediction as they land).

Every stage is the real command a user would type, run with the outputs in one folder; a rerun reuses the
stages that finished. Usage: ./dev.sh demo [--out runs/demo] [--workers 2]
"""

from __future__ import annotations

import argparse
import shlex
import subprocess
import sys
import time
from pathlib import Path

BIN = Path(sys.executable).parent


def stage(title: str, argv: list[str]) -> None:
    print(f"\n== {title}\n$ {shlex.join(argv)}", flush=True)
    t0 = time.perf_counter()
    result = subprocess.run(argv)
    if result.returncode != 0:
        sys.exit(f"demo: stage '{title}' failed (exit {result.returncode}); fix the error above and rerun, "
                 "finished stages are reused")
    print(f"== {title}: done in {time.perf_counter() - t0:.0f} s", flush=True)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default="runs/demo", help="folder for every output (default runs/demo)")
    parser.add_argument("--workers", type=int, default=2, help="Dask worker processes (default 2)")
    parser.add_argument("--n-train", default="20k", help="training mixtures (default 20k)")
    args = parser.parse_args(argv)
    out = Path(args.out).resolve()
    out.mkdir(parents=True, exist_ok=True)
    bank = out / "bank.zarr"
    xrdsynth = str(BIN / "xrdsynth")

    stage("bank: AFLOW prototypes shipped with pymatgen + 1 random crystal per space group",
          [xrdsynth, "bank", "build", "--source", "builtin", "--source", "random:1", "--out", str(bank),
           "--workers", str(args.workers)])
    stage("mixtures: train / val / test / in-library stores",
          [xrdsynth, "mixtures", "generate", "--bank", str(bank), "--out", str(out / "mixtures"),
           "--n", args.n_train, "--workers", str(args.workers), "--resume"])
    stage("mixtures: what the training store holds", [xrdsynth, "mixtures", "inspect", str(out / "mixtures" / "train.zarr")])
    print(f"\nall outputs are in {out}")


if __name__ == "__main__":
    main()
