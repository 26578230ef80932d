"""Fixtures shared by several test modules."""
from __future__ import annotations

import pytest


def pytest_collection_modifyitems(config, items):
    """``@pytest.mark.cuda`` tests skip where torch sees no CUDA GPU (the one place of that rule)."""
    marked = [item for item in items if item.get_closest_marker("cuda") is not None]
    if not marked:
        return
    import torch

    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA GPU (bench/gpu.sh runs these with -m cuda)")
    for item in marked:
        item.add_marker(skip)


@pytest.fixture(scope="module")
def two_torch_threads():
    """Run a module's model validations on both cores, then restore the thread count."""
    import torch

    previous = torch.get_num_threads()
    torch.set_num_threads(2)
    yield
    torch.set_num_threads(previous)
