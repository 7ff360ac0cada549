"""Mixture stores: contents, determinism across workers, resume after a kill, refusals, inspect/plot, the contract."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import zarr
from click.testing import CliRunner

from xrdsynth.bank import Bank
from xrdsynth.bank_build import build_bank
from xrdsynth.cli import main, parse_count
from xrdsynth.config import BankConfig, GenerateConfig, RecipeConfig
from xrdsynth.generate import generate_all, generate_split, split_sizes
from xrdsynth.store import StoreError

BIN = Path(sys.executable).parent


@pytest.fixture(scope="module")
def bank(tmp_path_factory) -> Bank:
    url = tmp_path_factory.mktemp("bank") / "bank.zarr"
    config = BankConfig(split_fractions=(0.6, 0.2, 0.2), chunk_size=16)
    return build_bank(["random:1:1-80"], str(url), config, seed=11, workers=0)


def small(**recipe) -> GenerateConfig:
    return GenerateConfig(shard_size=64, chunk_rows=32, n_eval=96, recipe=RecipeConfig(**recipe))


def store_files(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def test_store_holds_labels_consistent_with_the_bank(bank: Bank, tmp_path) -> None:
    (report,) = generate_all(bank.url, str(tmp_path), 200, small(), splits=("train",), workers=0)
    root = zarr.open_group(report.url, mode="r")
    assert root.attrs["complete"] and root.attrs["n_samples"] == 200 and root.attrs["format_version"] == 1
    assert root.attrs["bank_fingerprint"] == bank.fingerprint
    pattern = root["pattern"][:]
    assert pattern.shape == (200, 2048) and pattern.dtype == np.float16
    k = root["n_phases"][:]
    materials = root["phase_material"][:]
    sg = root["phase_spacegroup"][:]
    weights = root["phase_weight"][:]
    train_pool = set(bank.split_indices("train"))
    bank_sg = bank.column("spacegroup_number")
    for i in range(200):
        present = materials[i, : k[i]]
        assert set(present) <= train_pool and len(set(present)) == k[i]
        assert (materials[i, k[i] :] == -1).all() and (sg[i, k[i] :] == 0).all()
        np.testing.assert_array_equal(sg[i, : k[i]], bank_sg[present])
        assert weights[i].sum() == pytest.approx(1.0, abs=1e-5) and weights[i, : k[i]].min() >= 0.03 - 1e-6
    lo, hi = root["window_bins"][:].T
    for i in range(200):  # the normalisation contract: zero outside, 99th percentile 1 inside
        assert not pattern[i, : lo[i]].any() and not pattern[i, hi[i] :].any()
        inside = pattern[i, lo[i] : hi[i]].astype(np.float32)
        assert inside.min() >= 0 and np.percentile(inside, 99) == pytest.approx(1.0, abs=2e-3)
    assert set(root["params"].array_keys()) >= {
        "zero_shift_deg",
        "microstrain",
        "crystallite_size_nm",
        "noise_sigma",
    }
    assert root["materials"]["id"].shape == (len(bank),)


def test_same_seed_same_bytes_for_one_or_two_workers(bank: Bank, tmp_path) -> None:
    config = small()
    generate_all(bank.url, str(tmp_path / "a"), 256, config, splits=("train", "test"), workers=0)
    generate_all(bank.url, str(tmp_path / "b"), 256, config, splits=("train", "test"), workers=2)
    a, b = store_files(tmp_path / "a"), store_files(tmp_path / "b")
    assert a.keys() == b.keys() and len(a) > 20
    assert a == b
    other = small()
    generate_all(
        bank.url, str(tmp_path / "c"), 256, other.model_copy(update={"seed": 1}), splits=("train",), workers=0
    )
    assert store_files(tmp_path / "c")["train.zarr/pattern/c/0/0"] != a["train.zarr/pattern/c/0/0"]


def test_splits_draw_from_their_own_pools(bank: Bank, tmp_path) -> None:
    reports = generate_all(bank.url, str(tmp_path), 128, small(), workers=0)
    pools = {"train": "train", "val": "val", "test": "test", "in_library": "train"}
    sizes = split_sizes(128, small())
    assert sizes["in_library"] == sizes["test"]
    for r in reports:
        root = zarr.open_group(r.url, mode="r")
        used = root["phase_material"][:]
        assert set(used[used >= 0]) <= set(bank.split_indices(pools[r.split]))
        assert root.attrs["n_samples"] == sizes[r.split]
    inlib = zarr.open_group(f"{tmp_path}/in_library.zarr", mode="r")["pattern"][:]
    train = zarr.open_group(f"{tmp_path}/train.zarr", mode="r")["pattern"][: len(inlib)]
    assert not np.array_equal(inlib, train)  # in-library has its own random stream


def test_existing_store_is_refused_unless_resume_or_overwrite(bank: Bank, tmp_path) -> None:
    url = str(tmp_path / "train.zarr")
    generate_split(bank, url, "train", 128, small())
    with pytest.raises(StoreError, match="--resume"):
        generate_split(bank, url, "train", 128, small())
    again = generate_split(bank, url, "train", 128, small(), resume=True)
    assert again.shards_written == 0 and again.shards_skipped == 2
    with pytest.raises(StoreError, match="another config"):
        generate_split(bank, url, "train", 128, small(engine="lut"), resume=True)
    generate_split(bank, url, "train", 128, small(engine="lut"), overwrite=True)
    assert zarr.open_group(url, mode="r").attrs["recipe"]["engine"] == "lut"


def test_killed_run_resumes_to_identical_store(bank: Bank, tmp_path) -> None:
    """A real SIGKILL mid-run: nothing reads as complete, and --resume finishes to the fresh run's bytes."""
    args = [
        "mixtures",
        "generate",
        "--bank",
        bank.url,
        "--n",
        "1280",
        "--shard-size",
        "64",
        "--splits",
        "train",
        "--workers",
        "0",
    ]
    fresh = tmp_path / "fresh"
    assert CliRunner().invoke(main, [*args, "--out", str(fresh)]).exit_code == 0

    killed = tmp_path / "killed"
    proc = subprocess.Popen(
        [str(BIN / "xrdsynth"), *args, "--out", str(killed)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    flags = killed / "train.zarr" / "shard_complete" / "c"
    deadline = time.time() + 120
    while time.time() < deadline and len(list(flags.glob("*"))) < 3:
        time.sleep(0.05)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    root = zarr.open_group(str(killed / "train.zarr"), mode="r")
    done = root["shard_complete"][:]
    assert not root.attrs["complete"] and 0 < done.sum() < len(done)

    from xrdmodels.data import MixtureStore, StoreFormatError

    with pytest.raises(StoreFormatError, match="incomplete"):
        MixtureStore(str(killed / "train.zarr"))
    result = CliRunner().invoke(main, [*args, "--out", str(killed), "--resume"])
    assert result.exit_code == 0, result.output
    assert f"{int(done.sum())} reused" in result.output
    assert store_files(killed) == store_files(fresh)


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--n", "ten"], "not a count"),
        (["--n", "0"], "positive"),
        (["--shard-size", "0"], "shard_size"),
        (["--splits", "train,holdout"], "holdout"),
    ],
)
def test_bad_arguments_name_the_field(bank: Bank, tmp_path, argv, message) -> None:
    base = {"--n": "100"}
    args = ["mixtures", "generate", "--bank", bank.url, "--out", str(tmp_path), "--workers", "0"]
    merged = dict(base)
    merged.update(dict(zip(argv[::2], argv[1::2], strict=True)))
    result = CliRunner().invoke(main, args + [x for kv in merged.items() for x in kv])
    assert result.exit_code != 0
    assert message in result.output


def test_bad_recipe_config_fails_before_work(bank: Bank, tmp_path) -> None:
    cfg = tmp_path / "cfg.json"
    cfg.write_text('{"recipe": {"phase_count_probabilities": [0.5, 0.5, 0.5, 0, 0]}}')
    result = CliRunner().invoke(
        main,
        [
            "mixtures",
            "generate",
            "--bank",
            bank.url,
            "--out",
            str(tmp_path / "o"),
            "--n",
            "100",
            "--config",
            str(cfg),
            "--workers",
            "0",
        ],
    )
    assert result.exit_code != 0 and "phase_count_probabilities" in result.output
    assert not (tmp_path / "o").exists()
    missing = CliRunner().invoke(
        main,
        [
            "mixtures",
            "generate",
            "--bank",
            str(tmp_path / "nobank.zarr"),
            "--out",
            str(tmp_path / "o"),
            "--n",
            "100",
            "--workers",
            "0",
        ],
    )
    assert missing.exit_code != 0 and "no bank store" in missing.output


def test_counts_parse_like_people_write_them() -> None:
    assert parse_count("10M") == 10_000_000
    assert parse_count("250k") == 250_000
    assert parse_count("1e6") == 1_000_000
    assert parse_count("20_000") == 20_000


def test_inspect_and_plot(bank: Bank, tmp_path) -> None:
    generate_all(bank.url, str(tmp_path), 128, small(), splits=("train",), workers=0)
    runner = CliRunner()
    out = runner.invoke(main, ["mixtures", "inspect", str(tmp_path / "train.zarr")])
    assert out.exit_code == 0, out.output
    assert "K* histogram" in out.output and "zero_shift_deg" in out.output
    png = tmp_path / "s.png"
    plot = runner.invoke(
        main, ["mixtures", "plot", str(tmp_path / "train.zarr"), "--index", "5", "--out", str(png)]
    )
    assert plot.exit_code == 0, plot.output
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    bad = runner.invoke(main, ["mixtures", "plot", str(tmp_path / "train.zarr"), "--index", "999"])
    assert bad.exit_code != 0 and "outside" in bad.output


def test_xrdmodels_reads_what_xrdsynth_writes(bank: Bank, tmp_path) -> None:
    """The format contract from the writer's side: the reader sees the same samples and labels."""
    from xrdmodels.data import MixtureStore, multi_hot, window_mask

    (report,) = generate_all(bank.url, str(tmp_path), 150, small(), splits=("train",), workers=0)
    store = MixtureStore(report.url)
    assert store.n_samples == 150 and store.n_shards == 3 and len(store.complete_shards()) == 3
    rows = store.read_shard(2)
    root = zarr.open_group(report.url, mode="r")
    np.testing.assert_array_equal(rows["pattern"], root["pattern"][128:150].astype(np.float32))
    mask = window_mask(rows["window_bins"], 2048)
    assert (rows["pattern"][~mask] == 0).all()
    targets = multi_hot(rows["phase_spacegroup"])
    assert (targets.sum(1) == [len(set(r[r > 0])) for r in rows["phase_spacegroup"]]).all()


def test_generate_to_s3_and_read_back(bank: Bank, s3_endpoint: str, tmp_path) -> None:
    """--out on a real S3-compatible endpoint (moto on loopback): the same bytes as on local disk."""
    s3fs = pytest.importorskip("s3fs")
    options = {"key": "testing", "secret": "testing", "client_kwargs": {"endpoint_url": s3_endpoint}}
    fs = s3fs.S3FileSystem(**options)
    fs.mkdir("mixtures-bucket")
    result = CliRunner().invoke(
        main,
        [
            "mixtures",
            "generate",
            "--bank",
            bank.url,
            "--out",
            "s3://mixtures-bucket/run1",
            "--n",
            "200",
            "--shard-size",
            "64",
            "--splits",
            "train",
            "--workers",
            "0",
            "--storage-option",
            f"endpoint_url={s3_endpoint}",
            "--storage-option",
            "key=testing",
            "--storage-option",
            "secret=testing",
        ],
    )
    assert result.exit_code == 0, result.output
    generate_all(
        bank.url,
        str(tmp_path),
        200,
        GenerateConfig(shard_size=64, chunk_rows=64),
        splits=("train",),
        workers=0,
    )
    remote = zarr.open_group("s3://mixtures-bucket/run1/train.zarr", mode="r", storage_options=options)
    local = zarr.open_group(str(tmp_path / "train.zarr"), mode="r")
    assert remote.attrs["complete"]
    for name in ("pattern", "window_bins", "phase_spacegroup", "phase_weight"):
        np.testing.assert_array_equal(remote[name][:], local[name][:])

    from xrdmodels.data import ShardStream

    stream = ShardStream(
        "s3://mixtures-bucket/run1/train.zarr",
        batch_size=50,
        shuffle=False,
        storage_options=options,
        drop_last=False,
    )
    seen = sum(len(b["pattern"]) for b in stream)
    assert seen == 200
