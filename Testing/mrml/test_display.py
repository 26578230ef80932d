"""Heatmap display: colour tables, window, threshold, slice layers, legend, and the rendered view."""
from __future__ import annotations

import numpy as np
import pytest

from Testing.support.slicer_scene import (ARTIFACTS, GRIDS, add_volume, box_volume, rgba_is_heat, scene,  # noqa: F401
                          voxel_ras)

import slicer  # noqa: E402

from XAIExplainLib import mrml  # noqa: E402
from XAIExplainLib.mrml import colors, outputs  # noqa: E402

BOX = ((4, 8), (6, 12), (14, 20))
CENTRE = (6, 9, 17)


def blob(shape=(12, 20, 24), centre=CENTRE, radius=(2.0, 3.0, 3.0)) -> np.ndarray:
    """A smooth map in [0, 1] peaking at ``centre`` and exactly 0 beyond ~2 radii."""
    grids = np.meshgrid(*[np.arange(n) for n in shape], indexing="ij")
    d2 = sum(((g - c) / r) ** 2 for g, c, r in zip(grids, centre, radius))
    values = np.exp(-d2 / 2.0)
    values[values < 0.02] = 0.0
    return (values / values.max()).astype(np.float32)


def show(scene, node, values, **kwargs):
    with mrml.SceneTransaction(scene) as transaction:
        heatmap = outputs.publish_heatmap(scene, transaction, node, values, "CT Grad-CAM", "key-1",
                                          legend_title="Grad-CAM", **kwargs)
        mrml.show_in_slice_views(scene, background=node, foreground=heatmap, opacity=mrml.DEFAULT_OPACITY)
    return heatmap


def test_inferno_is_added_once_when_the_scene_lacks_it(scene):
    assert colors.find_color_node(scene, "Inferno") is None
    node = mrml.ensure_color_table(scene, "Inferno")
    assert node.GetNumberOfColors() == 256
    first, last = [0.0] * 4, [0.0] * 4
    node.GetColor(0, first)
    node.GetColor(255, last)
    assert max(first[:3]) < 0.05 and last[0] > 0.95 and last[1] > 0.95  # black -> light yellow
    assert mrml.ensure_color_table(scene, "Inferno") is node
    assert scene.GetNodesByClassByName("vtkMRMLColorNode", "Inferno").GetNumberOfItems() == 1


def test_an_existing_inferno_node_is_reused(scene):
    existing = scene.AddNewNodeByClass("vtkMRMLColorTableNode", "Inferno")
    assert mrml.ensure_color_table(scene, "Inferno") is existing


def test_diverging_table_is_black_at_zero_blue_below_and_warm_above(scene):
    node = mrml.heat_color_node(scene, signed=True)
    low, centre, high = [0.0] * 4, [0.0] * 4, [0.0] * 4
    node.GetColor(0, low)
    node.GetColor(128, centre)
    node.GetColor(255, high)
    assert max(centre[:3]) < 0.02
    assert low[2] == 1.0 and low[0] == 0.0  # negative end: blue/cyan
    assert high[0] == 1.0 and high[2] == 0.0  # positive end: red/yellow


def test_malformed_colour_file_is_refused_with_its_line(tmp_path):
    path = tmp_path / "Bad.txt"
    path.write_text("# header\n0 a 1 2 3 255\n1 b 300 0 0\n")
    with pytest.raises(ValueError, match="Bad.txt:3"):
        colors.read_color_table_file(path)
    with pytest.raises(FileNotFoundError, match="Nope.txt"):
        mrml.ensure_color_table(slicer.vtkMRMLScene(), "Nope", folder=tmp_path)


@pytest.mark.parametrize("value, expected", [
    ("#ff8000", (1.0, 128 / 255, 0.0)), ((255, 0, 0), (1.0, 0.0, 0.0)), ([0.2, 0.4, 0.6], (0.2, 0.4, 0.6)),
])
def test_card_colours_in_every_form(value, expected):
    np.testing.assert_allclose(mrml.parse_color(value), expected)


@pytest.mark.parametrize("value", ["red", "#12345", (1, 2), (-1, 0, 0)])
def test_bad_colours_are_refused(value):
    with pytest.raises(ValueError):
        mrml.parse_color(value)


def test_heatmap_display_and_slice_layers_are_set_as_specified(scene):
    node = add_volume(box_volume())
    heatmap = show(scene, node, blob())
    display = heatmap.GetDisplayNode()
    assert display.GetColorNode().GetName() == "Inferno"
    assert not display.GetAutoWindowLevel()
    assert (display.GetWindowLevelMin(), display.GetWindowLevelMax()) == (0.0, 1.0)
    assert display.GetApplyThreshold() and not display.GetAutoThreshold()
    assert display.GetLowerThreshold() == pytest.approx(mrml.DEFAULT_DISPLAY_THRESHOLD)
    composites = [scene.GetNthNodeByClass(i, "vtkMRMLSliceCompositeNode")
                  for i in range(scene.GetNumberOfNodesByClass("vtkMRMLSliceCompositeNode"))]
    assert len(composites) == 3
    for composite in composites:
        assert composite.GetBackgroundVolumeID() == node.GetID()
        assert composite.GetForegroundVolumeID() == heatmap.GetID()
        assert composite.GetForegroundOpacity() == pytest.approx(0.4)
    legend = mrml.display.color_logic(scene).GetColorLegendDisplayNode(heatmap)
    assert legend is not None and legend.GetTitleText() == "Grad-CAM" and legend.GetVisibility()
    mrml.set_heatmap_opacity(scene, 0.7)
    assert all(c.GetForegroundOpacity() == pytest.approx(0.7) for c in composites)
    with pytest.raises(ValueError, match="opacity"):
        mrml.set_heatmap_opacity(scene, 1.5)


def test_signed_map_gets_the_diverging_table_and_a_symmetric_window(scene):
    node = add_volume(box_volume())
    values = blob() - 0.5 * blob(centre=(6, 9, 8))
    heatmap = show(scene, node, values)
    display = heatmap.GetDisplayNode()
    assert display.GetColorNode().GetName() == mrml.SIGNED_TABLE
    assert display.GetWindowLevelMin() == pytest.approx(-1.0)
    assert display.GetWindowLevelMax() == pytest.approx(1.0)
    assert not display.GetApplyThreshold()
    # rendered: positive warm, negative cool, zero leaves the CT grey (only dimmed)
    rgba = mrml.render_slice(scene, "Red", through=voxel_ras(node, CENTRE), size=(200, 200)).astype(int)
    for zyx, check in (((6, 9, 17), lambda p: p[0] > p[2] + 25), ((6, 9, 8), lambda p: p[2] > p[0] + 25),
                       ((6, 18, 2), lambda p: np.ptp(p[:3]) <= 3)):
        row, column = mrml.ras_to_pixel(scene, "Red", voxel_ras(node, zyx))
        assert check(rgba[row, column]), (zyx, rgba[row, column])


@pytest.mark.parametrize("grid", GRIDS)
@pytest.mark.parametrize("view", ["Red", "Green", "Yellow"])
def test_rendered_view_shows_heat_over_the_object_and_plain_ct_elsewhere(scene, grid, view):
    node = add_volume(box_volume(), GRIDS[grid])
    centre = voxel_ras(node, CENTRE)
    normal_axis = {"Red": 2, "Green": 1, "Yellow": 0}[view]
    mrml.show_in_slice_views(scene, background=node)
    plain = mrml.render_slice(scene, view, through=centre, size=(200, 200))
    show(scene, node, blob())
    shown = mrml.render_slice(scene, view, through=centre, size=(200, 200))
    row, column = mrml.ras_to_pixel(scene, view, centre)
    assert rgba_is_heat(shown[row - 1:row + 2, column - 1:column + 2]).all(), shown[row, column]
    assert not rgba_is_heat(plain[row - 1:row + 2, column - 1:column + 2]).any()
    changed = np.any(shown != plain, axis=-1)
    far = voxel_ras(node, (6, 1, 2))  # inside the volume, far from the object, map == 0 there
    far_row, far_column = mrml.ras_to_pixel(scene, view, far - (far - centre) * np.eye(3)[normal_axis])
    if 0 <= far_row < 200 and 0 <= far_column < 200:
        assert not changed[far_row, far_column]
    assert changed.sum() < 0.5 * changed.size  # only the hot region is tinted
    mrml.save_png(shown, ARTIFACTS / f"display_{grid}_{view}.png")


def test_montage_shows_three_views_and_the_heatmaps_colour_bar(scene):
    node = add_volume(box_volume(), GRIDS["oblique"])
    show(scene, node, blob())
    montage = mrml.render_montage(scene, through=voxel_ras(node, CENTRE), size=(120, 100))
    assert montage.shape == (100, 3 * 120 + 3 * 4 + 14, 3) and montage.dtype == np.uint8
    bar = montage[:, -14:]
    top, bottom = bar[12, 7].astype(int), bar[-13, 7].astype(int)
    assert top.sum() > 500 and bottom.sum() < 30  # Inferno: light yellow at 1, black at 0
    for index in range(3):
        panel = montage[:, index * 124:index * 124 + 120]
        assert rgba_is_heat(panel).any()
    mrml.save_png(montage, ARTIFACTS / "display_montage_oblique.png")
