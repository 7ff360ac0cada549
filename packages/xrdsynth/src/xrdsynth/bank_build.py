"""`xrdsynth bank build`: sources -> chunks of entries computed on Dask -> one bank store, resumable."""

from __future__ import annotations

import hashlib
import json
import logging
import os
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING

import zarr

from .bank import BANK_FORMAT, Bank, BankError, PartFileError, PartStore, assemble, compute_chunk
from .cluster import dask_client, run_tasks
from .config import BankConfig
from .store import StoreError, refuse_foreign_target

if TYPE_CHECKING:
    from .structures import SourceItem

log = logging.getLogger(__name__)


def _existing_state(url: str, storage_options: dict | None) -> tuple[bool, dict]:
    try:
        group = zarr.open_group(url, mode="r", storage_options=storage_options)
    except Exception:  # noqa: BLE001 - nothing there (or unreadable): treat as absent
        return False, {}
    return True, dict(group.attrs)


def distinct_ids(items: Sequence[SourceItem]) -> list[SourceItem]:
    """The items with an id that another item read from a different input already has renamed
    ``<source folder's name>/<id>`` (``aflow/AB_oP8_62_c_c``; a number is added while that is taken too).

    Ids of files are their paths inside their source, so two sources can hold different structures under one
    name (robocrys's and aflow's ``AB_oP8_62_c_c.cif``: FeB and SnS). The first keeps its id, so a bank's other
    ids do not change; the same input listed twice keeps one id and stays a duplicate (assemble drops it)."""
    from .structures import input_file

    assigned: dict[tuple[str, str, str], str] = {}  # (id, real file, part inside it) -> the id it gets
    owned: set[str] = set()
    taken = {it.entry_id for it in items}
    renamed = []
    for it in items:
        path = input_file(it)
        if path is None:  # generated: equal ids are equal crystals
            renamed.append(it)
            continue
        # The same input however its path was written: the real file, and the block, row or member within it.
        inside = it.locator[len(path) :] if it.locator.startswith(path) else it.locator
        key = (it.entry_id, os.path.realpath(path), inside)
        if key not in assigned:
            new_id, k = it.entry_id, 1
            if it.entry_id in owned:
                folder = Path(it.source.rstrip("/\\")).name or it.source
                new_id = f"{folder}/{it.entry_id}"
                while new_id in taken:
                    k += 1
                    new_id = f"{folder}-{k}/{it.entry_id}"
                taken.add(new_id)
                log.info("%s: id %s is another input's; this one is %s", it.locator, it.entry_id, new_id)
            owned.add(it.entry_id)
            assigned[key] = new_id
        renamed.append(it if assigned[key] == it.entry_id else replace(it, entry_id=assigned[key]))
    return renamed


def compute_build_key(
    items: Sequence[SourceItem],
    config: BankConfig,
    seed: int,
    skipped_sources: Sequence[dict[str, str]] = (),
) -> str:
    """Hash of everything a bank depends on: config, seed, the listed items and the bytes of their files.

    Files are hashed whole (an archive as one file), so an edited CIF changes the key even when its size
    and modification time do not; sources that could not be listed enter with their reason.
    """
    from .structures import file_sha256, input_file

    h = hashlib.sha256(config.model_dump_json().encode() + str(seed).encode())
    for it in items:
        h.update(f"{it.source}\x00{it.locator}\x00{it.entry_id}\n".encode())
    for bad in skipped_sources:
        h.update(f"unusable\x00{bad['source']}\x00{bad['reason']}\n".encode())
    for path in sorted({p for it in items if (p := input_file(it)) is not None}):
        try:
            digest = file_sha256(path)
        except OSError as exc:  # reported per item when the chunk reads it
            digest = f"unreadable: {type(exc).__name__}"
        h.update(f"{path}\x00{digest}\n".encode())
    return h.hexdigest()[:16]


def _same_command(attrs: dict, sources: list[str], config: BankConfig, seed: int) -> bool:
    return (
        attrs.get("sources") == list(sources)
        and attrs.get("seed") == seed
        and attrs.get("config") == json.loads(config.model_dump_json())
    )


def build_bank(
    sources: list[str],
    url: str,
    config: BankConfig,
    *,
    seed: int = 0,
    workers: int = 2,
    scheduler: str | None = None,
    overwrite: bool = False,
    strict: bool = False,
    storage_options: dict | None = None,
) -> Bank:
    """Build (or resume building) a bank at `url` from `sources` and return it opened.

    A rerun with the same sources, seed, config and input contents resumes from the finished chunks of an
    interrupted build, or returns the finished bank untouched; the same command after an input file was
    edited rebuilds the bank. A different build at the same place needs overwrite. A source that cannot be
    listed (missing, empty, unreadable, wrong format) is reported, recorded among the skipped inputs and
    left out, unless ``strict``, which raises ``ValueError`` for it instead. ``storage_options``: fsspec options of
    a remote ``url`` (endpoint, credentials), which is checked to be reachable before anything is computed.
    """
    from .generate import check_remote_reachable, local_path
    from .structures import list_items

    if local_path(url) is not None:
        if storage_options:
            raise BankError(
                f"--storage-option applies to a remote --out URL (s3://...), not to the local path {url}; drop "
                "it or give an s3:// URL"
            )
    else:
        check_remote_reachable(url, storage_options)

    if not sources:
        raise ValueError("no --source given; try `--source builtin --source random:1`")
    items = []
    skipped_sources: list[dict[str, str]] = []
    for source in sources:
        try:
            items.extend(list_items(source, seed=seed))
        except (ValueError, OSError) as exc:
            if strict:
                raise ValueError(f"{exc} (--strict stops at the first unusable source)") from exc
            log.warning("skipping unusable source: %s", exc)
            skipped_sources.append(
                {"source": source, "provenance": source, "reason": f"unusable source: {exc}"}
            )
    if not items:
        detail = "".join(f"\n  {s['reason']}" for s in skipped_sources)
        raise ValueError(f"the sources {list(sources)} contain no structures{detail}")
    items = distinct_ids(items)
    build_key = compute_build_key(items, config, seed, skipped_sources)

    try:
        refuse_foreign_target(url, storage_options)
    except StoreError as exc:
        raise BankError(str(exc)) from None
    exists, attrs = _existing_state(url, storage_options)
    if exists and attrs:
        if attrs.get("complete") and attrs.get("build_key") == build_key and not overwrite:
            log.info(
                "bank at %s is already complete for these sources, contents and config; nothing to do", url
            )
            return Bank.open(url, storage_options)
        if attrs.get("format") not in (None, BANK_FORMAT):
            raise BankError(f"{url} holds something other than an xrdsynth bank; choose another --out")
        if attrs.get("complete") and not overwrite:
            if not _same_command(attrs, sources, config, seed):
                raise BankError(
                    f"{url} already holds a bank built from other sources or settings; pass --overwrite to "
                    "replace it"
                )
            log.warning(
                "the inputs of the bank at %s changed since it was built (same sources and settings, "
                "different file contents or listing); rebuilding it",
                url,
            )

    chunk = config.chunk_size
    chunks = [items[i : i + chunk] for i in range(0, len(items), chunk)]
    parts = PartStore(url, build_key, config.grid.n_bins, storage_options)
    done = parts.done()
    todo = [(i, (c, config, seed)) for i, c in enumerate(chunks) if i not in done]
    if done:
        log.info("resuming: %d of %d chunks already computed", len(done), len(chunks))
    with dask_client(workers, scheduler) as client:
        run_tasks(
            client,
            compute_chunk,
            todo,
            parts.write,
            desc="bank",
            unit="chunk",
            total=len(chunks),
            already_done=len(done),
        )
    try:
        results = [parts.read(i) for i in range(len(chunks))]
    except PartFileError as exc:
        raise BankError(f"{exc}; a part file changed during the build, rerun the same command") from exc
    bank = assemble(url, config, results, seed, sources, build_key, skipped_sources, storage_options)
    parts.remove()
    return bank
