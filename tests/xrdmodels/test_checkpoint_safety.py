"""Files handed to xrdmodels are untrusted (docs/security.md): a checkpoint never runs code when loaded, by the
load function or by any command, incomplete checkpoints get messages naming the file and the entry, format-1
checkpoints are refused with the way to convert them, and credentials in storage_options never reach out_dir
or the logs."""

from __future__ import annotations

import json
import logging
import os
import random
import socket
from pathlib import Path

import numpy as np
import pytest
import torch
from checkpoint_factory import make_checkpoint
from click.testing import CliRunner
from store_factory import StoreSpec, write_store

from xrdmodels.checkpoint import (
    CHECKPOINT_FORMAT,
    CHECKPOINT_FORMAT_VERSION,
    CheckpointError,
    load_checkpoint,
    rng_state,
    save_checkpoint,
    set_rng_state,
    upgrade_checkpoint,
)
from xrdmodels.checkpoint import main as checkpoint_main
from xrdmodels.cli import main as cli_main
from xrdmodels.config import TrainConfig, preset, redact_log_record, redact_storage_options, redact_url
from xrdmodels.data import MixtureStore
from xrdmodels.models.model import SpaceGroupModel
from xrdmodels.predict import predict_files
from xrdmodels.train import train

N_BINS = 64
TINY_MODEL = {
    "n_bins": N_BINS,
    "cnn_channels": [8, 8, 8, 8],
    "d_model": 16,
    "n_heads": 2,
    "ffn_dim": 32,
    "n_layers": 1,
    "n_slot_layers": 1,
}


class Payload:
    """Pickles to a call of os.mkdir(marker): unpickling it fully creates `marker`, the sign that code ran."""

    def __init__(self, marker: Path):
        self.marker = str(marker)

    def __reduce__(self):
        return (os.mkdir, (self.marker,))


def hostile_checkpoint(path: Path, marker: Path) -> Path:
    """A file shaped like a current checkpoint, with the payload in one entry."""
    model_config = preset("small", **TINY_MODEL)
    torch.save(
        {
            "format": CHECKPOINT_FORMAT,
            "format_version": CHECKPOINT_FORMAT_VERSION,
            "model": SpaceGroupModel(model_config).state_dict(),
            "model_config": model_config.model_dump_json(),
            "val_metrics": Payload(marker),
        },
        path,
    )
    return path


def test_the_payload_runs_code_under_full_unpickling(tmp_path):
    """The control: what the refusals below prevent is real."""
    marker = tmp_path / "ran"
    torch.load(hostile_checkpoint(tmp_path / "evil.pt", marker), weights_only=False)
    assert marker.exists()


@pytest.mark.parametrize("shape", ["checkpoint-shaped", "bare object", "format-1 shaped with numpy arrays"])
def test_load_checkpoint_refuses_code_and_runs_none(tmp_path, shape):
    marker = tmp_path / "ran"
    path = tmp_path / "evil.pt"
    if shape == "checkpoint-shaped":
        hostile_checkpoint(path, marker)
    elif shape == "bare object":
        torch.save(Payload(marker), path)
    else:  # NumPy arrays are allowed when probing for a format-1 file: the payload must still be refused
        numpy_state = np.random.get_state()  # noqa: NPY002 - the legacy global generator, as format 1 saved it
        torch.save({"format_version": 1, "rng": [{"numpy": numpy_state}], "x": Payload(marker)}, path)
    with pytest.raises(CheckpointError, match=r"refusing to load .*evil\.pt.*mkdir"):
        load_checkpoint(path)
    with pytest.raises(CheckpointError, match=r"refusing to load .*evil\.pt"):
        upgrade_checkpoint(path, tmp_path / "new.pt")
    assert not marker.exists()
    assert not (tmp_path / "new.pt").exists()


@pytest.fixture(scope="module")
def store_url(tmp_path_factory) -> str:
    """A 64-bin mixture store written from the format spec, as a file:// URL (which takes storage_options)."""
    path = tmp_path_factory.mktemp("store") / "train.zarr"
    write_store(str(path), StoreSpec(n_samples=64, n_bins=N_BINS, shard_size=32, chunk_rows=16))
    return path.as_uri()


def train_config(store_url: str, out_dir: Path, **fields) -> TrainConfig:
    base = {
        "train_store": store_url,
        "out_dir": str(out_dir),
        "model_preset": "small",
        "model_overrides": TINY_MODEL,
        "batch_size": 16,
        "warmup_steps": 1,
        "total_steps": 10,
        "max_steps": 2,
        "checkpoint_every": 1,
        "num_workers": 0,
        "device": "cpu",
        "tensorboard": False,
    }
    return TrainConfig(**{**base, **fields})


def command_line(command: str, checkpoint: Path, tmp_path: Path, store_url: str) -> list[str]:
    """Arguments of `command` reading `checkpoint`, with real inputs beside it."""
    if command == "predict":
        scan = tmp_path / "scan.xy"
        scan.write_text("".join(f"{5 + 0.5 * i} {1 + (i % 7)}\n" for i in range(200)))
        return ["predict", str(checkpoint), str(scan)]
    if command == "evaluate":
        return ["evaluate", str(checkpoint), "--store", f"test={store_url}", "--out", str(tmp_path / "eval")]
    if command == "score-measured":
        labels = tmp_path / "labels.csv"
        labels.write_text(
            "set,file,spacegroups,spacegroups_accept,wavelength_angstrom\nmine,scan.xy,225,,1.54\n"
        )
        (tmp_path / "scan.xy").write_text("".join(f"{5 + 0.5 * i} {1 + (i % 7)}\n" for i in range(200)))
        return ["score-measured", str(checkpoint), "--labels", str(labels), "--out", str(tmp_path / "scored")]
    # train --resume: the checkpoint is the run's last.pt
    out_dir = checkpoint.parent
    config_file = tmp_path / "config.json"
    config_file.write_text(train_config(store_url, out_dir).model_dump_json())
    return ["train", "--config", str(config_file), "--resume"]


COMMANDS = ["predict", "evaluate", "score-measured", "train --resume"]


@pytest.mark.parametrize("command", COMMANDS)
def test_every_command_refuses_a_hostile_checkpoint_and_runs_no_code(tmp_path, store_url, command):
    marker = tmp_path / "ran"
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    checkpoint = hostile_checkpoint(run_dir / "last.pt", marker)
    result = CliRunner().invoke(cli_main, command_line(command, checkpoint, tmp_path, store_url))
    assert result.exit_code == 1, result.output
    assert isinstance(result.exception, SystemExit), result.exception  # a message, not a traceback
    assert "refusing to load" in result.output and str(checkpoint) in result.output
    assert not marker.exists()


def test_checkpoint_without_model_config_names_the_file_and_entry(tmp_path, store_url):
    path = tmp_path / "partial.pt"
    save_checkpoint(path, {"model": SpaceGroupModel(preset("small", **TINY_MODEL)).state_dict(), "step": 3})
    with pytest.raises(CheckpointError, match=r"partial\.pt lacks the entry 'model_config'"):
        load_checkpoint(path)
    for command in ("predict", "evaluate"):
        result = CliRunner().invoke(cli_main, command_line(command, path, tmp_path, store_url))
        assert result.exit_code == 1 and isinstance(result.exception, SystemExit), result.output
        assert f"{path} lacks the entry 'model_config'" in result.output


def test_unreadable_checkpoints_say_what_is_wrong(tmp_path):
    """An empty file, a text file, a cut-short checkpoint and a CUDA device that is not there each get a
    message that names the file and the cause."""
    good = make_checkpoint(tmp_path / "good.pt", head="presence")
    (tmp_path / "empty.pt").write_bytes(b"")
    (tmp_path / "notes.pt").write_text("hello world\n")
    (tmp_path / "cut.pt").write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    with pytest.raises(CheckpointError, match=r"empty\.pt is empty \(0 bytes\), not an xrdmodels checkpoint"):
        load_checkpoint(tmp_path / "empty.pt")
    with pytest.raises(
        CheckpointError, match=r"cut\.pt is not a readable xrdmodels checkpoint \(\w+: .*\): a file cut short"
    ):
        load_checkpoint(tmp_path / "cut.pt")
    # A scan or a manifest named where the checkpoint goes (arguments swapped) is told apart from a hostile file.
    (tmp_path / "scan.xy").write_text("# Cu\n10.00 120\n10.02 130\n")
    (tmp_path / "pair.json").write_text('{"format": "xrdmodels.ensemble", "members": ["a.pt", "b.pt"]}')
    for name in ("notes.pt", "scan.xy"):
        with pytest.raises(
            CheckpointError, match=rf"{name} is not an xrdmodels checkpoint but a text"
        ) as info:
            load_checkpoint(tmp_path / name)
        assert "first argument" in str(info.value) and "unpickl" not in str(info.value)
    with pytest.raises(
        CheckpointError, match=r"pair\.json is not an xrdmodels checkpoint but an ensemble manifest"
    ):
        load_checkpoint(tmp_path / "pair.json")
    if not torch.cuda.is_available():
        with pytest.raises(CheckpointError, match=r"good\.pt onto cuda: this machine has no CUDA device"):
            load_checkpoint(good, map_location="cuda")
    with pytest.raises(CheckpointError, match=r"cannot load .*good\.pt: 'gpu' is not a device"):
        load_checkpoint(good, map_location="gpu")


def test_checkpoint_with_invalid_model_config_names_the_field(tmp_path):
    path = tmp_path / "bad.pt"
    save_checkpoint(path, {"model": {}, "model_config": {"n_heads": 3, "d_modl": 8}})
    with pytest.raises(CheckpointError, match=r"bad\.pt has an invalid model_config: .*d_modl"):
        load_checkpoint(path)


def test_resume_from_a_checkpoint_without_training_state_names_what_is_missing(tmp_path, store_url):
    out = tmp_path / "run"
    out.mkdir()
    model_config = preset("small", **TINY_MODEL)
    save_checkpoint(
        out / "last.pt",
        {
            "model": SpaceGroupModel(model_config).state_dict(),
            "model_config": model_config.model_dump(mode="json"),
        },
    )
    with pytest.raises(ValueError, match=r"cannot resume .*last\.pt: it lacks 'optimizer', 'scheduler'"):
        train(train_config(store_url, out), resume=True, progress=False)


def test_save_checkpoint_refuses_values_that_would_need_pickle(tmp_path):
    with pytest.raises(TypeError, match=r"entry rng\[0\]\.numpy is a numpy\.ndarray"):
        save_checkpoint(tmp_path / "x.pt", {"model": {}, "rng": [{"numpy": np.zeros(3)}]})
    assert not list(tmp_path.iterdir())


def test_training_checkpoint_loads_weights_only_and_restores_every_rng(tmp_path, store_url):
    out = tmp_path / "run"
    train(train_config(store_url, out), progress=False)
    raw = torch.load(out / "last.pt", weights_only=True)  # torch's own safe loader, no xrdmodels code
    assert raw["format_version"] == CHECKPOINT_FORMAT_VERSION and isinstance(raw["config"], str)
    state = load_checkpoint(out / "last.pt")
    assert state["config"]["train_store"] == store_url and state["model_config"]["n_bins"] == N_BINS

    random.seed(1)
    np.random.seed(2)  # noqa: NPY002
    torch.manual_seed(3)
    saved = rng_state(torch.device("cpu"))
    path = tmp_path / "rng.pt"
    save_checkpoint(path, {"model": {}, "model_config": {}, "rng": [saved]})
    expected = (random.random(), np.random.random(), torch.rand(1))  # noqa: NPY002
    random.seed(9)
    np.random.seed(9)  # noqa: NPY002
    torch.manual_seed(9)
    set_rng_state(load_checkpoint(path)["rng"][0], torch.device("cpu"))
    assert (random.random(), np.random.random(), torch.rand(1)) == expected  # noqa: NPY002


def test_checkpoint_records_the_training_recipe_and_predict_warns_against_it(tmp_path):
    config = pytest.importorskip("xrdsynth.config")
    lab_recipe = config.recipe_preset("lab").model_dump(mode="json")
    store = tmp_path / "lab.zarr"
    write_store(
        str(store), StoreSpec(n_samples=32, n_bins=N_BINS, shard_size=32), attrs={"recipe": lab_recipe}
    )
    out = tmp_path / "run"
    train(train_config(store.as_uri(), out, max_steps=1), progress=False)
    raw = torch.load(out / "last.pt", weights_only=True)
    assert isinstance(raw["data"], str)  # JSON text, as every configuration entry
    state = load_checkpoint(out / "last.pt")
    assert state["data"]["recipe"] == lab_recipe
    # A NIST-like Cu scan over 30-120 deg lies inside the lab windows, outside A.1's.
    scan = tmp_path / "scan.xy"
    scan.write_text("".join(f"{30 + 0.05 * i} {1 + (i % 7)}\n" for i in range(1801)))

    def window_warnings(checkpoint: Path) -> list[str]:
        predictions, failures, skipped = predict_files(
            str(checkpoint), [str(scan)], wavelength_angstrom=1.54184
        )
        assert failures == [] and skipped == []
        return [w for w in predictions[0].warnings if "training windows" in w]

    assert window_warnings(out / "last.pt") == []
    # The same weights in a checkpoint that predates recording the recipe: A.1 is assumed.
    del state["data"]["recipe"]
    save_checkpoint(tmp_path / "old.pt", state)
    old = window_warnings(tmp_path / "old.pt")
    assert len(old) == 1 and "the paper's A.1 recipe (start <= 20 deg" in old[0], old
    # A recorded recipe that is not a recipe is refused before any file, naming the checkpoint and field.
    state["data"]["recipe"] = {**lab_recipe, "window_high_deg": [60.0]}
    save_checkpoint(tmp_path / "bad.pt", state)
    with pytest.raises(
        ValueError, match=r"bad\.pt: .*recipe field window_high_deg must be a \[low, high\] pair"
    ):
        predict_files(str(tmp_path / "bad.pt"), [str(scan)])


def format_1_checkpoint(path: Path, config: dict) -> None:
    """A checkpoint as xrdmodels wrote it before format 2: pickled RNG tuples with a NumPy array. The RNG
    states are the current ones: the next draws are those a resume from it must reproduce."""
    model_config = preset("small", **TINY_MODEL)
    model = SpaceGroupModel(model_config)  # draws from torch's RNG: before its state is taken
    rng = {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state()}  # noqa: NPY002
    state = {
        "model": model.state_dict(),
        "model_config": model_config.model_dump(mode="json"),
        "config": config,
        "rng": [rng],
        "step": 5,
        "format_version": 1,
    }
    torch.save(state, path)


def test_format_1_checkpoint_is_refused_with_the_upgrade_command_which_converts_it(tmp_path, capsys):
    old = tmp_path / "old.pt"
    config = {"train_store": "s3://bucket/train.zarr", "storage_options": {"key": "AKIA-OLD", "anon": False}}
    format_1_checkpoint(old, config)
    with pytest.raises(
        CheckpointError, match=r"old\.pt is a format-1 .*python -m xrdmodels\.checkpoint upgrade"
    ):
        load_checkpoint(old)
    new = tmp_path / "new.pt"
    checkpoint_main(["upgrade", str(old), str(new)])
    assert "wrote" in capsys.readouterr().out
    state = load_checkpoint(new)
    assert state["step"] == 5 and state["config"]["storage_options"] == {"anon": False}
    assert b"AKIA-OLD" not in new.read_bytes()
    expected = (random.random(), np.random.random(), torch.rand(1))  # noqa: NPY002  # draws after the saved state
    set_rng_state(state["rng"][0], torch.device("cpu"))
    assert (random.random(), np.random.random(), torch.rand(1)) == expected  # noqa: NPY002


def test_add_label_prior_records_the_training_stores_prior_and_keeps_the_rest(tmp_path, store_url, capsys):
    old = make_checkpoint(tmp_path / "old.pt", recipe={"name": "lab"}, best_threshold=0.3)
    new = tmp_path / "new.pt"
    checkpoint_main(["add-label-prior", str(old), store_url, str(new)])
    assert "wrote" in capsys.readouterr().out
    before, after = load_checkpoint(old), load_checkpoint(new)
    np.testing.assert_allclose(after["data"].pop("label_prior"), MixtureStore(store_url).label_prior())
    assert after["data"] == before["data"] and after["val_metrics"] == before["val_metrics"]
    for name, weight in before["model"].items():
        assert torch.equal(weight, after["model"][name]), name
    with pytest.raises(SystemExit):
        checkpoint_main(["add-label-prior", str(old), str(tmp_path / "missing.zarr"), str(tmp_path / "x.pt")])
    assert "missing.zarr" in capsys.readouterr().err and not (tmp_path / "x.pt").exists()
    # A mistyped option is refused without being repeated: its value may be a credential.
    with pytest.raises(SystemExit):
        checkpoint_main(
            ["add-label-prior", str(old), store_url, str(new), "--storage-opton", "secret=s3cr3t-typo"]
        )
    refused = capsys.readouterr().err
    assert "unrecognized arguments" in refused and "s3cr3t-typo" not in refused


# --------------------------------------------------------------------------------------------------------
# Credentials
# --------------------------------------------------------------------------------------------------------

SECRETS = {
    "key": "AKIA-TOP-LEVEL-KEY",
    "secret": "top-level-secret-value",
    "token": "top-level-session-token",
    "password": "hunter2-password",
    "client_kwargs": {
        "aws_access_key_id": "AKIA-NESTED-KEY",
        "aws_secret_access_key": "nested-secret-value",
        "aws_session_token": "nested-session-token",
        "region_name": "eu-test-1",
    },
}


def secret_values(options) -> list[str]:
    if isinstance(options, dict):
        return [s for k, v in options.items() if k != "region_name" for s in secret_values(v)]
    return [options]


def test_credentials_in_storage_options_are_never_written_or_logged(tmp_path, store_url, caplog):
    out = tmp_path / "run"
    options = {**SECRETS, "skip_instance_cache": True}
    caplog.set_level(logging.DEBUG)
    train(
        train_config(store_url, out, storage_options=options, val_store=store_url, val_every=1),
        progress=False,
    )
    # Resume with a changed trajectory field: the warning prints the configs being compared.
    train(
        train_config(store_url, out, storage_options=options, max_steps=3, lr=2e-4),
        resume=True,
        progress=False,
    )
    files = [p for p in out.rglob("*") if p.is_file()]
    assert {"config.json", "last.pt", "best.pt", "step-00000001.pt", "metrics.csv"} <= {p.name for p in files}
    for secret in secret_values(SECRETS):
        assert len(secret) > 8
        for path in files:
            assert secret.encode() not in path.read_bytes(), f"{secret} written to {path.name}"
        assert secret not in caplog.text
    assert "lr (0.0001 -> 0.0002)" in caplog.text
    # The options that carry no credential are kept, so the grep above would have found the secrets.
    for name in ("config.json", "last.pt"):
        content = (out / name).read_bytes()
        assert b"skip_instance_cache" in content and b"eu-test-1" in content
    saved = load_checkpoint(out / "last.pt")["config"]["storage_options"]
    assert saved == {"client_kwargs": {"region_name": "eu-test-1"}, "skip_instance_cache": True}
    assert "storage_options" not in repr(train_config(store_url, out, storage_options=options))


def test_cli_validation_errors_do_not_echo_storage_options(tmp_path, store_url):
    config_file = tmp_path / "c.json"
    config_file.write_text(
        train_config(store_url, tmp_path / "x")
        .model_dump_json()
        .replace('"storage_options":null', '"storage_options":["key=AKIA-IN-A-LIST"]')
    )
    result = CliRunner().invoke(cli_main, ["train", "--config", str(config_file)])
    assert result.exit_code == 1 and "storage_options" in result.output
    assert "AKIA-IN-A-LIST" not in result.output
    # An error names the overrides by key only (their values may be credentials) and suggests a near field.
    # Nor is an unknown field's value shown: a misspelt name may carry a credential.
    typo = CliRunner().invoke(
        cli_main,
        [
            "train",
            "--config",
            str(config_file),
            "max_stepz=3",
            'storage_options={"secret": "S3CRET"}',
            "storage_option_secret=AKIA-MISSPELT",
        ],
    )
    assert typo.exit_code == 1
    assert "the overrides of max_stepz, storage_options, storage_option_secret" in typo.output
    assert "max_stepz: Extra inputs are not permitted; did you mean max_steps?" in typo.output
    assert "S3CRET" not in typo.output and "AKIA-MISSPELT" not in typo.output


def test_redaction_of_options_and_urls():
    assert redact_storage_options(
        {
            "Key": "k",
            "connection_string": "c",
            "sas_token": "s",
            "headers": {"Authorization": "Bearer x"},
            "anon": True,
        }
    ) == {"headers": {}, "anon": True}
    assert redact_url("https://user:pw@host:9000/bucket/x.zarr") == "https://***@host:9000/bucket/x.zarr"
    assert redact_url("s3://bucket/x.zarr") == "s3://bucket/x.zarr"
    # Any text: every URL's user:password masked, nothing else touched; log lines through the CLI's filter.
    assert redact_url("s3://user:p@ss@host/b/x") == "s3://***@host/b/x"  # an @ in the password is masked too
    text = "no mixture store at http://bob:TrainPW@h:9/m.zarr (see /tmp/a@b)"
    assert redact_url(text) == "no mixture store at http://***@h:9/m.zarr (see /tmp/a@b)"
    record = logging.LogRecord("x", logging.INFO, __file__, 1, "reading %s", ("https://a:b@h/s.zarr",), None)
    assert redact_log_record(record) and record.getMessage() == "reading https://***@h/s.zarr"


def test_a_store_url_with_credentials_is_masked_in_the_error(tmp_path) -> None:
    """`xrdmodels train` on an unreachable store named with user:password: the message names it masked."""
    with socket.socket() as sock:  # a port that was just free and now has no listener
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    config = tmp_path / "c.json"
    config.write_text(
        json.dumps(
            {"model_preset": "cpu", "out_dir": str(tmp_path / "o"), "total_steps": 2, "warmup_steps": 1}
        )
    )
    result = CliRunner().invoke(
        cli_main,
        ["train", "--config", str(config), f"train_store=http://bob:TrainPW@127.0.0.1:{port}/m.zarr"],
    )
    assert result.exit_code != 0
    assert "TrainPW" not in result.output and f"http://***@127.0.0.1:{port}/m.zarr" in result.output, (
        result.output
    )


def test_a_step_checkpoint_copy_killed_midway_leaves_no_file_under_its_name(tmp_path, monkeypatch) -> None:
    import shutil as shutil_module

    from xrdmodels.checkpoint import copy_checkpoint

    source = tmp_path / "last.pt"
    source.write_bytes(os.urandom(1 << 20))
    copy_checkpoint(source, tmp_path / "step-00000004.pt")
    assert (tmp_path / "step-00000004.pt").read_bytes() == source.read_bytes()
    assert not list(tmp_path.glob("*.tmp"))

    def killed(src, dst, length=0):
        dst.write(src.read(1000))
        raise KeyboardInterrupt

    monkeypatch.setattr(shutil_module, "copyfileobj", killed)
    with pytest.raises(KeyboardInterrupt):
        copy_checkpoint(source, tmp_path / "step-00000008.pt")
    assert not (tmp_path / "step-00000008.pt").exists()
