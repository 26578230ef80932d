"""Exceptions raised while reading model cards and loading weights.

They subclass ``ValueError`` so that callers catching the standard exception
keep working, while the Slicer logic and the command line can tell a broken
card from a broken weights file and show the right hint to the user.
"""


class ModelCardError(ValueError):
    """A card.json is missing a field, has a wrong type, or contradicts itself."""


class WeightsError(ValueError):
    """A weights file is corrupt, truncated, or does not fit the architecture."""


class UntrustedModelError(ValueError):
    """Loading the file would unpickle arbitrary objects, and ``trust`` was not given."""


def first_line(exc: BaseException) -> str:
    """The first line of an exception's message (its type name when empty), for one-line errors."""
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__
