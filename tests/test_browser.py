"""The report in a real browser (Debian's chromium through Playwright), offline, from file://.

Every page opens without a request to anything but file:/data:, without a console error or warning or a
page error; every Plotly figure renders its SVG and every circuitsvis widget mounts. A screenshot of each
page is saved under the session's temporary folder (pytest keeps the last three: see docs/testing.md), never in
the repository, for a person to look at.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from conftest import TINY_FAMILIES

CHROMIUM = "/usr/bin/chromium"
ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
        "--disable-sync", "--no-first-run"]

pytestmark = pytest.mark.browser


@pytest.fixture(scope="session")
def screenshots(tmp_path_factory) -> Path:
    """Where the screenshots go: a temporary folder of this session, so a test run leaves the checkout as it was."""
    return tmp_path_factory.mktemp("browser-screenshots")


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


def open_offline(browser, page_file: Path):
    """A page opened from file:// in a context where every other request is aborted and counted."""
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
    return context, page, problems, requests


def check_page(browser, page_file: Path, shot: Path) -> dict:
    context, page, problems, requests = open_offline(browser, page_file)
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


def check_site(browser, site: Path, shots: Path) -> None:
    pages = linked_pages(site)
    assert len(pages) > 1, "the index links to no page"
    for page_file in pages:
        assert page_file.is_file(), f"overview link to {page_file} does not resolve"
        shot = shots / (page_file.relative_to(site).as_posix().replace("/", "__") + ".png")
        seen = check_page(browser, page_file, shot)
        where = page_file.relative_to(site)
        assert seen["requests"] == [], f"{where} asked the network for {seen['requests']}"
        assert seen["problems"] == [], f"{where}: {seen['problems']}"
        assert seen["unrendered_figures"] == 0 and seen["unmounted_widgets"] == 0, (where, seen)
        if page_file.name != "index.html":
            assert seen["figures"] > 0 and seen["widgets"] > 0, (where, seen)
        assert shot.stat().st_size > 10_000


def test_tiny_report_renders_offline_in_chromium(browser, tiny_report, screenshots):
    _, site = tiny_report
    check_site(browser, site, screenshots / "tiny")


def test_first_screen_shows_the_abstract_and_the_findings_box(browser, tiny_report, tmp_path):
    """Findings first: the index's abstract and a family page's "what we found" box are on the first screen."""
    _, site = tiny_report
    family = linked_pages(site)[1]
    for page_file, selector, expected in ((site / "index.html", "#abstract", "Nothing was found"),
                                          (family, "aside.found", "What we found")):
        context, page, problems, requests = open_offline(browser, page_file)
        shot = tmp_path / (page_file.stem + "-first-screen.png")
        page.screenshot(path=str(shot), full_page=False)
        box = page.locator(selector).bounding_box()
        height = page.viewport_size["height"]
        assert box is not None and 0 <= box["y"] < height / 2, (page_file.name, box)  # starts in the top half
        assert expected in page.locator(selector).inner_text()
        assert shot.stat().st_size > 10_000
        context.close()
        assert requests == [] and problems == [], (requests, problems)


@pytest.mark.slow
def test_bundled_model_report_renders_offline_in_chromium(browser, gemma_report, screenshots):
    _, site = gemma_report
    check_site(browser, site, screenshots / "gemma-3-270m")


def test_shared_assets_site_renders_offline_in_chromium(browser, tiny_report, tmp_path, screenshots):
    from conftest import invoke
    from publish_util import copy_run

    run_dir, _ = tiny_report
    run = copy_run(run_dir, tmp_path / "run", families=["tomorrow", "day_after"])
    invoke("build", run, "--site", tmp_path / "site", "--assets", "shared")
    check_site(browser, tmp_path / "site", screenshots / "shared-assets")


DRAWN = ("el => [...el.querySelectorAll('.plotly-graph-div')].every(d => d.querySelector('.main-svg'))"
         " && [...el.querySelectorAll('.cv-widget')].every(w => w.querySelector('canvas, svg, table'))")


def test_single_file_draws_nothing_until_a_page_is_opened_then_every_figure(browser, tiny_report, tmp_path,
                                                                            screenshots):
    from conftest import invoke

    run_dir, _ = tiny_report
    single = tmp_path / "report.html"
    invoke("build", run_dir, "--single-file", single)
    context, page, problems, requests = open_offline(browser, single)
    paint = page.evaluate("() => performance.getEntriesByName('first-contentful-paint').map(e => e.startTime)")
    assert page.locator(".main-svg").count() == 0  # lazy: the file opens without drawing any figure
    pages = page.locator("details.page")
    assert pages.count() == len(TINY_FAMILIES)
    drawn_figures = 0
    for i in range(pages.count()):
        details = pages.nth(i)
        details.locator("summary").first.click()
        handle = details.element_handle()
        page.wait_for_function(DRAWN, arg=handle, timeout=60_000)
        figures = details.locator(".plotly-graph-div").count()
        assert figures > 0 and details.locator(".cv-widget").count() > 0
        drawn_figures += figures
    assert page.locator(".main-svg").count() >= drawn_figures
    page.screenshot(path=str(screenshots / "single-file.png"))
    context.close()
    assert requests == [] and problems == [], (requests, problems)
    (screenshots / "single-file-first-paint.txt").write_text(f"{paint} ms, {single.stat().st_size} bytes\n")


def test_pdf_has_pages_and_the_headline_numbers_as_text(tiny_report, tiny_checkpoint, tmp_path):
    import json
    import shutil
    import subprocess

    from conftest import invoke
    from publish_util import copy_run

    from analyses.common.text import pct

    if not shutil.which("pdftotext"):
        pytest.fail("pdftotext is missing: install poppler-utils (apt-get install poppler-utils), as .ci/run does")
    run_dir, _ = tiny_report
    run = copy_run(run_dir, tmp_path / "run", families=["tomorrow"],
                   command=f"weekday-circuits report --model {tiny_checkpoint} --out {tmp_path}")
    invoke("build", run, "--pdf", tmp_path / "report.publish.pdf", "--chromium", CHROMIUM, "--title", "Printed report")
    pdf = tmp_path / "report.publish.pdf"
    assert pdf.read_bytes().startswith(b"%PDF-")
    info = subprocess.run(["pdfinfo", str(pdf)], capture_output=True, text=True, check=True).stdout
    assert int(re.search(r"Pages:\s+(\d+)", info).group(1)) >= 1
    text = subprocess.run(["pdftotext", "-layout", str(pdf), "-"], capture_output=True, text=True, check=True).stdout
    behaviour = json.loads((run / "tiny-gpt20" / "tomorrow" / "behaviour" / "summary.json").read_text())
    logit_diff = json.loads((run / "tiny-gpt20" / "tomorrow" / "logit_diff" / "summary.json").read_text())
    from analyses.common.text import signed

    for expected in ("Printed report", "tiny-gpt20", pct(behaviour["items_acc"]), pct(behaviour["top1_acc"]),
                     signed(logit_diff["copy_logit_diff_mean"]), "Abstract", "Contents", "What we found"):
        assert expected in text, expected
    assert str(tmp_path) not in text and str(tiny_checkpoint) not in text and "…/tiny-gpt20" in text
    check_contents_and_page_numbers(pdf, int(re.search(r"Pages:\s+(\d+)", info).group(1)))


def check_contents_and_page_numbers(pdf: Path, n_pages: int) -> None:
    """The first page opens with the abstract; every page has its number in the footer; each contents entry's
    number is the page on which that heading is printed."""
    import subprocess

    pages = [subprocess.run(["pdftotext", "-f", str(i), "-l", str(i), "-layout", str(pdf), "-"], capture_output=True,
                            text=True, check=True).stdout for i in range(1, n_pages + 1)]
    assert "Abstract" in pages[0] and "Contents" in "".join(pages[:2])
    for i, text in enumerate(pages, start=1):
        assert f"page {i} of {n_pages}" in text, f"page {i} has no page number in its footer"
    contents = "".join(pages[:2])
    start = contents.index("Contents")
    entries = re.findall(r"^\s*(\S.*?\S)\s{2,}(\d+)\s*$", contents[start:], re.M)
    assert len(entries) >= 5, contents[start:]
    for title, number in entries:
        assert 1 <= int(number) <= n_pages, (title, number)
        heading = re.sub(r"\s+", " ", title)
        on_page = re.sub(r"\s+", " ", pages[int(number) - 1])
        # a section computed per corruption is headed "<title> <corruption> corruption" (the badge), listed as
        # "<title> (<corruption> corruption)"
        base, corruption = re.fullmatch(r"(.*?)(?: \((\w+) corruption\))?", heading).groups()
        assert base in on_page, f"contents says {heading!r} is on page {number}"
        assert corruption is None or f"{base} {corruption} corruption" in on_page, (heading, number)
