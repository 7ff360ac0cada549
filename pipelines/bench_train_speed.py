"""Training speed on CPU (issue 10, item 4): samples/s of real optimizer steps of the demo's model families.

For each family of the `cpu` preset (the demo's `pipelines/demo/train_cpu.json` trains phase clustering and the
presence Transformer; the learning benchmark adds the presence token CNN), times the training loop's step
(forward and loss under the configured autocast, zero_grad, backward, clip_grad_norm_, AdamW step, schedule
step; `xrdmodels.train`), batch 32, on batches read from a small store of realistic 2,048-bin patterns, for
these variants of the model and of how the step is executed:

  previous cpu preset   the demo's model when issue 10 was filed: the `cpu` preset with the paper's front-end
                        (strides 2/2/2/2: 128 tokens; 3/7/15-tap branches) and dropout 0.1, fp32, torch's
                        default thread count: the baseline the ratios are against (`--baseline` picks another)
  previous, ...         the same, one change at a time towards today's preset: one intra-op thread, the
                        fused AdamW (`schedule.build_adamw`), no dropout, 3/5/7-tap branches
  cpu preset            today's `cpu` preset (adds stride 4 first: 64 tokens), default threads / one thread
  bf16                  bf16 autocast (`precision: "bf16"`; native on CPUs with avx512_bf16 / AMX, emulated and
                        several times slower on AVX2-only CPUs)
  compiled              torch.compile of the model (`compile: true`); its compile time is printed

(A channels-last layout of the front-end, as 2-D convolutions, was measured apart: same outputs, no gain;
docs/benchmarks.md.)

Each variant has its own model and optimizer, built from the same seed. The variants are interleaved: every
round runs a few timed steps of each, in alternating order (A B C, C B A, ...), so a burst of load from
other processes hits all of them alike; the table gives the median over rounds of the samples/s and of the
ratio to the baseline of the same round, and the spread (min-max) of the samples/s.

Then, per family, where one step's time goes (1 thread, fp32 and bf16): front-end, encoder, head, loss,
their backward passes, clipping and AdamW, timed by cutting the autograd graph between the parts; and
torch.profiler's split by operator kind (convolutions, matrix products, dropout's random numbers, ...).
And the data path: milliseconds to read and decode one batch with `xrdmodels.data.ShardStream`, beside a
step's. `--memorise` checks that bf16 still learns: each family memorises 256 fixed mixtures (the
learnability test's protocol, tests/test_learnability.py) in fp32 and in bf16.

Usage: .venv/bin/python pipelines/bench_train_speed.py [--families ...] [--variants ...] [--baseline NAME]
       [--rounds 5] [--steps 4] [--no-compile] [--no-breakdown] [--memorise [fp32] [bf16]] [--quick]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests" / "xrdmodels"))

BATCH = 32
N_BINS = 2048
#: The families of the `cpu` preset that the demo and the learning benchmark train.
FAMILIES: dict[str, dict] = {
    "phase-cluster": {"head": "phase_cluster"},
    "transformer-presence": {"head": "presence"},
    "cnn-presence": {"encoder": "cnn", "head": "presence"},
}


@dataclass(frozen=True)
class Variant:
    """How a step is executed: threads (None: torch's default), precision, compile, model overrides."""

    threads: int | None = None
    precision: str = "fp32"
    compile: bool = False
    model_overrides: dict = field(default_factory=dict)
    fused_adamw: bool = True  # False: AdamW's per-parameter loop, as the training loop ran it before


#: The `cpu` preset as the demo trained it when issue 10 was filed: the paper's front-end and dropout.
PREVIOUS = {
    "cnn_strides": [2, 2, 2, 2],
    "branch_kernel_sizes": [3, 7, 15],
    "dropout": 0.1,
    "cnn_dropout": 0.1,
}
NO_DROPOUT = {"dropout": 0.0, "cnn_dropout": 0.0}
VARIANTS: dict[str, Variant] = {
    "previous cpu preset": Variant(model_overrides=PREVIOUS, fused_adamw=False),
    "previous, 1 thread": Variant(threads=1, model_overrides=PREVIOUS, fused_adamw=False),
    "previous, 1 thread, fused AdamW": Variant(threads=1, model_overrides=PREVIOUS),
    "previous, no dropout, 1 thread": Variant(threads=1, model_overrides={**PREVIOUS, **NO_DROPOUT}),
    "previous, no dropout, 3/5/7 taps, 1 thread": Variant(
        threads=1, model_overrides={**PREVIOUS, **NO_DROPOUT, "branch_kernel_sizes": [3, 5, 7]}
    ),
    "cpu preset": Variant(),
    "cpu preset, 1 thread": Variant(threads=1),
    "cpu preset, bf16, 1 thread": Variant(threads=1, precision="bf16"),
    "cpu preset, compiled, 1 thread": Variant(threads=1, compile=True),
}
BASELINE = "previous cpu preset"
QUICK_VARIANTS = ("previous cpu preset", "cpu preset", "cpu preset, 1 thread")


def autocast(precision: str) -> torch.autocast | nullcontext:
    """What `xrdmodels.train.autocast` does on CPU."""
    return torch.autocast("cpu", dtype=torch.bfloat16) if precision == "bf16" else nullcontext()


def write_store(folder: Path, n_samples: int) -> str:
    """A store of realistic 2,048-bin patterns (peaks, background, noise, measured windows), zarr only."""
    from store_factory import StoreSpec, write_store

    url = str(folder / "speed.zarr")
    spec = StoreSpec(n_samples=n_samples, n_bins=N_BINS, shard_size=256, chunk_rows=64)
    write_store(url, spec, seed=0, realistic=True, keep=False)
    return url


def read_batches(url: str, n_batches: int) -> tuple[list[dict[str, torch.Tensor]], float]:
    """The first `n_batches` training batches of the store, and the milliseconds one batch costs to read and
    decode in the training process (ShardStream with no loader worker, as `num_workers: 0` runs it)."""
    from xrdmodels.data import ShardStream

    stream = ShardStream(url, BATCH, seed=0)
    batches = []
    t0 = time.perf_counter()
    for batch in stream:
        batches.append(batch)
        if len(batches) == n_batches:
            break
    return batches, (time.perf_counter() - t0) / len(batches) * 1e3


class Stepper:
    """One variant's model, optimizer and schedule, stepping like the training loop (xrdmodels.train)."""

    def __init__(self, family: str, variant: Variant, seed: int = 0):
        from xrdmodels.config import preset
        from xrdmodels.models.model import SpaceGroupModel
        from xrdmodels.schedule import build_adamw, warmup_cosine_schedule

        self.variant = variant
        torch.manual_seed(seed)
        self.model = SpaceGroupModel(preset("cpu", **FAMILIES[family], **variant.model_overrides))
        if variant.fused_adamw:
            self.optimizer = build_adamw(
                self.model.parameters(), lr=1e-3, weight_decay=1e-2, betas=(0.9, 0.999)
            )
        else:
            self.optimizer = torch.optim.AdamW(self.model.parameters(), lr=1e-3, weight_decay=1e-2)
        self.scheduler = warmup_cosine_schedule(self.optimizer, 50, 2000)
        self.net = torch.compile(self.model) if variant.compile else self.model
        self.model.train()
        self.compile_s: float | None = None

    def threads(self) -> None:
        torch.set_num_threads(self.variant.threads or os.cpu_count() or 1)

    def step(self, batch: dict[str, torch.Tensor]) -> float:
        from xrdmodels.loss import model_loss

        with autocast(self.variant.precision):
            out = self.net(batch["pattern"], batch["mask"])
            loss = model_loss(out, batch["labels"])
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        grad_norm = torch.nn.utils.clip_grad_norm_(self.net.parameters(), 1.0)
        if not bool(torch.isfinite(loss.detach()) & torch.isfinite(grad_norm)):
            raise RuntimeError(f"non-finite loss {float(loss)} or gradient norm {float(grad_norm)}")
        self.optimizer.step()
        self.scheduler.step()
        return float(loss.detach())

    def warm_up(self, batches: list[dict[str, torch.Tensor]]) -> None:
        """Two steps (the first compiles a compiled model; the second compiles its recompiles, if any)."""
        self.threads()
        t0 = time.perf_counter()
        self.step(batches[0])
        if self.variant.compile:
            self.compile_s = time.perf_counter() - t0
        self.step(batches[1 % len(batches)])


def time_variants(
    family: str,
    names: list[str],
    batches: list[dict[str, torch.Tensor]],
    rounds: int,
    steps: int,
) -> dict[str, dict]:
    """Interleaved timing: per round, `steps` timed steps of every variant (one untimed step first, after the
    thread count changed), the order reversed every other round. Returns per variant the samples/s of every
    round and its compile time."""
    steppers = {}
    for name in names:
        steppers[name] = Stepper(family, VARIANTS[name])
        steppers[name].warm_up(batches)
        if steppers[name].compile_s is not None:
            print(f"  {name}: compiled in {steppers[name].compile_s:.0f} s (first step)", flush=True)
    rates: dict[str, list[float]] = {name: [] for name in names}
    cursor = 0
    for r in range(rounds):
        for name in names if r % 2 == 0 else names[::-1]:
            stepper = steppers[name]
            stepper.threads()
            stepper.step(batches[cursor % len(batches)])
            t0 = time.perf_counter()
            for i in range(steps):
                stepper.step(batches[(cursor + 1 + i) % len(batches)])
            rates[name].append(steps * BATCH / (time.perf_counter() - t0))
        cursor += steps + 1
    return {name: {"rates": rates[name], "compile_s": steppers[name].compile_s} for name in names}


def report_speed(family: str, results: dict[str, dict], baseline: str) -> None:
    base = results[baseline]["rates"]
    print(f"\n{family}: samples/s of optimizer steps, batch {BATCH}, median over rounds (min-max)")
    header = f"| variant | samples/s | min-max | x {baseline} (median of per-round ratios) | compile s |"
    print(header)
    print("|---|---:|---:|---:|---:|")
    for name, r in results.items():
        rates = r["rates"]
        ratio = statistics.median(a / b for a, b in zip(rates, base, strict=True))
        compile_s = f"{r['compile_s']:.0f}" if r["compile_s"] is not None else ""
        print(
            f"| {name} | {statistics.median(rates):.0f} | {min(rates):.0f}-{max(rates):.0f} | {ratio:.2f} | "
            f"{compile_s} |"
        )


def step_breakdown(
    family: str, precisions: tuple[str, ...], batches: list[dict[str, torch.Tensor]], steps: int
) -> dict[str, dict[str, float]]:
    """Median milliseconds of each part of a step per precision, one thread. The autograd graph is cut between
    front-end, encoder and head (detached inputs that require grad), so each part's backward runs and is timed
    on its own; the precisions take turns step by step, so load from other processes hits them alike."""
    from xrdmodels.loss import model_loss
    from xrdmodels.models.heads import PresenceHead, slot_noisy_or_probs
    from xrdmodels.models.model import ModelOutput

    steppers = {p: Stepper(family, Variant(threads=1, precision=p)) for p in precisions}
    torch.set_num_threads(1)
    times: dict[str, dict[str, list[float]]] = {p: {} for p in precisions}

    def one(precision: str, batch: dict[str, torch.Tensor], record: bool) -> None:
        stepper = steppers[precision]
        model, optimizer = stepper.model, stepper.optimizer
        marks = [time.perf_counter()]
        names = []

        def mark(name: str) -> None:
            marks.append(time.perf_counter())
            names.append(name)

        with autocast(precision):
            tokens, valid = model.frontend(batch["pattern"], batch["mask"])
            mark("front-end forward")
            tokens_in = tokens.detach().requires_grad_()
            z = model.encoder(tokens_in, valid)
            mark("encoder forward")
            z_in = z.detach().requires_grad_()
            if isinstance(model.head, PresenceHead):
                logits = model.head(z_in, valid)
                out = ModelOutput(set_probs=torch.sigmoid(logits.float()), presence_logits=logits)
            else:
                _, slot_logits = model.head(z_in, valid)
                out = ModelOutput(set_probs=slot_noisy_or_probs(slot_logits), slot_logits=slot_logits)
            mark("head forward")
            loss = model_loss(out, batch["labels"])
            mark("loss forward")
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        mark("head + loss backward")
        z.backward(z_in.grad)
        mark("encoder backward")
        tokens.backward(tokens_in.grad)
        mark("front-end backward")
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        mark("clip")
        optimizer.step()
        stepper.scheduler.step()
        mark("AdamW")
        if record:
            for name, a, b in zip(names, marks, marks[1:], strict=False):
                times[precision].setdefault(name, []).append((b - a) * 1e3)

    for p in precisions:
        one(p, batches[0], False)
    for i in range(steps):
        for p in precisions if i % 2 == 0 else precisions[::-1]:
            one(p, batches[(i + 1) % len(batches)], True)
    return {p: {name: statistics.median(t) for name, t in parts.items()} for p, parts in times.items()}


#: torch.profiler operator names -> the kind reported (self time; everything else is "other").
OP_KINDS = {
    "convolutions": ("convolution", "conv1d", "mkldnn_conv"),
    "matrix products": ("aten::mm", "aten::bmm", "aten::addmm", "aten::linear", "aten::matmul", "baddbmm"),
    "dropout random numbers": ("bernoulli",),
    "norms (batch, layer)": ("batch_norm", "layer_norm"),
    "softmax": ("softmax",),
    "GELU": ("gelu",),
    "copies, casts, cat": ("copy_", "_to_copy", "aten::cat", "clone", "contiguous"),
}


def op_kinds(family: str, precision: str, batches: list[dict[str, torch.Tensor]], steps: int) -> dict:
    """Share of one step's self CPU time per operator kind (torch.profiler, one thread)."""
    from torch.profiler import ProfilerActivity, profile

    stepper = Stepper(family, Variant(threads=1, precision=precision))
    stepper.threads()
    stepper.step(batches[0])
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        for i in range(steps):
            stepper.step(batches[(i + 1) % len(batches)])
    shares: dict[str, float] = {}
    total = 0.0
    for event in prof.key_averages():
        if event.key.startswith(("ProfilerStep", "Optimizer.step", "autograd::", "## Call")):
            continue  # wrappers: their self time is small and their children are counted
        total += event.self_cpu_time_total
        kind = next((k for k, marks in OP_KINDS.items() if any(m in event.key for m in marks)), "other")
        shares[kind] = shares.get(kind, 0.0) + event.self_cpu_time_total
    return {k: v / total for k, v in sorted(shares.items(), key=lambda kv: -kv[1])}


def report_breakdown(family: str, batches: list[dict[str, torch.Tensor]], steps: int, read_ms: float) -> None:
    # bf16 only where the CPU runs it natively: emulated, it is several times slower and says nothing useful.
    from xrdmodels.train import cpu_has_native_bf16

    precisions = ("fp32", "bf16") if cpu_has_native_bf16() else ("fp32",)
    print(f"\n{family}: where one step's time goes (1 thread; median ms per step, share)")
    parts = step_breakdown(family, precisions, batches, steps)
    print("| part | " + " | ".join(f"{p} ms | {p} %" for p in precisions) + " |")
    print("|---|" + "---:|---:|" * len(precisions))
    totals = {p: sum(v.values()) for p, v in parts.items()}
    for name in parts["fp32"]:
        cells = " | ".join(
            f"{parts[p][name]:.1f} | {100 * parts[p][name] / totals[p]:.0f}" for p in precisions
        )
        print(f"| {name} | {cells} |")
    print("| step total | " + " | ".join(f"{totals[p]:.1f} | 100" for p in precisions) + " |")
    print(
        f"| (data path: read + decode one batch) | {read_ms:.1f} | {100 * read_ms / totals['fp32']:.0f} of the "
        "step |" + " | |" * (len(precisions) - 1)
    )
    kinds = {p: op_kinds(family, p, batches, steps) for p in precisions}
    print("\nby operator kind (torch.profiler self time, share of the step)")
    print("| kind | " + " | ".join(f"{p} %" for p in precisions) + " |\n|---|" + "---:|" * len(precisions))
    for kind in kinds["fp32"]:
        print(f"| {kind} | " + " | ".join(f"{100 * kinds[p].get(kind, 0.0):.0f}" for p in precisions) + " |")


def memorise(family: str, precision: str, steps: int = 150, n_bins: int = 1024) -> dict[str, float]:
    """The learnability test's protocol (tests/test_learnability.py) under `precision`: train micro-F1 and
    single-phase top-1 of the `cpu` preset after `steps` steps of batch 64 on 256 fixed A.1 mixtures."""
    import numpy as np

    from xrdmodels.config import preset
    from xrdmodels.evaluate import set_scores
    from xrdmodels.loss import model_loss
    from xrdmodels.metrics import evaluate_presence, evaluate_slot_union
    from xrdmodels.models.model import SpaceGroupModel

    data = memorisation_set(n_bins)
    torch.manual_seed(0)
    torch.set_num_threads(1)
    config = preset("cpu", n_bins=n_bins, **FAMILIES[family])
    model = SpaceGroupModel(config)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=1e-2)
    generator = torch.Generator().manual_seed(0)
    n = len(data["pattern"])
    for _ in range(steps):
        idx = torch.randint(0, n, (64,), generator=generator)
        with autocast(precision):
            loss = model_loss(model(data["pattern"][idx], data["mask"][idx]), data["labels"][idx])
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
    model.eval()
    with torch.no_grad(), autocast(precision):
        out = model(data["pattern"], data["mask"])
    targets = data["targets"].numpy() > 0.5
    if out.slot_logits is not None:
        result = evaluate_slot_union(torch.softmax(out.slot_logits.float(), -1).numpy(), targets)
    else:
        result = evaluate_presence(out.set_probs.float().numpy(), targets)
    single = data["n_phases"].numpy() == 1
    top1 = targets[single][np.arange(single.sum()), set_scores(out)[single].argmax(1)].mean()
    return {"micro_f1": result.sweep.best.f1, "top1": float(top1), "loss": float(loss.detach())}


_MEMORISATION: dict[int, dict[str, torch.Tensor]] = {}


def memorisation_set(n_bins: int) -> dict[str, torch.Tensor]:
    """256 A.1 mixtures from random crystals of 40 space groups, as in tests/test_learnability.py."""
    if n_bins not in _MEMORISATION:
        from xrdmodels.data import MixtureStore, to_batch
        from xrdsynth.bank_build import build_bank
        from xrdsynth.config import BankConfig, GenerateConfig, GridConfig
        from xrdsynth.generate import generate_all

        with tempfile.TemporaryDirectory() as tmp:
            bank = build_bank(
                ["random:1:1-40"],
                f"{tmp}/bank.zarr",
                BankConfig(split_fractions=(0.9, 0.05, 0.05), chunk_size=16, grid=GridConfig(n_bins=n_bins)),
                seed=0,
                workers=0,
            )
            generate_all(
                bank.url, f"{tmp}/mix", 256, GenerateConfig(shard_size=256, n_eval=64), splits=("train",),
                workers=0,
            )  # fmt: skip
            store = MixtureStore(f"{tmp}/mix/train.zarr")
            _MEMORISATION[n_bins] = to_batch(store.read_rows(0, store.n_samples), n_bins)
    return _MEMORISATION[n_bins]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--families", nargs="+", choices=list(FAMILIES), default=list(FAMILIES))
    parser.add_argument("--variants", nargs="+", choices=list(VARIANTS), default=list(VARIANTS))
    parser.add_argument(
        "--baseline",
        choices=list(VARIANTS),
        default=BASELINE,
        help=f"the variant ratios are against (default {BASELINE!r}: the demo's model when issue 10 was filed)",
    )
    parser.add_argument("--rounds", type=int, default=5, help="interleaved rounds (default 5)")
    parser.add_argument("--steps", type=int, default=4, help="timed steps per variant per round (default 4)")
    parser.add_argument("--no-compile", action="store_true", help="skip the torch.compile variants")
    parser.add_argument("--no-breakdown", action="store_true", help="skip where-the-time-goes")
    parser.add_argument(
        "--memorise",
        nargs="*",
        choices=["fp32", "bf16"],
        default=None,
        help="also check that these precisions memorise (default with the flag: both; about a minute each)",
    )
    parser.add_argument(
        "--quick", action="store_true", help="smoke run: one family, 2 rounds, 4 variants, no compile"
    )
    args = parser.parse_args(argv)
    if args.quick:
        args.families, args.rounds, args.steps, args.no_compile = args.families[:1], 2, 2, True
        args.variants = [v for v in args.variants if v in QUICK_VARIANTS]
    names = [n for n in args.variants if not (args.no_compile and VARIANTS[n].compile)]
    if args.baseline not in names:
        names.insert(0, args.baseline)
    threads_before = torch.get_num_threads()
    print(
        f"torch {torch.__version__}, {os.cpu_count()} cores, default threads {threads_before}, "
        f"CPU bf16: {cpu_bf16_support()}; batch {BATCH}, {N_BINS} bins, {args.rounds} rounds x {args.steps} steps"
    )
    try:
        with tempfile.TemporaryDirectory() as tmp:
            url = write_store(Path(tmp), 8 * 256)
            batches, read_ms = read_batches(url, 16)
        for family in args.families:
            results = time_variants(family, names, batches, args.rounds, args.steps)
            report_speed(family, results, args.baseline)
            if not args.no_breakdown:
                report_breakdown(family, batches, 6, read_ms)
        if args.memorise is not None:
            print("\nmemorisation of 256 fixed mixtures (tests/test_learnability.py protocol, 1,024 bins)")
            print(
                "| family | precision | train micro-F1 | single-phase top-1 | last loss |\n|---|---|---:|---:|---:|"
            )
            for family in args.families:
                for precision in args.memorise or ["fp32", "bf16"]:
                    m = memorise(family, precision, steps=30 if args.quick else 150)
                    print(
                        f"| {family} | {precision} | {m['micro_f1']:.3f} | {m['top1']:.3f} | {m['loss']:.4f} |",
                        flush=True,
                    )
    finally:
        torch.set_num_threads(threads_before)


def cpu_bf16_support() -> str:
    """Which native bf16 instructions the CPU advertises (Linux /proc/cpuinfo), e.g. 'avx512_bf16, amx_bf16'."""
    try:
        flags = next(
            line.split(":", 1)[1].split()
            for line in Path("/proc/cpuinfo").read_text().splitlines()
            if line.startswith("flags")
        )
    except (OSError, StopIteration):
        return "unknown"
    found = [f for f in ("avx512_bf16", "amx_bf16", "amx_tile") if f in flags]
    return ", ".join(found) or "none (bf16 is emulated)"


if __name__ == "__main__":
    sys.exit(main())
