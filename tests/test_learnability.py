"""Learnability guard: every model family of the `cpu` preset memorises a fixed set of real mixtures.

256 A.1 mixtures (K* = 1..5) written by xrdsynth from random crystals of 40 space groups; each family (CNN
presence, Transformer presence, Transformer + phase clustering) trains on exactly those 256 with the
library's loss and AdamW, then is scored on them with the library's read-out: micro-F1 (best threshold or
gate, A.7) >= 0.95, and top-1 >= 0.95 on the single-phase ones. A model that sits at the label prior (what
the paper's read-outs do at this scale: `pipelines/bench_memorise.py`, docs/benchmarks.md) scores about 0.1
here, so this fails loudly when a change to models, losses or training stops them learning. The data and the
training loop are the memorisation benchmark's, so the guard and the published ablation measure one thing.
"""

from __future__ import annotations

import pytest

from pipeline_scripts import load_script

STEPS = 150
FAMILIES = {
    "cnn-presence": {"encoder": "cnn", "head": "presence"},
    "transformer-presence": {"encoder": "transformer", "head": "presence"},
    "phase-cluster": {"encoder": "transformer", "head": "phase_cluster"},
}


@pytest.fixture(scope="module")
def bench():
    return load_script("bench_memorise", "pipelines/bench_memorise.py", register=True)


@pytest.fixture(scope="module")
def mixtures(bench, tmp_path_factory):
    patterns = bench.memorisation_set(tmp_path_factory.mktemp("learnability"), single_phase=False)
    assert (patterns["n_phases"].numpy() == 1).sum() >= 30, "the A.1 draw should give about 20% single-phase"
    return patterns


@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_cpu_preset_memorises_a_fixed_set(family, bench, mixtures):
    result = bench.memorise(mixtures, "cpu", FAMILIES[family], [STEPS])[STEPS]
    assert result["micro_f1"] >= 0.95, (
        f"{family}: train micro-F1 {result['micro_f1']:.3f} after {STEPS} steps"
    )
    assert result["top1"] >= 0.95, (
        f"{family}: single-phase train top-1 {result['top1']:.3f} after {STEPS} steps"
    )
