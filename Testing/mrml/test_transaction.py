"""SceneTransaction: a failure inside the block leaves every node as it was."""
from __future__ import annotations

import numpy as np
import pytest

from Testing.support.slicer_scene import add_volume, box_volume, scene, scene_state  # noqa: F401

from XAIExplainLib import mrml  # noqa: E402
from XAIExplainLib.mrml import outputs  # noqa: E402


class Boom(Exception):
    pass


def heat(scale=1.0):
    values = np.zeros(box_volume().shape, np.float32)
    values[4:8, 6:12, 14:20] = scale
    return values


def test_failure_removes_new_nodes_and_restores_changed_ones(scene):
    node = add_volume(box_volume())
    with mrml.SceneTransaction(scene) as transaction:
        existing = outputs.publish_heatmap(scene, transaction, node, heat(), "CT Grad-CAM", "key",
                                           legend_title="Grad-CAM")
        mrml.show_in_slice_views(scene, background=node, foreground=existing, opacity=0.4)
    before = scene_state(scene)
    with pytest.raises(Boom):
        with mrml.SceneTransaction(scene) as transaction:
            # update the existing output, add new ones, restyle the views, then fail
            outputs.publish_heatmap(scene, transaction, node, heat(0.3), "CT Grad-CAM", "key",
                                    display_threshold=0.5)
            added = outputs.publish_heatmap(scene, transaction, node, heat(), "CT HiResCAM", "key 2",
                                            legend_title="HiResCAM")
            outputs.publish_mask(scene, transaction, node, heat(), 0.5, "CT HiResCAM", "key 3",
                                 as_segmentation=True)
            mrml.show_in_slice_views(scene, foreground=added, opacity=0.9)
            mrml.display.configure_label_display(existing, scene=scene, outline=False)
            raise Boom()
    assert scene_state(scene) == before


def test_success_keeps_the_changes(scene):
    node = add_volume(box_volume())
    count = scene.GetNumberOfNodes()
    with mrml.SceneTransaction(scene) as transaction:
        outputs.publish_heatmap(scene, transaction, node, heat(), "CT Grad-CAM", "key")
    assert transaction.committed
    assert scene.GetNumberOfNodes() > count
