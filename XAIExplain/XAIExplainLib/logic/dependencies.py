"""What the module needs in Slicer's Python, and installing it on first Apply (never at import).

PyTorch comes only from the PyTorch extension (``PyTorchUtils``), which the extension declares as its
dependency (``EXTENSION_DEPENDS`` / the catalog entry's ``build_dependencies``): its installer picks the
torch build that fits the machine's GPU driver, which a plain ``pip install torch`` does not, and the
Slicer Extensions Index refuses extensions that pip-install torch themselves. The rest comes from
``Resources/requirements.txt`` (which therefore does not name torch). The installers are given by the
caller (the Slicer module passes ``slicer.util.pip_install`` and the PyTorch extension's logic), so this
runs and is tested without Slicer.
"""
from __future__ import annotations

import importlib.util
from typing import Callable, Sequence

REQUIRED = ("torch",)
NO_PYTORCH_EXTENSION = ("PyTorch is installed by the PyTorch extension, which is not installed: install 'PyTorch' "
                        "from the Extensions Manager, restart Slicer and press Apply again")


def missing_dependencies(required: Sequence[str] = REQUIRED) -> list[str]:
    """The required packages Python cannot import."""
    return [name for name in required if importlib.util.find_spec(name) is None]


def install_dependencies(requirements_path, pip_install: Callable, torch_installer: Callable | None = None) -> None:
    """Install torch with ``torch_installer()`` (the PyTorch extension's) if it is missing, then
    ``pip_install(["-r", requirements_path])``. Without the extension's installer, or when it did not
    install torch, nothing is installed and the error says what to do."""
    if "torch" in missing_dependencies():
        if torch_installer is None:
            raise RuntimeError(NO_PYTORCH_EXTENSION)
        torch_installer()
        if "torch" in missing_dependencies():
            raise RuntimeError("the PyTorch extension did not install PyTorch: install it from the PyTorch module "
                               "(Utilities > PyTorch Utils) and press Apply again")
    pip_install(["-r", str(requirements_path)])
