"""Fixtures the browser tests share."""
from __future__ import annotations

import pytest

from .browser import open_browser, require_web


@pytest.fixture(scope="module")
def driver():
    """One headless Chromium per test module (the page tests and the review tests each open their own)."""
    require_web()
    browser = open_browser()
    yield browser
    browser.quit()
