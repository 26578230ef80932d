"""The served page's other faces: reviewing an output folder, the access token, uploads.

The review folder is made by running ``xaiexplain explain`` in the test; the token is checked
with plain HTTP requests (page, assets, websocket) and in the browser; uploads go through the
page's file input, the oversized one refused without touching the scene.
"""
from __future__ import annotations

import http.cookiejar
import subprocess
import sys
import urllib.error
import urllib.request

import pytest
import SimpleITK as sitk

from .browser import ROOT, Page, Served, require_web, wait_until

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")


def _phantom(path, seed):
    from XAIExplainLib.imaging.phantoms import chest_phantom

    phantom = chest_phantom(seed=seed, shape=(12, 96, 96), spacing=(5.0, 2.4, 2.4))
    sitk.WriteImage(phantom.image(), str(path), True)
    return path


@pytest.fixture(scope="module")
def review_folder(tmp_path_factory):
    require_web()
    folder = tmp_path_factory.mktemp("review")
    inputs = [_phantom(folder / "alpha.nrrd", 5), _phantom(folder / "beta.nrrd", 6)]
    out = folder / "audit"
    run = subprocess.run([sys.executable, "-m", "XAIExplainLib.cli", "explain", *map(str, inputs), "--model",
                          "lung-nodule-2d", "--method", "gradcam", "--label-threshold", "otsu", "-o", str(out),
                          "--quiet"], cwd=ROOT, capture_output=True, text=True,
                         env={"PYTHONPATH": str(ROOT / "XAIExplain"), "OMP_NUM_THREADS": "1",
                              "PATH": "/usr/bin:/bin"})
    assert run.returncode == 0, run.stderr
    return out


def test_review_steps_through_the_inputs_with_their_maps_and_label_maps(review_folder, driver):
    server = Served("--review", review_folder)
    try:
        page = Page(driver, server.url)
        assert page.wait_text("review-title", "Review of audit")
        first = page.wait_text("review-summary", r"^alpha: 1 map\(s\), 1 label map\(s\); prediction")
        wait_until(lambda: page.heat_pixels(0).mean() > 0.02, "alpha's heatmap in the axial view")
        page.screenshot("web-review-alpha")
        page.click("review-next")
        second = page.wait_text("review-summary", r"^beta: 1 map\(s\), 1 label map\(s\)")
        assert first != second
        names = [s.get_attribute("textContent").strip() for s in page.driver.find_elements("css selector",
                                                                                           "#heatmaps span")]
        assert names == ["beta_gradcam_nodule"] or names == ["beta_gradcam"] or all(n.startswith("beta_gradcam")
                                                                                     for n in names)
        assert int(page.text("scene-nodes")) > 0
        page.click("review-next")        # wraps around to the first input
        page.wait_text("review-summary", r"^alpha:")
    finally:
        server.stop()


def _noise(shape):
    import numpy as np

    return sitk.GetImageFromArray(np.random.default_rng(0).integers(-1000, 1000, shape).astype(np.int16))


def _status(url, opener=None):
    try:
        with (opener or urllib.request.build_opener()).open(url, timeout=60) as response:
            return response.status, response.read(2000)
    except urllib.error.HTTPError as error:
        return error.code, error.read(2000)


@pytest.fixture(scope="module")
def guarded(tmp_path_factory):
    require_web()
    folder = tmp_path_factory.mktemp("guarded")
    image = _phantom(folder / "named.nrrd", 7)
    server = Served(image, "--require-token", "--upload-limit", "0.25")
    yield server, folder
    server.stop()


def test_the_token_is_required_for_the_page_its_assets_and_the_websocket(guarded):
    server, _ = guarded
    token = server.url.split("token=")[1]
    assert len(token) >= 24
    for path in ("", "index.html", "ws", "download/vtkMRMLScalarVolumeNode1"):
        status, body = _status(server.base + path)
        assert status == 403, (path, status)
        assert b"access token" in body
    status, _ = _status(server.base + "?token=" + "x" * len(token))
    assert status == 403
    cookies = urllib.request.build_opener(urllib.request.HTTPCookieProcessor(http.cookiejar.CookieJar()))
    status, body = _status(server.url, cookies)  # the token once, then its cookie (the redirect to index.html)
    assert status == 200 and b"<html" in body.lower()


def test_uploads_open_in_the_page_and_an_oversized_one_is_refused(guarded, driver):
    server, folder = guarded
    page = Page(driver, server.url)
    page.wait_text("status", r"Loaded 'named'")
    nodes = int(page.text("scene-nodes"))
    small = folder / "small_upload.nrrd"
    sitk.WriteImage(_noise((6, 24, 24)), str(small), True)
    page.element("upload").send_keys(str(small))
    page.wait_text("status", r"Loaded 'small_upload'")
    assert int(page.text("scene-nodes")) > nodes
    nodes = int(page.text("scene-nodes"))
    big = folder / "big_upload.nrrd"
    sitk.WriteImage(_noise((40, 96, 96)), str(big), False)
    assert big.stat().st_size > 0.25 * 2 ** 20
    page.element("upload").send_keys(str(big))
    message = page.wait_text("error", r"Cannot open the upload")
    assert "more than the 0 MB this server accepts" in message
    assert int(page.text("scene-nodes")) == nodes


def test_model_trust_is_asked_in_the_page_as_the_panel_asks(tmp_path, driver):
    import json

    import torch

    from XAIExplainLib.logic import XAIExplainLogic
    from XAIExplainLib.models.architectures import SliceClassifier

    models = tmp_path / "models"
    models.mkdir()
    torch.manual_seed(0)
    network = SliceClassifier(in_channels=1, num_classes=2, widths=[4, 4, 8, 8]).eval()
    torch.jit.save(torch.jit.script(network), str(models / "net.pt"))
    (models / "net.json").write_text(json.dumps({
        "name": "scripted", "task": "classification", "spatial_dims": 2,
        "input": {"channels": 1, "size": [32, 32], "intensity": {"mode": "zscore"}}, "classes": ["normal", "lesion"]}))
    reason = XAIExplainLogic().trustNeeded(str(models / "net.pt"))
    assert reason  # TorchScript is a program: the logic asks for trust
    server = Served(_phantom(tmp_path / "ct.nrrd", 8), "--models-dir", models)
    try:
        page = Page(driver, server.url)
        values = [o.get_attribute("value") for o in page.driver.find_elements("css selector", "#model option")]
        assert str(models / "net.pt") in values and str(models / "net.json") not in values
        page.select("model", str(models / "net.pt"))
        question = page.wait_text("trust-dialog", "Trust this model and load it")
        assert reason.splitlines()[0] in question
        page.click("trust-no")
        page.wait_text("model-description", "Not loaded: the model was not trusted")
        page.select("model", str(models / "net.pt"))
        page.wait_text("trust-dialog", "Trust this model and load it")
        page.click("trust-yes")
        page.wait_text("model-description", r"^scripted: classification \(2D\); classes: normal, lesion")
        # layer methods cannot hook TorchScript: the page greys them out with the logic's reason
        assert not page.element("method-gradcam").is_enabled() and page.element("method-saliency").is_enabled()
    finally:
        server.stop()
