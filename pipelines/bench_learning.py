"""Learning benchmark: do the models learn, how fast, and against which baselines (issue: models that learn).

From the built-in bank (AFLOW prototypes in pymatgen + 1 random crystal per space group), writes two tasks'
stores: `single` (K* = 1 only) and `a1` (the A.1 recipe, K* = 1..5), each with train / in-library /
out-of-library test. Then, for each model variant, trains with the real training loop (`xrdmodels.train`) for a
wall-clock budget, evaluates the checkpoints written along the way with the real evaluation read-out
(`xrdmodels.evaluate`), and prints learning curves next to two baselines measured on the same stores in the
same run:

  prior  every sample gets the training label frequencies as scores (what a model that learned nothing does)
  1-NN   the training sample whose pattern is most similar (cosine of patterns smoothed by a 2-bin Gaussian,
         both masked by the query's window) gives its label set; ranking scores are the best similarity of any
         of the 64 nearest training samples carrying each class

Columns: minutes of training, optimizer steps, then per split micro-F1 (best threshold / gate, A.7), cover@K*,
recall@K*, cover@3K* (A.8) and, for the single-phase task, top-1 (the best-ranked class is the true one).

Usage: .venv/bin/python pipelines/bench_learning.py [--tasks single a1] [--variants ...] [--minutes 10]
       [--work-dir runs/bench_learning] [--quick]
   or: .venv/bin/python pipelines/bench_learning.py --checkpoint RUN/models/X/last.pt --stores RUN/mixtures
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent

#: The three model families of the paper under the CPU preset, and what they are compared with.
VARIANTS: dict[str, dict] = {
    "cpu-phase-cluster": {"model_preset": "cpu", "model_overrides": {"head": "phase_cluster"}},
    "cpu-transformer-presence": {"model_preset": "cpu", "model_overrides": {"head": "presence"}},
    "cpu-cnn-presence": {"model_preset": "cpu", "model_overrides": {"encoder": "cnn", "head": "presence"}},
    # The paper's structure at CPU size (mean pooling, learned slots): the ablation baseline.
    "small-phase-cluster": {"model_preset": "small", "model_overrides": {"head": "phase_cluster"}},
    "small-transformer-presence": {"model_preset": "small", "model_overrides": {"head": "presence"}},
}
DEFAULT_VARIANTS = ["cpu-phase-cluster", "cpu-transformer-presence", "cpu-cnn-presence"]
#: Training protocol of the benchmark: the demo's (docs/demo.md), with more frequent checkpoints.
TRAIN = {"batch_size": 32, "lr": 1e-3, "warmup_steps": 100, "total_steps": 20_000, "num_workers": 0}
TASKS = {
    "single": {"recipe": {"phase_count_probabilities": [1.0, 0.0, 0.0, 0.0, 0.0]}},
    "a1": {},
}
EVAL_SAMPLES = 1024


def run(argv: list[str]) -> None:
    print("$ " + " ".join(argv), flush=True)
    subprocess.run(argv, check=True, stdout=subprocess.DEVNULL)


def make_stores(work: Path, task: str, n_train: int, workers: int) -> Path:
    """Bank (shared by the tasks) and the task's train / in_library / test stores, reused when present."""
    bank = work / "bank.zarr"
    if not bank.exists():
        run([str(BIN / "xrdsynth"), "bank", "build", "--source", "builtin", "--source", "random:1",
             "--out", str(bank), "--workers", str(workers)])  # fmt: skip
    out = work / task
    config = work / f"{task}.json"
    config.write_text(json.dumps(TASKS[task]))
    run([str(BIN / "xrdsynth"), "mixtures", "generate", "--bank", str(bank), "--out", str(out),
         "--n", str(n_train), "--n-eval", str(EVAL_SAMPLES), "--splits", "train,in_library,test",
         "--config", str(config), "--workers", str(workers), "--resume"])  # fmt: skip
    return out


def load_store(url: Path, n: int | None = None) -> dict[str, torch.Tensor]:
    from xrdmodels.data import MixtureStore, to_batch

    store = MixtureStore(str(url))
    n = store.n_samples if n is None else min(n, store.n_samples)
    return to_batch(store.read_rows(0, n), store.grid.n_bins)


def smoothed_unit(pattern: torch.Tensor, mask: torch.Tensor, sigma_bins: float = 2.0) -> torch.Tensor:
    """Masked patterns smoothed by a Gaussian of `sigma_bins`, scaled to unit L2 norm: (N, B) -> (N, B)."""
    half = int(4 * sigma_bins)
    offsets = torch.arange(-half, half + 1, dtype=torch.float32)
    kernel = torch.exp(-0.5 * (offsets / sigma_bins) ** 2)
    kernel = (kernel / kernel.sum()).view(1, 1, -1)
    x = (pattern * mask).unsqueeze(1)
    return F.normalize(F.conv1d(x, kernel, padding=half).squeeze(1), dim=1)


def nearest_neighbour_scores(
    train: dict[str, torch.Tensor], query: dict[str, torch.Tensor], k: int = 64
) -> tuple[np.ndarray, np.ndarray]:
    """1-NN baseline: (predicted sets (N, 230) bool from the nearest training sample, ranking scores (N, 230)).

    Similarity is the cosine of smoothed patterns with the training patterns masked by the query's window,
    computed as <q, t * m_q> / (|q| |t * m_q|) in chunks of queries.
    """
    t = smoothed_unit(train["pattern"], torch.ones_like(train["mask"]))
    targets = train["targets"]
    pred_sets, rank_scores = [], []
    for lo in range(0, len(query["pattern"]), 128):
        q = smoothed_unit(query["pattern"][lo : lo + 128], query["mask"][lo : lo + 128])
        m = query["mask"][lo : lo + 128].float()
        dots = q @ t.T  # q is zero outside its window, so this is <q, t * m_q>
        norms = ((t * t) @ m.T).T.clamp_min(1e-12).sqrt()  # |t * m_q| for every (query, train) pair
        sims = dots / norms
        top_sim, top_idx = sims.topk(k, dim=1)
        pred_sets.append(targets[top_idx[:, 0]].numpy() > 0.5)
        # best similarity among the k neighbours carrying each class (0 when none carries it)
        carried = targets[top_idx] * top_sim.unsqueeze(-1).clamp_min(0.0)
        rank_scores.append(carried.amax(dim=1).numpy())
    return np.concatenate(pred_sets), np.concatenate(rank_scores)


def summarise(scores: np.ndarray, targets: np.ndarray, pred_set: np.ndarray | None, single: bool) -> dict:
    """micro-F1 (threshold sweep, or of a fixed predicted set), cover@K*, recall@K*, top-1 (single phase)."""
    from xrdmodels.metrics import micro_scores, ranking_metrics, threshold_sweep

    rank = ranking_metrics(scores, targets, multipliers=[1, 3])
    f1 = (
        micro_scores(pred_set, targets).f1
        if pred_set is not None
        else threshold_sweep(scores, targets).best.f1
    )
    out = {"micro_f1": f1, "cover": rank[1].cover, "recall": rank[1].recall, "cover@3K*": rank[3].cover}
    if single:
        out["top1"] = float(targets[np.arange(len(targets)), scores.argmax(1)].mean())
    return out


def model_summary(checkpoint: Path, store: Path, single: bool) -> dict:
    from xrdmodels.evaluate import load_model, predict_store, score

    model, _ = load_model(checkpoint)
    pred = predict_store(model, str(store), max_samples=EVAL_SAMPLES)
    result, _ = score(pred)
    rank = result.ranking
    out = {
        "micro_f1": result.sweep.best.f1,
        "cover": rank[1].cover,
        "recall": rank[1].recall,
        "cover@3K*": rank[3].cover,
    }
    if single:
        out["top1"] = float(pred.targets[np.arange(len(pred.targets)), pred.scores.argmax(1)].mean())
    return out


def train_variant(
    stores: Path, name: str, minutes: float, every: int, seed: int
) -> list[tuple[float, int, Path]]:
    """Train one variant with the real loop; returns (minutes, step, checkpoint) along the way."""
    from xrdmodels.config import TrainConfig
    from xrdmodels.train import train

    out_dir = stores / "runs" / name
    config = TrainConfig(
        **TRAIN,
        **VARIANTS[name],
        train_store=str(stores / "train.zarr"),
        out_dir=str(out_dir),
        max_minutes=minutes,
        checkpoint_every=every,
        val_every=10**9,
        log_every=every,
        tensorboard=False,
        seed=seed,
    )
    t0 = time.time()
    train(config, progress=False)
    points = []
    for ckpt in sorted(out_dir.glob("step-*.pt")):
        points.append(((ckpt.stat().st_mtime - t0) / 60, int(ckpt.stem.split("-")[1]), ckpt))
    return points


def fmt(row: dict, keys: list[str]) -> str:
    return " | ".join(f"{row[k]:.3f}" if k in row else "" for k in keys)


def baseline_cells(
    train: dict[str, torch.Tensor], splits: dict[str, Path], single: bool
) -> dict[str, list[dict]]:
    """The label prior and 1-NN retrieval over `train`, each summarised on every split's first EVAL_SAMPLES."""
    prior = train["targets"].numpy().mean(axis=0)
    cells: dict[str, list[dict]] = {"label prior": [], "1-NN": []}
    for url in splits.values():
        query = load_store(url, EVAL_SAMPLES)
        targets = query["targets"].numpy() > 0.5
        cells["label prior"].append(summarise(np.tile(prior, (len(targets), 1)), targets, None, single))
        pred_set, scores = nearest_neighbour_scores(train, query)
        cells["1-NN"].append(summarise(scores, targets, pred_set, single))
    return cells


def score_checkpoint(checkpoint: Path, stores: Path, nn_train: int) -> None:
    """One trained model against the label prior and 1-NN (over the first `nn_train` training samples) on the
    in-library and out-of-library stores it was trained beside."""
    splits = {"in-library": stores / "in_library.zarr", "out-of-library": stores / "test.zarr"}
    keys = ["micro_f1", "cover", "recall", "cover@3K*"]
    train = load_store(stores / "train.zarr", nn_train)
    cells = baseline_cells(train, splits, single=False)
    cells[str(checkpoint)] = [model_summary(checkpoint, url, single=False) for url in splits.values()]
    rows = [f"| {name} | " + " | ".join(fmt(c, keys) for c in row) + " |" for name, row in cells.items()]
    print(
        f"\n{EVAL_SAMPLES} samples per split; 1-NN over {len(train['targets'])} training samples of {stores}\n"
    )
    print("| method | " + " | ".join(f"{split} {k}" for split in splits for k in keys) + " |")
    print("|" + "---|" * (1 + len(keys) * len(splits)))
    print("\n".join(rows), flush=True)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--tasks", nargs="+", default=["single", "a1"], choices=sorted(TASKS))
    parser.add_argument("--variants", nargs="+", default=DEFAULT_VARIANTS, choices=sorted(VARIANTS))
    parser.add_argument("--minutes", type=float, default=10.0, help="training budget per variant and task")
    parser.add_argument("--n-train", type=int, default=100_000, help="training mixtures per task")
    parser.add_argument("--checkpoint-every", type=int, default=250, help="steps between curve points")
    parser.add_argument("--work-dir", default="runs/bench_learning")
    parser.add_argument("--workers", type=int, default=2, help="Dask workers for the stores")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--quick", action="store_true", help="smoke run: tiny stores, seconds of training")
    parser.add_argument(
        "--checkpoint",
        default=None,
        help="score this trained model instead of training the variants, on --stores (e.g. a measured pipeline "
        "run), beside the label prior and 1-NN of the same stores",
    )
    parser.add_argument(
        "--stores", default=None, help="with --checkpoint: folder of train/in_library/test.zarr"
    )
    parser.add_argument(
        "--nn-train", type=int, default=100_000, help="with --checkpoint: training samples 1-NN searches"
    )
    args = parser.parse_args(argv)
    if args.checkpoint:
        if not args.stores:
            parser.error("--checkpoint needs --stores")
        score_checkpoint(Path(args.checkpoint), Path(args.stores), args.nn_train)
        return
    if args.quick:
        args.minutes, args.n_train, args.checkpoint_every = 0.2, 4096, 20
        args.variants = args.variants[:1]
    work = Path(args.work_dir).resolve()
    work.mkdir(parents=True, exist_ok=True)
    torch.set_num_threads(2)

    for task in args.tasks:
        single = task == "single"
        stores = make_stores(work, task, args.n_train, args.workers)
        splits = {"in-library": stores / "in_library.zarr", "out-of-library": stores / "test.zarr"}
        keys = ["micro_f1", "cover", "recall", "cover@3K*"] + (["top1"] if single else [])
        header = (
            "| method | minutes | step | "
            + " | ".join(f"{split} {k}" for split in splits for k in keys)
            + " |"
        )
        rows = []

        t0 = time.perf_counter()
        train = load_store(stores / "train.zarr")
        for name, cells in baseline_cells(train, splits, single).items():
            rows.append(f"| {name} | | | " + " | ".join(fmt(c, keys) for c in cells) + " |")
        print(f"[{task}] baselines in {time.perf_counter() - t0:.0f} s", flush=True)
        del train

        for name in args.variants:
            points = train_variant(stores, name, args.minutes, args.checkpoint_every, args.seed)
            for minutes, step, ckpt in points:
                cells = [model_summary(ckpt, url, single) for url in splits.values()]
                rows.append(
                    f"| {name} | {minutes:.1f} | {step} | " + " | ".join(fmt(c, keys) for c in cells) + " |"
                )
                print(rows[-1], flush=True)

        print(
            f"\n#### task {task}: {'K* = 1' if single else 'A.1 mixtures, K* = 1..5'}, {args.n_train} training "
            f"mixtures, {EVAL_SAMPLES} per evaluation split, batch {TRAIN['batch_size']}, lr {TRAIN['lr']}\n"
        )
        print(header)
        print("|" + "---|" * (3 + len(keys) * len(splits)))
        print("\n".join(rows), flush=True)


if __name__ == "__main__":
    main()
