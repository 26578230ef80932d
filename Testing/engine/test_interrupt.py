"""engine.interrupt: every long loop of the engine calls checkpoint() once per chunk, and raising there stops it.

With one copy per forward (ELEMENTS_PER_FORWARD = 1) the number of chunks of each
method is known from the model (channels, windows, samples, steps, kernels), so the
number of checkpoints must equal it exactly; a callback that raises must stop the
method with that exception and leave the model as found.
"""
from __future__ import annotations

import pytest
import torch

import XAIExplainLib as xai
from XAIExplainLib.engine import batching, interrupt
from XAIExplainLib.evaluation.sanity import sanity_randomization
from Testing.support.models import assert_as_found, classifier, small_inputs, snapshot, unet

SEG = xai.SegmentationTarget(1, region="all", activation="sigmoid")
# (method, model, layer, options, expected chunks): TinyClassifier's features.2 has 12 channels,
# occlusion 8 x 8 windows with stride 8 on 16 x 16 give 4, TinyUNet's dec2.0 has 8 kernels
CASES = [
    ("scorecam", classifier, "features.2", {}, 12),
    ("occlusion", classifier, None, {"window": 8, "stride": 8}, 4),
    ("smoothgrad", classifier, None, {"samples": 5}, 5),
    ("integrated_gradients", classifier, None, {"steps": 6}, 6),
    ("kwc", unet, "dec2.0", {"target": SEG}, 8),
    ("ablationcam", classifier, "features.2", {}, 12),
    ("rise", classifier, None, {"masks": 7, "cells": 4}, 7),
    ("gradient_shap", classifier, None, {"samples": 5}, 5),
]


class Stop(Exception):
    pass


@pytest.fixture(autouse=True)
def one_copy_per_forward(monkeypatch):
    monkeypatch.setattr(batching, "ELEMENTS_PER_FORWARD", 1)


@pytest.mark.parametrize("method, make, layer, options, chunks", CASES, ids=[c[0] for c in CASES])
def test_each_long_loop_calls_checkpoint_once_per_chunk(method, make, layer, options, chunks):
    model, x = make(2, seed=1), small_inputs(2, n=1)
    if method == "kwc":
        assert model.dec2[0].out_channels == chunks
    elif layer is not None:
        assert model.features[2].out_channels == chunks
    calls = []
    with interrupt.checkpoints(lambda: calls.append(1)):
        xai.explain(model, x, method, layer=layer, **options)
    assert len(calls) == chunks


@pytest.mark.parametrize("method, make, layer, options, chunks", CASES, ids=[c[0] for c in CASES])
def test_raising_from_the_checkpoint_stops_the_method_and_leaves_the_model_as_found(method, make, layer, options,
                                                                                   chunks):
    model, x = make(2, seed=1), small_inputs(2, n=1)
    before = snapshot(model)
    calls = []

    def stop_at_the_third():
        calls.append(1)
        if len(calls) == 3:
            raise Stop()

    with interrupt.checkpoints(stop_at_the_third), pytest.raises(Stop):
        xai.explain(model, x, method, layer=layer, **options)
    assert len(calls) == 3
    assert_as_found(model, before)


def test_the_sanity_cascade_checks_in_once_per_randomised_layer():
    model, x = classifier(2, seed=1), small_inputs(2, n=1)
    cascade = ["fc", "features.2", "features.0"]
    calls = []
    with interrupt.checkpoints(lambda: calls.append(1)):
        result = sanity_randomization(model, x, "gradcam", layer="features.2", layers=cascade)
    assert list(result.layers) == cascade and len(calls) == len(cascade)


def test_explain_volume_checks_in_between_batches():
    model = classifier(2, seed=1)
    volume = torch.randn(5, 16, 16).numpy()
    calls = []
    with interrupt.checkpoints(lambda: calls.append(1)):
        xai.explain_volume(model, volume, "gradcam", mode="slices", batch_size=2, layer="features.2")
    assert len(calls) == 3  # batches [0, 2), [2, 4), [4, 5)
