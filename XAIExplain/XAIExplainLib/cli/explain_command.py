"""``xaiexplain explain``: build the run's settings from the command line, run the cohort, report.

Everything that does not depend on an input is checked before the first input
is read (:func:`.run_plan.explain_settings`, then :func:`.run_plan.plan` with
the model loaded): methods, classes, the layer of every layer-based method,
the label threshold, the cluster, the output folder.  The inputs are then run
by :func:`.cohort.run_cohort`, in this process or on Dask workers.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from .errors import EXIT_BAD_INPUT, EXIT_OK, EXIT_SOME_FAILED
from .progress import Progress
from .run_plan import ExplainSettings, explain_settings, plan
from .summary import RunSummary

PROG = "xaiexplain"


def settings_from_args(args: argparse.Namespace) -> ExplainSettings:
    """The run's settings from parsed ``explain`` arguments (checked by explain_settings)."""
    return explain_settings(
        args.model, args.methods, targets=args.targets, layer=args.layer, mode=args.mode,
        axis=args.axis, device=args.device, format=args.format,
        label_threshold=args.label_threshold, overlay=args.overlay, region=args.region,
        trust=getattr(args, "trust_model", False), overwrite=args.overwrite,
        debug=getattr(args, "debug", False),
        memory_budget_mb=getattr(args, "memory_budget", None), modality=getattr(args, "modality", None),
        options=getattr(args, "options", None), cluster=getattr(args, "cluster", None),
        jobs=args.jobs)


def run_explain(args: argparse.Namespace, stdout=None, stderr=None) -> int:
    """Run ``explain`` for parsed arguments; returns the exit status."""
    from .cohort import run_cohort
    from .signals import sigterm_as_interrupt

    stdout = stdout or sys.stdout
    stderr = stderr or sys.stderr
    with sigterm_as_interrupt():
        settings, items, model, notes = plan(settings_from_args(args), args.inputs,
                                             args.output_dir)
        for note in notes:
            print(f"{PROG}: note: {note}", file=stderr)
        progress = Progress(len(items), stream=stderr, enabled=not args.quiet)
        if len(items) == 1 and not progress.interactive:
            progress.enabled = False  # "[1/1] x: ok" lines add nothing; errors still print
        summary = run_cohort(settings, items, args.output_dir, model=model,
                             cluster=settings.cluster, jobs=settings.jobs, progress=progress,
                             stderr=stderr, options=_options(args))
    return finish(summary, Path(args.output_dir), args.quiet, stdout, stderr)


def finish(summary: RunSummary, output_dir: Path, quiet: bool, stdout, stderr) -> int:
    """Report where the outputs are; the exit status says whether everything was written."""
    ok, total = len(summary.succeeded), len(summary.records)
    for problem in summary.problems:
        print(f"{PROG}: error: {problem}", file=stderr)
    if not quiet and ok:
        skipped = f" ({len(summary.skipped)} complete from an earlier run)" if summary.skipped else ""
        if summary.partial:
            skipped += f" ({len(summary.partial)} with method(s) that could not run: see above)"
        where = ("summary.json, summary.csv" if not summary.problems
                 else "summary.json and summary.csv NOT written")
        print(f"Explained {ok} of {total} input(s){skipped} in {summary.seconds:.1f} s on "
              f"{summary.device}; outputs in {output_dir}/ ({where})", file=stdout)
    if ok == total and not summary.problems and not summary.partial:
        return EXIT_OK
    if summary.partial:
        return EXIT_SOME_FAILED  # some methods were written, others could not run
    return EXIT_SOME_FAILED if ok else EXIT_BAD_INPUT


def _options(args: argparse.Namespace) -> dict[str, Any]:
    keep = ("model", "methods", "options", "targets", "region", "layer", "mode", "axis", "device", "format",
            "label_threshold", "overlay", "jobs", "cluster", "memory_budget", "modality", "output_dir", "overwrite")
    return {k: getattr(args, k) for k in keep if hasattr(args, k)}
