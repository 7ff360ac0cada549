"""Benchmark of the mixture recipes on one core: mixtures/s per engine (A.1) and of the lab recipe, each with its
speed-up over its numpy reference.

    .venv/bin/python pipelines/bench_mixtures.py [--bank URL] [--n 4000] [--reference-n 20]

Without --bank a synthetic library of realistic size is used (1,000 phases with 50-400 sticks in 5-120°,
heavy-tailed intensities). The numpy reference (tests/xrdsynth/reference_recipe.py) renders the same kind of
mixtures in the same run; the lab recipe (`recipe_preset("lab")`, every effect on) renders the same library with
1-8 random reflections per stick against tests/xrdsynth/reference_lab.py. Numba runs on one thread; compilation
is excluded by a warm-up batch.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import sys
import time
from dataclasses import replace
from pathlib import Path

import numba
import numpy as np

from xrdsynth.config import GridConfig, LabConfig, RecipeConfig, recipe_preset
from xrdsynth.recipe import generate_batch, render_clean_mixtures, sample_mixture_parameters

REPO = Path(__file__).resolve().parents[1]
REFERENCES = REPO / "tests" / "xrdsynth"
#: One cost of the lab recipe removed at a time, to say where its time goes.
LAB_WITHOUT = {
    "kalpha1_only": {"lab": {"monochromatic_probability": 1.0}},
    "no_texture": {"lab": {"march_dollase_probability": 0.0}},
    "no_strain": {"lab": {"lattice_strain_probability": 0.0}},
    "no_intensity_variation": {"lab": {"intensity_variation_probability": 0.0}},
    "a1_widths": {
        "crystallite_size_log10_nm": (2.0, 2.4),
        "instrument_du_deg2": (0.0, 0.004),
        "instrument_dw_deg2": (0.0018, 0.002),
    },
    "cut_8x_coarser": {"tail_tolerance_sigma": 0.1},
}
#: Settings the lab preset leaves off, one at a time, to say what turning them on costs.
LAB_WITH = {
    "axial_divergence": {"lab": {"axial_divergence_deg": (0.0, 0.1)}},
    "defocus_15pct": {"lab": {"defocus_probability": 0.15}},
}


def _reference_module(name: str):
    path = REFERENCES / f"{name}.py"
    if not path.exists():
        raise SystemExit(f"bench_mixtures: the numpy reference {path} is missing; run from a full checkout")
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # reference_lab imports reference_recipe by name
    spec.loader.exec_module(module)
    return module


def _rate(run, n: int, repeats: int = 3) -> tuple[float, float]:
    """Best-of-`repeats` items per second of run() producing `n` items: (by wall clock, by process CPU time).

    On a shared machine the CPU-time rate is the better estimate of what one idle core does.
    """
    wall, cpu = float("inf"), float("inf")
    for _ in range(repeats):
        start, start_cpu = time.perf_counter(), time.process_time()
        run()
        wall = min(wall, time.perf_counter() - start)
        cpu = min(cpu, time.process_time() - start_cpu)
    return n / wall, n / cpu


def main(argv: list[str] | None = None) -> dict[str, float]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bank", help="bank URL to draw from instead of the synthetic library")
    parser.add_argument("--materials", type=int, default=1000, help="synthetic library size")
    parser.add_argument("--n", type=int, default=4000, help="mixtures per timed batch of the fast engines")
    parser.add_argument(
        "--reference-n", type=int, default=20, help="mixtures rendered by the numpy reference"
    )
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)

    numba.set_num_threads(1)
    reference = _reference_module("reference_recipe")
    reference_lab = _reference_module("reference_lab")
    rng = np.random.default_rng(args.seed)
    if args.bank:
        from xrdsynth.bank import Bank

        bank = Bank.open(args.bank)
        grid, library = bank.grid, bank.library()
    else:
        grid = GridConfig()
        library = reference.synthetic_library(rng, args.materials, grid)
    pool = np.arange(library.n_materials)
    peaks = np.diff(library.peak_offsets)
    print(
        f"library: {library.n_materials} phases, {peaks.mean():.0f} sticks/phase on average; numba threads: 1"
    )

    results: dict[str, float] = {}
    for engine in ("exact", "lut"):
        config = RecipeConfig(engine=engine)
        generate_batch(rng, library, pool, 8, config, grid)  # compile
        wall, cpu = _rate(lambda c=config: generate_batch(rng, library, pool, args.n, c, grid), args.n)
        results[f"{engine}_mixtures_per_s_wall"], results[f"{engine}_mixtures_per_s_cpu"] = wall, cpu

    config = RecipeConfig()
    parameters = sample_mixture_parameters(rng, pool, args.reference_n, config, grid)
    wall, cpu = _rate(
        lambda: reference.render_reference(parameters, library, config, grid), args.reference_n, 1
    )
    results["numpy_reference_mixtures_per_s_wall"], results["numpy_reference_mixtures_per_s_cpu"] = wall, cpu
    # The lab recipe: per-stick reflections for texture (the bank's, or random ones on the synthetic library).
    lab_library = (
        library
        if library.reflection_offsets is not None
        else reference_lab.lab_library(
            np.random.default_rng(args.seed), args.materials, grid, peaks=(50, 400)
        )
    )
    lab_pool = np.arange(lab_library.n_materials)
    config = recipe_preset("lab")
    generate_batch(rng, lab_library, lab_pool, 8, config, grid)  # compile
    wall, cpu = _rate(lambda: generate_batch(rng, lab_library, lab_pool, args.n, config, grid), args.n)
    results["lab_mixtures_per_s_wall"], results["lab_mixtures_per_s_cpu"] = wall, cpu
    parameters = sample_mixture_parameters(rng, lab_pool, args.reference_n, config, grid, lab_library)
    wall, cpu = _rate(
        lambda: reference_lab.render_lab_reference(parameters, lab_library, config, grid), args.reference_n, 1
    )
    results["lab_numpy_reference_mixtures_per_s_wall"] = wall
    results["lab_numpy_reference_mixtures_per_s_cpu"] = cpu
    # Where the lab recipe's time goes: the draws and the clean render timed alone, and the whole recipe with
    # one cost removed at a time (rates relative to the full lab recipe, CPU time).
    draws, _ = _rate(
        lambda: sample_mixture_parameters(rng, lab_pool, args.n, config, grid, lab_library), args.n
    )
    fixed = sample_mixture_parameters(rng, lab_pool, args.n, config, grid, lab_library)
    clean, _ = _rate(lambda: render_clean_mixtures(fixed, lab_library, config, grid), args.n)
    results["lab_draws_us_per_mixture"] = 1e6 / draws
    results["lab_clean_render_us_per_mixture"] = 1e6 / clean
    results["lab_finish_us_per_mixture"] = 1e6 / results["lab_mixtures_per_s_cpu"] - 1e6 / draws - 1e6 / clean
    # A defocused pattern against itself unboxed: the same draws with a box of the default range on every pattern.
    box = rng.uniform(*LabConfig().defocus_box_deg, args.n)
    defocused = replace(fixed, params={**fixed.params, "defocus_box_deg": box})
    boxed_clean, _ = _rate(lambda: render_clean_mixtures(defocused, lab_library, config, grid), args.n)
    results["lab_defocused_clean_render_cost_vs_unboxed"] = clean / boxed_clean
    variants = {f"lab_{name}": overrides for name, overrides in LAB_WITHOUT.items()}
    variants.update({f"lab_with_{name}": overrides for name, overrides in LAB_WITH.items()})
    for name, overrides in variants.items():
        variant = recipe_preset("lab", **overrides)
        generate_batch(rng, lab_library, lab_pool, 8, variant, grid)
        _, cpu = _rate(lambda v=variant: generate_batch(rng, lab_library, lab_pool, args.n, v, grid), args.n)
        results[f"{name}_vs_lab_cpu"] = cpu / results["lab_mixtures_per_s_cpu"]
    for clock in ("wall", "cpu"):
        results[f"lab_speedup_vs_numpy_{clock}"] = (
            results[f"lab_mixtures_per_s_{clock}"] / results[f"lab_numpy_reference_mixtures_per_s_{clock}"]
        )
        results[f"lab_vs_exact_{clock}"] = (
            results[f"lab_mixtures_per_s_{clock}"] / results[f"exact_mixtures_per_s_{clock}"]
        )
    for engine in ("exact", "lut"):
        for clock in ("wall", "cpu"):
            results[f"{engine}_speedup_vs_numpy_{clock}"] = (
                results[f"{engine}_mixtures_per_s_{clock}"]
                / results[f"numpy_reference_mixtures_per_s_{clock}"]
            )
    print(json.dumps({k: round(v, 2) for k, v in results.items()}, indent=2))
    return results


if __name__ == "__main__":
    main()
