"""The measured pipeline's own logic (`pipelines/measured/run.py`): what `--without EFFECT` turns off and how the
speed probe sizes the learning-rate schedule. The stages themselves are the real CLI commands, tested elsewhere."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from pipeline_scripts import load_script
from xrdsynth.config import recipe_preset

# Loaded under its own name: pipelines/ holds more than one run.py.
run = load_script("measured_run", "pipelines/measured/run.py")
Stages = run.Stages


@pytest.mark.parametrize("effect", sorted(run.LAB_EFFECTS))
def test_every_ablation_effect_is_a_valid_change_of_the_lab_recipe(effect):
    default = recipe_preset("lab")
    without = recipe_preset("lab", **run.recipe_overrides([effect]))
    changed = {
        name for name, value in without.lab.model_dump().items() if value != getattr(default.lab, name)
    }
    assert changed, f"--without {effect} changes nothing"
    assert changed <= set(run.LAB_EFFECTS[effect]["lab"])


def test_recipe_fields_merge_into_the_lab_object_field_by_field():
    merged = run.recipe_overrides(
        ["texture"], {"microstrain": [0, 0.01], "lab": {"lattice_strain": [0, 0.02]}}
    )
    assert merged == {
        "synthetic_weight": run.SYNTHETIC_WEIGHT,
        "microstrain": [0, 0.01],
        "lab": {"march_dollase_probability": 0.0, "lattice_strain": [0, 0.02]},
    }


@pytest.mark.parametrize("recipe", ["lab", "paper"])
def test_the_pipeline_draws_random_crystals_at_its_weight_unless_told_otherwise(recipe):
    # The measured pipeline's bank holds 20 random-ionic crystals per group, drawn at weight 0.1 so that they keep
    # the share of the draws random:2 had; a bank of random:2 is drawn uniformly again with synthetic_weight 1.
    assert recipe_preset(recipe, **run.recipe_overrides([])).synthetic_weight == run.SYNTHETIC_WEIGHT < 1
    assert recipe_preset(recipe, **run.recipe_overrides([], {"synthetic_weight": 1})).synthetic_weight == 1


def _stand_in_trainer(tmp_path: Path, samples_per_s: dict[int, float]) -> Path:
    """An `xrdmodels` that, for `train --config FILE`, writes the metrics.csv a real run would, with fixed rates
    divided by 1 + the config's seed (so that ensemble members train at different speeds)."""
    script = tmp_path / "xrdmodels"
    script.write_text(
        f"#!{sys.executable}\n"
        "import json, sys, pathlib\n"
        "config = json.loads(pathlib.Path(sys.argv[3]).read_text())\n"
        "out = pathlib.Path(config['out_dir']); out.mkdir(parents=True)\n"
        f"rows = ''.join(f'{{s}},train,samples_per_s,{{r / (1 + config[\"seed\"])!r}}\\n' for s, r in {samples_per_s!r}.items())\n"
        "(out / 'metrics.csv').write_text('step,split,name,value\\n' + rows)\n"
    )
    script.chmod(0o755)
    return script


def test_speed_probe_sizes_the_schedule_from_the_timed_steps_and_is_reused(tmp_path):
    # Steps up to SPEED_PROBE_SKIP are start-up and not timed; the median of the rest is the speed.
    rates = {50: 10.0, 100: 20.0, 150: 300.0, 200: 320.0, 250: 310.0, 300: 1000.0}
    trainer = _stand_in_trainer(tmp_path, rates)
    out = tmp_path / "run"
    (out / "configs").mkdir(parents=True)
    config = {
        **run.MODEL,
        **run.TRAIN,
        "seed": 0,
        "train_store": "t.zarr",
        "val_store": "v.zarr",
        "out_dir": "x",
    }

    speed = run.steps_per_minute(Stages(out, "test"), out, [config], str(trainer))

    assert speed == pytest.approx(60.0 * 315.0 / config["batch_size"])
    probe = json.loads((out / "configs" / "speed_probe_0.json").read_text())
    assert probe["total_steps"] == run.SPEED_PROBE_STEPS and probe["val_store"] is None
    assert not (out / "models" / "speed_probe_0").exists(), "the probe's checkpoints are removed"
    # A rerun (e.g. resuming the training) keeps the measured speed, so the schedule does not change under it.
    trainer.write_text("#!/bin/sh\nexit 3\n")
    assert run.steps_per_minute(Stages(out, "test"), out, [config], str(trainer)) == speed


def test_ensemble_members_are_probed_side_by_side_and_the_slowest_sets_the_schedule(tmp_path):
    rates = {150: 300.0, 200: 320.0, 250: 310.0}
    trainer = _stand_in_trainer(tmp_path, rates)
    out = tmp_path / "run"
    (out / "configs").mkdir(parents=True)
    base = {**run.MODEL, **run.TRAIN, "train_store": "t.zarr", "val_store": "v.zarr"}
    members = [{**base, "seed": k, "out_dir": f"m{k}"} for k in range(2)]

    speed = run.steps_per_minute(Stages(out, "test"), out, members, str(trainer))

    assert speed == pytest.approx(60.0 * 310.0 / 2 / base["batch_size"]), "member 1 runs at half the rate"
    assert (out / "logs" / "speed_probe_1.log").exists(), "the second member's output goes to its log"
    # A one-model speed does not size an ensemble's schedule: a different number of members probes again.
    assert run.steps_per_minute(Stages(out, "test"), out, members[:1], str(trainer)) == pytest.approx(
        60.0 * 310.0 / base["batch_size"]
    )


def test_a_failing_member_stops_the_stage_and_names_its_log(tmp_path):
    out = tmp_path / "run"
    stages = Stages(out, "test")
    with pytest.raises(SystemExit, match="see .*m1.log"):
        stages.run_together("train: two", [["true"], ["false"]], logs=[None, out / "logs" / "m1.log"])
    assert not list((out / ".stages").glob("train.*")), "a failed stage is not marked done"


def test_a_member_that_fails_at_once_stops_the_others(tmp_path):
    out = tmp_path / "run"
    late = tmp_path / "late"
    # The second command would write `late` after 30 s: stopped when the first fails, it never does.
    sleeper = [sys.executable, "-c", f"import time; time.sleep(30); open({str(late)!r}, 'w')"]
    with pytest.raises(SystemExit, match="exit 1"):
        Stages(out, "test").run_together("train: two", [["false"], sleeper])
    assert not late.exists()


def test_the_default_ablation_removes_every_lab_effect_once():
    ablation = load_script("measured_ablation", "pipelines/measured/ablation.py")
    removed = [v.removeprefix("lab-no-") for v in ablation.DEFAULT_VARIANTS if v.startswith("lab-no-")]
    assert sorted(removed) == sorted(run.LAB_EFFECTS)
    assert ablation.DEFAULT_VARIANTS[:2] == ["lab", "paper"]
    for variant in ablation.DEFAULT_VARIANTS[2:]:
        effect = variant.removeprefix("lab-no-")
        assert ablation.variant_arguments(variant) == ["--recipe", "lab", "--without", effect]


def test_the_ablation_table_pairs_every_variant_with_the_first(tmp_path: Path, monkeypatch) -> None:
    ablation = load_script("measured_ablation", "pipelines/measured/ablation.py")
    labels = tmp_path / "shared" / "experimental" / "rruff" / "labels.csv"
    labels.parent.mkdir(parents=True)
    labels.write_text("file,group\n1.xy,1\n2.xy,1\n3.xy,2\n")
    monkeypatch.setattr(ablation, "SHARED", tmp_path / "shared")

    def score_measured(argv: list[str], check: bool) -> None:
        # What run.py leaves for a variant: lab finds files 1 and 2 first, paper only file 1.
        assert argv[argv.index("--seed") + 1] == "3"
        assert argv[argv.index("--pairs") + 1] == "0"  # the ablation's table does not read the RRUFF pairs
        out = Path(argv[argv.index("--out") + 1]) / "measured"
        first = {"1.xy": 12, "2.xy": 14, "3.xy": 1} if "lab" in argv else {"1.xy": 12, "2.xy": 1, "3.xy": 1}
        truth = {"1.xy": 12, "2.xy": 14, "3.xy": 2}
        files = [
            {"set": "rruff", "file": f"rruff/{name}", "phases": [[truth[name]]], "top10": [g, *range(3, 12)]}
            for name, g in first.items()
        ]
        sets = ("rruff", "xrd_autoanalyzer", "nist_duplex_steel", "all")
        summary = [{"set": s, "hit@1": 0.5, "hit@5": 0.5, "recall@K*": 0.5} for s in sets]
        out.mkdir(parents=True)
        (out / "measured.json").write_text(
            json.dumps({"summary": summary, "library_summary": summary, "files": files})
        )

    monkeypatch.setattr(ablation.subprocess, "run", score_measured)
    ablation.main(
        [
            "--bank",
            "bank.zarr",
            "--variants",
            "lab",
            "paper",
            "--seed",
            "3",
            "--out",
            str(tmp_path / "ablation"),
        ]
    )
    scores, paired = (tmp_path / "ablation" / "ablation.md").read_text().split("file by file against lab")
    assert "| paper | 0.500 | 0.500 | 0.500 | 0.500 | 0.500 |" in scores
    rows = {line.split(" | ")[0]: line.split(" | ") for line in paired.splitlines() if line.startswith("| ")}
    assert rows["| lab"][1:3] == ["0.667 / 0.667 / 0.667 / 0.667", ""]
    # Paired on RRUFF: paper loses file 2 at hit@1 and at hit@5, and wins none.
    assert rows["| paper"][1:3] == ["0.333 / 0.333 / 0.333 / 0.333", "+0 −1 (1) / +0 −1 (1)"]
    assert all(len(cells) == len(rows["| model"]) for cells in rows.values())


def test_a_stage_reruns_when_its_config_or_an_earlier_stage_changed(tmp_path):
    """A stage's identity holds the contents of the config it names (the recipes rewrite it per run), and once a
    stage runs, every later one runs too; an always-run stage counts as a change only where its stores changed."""
    out, log = tmp_path / "run", tmp_path / "ran.txt"
    config, store = tmp_path / "train.json", tmp_path / "bank.zarr"
    store.mkdir()
    (store / "zarr.json").write_text('{"attributes": {"fingerprint": "a"}}')

    def record(name: str) -> list[str]:
        return [sys.executable, "-c", f"open({str(log)!r}, 'a').write({name!r} + ' ')"]

    def pipeline(minutes: float) -> str:
        log.write_text("")
        config.write_text(json.dumps({"max_minutes": minutes}))
        stages = Stages(out, "test")
        stages.run("bank: b", record("bank"), outputs=[store], always=True)
        stages.run("train: t", [*record("train"), "--config", str(config)])
        stages.run("score: s", record("score"))
        return log.read_text().split()

    assert pipeline(3.0) == ["bank", "train", "score"]
    assert pipeline(3.0) == ["bank"], "nothing changed: the always-run stage runs, the others are reused"
    assert pipeline(10.0) == ["bank", "train", "score"], "another config retrains, and the scores follow it"
    (store / "zarr.json").write_text('{"attributes": {"fingerprint": "b"}}')
    stages = Stages(out, "test")
    rewrite = [sys.executable, "-c", f"open({str(store / 'zarr.json')!r}, 'w').write('rebuilt')"]
    log.write_text("")
    stages.run("bank: b", rewrite, outputs=[store], always=True)
    stages.run("train: t", [*record("train"), "--config", str(config)])
    assert log.read_text().split() == ["train"], "a bank that changed under the run retrains"


def test_a_training_of_another_config_restarts_and_an_interrupted_one_resumes(tmp_path):
    """The pipelines add --resume only where the run folder holds a run of the same config: another budget moves
    the old run aside (resuming it would continue it under a changed schedule)."""
    from stages import resume_or_restart

    run_dir = tmp_path / "models" / "cnn"
    config = {"out_dir": str(run_dir), "total_steps": 1000, "max_minutes": 3.0}
    path = tmp_path / "cnn.json"
    path.write_text(json.dumps(config))
    assert resume_or_restart(path) == []  # nothing trained yet
    run_dir.mkdir(parents=True)
    (run_dir / "last.pt").write_bytes(b"x")
    (run_dir / "config.json").write_text(json.dumps({**config, "lr": 0.001, "seed": 0}))  # as train saves it
    assert resume_or_restart(path) == ["--resume"]  # an interrupted run of this config goes on
    path.write_text(json.dumps({**config, "total_steps": 3000, "max_minutes": 10.0}))
    assert resume_or_restart(path) == []
    assert not run_dir.exists() and (tmp_path / "models" / "cnn.replaced" / "last.pt").exists()
