"""Where the module's resources (bundled models, colour tables) are.

In Slicer and in a source checkout (editable install) they are ``XAIExplain/Resources``
beside the package; a wheel install carries the same folder inside the package as
``XAIExplainLib/Resources`` (see pyproject.toml). One lookup serves all three.
"""
from __future__ import annotations

from pathlib import Path

_PACKAGE = Path(__file__).resolve().parent


def resources_dir() -> Path:
    for candidate in (_PACKAGE.parent / "Resources", _PACKAGE / "Resources"):
        if candidate.is_dir():
            return candidate
    raise FileNotFoundError(
        f"the XAIExplain resources folder is missing (looked in {_PACKAGE.parent / 'Resources'} and "
        f"{_PACKAGE / 'Resources'}); reinstall the package"
    )
