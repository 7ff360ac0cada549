"""Benchmark the `random:N` structure source: pyxtal crystals with one shared tolerance table against pyxtal's
own table per call (its default), on the same groups in the same run.

pyxtal 1.1 builds a 119 x 119 ``Tol_matrix`` for every crystal and for every Wyckoff merge, and does not use the
merge's one; ``xrdsynth.structures.random_crystals`` builds it once (``_pyxtal_tolerances``). This times
``random_structure(sg, k, seed)`` both ways, alternating in blocks of groups so that load from other processes
hits both alike, and checks that every crystal is the same atom for atom.

Usage: ``python pipelines/bench_random_crystals.py [--groups 1-230] [--seed 0] [--block 10] [--quick]``
"""

from __future__ import annotations

import argparse
import contextlib
import time
from collections.abc import Iterator

import numpy as np
import pyxtal.operations
import pyxtal.symmetry

from xrdsynth.structures import random_crystals


@contextlib.contextmanager
def pyxtal_own_tables() -> Iterator[None]:
    """pyxtal as released: a new tolerance table per crystal and per Wyckoff merge."""
    random_crystals._pyxtal_tolerances()  # install the shared table first, so that it can be taken out here
    shared_check, shared_tables = pyxtal.symmetry.check_images, random_crystals._pyxtal_tolerances
    pyxtal.symmetry.check_images = pyxtal.operations.check_images
    random_crystals._pyxtal_tolerances = lambda: None
    try:
        yield
    finally:
        pyxtal.symmetry.check_images, random_crystals._pyxtal_tolerances = shared_check, shared_tables


def crystal_key(sg: int, seed: int) -> tuple:
    structure, metadata = random_crystals.random_structure(sg, 0, seed)
    return (
        [str(site.specie) for site in structure],
        structure.lattice.matrix.tobytes(),
        np.ascontiguousarray(structure.frac_coords).tobytes(),
        tuple(sorted(metadata.items())),
    )


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--groups", default="1-230", help="space groups, e.g. '1-230' or '2,14,225'")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--block", type=int, default=10, help="groups per timing block")
    parser.add_argument("--quick", action="store_true", help="every 10th group")
    args = parser.parse_args(argv)
    groups = random_crystals._parse_groups(args.groups, args.groups)
    if args.quick:
        groups = groups[::10]
    for sg in groups:  # pyxtal's Group tables, cached, so that neither way pays for them
        random_crystals._wyckoff_multiplicities(sg)
    seconds = {"shared": 0.0, "own": 0.0}
    for start in range(0, len(groups), args.block):
        block = groups[start : start + args.block]
        started = time.perf_counter()
        shared = [crystal_key(sg, args.seed) for sg in block]
        seconds["shared"] += time.perf_counter() - started
        with pyxtal_own_tables():
            started = time.perf_counter()
            own = [crystal_key(sg, args.seed) for sg in block]
            seconds["own"] += time.perf_counter() - started
        if shared != own:
            raise SystemExit(f"crystals differ between the two ways in groups {block}")
    n = len(groups)
    print(f"random crystals, {n} groups (k = 0, seed {args.seed}), every crystal identical both ways:")
    print(
        f"  pyxtal's own tables (baseline): {seconds['own']:.1f} s ({seconds['own'] / n * 1e3:.0f} ms a crystal)"
    )
    print(
        f"  one shared table:               {seconds['shared']:.1f} s ({seconds['shared'] / n * 1e3:.0f} ms a crystal)"
    )
    print(f"  speed-up: {seconds['own'] / seconds['shared']:.2f}x")


if __name__ == "__main__":
    main()
