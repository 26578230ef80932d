"""The Slicer logic explains with the weights now on disk, not the ones its catalogue loaded first (issue 20 class 4)."""
from __future__ import annotations

import numpy as np
import pytest

from Testing.support.slicer_scene import add_volume, box_mask, box_volume, scene, trusting_logic, write_card  # noqa: F401

torch = pytest.importorskip("torch")
import slicer.util  # noqa: E402


def _saliency(logic, node, card) -> np.ndarray:
    nodes = logic.explainVolume(node, str(card), methods=["saliency"], target="bright")
    return slicer.util.arrayFromVolume(nodes.heatmaps["saliency"]).copy()


def test_explain_volume_uses_the_weights_now_on_disk(scene, tmp_path):
    card = write_card(tmp_path / "model", dims=2)
    node = add_volume(box_volume())
    logic = trusting_logic()
    before = _saliency(logic, node, card)
    assert before[~box_mask()].max() == 0  # the bright-spot model looks only at the box
    weights = card.parent / "weights.pt"
    state = torch.load(weights, weights_only=True)
    state["features.0.bias"] = torch.full_like(state["features.0.bias"], 2.0)  # now every voxel counts
    torch.save(state, weights)
    after = _saliency(logic, node, card)
    fresh = _saliency(trusting_logic(), node, card)
    np.testing.assert_allclose(after, fresh, rtol=1e-5, atol=1e-6)
    assert not np.allclose(after, before, rtol=1e-3, atol=1e-4)
