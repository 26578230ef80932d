"""The web page as a person uses it, in headless Chromium: open, choose, Apply, watch, cancel, point.

The server runs ``python -m XAIExplainLib.web`` (what ``xaiexplain serve`` runs) on a small
chest phantom with the bundled ``lung-nodule-2d``; what the page shows is checked against the
logic run directly on a scene of its own (node names) and on the screenshot's pixels (heat
colours over the image).
"""
from __future__ import annotations

import time

import numpy as np
import pytest
import SimpleITK as sitk

from .browser import Page, Served, require_web, wait_until

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")


@pytest.fixture(scope="module")
def chest(tmp_path_factory):
    from XAIExplainLib.imaging.phantoms import chest_phantom

    folder = tmp_path_factory.mktemp("web-images")
    phantom = chest_phantom(seed=3, shape=(16, 112, 112), spacing=(5.0, 2.0, 2.0))
    path = folder / "chest.nrrd"
    sitk.WriteImage(phantom.image(), str(path), True)
    return path


@pytest.fixture(scope="module")
def saved_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("web-saved")


@pytest.fixture(scope="module")
def served(chest, saved_dir):
    require_web()
    server = Served(chest, "--model", "lung-nodule-2d", "--method", "gradcam", "--output-dir", saved_dir)
    yield server
    server.stop()


@pytest.fixture(scope="module")
def page(served, driver):
    page = Page(driver, served.url)
    page.wait_text("status", r"Loaded 'chest'")
    wait_until(page.slice_views_ready, "the slice views to show the CT")
    return page


def logic_run(chest, model="lung-nodule-2d", methods=("gradcam",)):
    """Node names and first map of the same run by the logic on a scene of its own (what Slicer shows)."""
    from XAIExplainLib.logic import XAIExplainLogic
    from XAIExplainLib.mrml import create_headless_scene, release_headless_scene, sitk_to_volume

    scene = create_headless_scene(set_current=False)
    try:
        node = sitk_to_volume(scene, sitk.ReadImage(str(chest)), "chest")
        nodes = XAIExplainLogic(scene=scene).explainVolume(node, model, methods=list(methods))
        from XAIExplainLib.mrml import volume_array

        return [n.GetName() for n in nodes], volume_array(nodes.heatmaps[methods[0]]).copy()
    finally:
        release_headless_scene(scene)


def test_apply_draws_the_heatmap_over_the_image_under_slicers_node_names(page, chest, tmp_path):
    assert page.text("model-description").startswith("lung-nodule-2d: classification (2D)")
    assert page.element("method-gradcam").is_selected()
    before = page.heat_pixels(0)
    assert before.mean() < 0.002, "heat colours before any run"
    assert page.element("apply").text.upper() == "APPLY"
    page.apply()
    page.wait_text("status", r"Created or updated")
    wait_until(lambda: page.heat_pixels(0).mean() > 0.02, "heat colours in the axial view")
    page.screenshot("web-apply-gradcam")
    names = [row.get_attribute("textContent").strip() for row in
             page.driver.find_elements("css selector", "#heatmaps span")]
    reference_names, reference_map = logic_run(chest)
    assert names == reference_names
    assert page.element("apply").text.upper() == "APPLY"
    assert page.text("colour-range")  # the colour bar is labelled with the map's range
    # a 2D classifier per slice: its per-slice probabilities as a plot
    assert page.driver.find_elements("css selector", "#probability-plot polyline")
    # each map downloads as NRRD on the input's grid
    import urllib.request

    with urllib.request.urlopen(page.element("download-0").get_attribute("href"), timeout=60) as response:
        downloaded = tmp_path / "map.nrrd"
        downloaded.write_bytes(response.read())
    heat, image = sitk.ReadImage(str(downloaded)), sitk.ReadImage(str(chest))
    assert heat.GetSize() == image.GetSize()
    np.testing.assert_allclose(heat.GetOrigin(), image.GetOrigin(), atol=1e-4)
    np.testing.assert_allclose(heat.GetSpacing(), image.GetSpacing(), atol=1e-6)
    np.testing.assert_allclose(sitk.GetArrayFromImage(heat), reference_map, atol=1e-5)


def test_opacity_hide_and_window_level_change_the_view(page):
    if not page.driver.find_elements("id", "show-0"):
        page.apply()
        page.wait_text("status", r"Created or updated")
    wait_until(lambda: page.heat_pixels(0).mean() > 0.02, "heat colours in the axial view")
    page.click("show-0")  # hide the map
    wait_until(lambda: page.heat_pixels(0).mean() < 0.002, "the hidden map to leave the view")
    page.click("show-0")
    wait_until(lambda: page.heat_pixels(0).mean() > 0.02, "the map to come back")
    page.driver.execute_script("const s = document.getElementById('opacity'); s.value = 0; "
                               "s.dispatchEvent(new Event('input'))")
    wait_until(lambda: page.heat_pixels(0).mean() < 0.002, "opacity 0 to hide the heat colours")
    page.driver.execute_script("const s = document.getElementById('opacity'); s.value = 0.4; "
                               "s.dispatchEvent(new Event('input'))")
    wait_until(lambda: page.heat_pixels(0).mean() > 0.02, "opacity 0.4 to show them again")
    page.click("show-0")  # window / level on the image alone: a 1 HU window makes the CT black and white

    def grey_share():
        top, bottom, left, right = page.view_box(0)
        view = page.screenshot()[top:bottom, left:right].mean(axis=2)
        return ((view > 40) & (view < 215)).mean()

    wait_until(lambda: page.heat_pixels(0).mean() < 0.002, "the map to be hidden")
    before = grey_share()
    for element_id, value in (("window", 1), ("level", -400)):
        field = page.element(element_id)
        field.clear()
        field.send_keys(str(value))
    wait_until(lambda: grey_share() < before / 4, "a 1 HU window to leave no grey")
    for element_id, value in (("window", 400), ("level", 40)):
        field = page.element(element_id)
        field.clear()
        field.send_keys(str(value))
    wait_until(lambda: grey_share() > before / 2, "the window to come back")
    page.click("show-0")


def test_a_long_run_shows_progress_and_cancel_leaves_the_scene_unchanged(page):
    nodes_before = int(page.text("scene-nodes"))
    maps_before = len(page.driver.find_elements("css selector", "#heatmaps span"))
    page.set_checked("method-gradcam", False)
    page.set_checked("method-rise", True)   # RISE: thousands of masked passes per slice
    try:
        _run_and_cancel(page, nodes_before, maps_before)
    finally:  # leave the page idle for the next test, whatever failed
        if page.element("apply").text.upper() == "CANCEL":
            page.click("apply")
            wait_until(lambda: page.element("apply").text.upper() == "APPLY", "the run to stop")
        page.set_checked("method-rise", False)
        page.set_checked("method-gradcam", True)


def _run_and_cancel(page, nodes_before, maps_before):
    page.apply()
    wait_until(lambda: page.element("apply").text.upper() == "CANCEL", "Apply to read Cancel")
    statuses = set()

    def moved():
        statuses.add((page.text("progress-value"), page.text("status")))
        return len(statuses) >= 3

    wait_until(moved, "the progress to move three times", every=0.1)
    # the page answers while it runs: the axial slice scrolls (keyboard on its slider) and the view follows
    thumb = page.driver.find_elements("css selector", "#views .v-slider-thumb")[0]
    position, picture = thumb.get_attribute("aria-valuenow"), page.view_pixels(0)
    page.scroll_slice(0, -3)
    wait_until(lambda: thumb.get_attribute("aria-valuenow") != position, "the slider to move during the run")
    wait_until(lambda: (abs(page.view_pixels(0) - picture) > 30).mean() > 0.01, "the axial view to follow")
    assert page.element("apply").text.upper() == "CANCEL"  # still running
    page.screenshot("web-running")
    clicked = time.monotonic()
    page.click("apply")                   # Cancel
    page.wait_text("status", r"Cancelled: the scene was left unchanged")
    cancel_seconds = time.monotonic() - clicked
    assert page.element("apply").text.upper() == "APPLY"
    assert int(page.text("scene-nodes")) == nodes_before
    assert len(page.driver.find_elements("css selector", "#heatmaps span")) == maps_before
    print(f"cancel took {cancel_seconds:.2f} s in the browser")


def test_point_target_explains_the_slice_through_the_clicked_point(page):
    from selenium.webdriver.common.action_chains import ActionChains

    page.select("target", "point")
    page.click("place-point")
    page.wait_text("point-text", "Click the target")
    views = page.element("views")
    ActionChains(page.driver).move_to_element_with_offset(views, -views.rect["width"] / 3, 0).click().perform()
    text = page.wait_text("point-text", r"Point: R")
    page.apply()
    page.wait_text("status", r"Created or updated")
    wait_until(lambda: page.heat_pixels(0).mean() > 0.02, "heat colours in the axial view (the clicked slice)")
    image = page.screenshot("web-point-target")
    coronal = page.heat_pixels(1, image)
    rows = np.flatnonzero(coronal.any(axis=1))
    height = page.view_box(1)[1] - page.view_box(1)[0]
    # per slice with a point: only the slice through the point keeps its map (a band in the coronal view)
    assert rows.size and (rows.max() - rows.min()) < 0.15 * height, (text, rows.min(), rows.max(), height)
    page.select("target", "")


def test_an_error_is_one_line_and_a_path_outside_the_named_ones_is_refused(page, tmp_path):
    other = tmp_path / "elsewhere.nrrd"
    sitk.WriteImage(sitk.Image(8, 8, 8, sitk.sitkInt16) + 1, str(other))
    field = page.element("image-path")
    field.clear()
    field.send_keys(str(other))
    page.click("open-path")
    message = page.wait_text("error", r"Cannot open the image")
    assert "is not one of the images, models or folders named when the server started" in message
    assert "\n" not in message and "Traceback" not in message


def test_save_writes_what_the_command_line_writes(page, chest, saved_dir, tmp_path):
    import subprocess
    import sys

    from .browser import ROOT

    page.select("target", "")
    page.click("save")
    page.wait_text("status", r"Saved \d+ file\(s\) and summary.json", seconds=300)
    run = subprocess.run([sys.executable, "-m", "XAIExplainLib.cli", "explain", str(chest), "--model", "lung-nodule-2d",
                          "--method", "gradcam", "-o", str(tmp_path / "cli"), "--quiet"], cwd=ROOT,
                         capture_output=True, text=True, env={"PYTHONPATH": str(ROOT / "XAIExplain"),
                                                              "OMP_NUM_THREADS": "1", "PATH": "/usr/bin:/bin"})
    assert run.returncode == 0, run.stderr
    saved = sorted(p.name for p in saved_dir.iterdir())
    assert saved == sorted(p.name for p in (tmp_path / "cli").iterdir())
    assert "summary.json" in saved and any(n.startswith("chest_gradcam") and n.endswith(".nrrd") for n in saved)
    for name in saved:
        if name.endswith(".nrrd"):
            ours = sitk.GetArrayFromImage(sitk.ReadImage(str(saved_dir / name)))
            theirs = sitk.GetArrayFromImage(sitk.ReadImage(str(tmp_path / "cli" / name)))
            np.testing.assert_allclose(ours, theirs, atol=1e-6)


def test_the_modality_menu_is_shown_for_a_ct_and_mr_model_only(page):
    """Choosing liver-seg-3d (CT and MR pipelines) in the page shows the Modality menu the panel shows; a model
    with one pipeline hides it. Last in the file: the other tests run on lung-nodule-2d, restored at the end."""
    from selenium.webdriver.support.ui import Select

    assert not page.driver.find_elements("id", "modality")
    page.select("model", "liver-seg-3d")
    page.wait_text("model-description", r"^liver-seg-3d: segmentation", seconds=120)
    wait_until(lambda: page.driver.find_elements("id", "modality"), "the Modality menu")
    options = [(o.text, o.get_attribute("value")) for o in Select(page.element("modality")).options]
    assert options == [("Auto (DICOM header, else intensities)", ""), ("CT", "CT"), ("MR", "MR")]
    page.select("modality", "MR")
    page.select("model", "lung-nodule-2d")
    page.wait_text("model-description", r"^lung-nodule-2d: classification", seconds=120)
    wait_until(lambda: not page.driver.find_elements("id", "modality"), "the Modality menu to go")
