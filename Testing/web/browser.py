"""Serve the page in a subprocess and drive it with headless Chromium (selenium + chromedriver).

Everything waits on observable state (a line the server prints, an element's text, the
pixels of a screenshot) by polling with generous deadlines, never on fixed sleeps, so the
tests hold on a loaded machine.
"""
from __future__ import annotations

import io
import os
import queue
import re
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[2]
#: generous: a cold start on two busy cores imports torch, VTK and trame
START_SECONDS = 180.0
WAIT_SECONDS = 120.0
SCREENSHOTS = Path(os.environ.get("XAIEXPLAIN_SCREENSHOTS", ROOT / "Testing" / "artifacts" / "web"))


def chromium_paths():
    browser = shutil.which("chromium") or shutil.which("chromium-browser")
    driver = shutil.which("chromedriver")
    return browser, driver


def require_web():
    """Skip (with the command that installs it) where the browser or the web extra is missing."""
    for module in ("selenium", "trame_slicer", "slicer_layer_dm"):
        pytest.importorskip(module, reason=f"{module} missing: pip install -e '.[test]' && "
                                           "pip install --no-deps slicer-layer-dm==2.0.0")
    browser, driver = chromium_paths()
    if not browser or not driver:
        pytest.skip("Debian's chromium and chromium-driver are needed: apt-get install chromium chromium-driver")


def wait_until(predicate, what: str, seconds: float = WAIT_SECONDS, every: float = 0.05):
    """Poll ``predicate`` until it returns a truthy value; fail naming ``what`` after ``seconds``."""
    deadline = time.monotonic() + seconds
    last_error = None
    while time.monotonic() < deadline:
        try:
            value = predicate()
        except Exception as error:  # noqa: BLE001 - an element not there yet
            last_error, value = error, None
        if value:
            return value
        time.sleep(every)
    raise AssertionError(f"timed out after {seconds:.0f} s waiting for {what}"
                         + (f" (last error: {last_error})" if last_error else ""))


class Served:
    """``python -m XAIExplainLib.web ARGS --port 0`` in a subprocess; ``url`` once it listens."""

    def __init__(self, *args, env=None, via_cli=False):
        self.args = [str(a) for a in args]
        entry = ["XAIExplainLib.cli", "serve"] if via_cli else ["XAIExplainLib.web"]
        environment = dict(os.environ, **(env or {}))
        environment["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT / "XAIExplain"),
                                                                   environment.get("PYTHONPATH")]))
        environment.setdefault("OMP_NUM_THREADS", "1")
        self.process = subprocess.Popen([sys.executable, "-m", *entry, *self.args, "--port", "0"],
                                        cwd=ROOT, env=environment, stdout=subprocess.PIPE,
                                        stderr=subprocess.STDOUT, text=True, bufsize=1)
        self.lines: queue.Queue = queue.Queue()
        self.output: list = []
        threading.Thread(target=self._read, daemon=True).start()
        self.url = self._wait_url()

    def _read(self):
        for line in self.process.stdout:
            self.output.append(line)
            self.lines.put(line)
        self.lines.put(None)

    def _wait_url(self) -> str:
        deadline = time.monotonic() + START_SECONDS
        while time.monotonic() < deadline:
            try:
                line = self.lines.get(timeout=max(0.1, deadline - time.monotonic()))
            except queue.Empty:
                break
            if line is None:
                break
            found = re.search(r"served at (http://\S+)", line)
            if found:
                return found.group(1)
        self.stop()
        raise AssertionError("the server did not start:\n" + "".join(self.output[-30:]))

    @property
    def base(self) -> str:
        return self.url.split("?")[0]

    def stop(self):
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(30)


def open_browser(width: int = 1500, height: int = 820):
    from selenium import webdriver
    from selenium.webdriver.chrome.options import Options
    from selenium.webdriver.chrome.service import Service

    browser, driver = chromium_paths()
    options = Options()
    for argument in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                     f"--window-size={width},{height}", "--hide-scrollbars"):
        options.add_argument(argument)
    options.binary_location = browser
    return webdriver.Chrome(service=Service(driver), options=options)


class Page:
    """The page in the browser: elements by id, state by text, pixels by screenshot."""

    def __init__(self, driver, url: str):
        self.driver = driver
        driver.get(url)
        wait_until(lambda: self.element("apply").is_displayed(), "the page to show its Apply button")

    def element(self, element_id: str):
        return self.driver.find_element("id", element_id)

    def text(self, element_id: str) -> str:
        return self.element(element_id).get_attribute("textContent").strip()

    def select(self, element_id: str, value: str):
        from selenium.webdriver.support.ui import Select

        wait_until(lambda: value in [o.get_attribute("value") for o in Select(self.element(element_id)).options],
                   f"option '{value}' in #{element_id}")
        Select(self.element(element_id)).select_by_value(value)

    def click(self, element_id: str):
        """Click as a person does: the element is scrolled into the panel's view first."""
        element = self.element(element_id)
        self.driver.execute_script("arguments[0].scrollIntoView({block: 'center'})", element)
        element.click()

    def set_checked(self, element_id: str, checked: bool):
        """Tick or untick a checkbox and wait until the page shows it so (the state has round-tripped)."""
        if self.element(element_id).is_selected() != checked:
            self.click(element_id)
        wait_until(lambda: self.element(element_id).is_selected() == checked, f"#{element_id} checked={checked}")

    def apply(self):
        """Press Apply once the page enables it (a model, a method and an image are chosen)."""
        wait_until(lambda: self.element("apply").is_enabled(), "the Apply button to be enabled" + self.situation())
        self.click("apply")

    def situation(self) -> str:
        """The page's status and error, for a failure message."""
        try:
            return f" (status: {self.text('status')!r}; error: {self.text('error')!r})"
        except Exception:  # noqa: BLE001 - the page is gone
            return ""

    def wait_text(self, element_id: str, pattern: str, seconds: float = WAIT_SECONDS) -> str:
        try:
            return wait_until(lambda: re.search(pattern, self.text(element_id)) and self.text(element_id),
                              f"#{element_id} to match '{pattern}'", seconds)
        except AssertionError as error:
            raise AssertionError(f"{error}{self.situation()}") from None

    def screenshot(self, name: str | None = None) -> np.ndarray:
        from PIL import Image

        png = self.driver.get_screenshot_as_png()
        if name:
            SCREENSHOTS.mkdir(parents=True, exist_ok=True)
            (SCREENSHOTS / f"{name}.png").write_bytes(png)
        return np.asarray(Image.open(io.BytesIO(png)).convert("RGB")).astype(int)

    def view_box(self, index: int) -> tuple:
        """``(top, bottom, left, right)`` screenshot pixels of slice view ``index`` (axial, coronal, sagittal)."""
        rect = self.element("views").rect
        scale = self.driver.execute_script("return window.devicePixelRatio") or 1
        third = rect["width"] / 3
        left = rect["x"] + index * third
        return (int(rect["y"] * scale) + 40, int((rect["y"] + rect["height"]) * scale) - 50,
                int(left * scale) + 30, int((left + third) * scale) - 10)

    def heat_pixels(self, index: int = 0, image=None) -> np.ndarray:
        """Mask of the view's coloured pixels: the CT is grey (R = G = B), Inferno over it is not."""
        image = self.screenshot() if image is None else image
        top, bottom, left, right = self.view_box(index)
        view = image[top:bottom, left:right]
        return (view.max(axis=2) - view.min(axis=2)) > 40

    def slice_views_ready(self) -> bool:
        """The views have drawn the image (grey pixels, not only the black background)."""
        image = self.screenshot()
        top, bottom, left, right = self.view_box(0)
        view = image[top:bottom, left:right]
        return (view.mean(axis=2) > 60).mean() > 0.1

    def scroll_slice(self, view: int, presses: int):
        """Scroll a slice view as a person does: focus its slider's thumb, press the arrow keys."""
        from selenium.webdriver.common.keys import Keys

        thumbs = self.driver.find_elements("css selector", "#views .v-slider-thumb")
        thumbs[view].click()
        key = Keys.ARROW_RIGHT if presses > 0 else Keys.ARROW_LEFT
        for _ in range(abs(presses)):
            self.driver.switch_to.active_element.send_keys(key)

    def view_pixels(self, index: int, image=None) -> np.ndarray:
        image = self.screenshot() if image is None else image
        top, bottom, left, right = self.view_box(index)
        return image[top:bottom, left:right]
