"""`xrdsynth bank build`: sources -> chunks of entries computed on Dask -> one bank store, resumable."""

from __future__ import annotations

import hashlib
import logging

import zarr

from .bank import Bank, BankError, PartStore, assemble, compute_chunk
from .cluster import dask_client, run_tasks
from .config import BankConfig

log = logging.getLogger(__name__)


def _existing_state(url: str) -> tuple[bool, dict]:
    try:
        group = zarr.open_group(url, mode="r")
    except Exception:  # noqa: BLE001 - nothing there (or unreadable): treat as absent
        return False, {}
    return True, dict(group.attrs)


def build_bank(
    sources: list[str],
    url: str,
    config: BankConfig,
    *,
    seed: int = 0,
    workers: int = 2,
    scheduler: str | None = None,
    overwrite: bool = False,
) -> Bank:
    """Build (or resume building) a bank at `url` from `sources` and return it opened.

    A rerun with the same sources, seed and config resumes from the finished chunks of an interrupted
    build, or returns the finished bank untouched. A different build at the same place needs overwrite.
    """
    from .structures import list_items

    if not sources:
        raise ValueError("no --source given; try `--source builtin --source random:1`")
    items = []
    for source in sources:
        items.extend(list_items(source, seed=seed))
    if not items:
        raise ValueError(f"the sources {sources} contain no structures")
    h = hashlib.sha256(config.model_dump_json().encode() + str(seed).encode())
    for it in items:
        h.update(f"{it.source}\x00{it.locator}\x00{it.entry_id}\n".encode())
    build_key = h.hexdigest()[:16]

    exists, attrs = _existing_state(url)
    if exists and attrs:
        if attrs.get("complete") and attrs.get("build_key") == build_key and not overwrite:
            log.info("bank at %s is already complete for these sources and config; nothing to do", url)
            return Bank.open(url)
        if attrs.get("format") not in (None, "xrdsynth.bank"):
            raise BankError(f"{url} holds something other than an xrdsynth bank; choose another --out")
        if attrs.get("complete") and not overwrite:
            raise BankError(
                f"{url} already holds a bank built from other sources or settings; pass --overwrite to replace it"
            )

    chunk = config.chunk_size
    chunks = [items[i : i + chunk] for i in range(0, len(items), chunk)]
    parts = PartStore(url, build_key)
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
    results = [parts.read(i) for i in range(len(chunks))]
    bank = assemble(url, config, results, seed, sources, build_key)
    parts.remove()
    return bank
