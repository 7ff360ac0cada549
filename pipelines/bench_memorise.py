"""Memorisation ablation: which read-out lets a CPU-size model learn a fixed set of real patterns.

256 patterns written by xrdsynth from random crystals of 40 space groups (single-phase, or A.1 mixtures with
K* = 1..5), on a 1,024-bin grid; each variant trains on exactly those with the library's loss and AdamW 1e-3
(batch 64, dropout 0, one torch thread), and is scored on them in eval mode with the library's read-out: top-1
for single-phase sets, micro-F1 (best threshold or gate, A.7) for mixtures. A model that cannot carry which
peaks sit where stays at the label prior (top-1 of the most common class, micro-F1 ~0.1).
tests/test_learnability.py runs `memorise` for the three families of the `cpu` preset as the guard.

Usage: .venv/bin/python pipelines/bench_memorise.py [--steps 100 300] [--quick]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

N_BINS = 1024
N_PATTERNS = 256
BATCH = 64
#: (data, ModelConfig preset, overrides): the read-outs measured, the paper's first.
VARIANTS: dict[str, tuple[str, str, dict]] = {
    "presence, masked mean pooling (A.3)": ("single", "small", {"head": "presence"}),
    "presence, mean pooling + Fourier angle code": ("single", "small", {"head": "presence", "angle_encoding": "fourier"}),
    "presence, attention pooling + Fourier angle code": (
        "single", "small", {"head": "presence", "angle_encoding": "fourier", "presence_pooling": "attention"},
    ),
    "presence, flatten read-out (cpu preset)": ("single", "cpu", {"head": "presence"}),
    "phase clustering, learned slots (A.4)": ("a1", "small", {"head": "phase_cluster"}),
    "phase clustering, flatten slot init (cpu preset)": ("a1", "cpu", {"head": "phase_cluster"}),
    "presence, flatten read-out, A.1 mixtures (cpu preset)": ("a1", "cpu", {"head": "presence"}),
}  # fmt: skip


def memorisation_set(work: Path, single_phase: bool) -> dict[str, torch.Tensor]:
    """256 patterns from a bank of random crystals of space groups 1-40, as training batches."""
    from xrdmodels.data import MixtureStore, to_batch
    from xrdsynth.bank_build import build_bank
    from xrdsynth.config import BankConfig, GenerateConfig, GridConfig, RecipeConfig
    from xrdsynth.generate import generate_all

    bank = work / "bank.zarr"
    if not bank.exists():
        build_bank(
            ["random:1:1-40"], str(bank),
            BankConfig(split_fractions=(0.9, 0.05, 0.05), chunk_size=16, grid=GridConfig(n_bins=N_BINS)),
            seed=0, workers=0,
        )  # fmt: skip
    recipe = (
        RecipeConfig(phase_count_probabilities=(1.0, 0.0, 0.0, 0.0, 0.0)) if single_phase else RecipeConfig()
    )
    out = work / ("single" if single_phase else "a1")
    config = GenerateConfig(shard_size=N_PATTERNS, n_eval=64, recipe=recipe)
    generate_all(str(bank), str(out), N_PATTERNS, config, splits=("train",), workers=0, resume=True)
    store = MixtureStore(str(out / "train.zarr"))
    return to_batch(store.read_rows(0, store.n_samples), N_BINS)


def memorise(
    patterns: dict[str, torch.Tensor], preset_name: str, overrides: dict, steps: list[int], seed: int = 0
) -> dict[int, dict[str, float]]:
    """Train a fresh model on `patterns` and score it on them after each of `steps`: {step: {micro_f1, top1}}
    (top1 over the single-phase patterns, NaN when there are none)."""
    from xrdmodels.config import preset
    from xrdmodels.evaluate import set_scores
    from xrdmodels.loss import model_loss
    from xrdmodels.metrics import evaluate_presence, evaluate_slot_union
    from xrdmodels.models.model import SpaceGroupModel

    torch.manual_seed(seed)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny batches gain nothing from threads; spin-waiting ones hurt a busy machine
    results = {}
    try:
        model = SpaceGroupModel(preset(preset_name, n_bins=N_BINS, dropout=0.0, cnn_dropout=0.0, **overrides))
        optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=1e-2)
        generator = torch.Generator().manual_seed(seed)
        n = len(patterns["pattern"])
        targets = patterns["targets"].numpy() > 0.5
        single = patterns["n_phases"].numpy() == 1
        for step in range(1, max(steps) + 1):
            model.train()
            idx = torch.randint(0, n, (BATCH,), generator=generator)
            loss = model_loss(model(patterns["pattern"][idx], patterns["mask"][idx]), patterns["labels"][idx])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            optimizer.step()
            if step not in steps:
                continue
            model.eval()
            with torch.no_grad():
                out = model(patterns["pattern"], patterns["mask"])
            if out.slot_logits is not None:
                result = evaluate_slot_union(torch.softmax(out.slot_logits.float(), -1).numpy(), targets)
            else:
                result = evaluate_presence(out.set_probs.numpy(), targets)
            scores = set_scores(out)
            top1 = (
                targets[single][np.arange(single.sum()), scores[single].argmax(1)].mean()
                if single.any()
                else np.nan
            )
            results[step] = {"micro_f1": float(result.sweep.best.f1), "top1": float(top1)}
    finally:
        torch.set_num_threads(threads)
    return results


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--steps", type=int, nargs="+", default=[100, 300], help="score after these steps")
    parser.add_argument(
        "--variants", nargs="+", default=list(VARIANTS), choices=list(VARIANTS), metavar="NAME"
    )
    parser.add_argument("--quick", action="store_true", help="smoke run: 20 steps, two variants")
    args = parser.parse_args(argv)
    if args.quick:
        args.steps, args.variants = [20], [args.variants[0], args.variants[3]]
    with tempfile.TemporaryDirectory(prefix="bench_memorise_") as tmp:
        data = {}
        print(f"| variant | data | {' | '.join(f'after {s} steps' for s in args.steps)} | seconds |")
        print("|---|---|" + "---|" * len(args.steps) + "---|")
        for name in args.variants:
            kind, preset_name, overrides = VARIANTS[name]
            if kind not in data:
                data[kind] = memorisation_set(Path(tmp), single_phase=kind == "single")
            t0 = time.perf_counter()
            results = memorise(data[kind], preset_name, overrides, args.steps)
            metric = "top1" if kind == "single" else "micro_f1"
            cells = " | ".join(f"{metric} {results[s][metric]:.3f}" for s in args.steps)
            label = "256 single-phase" if kind == "single" else "256 A.1 mixtures"
            print(f"| {name} | {label} | {cells} | {time.perf_counter() - t0:.0f} |", flush=True)


if __name__ == "__main__":
    main()
