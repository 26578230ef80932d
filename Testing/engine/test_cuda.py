"""The engine on a CUDA GPU: the same maps as on the CPU, and out-of-memory handled by halving.

Run by ``bash bench/gpu.sh`` (``pytest -m cuda``) when a GPU is lent; skipped elsewhere
(Testing/conftest.py). The CPU maps are the reference: the engine's maths does not depend on
the device, so a difference beyond float tolerance is a device bug (a tensor left on the
host, a non-deterministic kernel, a dtype change).
"""
from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

import XAIExplainLib as xai
from Testing.support.models import SmallCNN, inputs, make

pytestmark = pytest.mark.cuda

CAM5 = ["gradcam", "gradcampp", "hirescam", "xgradcam", "layercam"]
TOLERANCE = 2e-3  # normalised maps in [0, 1]; cuDNN's convolution algorithms differ from the CPU's in the last bits


@pytest.mark.parametrize("dims", [2, 3])
def test_explain_on_cuda_equals_cpu(dims):
    model = make(SmallCNN, dims=dims)
    x = inputs(dims, n=3, size=16 if dims == 2 else 12)
    methods = CAM5 + ["saliency", "integrated_gradients", "guided_backprop"]
    on_cpu = xai.explain_many(model, x, methods)
    gpu_model = make(SmallCNN, dims=dims).cuda()
    on_gpu = xai.explain_many(gpu_model, x.cuda(), methods)
    for method in methods:
        assert on_gpu[method].device.type == "cuda"
        torch.testing.assert_close(on_gpu[method].cpu(), on_cpu[method], atol=TOLERANCE, rtol=0, msg=method)


def test_explain_volume_and_predict_volume_on_cuda_equal_cpu():
    model = make(SmallCNN, dims=2)
    volume = np.random.default_rng(0).standard_normal((10, 20, 24)).astype(np.float32)
    for method in ("gradcam", "saliency"):
        on_cpu = xai.explain_volume(model, volume, method, batch_size=4, device="cpu")
        on_gpu = xai.explain_volume(model, volume, method, batch_size=4, device="cuda")
        np.testing.assert_allclose(on_gpu, on_cpu, atol=TOLERANCE)
    np.testing.assert_allclose(xai.predict_volume(model, volume, batch_size=4, device="cuda"),
                               xai.predict_volume(model, volume, batch_size=4, device="cpu"), atol=1e-4, rtol=1e-4)
    assert next(model.parameters()).device.type == "cpu"  # the model is left where it was


class _RunsOutOfMemoryAbove(nn.Module):
    """The classifier, except that a batch larger than ``limit`` asks the GPU for far more memory
    than it has: a real CUDA out-of-memory error from the caching allocator (a plain device
    allocation that fails at once; nothing is held)."""

    def __init__(self, limit: int):
        super().__init__()
        self.inner = make(SmallCNN, dims=2)
        self.limit = limit
        self.batches: list[int] = []

    def forward(self, x):
        self.batches.append(x.shape[0])
        if x.shape[0] > self.limit and x.is_cuda:
            free, total = torch.cuda.mem_get_info(x.device)
            torch.empty(4 * total, dtype=torch.uint8, device=x.device)  # raises torch.OutOfMemoryError
        return self.inner(x)


def test_a_cuda_out_of_memory_error_halves_the_batch_and_the_maps_are_unchanged():
    volume = np.random.default_rng(1).standard_normal((9, 20, 24)).astype(np.float32)
    reference = xai.explain_volume(make(SmallCNN, dims=2), volume, "gradcam", batch_size=8, device="cpu")
    model = _RunsOutOfMemoryAbove(limit=2)
    maps = xai.explain_volume(model, volume, "gradcam", batch_size=8, layer="inner.features", device="cuda")
    np.testing.assert_allclose(maps, xai.explain_volume(model.inner, volume, "gradcam", batch_size=2,
                                                        layer="features", device="cuda"), atol=TOLERANCE)
    np.testing.assert_allclose(maps, reference, atol=TOLERANCE)
    assert max(model.batches) > 2 and 8 in model.batches  # it tried the asked batch, then halved
    assert model.batches[-1] <= 2
    torch.cuda.synchronize()
    assert torch.cuda.memory_allocated() < 2**30  # nothing of the failed attempts is held


def test_one_sample_that_does_not_fit_is_a_clear_error():
    model = _RunsOutOfMemoryAbove(limit=0)
    with pytest.raises(torch.OutOfMemoryError):
        xai.explain_volume(model, np.zeros((2, 16, 16), np.float32), "gradcam", batch_size=2,
                           layer="inner.features", device="cuda")
