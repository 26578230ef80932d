"""The unit of work of a cohort: explain one input into the output folder, return its row.

The in-process loop and the Dask workers both call :func:`explain_one`, so
a cohort gives the same files and rows however it is run.  What travels to a
worker is small and picklable: the input's path (never its voxels), a
:class:`~.run_plan.ExplainSettings` of the run's options, and the output folder's path.  The
worker reads the input itself, writes its files through the staging folder
(all of an input's files appear together, then its manifest) and returns the
:class:`InputRecord`.  The model is loaded once per process and kept
(:func:`job_for`), not once per input.
"""
from __future__ import annotations

import os
import socket
import threading
import time
import traceback
from dataclasses import replace
from pathlib import Path
from typing import Any

import SimpleITK as sitk

from .discovery import InputItem
from .identity import input_identity
from .manifest import COMPLETE, MISSING, record_from_manifest, recorded_files, resume_state
from .run_plan import ExplainSettings, load_run
from .staging import InputStage, rollback
from .summary import InputRecord
from .writing import OutputFolder


_JOBS: dict[tuple, Any] = {}
_LOADS: dict[tuple, int] = {}
_LOCK = threading.Lock()


def job_for(spec: ExplainSettings, output_dir: Path, model=None):
    """The run's :class:`~.run_plan.LoadedRun` in this process, loading the model on first use only.

    ``model`` hands over a model the caller already loaded (the in-process
    run checked the options with it), so it is not loaded twice.
    """
    key = spec.model_key() + (str(output_dir),)
    with _LOCK:
        job = _JOBS.get(key)
        if job is None:
            if spec.threads:
                import torch

                torch.set_num_threads(spec.threads)
            job = load_run(spec, output_dir, model)
            _JOBS[key] = job
            if model is None:
                _LOADS[spec.model_key()] = _LOADS.get(spec.model_key(), 0) + 1
        return job


def model_loads() -> dict[str, int]:
    """How often this process loaded each model (a worker should say 1 per model)."""
    return {str(key[0]): count for key, count in _LOADS.items()}


def forget_jobs() -> None:
    """Drop the kept models (the in-process run does at its end, to free their memory)."""
    with _LOCK:
        _JOBS.clear()


def explain_one(item: InputItem, spec: ExplainSettings, output_dir: str | os.PathLike,
                image: sitk.Image | None = None, read_error: BaseException | None = None,
                progress=None, model=None) -> InputRecord:
    """Explain ``item`` with ``spec`` into ``output_dir``; failures become the record's error.

    ``image``/``read_error`` come from a read-ahead in the caller; without
    them the input is read here.  Only KeyboardInterrupt (Ctrl-C, SIGTERM)
    escapes, after the input's staged files were removed.
    """
    from .explain_run import explain_input, input_error
    from .reading import read_item

    began = time.monotonic()
    output_dir = Path(output_dir)
    record = InputRecord.for_input(item, worker=_worker_name())
    stage = None
    try:
        job = job_for(spec, output_dir, model)
        record.device = device_label(job.device)
        rollback(output_dir, item.stem)  # a commit a killed worker left half done
        protected = [item.path, *item.paths]
        if spec.region:
            protected.append(Path(spec.region))
        out = OutputFolder(output_dir, overwrite=spec.overwrite, protected=protected)
        identity = input_identity(item) if item.error is None else None
        state, _ = resume_state(output_dir, item.stem, spec.fingerprint, identity)
        if state == COMPLETE and read_error is None and item.error is None:
            # a retry of an input already committed (the worker holding its row died before the
            # row was gathered): its outputs are complete and its row is in the manifest
            return record_from_manifest(output_dir, item.stem).name_input(item)
        own = recorded_files(output_dir, item.stem) if state == MISSING else []
        stage = InputStage(out, item.stem, replaceable=own)
        # Made before the input is read: a worker that dies on this input leaves it behind,
        # which is how the cluster tells an input that kills workers from one queued behind it.
        stage.prepare()
        if read_error is not None:
            raise read_error
        if image is None:
            image = read_item(item)
        explain_input(replace(job, out=stage), item, image, record, progress or _Silent())
        if record.status != "partial":  # "partial": some methods could not run (record.error says which)
            record.status = "ok"
        record.seconds = time.monotonic() - began
        stage.commit(record, spec.fingerprint, identity)
    except KeyboardInterrupt:
        if stage is not None:
            stage.discard()
        raise
    except Exception as exc:  # noqa: BLE001 - one input fails, the cohort goes on
        if stage is not None:
            stage.discard()
        record.status, record.error = "failed", input_error(item, exc)
        record.outputs = []
        if spec.debug:
            record.traceback = "".join(traceback.format_exception(type(exc), exc,
                                                                  exc.__traceback__))
    record.seconds = time.monotonic() - began
    return record


def device_label(device) -> str:
    """``cpu``, or ``cuda:N`` naming the physical GPU also when CUDA_VISIBLE_DEVICES renumbers."""
    text = str(device)
    visible = os.environ.get("CUDA_VISIBLE_DEVICES", "")
    if text.startswith("cuda") and visible:
        index = int(text.split(":", 1)[1]) if ":" in text else 0
        physical = [v.strip() for v in visible.split(",") if v.strip()]
        if index < len(physical):
            return f"cuda:{physical[index]}"
    return "cuda:0" if text == "cuda" else text


def _worker_name() -> str:
    """The Dask worker's address, or ``host:pid`` of an in-process run."""
    try:
        from distributed import get_worker

        return get_worker().address
    except (ImportError, ValueError):
        return f"{socket.gethostname()}:{os.getpid()}"


class _Silent:
    """A progress display that shows nothing (workers have no terminal)."""

    def step(self, *args, **kwargs) -> None:
        pass

    def message(self, *args, **kwargs) -> None:
        pass
