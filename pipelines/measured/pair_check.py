"""Can a model see every phase of a given mixture? Synthetic mixtures of named structures, scored phase by phase.

Usage: .venv/bin/python pipelines/measured/pair_check.py CHECKPOINT [CHECKPOINT ...]
           [--cif A.cif --cif B.cif | --mixture A.cif,B.cif [--mixture C.cif,D.cif ...]] [--n 512]
           [--defocus 0 1] [--dirichlet-alpha 1] [--seed 0] [--work runs/pair_check]

Builds a bank of the given structures only (`xrdsynth bank build`, every entry in the training split), draws `--n`
`lab` mixtures holding all of them (K* = the number of CIFs, Cu anode, phase weights from a Dirichlet of
`--dirichlet-alpha`, everything else the `lab` preset's) once per
`--defocus` value (the share of patterns with the defocusing box, docs/physics.md "Defocusing"), and prints for each
checkpoint and store how often each space group is ranked first and within the top 3, and how often all of them
are in the top 3, both by the model's scores alone and as `xrdmodels predict` ranks them for users (label-prior
hedge, w = 2). The default structures are the NIST duplex steel's two phases (BGMN's austenite and ferrite, from
../shared/data/structures), which is how docs/benchmarks.md ("Related phases in a mixture") found that the model
misses the ferrite on its own training materials, not only on the measured scans. Each mixture gets its own
bank and stores (a folder of `--work` named after its structures); with several `--mixture`s the last lines give
the mean of "all in top 3" over them: the screens of docs/benchmarks.md ("The second phase: three screens").

The mixtures use the checkpoint's training recipe only as far as the `lab` preset does: what it measures is
whether the phases can be told apart where they overlap, not the measured scans' texture.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import torch

from xrdmodels.config import DEFAULT_PRIOR_WEIGHT
from xrdmodels.evaluate import load_model, predict_store
from xrdmodels.metrics import rank_classes
from xrdmodels.predict import label_prior, prior_hedge

ROOT = Path(__file__).resolve().parents[2]
STRUCTURES = ROOT.parent / "shared" / "data" / "structures" / "bgmn"
DEFAULT_CIFS = [
    STRUCTURES / "BGMN__Iron_gamma_Austenite.cif",
    STRUCTURES / "MetalsAlloysOxides__Fe-alphaFerrite.cif",
]


def _run(args: list[str]) -> None:
    """Run one xrdsynth command; its error (on stderr) stays on the terminal, and a failure stops the script with
    the command named, not a traceback."""
    try:
        subprocess.run(args, check=True, stdout=subprocess.DEVNULL)
    except subprocess.CalledProcessError as exc:
        sys.exit(
            f"pair_check: {' '.join(args[:3])} ... failed (exit {exc.returncode}); see its message above"
        )


def build_stores(
    cifs: list[Path], n: int, defocus: list[float], seed: int, work: Path, dirichlet_alpha: float = 1.0
) -> dict[float, Path]:
    """The bank of `cifs` and one store of `n` all-phase mixtures per defocus share; store folder per share."""
    bin_dir = Path(sys.executable).parent
    bank = work / "bank.zarr"
    sources = [a for cif in cifs for a in ("--source", str(cif))]
    _run([str(bin_dir / "xrdsynth"), "bank", "build", *sources, "--out", str(bank), "--split-fractions", "1,0,0",
          "--no-group-polymorphs"])  # fmt: skip
    k = len(cifs)
    stores = {}
    for share in defocus:
        config = {
            "seed": seed,
            "recipe": {
                "phase_count_probabilities": [1.0 if i == k - 1 else 0.0 for i in range(5)],
                "dirichlet_alpha": dirichlet_alpha,
                "lab": {"anode_probabilities": {"Cu": 1.0}, "defocus_probability": share},
            },
        }
        out = work / f"mixtures_defocus{share:g}"
        config_file = work / f"mixtures_defocus{share:g}.json"
        config_file.write_text(json.dumps(config))
        _run([str(bin_dir / "xrdsynth"), "mixtures", "generate", "--bank", str(bank), "--out", str(out), "--n",
              str(n), "--splits", "train", "--recipe", "lab", "--config", str(config_file), "--workers", "0",
              "--shard-size", str(n), "--overwrite"])  # fmt: skip
        stores[share] = out / "train.zarr"
    return stores


def group_ranks(
    model: torch.nn.Module, state: dict[str, Any], store: Path
) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """The space groups every mixture of `store` holds (0-based) and, for each ranking (the model's scores alone,
    and hedged by the label prior `state` records), their ranks (mixtures, groups), 1 = first."""
    predictions = predict_store(model, str(store))
    scores, targets = predictions.scores, predictions.targets
    groups = np.flatnonzero(targets.any(axis=0))
    if not targets[:, groups].all():
        raise ValueError(f"{store}: not every mixture holds all of the bank's groups {list(groups + 1)}")
    prior = label_prior(state)
    rankings = {"scores": scores}
    if prior is not None:
        rankings[f"hedged w={DEFAULT_PRIOR_WEIGHT:g}"] = scores + DEFAULT_PRIOR_WEIGHT * np.stack(
            [prior_hedge(row, prior) for row in scores]
        )
    return groups, {
        name: np.argsort(rank_classes(key), axis=1)[:, groups] + 1 for name, key in rankings.items()
    }


def rank_table(model: torch.nn.Module, state: dict[str, Any], store: Path) -> list[str]:
    """One line per ranking (scores alone, hedged by the label prior `state` records): each present group's
    first / top-3 share, and how often all of them are in the top 3."""
    return format_ranks(*group_ranks(model, state, store))


def format_ranks(groups: np.ndarray, ranks: dict[str, np.ndarray]) -> list[str]:
    """`rank_table`'s lines from `group_ranks`' answer."""
    lines = []
    for name, rank in ranks.items():
        per_group = ", ".join(
            f"{g + 1}: first {np.mean(r == 1):.2f}, top 3 {np.mean(r <= 3):.2f}"
            for g, r in zip(groups, rank.T, strict=True)
        )
        lines.append(f"{name}: {per_group}; all in top 3 {np.mean((rank <= 3).all(axis=1)):.2f}")
    return lines


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("checkpoints", nargs="+", help="model checkpoints (last.pt) to score")
    parser.add_argument("--cif", action="append", type=Path, help="a structure of the mixture (repeat; default: "
                        "the NIST duplex steel's austenite and ferrite)")  # fmt: skip
    parser.add_argument("--mixture", action="append", help="instead of --cif: one mixture's structures, comma-"
                        "separated; repeat for several mixtures, each in its own store, and the last lines give "
                        "the mean of 'all in top 3' over them")  # fmt: skip
    parser.add_argument("--n", type=int, default=512, help="mixtures per store (512)")
    parser.add_argument("--defocus", type=float, nargs="+", default=[0.0, 1.0],
                        help="shares of defocused patterns, one store each (0 1)")  # fmt: skip
    parser.add_argument("--dirichlet-alpha", type=float, default=1.0, help="concentration of the phase weights (1, "
                        "the training draw: a phase is often a minor one; 100: nearly equal shares)")  # fmt: skip
    parser.add_argument("--seed", type=int, default=0, help="mixture seed (0)")
    parser.add_argument("--work", type=Path, default=ROOT / "runs" / "pair_check", help="scratch folder")
    args = parser.parse_args(argv)
    if args.cif and args.mixture:
        parser.error("give the structures either with --cif or with --mixture, not both")
    mixtures = (
        [[Path(p) for p in m.split(",")] for m in args.mixture]
        if args.mixture
        else [args.cif or DEFAULT_CIFS]
    )
    missing = [str(c) for cifs in mixtures for c in cifs if not c.exists()]
    if missing:
        parser.error(
            f"structure files not found: {', '.join(missing)} (the defaults need ../shared/data/structures)"
        )
    for cifs in mixtures:
        if not 1 <= len(cifs) <= 5:
            parser.error(f"{len(cifs)} structures given for one mixture; a mixture holds 1 to 5")
    torch.set_num_threads(2)
    stores = []
    for cifs in mixtures:
        # A folder per set of structures, so that another call with other structures builds its own bank.
        work = args.work / "-".join(c.stem for c in cifs)
        work.mkdir(parents=True, exist_ok=True)
        stores.append(build_stores(cifs, args.n, args.defocus, args.seed, work, args.dirichlet_alpha))
    for checkpoint in args.checkpoints:
        model, state = load_model(checkpoint)
        all_in_top3: dict[tuple[float, str], list[float]] = {}
        for by_share in stores:
            for share, store in by_share.items():
                groups, ranks = group_ranks(model, state, store)
                for line in format_ranks(groups, ranks):
                    print(f"{checkpoint} | defocused {share:g} | {line}")
                for name, rank in ranks.items():
                    all_in_top3.setdefault((share, name), []).append(float(np.mean((rank <= 3).all(axis=1))))
        if len(mixtures) > 1:
            for (share, name), values in all_in_top3.items():
                print(
                    f"{checkpoint} | defocused {share:g} | {name}: mean all in top 3 over {len(values)} mixtures "
                    f"{np.mean(values):.3f}"
                )


if __name__ == "__main__":
    main()
