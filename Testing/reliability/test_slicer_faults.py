"""Slicer (issue 12 item 8): removing the input volume while a run computes or publishes stops the
run with a clear error and publishes nothing (no heatmap tagged with a node that is gone)."""
from __future__ import annotations

import pytest

from Testing.support.slicer_scene import add_volume, box_volume, bright_spot_model, scene  # noqa: F401

torch = pytest.importorskip("torch")

from XAIExplainLib.logic import InputRemovedError, XAIExplainLogic  # noqa: E402


def _node_ids(scene):
    return [scene.GetNthNode(i).GetID() for i in range(scene.GetNumberOfNodes())]


@pytest.mark.parametrize("when", ["Explaining:", "Writing"])
def test_removing_the_input_during_a_run_publishes_nothing(scene, when):  # noqa: F811
    node = add_volume(box_volume(), name="CT")
    before = _node_ids(scene)

    def progress(fraction, message):
        if message.startswith(when) and node.GetScene() is not None:
            scene.RemoveNode(node)

    with pytest.raises(InputRemovedError, match=r"The input volume 'CT' was removed from the scene during the "
                                                r"run; nothing was published"):
        XAIExplainLogic().explainVolume(node, bright_spot_model(2), methods=["gradcam", "saliency"],
                                        classNames=["dark", "bright"], labelThreshold=0.5, progress=progress)
    assert _node_ids(scene) == [i for i in before if i != node.GetID()]


def test_a_run_with_the_input_kept_still_publishes(scene):  # noqa: F811
    node = add_volume(box_volume(), name="CT")
    nodes = XAIExplainLogic().explainVolume(node, bright_spot_model(2), methods=["gradcam"],
                                            classNames=["dark", "bright"], progress=lambda f, m: None)
    assert set(nodes.heatmaps) == {"gradcam"} and nodes.heatmaps["gradcam"].GetScene() is scene
