"""What the module needs in Slicer's Python, and installing it on first Apply (never at import).

torch goes through the PyTorch extension's installer when it is there (it picks the CUDA
build that fits the machine), else through pip; the rest from ``Resources/requirements.txt``.
The installers are given by the caller (the Slicer module passes ``slicer.util.pip_install``
and the PyTorch extension's logic), so this runs and is tested without Slicer.
"""
from __future__ import annotations

import importlib.util
from typing import Callable, Sequence

REQUIRED = ("torch",)


def missing_dependencies(required: Sequence[str] = REQUIRED) -> list[str]:
    """The required packages Python cannot import."""
    return [name for name in required if importlib.util.find_spec(name) is None]


def install_dependencies(requirements_path, pip_install: Callable, torch_installer: Callable | None = None) -> None:
    """Install torch (``torch_installer()`` when given, else ``pip_install("torch")``) if it is missing,
    then ``pip_install(["-r", requirements_path])``."""
    if "torch" in missing_dependencies():
        if torch_installer is not None:
            torch_installer()
        else:
            pip_install("torch")
    pip_install(["-r", str(requirements_path)])
