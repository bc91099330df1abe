"""The report in a real browser (Debian's chromium through Playwright), offline, from file://.

Every page opens without a request to anything but file:/data:, without a console error or warning or a
page error; every Plotly figure renders its SVG and every circuitsvis widget mounts. A screenshot of each
page is saved under test-output/browser/<site>/ for a person to look at.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

CHROMIUM = "/usr/bin/chromium"
ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
        "--disable-sync", "--no-first-run"]
SCREENSHOTS = Path(__file__).resolve().parent.parent / "test-output" / "browser"

pytestmark = pytest.mark.browser


@pytest.fixture(scope="module")
def browser():
    if not Path(CHROMIUM).exists():
        pytest.fail(f"{CHROMIUM} is missing: install Debian's chromium (apt-get install chromium), as .ci/run does")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        instance = playwright.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        yield instance
        instance.close()


def linked_pages(site: Path) -> list[Path]:
    index = site / "index.html"
    links = re.findall(r'href="([^"#]+\.html)"', index.read_text(encoding="utf-8"))
    return [index] + [site / link for link in dict.fromkeys(links) if link != "index.html"]


def check_page(browser, page_file: Path, shot: Path) -> dict:
    context = browser.new_context(offline=True, viewport={"width": 1280, "height": 900})
    problems, requests = [], []
    context.route("**/*", lambda route: route.continue_() if route.request.url.startswith(("file:", "data:"))
                  else (requests.append(route.request.url), route.abort()))
    page = context.new_page()
    page.on("console", lambda m: problems.append(f"console {m.type}: {m.text}")
            if m.type in ("error", "warning") else None)
    page.on("pageerror", lambda error: problems.append(f"page error: {error}"))
    page.on("request", lambda r: None if r.url.startswith(("file:", "data:")) else requests.append(r.url))
    page.goto(page_file.as_uri(), wait_until="load")
    figures = page.locator(".plotly-graph-div")
    widgets = page.locator(".cv-widget")
    page.wait_for_function(
        "() => [...document.querySelectorAll('.plotly-graph-div')].every(d => d.querySelector('.main-svg'))"
        " && [...document.querySelectorAll('.cv-widget')].every(w => w.querySelector('canvas, svg, table'))",
        timeout=60_000)
    counts = {"figures": figures.count(), "widgets": widgets.count(),
              "unrendered_figures": sum(figures.nth(i).locator(".main-svg").count() == 0
                                        for i in range(figures.count())),
              "unmounted_widgets": sum(widgets.nth(i).locator("canvas, svg, table").count() == 0
                                       or not widgets.nth(i).inner_html().strip() for i in range(widgets.count()))}
    shot.parent.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(shot), full_page=False)
    context.close()
    return {"problems": problems, "requests": requests, **counts}


def check_site(browser, site: Path, name: str) -> None:
    pages = linked_pages(site)
    assert len(pages) > 1, "the index links to no page"
    for page_file in pages:
        assert page_file.is_file(), f"overview link to {page_file} does not resolve"
        shot = SCREENSHOTS / name / (page_file.relative_to(site).as_posix().replace("/", "__") + ".png")
        seen = check_page(browser, page_file, shot)
        where = page_file.relative_to(site)
        assert seen["requests"] == [], f"{where} asked the network for {seen['requests']}"
        assert seen["problems"] == [], f"{where}: {seen['problems']}"
        assert seen["unrendered_figures"] == 0 and seen["unmounted_widgets"] == 0, (where, seen)
        if page_file.name != "index.html":
            assert seen["figures"] > 0 and seen["widgets"] > 0, (where, seen)
        assert shot.stat().st_size > 10_000


def test_tiny_report_renders_offline_in_chromium(browser, tiny_report):
    _, site = tiny_report
    check_site(browser, site, "tiny")


@pytest.mark.slow
def test_bundled_model_report_renders_offline_in_chromium(browser, gemma_report):
    _, site = gemma_report
    check_site(browser, site, "gemma-3-270m")
