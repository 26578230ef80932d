"""The issue's own check on the real chest CT lung1: ``xaiexplain serve lung1_image.nrrd --model
lung-nodule-2d --method gradcam`` shows the CT, Apply draws the heatmap, Cancel works.

Skipped where the shared data set is absent. The screenshots are the README's pictures.
"""
from __future__ import annotations

import numpy as np
import pytest

from .browser import Page, Served, open_browser, require_web, wait_until

LUNG1 = "lung1_image.nrrd"


@pytest.fixture(scope="module")
def lung1():
    from Testing.support.slicer_scene import SHARED_DATA

    path = SHARED_DATA / LUNG1
    if not path.is_file():
        pytest.skip(f"{LUNG1} of the shared data set is not here")
    return path


def expected_metrics(image, mask) -> dict:
    """The logic's own metrics table of the same run (as the Slicer panel shows it), formatted as the page does."""
    import SimpleITK as sitk

    from XAIExplainLib.logic import XAIExplainLogic
    from XAIExplainLib.mrml import create_headless_scene, release_headless_scene, sitk_to_volume

    scene = create_headless_scene(set_current=False)
    try:
        node = sitk_to_volume(scene, sitk.ReadImage(str(image)), "lung1_image")
        label = sitk_to_volume(scene, sitk.ReadImage(str(mask)), "lung1_label", class_name="vtkMRMLLabelMapVolumeNode")
        logic = XAIExplainLogic(scene=scene)
        nodes = logic.explainVolume(node, "lung-nodule-2d", methods=["gradcam"])
        logic.evaluateHeatmap(nodes.heatmaps["gradcam"], label)
        return {name: f"{float(value):.4g}" for name, value in logic.lastMetrics.items()}
    finally:
        release_headless_scene(scene)


def test_serve_lung1_apply_shows_the_heatmap_and_cancel_works(lung1):
    require_web()
    mask = lung1.with_name("lung1_label.nrrd")
    server = Served(lung1, mask, "--model", "lung-nodule-2d", "--method", "gradcam", via_cli=True)
    driver = open_browser(1600, 860)
    try:
        page = Page(driver, server.url)
        page.wait_text("status", r"Loaded 'lung1_image'")
        wait_until(page.slice_views_ready, "the slice views to show the CT")
        page.scroll_slice(0, 9)            # from the middle slice (24) up to the nodule (slices 32-34)
        for element_id, value in (("window", 1500), ("level", -500)):   # a lung window
            field = page.element(element_id)
            field.clear()
            field.send_keys(str(value))
        page.select("mask", str(mask))    # the expert's nodule mask: outlined, and each run is scored
        page.wait_text("status", "Reference mask 'lung1_label' loaded")
        page.screenshot("web-lung1-mask")
        before = page.heat_pixels(0).mean()
        assert before < 0.005               # only the mask's blue outline is coloured
        page.apply()
        page.wait_text("status", r"Created or updated: lung1_image Grad-CAM", seconds=600)
        wait_until(lambda: page.heat_pixels(0).mean() > before + 0.001, "heat colours over the real CT")
        page.screenshot("web-lung1-gradcam")
        shown = {row.find_elements("tag name", "td")[0].text: row.find_elements("tag name", "td")[1].text
                 for row in page.driver.find_elements("css selector", "#metrics tr")}
        assert shown == expected_metrics(lung1, mask)
        nodes = int(page.text("scene-nodes"))
        page.set_checked("method-gradcam", False)
        page.set_checked("method-rise", True)
        page.apply()
        wait_until(lambda: page.element("apply").text.upper() == "CANCEL", "Apply to read Cancel")
        first = page.text("status")
        wait_until(lambda: page.text("status") != first, "the progress to move")
        page.click("apply")
        page.wait_text("status", r"Cancelled: the scene was left unchanged")
        assert int(page.text("scene-nodes")) == nodes
        assert np.mean(page.heat_pixels(0)) > before + 0.001  # the earlier map is still shown
    finally:
        driver.quit()
        server.stop()
