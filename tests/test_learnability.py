"""Learnability guard: every model family of the `cpu` preset memorises a fixed set of real mixtures.

256 A.1 mixtures (K* = 1..5) written by xrdsynth from random crystals of 40 space groups; each family (CNN
presence, Transformer presence, Transformer + phase clustering) trains on exactly those 256 with the
library's loss and AdamW, then is scored on them with the library's read-out: micro-F1 (best threshold or
gate, A.7) >= 0.95, and top-1 >= 0.95 on the single-phase ones. A model that sits at the label prior (what
the paper's read-outs do at this scale, docs/benchmarks.md) scores about 0.1 here, so this fails loudly when a
change to models, losses or training stops them learning.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from xrdmodels.config import preset
from xrdmodels.data import MixtureStore, to_batch
from xrdmodels.evaluate import set_scores
from xrdmodels.loss import model_loss
from xrdmodels.metrics import evaluate_presence, evaluate_slot_union
from xrdmodels.models.model import SpaceGroupModel

N_BINS = 1024
N_MIXTURES = 256
STEPS = 150
BATCH = 64
FAMILIES = {
    "cnn-presence": {"encoder": "cnn", "head": "presence"},
    "transformer-presence": {"encoder": "transformer", "head": "presence"},
    "phase-cluster": {"encoder": "transformer", "head": "phase_cluster"},
}


@pytest.fixture(scope="module")
def mixtures(tmp_path_factory) -> dict[str, torch.Tensor]:
    from xrdsynth.bank_build import build_bank
    from xrdsynth.config import BankConfig, GenerateConfig, GridConfig
    from xrdsynth.generate import generate_all

    tmp = tmp_path_factory.mktemp("learnability")
    bank = build_bank(
        ["random:1:1-40"],
        str(tmp / "bank.zarr"),
        BankConfig(split_fractions=(0.9, 0.05, 0.05), chunk_size=16, grid=GridConfig(n_bins=N_BINS)),
        seed=0,
        workers=0,
    )
    generate_all(
        bank.url, str(tmp / "mix"), N_MIXTURES, GenerateConfig(shard_size=N_MIXTURES, n_eval=64),
        splits=("train",), workers=0,
    )  # fmt: skip
    store = MixtureStore(str(tmp / "mix" / "train.zarr"))
    return to_batch(store.read_rows(0, store.n_samples), N_BINS)


@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_cpu_preset_memorises_a_fixed_set(family, mixtures):
    torch.manual_seed(0)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny batches gain nothing from threads; spin-waiting ones hurt a busy machine
    try:
        config = preset("cpu", n_bins=N_BINS, dropout=0.0, cnn_dropout=0.0, **FAMILIES[family])
        model = SpaceGroupModel(config)
        optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=1e-2)
        generator = torch.Generator().manual_seed(0)
        for _ in range(STEPS):
            idx = torch.randint(0, N_MIXTURES, (BATCH,), generator=generator)
            loss = model_loss(model(mixtures["pattern"][idx], mixtures["mask"][idx]), mixtures["labels"][idx])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            optimizer.step()
        model.eval()
        with torch.no_grad():
            out = model(mixtures["pattern"], mixtures["mask"])
    finally:
        torch.set_num_threads(threads)

    targets = mixtures["targets"].numpy() > 0.5
    if out.slot_logits is not None:
        result = evaluate_slot_union(torch.softmax(out.slot_logits.float(), -1).numpy(), targets)
    else:
        result = evaluate_presence(out.set_probs.numpy(), targets)
    single = mixtures["n_phases"].numpy() == 1
    top1 = targets[single][np.arange(single.sum()), set_scores(out)[single].argmax(1)].mean()
    assert single.sum() >= 30, "the A.1 phase-count draw should give about 20% single-phase mixtures"
    assert result.sweep.best.f1 >= 0.95, (
        f"{family}: train micro-F1 {result.sweep.best.f1:.3f} after {STEPS} steps"
    )
    assert top1 >= 0.95, f"{family}: single-phase train top-1 {top1:.3f} after {STEPS} steps"
