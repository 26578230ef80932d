"""The ``xaiexplain`` command line: argument parsing (``main``) and the batch runs behind it.

One module per job: ``discovery`` (what the INPUT arguments are), ``reading``
(SimpleITK reads and input checks), ``prefetch`` (IO overlapped with
computation), ``writing`` (atomic, non-clobbering outputs), ``staging`` (an
input's files appear together), ``manifest`` (what made an input's files, for
resuming), ``folder_lock`` (one run per output folder), ``signals`` (SIGTERM as
Ctrl-C), ``montage`` (the overlay PNG), ``summary`` (summary.json /
summary.csv), ``progress`` (stderr display), ``run_plan`` (an explain run's
settings, checked once, and the model loaded per process), ``explain_run``
(one input's maps and files), ``explain_one`` (one input: the unit of work),
``cohort`` (resume, dispatch, summary; ``explain_cohort``), ``cluster``
(Dask), ``explain_command`` / ``evaluate_run`` / ``demo`` / ``listing`` (the
commands).  ``main`` only parses arguments and dispatches to them.
"""

from .main import main

__all__ = ["explain_cohort", "main"]


def __getattr__(name: str):
    # The Python API of a cohort run, loaded on first use: ``xaiexplain --help`` stays quick.
    if name == "explain_cohort":
        from .cohort import explain_cohort

        return explain_cohort
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
