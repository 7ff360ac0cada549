"""The training loop (A.6): AdamW, warmup + cosine, clipping, validation micro-F1, checkpoints, exact resume, DDP.

Run on one device with `xrdmodels train --config FILE`, or on many with
`torchrun --nproc-per-node G -m xrdmodels.cli train --config FILE` (DDP; every rank reads its own part of the
shards, and every rank yields the same number of batches per epoch).

Exact resume: a checkpoint holds the run's `TrainState` (checkpoint.py: weights, optimizer and schedule,
counters, and every rank's data position and RNG states), so `--resume` after an interruption reproduces the
uninterrupted run's losses and weights bit for bit (same device, `num_workers`, ranks, batch size and number
of intra-op threads, `torch_threads`: CPU kernels may sum in another order with another thread count). The
DataLoader gets its own `torch.Generator`, so creating an iterator never draws from the global RNG that
dropout uses.

Files in `out_dir` (none holds credentials, docs/security.md): `config.json`, `metrics.csv` (step, split,
name, value), `last.pt`, `best.pt` (highest validation micro-F1 on the
`val_every` schedule, A.6), `step-NNNNNNNN.pt` every
`checkpoint_every` steps (only the newest `keep_step_checkpoints` of them, when set), and `tensorboard/`.
metrics.csv rows: split "train" every `log_every` steps (loss of the step's batch averaged over ranks, the lr
that step used, grad_norm = global L2 norm before clipping, samples_per_s over the interval, and slot_diversity
for phase-cluster models); split "val" (see `evaluate_store`).
"""

from __future__ import annotations

import csv
import json
import logging
import random
import re
import signal
import time
import warnings
from contextlib import AbstractContextManager, nullcontext
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from torch import nn

from .checkpoint import TrainState, copy_checkpoint, load_checkpoint, save_checkpoint
from .config import CU_KA_ANGSTROM, ModelConfig, TrainConfig, remote_options
from .data import MixtureStore, ShardStream, check_grid, to_batch
from .distributed import Runtime, any_rank, broadcast, mean_over_ranks, setup_runtime
from .loss import model_loss
from .metrics import gate_sweep, threshold_sweep
from .models.heads import PhaseClusterHead
from .models.model import SpaceGroupModel
from .schedule import build_adamw, warmup_cosine_schedule

log = logging.getLogger(__name__)

#: The clock of the max_minutes deadline (a module attribute so that tests can replace it alone).
_monotonic = time.monotonic


class TrainingDiverged(RuntimeError):
    """The loss or the gradient norm became NaN or infinite; no optimizer step was taken with it and the last
    checkpoint written before it is kept untouched."""


def seed_everything(seed: int) -> None:
    """Seed Python's, NumPy's and PyTorch's global generators (weights init and dropout draw from torch's)."""
    random.seed(seed)
    # The legacy global NumPy generator is seeded and saved because user code (e.g. a custom augmentation)
    # may draw from it; xrdmodels itself uses seeded np.random.default_rng generators.
    np.random.seed(seed)  # noqa: NPY002
    torch.manual_seed(seed)


class MetricsLog:
    """metrics.csv (step, split, name, value) plus TensorBoard scalars, written by the main rank only.

    On resume from step S, rows after S (logged by the interrupted run after its last checkpoint) are dropped, and
    so are rows at S that only the stop logged (a "train" row off the ``log_every`` schedule, a "val" row off the
    ``val_every`` one: ``stop_only``), so every step appears once and the file matches an uninterrupted run's.
    """

    def __init__(
        self,
        out_dir: Path,
        enabled: bool,
        tensorboard: bool,
        resume_step: int | None = None,
        stop_only: tuple[str, ...] = (),
    ):
        self.enabled = enabled
        self.path = out_dir / "metrics.csv"
        self.writer = None
        if not enabled:
            return
        kept: list[list[str]] = []
        if resume_step is not None and self.path.exists():
            with self.path.open(newline="") as f:
                kept = [
                    row
                    for row in list(csv.reader(f))[1:]
                    if row
                    and (
                        int(row[0]) < resume_step or (int(row[0]) == resume_step and row[1] not in stop_only)
                    )
                ]
        self.file = self.path.open("w", newline="")
        self.csv = csv.writer(self.file)
        self.csv.writerow(["step", "split", "name", "value"])
        self.csv.writerows(kept)
        self.file.flush()
        if tensorboard:
            from torch.utils.tensorboard import SummaryWriter

            # The stop's own rows at the resumed step go too where both were off the schedule.
            purge = None if resume_step is None else resume_step + (len(stop_only) < 2)
            self.writer = SummaryWriter(str(out_dir / "tensorboard"), purge_step=purge)

    def log(self, step: int, split: str, values: dict[str, float]) -> None:
        if not self.enabled:
            return
        for name, value in values.items():
            self.csv.writerow([step, split, name, repr(float(value))])
            if self.writer is not None:
                self.writer.add_scalar(f"{split}/{name}", value, step)
        self.file.flush()

    def close(self) -> None:
        if self.enabled:
            self.file.close()
            if self.writer is not None:
                self.writer.close()


class StopRequest:
    """SIGINT (Ctrl-C) and SIGTERM ask the loop to stop after the current step, so the saved state is consistent.

    A second signal raises KeyboardInterrupt at once (nothing is saved then). Handlers can only be installed
    from the main thread; elsewhere signals keep their previous handlers. The handlers are installed even where
    a signal was ignored (a job started with `&` or nohup ignores SIGINT): a signal sent to the training
    process on purpose asks for a clean stop. `restore()` puts back whatever was there before, ignored
    included.
    """

    def __init__(self) -> None:
        self.requested = False
        self._previous: dict[int, Any] = {}
        for sig in (signal.SIGINT, signal.SIGTERM):
            try:
                self._previous[sig] = signal.signal(sig, self._handle)
            except ValueError:  # not the main thread
                pass

    def _handle(self, signum: int, frame: Any) -> None:  # noqa: ARG002
        if self.requested:
            raise KeyboardInterrupt
        self.requested = True
        log.warning("signal %d: stopping after this step (send it again to abort without saving)", signum)

    def restore(self) -> None:
        for sig, handler in self._previous.items():
            # None: the previous handler was not installed from Python; the default is the closest to it.
            signal.signal(sig, signal.SIG_DFL if handler is None else handler)


def _ignore_stop_signals(worker_id: int) -> None:  # noqa: ARG001
    # Ctrl-C reaches the whole process group; the main process decides when to stop, so a worker killed by
    # it would only break the loader it still needs for a consistent checkpoint.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)


def cpu_has_native_bf16() -> bool:
    """Whether oneDNN runs bf16 natively on this CPU (avx512_bf16 or AMX); True when it cannot tell."""
    try:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):  # a build without oneDNN, or a private API that moved
        return True


def autocast(config: TrainConfig, device: torch.device) -> AbstractContextManager:
    """bf16 autocast when config.precision is "bf16" (on CPU as well as CUDA); fp32 otherwise (A.6)."""
    if config.precision == "bf16":
        return torch.autocast(device_type=device.type, dtype=torch.bfloat16)
    return nullcontext()


def prune_step_checkpoints(out_dir: Path, keep: int) -> None:
    """Delete every step-NNNNNNNN.pt of ``out_dir`` but the newest ``keep`` (the step is zero-padded, so name order
    is step order)."""
    steps = sorted(p for p in out_dir.glob("step-*.pt") if re.fullmatch(r"step-\d{8}\.pt", p.name))
    for old in steps[: max(0, len(steps) - keep)]:
        old.unlink(missing_ok=True)


def training_memory(
    store: MixtureStore, model_config: ModelConfig, wavelength_angstrom: float
) -> dict[str, Any]:
    """The checkpoint entry of the training bank's train-split phases (`TrainConfig.phase_memory`,
    :func:`xrdmodels.neighbours.bank_memory`), read from the bank the train store records (a remote bank with
    the store's storage_options: the mixtures and their bank on one object store, as `xrdsynth mixtures generate
    --storage-option` writes them).

    Raises:
        ValueError: the store records no bank, or its bank cannot be read or is not on the model's grid; the
            message says what to do.
    """
    from .neighbours import bank_memory

    bank = store.bank_url
    fix = "set phase_memory to false, or add a memory to a checkpoint later with `xrdmodels add-memory`"
    if not bank:
        raise ValueError(f"{store.url} records no bank_url, so phase_memory has no bank to read; {fix}")
    if "://***@" in bank:
        raise ValueError(
            f"{store.url} records its bank as {bank}: the bank was reached with credentials in its URL, which a store "
            f"never keeps, so phase_memory cannot read it; {fix} BANK (the bank's URL as you reach it), or give "
            "the credentials through storage_options or the environment instead of the URL"
        )
    grid = (
        model_config.two_theta_min_deg,
        model_config.two_theta_max_deg,
        model_config.n_bins,
        wavelength_angstrom,
    )
    try:
        references, entry = bank_memory(
            bank,
            "train",
            grid,
            remote_options(bank, store.storage_options),
            store.attrs.get("bank_fingerprint"),
        )
    except ValueError as exc:
        raise ValueError(f"phase_memory: the bank of {store.url}: {exc}; {fix}") from None
    log.info("phase memory: %d training phases of %s in every checkpoint", len(references), references.source)
    return entry


@torch.no_grad()
def evaluate_store(
    model: SpaceGroupModel,
    url: str,
    config: TrainConfig,
    device: torch.device,
    max_batches: int | None = None,
    storage_options: dict | None = None,
) -> dict[str, float]:
    """Validation metrics of `model` over the first rows of a store, in batches of config.batch_size.

    Returns loss (the training objective, A.5), samples, micro_f1 (best of the paper's sweep, A.7) and the
    sweep's operating point: best_threshold (presence, 101 values in [0, 1]) or best_gate (slot union, gates
    0.10..0.90), plus micro_f1@gate0.5 and slot_diversity (mean |cos| between slots, Appendix D 4.2) for
    phase-cluster models. The model is left in training mode.
    """
    store = MixtureStore(url, storage_options)
    check_grid(store, model.config)
    model.eval()
    targets, scores = [], []
    loss_sum = diversity_sum = 0.0
    n_bins = store.grid.n_bins
    try:
        for b, lo in enumerate(range(0, store.n_samples, config.batch_size)):
            if max_batches is not None and b >= max_batches:
                break
            batch = to_batch(store.read_rows(lo, min(lo + config.batch_size, store.n_samples)), n_bins)
            n = len(batch["labels"])
            with autocast(config, device):
                out = model(batch["pattern"].to(device), batch["mask"].to(device))
                loss = model_loss(
                    out, batch["labels"].to(device), config.presence_loss, batch["phase_weight"].to(device)
                )
            loss_sum += float(loss) * n
            targets.append(batch["targets"].numpy() > 0.5)
            if out.slot_logits is not None:
                scores.append(torch.softmax(out.slot_logits.float(), dim=-1).cpu().numpy())
                diversity_sum += float(PhaseClusterHead.slot_diversity(out.slots)) * n
            else:
                scores.append(out.set_probs.float().cpu().numpy())
    finally:
        model.train()
    y = np.concatenate(targets)
    n_total = len(y)
    result = {"loss": loss_sum / n_total, "samples": float(n_total)}
    if model.config.head == "phase_cluster":
        sweep = gate_sweep(np.concatenate(scores), y)
        result.update(
            {
                "micro_f1": sweep.best.f1,
                "best_gate": sweep.best_threshold,
                "micro_f1@gate0.5": sweep.scores_at(0.5).f1,
                "slot_diversity": diversity_sum / n_total,
            }
        )
    else:
        sweep = threshold_sweep(np.concatenate(scores), y)
        result.update({"micro_f1": sweep.best.f1, "best_threshold": sweep.best_threshold})
    result.update({"precision": sweep.best.precision, "recall": sweep.best.recall})
    return {k: float(v) for k, v in result.items()}


def build_loader(config: TrainConfig, rt: Runtime) -> tuple[ShardStream, Any]:
    """This rank's ShardStream (batch_size / world_size rows per batch) and a StatefulDataLoader over it."""
    if config.batch_size % rt.world_size:
        raise ValueError(
            f"batch_size {config.batch_size} does not divide evenly over {rt.world_size} ranks; "
            f"use a multiple of {rt.world_size}"
        )
    stream = ShardStream(
        config.train_store,
        config.batch_size // rt.world_size,
        seed=config.seed,
        shuffle_shards=config.shuffle_shards,
        rank=rt.rank,
        world_size=rt.world_size,
        storage_options=config.storage_options,
    )
    with warnings.catch_warnings():
        # torchdata 0.11 calls the deprecated torch.set_vital in its constructor; nothing to act on.
        warnings.filterwarnings("ignore", message="'set_vital' is deprecated", category=UserWarning)
        loader = _stateful_loader(stream, config, rt)
    return stream, loader


def _stateful_loader(stream: ShardStream, config: TrainConfig, rt: Runtime) -> Any:
    from torchdata.stateful_dataloader import StatefulDataLoader

    return StatefulDataLoader(
        stream,
        batch_size=None,
        num_workers=config.num_workers,
        pin_memory=rt.device.type == "cuda",
        persistent_workers=False,
        prefetch_factor=2 if config.num_workers else None,
        worker_init_fn=_ignore_stop_signals if config.num_workers else None,
        # The stream seeds itself; a private generator keeps iterator creation off the global RNG.
        generator=torch.Generator().manual_seed(config.seed),
    )


def train(config: TrainConfig, *, resume: bool = False, progress: bool = True) -> dict[str, Any]:
    """Train as configured (A.6) and return a summary: step, epoch, best_val_micro_f1, out_dir, interrupted
    (stopped by SIGINT/SIGTERM) and out_of_time (stopped by max_minutes). Both save last.pt for --resume.

    resume: continue exactly from `<out_dir>/last.pt`; without it, `out_dir` must not already hold a run.
    progress: show a tqdm bar on the main rank.
    Raises TrainingDiverged on a NaN/inf loss or gradient norm, ValueError on a store/model mismatch.
    """
    rt = setup_runtime(config.device)
    if config.precision == "bf16" and rt.device.type == "cpu" and not cpu_has_native_bf16():
        log.warning(
            "precision bf16 on a CPU without native bf16 (no avx512_bf16 or AMX): autocast emulates it and "
            "steps run 5-7x slower than fp32 (docs/benchmarks.md, training speed); set precision to fp32"
        )
    threads_before = torch.get_num_threads()
    if config.torch_threads is not None:
        torch.set_num_threads(config.torch_threads)
    try:
        return _train(config, rt, resume, progress)
    finally:
        torch.set_num_threads(threads_before)
        if rt.owns_process_group:
            dist.destroy_process_group()


def check_same_store(saved: dict[str, Any], path: Path, store: MixtureStore, train_store: str) -> None:
    """Raise ValueError, naming ``path`` and the fix, when the store at the checkpoint's training URL
    (``train_store``, as persisted) is not the one its run read (``data.train_store_fingerprint``, the store's
    ``config_fingerprint``): its loader position would then index other samples. A run resumed on another URL is
    :meth:`TrainState.check_resumable`'s (a warning), and checkpoints written before the fingerprint was recorded
    pass."""
    data = saved.get("data", {})
    recorded = data.get("train_store_fingerprint")
    now = store.attrs.get("config_fingerprint")
    if recorded is not None and data.get("train_store") == train_store and recorded != now:
        raise ValueError(
            f"cannot resume {path}: its run read a training store of fingerprint {recorded}, and {store.url} now "
            f"holds one of {now} (regenerated or replaced since); resume on the store it read, or start a new "
            "run (another out_dir)"
        )


def _train(config: TrainConfig, rt: Runtime, resume: bool, progress: bool) -> dict[str, Any]:
    from tqdm.auto import tqdm

    out_dir = Path(config.out_dir)
    last = out_dir / "last.pt"
    if not resume and last.exists():
        raise ValueError(
            f"{out_dir} already holds a run ({last}); pass --resume to continue it, or choose another out_dir"
        )
    if resume and not last.exists():
        raise FileNotFoundError(f"--resume: no checkpoint at {last}; start without --resume")
    model_config = config.build_model_config()
    # Before any data is read: a checkpoint that cannot be resumed fails at once.
    saved = load_checkpoint(last, map_location="cpu") if resume else None
    if saved is not None:
        TrainState.check_resumable(saved, last, config, model_config, rt.world_size)
    stream, loader = build_loader(config, rt)
    check_grid(stream.store, model_config)
    if saved is not None:
        check_same_store(saved, last, stream.store, config.persistable()["train_store"])
    wavelength = float(stream.store.attrs.get("wavelength_angstrom", CU_KA_ANGSTROM))
    memory = training_memory(stream.store, model_config, wavelength) if config.phase_memory else None
    if config.val_store and rt.is_main:
        check_grid(MixtureStore(config.val_store, config.storage_options), model_config)

    seed_everything(config.seed + rt.rank)
    model = SpaceGroupModel(model_config).to(rt.device)
    optimizer = build_adamw(
        model.parameters(), lr=config.lr, weight_decay=config.weight_decay, betas=tuple(config.betas)
    )
    scheduler = warmup_cosine_schedule(
        optimizer, config.warmup_steps, config.total_steps, config.min_lr_ratio
    )
    state = TrainState(
        model=model,
        optimizer=optimizer,
        scheduler=scheduler,
        loader=loader,
        config=config,
        model_config=model_config,
        data={
            "wavelength_angstrom": wavelength,
            "grid": dict(stream.store.attrs["grid"]),
            "train_store": config.persistable()["train_store"],
            # What the store holds, not only where: a store regenerated at the same URL is not resumed.
            "train_store_fingerprint": stream.store.attrs.get("config_fingerprint"),
            # The generating recipe (JSON data, never xrdsynth objects): predict warns against its ranges.
            **({"recipe": stream.store.attrs["recipe"]} if "recipe" in stream.store.attrs else {}),
            # Each group's share of the training phases: predict hedges its ranking of a measured pattern towards it.
            "label_prior": stream.store.label_prior().tolist(),
        },
        memory=memory,
    )
    # Whether the coming pass over the loader starts its epoch at the first batch (not a resumed position).
    fresh_epoch = True
    if saved is not None:
        state.load_state_dict(saved, rt)
        saved = None  # the optimizer moments are in the optimizer now; free the loaded copy
        fresh_epoch = False
        log.info("resumed from %s at step %d (epoch %d)", last, state.step, state.epoch)
    elif rt.is_main:
        out_dir.mkdir(parents=True, exist_ok=True)
    if rt.is_main:
        (out_dir / "config.json").write_text(json.dumps(config.persistable(), indent=2))

    net: nn.Module = model
    if rt.world_size > 1:
        net = nn.parallel.DistributedDataParallel(
            model, device_ids=[rt.device.index] if rt.device.type == "cuda" else None
        )
    if config.compile:
        net = torch.compile(net)
    # Rows at the resumed step that only a stop logged (max_steps below total_steps, max_minutes, Ctrl-C).
    stop_only = tuple(
        split
        for split, every in (("train", config.log_every), ("val", config.val_every))
        if state.step % every and state.step != config.total_steps
    )
    metrics = MetricsLog(
        out_dir,
        rt.is_main,
        config.tensorboard,
        resume_step=state.step if resume else None,
        stop_only=stop_only if resume else (),
    )
    saved_step = state.step if resume else -1

    def checkpoint(path: Path) -> None:
        # Collective: every rank must call it at the same step.
        entries = state.state_dict(rt)
        if rt.is_main:
            save_checkpoint(path, entries)

    bar = tqdm(
        total=config.max_steps,
        initial=state.step,
        desc="train",
        unit="step",
        disable=not (progress and rt.is_main),
        dynamic_ncols=True,
        mininterval=1.0,
    )
    t_last, step_last = time.perf_counter(), state.step
    net.train()
    stop = StopRequest()
    stopping = out_of_time = False
    deadline = None if config.max_minutes is None else _monotonic() + 60.0 * config.max_minutes
    try:
        while state.step < config.max_steps and not (stopping or out_of_time):
            n_batches = 0
            for batch in loader:
                n_batches += 1
                pattern = batch["pattern"].to(rt.device, non_blocking=True)
                mask = batch["mask"].to(rt.device, non_blocking=True)
                labels = batch["labels"].to(rt.device, non_blocking=True)
                phase_weight = batch["phase_weight"].to(rt.device, non_blocking=True)
                with autocast(config, rt.device):
                    out = net(pattern, mask)
                    loss = model_loss(out, labels, config.presence_loss, phase_weight)
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                grad_norm = torch.nn.utils.clip_grad_norm_(net.parameters(), config.grad_clip)
                # One host sync per step; the gradients are all-reduced, so every DDP rank agrees.
                if not bool(torch.isfinite(loss.detach()) & torch.isfinite(grad_norm)):
                    raise TrainingDiverged(
                        f"loss {float(loss.detach()):.6g} (gradient norm {float(grad_norm):.6g}) at step "
                        f"{state.step + 1} (epoch {state.epoch}): stopped before the optimizer step; the last "
                        f"checkpoint ({last if saved_step >= 0 else 'none written yet'}"
                        f"{f', step {saved_step}' if saved_step >= 0 else ''}) is kept. "
                        "Lower lr, use precision=fp32, or check the store for NaN patterns."
                    )
                lr = optimizer.param_groups[0]["lr"]
                optimizer.step()
                scheduler.step()
                state.step += 1
                bar.update(1)
                stopping, out_of_time = any_rank(
                    (stop.requested, deadline is not None and _monotonic() >= deadline), rt
                )
                # A time-limited stop counts as the run's end: logged and validated like max_steps.
                run_ends = state.step == config.max_steps or out_of_time

                if state.step % config.log_every == 0 or run_ends:
                    now = time.perf_counter()
                    rate = (state.step - step_last) * config.batch_size / max(now - t_last, 1e-9)
                    t_last, step_last = now, state.step
                    loss_mean = float(mean_over_ranks(loss.detach().float().reshape(1), rt))
                    values = {
                        "loss": loss_mean,
                        "lr": lr,
                        "grad_norm": float(grad_norm),
                        "samples_per_s": rate,
                    }
                    if out.slots is not None:
                        values["slot_diversity"] = float(PhaseClusterHead.slot_diversity(out.slots.detach()))
                    metrics.log(state.step, "train", values)
                    bar.set_postfix(loss=f"{loss_mean:.4f}", samples_s=f"{rate:.0f}")

                # Validations on the schedule (every val_every steps and at total_steps) choose best.pt; one at an
                # early stop is logged, and writes best.pt only while no scheduled one has (a provisional best,
                # which the first scheduled validation replaces), so a resumed run ends with an uninterrupted
                # run's best.pt.
                scheduled = state.step % config.val_every == 0 or state.step == config.total_steps
                if config.val_store and (scheduled or run_ends):
                    improved = provisional = False
                    if rt.is_main:
                        val = evaluate_store(
                            model,
                            config.val_store,
                            config,
                            rt.device,
                            config.val_max_batches,
                            config.storage_options,
                        )
                        metrics.log(state.step, "val", val)
                        log.info(
                            "step %d: val micro-F1 %.4f (loss %.4f)", state.step, val["micro_f1"], val["loss"]
                        )
                        state.val_metrics = val
                        improved = scheduled and val["micro_f1"] > state.best_val_micro_f1
                        provisional = not scheduled and state.best_val_micro_f1 < 0
                        if improved:
                            state.best_val_micro_f1, state.best_val_metrics = val["micro_f1"], val
                    if broadcast(improved or provisional, rt):
                        checkpoint(out_dir / "best.pt")
                    t_last = time.perf_counter()
                if state.step % config.checkpoint_every == 0:
                    checkpoint(last)
                    saved_step = state.step
                    if rt.is_main:
                        copy_checkpoint(last, out_dir / f"step-{state.step:08d}.pt")
                        if config.keep_step_checkpoints is not None:
                            prune_step_checkpoints(out_dir, config.keep_step_checkpoints)
                    t_last = time.perf_counter()
                if stopping or out_of_time or state.step >= config.max_steps:
                    break
            else:
                if n_batches == 0 and fresh_epoch:
                    raise RuntimeError(f"{config.train_store} yielded no batch in epoch {state.epoch}")
                state.epoch += 1
                stream.set_epoch(state.epoch)
                fresh_epoch = True
        if saved_step != state.step:
            checkpoint(last)
    finally:
        stop.restore()
        bar.close()
        metrics.close()
    if stopping:
        log.warning(
            "interrupted at step %d; saved %s, rerun with --resume to continue exactly", state.step, last
        )
    elif out_of_time:
        log.info(
            "max_minutes=%g reached at step %d; saved %s, --resume continues",
            config.max_minutes,
            state.step,
            last,
        )
    return {
        "step": state.step,
        "epoch": state.epoch,
        "best_val_micro_f1": float(broadcast(state.best_val_micro_f1, rt)),
        "out_dir": str(out_dir),
        "interrupted": stopping,
        "out_of_time": out_of_time,
    }
