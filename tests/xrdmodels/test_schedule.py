"""Warmup + cosine learning-rate schedule and AdamW settings (A.6)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from xrdmodels.config import TrainConfig
from xrdmodels.schedule import build_adamw, lr_factor, warmup_cosine_schedule


def paper_adamw(params: list[torch.nn.Parameter]) -> torch.optim.AdamW:
    """AdamW with TrainConfig's defaults, the A.6 settings."""
    return build_adamw(
        params, **{name: TrainConfig.model_fields[name].default for name in ("lr", "weight_decay", "betas")}
    )


@pytest.mark.parametrize(
    ("step", "expected"),
    [
        (0, 1 / 4000),  # first step already moves the weights
        (1999, 0.5),  # half-way up the linear warmup
        (3999, 1.0),  # last warmup step at the full rate
        (4000, 1.0),  # cosine starts at its top
        (4000 + 498_000, 0.5),  # half-way through the cosine
        (4000 + 249_000, (1 + math.cos(math.pi / 4)) / 2),
        (1_000_000, 0.0),  # the paper's last step
        (1_500_000, 0.0),  # held at the floor afterwards
    ],
)
def test_paper_schedule_at_landmarks(step: int, expected: float) -> None:
    assert lr_factor(step, 4000, 1_000_000) == pytest.approx(expected, abs=1e-12)


def test_floor_ratio_lifts_the_cosine() -> None:
    assert lr_factor(502_000, 4000, 1_000_000, min_lr_ratio=0.1) == pytest.approx(0.55)
    assert lr_factor(2_000_000, 4000, 1_000_000, min_lr_ratio=0.1) == pytest.approx(0.1)


def test_lambda_lr_drives_adamw_with_paper_settings() -> None:
    weight = torch.nn.Parameter(torch.ones(3))
    optimizer = paper_adamw([weight])
    assert optimizer.defaults["lr"] == 1e-4 and optimizer.defaults["weight_decay"] == 1e-2
    warmup, total = 5, 25
    scheduler = warmup_cosine_schedule(optimizer, warmup, total)
    seen = []
    for _ in range(30):
        seen.append(optimizer.param_groups[0]["lr"])
        weight.grad = torch.ones(3)
        optimizer.step()
        scheduler.step()
    # Reference written out independently: linear ramp, then half a cosine period, then zero.
    steps = np.arange(30)
    ramp = (steps + 1) / warmup
    cosine = 0.5 * (1 + np.cos(np.pi * np.clip((steps - warmup) / (total - warmup), 0, 1)))
    expected = 1e-4 * np.where(steps < warmup, ramp, cosine)
    np.testing.assert_allclose(seen, expected, rtol=1e-12, atol=1e-18)
    assert np.all(np.diff(seen[:warmup]) > 0) and np.all(np.diff(seen[warmup : total + 1]) < 0)


def test_schedule_state_round_trips() -> None:
    """Resuming from optimizer + scheduler state dicts continues the same learning-rate sequence."""
    opt = paper_adamw([torch.nn.Parameter(torch.zeros(1))])
    sched = warmup_cosine_schedule(opt, 10, 100)
    for _ in range(37):
        opt.step()
        sched.step()
    fresh_opt = paper_adamw([torch.nn.Parameter(torch.zeros(1))])
    fresh = warmup_cosine_schedule(fresh_opt, 10, 100)
    fresh_opt.load_state_dict(opt.state_dict())
    fresh.load_state_dict(sched.state_dict())
    for optimizer, scheduler in ((opt, sched), (fresh_opt, fresh)):
        optimizer.step()
        scheduler.step()
    assert fresh.get_last_lr() == sched.get_last_lr()
    assert fresh.get_last_lr()[0] == pytest.approx(1e-4 * lr_factor(38, 10, 100))


@pytest.mark.parametrize(
    ("warmup", "total", "floor", "fragment"),
    [
        (10, 10, 0.0, "warmup_steps < total_steps"),
        (-1, 10, 0.0, "0 <= warmup_steps"),
        (1, 10, 1.5, "min_lr_ratio"),
    ],
)
def test_invalid_schedule_is_rejected(warmup: int, total: int, floor: float, fragment: str) -> None:
    opt = paper_adamw([torch.nn.Parameter(torch.zeros(1))])
    with pytest.raises(ValueError, match=fragment):
        warmup_cosine_schedule(opt, warmup, total, floor)
