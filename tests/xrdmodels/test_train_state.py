"""TrainState: what a training checkpoint holds, written and read back without a training run."""

from __future__ import annotations

import random
from typing import Any

import numpy as np
import pytest
import torch

from xrdmodels.checkpoint import TrainState, load_checkpoint, save_checkpoint
from xrdmodels.config import TrainConfig, preset
from xrdmodels.distributed import Runtime
from xrdmodels.schedule import build_adamw, warmup_cosine_schedule

SINGLE = Runtime(torch.device("cpu"), rank=0, world_size=1, local_rank=0, owns_process_group=False)


class CountingLoader:
    """Stands in for the StatefulDataLoader: its position is the number of batches handed out."""

    def __init__(self) -> None:
        self.position = 0

    def state_dict(self) -> dict[str, Any]:
        return {"position": self.position}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.position = state_dict["position"]


def fresh_state(tmp_path, seed: int) -> TrainState:
    torch.manual_seed(seed)
    config = TrainConfig(train_store=str(tmp_path / "train.zarr"), out_dir=str(tmp_path / "run"), lr=3e-3)
    # Any module will do: TrainState saves and restores whatever state dict the model has.
    model = torch.nn.Sequential(torch.nn.Linear(8, 16), torch.nn.Dropout(0.5), torch.nn.Linear(16, 4))
    optimizer = build_adamw(
        model.parameters(), lr=config.lr, weight_decay=config.weight_decay, betas=config.betas
    )
    return TrainState(
        model=model,
        optimizer=optimizer,
        scheduler=warmup_cosine_schedule(optimizer, 2, 10),
        loader=CountingLoader(),
        config=config,
        model_config=preset("small"),
        data={"grid": {"n_bins": 64}, "wavelength_angstrom": 1.0, "train_store": config.train_store},
    )


def draws() -> tuple[float, float, list[float]]:
    """The next value of each global generator that the training loop and user code draw from."""
    return random.random(), float(np.random.random()), torch.rand(3).tolist()  # noqa: NPY002


def test_state_dict_written_and_loaded_restores_the_run(tmp_path):
    """Weights, AdamW moments, schedule, loader position, counters, metrics and RNG all come back."""
    state = fresh_state(tmp_path, seed=1)
    patterns = torch.rand(2, 8)
    for _ in range(3):
        state.optimizer.zero_grad()
        state.model(patterns).square().mean().backward()
        state.optimizer.step()
        state.scheduler.step()
        state.loader.position += 1
    state.step, state.epoch, state.best_val_micro_f1 = 3, 1, 0.25
    state.val_metrics = {"micro_f1": 0.2, "loss": 1.5}
    state.best_val_metrics = {"micro_f1": 0.25, "loss": 1.4}
    path = tmp_path / "last.pt"
    save_checkpoint(path, state.state_dict(SINGLE))
    expected_draws = draws()

    saved = load_checkpoint(path)
    TrainState.check_resumable(saved, path, state.config, state.model_config, world_size=1)
    resumed = fresh_state(tmp_path, seed=2)
    resumed.load_state_dict(saved, SINGLE)

    assert draws() == expected_draws
    for name, value in state.model.state_dict().items():
        torch.testing.assert_close(resumed.model.state_dict()[name], value, rtol=0, atol=0)
    moments = [s["exp_avg_sq"] for s in state.optimizer.state_dict()["state"].values()]
    resumed_moments = [s["exp_avg_sq"] for s in resumed.optimizer.state_dict()["state"].values()]
    assert len(moments) == len(resumed_moments) > 0
    assert all(torch.equal(a, b) for a, b in zip(moments, resumed_moments, strict=True))
    assert resumed.scheduler.get_last_lr() == state.scheduler.get_last_lr()
    assert resumed.loader.position == 3
    assert (resumed.step, resumed.epoch, resumed.best_val_micro_f1) == (3, 1, 0.25)
    assert (resumed.val_metrics, resumed.best_val_metrics) == (state.val_metrics, state.best_val_metrics)


def test_a_run_on_another_number_of_ranks_is_refused(tmp_path):
    state = fresh_state(tmp_path, seed=1)
    path = tmp_path / "last.pt"
    save_checkpoint(path, state.state_dict(SINGLE))
    with pytest.raises(ValueError, match=r"last\.pt was written by 1 rank\(s\), this run has 2"):
        TrainState.check_resumable(
            load_checkpoint(path), path, state.config, state.model_config, world_size=2
        )


def test_a_checkpoint_from_before_a_model_field_was_added_resumes(tmp_path):
    """Fields added to ModelConfig later (background_removal, background_half_width_deg, intensity_scale) default to the
    behaviour of the version that wrote the checkpoint, so its run continues; a real difference is refused."""
    state = fresh_state(tmp_path, seed=1)
    path = tmp_path / "last.pt"
    saved = state.state_dict(SINGLE)
    for added in ("background_removal", "background_half_width_deg", "intensity_scale"):
        del saved["model_config"][added]
    save_checkpoint(path, saved)
    TrainState.check_resumable(load_checkpoint(path), path, state.config, state.model_config, world_size=1)
    with pytest.raises(ValueError, match="background_removal: saved 'none', now 'snip'"):
        TrainState.check_resumable(
            load_checkpoint(path),
            path,
            state.config,
            preset("small", background_removal="snip"),
            world_size=1,
        )
