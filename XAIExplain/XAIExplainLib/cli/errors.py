"""Errors a user can fix, and the exit statuses the command line reports.

A cohort run must tell a script three things apart: everything worked, some
inputs failed but the others were written, and nothing could be done.  Every
problem with a file or an option is raised as :class:`UserError` carrying the
thing at fault (a file, a folder, an option) and what is wrong with it, so the
command line can print it as one line without a traceback.
"""
from __future__ import annotations

#: Every input was explained and every output written.
EXIT_OK = 0
#: A batch finished, but at least one input failed (each was reported on stderr).
EXIT_SOME_FAILED = 1
#: Bad usage or bad input: nothing was produced (a single bad input, an unknown model...).
EXIT_BAD_INPUT = 2
#: The run was interrupted (Ctrl-C); finished outputs are complete, nothing is truncated.
EXIT_INTERRUPTED = 130

EXIT_STATUS_HELP = f"""\
exit status:
  {EXIT_OK}    every input was explained and every output written
  {EXIT_SOME_FAILED}    a batch finished but some inputs failed (each one is reported on stderr,
       the others are complete; summary.json lists which)
  {EXIT_BAD_INPUT}    bad usage or input, nothing produced (a missing or unreadable file, an
       unknown model or method, a mask off the input grid, an unwritable output folder,
       or every input of a batch failed)
  {EXIT_INTERRUPTED}  interrupted; outputs already written are complete, none is truncated"""


class UserError(Exception):
    """A problem the user can fix, shown as ``<subject>: <problem>``.

    ``subject`` names what is at fault (a path, ``--method``, a model name) so
    that in a batch of hundreds of files the message points at the right one.
    """

    def __init__(self, subject: object, problem: str):
        super().__init__(f"{subject}: {problem}")
        self.subject = str(subject)
        self.problem = problem

    def __reduce__(self):
        # Travels to and from Dask workers inside input items and results.
        return (type(self), (self.subject, self.problem))


def one_line(error: BaseException) -> str:
    """The first non-empty line of an exception message (SimpleITK's are multi-line)."""
    text = str(error).strip()
    for line in text.splitlines():
        line = line.strip()
        if line:
            return line
    return type(error).__name__
