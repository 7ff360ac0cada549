"""Training-stack check on one GPU (an H100, under 8 minutes in all): data made on the machine's CPUs, then the
paper-size Transformer models in bf16 and fp32 with samples/s, TFLOP/s, MFU and peak memory.

    python pipelines/gpu_check.py [--work-dir runs/gpu_check] [--budget-s 420]
    python pipelines/gpu_check.py --smoke --work-dir /tmp/gpu_check      # tiny sizes on the CPU (tests)

Phases (each prints its wall time when it ends, so a run cut short still reports what it did):

1. bank: `xrdsynth bank build --source builtin --source random:1 --workers <CPU count>`;
2. mixtures: `xrdsynth mixtures generate --n 200000 --splits train,val` on the same number of workers;
3. for the phase-cluster and the presence Transformer (A.2-A.4 sizes), bf16 first, then fp32, batch 256 (A.6):
   a. compute only: the FLOPs of one forward + backward counted by torch.utils.flop_counter.FlopCounterMode
      (matmul, convolution and attention; elementwise work is not counted, as usual for MFU), then timed
      AdamW steps (with clipping) on one real batch kept on the GPU -> samples/s, TFLOP/s, MFU, peak memory;
   b. the real loop: `xrdmodels.train.train` on the generated store (ShardStream, DataLoader workers, pinned
      memory, schedule, validation on 4 batches, checkpoints) for as many steps as the time budget allows, at
      most --steps-bf16 / --steps-fp32 -> samples/s (median of the logged intervals after the first), loss,
      peak memory.

MFU = achieved FLOP/s / peak FLOP/s. Peaks used, NVIDIA H100 SXM5 dense (no sparsity): bf16 tensor cores
989 TFLOP/s, fp32 67 TFLOP/s. PyTorch's default fp32 matmul precision ("highest") does not use TF32 tensor
cores; cuDNN convolutions may (torch.backends.cudnn.allow_tf32, reported). For another GPU pass
--peak-bf16-tflops / --peak-fp32-tflops. Results are printed and written to --report (default
<work-dir>/gpu_check.json). On a lent machine keep the data out of the folder that is copied back, e.g.
`--work-dir /tmp/gpu_check --report $OUT/gpu_check.json`.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import shutil
import statistics
import subprocess
import sys
import time
import traceback
from contextlib import nullcontext
from pathlib import Path
from typing import Any

import torch
from torch.utils.flop_counter import FlopCounterMode

from xrdmodels.config import TrainConfig, preset
from xrdmodels.data import MixtureStore, to_batch
from xrdmodels.loss import model_loss
from xrdmodels.models.model import SpaceGroupModel
from xrdmodels.train import train

REPO = Path(__file__).resolve().parents[1]
BASE_TRAIN_CONFIG = REPO / "pipelines" / "gpu_train.json"

#: Dense peak TFLOP/s of an NVIDIA H100 SXM5 (datasheet): bf16 tensor cores, and fp32 without TF32.
H100_SXM_PEAK_TFLOPS = {"bf16": 989.0, "fp32": 67.0}
MODELS = {
    "transformer-phase_cluster": {"encoder": "transformer", "head": "phase_cluster"},
    "transformer-presence": {"encoder": "transformer", "head": "presence"},
    # The `cpu` preset's presence read-out at paper size (22.6M more parameters in the head). Its flatten slot
    # initialisation is left out: at d = 768 that layer alone would hold 377M parameters.
    "transformer-presence-flatten": {
        "encoder": "transformer",
        "head": "presence",
        "presence_pooling": "flatten",
    },
}
#: Smoke mode: the `small` preset made tinier still, so that a CPU runs every phase in seconds.
SMOKE_MODEL = {
    "cnn_channels": [8, 8, 16, 16],
    "d_model": 32,
    "n_heads": 2,
    "ffn_dim": 64,
    "n_layers": 1,
    "n_slot_layers": 1,
}
#: Seconds a `train()` call spends besides its steps (loader start, two ~2 GB checkpoints, validation).
LOOP_OVERHEAD_S = 25.0


class Clock:
    def __init__(self, budget_s: float) -> None:
        self.start = time.perf_counter()
        self.budget_s = budget_s

    def elapsed(self) -> float:
        return time.perf_counter() - self.start

    def left(self) -> float:
        return self.budget_s - self.elapsed()


def say(clock: Clock, message: str) -> None:
    print(f"[{clock.elapsed():6.1f} s] {message}", flush=True)


def xrdsynth(args: list[str], clock: Clock) -> float:
    """Run an xrdsynth CLI command in this Python; return its wall time in seconds."""
    start = time.perf_counter()
    subprocess.run([sys.executable, "-m", "xrdsynth.cli", *args], check=True, timeout=max(30.0, clock.left()))
    return time.perf_counter() - start


def make_data(args: argparse.Namespace, work: Path, clock: Clock) -> dict[str, Any]:
    """Bank and train/val mixture stores (reused when --mixtures is given); returns urls and timings."""
    if args.mixtures:
        mix = Path(args.mixtures)
        return {"train": str(mix / "train.zarr"), "val": str(mix / "val.zarr"), "reused": str(mix)}
    workers = "0" if args.smoke else str(args.cpu_workers)
    bank = args.bank or str(work / "bank.zarr")
    info: dict[str, Any] = {"cpu_workers": int(workers)}
    if not args.bank:
        sources = ["random:1:1-20"] if args.smoke else ["builtin", "random:1"]
        cmd = ["bank", "build", "--out", bank, "--workers", workers]
        for source in sources:
            cmd += ["--source", source]
        if args.smoke:
            cmd += ["--split-fractions", "0.6,0.2,0.2"]
        info["bank_s"] = xrdsynth(cmd, clock)
        say(clock, f"bank built in {info['bank_s']:.1f} s ({', '.join(sources)}, {workers} workers)")
    mix = work / "mixtures"
    n_train, n_eval, shard = (256, 64, 64) if args.smoke else (args.n_train, 4096, 4096)
    info["mixtures_s"] = xrdsynth(
        [
            "mixtures",
            "generate",
            "--bank",
            bank,
            "--out",
            str(mix),
            "--n",
            str(n_train),
            "--n-eval",
            str(n_eval),
            "--splits",
            "train,val",
            "--shard-size",
            str(shard),
            "--workers",
            workers,
            "--resume",
        ],
        clock,
    )
    info["mixtures_per_s"] = (n_train + n_eval) / info["mixtures_s"]
    say(
        clock, f"{n_train} + {n_eval} mixtures in {info['mixtures_s']:.1f} s ({info['mixtures_per_s']:.0f}/s)"
    )
    info.update({"train": str(mix / "train.zarr"), "val": str(mix / "val.zarr")})
    return info


def precision_context(precision: str, device: torch.device):
    return torch.autocast(device.type, dtype=torch.bfloat16) if precision == "bf16" else nullcontext()


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def reset_peak_memory(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)


def peak_memory_gib(device: torch.device) -> float | None:
    return torch.cuda.max_memory_allocated(device) / 2**30 if device.type == "cuda" else None


def bench_compute(
    model_config,
    batch: dict[str, torch.Tensor],
    precision: str,
    device: torch.device,
    steps: int,
    time_cap_s: float,
) -> dict[str, Any]:
    """FLOPs of one forward+backward, then timed optimizer steps on one resident batch."""
    torch.manual_seed(0)
    model = SpaceGroupModel(model_config).to(device)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4, weight_decay=1e-2)
    pattern, mask, labels = (batch[k].to(device) for k in ("pattern", "mask", "labels"))

    def step() -> torch.Tensor:
        with precision_context(precision, device):
            loss = model_loss(model(pattern, mask), labels)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        return loss

    counter = FlopCounterMode(display=False)
    with counter:
        with precision_context(precision, device):
            loss = model_loss(model(pattern, mask), labels)
        loss.backward()
    model.zero_grad(set_to_none=True)
    flops = counter.get_total_flops()
    reset_peak_memory(device)
    for _ in range(2):  # kernel selection and allocator warm-up
        step()
    synchronize(device)
    start, done = time.perf_counter(), 0
    while done < steps and (done == 0 or time.perf_counter() - start < time_cap_s):
        step()
        done += 1
    synchronize(device)
    step_s = (time.perf_counter() - start) / done
    result = {
        "params_m": model.num_parameters() / 1e6,
        "flops_per_step": flops,
        "compute_steps": done,
        "compute_step_s": step_s,
        "compute_samples_per_s": len(labels) / step_s,
        "compute_peak_mem_gib": peak_memory_gib(device),
    }
    return result


def read_loop_metrics(out_dir: Path) -> dict[str, Any]:
    rows: dict[str, list[tuple[int, float]]] = {}
    with (out_dir / "metrics.csv").open() as f:
        for r in csv.DictReader(f):
            rows.setdefault(f"{r['split']}/{r['name']}", []).append((int(r["step"]), float(r["value"])))
    rates = [v for _, v in rows["train/samples_per_s"]]
    # The first interval holds start-up (workers, cuDNN autotuning); later ones are the steady state.
    steady = rates[1:] or rates
    losses = rows["train/loss"]
    val = rows.get("val/micro_f1", [])
    return {
        "loop_samples_per_s": statistics.median(steady),
        "first_loss": losses[0][1],
        "final_loss": losses[-1][1],
        "val_micro_f1": val[-1][1] if val else None,
    }


def run_loop(
    base: dict[str, Any],
    data: dict[str, Any],
    name: str,
    overrides: dict[str, Any],
    precision: str,
    steps: int,
    work: Path,
    device: torch.device,
) -> dict[str, Any]:
    out_dir = work / "runs" / f"{name}-{precision}"
    shutil.rmtree(out_dir, ignore_errors=True)
    config = TrainConfig(
        **{
            **base,
            "train_store": data["train"],
            "val_store": data["val"],
            "out_dir": str(out_dir),
            "model_overrides": overrides,
            "precision": precision,
            "max_steps": steps,
            "val_every": steps,
        }
    )
    reset_peak_memory(device)
    start = time.perf_counter()
    summary = train(config, progress=False)
    wall = time.perf_counter() - start
    result = {
        "loop_steps": summary["step"],
        "loop_wall_s": wall,
        "loop_peak_mem_gib": peak_memory_gib(device),
        **read_loop_metrics(out_dir),
    }
    for checkpoint in out_dir.glob("*.pt"):  # ~2 GB each at paper size; metrics.csv stays
        checkpoint.unlink()
    return result


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--smoke", action="store_true", help="tiny data and models on the CPU (for tests)")
    parser.add_argument(
        "--work-dir", default="runs/gpu_check", help="bank, mixtures, runs and gpu_check.json"
    )
    parser.add_argument(
        "--report", help="where to write the JSON results (default <work-dir>/gpu_check.json)"
    )
    parser.add_argument("--budget-s", type=float, default=420.0, help="wall-time budget of the whole check")
    parser.add_argument("--n-train", type=int, default=200_000, help="training mixtures to generate")
    parser.add_argument("--bank", help="reuse this bank instead of building one")
    parser.add_argument("--mixtures", help="reuse this folder of train.zarr/val.zarr instead of generating")
    parser.add_argument("--cpu-workers", type=int, default=os.cpu_count() or 1, help="Dask workers for data")
    parser.add_argument("--steps-bf16", type=int, default=300, help="most training-loop steps of a bf16 run")
    parser.add_argument("--steps-fp32", type=int, default=100, help="most training-loop steps of an fp32 run")
    parser.add_argument("--bench-steps", type=int, default=10, help="timed compute-only steps per run")
    parser.add_argument("--peak-bf16-tflops", type=float, default=H100_SXM_PEAK_TFLOPS["bf16"])
    parser.add_argument("--peak-fp32-tflops", type=float, default=H100_SXM_PEAK_TFLOPS["fp32"])
    args = parser.parse_args(argv)

    clock = Clock(args.budget_s)
    work = Path(args.work_dir)
    work.mkdir(parents=True, exist_ok=True)
    device = torch.device("cpu" if args.smoke or not torch.cuda.is_available() else "cuda")
    if not args.smoke and device.type != "cuda":
        raise SystemExit("gpu_check: no CUDA GPU visible; run with --smoke for the CPU version")
    env = {
        "torch": torch.__version__,
        "device": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
        "cuda": torch.version.cuda,
        "cpu_count": os.cpu_count(),
        "matmul_fp32_precision": torch.get_float32_matmul_precision(),
        "cudnn_allow_tf32": torch.backends.cudnn.allow_tf32,
    }
    peaks = {"bf16": args.peak_bf16_tflops, "fp32": args.peak_fp32_tflops} if device.type == "cuda" else None
    say(clock, f"environment: {env}; MFU peaks (TFLOP/s): {peaks or 'none on CPU'}")

    data = make_data(args, work, clock)
    base = json.loads(BASE_TRAIN_CONFIG.read_text())
    if args.smoke:
        base.update(
            {
                "model_preset": "small",
                "batch_size": 8,
                "num_workers": 0,
                "device": "cpu",
                "log_every": 1,
                "val_max_batches": 1,
            }
        )
    else:
        base["num_workers"] = max(1, min(base["num_workers"], (os.cpu_count() or 2) - 2))
    store = MixtureStore(data["train"])
    n_bins = store.grid.n_bins
    batch = to_batch(store.read_rows(0, base["batch_size"]), n_bins)

    plan = [(name, p) for p in ("bf16", "fp32") for name in MODELS]
    runs = []
    for i, (name, precision) in enumerate(plan):
        record: dict[str, Any] = {"model": name, "precision": precision, "batch_size": base["batch_size"]}
        try:
            check_one(
                record, args, base, data, batch, n_bins, clock.left() / (len(plan) - i), peaks, work, device
            )
        except Exception as exc:  # noqa: BLE001 - one failed run (e.g. out of memory) must not lose the others
            traceback.print_exc()
            record["error"] = f"{type(exc).__name__}: {exc}"
            reset_peak_memory(device)
        runs.append(record)
        rounded = {k: round(v, 4) if isinstance(v, float) else v for k, v in record.items()}
        say(clock, "run " + json.dumps(rounded))

    results = {"env": env, "data": data, "peaks_tflops": peaks, "runs": runs, "wall_s": clock.elapsed()}
    report = Path(args.report) if args.report else work / "gpu_check.json"
    report.parent.mkdir(parents=True, exist_ok=True)
    report.write_text(json.dumps(results, indent=2))
    print_table(runs)
    print(f"\ntotal {clock.elapsed():.0f} s; results in {report}", flush=True)
    if any("error" in r for r in runs):
        raise SystemExit("gpu_check: some runs failed (see 'error' in the table and the tracebacks above)")
    return results


def check_one(
    record: dict[str, Any],
    args: argparse.Namespace,
    base: dict[str, Any],
    data: dict[str, Any],
    batch: dict[str, torch.Tensor],
    n_bins: int,
    share_s: float,
    peaks: dict[str, float] | None,
    work: Path,
    device: torch.device,
) -> None:
    """Compute benchmark, then the real loop for as many steps as `share_s` seconds allow; fills `record`."""
    name, precision = record["model"], record["precision"]
    overrides = {**MODELS[name], **(SMOKE_MODEL if args.smoke else {}), "n_bins": n_bins}
    model_config = preset(base["model_preset"], **overrides)
    bench_steps = 2 if args.smoke else args.bench_steps
    record.update(bench_compute(model_config, batch, precision, device, bench_steps, 0.2 * share_s))
    reset_peak_memory(device)  # the benchmark's model and optimizer are gone: release their blocks
    max_steps = 3 if args.smoke else {"bf16": args.steps_bf16, "fp32": args.steps_fp32}[precision]
    affordable = int((0.8 * share_s - LOOP_OVERHEAD_S) / (1.15 * record["compute_step_s"]))
    steps = max_steps if args.smoke else min(max_steps, affordable)
    if steps >= 10 or args.smoke:
        record.update(run_loop(base, data, name, overrides, precision, steps, work, device))
    else:
        record["loop_skipped"] = f"only {max(steps, 0)} steps fit in the time budget"
    for kind in ("compute", "loop"):
        rate = record.get(f"{kind}_samples_per_s")
        if rate is not None:
            tflops = record["flops_per_step"] / record["batch_size"] * rate / 1e12
            record[f"{kind}_tflops"] = tflops
            record[f"{kind}_mfu"] = tflops / peaks[precision] if peaks else None
    record["samples_per_s"] = record.get("loop_samples_per_s", record["compute_samples_per_s"])


def print_table(runs: list[dict[str, Any]]) -> None:
    def num(r: dict[str, Any], key: str, fmt: str, scale: float = 1.0) -> str:
        v = r.get(key)
        return "-" if v is None else format(v * scale, fmt)

    print(
        f"\n{'model':26s} {'prec':4s} {'params M':>8s} {'GFLOP/sample':>12s} {'compute s/s':>11s} "
        f"{'TFLOP/s':>8s} {'MFU':>6s} {'loop s/s':>8s} {'loop MFU':>8s} {'peak GiB':>8s} {'loss (logged)':>14s}"
    )
    for r in runs:
        peak = [v for v in (r.get("compute_peak_mem_gib"), r.get("loop_peak_mem_gib")) if v is not None]
        gflop = r["flops_per_step"] / r["batch_size"] / 1e9 if "flops_per_step" in r else None
        loss = f"{r['first_loss']:.3f}->{r['final_loss']:.3f}" if "final_loss" in r else "-"
        print(
            f"{r['model']:26s} {r['precision']:4s} {num(r, 'params_m', '.1f'):>8s} "
            f"{'-' if gflop is None else format(gflop, '.1f'):>12s} {num(r, 'compute_samples_per_s', '.0f'):>11s} "
            f"{num(r, 'compute_tflops', '.1f'):>8s} {num(r, 'compute_mfu', '.1%'):>6s} "
            f"{num(r, 'loop_samples_per_s', '.0f'):>8s} {num(r, 'loop_mfu', '.1%'):>8s} "
            f"{format(max(peak), '.1f') if peak else '-':>8s} {loss:>14s}"
            + (f"  ERROR {r['error']}" if "error" in r else "")
            + (f"  ({r['loop_skipped']})" if "loop_skipped" in r else "")
        )


if __name__ == "__main__":
    main()
