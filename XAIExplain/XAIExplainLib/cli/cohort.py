"""Explain a cohort into one output folder: resume, run in-process or on Dask, summarise.

:func:`run_cohort` is the one loop behind ``xaiexplain explain`` and
:func:`explain_cohort` (the Python API).  Under the folder's lock it first
removes what killed runs left, then reads every input's manifest: inputs
whose outputs are complete and were made with the same model and options are
skipped, outputs made another way are refused unless ``overwrite``, and the
rest is computed by :func:`.explain_one.explain_one`, in this process (with
inputs read ahead) or on the workers of a Dask cluster.  Rows come back in any
order and are put in input order, so the summary does not depend on which
worker finished first.
"""
from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path
from typing import Any, Iterator, Sequence

from .discovery import InputItem
from .errors import UserError
from .explain_one import explain_one, forget_jobs
from .folder_lock import FolderLock
from .identity import input_identity
from .manifest import COMPLETE, DIFFERENT, manifest_name, record_from_manifest, resume_state
from .prefetch import prefetch
from .progress import Progress
from .run_plan import ExplainSettings, explain_settings, plan
from .small_files import read_small_text
from .staging import clean_folder
from .summary import SUMMARY_CSV, SUMMARY_JSON, InputRecord, RunSummary
from .writing import OutputFolder

PROG = "xaiexplain"
#: Largest summary.json read back to see whether an earlier run of ours wrote it.
SUMMARY_LIMIT = 256 << 20


def explain_cohort(model: str | os.PathLike, inputs: Sequence[str | os.PathLike],
                   output_dir: str | os.PathLike, methods: str | Sequence[str], *,
                   targets: Sequence[str | int] | None = None, layer: str | None = None,
                   mode: str | None = None, axis: str | None = None, device: str = "auto",
                   format: str | None = None, label_threshold: float | str | None = None,
                   overlay: bool = False, region: str | os.PathLike | None = None,
                   trust: bool = False, overwrite: bool = False, client=None,
                   cluster: str | None = None, jobs: int = 1, progress: bool = False,
                   stderr=None, modality: str | None = None) -> RunSummary:
    """Explain every input into ``output_dir`` as ``xaiexplain explain`` does; returns the summary.

    ``model`` is a model name, folder or card path (it travels to the
    workers, which load it themselves).  ``client`` is a
    ``distributed.Client`` to run on; ``cluster`` (``"local:N"`` or a
    scheduler address) starts or joins one; with neither, the inputs are
    explained in this process.  A second call into the same folder skips the
    inputs that are complete.  ``modality`` picks the input pipeline of a model with one per modality
    (CT, MR; None: each image's header or intensities decide).  Bad options raise :class:`UserError`; failed
    inputs are rows with ``status == "failed"``.
    """
    if not isinstance(model, (str, os.PathLike)):
        raise TypeError("model must be a model name, a model folder or a card.json path (the "
                        f"workers load it themselves), got {type(model).__name__}")
    settings = explain_settings(model, methods, targets=targets, layer=layer, mode=mode,
                                axis=axis, device=device, format=format,
                                label_threshold=label_threshold, overlay=overlay, region=region,
                                trust=trust, overwrite=overwrite, cluster=cluster, jobs=jobs, modality=modality)
    stderr = stderr or sys.stderr
    settings, items, loaded, notes = plan(settings, inputs, output_dir, remote=client is not None)
    for note in notes:
        print(f"{PROG}: note: {note}", file=stderr)
    shown = Progress(len(items), stream=stderr, enabled=progress)
    options = {"model": str(model), "methods": list(settings.methods),
               "targets": list(settings.targets) if settings.targets else None, "layer": layer,
               "mode": mode, "axis": axis, "device": device, "format": format,
               "label_threshold": None if label_threshold is None else str(label_threshold),
               "overlay": overlay, "region": None if region is None else str(region),
               "trust_model": trust, "overwrite": overwrite, "jobs": jobs, "cluster": cluster, "modality": modality,
               "output_dir": str(output_dir)}
    return run_cohort(settings, items, output_dir, model=loaded, client=client, cluster=cluster,
                      jobs=jobs, progress=shown, stderr=stderr, options=options)


def run_cohort(spec: ExplainSettings, items: Sequence[InputItem], output_dir: str | os.PathLike, *,
               model=None, client=None, cluster: str | None = None, jobs: int = 1,
               progress: Progress | None = None, stderr=None,
               options: dict[str, Any] | None = None) -> RunSummary:
    """Explain ``items`` with ``spec``; returns the summary (also written as summary.json/csv)."""
    stderr = stderr or sys.stderr
    progress = progress or Progress(len(items), stream=stderr, enabled=False)
    started = time.monotonic()
    protected = [i.path for i in items] + [path for i in items for path in i.paths]
    if spec.region:
        protected.append(Path(spec.region))
    out = OutputFolder(output_dir, overwrite=spec.overwrite, protected=protected)
    out.prepare()
    summary = RunSummary(command="explain", model=spec.fingerprint.get("model", spec.model),
                         model_source=dict(spec.source), methods=list(spec.methods), device=spec.device,
                         options=options or {})
    records: list[InputRecord | None] = [None] * len(items)
    try:
        with FolderLock(out.path):
            clean_folder(out.path)
            _check_summary_replaceable(out)
            todo = _resume(items, out.path, spec, records, progress)
            # Staging folders left by workers that died: once every input has its row, or
            # once this machine's own workers have stopped, none of them is still in use.
            stopped = client is None and (cluster is None or cluster.startswith("local:"))
            try:
                for index, record in _dispatch(items, todo, spec, out.path, model, client,
                                               cluster, jobs, progress, stderr):
                    records[index] = record
                    _report(progress, index, record, stderr)
                stopped = True
            except KeyboardInterrupt:
                summary.interrupted = True
                raise
            finally:
                progress.close()
                if stopped:
                    clean_folder(out.path)
                summary.records = [r for r in records if r is not None]
                if client is not None or cluster is not None:
                    computed = sorted({r.device for r in summary.records if r.device})
                    summary.device = ", ".join(computed) or spec.device
                summary.seconds = time.monotonic() - started
                if summary.succeeded:
                    _write_summary(out, summary)
    finally:
        forget_jobs()
        if not summary.succeeded:  # a run that produced nothing leaves nothing behind
            out.discard_if_unused()
    return summary


def _resume(items: Sequence[InputItem], folder: Path, spec: ExplainSettings,
            records: list[InputRecord | None], progress: Progress) -> list[int]:
    """Fill ``records`` with the complete inputs; the indices of those left to compute."""
    todo = []
    for index, item in enumerate(items):
        if item.error is not None:
            todo.append(index)
            continue
        state, difference = resume_state(folder, item.stem, spec.fingerprint,
                                         input_identity(item))
        if state == DIFFERENT and not spec.overwrite:
            raise UserError(folder / manifest_name(item.stem),
                            f"the outputs of {item.source} {difference}; pass --overwrite to "
                            "replace them or choose another --output-dir")
        if state == COMPLETE:
            record = record_from_manifest(folder, item.stem).name_input(item)
            record.skipped = True
            records[index] = record
            progress.skip(index + 1, item.source)
        else:
            todo.append(index)
    return todo


def _dispatch(items, todo, spec, folder, model, client, cluster, jobs, progress,
              stderr) -> Iterator[tuple[int, InputRecord]]:
    if client is not None:
        from .cluster import run_on_cluster

        yield from run_on_cluster(client, items, todo, spec, folder, explain_one)
    elif cluster is not None:
        from .cluster import open_client, run_on_cluster

        with open_client(cluster, spec, stderr) as (client, spec):
            yield from run_on_cluster(client, items, todo, spec, folder, explain_one)
    else:
        from .reading import read_item

        chosen = [items[i] for i in todo]
        for index, (item, image, error) in zip(todo, prefetch(chosen, read_item, jobs)):
            progress.start(index + 1, item.source)
            yield index, explain_one(item, spec, folder, image=image, read_error=error,
                                     progress=progress, model=model)


def _report(progress: Progress, index: int, record: InputRecord, stderr) -> None:
    if record.status == "partial":  # written, but some methods could not run
        progress.close()
        print(f"{PROG}: error: {record.error}", file=stderr)
    elif record.status != "ok":
        progress.close()
        if record.traceback:
            stderr.write(record.traceback)
        print(f"{PROG}: error: {record.error}", file=stderr)
        progress.report(index + 1, record.input, False, "")
        return
    where = f" on {record.worker}" if record.worker and "tcp://" in record.worker else ""
    progress.report(index + 1, record.input, True,
                    f"({record.seconds:.1f} s, {len(record.outputs)} files{where})")


def _check_summary_replaceable(out: OutputFolder) -> None:
    """The summary of an earlier run into the folder is replaced; any other file is not."""
    path = out.destination(SUMMARY_JSON)
    if os.path.lexists(path):
        try:
            ours = json.loads(read_small_text(path, SUMMARY_LIMIT)).get("command") == "explain"
        except (OSError, ValueError, AttributeError):  # NotAFileError is a ValueError
            ours = False
        if ours:
            return
    out.check_free([SUMMARY_JSON, SUMMARY_CSV])


def _write_summary(out: OutputFolder, summary: RunSummary) -> None:
    """Both summary files, replacing an earlier run's; a failure is kept in ``summary.problems``."""
    writer = OutputFolder(out.path, overwrite=True)
    for text, name in ((summary.to_json(), SUMMARY_JSON), (summary.to_csv(), SUMMARY_CSV)):
        try:
            writer.write_text(text, name)
        except (UserError, OSError) as exc:
            summary.problems.append(f"{exc}; the run's summary is incomplete (each input's "
                                    f"{manifest_name('<stem>')} holds its row)")
