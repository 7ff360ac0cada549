"""A model for measured patterns, trained on real structures with laboratory physics, scored on every shared
measured set beside a library search of the same bank (issue 12):

  1. bank      the 1,219 curated structures of ../shared/data/structures (bgmn, iucr, xrd_autoanalyzer,
               robocrys, aflow) + pymatgen's AFLOW prototypes + 20 random ionic crystals per space group
               (pyxtal; `--random-style`, `--random-per-group`)
  2. mixtures  train / val / test / in-library stores of the `lab` recipe (docs/physics.md, "The lab recipe"),
               the random crystals drawn with weight 0.1 against a read structure's 1 (`synthetic_weight`)
  3. train     the best CPU configuration of the learning benchmark (docs/benchmarks.md, "Learning"): the `cpu`
               preset with the token-CNN encoder and the presence head, removing each pattern's SNIP
               background at its input and reading square-root intensities, for a wall-clock budget (a
               300-step probe first measures this machine's speed, so that the cosine schedule ends where the
               budget does); with `--ensemble K`, K such models from seeds SEED..SEED+K-1 train side by side,
               each on its share of the cores, and `xrdmodels ensemble` makes them one model; every
               checkpoint keeps the bank's training phases as the model sees them, for its ranking
               (`phase_memory`, xrdmodels.neighbours)
  4. evaluate  Table 1 on in-library and out-of-library synthetic test mixtures (A.7-A.8)
  5. score     `xrdmodels score-measured` on every file of ../shared/data/experimental/all_labels.csv, the
               model (with its memory, and the network alone) and the library search of the bank side by side,
               and the two combined in one ranking with the bank's phases as the model sees them (measured.md)
  6. pairs     the same scores on `--pairs` two-phase patterns, each two RRUFF minerals summed
               (pipelines/measured/rruff_pairs.py, seed 0; measured_pairs_N/measured.md): the second phase of a
               real pattern, read on hundreds of files where ../shared has 14 multi-phase ones

`--recipe paper` trains on the A.1 recipe instead, `--without EFFECT` removes one lab effect and
`--background-removal none` the model's SNIP background removal, with everything else equal: the ablation of
issue 12 (pipelines/measured/ablation.py runs them and writes one table).
Every stage is the real command a user would type; a rerun reuses what finished (see pipelines/stages.py).

Usage: .venv/bin/python pipelines/measured/run.py [--out runs/measured] [--train-minutes 45] [--recipe lab]
       [--ensemble K]
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import shutil
import statistics
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
sys.path.insert(0, str(HERE.parent))
from stages import Stages, resume_or_restart  # noqa: E402

BIN = Path(sys.executable).parent
SHARED = REPO.parent / "shared" / "data"
STRUCTURE_SOURCES = ("bgmn", "iucr", "xrd_autoanalyzer", "robocrys", "aflow")
# The signed square root of the input intensities: +0.020 / +0.021 RRUFF hit@1 over two seeds at 4,000 steps, paired
# +44 -26 (docs/benchmarks.md, "Square-root intensities at the model's input").
MODEL = {
    "model_preset": "cpu",
    "model_overrides": {"encoder": "cnn", "head": "presence", "intensity_scale": "sqrt"},
}
#: The model's own background removal (docs/physics.md, "Background removal at the model's input"): raw scans,
#: background-subtracted exports and training patterns reach the network with the same baseline.
BACKGROUND_REMOVAL = "snip"
#: Models trained side by side and read as one (`--ensemble`, xrdmodels.ensemble). 1: on this 2-core machine two
#: one-thread members averaged gain ~0.01 of RRUFF hit@1 over their members but not over one two-thread model in
#: the same 45 minutes, whether the members stop below the accuracy plateau (7,500 steps each: 0.517 / 0.700
#: against 0.526 / 0.702) or past it (25,286 steps each: 0.537 / 0.709 against 0.533 / 0.711; docs/benchmarks.md,
#: "Ensembles" and "A peak-list branch, two models side by side"), and with the hedged ranking and each member on
#: its own mixtures (two runs: 0.549 / 0.745 against one model's 0.545 / 0.745 over six seeds; "Ensembles of members
#: with their own mixtures").
ENSEMBLE = 1
# Random crystals in the bank: 20 `random-ionic` per space group (cations and an anion over several orbits), each
# drawn with weight 0.1 against 1 for a read structure, so they keep the share of the draws that `random:2` had.
# Against `random:2` over four seed pairs of the full pipeline: RRUFF hit@1 +0.023 (95% over groups +0.006 to
# +0.041), hit@5 +0.011 (docs/benchmarks.md, "The fourth seed pair: the ionic bank is adopted"). The bank build
# takes ~10 minutes instead of ~2.
RANDOM_STYLE = "random-ionic"
RANDOM_PER_GROUP = 20
SYNTHETIC_WEIGHT = 0.1
#: Whether every checkpoint keeps a memory of the bank's training phases (TrainConfig.phase_memory, as
#: `xrdmodels add-memory` writes it), which `predict` and `score-measured` then rank with. On: over seven models of
#: this pipeline, with its cell scan, RRUFF hit@1 +0.065 and hit@5 +0.019 over the network alone (docs/benchmarks.md,
#: "A memory of the training phases"); score-measured reports the network alone beside it.
MEMORY = True
#: Two-phase patterns made of two RRUFF minerals each (pipelines/measured/rruff_pairs.py), scored after the shared
#: sets: 300 keep a both-phases-in-the-top-3 rate of ~0.2 within about ±0.05 (95%; wider, as pairs share minerals),
#: where the NIST steel's 5 scans cannot tell 1 of 5 from 2 (docs/benchmarks.md, "Two measured phases: RRUFF pairs").
PAIRS = 300
# Substituted relatives per curated structure in the bank. 0: with 2 the model placed more of the minerals its
# library lacks but lost top-1 on RRUFF at every budget measured (docs/benchmarks.md, "Isotypes in the bank").
ISOTYPES = 0
# The demo's protocol (pipelines/demo/train_cpu.json) for a longer run. The cosine schedule spans what the budget
# reaches on this machine, so the learning rate has decayed when the budget ends: a short probe run measures the
# steps per minute first (the same VM ran the `cpu` preset at 344 to 720 steps/min on different days).
TRAIN = {
    "batch_size": 32,
    "lr": 1e-3,
    "warmup_steps": 200,
    "val_every": 500,
    "val_max_batches": 16,
    "checkpoint_every": 500,
    # Each checkpoint carries the memory (20.5 MB): a 45-minute run would leave ~40 step files, ~0.9 GB.
    "keep_step_checkpoints": 4,
    "log_every": 50,
    "num_workers": 0,
    "phase_memory": MEMORY,
}
#: Steps of the speed probe; its first SPEED_PROBE_SKIP steps (start-up, allocator warm-up) are not timed.
SPEED_PROBE_STEPS, SPEED_PROBE_SKIP = 300, 100
#: Share of the probed speed the schedule plans for, so the decay ends inside the budget: validation, checkpoints
#: and load make a whole run slower than the probe (2026-12-03: probe 781 steps/min, the 45-minute run 737, 0.94x).
SPEED_MARGIN = 0.92
#: `--without EFFECT`: the lab recipe with one effect turned off (the ablation of issue 12, item 5).
LAB_EFFECTS: dict[str, dict] = {
    "kalpha2": {"lab": {"monochromatic_probability": 1.0}},
    "kbeta": {"lab": {"kbeta_probability": 0.0}},
    "anodes": {"lab": {"anode_probabilities": {"Cu": 1.0}}},
    "texture": {"lab": {"march_dollase_probability": 0.0}},
    "strain": {"lab": {"lattice_strain_probability": 0.0}},
    "intensity": {"lab": {"intensity_variation_probability": 0.0}},
    "thermal": {"lab": {"debye_waller_b_a2": (0.0, 0.0), "debye_waller_extra_b_a2": (0.0, 0.0)}},
    "displacement": {"lab": {"sample_displacement_deg": [0.0, 0.0]}},
    "background": {"lab": {"background_level": [1e-9, 1e-9]}},
    "humps": {"lab": {"amorphous_hump_probability": 0.0}},
    "air": {"lab": {"air_scatter_probability": 0.0}},
    "poisson": {"lab": {"counts_at_max": [1e12, 1e12]}},
    "subtraction": {"lab": {"background_subtracted_probability": 0.0}},
}


def recipe_overrides(effects: list[str], fields: dict | None = None) -> dict:
    """The pipeline's recipe fields (`synthetic_weight` SYNTHETIC_WEIGHT), the fields that turn `effects` off,
    merged (each is a `lab` object), then `fields` on top (their `lab` object merged field by field)."""
    fields = {"synthetic_weight": SYNTHETIC_WEIGHT, **(fields or {})}
    lab: dict = {}
    for effect in effects:
        lab.update(LAB_EFFECTS[effect]["lab"])
    lab.update(fields.pop("lab", {}))
    return {**fields, "lab": lab} if lab else fields


def steps_per_minute(stages: Stages, out: Path, configs: list[dict], xrdmodels: str) -> float:
    """Training steps per minute of each of `configs` when they train side by side on this machine (the
    members of an ensemble share its cores), from short probe runs of all of them at once: the slowest
    member's median. Saved in out/configs/train_speed.json and reused on a rerun, so a resumed training keeps
    its schedule."""
    saved = out / "configs" / "train_speed.json"
    if saved.exists():
        measured = json.loads(saved.read_text())
        if len(measured.get("members", [None])) == len(configs):
            return float(measured["steps_per_minute"])
    probe_dirs, argvs = [], []
    for k, config in enumerate(configs):
        probe_dir = out / "models" / f"speed_probe_{k}"
        shutil.rmtree(probe_dir, ignore_errors=True)
        probe = {
            **config,
            "total_steps": SPEED_PROBE_STEPS,
            "max_minutes": None,
            "val_store": None,
            "checkpoint_every": SPEED_PROBE_STEPS,
            "out_dir": str(probe_dir),
        }
        probe_path = out / "configs" / f"speed_probe_{k}.json"
        probe_path.write_text(json.dumps(probe, indent=2))
        probe_dirs.append(probe_dir)
        argvs.append([xrdmodels, "train", "--config", str(probe_path)])
    stages.run_together(
        f"calibrate: training speed of this machine ({SPEED_PROBE_STEPS} steps, {len(configs)} side by side)",
        argvs,
        logs=[None] + [out / "logs" / f"speed_probe_{k}.log" for k in range(1, len(configs))],
        always=True,
    )
    speeds = []
    for config, probe_dir in zip(configs, probe_dirs, strict=True):
        with (probe_dir / "metrics.csv").open(newline="") as f:
            rates = [
                float(row["value"])
                for row in csv.DictReader(f)
                if row["name"] == "samples_per_s" and int(row["step"]) > SPEED_PROBE_SKIP
            ]
        speeds.append(60.0 * statistics.median(rates) / config["batch_size"])
        shutil.rmtree(probe_dir)
    speed = min(speeds)
    saved.write_text(
        json.dumps({"steps_per_minute": speed, "probe_steps": SPEED_PROBE_STEPS, "members": speeds}, indent=2)
    )
    return speed


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--out", default=None, help="output folder (default runs/measured-<recipe>)")
    parser.add_argument(
        "--recipe", choices=("lab", "paper"), default="lab", help="mixture recipe (default lab)"
    )
    parser.add_argument(
        "--random-per-group",
        type=int,
        default=RANDOM_PER_GROUP,
        help=f"random crystals per space group in the bank (default {RANDOM_PER_GROUP})",
    )
    parser.add_argument(
        "--random-style",
        choices=("random", "random-ionic"),
        default=RANDOM_STYLE,
        help=f"the bank's random-crystal source (default {RANDOM_STYLE}: cations and an anion over several orbits; "
        'random: 1-3 species on one orbit each; docs/physics.md, "Random crystals")',
    )
    parser.add_argument(
        "--isotypes",
        type=int,
        default=ISOTYPES,
        help=f"substituted relatives per curated structure in the bank (default {ISOTYPES}; docs/physics.md, "
        '"Isotypes")',
    )
    parser.add_argument(
        "--n-train",
        default="600k",
        help="training mixtures (default 600k: about what 45 minutes of training read)",
    )
    parser.add_argument("--train-minutes", type=float, default=45.0, help="training budget in minutes (45)")
    parser.add_argument(
        "--train-steps", type=int, default=None, help="train this many steps instead of a wall-clock budget"
    )
    parser.add_argument(
        "--background-removal",
        choices=("snip", "none"),
        default=BACKGROUND_REMOVAL,
        help=f"the model's input background removal (default {BACKGROUND_REMOVAL}; none: the network sees the "
        "pattern as delivered)",
    )
    parser.add_argument(
        "--seed",
        type=int,
        default=0,
        help="seed of the mixtures and of the training (default 0; another seed repeats a run to measure its spread)",
    )
    parser.add_argument(
        "--ensemble",
        type=int,
        default=ENSEMBLE,
        metavar="K",
        help=f"K models trained side by side from seeds SEED, SEED+1, ..., each on its share of the cores, and "
        f"read as one, their probabilities averaged (default {ENSEMBLE}; 1 = one model on every core; "
        'docs/benchmarks.md, "Ensembles")',
    )
    parser.add_argument("--workers", type=int, default=2, help="Dask worker processes (default 2)")
    parser.add_argument(
        "--pairs",
        type=int,
        default=PAIRS,
        help=f"two-phase RRUFF pairs to score the model on after the shared sets (default {PAIRS}; 0: none)",
    )
    parser.add_argument(
        "--bank", default=None, help="use this bank instead of building one (shared by ablations)"
    )
    parser.add_argument(
        "--without",
        action="append",
        default=[],
        choices=sorted(LAB_EFFECTS),
        help="turn one lab effect off (repeatable; the ablation): " + ", ".join(sorted(LAB_EFFECTS)),
    )
    parser.add_argument(
        "--recipe-fields",
        default=None,
        help='recipe fields to change, as a JSON object, a "lab" object merged field by field (e.g. '
        '\'{"microstrain": [0, 0.006], "lab": {"lattice_strain": [0, 0.03]}}\'; names and ranges in '
        f"docs/config.md; the pipeline sets synthetic_weight {SYNTHETIC_WEIGHT}: give '{{\"synthetic_weight\": 1}}' "
        "with a bank of random:2); name the output folder with --out",
    )
    args = parser.parse_args(argv)
    try:
        fields = json.loads(args.recipe_fields) if args.recipe_fields else {}
    except json.JSONDecodeError as error:
        parser.error(f"--recipe-fields must be a JSON object of recipe fields: {error}")
    if not isinstance(fields, dict) or not isinstance(fields.get("lab", {}), dict):
        parser.error(f"--recipe-fields must be a JSON object of recipe fields, got {args.recipe_fields!r}")
    if args.ensemble < 1:
        parser.error(f"--ensemble must be at least 1, got {args.ensemble}")
    if args.without and args.recipe != "lab":
        parser.error("--without removes effects of the lab recipe; use it with --recipe lab")
    bank_options = [
        option
        for option, value, default in (
            ("--random-per-group", args.random_per_group, RANDOM_PER_GROUP),
            ("--random-style", args.random_style, RANDOM_STYLE),
            ("--isotypes", args.isotypes, ISOTYPES),
        )
        if value != default
    ]
    if args.bank and bank_options:
        parser.error(
            f"{', '.join(bank_options)} shape the bank this pipeline builds; --bank reuses a built one"
        )
    if not (SHARED / "structures").exists() or not (SHARED / "experimental").exists():
        sys.exit(f"measured: this pipeline needs ../shared/data (structures and experimental) at {SHARED}")
    name = args.recipe + "".join(f"-no-{e}" for e in sorted(args.without))
    if args.background_removal != BACKGROUND_REMOVAL:
        name += f"-{args.background_removal}-background-removal"
    out = Path(args.out or f"runs/measured-{name}").resolve()
    t0 = time.perf_counter()
    stages = Stages(out, "measured")
    xrdsynth, xrdmodels = str(BIN / "xrdsynth"), str(BIN / "xrdmodels")
    bank, mixtures = Path(args.bank).resolve() if args.bank else out / "bank.zarr", out / "mixtures"

    if not args.bank:
        sources = [a for s in STRUCTURE_SOURCES for a in ("--source", str(SHARED / "structures" / s))]
        stages.run(
            "bank: shared curated structures + AFLOW prototypes + random crystals",
            [xrdsynth, "bank", "build", *sources, "--source", "builtin", "--source",
             f"{args.random_style}:{args.random_per_group}", "--isotypes", str(args.isotypes), "--split-fractions",
             "0.96,0.02,0.02", "--out", str(bank), "--workers", str(args.workers)],
            outputs=[bank],
            always=True,
        )  # fmt: skip
    recipe_config = out / "configs" / "mixtures.json"
    recipe_config.parent.mkdir(parents=True, exist_ok=True)
    recipe_config.write_text(
        json.dumps({"seed": args.seed, "recipe": recipe_overrides(args.without, fields)}, indent=2)
    )
    stages.run(
        f"mixtures: {name} recipe",
        [xrdsynth, "mixtures", "generate", "--bank", str(bank), "--out", str(mixtures), "--n", args.n_train,
         "--recipe", args.recipe, "--config", str(recipe_config), "--workers", str(args.workers), "--resume"],
        outputs=[mixtures],
        always=True,
    )  # fmt: skip
    # One model keeps the folder name of the runs before ensembles; members are cnn_presence_0, _1, ...
    names = ["cnn_presence"] if args.ensemble == 1 else [f"cnn_presence_{k}" for k in range(args.ensemble)]
    configs = [
        {
            **MODEL,
            "model_overrides": {**MODEL["model_overrides"], "background_removal": args.background_removal},
            **TRAIN,
            "seed": args.seed + k,
            "train_store": str(mixtures / "train.zarr"),
            "val_store": str(mixtures / "val.zarr"),
            "out_dir": str(out / "models" / member),
        }
        for k, member in enumerate(names)
    ]
    if args.ensemble > 1:
        # Each member trains on its share of the cores, all at once (docs/benchmarks.md, "Ensembles").
        threads = max(1, (os.cpu_count() or 1) // args.ensemble)
        configs = [{**config, "torch_threads": threads} for config in configs]
    if args.train_steps:
        budget = {"total_steps": args.train_steps, "max_minutes": None}
    else:
        planned = SPEED_MARGIN * args.train_minutes * steps_per_minute(stages, out, configs, xrdmodels)
        budget = {"total_steps": max(1000, int(planned)), "max_minutes": args.train_minutes}
    argvs, checkpoints = [], []
    for member, config in zip(names, configs, strict=True):
        config_path = out / "configs" / f"{member}.json"
        config_path.write_text(json.dumps({**config, **budget}, indent=2))
        checkpoints.append(Path(config["out_dir"]) / "last.pt")
        resume = resume_or_restart(config_path)
        argvs.append([xrdmodels, "train", "--config", str(config_path), *resume])
    what = "an ensemble of " + str(args.ensemble) if args.ensemble > 1 else "a"
    stages.run_together(
        f"train: {what} cpu-preset token CNN, presence head, {args.train_steps or args.train_minutes} "
        + ("steps" if args.train_steps else "min"),
        argvs,
        logs=[None] + [out / "logs" / f"{member}.log" for member in names[1:]],
        outputs=checkpoints,
    )
    checkpoint = str(checkpoints[0])
    if args.ensemble > 1:
        checkpoint = str(out / "models" / "ensemble.json")
        stages.run(
            f"ensemble: the {args.ensemble} members read as one model",
            [xrdmodels, "ensemble", checkpoint, *map(str, checkpoints)],
            outputs=[Path(checkpoint)],
        )
    stages.run(
        "evaluate: Table 1 on in-library and out-of-library test",
        [xrdmodels, "evaluate", checkpoint, "--mixtures", str(mixtures), "--name", f"token CNN presence ({name})",
         "--out", str(out / "evaluation")],
        outputs=[out / "evaluation" / "table.md"],
    )  # fmt: skip
    stages.run(
        "score: every labelled measured pattern, model and library search",
        [xrdmodels, "score-measured", checkpoint, "--labels", str(SHARED / "experimental" / "all_labels.csv"),
         "--out", str(out / "measured"), "--library", str(bank)],
        outputs=[out / "measured" / "measured.md"],
    )  # fmt: skip

    if args.pairs > 0:
        pairs = out / f"rruff_pairs_{args.pairs}"  # by number, so that another --pairs is scored afresh
        stages.run(
            f"pairs: {args.pairs} two-phase patterns, each two RRUFF minerals summed",
            [sys.executable, str(HERE / "rruff_pairs.py"), "--out", str(pairs), "--n", str(args.pairs),
             "--experimental", str(SHARED / "experimental")],
            outputs=[pairs / "labels.csv"],
        )  # fmt: skip
        stages.run(
            "score: the RRUFF pairs, model and library search",
            [xrdmodels, "score-measured", checkpoint, "--labels", str(pairs / "labels.csv"),
             "--out", str(out / f"measured_pairs_{args.pairs}"), "--library", str(bank)],
            outputs=[out / f"measured_pairs_{args.pairs}" / "measured.md"],
        )  # fmt: skip

    print("\n== summary")
    for line in stages.summary:
        print(f"  {line}")
    print(f"  total {time.perf_counter() - t0:.0f} s")
    print(f"\nscore table: {out / 'measured' / 'measured.md'}")
    if args.pairs > 0:
        print(f"two-phase RRUFF pairs: {out / f'measured_pairs_{args.pairs}' / 'measured.md'}")
    print(
        f"model: {checkpoint} (`xrdmodels predict {checkpoint} SCAN`"
        + (", with its memory)" if MEMORY else ")")
    )


if __name__ == "__main__":
    main()
