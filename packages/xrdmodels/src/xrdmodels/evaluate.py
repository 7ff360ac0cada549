"""`xrdmodels evaluate`: the paper's evaluation (A.7-A.8, Table 1, Figs. A1-A3) for one or more checkpoints.

For every checkpoint and every store (in-library and out-of-library test by default) it computes micro
precision / recall / F1 at the best threshold (presence models: 101 thresholds in [0, 1]) or gate
(phase-cluster models: slot-union rule, gates 0.10..0.90 step 0.02, also reported at gate 0.5), cover@K,
recall@K and IoU for K = K*, 3K*, 5K*, and the same split into strata by K* and by minimum phase fraction
<= 10 %, alone and crossed (Fig. A3). It writes table.md (Table-1 shaped), results.csv, results.json and PNG figures.
"""

from __future__ import annotations

import csv
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .checkpoint import load_checkpoint
from .config import ModelConfig, remote_options
from .data import MixtureStore, check_grid, check_wavelength, to_batch
from .ensemble import PresenceEnsemble, ensemble_state, is_manifest, manifest_threshold, read_manifest
from .metrics import (
    TABLE1_COLUMNS,
    EvaluationResult,
    evaluate_presence,
    evaluate_slot_union,
    evaluate_strata,
    slot_set_scores,
    strata_by_low_fraction,
    strata_by_phase_count,
    table1_row,
)
from .models.heads import PhaseClusterHead
from .models.model import ModelOutput, SpaceGroupModel


def load_model(
    checkpoint: str | Path, device: str | torch.device = "cpu"
) -> tuple[SpaceGroupModel | PresenceEnsemble, dict[str, Any]]:
    """The model of a checkpoint, in eval mode, and the checkpoint's other contents.

    An ensemble manifest (:mod:`xrdmodels.ensemble`) in place of a checkpoint gives its members as one
    :class:`~xrdmodels.ensemble.PresenceEnsemble` and :func:`~xrdmodels.ensemble.ensemble_state`.
    """
    if is_manifest(checkpoint):
        paths = read_manifest(checkpoint)
        loaded = [load_model(p, device) for p in paths]
        state = ensemble_state(checkpoint, paths, [s for _, s in loaded], manifest_threshold(checkpoint))
        return PresenceEnsemble([m for m, _ in loaded]).to(device).eval(), state
    state = load_checkpoint(checkpoint, map_location=device)
    model = SpaceGroupModel(ModelConfig(**state["model_config"]))
    model.load_state_dict(state["model"])
    return model.to(device).eval(), state


def set_scores(out: ModelOutput) -> np.ndarray:
    """(B, 230) set scores of a forward pass, the one read-out that ranks and thresholds every model.

    Presence models: the presence probabilities. Phase-cluster models: :func:`metrics.slot_set_scores` of the
    slot softmax (slot union; the model's noisy-or ``set_probs`` is not used). See the metrics module
    docstring, "Decision rule and ranking".
    """
    if out.slot_logits is None:
        return out.set_probs.float().cpu().numpy()
    return slot_set_scores(torch.softmax(out.slot_logits.float(), dim=-1).cpu().numpy())


@dataclass
class StorePredictions:
    """Everything the metrics need for one model on one store."""

    scores: np.ndarray  # (N, 230) set scores, :func:`set_scores`
    slot_probs: np.ndarray | None  # (N, K, 231) for phase-cluster models
    targets: np.ndarray  # bool (N, 230)
    n_phases: np.ndarray  # (N,)
    phase_weight: np.ndarray  # (N, 5)
    slot_diversity: float | None


@torch.no_grad()
def predict_store(
    model: SpaceGroupModel | PresenceEnsemble,
    url: str,
    *,
    batch_size: int = 256,
    device: str | torch.device = "cpu",
    max_samples: int | None = None,
    storage_options: dict | None = None,
) -> StorePredictions:
    store = MixtureStore(url, storage_options)
    n = store.n_samples if max_samples is None else min(max_samples, store.n_samples)
    scores, slot_probs, targets, n_phases, weights, div = [], [], [], [], [], []
    for lo in range(0, n, batch_size):
        rows = store.read_rows(lo, min(lo + batch_size, n))
        batch = to_batch(rows, store.grid.n_bins)
        out = model(batch["pattern"].to(device), batch["mask"].to(device))
        scores.append(set_scores(out))
        if out.slot_logits is not None:
            slot_probs.append(torch.softmax(out.slot_logits.float(), dim=-1).cpu().numpy())
            div.append(float(PhaseClusterHead.slot_diversity(out.slots.float())) * len(rows["pattern"]))
        targets.append(batch["targets"].numpy() > 0.5)
        n_phases.append(rows["n_phases"])
        weights.append(rows["phase_weight"])
    return StorePredictions(
        scores=np.concatenate(scores),
        slot_probs=np.concatenate(slot_probs) if slot_probs else None,
        targets=np.concatenate(targets),
        n_phases=np.concatenate(n_phases),
        phase_weight=np.concatenate(weights),
        slot_diversity=sum(div) / n if div else None,
    )


def fig_a3_strata(n_phases: np.ndarray, phase_weight: np.ndarray) -> list[tuple[dict[str, Any], np.ndarray]]:
    """Fig. A3's strata as (fields, sample mask): the number of phases K alone, the minimum phase fraction alone
    (<= or > LOW_FRACTION_CUTOFF), and the two crossed, which is what the paper's figure plots (one line per
    fraction stratum over K). Fields: `stratum` (its name), `phases` (K or None), `min_fraction` ("<=0.10",
    ">0.10" or None)."""
    by_k = strata_by_phase_count(n_phases)
    by_fraction = strata_by_low_fraction(n_phases, phase_weight)
    out: list[tuple[dict[str, Any], np.ndarray]] = []
    for k, mask in by_k.items():
        out.append(({"stratum": f"K*={k}", "phases": k, "min_fraction": None}, mask))
    for key, mask in by_fraction.items():
        out.append(({"stratum": key, "phases": None, "min_fraction": key.removeprefix("min_fraction")}, mask))
    for k, k_mask in by_k.items():
        for key, f_mask in by_fraction.items():
            fraction = key.removeprefix("min_fraction")
            out.append(
                ({"stratum": f"K*={k}, {key}", "phases": k, "min_fraction": fraction}, k_mask & f_mask)
            )
    return out


def score(pred: StorePredictions) -> tuple[EvaluationResult, list[tuple[dict[str, Any], EvaluationResult]]]:
    """Split-level result and the Fig. A3 strata (`fig_a3_strata`, empty ones left out), each stratum at the
    split's operating threshold/gate."""
    if pred.slot_probs is not None:
        result = evaluate_slot_union(pred.slot_probs, pred.targets)
        op = [result.sweep.best_threshold]

        def ev(m):
            return evaluate_slot_union(pred.slot_probs[m], pred.targets[m], gate_thresholds=op)
    else:
        result = evaluate_presence(pred.scores, pred.targets)
        op = [result.sweep.best_threshold]

        def ev(m):
            return evaluate_presence(pred.scores[m], pred.targets[m], thresholds=op)

    strata = fig_a3_strata(pred.n_phases, pred.phase_weight)
    results = evaluate_strata({fields["stratum"]: mask for fields, mask in strata}, ev)
    return result, [
        (fields, r) for (fields, _), r in zip(strata, results.values(), strict=True) if r is not None
    ]


def method_name(model_config: ModelConfig) -> str:
    encoder = {"transformer": "Transformer", "cnn": "CNN"}[model_config.encoder]
    return (
        f"{encoder} + phase clustering" if model_config.head == "phase_cluster" else f"{encoder} (presence)"
    )


def method_names(kinds: list[str], checkpoints: list[str]) -> list[str]:
    """Table rows' names: each model's kind and its checkpoint's folder and file, with as many more parent
    folders as tell every checkpoint apart (two runs' models/cnn_presence/last.pt), numbered where even the full
    paths are the same."""
    paths = [Path(c).absolute().parts for c in checkpoints]
    for depth in range(2, max(len(p) for p in paths) + 1):
        names = [f"{kind} [{'/'.join(p[-depth:])}]" for kind, p in zip(kinds, paths, strict=True)]
        if len(set(names)) == len(names):
            return names
    return [f"{name} #{i + 1}" for i, name in enumerate(names)]


def evaluate_checkpoints(
    checkpoints: list[str],
    stores: dict[str, str],
    out_dir: str | Path,
    *,
    batch_size: int = 256,
    device: str = "cpu",
    max_samples: int | None = None,
    names: list[str] | None = None,
    storage_options: dict | None = None,
) -> list[dict[str, Any]]:
    """Evaluate every checkpoint on every store; write table.md, results.csv, results.json and figures.
    ``storage_options``: fsspec options used for each store that is a remote URL."""
    # Every store and checkpoint path is checked before any model is scored: a typo fails at once, not minutes in.
    opened = {split: MixtureStore(url, remote_options(url, storage_options)) for split, url in stores.items()}
    absent = [c for c in checkpoints if not Path(c).exists()]
    if absent:
        raise FileNotFoundError(f"no checkpoint at {', '.join(map(str, absent))}")
    if names and len(set(names)) != len(names):
        raise ValueError(f"--name must be different for each checkpoint: {names} repeats one")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    rows: list[dict[str, Any]] = []
    strata_rows: list[dict[str, Any]] = []
    # Rows are named from every model's kind, so all are loaded first; of each checkpoint only the model and the
    # two entries read below are kept, not its copy of the weights and its optimizer state (3x the weights).
    loaded = []
    for ckpt in checkpoints:
        model, state = load_model(ckpt, device)
        loaded.append((model, {"data": state.get("data", {}), "step": state.get("step")}))
    kinds = [
        f"ensemble of {len(model.members)} {method_name(model.config)}"
        if isinstance(model, PresenceEnsemble)
        else method_name(model.config)
        for model, _ in loaded
    ]
    methods = names or method_names(kinds, checkpoints)
    for ckpt, (model, state), method in zip(checkpoints, loaded, methods, strict=True):
        trained_at = state["data"].get("wavelength_angstrom")
        for store in opened.values():
            check_grid(store, model.config)
            check_wavelength(store, float(trained_at) if trained_at else None, str(ckpt))
        for split, url in stores.items():
            pred = predict_store(
                model,
                url,
                batch_size=batch_size,
                device=device,
                max_samples=max_samples,
                storage_options=remote_options(url, storage_options),
            )
            result, strata = score(pred)
            row = table1_row(result, method, split)
            row["checkpoint"] = str(ckpt)
            row["step"] = state["step"]
            row["n_samples"] = len(pred.targets)
            if pred.slot_diversity is not None:
                row["slot_diversity"] = pred.slot_diversity
            rows.append(row)
            for fields, r in strata:
                strata_rows.append(
                    {
                        "method": method,
                        "split": split,
                        **fields,
                        "n_samples": int(r.ranking[1].n_samples),
                        **{k: v for k, v in table1_row(r, method, split).items() if k in TABLE1_COLUMNS},
                    }
                )
    write_report(rows, strata_rows, out)
    plot_training_curves(checkpoints, out)
    plot_strata(strata_rows, out / "fig_a3_strata.png")
    return rows


def markdown_table(rows: list[dict[str, Any]]) -> str:
    """Table 1 of the paper: one line per method, in-library and out-of-library columns side by side."""
    splits = list(dict.fromkeys(r["split"] for r in rows))
    methods = list(dict.fromkeys(r["method"] for r in rows))
    cols = ["micro_f1", "cover@K*", "recall@K*", "cover@3K*", "recall@3K*"]
    head = "| Method | " + " | ".join(f"{s}: {c}" for s in splits for c in cols) + " |"
    sep = "|---|" + "---|" * (len(splits) * len(cols))
    lines = [head, sep]
    for m in methods:
        cells = []
        for s in splits:
            r = next((r for r in rows if r["method"] == m and r["split"] == s), None)
            cells += [f"{r[c]:.3f}" if r else "" for c in cols]
        lines.append(f"| {m} | " + " | ".join(cells) + " |")
    extra = [
        f"- {r['method']} on {r['split']}: operating threshold/gate {r['threshold']:.2f}"
        + (f", micro-F1 at gate 0.5 = {r['micro_f1@gate0.50']:.3f}" if "micro_f1@gate0.50" in r else "")
        + (f", slot diversity {r['slot_diversity']:.3f}" if "slot_diversity" in r else "")
        + f" ({r['n_samples']} samples)"
        for r in rows
    ]
    return "\n".join(lines) + "\n\n" + "\n".join(extra) + "\n"


def write_report(rows: list[dict[str, Any]], strata_rows: list[dict[str, Any]], out: Path) -> None:
    (out / "table.md").write_text(markdown_table(rows))
    (out / "results.json").write_text(
        json.dumps({"results": rows, "strata": strata_rows}, indent=2, default=float)
    )
    for name, data in (("results.csv", rows), ("strata.csv", strata_rows)):
        keys = list(dict.fromkeys(k for r in data for k in r))
        with (out / name).open("w", newline="") as f:
            w = csv.DictWriter(f, fieldnames=keys)
            w.writeheader()
            w.writerows(data)


def _read_metrics(run_dir: Path) -> dict[str, list[tuple[int, float]]]:
    path = run_dir / "metrics.csv"
    series: dict[str, list[tuple[int, float]]] = {}
    if path.exists():
        with path.open() as f:
            for r in csv.DictReader(f):
                series.setdefault(f"{r['split']}/{r['name']}", []).append((int(r["step"]), float(r["value"])))
    return series


def plot_training_curves(checkpoints: list[str], out: Path) -> None:
    """Fig. A1 (validation micro-F1 over steps) and Fig. A2 (slot diversity over steps) from each run's metrics.csv."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    for key, fname, ylabel in (
        ("val/micro_f1", "fig_a1_val_micro_f1.png", "validation micro-F1"),
        ("val/slot_diversity", "fig_a2_slot_diversity.png", "mean |cos| between slots"),
    ):
        fig, ax = plt.subplots(figsize=(6, 4))
        plotted = False
        for run in dict.fromkeys(Path(c).parent for c in checkpoints):
            points = _read_metrics(run).get(key)
            if points:
                steps, values = zip(*points, strict=True)
                ax.plot(steps, values, marker="o", ms=3, label=run.name)
                plotted = True
        if plotted:
            ax.set_xlabel("step")
            ax.set_ylabel(ylabel)
            ax.legend(fontsize=8)
            fig.tight_layout()
            fig.savefig(out / fname, dpi=110)
        else:
            # An earlier evaluate's figure in a reused --out would pass for these models'.
            (out / fname).unlink(missing_ok=True)
        plt.close(fig)


def plot_strata(strata_rows: list[dict[str, Any]], png: Path) -> None:
    """Fig. A3: each Table 1 metric (a row of panels) against the number of phases K, one column of panels per
    split, one colour per method; solid where the mixture's minimum phase fraction exceeds 10%, dashed where it
    does not (the crossed strata of `fig_a3_strata`)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    crossed = [r for r in strata_rows if r.get("phases") is not None and r.get("min_fraction") is not None]
    if not crossed:
        png.unlink(missing_ok=True)
        return
    splits = list(dict.fromkeys(r["split"] for r in crossed))
    methods = list(dict.fromkeys(r["method"] for r in crossed))
    fractions = sorted(dict.fromkeys(r["min_fraction"] for r in crossed), key=lambda f: f.startswith("<="))
    fig, axes = plt.subplots(
        len(TABLE1_COLUMNS),
        len(splits),
        figsize=(4.5 * len(splits), 2.2 * len(TABLE1_COLUMNS)),
        squeeze=False,
    )
    colours = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for col, split in enumerate(splits):
        for row, metric in enumerate(TABLE1_COLUMNS):
            ax = axes[row][col]
            for m, method in enumerate(methods):
                for fraction in fractions:
                    points = sorted(
                        (r["phases"], r[metric])
                        for r in crossed
                        if r["split"] == split and r["method"] == method and r["min_fraction"] == fraction
                    )
                    if points:
                        ks, values = zip(*points, strict=True)
                        ax.plot(
                            ks, values, marker="o", ms=3, color=colours[m % len(colours)],
                            linestyle="--" if fraction.startswith("<=") else "-",
                            label=f"{method}, min fraction {fraction}",
                        )  # fmt: skip
            ax.set_xticks(sorted({r["phases"] for r in crossed}))
            ax.set_ylim(0, 1)
            ax.set_ylabel(metric)
            if row == 0:
                ax.set_title(split)
            if row == len(TABLE1_COLUMNS) - 1:
                ax.set_xlabel("number of phases K")
    # Every panel's lines, once each: a method or fraction may be missing from the first split (e.g. only K = 1).
    entries = {}
    for ax in fig.axes:
        handles, labels = ax.get_legend_handles_labels()
        entries.update(zip(labels, handles, strict=True))
    labels = list(entries)
    fig.legend(list(entries.values()), labels, loc="lower center", fontsize=7, handlelength=4)
    fig.tight_layout(rect=(0.0, 0.012 * len(labels) + 0.03, 1.0, 1.0))
    fig.savefig(png, dpi=110)
    plt.close(fig)
