"""The report in a real browser (Playwright + Debian's chromium): every image loads, no injected script runs,
no network request is attempted, the layout fits the window. Skipped only where chromium is absent and the
``CI`` variable is unset; in CI a missing chromium fails the test.

``MMCONCEPTS_SAVE_SCREENSHOT=1`` also copies the full-page screenshot to ``docs/report-screenshot.png``.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest
from report_data import make_folders

CHROMIUM = "/usr/bin/chromium"
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
        "--disable-background-networking", "--disable-component-update", "--disable-sync"]
DOCS_SCREENSHOT = Path(__file__).resolve().parents[2] / "docs" / "report-screenshot.png"


@pytest.fixture(scope="module")
def browser():
    if not os.path.exists(CHROMIUM):
        if os.environ.get("CI"):
            pytest.fail(f"{CHROMIUM} not found: CI must install Debian's chromium (apt-get install -y chromium)")
        pytest.skip(f"{CHROMIUM} not found (apt-get install -y chromium to run the browser test)")
    if os.environ.get("CI"):
        from playwright.sync_api import sync_playwright
    else:
        sync_playwright = pytest.importorskip("playwright.sync_api").sync_playwright
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        try:
            yield browser
        finally:
            browser.close()


@pytest.fixture(scope="module")
def report_file(tmp_path_factory):
    from mmconcepts.report import build_report

    root = tmp_path_factory.mktemp("browser")
    return build_report(*make_folders(root / "data"), out=root / "report.html")


def test_report_in_chromium(browser, report_file, tmp_path):
    context = browser.new_context(viewport={"width": 1400, "height": 900})
    page = context.new_page()
    page.set_default_timeout(20_000)
    attempted, dialogs, console_errors, page_errors = [], [], [], []

    def route(r):
        if r.request.url.startswith(("file:", "data:")):
            r.continue_()
        else:
            attempted.append(r.request.url)
            r.abort()

    page.route("**/*", route)
    page.on("request", lambda req: None if req.url.startswith(("file:", "data:")) else attempted.append(req.url))
    page.on("dialog", lambda d: (dialogs.append(d.message), d.dismiss()))  # any dialog fails the test below
    page.on("console", lambda m: console_errors.append(m.text) if m.type == "error" else None)
    page.on("pageerror", lambda e: page_errors.append(str(e)))
    try:
        page.goto(report_file.as_uri(), wait_until="load")

        shot = tmp_path / "report.png"
        page.screenshot(path=str(shot), full_page=True)
        assert shot.stat().st_size > 50_000
        if os.environ.get("MMCONCEPTS_SAVE_SCREENSHOT"):
            shutil.copyfile(shot, DOCS_SCREENSHOT)

        concepts = page.evaluate("""() => [...document.querySelectorAll('article.concept')].map(a => ({
            id: a.id,
            thumbs: a.querySelectorAll('.thumbs img').length,
            images: a.querySelectorAll('img').length,
            loaded: [...a.querySelectorAll('img')].filter(i => i.complete && i.naturalWidth > 0).length}))""")
        assert [c["id"] for c in concepts] == ["concept-0", "concept-1", "concept-2", "concept-3"]
        for c in concepts:
            assert c["thumbs"] == 5 and c["images"] == 6 and c["loaded"] == c["images"], c  # 5 thumbs + histogram
        broken = page.evaluate("[...document.images].filter(i => !(i.complete && i.naturalWidth > 0)).length")
        assert broken == 0 and page.evaluate("document.images.length") > 30

        assert page.evaluate("typeof window.__pwned") == "undefined"
        assert page.evaluate("document.querySelectorAll('script, [onerror], img[src=\"x\"]').length") == 0
        assert page.evaluate("document.documentElement.scrollWidth <= window.innerWidth")

        page.click('nav a[href="#concept-2"]')
        assert page.evaluate("location.hash") == "#concept-2"

        page.set_viewport_size({"width": 390, "height": 844})  # a phone: still no sideways scrolling
        assert page.evaluate("document.documentElement.scrollWidth <= window.innerWidth")
    finally:
        context.close()
    assert attempted == [], f"the report tried to fetch {attempted}"
    assert dialogs == [], f"a dialog opened: {dialogs}"
    assert page_errors == [] and console_errors == [], (page_errors, console_errors)
