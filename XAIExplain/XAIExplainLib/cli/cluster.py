"""``--cluster``: run a cohort's inputs on Dask workers.

``local:N`` starts a ``LocalCluster`` of N worker processes on this machine:
with GPUs, one GPU per worker (``CUDA_VISIBLE_DEVICES`` set in each worker's
environment before CUDA starts); without, the CPU cores split between the
workers (each runs one input at a time with cores // N torch threads).
``tcp://HOST:PORT`` joins a running scheduler (dask-jobqueue, Kubernetes,
``dask scheduler``); its workers must see the inputs, the model and the
output folder at the same paths.

The settings are :class:`.run_plan.ExplainSettings` (not imported: the
unit of work arrives as an argument, so this module imports neither).

A worker that dies while explaining an input (killed, out of memory) has the
input rescheduled by Dask on another worker, at most
:data:`MAX_WORKER_DEATHS` times on a local cluster (a scheduler elsewhere uses
its own ``distributed.scheduler.allowed-failures``); an input that keeps
killing workers is reported as failed.  An input that fails with an error is
reported at once and never retried: the same input fails the same way.

Dask is the optional extra ``cluster``, imported only here.
"""
from __future__ import annotations

import contextlib
import logging
import os
from pathlib import Path
from typing import Iterator, Sequence

from ..extras import install_hint
from .discovery import InputItem
from .errors import UserError, one_line
from .summary import InputRecord

#: How many times a local cluster reschedules an input whose worker died.
MAX_WORKER_DEATHS = 2
#: How many times an input Dask gave up on, but which never started, is submitted again.
MAX_REQUEUES = 3

_INSTALL = install_hint("cluster")


def parse_cluster(text: str) -> tuple[str, int | str]:
    """``("local", N)`` or ``("address", "tcp://HOST:PORT")``; anything else is refused."""
    value = str(text).strip()
    if value.startswith("local:"):
        count = value.split(":", 1)[1]
        if not count.isdigit() or int(count) < 1:
            raise UserError(f"--cluster {value}", "the number of local workers must be a "
                                                  "positive integer, as in local:4")
        return "local", int(count)
    if "://" in value and value.split("://", 1)[1]:
        return "address", value
    raise UserError(f"--cluster {value}", "must be local:N (N worker processes on this machine) "
                                          "or the address of a running Dask scheduler, as in "
                                          "tcp://HOST:8786")


def require_dask():
    """The distributed package, or a UserError saying how to install the extra."""
    try:
        import distributed
    except ImportError as exc:
        raise UserError("--cluster", f"needs Dask, which is not installed ({_INSTALL})") from exc
    return distributed


@contextlib.contextmanager
def open_client(text: str, spec: ExplainSettings,
                stderr) -> Iterator[tuple[object, ExplainSettings]]:
    """A client of the asked-for cluster, and ``spec`` with the workers' thread count."""
    kind, value = parse_cluster(text)
    distributed = require_dask()
    if kind == "address":
        try:
            client = distributed.Client(value, timeout="10s")
        except (OSError, TimeoutError) as exc:
            raise UserError(f"--cluster {value}", f"cannot reach the Dask scheduler "
                                                  f"({one_line(exc)}); start one with 'dask "
                                                  "scheduler' or check the address") from exc
        with client:
            yield client, spec
        return
    cluster, spec = start_local_cluster(int(value), spec)
    with cluster, distributed.Client(cluster) as client:
        print(f"xaiexplain: Dask cluster of {value} worker(s); {dashboard_line(cluster)}",
              file=stderr)
        yield client, spec


def start_local_cluster(workers: int, spec: ExplainSettings):
    """A ``LocalCluster`` of ``workers`` processes, one GPU or cores // N threads each."""
    import dask
    from distributed import LocalCluster

    gpus = _gpus(spec.device)
    if gpus and workers > len(gpus):
        raise UserError(f"--cluster local:{workers}", f"one worker per GPU, and this machine has "
                                                      f"{len(gpus)}; use local:{len(gpus)} or "
                                                      "--device cpu")
    threads = max(1, cpu_cores() // workers)
    env = {"OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads)}

    class _OneGpuPerWorker(LocalCluster):
        """Gives worker number i the i-th GPU, through its environment."""

        def new_worker_spec(self):
            new = super().new_worker_spec()
            for name, worker in new.items():
                if gpus:
                    options = dict(worker["options"])
                    options["env"] = {**options.get("env", {}),
                                      "CUDA_VISIBLE_DEVICES": gpus[int(name) % len(gpus)]}
                    worker["options"] = options
            return new

    # Dask's default environment for new workers also sets MALLOC_TRIM_THRESHOLD_, which
    # turns off glibc's adaptive mmap threshold: every large buffer of an attribution is
    # then a fresh mmap and its page faults made each input 2-4x slower than in-process.
    # The workers get the thread counts only, and glibc's defaults like this process.
    spawn_environment = {name: str(threads) for name in
                         ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS")}
    with dask.config.set({"distributed.scheduler.allowed-failures": MAX_WORKER_DEATHS,
                          "distributed.nanny.pre-spawn-environ": spawn_environment}):
        cluster = _OneGpuPerWorker(n_workers=workers, threads_per_worker=1, processes=True,
                                   dashboard_address=":0", env=env,
                                   silence_logs=logging.ERROR)
    from dataclasses import replace

    return cluster, replace(spec, threads=threads)


def dashboard_line(cluster) -> str:
    """Where Dask's dashboard is, or why there is none."""
    import importlib.util

    services = getattr(getattr(cluster, "scheduler", None), "services", {}) or {}
    if "dashboard" not in services:
        return "no dashboard"
    if importlib.util.find_spec("bokeh") is None:
        return f"dashboard at {cluster.dashboard_link} (its plots need bokeh: pip install bokeh)"
    return f"dashboard at {cluster.dashboard_link}"


def run_on_cluster(client, items: Sequence[InputItem], todo: Sequence[int],
                   spec: ExplainSettings, folder, work) -> Iterator[tuple[int, InputRecord]]:
    """Submit ``work(item, spec, folder)`` for the inputs ``todo`` (the unit of work,
    :func:`.explain_one.explain_one`); yield ``(index, record)`` as each finishes, in any order.

    Dask counts a worker's death against every input assigned to that worker,
    also those only waiting in its queue: a healthy input queued behind one
    that kills its worker collects the same count and was reported as killing
    workers itself (on a loaded machine, or always on a one-worker cluster).
    An input reported so whose work never started (it leaves its staging
    folder behind only when its worker dies under it) is innocent: it is
    submitted again, at most :data:`MAX_REQUEUES` times.
    """
    from distributed import as_completed

    futures: dict = {}

    def submit(index: int):
        item = items[index]
        future = client.submit(work, item, spec, str(folder), pure=False,
                               key=f"xaiexplain-{item.stem}-{os.urandom(4).hex()}")
        futures[future] = index
        return future

    for index in todo:
        submit(index)
    requeued: dict[int, int] = {}
    # Results are gathered as each input finishes: a worker that dies later takes nothing with it.
    finished = as_completed(list(futures), with_results=True, raise_errors=False)
    try:
        for future, result in finished:
            index = futures.pop(future)
            if _killed_without_starting(future, result, items[index], folder) \
                    and requeued.get(index, 0) < MAX_REQUEUES:
                requeued[index] = requeued.get(index, 0) + 1
                finished.add(submit(index))
                continue
            yield index, _record(future, result, items[index], spec, folder)
    finally:
        client.cancel([f for f in futures if not f.done()])


def _killed_without_starting(future, result, item: InputItem, folder) -> bool:
    """Dask gave up on ``item`` for killing workers, yet its work never started on any of them."""
    from .staging import stage_of

    if future.status != "error":
        return False
    # as_completed(with_results=True) hands an error over as (type, exception, traceback)
    error = result if isinstance(result, BaseException) else future.exception()
    if type(error).__name__ != "KilledWorker":
        return False
    try:
        return not any(stage_of(item.stem, entry.name) for entry in Path(folder).iterdir())
    except OSError:
        return False


def _record(future, result, item: InputItem, spec: ExplainSettings, folder) -> InputRecord:
    if future.status == "finished" and isinstance(result, InputRecord):
        return result
    from .identity import input_identity
    from .manifest import COMPLETE, record_from_manifest, resume_state

    if item.error is None and resume_state(Path(folder), item.stem, spec.fingerprint,
                                           input_identity(item))[0] == COMPLETE:
        # the input was finished and committed, but the worker holding its row died before the
        # row was gathered (it was then lost with the worker): the manifest has the row
        return record_from_manifest(Path(folder), item.stem).name_input(item)
    error = result if isinstance(result, BaseException) else future.exception()
    record = InputRecord.for_input(item, status="failed")
    if type(error).__name__ == "KilledWorker":
        record.error = (f"{item.source}: the worker explaining it died each time it was tried "
                        "(killed, or out of memory); not retried further")
    else:
        record.error = f"{item.source}: failed on the cluster: {type(error).__name__}: " \
                       f"{one_line(error)}"
    return record


def _gpus(device: str) -> list[str]:
    """The GPUs the workers share out, when the run uses CUDA."""
    if device not in ("auto", "cuda"):
        return []
    import torch

    if not torch.cuda.is_available():
        return []
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    if visible:
        return [v.strip() for v in visible.split(",") if v.strip()]
    return [str(i) for i in range(torch.cuda.device_count())]


def cpu_cores() -> int:
    """The cores this process may run on (its affinity, where the system says)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:
        return os.cpu_count() or 1
