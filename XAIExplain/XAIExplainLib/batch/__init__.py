"""Headless batch explanation behind the ``xaiexplain`` command line.

One module per job: ``discovery`` (what the INPUT arguments are), ``reading``
(SimpleITK reads and input checks), ``prefetch`` (IO overlapped with
computation), ``writing`` (atomic, non-clobbering outputs), ``montage`` (the
overlay PNG), ``summary`` (summary.json / summary.csv), ``progress`` (stderr
display), ``explain_run`` / ``evaluate_run`` / ``demo`` / ``listing`` (the
commands).  ``XAIExplainLib.cli`` only parses arguments and dispatches here.
"""
