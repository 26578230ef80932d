"""How to install an optional part of XAIExplain (an extra of pyproject.toml), said the same way everywhere.

XAIExplain is installed from its checkout, not from a package registry, so ``pip install
"xaiexplain[EXTRA]"`` cannot work: the extra is installed from the checkout, and on a machine without a
GPU with the constraints file that pins the CPU build of torch (else pip pulls the CUDA build).
"""
from __future__ import annotations

#: the constraints file of the checkout that pins the CPU build of torch
CPU_CONSTRAINTS = "Testing/constraints-cpu.txt"


def install_hint(extra: str) -> str:
    """``pip install ".[EXTRA]"`` from the checkout, with the CPU-only variant."""
    return f'pip install ".[{extra}]" in the XAIExplain checkout; add -c {CPU_CONSTRAINTS} on a CPU-only machine'
