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


def test_serve_lung1_apply_shows_the_heatmap_and_cancel_works(lung1):
    require_web()
    server = Served(lung1, "--model", "lung-nodule-2d", "--method", "gradcam", via_cli=True)
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
        before = page.heat_pixels(0).mean()
        assert before < 0.0005
        page.click("apply")
        page.wait_text("status", r"Created or updated: lung1_image Grad-CAM", seconds=600)
        wait_until(lambda: page.heat_pixels(0).mean() > 0.001, "heat colours over the real CT")
        page.screenshot("web-lung1-gradcam")
        nodes = int(page.text("scene-nodes"))
        page.click("method-gradcam")
        page.click("method-rise")
        page.click("apply")
        wait_until(lambda: page.element("apply").text.upper() == "CANCEL", "Apply to read Cancel")
        first = page.text("status")
        wait_until(lambda: page.text("status") != first, "the progress to move")
        page.click("apply")
        page.wait_text("status", r"Cancelled: the scene was left unchanged")
        assert int(page.text("scene-nodes")) == nodes
        assert np.mean(page.heat_pixels(0)) > 0.001  # the earlier map is still shown
    finally:
        driver.quit()
        server.stop()
