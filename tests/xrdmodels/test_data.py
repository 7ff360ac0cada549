"""Tests for xrdmodels.data: the mixture-store contract (docs/formats.md) from the reader's side, and ShardStream.

Stores are written by tests/xrdmodels/store_factory.py with zarr directly (never xrdsynth). Every sample is
identified in a batch by the exact bytes of its pattern row, so coverage, ordering and label alignment are
checked against the arrays the factory wrote, not against the reader's own bookkeeping.
"""

from __future__ import annotations

import json
import os
import sys
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
import zarr
from torch.utils.data import DataLoader

sys.path.insert(0, str(Path(__file__).resolve().parent))
from store_factory import StoreSpec, write_store  # noqa: E402

from xrdmodels.data import MixtureStore, ShardStream, StoreFormatError, multi_hot, to_batch, window_mask  # noqa: E402

# torchdata's StatefulDataLoader calls a deprecated torch function on construction; not ours to fix.
pytestmark = pytest.mark.filterwarnings("ignore:'set_vital' is deprecated:UserWarning")

# 1003 rows in shards of 128: 8 shards, the last one partial (107 rows); two ranks get 501 and 502 rows.
SPEC = StoreSpec(n_samples=1003, n_bins=32, shard_size=128, chunk_rows=32)
BATCH = 16


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> tuple[str, dict[str, np.ndarray]]:
    url = str(tmp_path_factory.mktemp("stores") / "train.zarr")
    arrays = write_store(url, SPEC, seed=3)
    assert arrays is not None
    return url, arrays


@pytest.fixture(scope="module")
def row_of(store: tuple[str, dict[str, np.ndarray]]) -> dict[bytes, int]:
    patterns = store[1]["pattern"].astype(np.float32)
    index = {patterns[i].tobytes(): i for i in range(len(patterns))}
    assert len(index) == len(patterns), "factory patterns must be unique to identify rows"
    return index


def identify(
    batch: dict[str, torch.Tensor], row_of: dict[bytes, int], arrays: dict[str, np.ndarray]
) -> list[int]:
    """Row indices of a batch; also checks every field of the batch against the rows the factory wrote."""
    rows = [row_of[p.numpy().tobytes()] for p in batch["pattern"]]
    assert batch["pattern"].dtype == torch.float32 and batch["pattern"].is_contiguous()
    np.testing.assert_array_equal(batch["labels"].numpy(), arrays["phase_spacegroup"][rows])
    np.testing.assert_array_equal(batch["n_phases"].numpy(), arrays["n_phases"][rows])
    np.testing.assert_array_equal(batch["phase_weight"].numpy(), arrays["phase_weight"][rows])
    for mask_row, (lo, hi) in zip(batch["mask"].numpy(), arrays["window_bins"][rows], strict=True):
        assert mask_row[lo:hi].all() and not mask_row[:lo].any() and not mask_row[hi:].any()
    for target_row, labels in zip(batch["targets"].numpy(), arrays["phase_spacegroup"][rows], strict=True):
        assert set(np.flatnonzero(target_row) + 1) == {int(s) for s in labels if s > 0}
    return rows


def collect(batches: Any, row_of: dict[bytes, int], arrays: dict[str, np.ndarray]) -> list[list[int]]:
    return [identify(batch, row_of, arrays) for batch in batches]


def assert_same_batches(a: list[dict[str, torch.Tensor]], b: list[dict[str, torch.Tensor]]) -> None:
    assert len(a) == len(b)
    for x, y in zip(a, b, strict=True):
        assert x.keys() == y.keys()
        for key in x:
            assert torch.equal(x[key], y[key]), key


# --- format contract -------------------------------------------------------------------------------------


def test_reads_the_documented_layout(store: tuple[str, dict[str, np.ndarray]]) -> None:
    url, arrays = store
    opened = MixtureStore(url)
    assert (opened.n_samples, opened.shard_size, opened.n_shards) == (1003, 128, 8)
    assert opened.grid.n_bins == 32
    assert opened.shard_rows(7) == (896, 1003)
    rows = opened.read_shard(7)
    np.testing.assert_array_equal(rows["pattern"], arrays["pattern"][896:1003])
    np.testing.assert_array_equal(rows["window_bins"], arrays["window_bins"][896:1003])
    centers = opened.grid.centers_deg()
    np.testing.assert_allclose(centers[[0, -1]], [5.0 + 115 / 64, 120.0 - 115 / 64])


def test_label_prior_is_each_groups_share_of_the_phases(store: tuple[str, dict[str, np.ndarray]]) -> None:
    url, arrays = store
    opened = MixtureStore(url)
    for samples in (1003, 300, 5000):
        counts = np.zeros(230)
        for row in arrays["phase_spacegroup"][:samples]:
            for group in row:
                if group > 0:
                    counts[group - 1] += 1
        np.testing.assert_allclose(opened.label_prior(samples), counts / counts.sum(), rtol=1e-12)
    assert opened.label_prior().sum() == pytest.approx(1.0)


def test_label_prior_of_a_store_without_labels_names_the_array(tmp_path: Path) -> None:
    url = str(tmp_path / "unlabelled.zarr")
    write_store(url, StoreSpec(n_samples=40, shard_size=16, chunk_rows=8))
    zarr.open_group(url, mode="r+")["phase_spacegroup"][:] = 0
    with pytest.raises(StoreFormatError, match=r"unlabelled.zarr.*no space-group label.*phase_spacegroup"):
        MixtureStore(url).label_prior()


def test_refuses_unknown_format_version(tmp_path: Path) -> None:
    url = str(tmp_path / "v2.zarr")
    write_store(url, StoreSpec(n_samples=40, shard_size=16, chunk_rows=8), attrs={"format_version": 2})
    with pytest.raises(StoreFormatError, match=r"format_version 2.*reads format_version 1"):
        MixtureStore(url)
    with pytest.raises(StoreFormatError, match=r"reads format_version 1"):
        ShardStream(url, 4)


def test_the_bank_is_found_from_the_store_when_its_recorded_path_is_relative_to_another_folder(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """bank_url is recorded as typed (relative to where `mixtures generate` ran); bank_path_from_store, the bank's
    path from the store's folder, finds it from anywhere while the two stay together (docs/formats.md)."""
    run = tmp_path / "run"
    (run / "bank.zarr").mkdir(parents=True)
    url = str(run / "mixtures" / "train.zarr")
    spec = StoreSpec(n_samples=40, shard_size=16, chunk_rows=8)
    write_store(url, spec, attrs={"bank_url": "run/bank.zarr", "bank_path_from_store": "../../bank.zarr"})
    for here in (tmp_path, run / "mixtures"):  # where it was written, and elsewhere: through the store
        monkeypatch.chdir(here)
        assert Path(MixtureStore(url).bank_url).resolve() == (run / "bank.zarr").resolve()
    (tmp_path / "other" / "run" / "bank.zarr").mkdir(
        parents=True
    )  # another bank at the recorded path from here
    monkeypatch.chdir(tmp_path / "other")
    assert Path(MixtureStore(url).bank_url).resolve() == (run / "bank.zarr").resolve()
    (run / "bank.zarr").rmdir()  # found nowhere beside the store: the recorded path, for the error to name
    assert MixtureStore(url).bank_url == "run/bank.zarr"
    write_store(
        str(tmp_path / "s3.zarr"), spec, attrs={"bank_url": "s3://b/bank.zarr", "bank_path_from_store": None}
    )
    assert MixtureStore(str(tmp_path / "s3.zarr")).bank_url == "s3://b/bank.zarr"
    write_store(str(tmp_path / "old.zarr"), spec)  # written before the attribute existed
    assert MixtureStore(str(tmp_path / "old.zarr")).bank_url == "memory://bank"


def test_refuses_other_formats_and_missing_stores(tmp_path: Path) -> None:
    url = str(tmp_path / "bank.zarr")
    write_store(url, StoreSpec(n_samples=40, shard_size=16, chunk_rows=8), attrs={"format": "xrdsynth.bank"})
    with pytest.raises(StoreFormatError, match=r"not a mixture store.*'xrdsynth.bank'.*'xrdsynth.mixtures'"):
        MixtureStore(url)
    with pytest.raises(StoreFormatError, match="no mixture store at"):
        MixtureStore(str(tmp_path / "absent.zarr"))
    with pytest.raises(StoreFormatError, match=r"bank\.zarr is a local path, which takes no storage_options"):
        MixtureStore(url, storage_options={"anon": True})


def test_incomplete_store_is_refused_unless_asked_and_then_only_flagged_shards_count(tmp_path: Path) -> None:
    url = str(tmp_path / "partial.zarr")
    write_store(url, StoreSpec(n_samples=64, shard_size=16, chunk_rows=8), skip_shards=(1, 3))
    with pytest.raises(StoreFormatError, match=r"incomplete.*--resume"):
        MixtureStore(url)
    with pytest.raises(StoreFormatError, match="incomplete"):
        ShardStream(url, 4)
    assert MixtureStore(url, require_complete=False).complete_shards().tolist() == [0, 2]


def test_complete_attribute_with_unflagged_shards_is_damage(tmp_path: Path) -> None:
    url = str(tmp_path / "damaged.zarr")
    write_store(url, StoreSpec(n_samples=64, shard_size=16, chunk_rows=8), skip_shards=(2,), complete=True)
    with pytest.raises(StoreFormatError, match=r"shards \[2\] lack their shard_complete flag"):
        MixtureStore(url)


# --- window_mask, multi_hot, to_batch --------------------------------------------------------------------


def test_window_mask_hand_made() -> None:
    window_bins = np.array([[0, 3], [2, 5], [4, 4], [1, 2]], dtype=np.int32)
    expected = np.array(
        [
            [1, 1, 1, 0, 0],
            [0, 0, 1, 1, 1],
            [0, 0, 0, 0, 0],  # empty window: lo == hi
            [0, 1, 0, 0, 0],
        ],
        dtype=bool,
    )
    np.testing.assert_array_equal(window_mask(window_bins, 5), expected)


def test_multi_hot_hand_made() -> None:
    labels = np.array(
        [[1, 230, 0, 0, 0], [5, 0, 0, 0, 0], [0, 0, 0, 0, 0], [7, 3, 225, 14, 2]], dtype=np.int16
    )
    hot = multi_hot(labels)
    assert hot.shape == (4, 230) and hot.dtype == np.float32
    expected = np.zeros((4, 230), dtype=np.float32)
    expected[0, 0] = expected[0, 229] = 1  # space group s is column s - 1
    expected[1, 4] = 1
    expected[3, [6, 2, 224, 13, 1]] = 1
    np.testing.assert_array_equal(hot, expected)


def test_to_batch_dtypes() -> None:
    rows = {
        "pattern": np.array([[0.5, 1.0, 0.0]], dtype=np.float16),
        "window_bins": np.array([[0, 2]], dtype=np.int32),
        "n_phases": np.array([2], dtype=np.int8),
        "phase_spacegroup": np.array([[3, 1, 0, 0, 0]], dtype=np.int16),
        "phase_weight": np.array([[0.25, 0.75, 0, 0, 0]], dtype=np.float32),
    }
    batch = to_batch(rows, 3)
    assert batch["pattern"].dtype == torch.float32 and batch["pattern"].tolist() == [[0.5, 1.0, 0.0]]
    assert batch["mask"].tolist() == [[True, True, False]]
    assert batch["labels"].dtype == torch.int64 and batch["n_phases"].tolist() == [2]
    assert batch["targets"][0].nonzero().flatten().tolist() == [0, 2]


# --- coverage and balance ---------------------------------------------------------------------------------


@pytest.mark.parametrize("shuffle", [True, False])
def test_one_reader_sees_every_sample_once(store, row_of, shuffle: bool) -> None:
    url, arrays = store
    stream = ShardStream(url, BATCH, drop_last=False, shuffle=shuffle, seed=1)
    batches = collect(stream, row_of, arrays)
    assert sorted(sum(batches, [])) == list(range(SPEC.n_samples))
    assert len(batches) == len(stream) == -(-SPEC.n_samples // BATCH)
    assert all(len(b) == BATCH for b in batches[:-1])
    if not shuffle:
        assert sum(batches, []) == list(range(SPEC.n_samples))


def test_one_reader_drop_last_yields_full_batches_without_repeats(store, row_of) -> None:
    url, arrays = store
    stream = ShardStream(url, BATCH, drop_last=True, seed=1)
    batches = collect(stream, row_of, arrays)
    seen = sum(batches, [])
    assert len(seen) == len(set(seen)) == (SPEC.n_samples // BATCH) * BATCH
    assert len(batches) == len(stream) and {len(b) for b in batches} == {BATCH}


@pytest.mark.parametrize("drop_last", [False, True])
def test_two_ranks_two_workers_cover_the_store_with_equal_batch_counts(
    store, row_of, drop_last: bool
) -> None:
    url, arrays = store
    per_rank = []
    for rank in range(2):
        stream = ShardStream(
            url, BATCH, rank=rank, world_size=2, seed=5, drop_last=drop_last, shuffle_shards=2
        )
        batches = collect(DataLoader(stream, batch_size=None, num_workers=2), row_of, arrays)
        assert len(batches) == len(stream)
        per_rank.append(batches)
    assert len(per_rank[0]) == len(per_rank[1]), "a rank that runs out early would hang DDP"
    seen = Counter(i for batches in per_rank for b in batches for i in b)
    assert max(seen.values()) == 1
    if drop_last:
        assert all(len(b) == BATCH for batches in per_rank for b in batches)
        assert SPEC.n_samples - len(seen) < 2 * (BATCH + 1)
    else:
        assert sorted(seen) == list(range(SPEC.n_samples))


def test_uneven_ranks_get_the_same_number_of_non_empty_batches(store, row_of) -> None:
    # 1003 rows: ranks of 501 and 502 rows; with batches of 167 rank 1 needs 4 batches, rank 0 has 3 full
    # batches of rows, so its rows must be spread over 4 non-empty batches.
    url, arrays = store
    per_rank = [
        collect(ShardStream(url, 167, rank=r, world_size=2, drop_last=False), row_of, arrays)
        for r in range(2)
    ]
    assert [len(b) for b in per_rank] == [4, 4]
    assert all(0 < len(b) <= 167 for batches in per_rank for b in batches)
    assert sorted(i for batches in per_rank for b in batches for i in b) == list(range(SPEC.n_samples))


def test_batch_size_larger_than_a_rank_is_explained(store) -> None:
    with pytest.raises(ValueError, match="less than one batch"):
        len(ShardStream(store[0], 600, world_size=2, rank=0))


# --- ordering ------------------------------------------------------------------------------------------------


def test_epochs_reorder_and_seed_epoch_reproduce(store, row_of) -> None:
    url, arrays = store

    def order(seed: int, epoch: int) -> list[int]:
        stream = ShardStream(url, BATCH, seed=seed)
        stream.set_epoch(epoch)
        return sum(collect(stream, row_of, arrays), [])

    assert order(2, 0) == order(2, 0)
    assert order(2, 1) != order(2, 0)
    assert order(3, 0) != order(2, 0)


def test_shuffling_mixes_rows_within_windows_of_shards(store, row_of) -> None:
    url, arrays = store
    shuffle_shards = 2
    stream = ShardStream(url, BATCH, seed=4, drop_last=False, shuffle_shards=shuffle_shards)
    sequence = [i // SPEC.shard_size for i in sum(collect(stream, row_of, arrays), [])]
    shard_rows = Counter(sequence)
    # Cut the sequence into windows: a window closes once every row of the shards it touched has appeared.
    windows, current, remaining = [], [], 0
    for shard in sequence:
        if shard not in current:
            remaining += shard_rows[shard]
        current.append(shard)
        remaining -= 1
        if remaining == 0:
            windows.append(current)
            current = []
    assert not current
    assert [len(set(w)) for w in windows] == [shuffle_shards] * (SPEC.n_shards // shuffle_shards)
    for window in windows:
        switches = sum(a != b for a, b in zip(window, window[1:], strict=False))
        assert switches > len(window) // 4, "rows of a window's shards should interleave"


# --- resumption ----------------------------------------------------------------------------------------------


class CountingStream(ShardStream):
    """Counts shard pieces read, to check that a resumed stream skips windows it has already delivered."""

    reads = 0

    def _read_piece(self, piece):  # type: ignore[no-untyped-def]
        type(self).reads += 1
        return super()._read_piece(piece)


@pytest.mark.parametrize(("rank", "world_size"), [(0, 1), (1, 2)])
def test_resume_plain_stream_exactly(store, rank: int, world_size: int) -> None:
    url, _ = store
    kwargs = {"seed": 9, "rank": rank, "world_size": world_size, "shuffle_shards": 2, "drop_last": False}
    reference = ShardStream(url, BATCH, **kwargs)
    reference.set_epoch(3)
    full = list(reference)

    interrupted = ShardStream(url, BATCH, **kwargs)
    interrupted.set_epoch(3)
    k = 20  # past the first window of 2 shards (256 rows = 16 batches)
    it = iter(interrupted)
    head = [next(it) for _ in range(k)]
    state = interrupted.state_dict()
    assert state["epoch"] == 3 and state["batches_yielded"] == k

    CountingStream.reads = 0
    resumed = CountingStream(url, BATCH, **kwargs)
    resumed.load_state_dict(state)
    tail = list(resumed)
    assert_same_batches(head + tail, full)
    n_pieces = len(resumed._reader_plan(3, 0, 1)[0])
    assert CountingStream.reads < n_pieces, "windows wholly before the resume point must not be read"


def test_resume_refuses_a_state_from_another_plan(store) -> None:
    url, _ = store
    state = ShardStream(url, BATCH, rank=0, world_size=2).state_dict()
    with pytest.raises(ValueError, match="rank: saved 0, now 1"):
        ShardStream(url, BATCH, rank=1, world_size=2).load_state_dict(state)


class RecordingStream(ShardStream):
    """Leaves a file per load_state_dict call (in whichever process), to prove the loader called it."""

    marker_dir: Path | None = None

    def load_state_dict(self, state: dict[str, Any]) -> None:
        assert self.marker_dir is not None
        (self.marker_dir / f"loaded-{os.getpid()}").write_text(json.dumps(state))
        super().load_state_dict(state)


def find_stream_states(node: Any) -> list[dict[str, Any]]:
    if isinstance(node, dict):
        own = [node] if "batches_yielded" in node else []
        return own + [s for value in node.values() for s in find_stream_states(value)]
    if isinstance(node, list | tuple):
        return [s for value in node for s in find_stream_states(value)]
    return []


@pytest.mark.parametrize("num_workers", [0, 2])
def test_resume_stateful_dataloader_exactly(store, tmp_path: Path, num_workers: int) -> None:
    from torchdata.stateful_dataloader import StatefulDataLoader

    url, _ = store
    kwargs = {"seed": 11, "shuffle_shards": 2, "drop_last": False}

    def loader() -> tuple[RecordingStream, StatefulDataLoader]:
        stream = RecordingStream(url, BATCH, **kwargs)
        stream.marker_dir = tmp_path
        stream.set_epoch(1)
        return stream, StatefulDataLoader(stream, batch_size=None, num_workers=num_workers)

    full = list(loader()[1])
    k = 23
    _, interrupted = loader()
    it = iter(interrupted)
    head = [next(it) for _ in range(k)]
    state = interrupted.state_dict()
    del it, interrupted
    saved = find_stream_states(state)
    assert len(saved) == max(1, num_workers), "StatefulDataLoader must save each reader's stream state"
    assert sum(s["batches_yielded"] for s in saved) == k

    _, resumed = loader()
    resumed.load_state_dict(state)
    tail = list(resumed)
    assert_same_batches(head + tail, full)
    loaded = [json.loads(p.read_text()) for p in tmp_path.glob("loaded-*")]
    assert len(loaded) == max(1, num_workers), "StatefulDataLoader must call the stream's load_state_dict"
    assert sorted(s["batches_yielded"] for s in loaded) == sorted(s["batches_yielded"] for s in saved)


# --- S3 ----------------------------------------------------------------------------------------------------


def test_streams_a_store_from_s3(s3_endpoint: str, row_of) -> None:
    s3fs = pytest.importorskip("s3fs")
    options = {"client_kwargs": {"endpoint_url": s3_endpoint}, "key": "x", "secret": "x"}
    s3fs.S3FileSystem(**options).mkdir("xrdmodels-data-test")
    url = "s3://xrdmodels-data-test/train.zarr"
    arrays = write_store(url, SPEC, seed=3, storage_options=options)  # same rows as the local fixture store
    assert arrays is not None
    seen = []
    # Rank 0 reads in this process, rank 1 in two forked DataLoader workers, which must open their own
    # S3 connections (fsspec filesystems are bound to the event loop of the process that made them).
    for rank, num_workers in [(0, 0), (1, 2)]:
        stream = ShardStream(url, BATCH, storage_options=options, rank=rank, world_size=2, drop_last=False)
        batches = collect(DataLoader(stream, batch_size=None, num_workers=num_workers), row_of, arrays)
        assert len(batches) == len(stream)
        seen += sum(batches, [])
    assert sorted(seen) == list(range(SPEC.n_samples))


def test_resume_at_an_epoch_boundary_then_next_epoch(store) -> None:
    """A checkpoint after the last batch of epoch 0 resumes to nothing; epoch 1 then matches a plain run."""
    from torchdata.stateful_dataloader import StatefulDataLoader

    url, _ = store

    def loader() -> tuple[ShardStream, StatefulDataLoader]:
        stream = ShardStream(url, BATCH, seed=2, drop_last=False)
        return stream, StatefulDataLoader(stream, batch_size=None, num_workers=2)

    stream, reference = loader()
    n_epoch0 = sum(1 for _ in reference)
    stream.set_epoch(1)
    epoch1 = list(reference)

    _, interrupted = loader()
    it = iter(interrupted)
    for _ in range(n_epoch0):
        next(it)
    state = interrupted.state_dict()
    del it, interrupted

    stream, resumed = loader()
    resumed.load_state_dict(state)
    assert list(resumed) == []
    stream.set_epoch(1)
    assert_same_batches(list(resumed), epoch1)
