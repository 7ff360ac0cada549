"""`xrdmodels predict`: a checkpoint and measured pattern files -> ranked space groups (and active phase slots)."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .evaluate import load_model
from .measured import GriddedPattern, MeasuredPattern, read_pattern, to_model_grid
from .spacegroups import crystal_system, symbol

#: Cu Kα (weighted mean), the wavelength of the paper's training data (A.1); used when a checkpoint predates
#: recording its training wavelength.
DEFAULT_MODEL_WAVELENGTH_ANGSTROM = 1.54184


@dataclass
class RankedGroup:
    spacegroup: int
    symbol: str
    crystal_system: str
    probability: float


@dataclass
class ActiveSlot:
    slot: int
    gate: float
    spacegroup: int
    symbol: str
    probability: float


@dataclass
class Prediction:
    file: str
    ranked: list[RankedGroup]
    slots: list[ActiveSlot] | None
    predicted_set: list[int]
    window_deg: tuple[float, float]
    wavelength_angstrom: float
    warnings: list[str] = field(default_factory=list)


def model_grid(state: dict[str, Any]) -> tuple[float, float, int, float]:
    """(2θ min, 2θ max, n_bins, wavelength Å) the checkpoint's model was trained on."""
    mc = state["model_config"]
    data = state.get("data", {})
    return (
        mc["two_theta_min_deg"],
        mc["two_theta_max_deg"],
        mc["n_bins"],
        float(data.get("wavelength_angstrom", DEFAULT_MODEL_WAVELENGTH_ANGSTROM)),
    )


def operating_point(state: dict[str, Any], model_head: str) -> float:
    """Threshold (presence) or gate (phase clustering) chosen on validation during training, else 0.5."""
    val = state.get("val_metrics") or {}
    key = "best_gate" if model_head == "phase_cluster" else "best_threshold"
    return float(val.get(key, 0.5))


@torch.no_grad()
def predict_one(
    model,
    state: dict[str, Any],
    pattern: MeasuredPattern,
    *,
    wavelength_angstrom: float | None,
    top_k: int = 10,
    threshold: float | None = None,
) -> tuple[Prediction, GriddedPattern]:
    lo, hi, n_bins, model_wavelength = model_grid(state)
    gridded = to_model_grid(
        pattern,
        wavelength_angstrom=wavelength_angstrom,
        model_wavelength_angstrom=model_wavelength,
        two_theta_min_deg=lo,
        two_theta_max_deg=hi,
        n_bins=n_bins,
    )
    x = torch.from_numpy(gridded.pattern[None, :].astype(np.float32))
    mask = torch.zeros(1, n_bins, dtype=torch.bool)
    mask[0, gridded.window_bins[0] : gridded.window_bins[1]] = True
    out = model(x, mask)
    probs = out.set_probs[0].float().numpy()
    order = np.argsort(-probs, kind="stable")[:top_k]
    ranked = [
        RankedGroup(int(c) + 1, symbol(int(c) + 1), crystal_system(int(c) + 1), float(probs[c]))
        for c in order
    ]
    op = threshold if threshold is not None else operating_point(state, model.config.head)
    slots = None
    if out.slot_logits is not None:
        slot_probs = torch.softmax(out.slot_logits[0].float(), dim=-1).numpy()
        gates = out.slot_gates[0].float().numpy()
        slots = []
        for k in np.argsort(-gates, kind="stable"):
            c = int(slot_probs[k, :230].argmax())
            if gates[k] > op:
                slots.append(
                    ActiveSlot(int(k), float(gates[k]), c + 1, symbol(c + 1), float(slot_probs[k, c]))
                )
        predicted = sorted({s.spacegroup for s in slots})
    else:
        predicted = sorted(int(c) + 1 for c in np.flatnonzero(probs >= op))
    width = (hi - lo) / n_bins
    window = (lo + gridded.window_bins[0] * width, lo + gridded.window_bins[1] * width)
    used = wavelength_angstrom or pattern.wavelength_angstrom
    return Prediction(
        str(pattern.source), ranked, slots, predicted, window, float(used), list(gridded.warnings)
    ), gridded


def collect_files(paths: list[str]) -> list[Path]:
    """Files named directly, plus every file inside named folders (sorted), skipping hidden files."""
    files: list[Path] = []
    for p in map(Path, paths):
        if p.is_dir():
            files += sorted(f for f in p.rglob("*") if f.is_file() and not f.name.startswith("."))
        else:
            files.append(p)
    return files


def format_prediction(pred: Prediction) -> str:
    lines = [
        f"{pred.file}  (λ = {pred.wavelength_angstrom:.5f} Å, window {pred.window_deg[0]:.1f}-"
        f"{pred.window_deg[1]:.1f}° on the model's grid)"
    ]
    for w in pred.warnings:
        lines.append(f"  warning: {w}")
    lines.append(f"  predicted set: {', '.join(f'{s} ({symbol(s)})' for s in pred.predicted_set) or 'none'}")
    if pred.slots is not None:
        for s in pred.slots:
            lines.append(
                f"  slot {s.slot}: gate {s.gate:.3f} -> SG {s.spacegroup} {s.symbol} (p {s.probability:.3f})"
            )
    lines.append("  rank  SG   symbol      system        probability")
    for i, r in enumerate(pred.ranked, 1):
        lines.append(
            f"  {i:4d}  {r.spacegroup:3d}  {r.symbol:10s}  {r.crystal_system:12s}  {r.probability:.4f}"
        )
    return "\n".join(lines)


def plot_prediction(pred: Prediction, gridded: GriddedPattern, state: dict[str, Any], png: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    lo, hi, n_bins, _ = model_grid(state)
    centers = lo + (hi - lo) / n_bins * (np.arange(n_bins) + 0.5)
    fig, (ax, bx) = plt.subplots(1, 2, figsize=(12, 4), gridspec_kw={"width_ratios": [3, 1.2]})
    ax.plot(centers, gridded.pattern, color="k", lw=0.8)
    ax.axvspan(lo, pred.window_deg[0], color="0.9", lw=0)
    ax.axvspan(pred.window_deg[1], hi, color="0.9", lw=0)
    ax.set_xlabel("2θ (degrees, model wavelength)")
    ax.set_ylabel("normalised intensity")
    ax.set_title(Path(pred.file).name, fontsize=9)
    top = pred.ranked[:10][::-1]
    bx.barh(
        [f"{r.spacegroup} {r.symbol}" for r in top],
        [r.probability for r in top],
        color=["tab:red" if r.spacegroup in pred.predicted_set else "tab:gray" for r in top],
    )
    bx.set_xlim(0, 1)
    bx.set_xlabel("probability (red: predicted set)")
    fig.tight_layout()
    fig.savefig(png, dpi=110)
    plt.close(fig)


def predict_files(
    checkpoint: str,
    paths: list[str],
    *,
    wavelength_angstrom: float | None = None,
    top_k: int = 10,
    threshold: float | None = None,
    plot_dir: str | None = None,
    file_format: str | None = None,
) -> tuple[list[Prediction], list[tuple[str, str]]]:
    """Predict every file; a file that cannot be read or converted is reported in `failures`, the rest go on."""
    model, state = load_model(checkpoint)
    predictions: list[Prediction] = []
    failures: list[tuple[str, str]] = []
    for f in collect_files(paths):
        try:
            pattern = read_pattern(f, format=file_format)
            pred, gridded = predict_one(
                model,
                state,
                pattern,
                wavelength_angstrom=wavelength_angstrom,
                top_k=top_k,
                threshold=threshold,
            )
        except (ValueError, OSError) as exc:
            failures.append((str(f), str(exc)))
            continue
        predictions.append(pred)
        if plot_dir:
            Path(plot_dir).mkdir(parents=True, exist_ok=True)
            plot_prediction(pred, gridded, state, Path(plot_dir) / f"{f.stem}.png")
    return predictions, failures


def to_json(predictions: list[Prediction], failures: list[tuple[str, str]]) -> str:
    return json.dumps(
        {
            "predictions": [asdict(p) for p in predictions],
            "failures": [{"file": f, "error": e} for f, e in failures],
        },
        indent=2,
    )
