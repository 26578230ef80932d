"""XAIExplainLogic end to end on a real MRML scene with models whose attribution is known.

The models are built here (a plain torch.nn.Module, the console user's path):
the class-1 score is the mean of ReLU(x), so on a CT in HU the attribution is
exactly the bright object. Whatever the grid, the heatmap node must share the
input's grid and its hot spot must sit on the object in RAS.
"""
from __future__ import annotations

import numpy as np
import pytest

from Testing.support.slicer_scene import (ARTIFACTS, GRIDS, add_volume, box_mask, box_volume,  # noqa: F401
                                          bright_spot_model, ras_centroid, rgba_is_heat, scene, scene_state,
                                          voxel_ras)

torch = pytest.importorskip("torch")
import slicer  # noqa: E402
import slicer.util  # noqa: E402

from XAIExplainLib import mrml  # noqa: E402
from XAIExplainLib.logic import ExplainCancelled, OutputNodes, XAIExplainLogic  # noqa: E402

CLASSES = ["dark", "bright"]


def run(node, model=None, **kwargs):
    kwargs.setdefault("classNames", CLASSES)
    return XAIExplainLogic().explainVolume(node, model or bright_spot_model(2), **kwargs)


@pytest.mark.parametrize("grid", GRIDS)
@pytest.mark.parametrize("dims, mode", [(2, "axial"), (3, None)])
def test_heatmap_shares_the_grid_and_its_hot_spot_is_on_the_object(scene, grid, dims, mode):
    node = add_volume(box_volume(), GRIDS[grid])
    nodes = run(node, bright_spot_model(dims), methods=["gradcam", "saliency"], mode=mode, target="bright")
    for method in ("gradcam", "saliency"):
        heatmap = nodes.heatmaps[method]
        np.testing.assert_array_equal(mrml.node_ijk_to_ras(heatmap), mrml.node_ijk_to_ras(node))
        assert heatmap.GetImageData().GetDimensions() == node.GetImageData().GetDimensions()
        assert heatmap.GetOrigin() == node.GetOrigin()
        values = slicer.util.arrayFromVolume(heatmap)
        hot = values > 0.5 * values.max()
        assert box_mask()[np.unravel_index(np.argmax(values), values.shape)]
        spacing = min(node.GetSpacing())
        assert np.linalg.norm(ras_centroid(heatmap, hot) - ras_centroid(node, box_mask())) < spacing
        assert values[~box_mask()].max() < 0.05


def test_input_node_is_left_exactly_as_it_was(scene):
    node = add_volume(box_volume(), GRIDS["oblique"])
    display = node.GetDisplayNode()
    before = (np.array(slicer.util.arrayFromVolume(node)), mrml.node_ijk_to_ras(node), node.GetName(),
              display.GetWindow(), display.GetLevel(), display.GetColorNodeID(), node.GetImageData().GetMTime(),
              node.GetTransformNodeID(), [node.GetAttribute(n) for n in node.GetAttributeNames()])
    run(node, methods=["gradcam"], labelThreshold=0.5)
    after = (np.array(slicer.util.arrayFromVolume(node)), mrml.node_ijk_to_ras(node), node.GetName(),
             display.GetWindow(), display.GetLevel(), display.GetColorNodeID(), node.GetImageData().GetMTime(),
             node.GetTransformNodeID(), [node.GetAttribute(n) for n in node.GetAttributeNames()])
    np.testing.assert_array_equal(after[0], before[0])
    np.testing.assert_array_equal(after[1], before[1])
    assert after[2:] == before[2:]


def test_outputs_are_named_tagged_and_displayed_over_the_input(scene):
    node = add_volume(box_volume(), name="Chest CT")
    nodes = run(node, methods=["gradcam", "saliency"], target=1, opacity=0.55)
    assert isinstance(nodes, OutputNodes) and list(nodes) == [nodes.heatmaps["gradcam"], nodes.heatmaps["saliency"]]
    assert nodes.heatmaps["gradcam"].GetName() == "Chest CT Grad-CAM bright features"
    assert nodes.heatmaps["saliency"].GetName() == "Chest CT Saliency bright"  # no layer for input gradients
    heatmap = nodes.heatmaps["gradcam"]
    assert heatmap.GetAttribute("XAIExplain.Method") == "gradcam"
    assert heatmap.GetAttribute("XAIExplain.InputNodeID") == node.GetID()
    display = heatmap.GetDisplayNode()
    assert display.GetColorNode().GetName() == "Inferno"
    assert (display.GetWindowLevelMin(), display.GetWindowLevelMax()) == (0.0, 1.0)
    assert display.GetApplyThreshold() and display.GetLowerThreshold() == pytest.approx(0.05)
    for i in range(scene.GetNumberOfNodesByClass("vtkMRMLSliceCompositeNode")):
        composite = scene.GetNthNodeByClass(i, "vtkMRMLSliceCompositeNode")
        assert composite.GetBackgroundVolumeID() == node.GetID()
        assert composite.GetForegroundVolumeID() == heatmap.GetID()
        assert composite.GetForegroundOpacity() == pytest.approx(0.55)
    assert mrml.display.color_logic(scene).GetColorLegendDisplayNode(heatmap) is not None
    assert nodes.probabilities.shape == (12, 2)
    assert nodes.timings["compute"] > 0


def test_rerun_updates_the_same_nodes_and_keep_existing_adds_new_ones(scene):
    node = add_volume(box_volume())
    first = run(node, methods=["gradcam"], labelThreshold=0.5)
    count = scene.GetNumberOfNodes()
    second = run(node, methods=["gradcam"], labelThreshold="otsu")
    assert second.heatmaps["gradcam"] is first.heatmaps["gradcam"]
    assert second.masks["gradcam"] is first.masks["gradcam"]
    assert scene.GetNumberOfNodes() == count
    third = run(node, methods=["gradcam"], keepExisting=True)
    assert third.heatmaps["gradcam"] is not first.heatmaps["gradcam"]
    assert scene.GetNumberOfNodes() > count
    other = run(node, methods=["gradcam"], target="dark")
    assert other.heatmaps["gradcam"] is not first.heatmaps["gradcam"]


def test_label_map_output_thresholds_the_heatmap_and_outlines_it(scene):
    node = add_volume(box_volume(), GRIDS["anisotropic"])
    nodes = run(node, methods=["gradcam"], target="bright", labelThreshold=0.5)
    mask = nodes.masks["gradcam"]
    assert mask.IsA("vtkMRMLLabelMapVolumeNode") and mask.GetName().endswith("mask (>0.5)")
    np.testing.assert_array_equal(slicer.util.arrayFromVolume(mask),
                                  slicer.util.arrayFromVolume(nodes.heatmaps["gradcam"]) > 0.5)
    np.testing.assert_array_equal(slicer.util.arrayFromVolume(mask).astype(bool), box_mask())
    composite = scene.GetNthNodeByClass(0, "vtkMRMLSliceCompositeNode")
    assert composite.GetLabelVolumeID() == mask.GetID()
    seg = run(node, methods=["gradcam"], target="bright", labelThreshold="otsu", labelOutput="segmentation")
    assert seg.masks["gradcam"].IsA("vtkMRMLSegmentationNode")


def segmenter():
    """Logits (dark, bright) = (-x, x): class 1 wherever the voxel is above 0 HU."""
    conv = torch.nn.Conv2d(1, 2, 1)
    with torch.no_grad():
        conv.weight.copy_(torch.tensor([-1.0, 1.0]).view(2, 1, 1, 1))
        conv.bias.zero_()
    return torch.nn.Sequential(conv).eval()


def test_segmenter_prediction_becomes_named_segments_and_an_roi_target_works(scene):
    node = add_volume(box_volume(), GRIDS["flipped"])
    nodes = run(node, segmenter(), methods=["gradcam"], classNames=["background", "object"], layer="0")
    seg = nodes.prediction
    assert seg is not None and seg.GetName() == "CT Sequential prediction"
    assert seg.GetSegmentation().GetNumberOfSegments() == 1
    segment_id = seg.GetSegmentation().GetNthSegmentID(0)
    assert seg.GetSegmentation().GetSegment(segment_id).GetName() == "object"
    np.testing.assert_array_equal(mrml.segment_mask(seg, segment_id, node), box_mask())
    roi = run(node, segmenter(), methods=["saliency"], classNames=["background", "object"],
              target=(seg, segment_id), predictionSegmentation=False)
    assert roi.heatmaps["saliency"].GetName() == "CT Saliency ROI object"
    values = slicer.util.arrayFromVolume(roi.heatmaps["saliency"])
    assert values[box_mask()].min() > 0.5 and values[~box_mask()].max() == 0.0


class Stop(Exception):
    pass


@pytest.mark.parametrize("when", ["engine", "publish", "done"])
def test_cancel_or_error_from_progress_leaves_the_scene_as_before(scene, when):
    node = add_volume(box_volume())
    run(node, methods=["gradcam", "saliency"], target="dark", labelThreshold=0.5)  # outputs a re-run would update
    before = scene_state(scene)
    calls = []

    def progress(fraction, message):
        calls.append((fraction, message))
        if (when == "engine" and message.startswith("Explaining:") and fraction > 0.1) or \
                (when == "publish" and message.startswith("Writing")) or (when == "done" and fraction == 1.0):
            raise Stop()

    with pytest.raises(Stop):
        run(node, methods=["gradcam", "saliency"], target="dark", labelThreshold="otsu", progress=progress)
    assert scene_state(scene) == before
    assert all(0.0 <= f <= 1.0 for f, _ in calls) and [f for f, _ in calls] == sorted(f for f, _ in calls)


def test_logic_cancel_stops_the_run_and_changes_nothing(scene):
    node = add_volume(box_volume())
    logic = XAIExplainLogic()
    before = scene_state(scene)

    def progress(fraction, message):
        if message.startswith("Explaining:"):
            logic.cancel()

    with pytest.raises(ExplainCancelled, match="unchanged"):
        logic.explainVolume(node, bright_spot_model(2), methods=["gradcam"], progress=progress)
    assert scene_state(scene) == before
    assert not logic.isRunning
    assert logic.explainVolume(node, bright_spot_model(2), methods=["gradcam"]).heatmaps  # usable again


@pytest.mark.parametrize("kwargs, error, match", [
    ({"methods": ["nope"]}, ValueError, "unknown method"),
    ({"methods": []}, ValueError, "non-empty"),
    ({"methods": ["gradcam", "gradcam"]}, ValueError, "twice"),
    ({"target": 5}, ValueError, "out of range"),
    ({"target": "liver"}, ValueError, "unknown class"),
    ({"target": 1.5}, TypeError, "target"),
    ({"mode": "diagonal"}, ValueError, "mode"),
    ({"mode": "volume"}, ValueError, "2D model"),
    ({"axis": 3, "mode": "slices"}, ValueError, "axis"),
    ({"device": "tpu"}, ValueError, "device"),
    ({"labelThreshold": "median"}, ValueError, "threshold"),
    ({"labelThreshold": 1.0}, ValueError, r"\[0, 1\)"),  # the CLI's range (the logic took 1.0 before)
    ({"labelThreshold": -0.2}, ValueError, r"\[0, 1\)"),
    ({"labelOutput": "mesh"}, ValueError, "labelOutput"),
    ({"opacity": 1.5}, ValueError, "opacity"),
    ({"progress": "yes"}, TypeError, "progress"),
    ({"layer": 3}, TypeError, "layer"),
])
def test_bad_arguments_raise_before_anything_is_created(scene, kwargs, error, match):
    node = add_volume(box_volume())
    before = scene_state(scene)
    with pytest.raises(error, match=match):
        run(node, **kwargs)
    assert scene_state(scene) == before


def test_bad_inputs_and_models_are_refused(scene):
    logic = XAIExplainLogic()
    with pytest.raises(ValueError, match="No input volume"):
        logic.explainVolume(None, bright_spot_model(2))
    rgb = slicer.util.addVolumeFromArray(np.zeros((2, 3, 4, 3), np.uint8), nodeClassName="vtkMRMLVectorVolumeNode")
    with pytest.raises(TypeError, match="vector"):
        logic.explainVolume(rgb, bright_spot_model(2))
    with pytest.raises(TypeError, match="model must be"):
        logic.explainVolume(add_volume(box_volume()), 42)


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the error on a machine without a GPU")
def test_explicit_gpu_without_a_gpu_is_a_clear_error(scene):
    node = add_volume(box_volume())
    before = scene_state(scene)
    with pytest.raises(ValueError, match="no CUDA GPU"):
        run(node, device="cuda")
    assert scene_state(scene) == before
    assert XAIExplainLogic.resolveDevice("auto") == "cpu"


def test_method_and_layer_helpers_describe_the_model():
    logic = XAIExplainLogic()
    rows = {name: (label, enabled) for name, label, enabled, _ in logic.methodsForModel(bright_spot_model(2))}
    assert rows["gradcam"] == ("Grad-CAM", True)
    assert logic.layersForModel(bright_spot_model(2))[:1] == ["features.0"]
    assert logic.describeModel(bright_spot_model(3))["spatialDims"] == 3
    assert logic.deviceChoices()[1] == ("cpu", "CPU")


@pytest.mark.parametrize("grid", ["identity", "oblique"])
def test_rendered_views_show_the_heatmap_over_the_object(scene, grid):
    node = add_volume(box_volume(), GRIDS[grid])
    run(node, methods=["gradcam"], target="bright")
    centre = voxel_ras(node, (6, 9, 17))
    far = voxel_ras(node, (6, 1, 2))
    for view in ("Red", "Yellow", "Green"):
        rgba = mrml.render_slice(scene, view, through=centre, size=(160, 160))
        mrml.save_png(rgba, ARTIFACTS / f"logic_{grid}_{view}.png")
        row, column = mrml.ras_to_pixel(scene, view, centre)
        assert rgba_is_heat(rgba[row - 1:row + 2, column - 1:column + 2]).all()
        far_row, far_column = mrml.ras_to_pixel(scene, view, far)
        if view == "Red" and 0 <= far_row < 160 and 0 <= far_column < 160:
            assert not rgba_is_heat(rgba[far_row, far_column])


@pytest.mark.parametrize("dtype", [np.uint8, np.int16, np.float32])
def test_single_slice_volumes_of_any_scalar_type_are_explained(scene, dtype):
    voxels = np.zeros((1, 20, 24), dtype)
    voxels[0, 6:12, 14:20] = 200
    node = add_volume(voxels, GRIDS["oblique"])
    nodes = run(node, methods=["gradcam"], target="bright")
    values = slicer.util.arrayFromVolume(nodes.heatmaps["gradcam"])
    assert values.shape == (1, 20, 24)
    np.testing.assert_array_equal(values > 0.5, voxels > 0)


@pytest.mark.cuda
def test_gpu_run_matches_cpu_and_leaves_the_model_on_its_device(scene):
    node = add_volume(box_volume(), GRIDS["oblique"])
    model = bright_spot_model(2)
    on_gpu = run(node, model, methods=["gradcam"], target="bright", device="cuda", keepExisting=True)
    on_cpu = run(node, model, methods=["gradcam"], target="bright", device="cpu", keepExisting=True)
    np.testing.assert_allclose(slicer.util.arrayFromVolume(on_gpu.heatmaps["gradcam"]),
                               slicer.util.arrayFromVolume(on_cpu.heatmaps["gradcam"]), atol=1e-5)
    assert next(model.parameters()).device.type == "cpu"
    assert XAIExplainLogic.resolveDevice("auto") == "cuda"
    assert torch.cuda.get_device_name(0) in XAIExplainLogic.deviceChoices()[2][1]


def test_unknown_layer_is_refused_with_suggestions(scene):
    node = add_volume(box_volume())
    before = scene_state(scene)
    with pytest.raises(ValueError, match="no layer 'feature'; e.g. features"):
        run(node, layer="feature")
    assert scene_state(scene) == before


def test_name_says_the_predicted_class_when_every_slice_agrees(scene):
    # Slices that disagree no longer mix classes: the volume explains the class with the highest
    # probability on any slice (models.explained_class), and the name says which.
    mixed = run(add_volume(box_volume(), name="mixed"), methods=["gradcam"])
    probabilities = np.asarray(mixed.probabilities)
    assert len(set(np.argmax(probabilities, axis=1).tolist())) == 2
    chosen = mixed.classNames[int(np.unravel_index(np.argmax(probabilities), probabilities.shape)[1])]
    assert mixed.heatmaps["gradcam"].GetName() == f"mixed Grad-CAM {chosen} features"
    everywhere = box_volume(box=((0, 12), (6, 12), (14, 20)))
    agreed = run(add_volume(everywhere, name="agreed"), methods=["gradcam"])
    assert agreed.heatmaps["gradcam"].GetName() == "agreed Grad-CAM bright features"
    assert agreed.heatmaps["gradcam"].GetAttribute("XAIExplain.Target") == "bright"
