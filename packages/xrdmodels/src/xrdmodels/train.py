"""The training loop (A.6): AdamW, warmup + cosine, clipping, validation micro-F1, checkpoints, exact resume, DDP.

Run on one device with `xrdmodels train --config FILE`, or on many with
`torchrun --nproc-per-node G -m xrdmodels.cli train --config FILE` (DDP; every rank reads its own shards).
"""

from __future__ import annotations

import csv
import logging
import math
import os
import random
import time
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from torch import nn

from .checkpoint import load_checkpoint, save_checkpoint
from .config import TrainConfig
from .data import MixtureStore, ShardStream, to_batch
from .loss import model_loss
from .metrics import gate_sweep, threshold_sweep
from .models.heads import PhaseClusterHead
from .models.model import SpaceGroupModel
from .schedule import warmup_cosine_schedule

log = logging.getLogger(__name__)


class TrainingDiverged(RuntimeError):
    """The loss became NaN or infinite; the last good checkpoint is kept untouched."""


@dataclass
class Runtime:
    device: torch.device
    rank: int
    world_size: int
    local_rank: int

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def setup_runtime(device: str) -> Runtime:
    """Single process, or DDP when launched by torchrun (WORLD_SIZE > 1)."""
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    if device == "cuda":
        torch.cuda.set_device(local_rank)
        dev = torch.device("cuda", local_rank)
    else:
        dev = torch.device(device)
    if world_size > 1 and not dist.is_initialized():
        dist.init_process_group(backend="nccl" if dev.type == "cuda" else "gloo")
    return Runtime(dev, rank, world_size, local_rank)


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def rng_state() -> dict[str, Any]:
    state = {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


class MetricsLog:
    """metrics.csv (step, split, name, value) plus TensorBoard scalars, written by the main rank only."""

    def __init__(self, out_dir: Path, enabled: bool, tensorboard: bool):
        self.enabled = enabled
        self.path = out_dir / "metrics.csv"
        self.writer = None
        if enabled:
            new = not self.path.exists()
            self.file = self.path.open("a", newline="")
            self.csv = csv.writer(self.file)
            if new:
                self.csv.writerow(["step", "split", "name", "value"])
            if tensorboard:
                from torch.utils.tensorboard import SummaryWriter

                self.writer = SummaryWriter(str(out_dir / "tensorboard"))

    def log(self, step: int, split: str, values: dict[str, float]) -> None:
        if not self.enabled:
            return
        for name, value in values.items():
            self.csv.writerow([step, split, name, f"{value:.8g}"])
            if self.writer is not None:
                self.writer.add_scalar(f"{split}/{name}", value, step)
        self.file.flush()

    def close(self) -> None:
        if self.enabled:
            self.file.close()
            if self.writer is not None:
                self.writer.close()


class StopRequest:
    """Ctrl-C / SIGTERM ask the loop to stop after the current step, so the saved state is always consistent."""

    def __init__(self) -> None:
        import signal

        self.requested = False
        self._previous = {}
        for sig in (signal.SIGINT, signal.SIGTERM):
            try:
                self._previous[sig] = signal.signal(sig, self._handle)
            except ValueError:  # not the main thread: signals stay with the caller
                pass

    def _handle(self, signum, frame) -> None:  # noqa: ARG002
        if self.requested:  # a second Ctrl-C stops at once
            raise KeyboardInterrupt
        self.requested = True

    def restore(self) -> None:
        import signal

        for sig, handler in self._previous.items():
            signal.signal(sig, handler)


def autocast(config: TrainConfig, device: torch.device):
    if config.precision == "bf16":
        return torch.autocast(device_type=device.type, dtype=torch.bfloat16)
    return nullcontext()


@torch.no_grad()
def evaluate_store(model: SpaceGroupModel, url: str, config: TrainConfig, device: torch.device,
                   max_batches: int | None = None, storage_options: dict | None = None) -> dict[str, float]:
    """Validation metrics over a store: loss, best micro-F1 of the paper's sweep, slot diversity."""
    model.eval()
    store = MixtureStore(url, storage_options)
    probs, targets, losses, diversity = [], [], [], []
    slot_probs = []
    n_bins = store.grid.n_bins
    for b, lo in enumerate(range(0, store.n_samples, config.batch_size)):
        if max_batches is not None and b >= max_batches:
            break
        batch = to_batch(store.read_rows(lo, min(lo + config.batch_size, store.n_samples)), n_bins)
        with autocast(config, device):
            out = model(batch["pattern"].to(device), batch["mask"].to(device))
        losses.append(float(model_loss(out, batch["labels"].to(device))) * len(batch["labels"]))
        targets.append(batch["targets"].numpy() > 0.5)
        if out.slot_logits is not None:
            slot_probs.append(torch.softmax(out.slot_logits.float(), dim=-1).cpu().numpy())
            diversity.append(float(PhaseClusterHead.slot_diversity(out.slots.float())) * len(batch["labels"]))
        else:
            probs.append(out.set_probs.float().cpu().numpy())
    model.train()
    n = sum(len(t) for t in targets)
    y = np.concatenate(targets)
    result = {"loss": sum(losses) / n, "samples": float(n)}
    if slot_probs:
        sweep = gate_sweep(np.concatenate(slot_probs), y)
        result.update({"micro_f1": float(sweep.best.f1), "best_gate": float(sweep.best_threshold),
                       "micro_f1@gate0.5": float(sweep.scores_at(0.5).f1), "slot_diversity": sum(diversity) / n})
    else:
        sweep = threshold_sweep(np.concatenate(probs), y)
        result.update({"micro_f1": float(sweep.best.f1), "best_threshold": float(sweep.best_threshold)})
    return result


def build_loader(config: TrainConfig, rt: Runtime):
    from torchdata.stateful_dataloader import StatefulDataLoader

    if config.batch_size % rt.world_size:
        raise ValueError(f"batch_size {config.batch_size} must divide evenly over {rt.world_size} ranks")
    stream = ShardStream(config.train_store, config.batch_size // rt.world_size, seed=config.seed,
                         shuffle_shards=config.shuffle_shards, rank=rt.rank, world_size=rt.world_size,
                         storage_options=config.storage_options)
    loader = StatefulDataLoader(stream, batch_size=None, num_workers=config.num_workers,
                                pin_memory=rt.device.type == "cuda", persistent_workers=False,
                                prefetch_factor=2 if config.num_workers else None)
    return stream, loader


def train(config: TrainConfig, *, resume: bool = False, progress: bool = True) -> dict[str, Any]:
    """Train as configured; returns the final state summary. Resume continues from `<out_dir>/last.pt` exactly."""
    from tqdm.auto import tqdm

    rt = setup_runtime(config.device)
    out_dir = Path(config.out_dir)
    if rt.is_main:
        out_dir.mkdir(parents=True, exist_ok=True)
        (out_dir / "config.json").write_text(config.model_dump_json(indent=2))
    seed_everything(config.seed + rt.rank)
    model_config = config.build_model_config()
    model = SpaceGroupModel(model_config).to(rt.device)
    optimizer = torch.optim.AdamW(model.parameters(), lr=config.lr, weight_decay=config.weight_decay,
                                  betas=tuple(config.betas))
    scheduler = warmup_cosine_schedule(optimizer, config.warmup_steps, config.total_steps, config.min_lr_ratio)
    stream, loader = build_loader(config, rt)
    grid = stream.store.grid
    if (grid.n_bins, grid.two_theta_min_deg, grid.two_theta_max_deg) != (
            model_config.n_bins, model_config.two_theta_min_deg, model_config.two_theta_max_deg):
        raise ValueError(f"{config.train_store} has a grid of {grid.n_bins} bins over {grid.two_theta_min_deg}-"
                         f"{grid.two_theta_max_deg}° but the model expects {model_config.n_bins} bins over "
                         f"{model_config.two_theta_min_deg}-{model_config.two_theta_max_deg}°; set "
                         "model_overrides.n_bins / two_theta_min_deg / two_theta_max_deg to match")
    data_info = {"wavelength_angstrom": float(stream.store.attrs.get("wavelength_angstrom", 1.54184)),
                 "grid": dict(stream.store.attrs["grid"]), "train_store": config.train_store}
    step, best_f1, epoch = 0, -1.0, 0
    best_val: dict[str, float] = {}
    last = out_dir / "last.pt"
    if resume:
        if not last.exists():
            raise FileNotFoundError(f"--resume: no checkpoint at {last}; start without --resume")
        state = load_checkpoint(last, map_location=rt.device)
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        loader.load_state_dict(state["loader"][rt.rank] if rt.world_size > 1 else state["loader"])
        step, best_f1, epoch = state["step"], state["best_val_micro_f1"], state["epoch"]
        best_val = state.get("val_metrics", {})
        set_rng_state(state["rng"])
        log.info("resumed from %s at step %d", last, step)
    net: nn.Module = model
    if rt.world_size > 1:
        net = nn.parallel.DistributedDataParallel(model, device_ids=[rt.device.index] if rt.device.type == "cuda" else None)
    if config.compile:
        net = torch.compile(net)
    metrics = MetricsLog(out_dir, rt.is_main, config.tensorboard)

    def checkpoint(path: Path) -> None:
        loader_state = loader.state_dict()
        if rt.world_size > 1:
            gathered: list[Any] = [None] * rt.world_size
            dist.all_gather_object(gathered, loader_state)
            loader_state = gathered
        if rt.is_main:
            save_checkpoint(path, {
                "model": model.state_dict(), "optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(),
                "loader": loader_state, "step": step, "epoch": epoch, "best_val_micro_f1": best_f1,
                "rng": rng_state(), "config": config.model_dump(mode="json"), "data": data_info,
                "val_metrics": best_val,
                "model_config": model_config.model_dump(mode="json"),
            })

    samples_per_step = config.batch_size
    bar = tqdm(total=config.max_steps, initial=step, desc="train", unit="step", disable=not (progress and rt.is_main),
               dynamic_ncols=True, mininterval=1.0)
    t_last, n_last = time.perf_counter(), step
    net.train()
    stop = StopRequest()
    try:
        while step < config.max_steps:
            got_batch = False
            for batch in loader:
                got_batch = True
                with autocast(config, rt.device):
                    out = net(batch["pattern"].to(rt.device, non_blocking=True),
                              batch["mask"].to(rt.device, non_blocking=True))
                    loss = model_loss(out, batch["labels"].to(rt.device, non_blocking=True))
                if not torch.isfinite(loss):
                    raise TrainingDiverged(
                        f"loss is {loss.item()} at step {step + 1}; the last good checkpoint ({last}) is kept. "
                        "Lower lr, use fp32, or check the data."
                    )
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                grad_norm = torch.nn.utils.clip_grad_norm_(net.parameters(), config.grad_clip)
                optimizer.step()
                scheduler.step()
                step += 1
                bar.update(1)
                if step % config.log_every == 0 or step == config.max_steps:
                    now = time.perf_counter()
                    rate = (step - n_last) * samples_per_step / max(now - t_last, 1e-9)
                    t_last, n_last = now, step
                    metrics.log(step, "train", {"loss": float(loss), "lr": scheduler.get_last_lr()[0],
                                                "grad_norm": float(grad_norm), "samples_per_s": rate})
                    bar.set_postfix(loss=f"{float(loss):.4f}", samples_s=f"{rate:.0f}")
                if config.val_store and (step % config.val_every == 0 or step == config.max_steps):
                    if rt.is_main:
                        val = evaluate_store(model, config.val_store, config, rt.device, config.val_max_batches,
                                             config.storage_options)
                        metrics.log(step, "val", val)
                        log.info("step %d: val micro-F1 %.4f (loss %.4f)", step, val["micro_f1"], val["loss"])
                        if val["micro_f1"] > best_f1:
                            best_f1, best_val = val["micro_f1"], val
                            checkpoint(out_dir / "best.pt")
                    if rt.world_size > 1:
                        best_t = torch.tensor([best_f1], device=rt.device)
                        dist.broadcast(best_t, 0)
                        best_f1 = float(best_t)
                if step % config.checkpoint_every == 0:
                    checkpoint(out_dir / f"step-{step:08d}.pt")
                    checkpoint(last)
                if step >= config.max_steps:
                    break
            if not got_batch:
                raise RuntimeError(f"{config.train_store} yielded no batch; is batch_size larger than the store?")
                if stop.requested:
                    break
            if stop.requested:
                break
            if not got_batch:
                raise RuntimeError(f"{config.train_store} yielded no batch; is batch_size larger than the store?")
            if step < config.max_steps:
                epoch += 1
                stream.set_epoch(epoch)
        checkpoint(last)
    finally:
        stop.restore()
        bar.close()
        metrics.close()
    if stop.requested:
        log.warning("interrupted at step %d; saved %s, rerun with --resume to continue exactly", step, last)
    return {"step": step, "best_val_micro_f1": best_f1, "out_dir": str(out_dir), "interrupted": stop.requested}
