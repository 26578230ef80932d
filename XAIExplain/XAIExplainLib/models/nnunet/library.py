"""The one place that imports the optional ``nnunetv2`` package, with the extra to install named."""
from __future__ import annotations

import importlib

from ...extras import install_hint

EXTRA_HINT = install_hint("nnunet")


def nnunetv2(module: str):
    """``nnunetv2.<module>``, or an ImportError that says which extra provides it."""
    try:
        return importlib.import_module(f"nnunetv2.{module}")
    except ImportError as exc:
        raise ImportError(f"loading an nnU-Net v2 model folder needs the nnunetv2 package ({EXTRA_HINT}); "
                          f"importing nnunetv2.{module} failed: {exc}") from exc
