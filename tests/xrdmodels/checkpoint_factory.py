"""Small untrained checkpoints with the fields `xrdmodels train` saves, for the tests that read checkpoints."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from xrdmodels.checkpoint import save_checkpoint
from xrdmodels.config import preset
from xrdmodels.models.model import SpaceGroupModel

CU_KALPHA_ANGSTROM = 1.54184


def make_checkpoint(
    path: Path,
    *,
    head: str = "presence",
    n_bins: int = 256,
    seed: int = 0,
    step: int = 1,
    wavelength_angstrom: float = CU_KALPHA_ANGSTROM,
    recipe: dict[str, Any] | None = None,
    best_threshold: float | None = None,
    label_prior: list[float] | None = None,
) -> Path:
    """Write a `small` model with narrow layers (weights drawn from `seed`) to `path`; return `path`."""
    torch.manual_seed(seed)
    config = preset("small", head=head, n_bins=n_bins, cnn_channels=[8, 8, 16, 16], d_model=32, ffn_dim=64)
    data: dict[str, Any] = {"wavelength_angstrom": wavelength_angstrom}
    if recipe is not None:
        data["recipe"] = recipe
    if label_prior is not None:
        data["label_prior"] = label_prior
    path.parent.mkdir(parents=True, exist_ok=True)
    save_checkpoint(
        path,
        {
            "model": SpaceGroupModel(config).state_dict(),
            "model_config": config.model_dump(mode="json"),
            "step": step,
            "data": data,
            "val_metrics": {} if best_threshold is None else {"best_threshold": best_threshold},
        },
    )
    return path
