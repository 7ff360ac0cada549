"""Dask client set-up shared by the batch commands: a LocalCluster by default, or an existing scheduler."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable, Iterator, Sequence
from typing import Any

from tqdm.auto import tqdm


@contextlib.contextmanager
def dask_client(workers: int, scheduler: str | None) -> Iterator[Any]:
    """Yield a distributed Client, or None for in-process execution (workers == 0 and no scheduler).

    One thread per worker process: the numba kernels and pymatgen hold the GIL or use their own threads.

    Raises:
        ValueError: ``workers`` < 0 (a LocalCluster of no workers would wait for one forever).
    """
    if workers < 0:
        raise ValueError(f"workers must be >= 0 (0 runs in this process without Dask), got {workers}")
    if scheduler is None and workers == 0:
        yield None
        return
    from distributed import Client, LocalCluster

    if scheduler is not None:
        try:
            client = Client(scheduler)
        except (OSError, TimeoutError) as exc:
            raise ValueError(
                f"cannot reach the Dask scheduler at {scheduler} ({type(exc).__name__}: {exc}); start it "
                "(`dask scheduler`, or your cluster's launcher), check the address, or drop --scheduler to run "
                "on this machine"
            ) from None
        try:
            yield client
        finally:
            client.close()
        return
    logging.getLogger("distributed").setLevel(logging.ERROR)
    tracker_was_running = _resource_tracker_running()
    try:
        with (
            LocalCluster(
                n_workers=workers,
                threads_per_worker=1,
                processes=True,
                dashboard_address=None,
                silence_logs=logging.ERROR,
            ) as cluster,
            Client(cluster) as client,
        ):
            yield client
    finally:
        if not tracker_was_running:
            _stop_resource_tracker()


def _resource_tracker_running() -> bool:
    from multiprocessing import resource_tracker

    return getattr(resource_tracker._resource_tracker, "_fd", None) is not None


def _stop_resource_tracker() -> None:
    """Stop and reap the multiprocessing resource tracker that spawning the worker processes started.

    Left alone it outlives this process by up to seconds and is reaped by init, so a caller that waits for the
    whole process group (a shell timing the command, a CI step) sees a leftover process. Only the tracker this
    cluster started is stopped; `_stop` is CPython's own shutdown of it (a new one starts on demand).
    """
    from multiprocessing import resource_tracker

    stop = getattr(resource_tracker._resource_tracker, "_stop", None)
    if stop is not None:
        stop()


def run_tasks(
    client: Any,
    fn: Callable[..., Any],
    keyed_args: Sequence[tuple[int, tuple]],
    on_result: Callable[[int, Any], None],
    *,
    desc: str,
    unit: str,
    total: int | None = None,
    already_done: int = 0,
) -> None:
    """Run fn(*args) for each (key, args), calling on_result(key, result) in the driver as each one finishes.

    Results are handled as they arrive so memory stays bounded and finished work is saved before the next
    one completes; with client None tasks run in this process, in order.
    """
    bar = tqdm(
        total=total if total is not None else len(keyed_args) + already_done,
        initial=already_done,
        desc=desc,
        unit=unit,
        dynamic_ncols=True,
        mininterval=0.5,
    )
    try:
        if client is None:
            for key, args in keyed_args:
                on_result(key, fn(*args))
                bar.update(1)
            return
        from distributed import as_completed

        futures = {}
        for key, args in keyed_args:
            fut = client.submit(fn, *args, pure=False)
            futures[fut] = key
        for fut in as_completed(futures):
            on_result(futures[fut], fut.result())
            fut.release()
            bar.update(1)
    finally:
        bar.close()
