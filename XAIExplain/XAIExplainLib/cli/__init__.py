"""The ``xaiexplain`` command line: argument parsing (``main``) and the batch runs behind it.

One module per job: ``discovery`` (what the INPUT arguments are), ``reading``
(SimpleITK reads and input checks), ``prefetch`` (IO overlapped with
computation), ``writing`` (atomic, non-clobbering outputs), ``montage`` (the
overlay PNG), ``summary`` (summary.json / summary.csv), ``progress`` (stderr
display), ``explain_run`` / ``evaluate_run`` / ``demo`` / ``listing`` (the
commands).  ``main`` only parses arguments and dispatches to them.
"""

from .main import main

__all__ = ["main"]
