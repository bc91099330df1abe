"""Sizes and opening time of the output forms, for one saved run (run by hand; no model is loaded).

    python benchmarks/publishing.py runs/<run-id> [--chromium /usr/bin/chromium]

Builds, into a temporary folder: the default site, the site with --assets shared, the single file and the
PDF, then reports each form's size, the PDF's page count (pdfinfo, if installed) and the single file's
first contentful paint in headless Chromium (Playwright driving the given Chromium, offline), median of 3.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import tempfile
import time
from pathlib import Path

from report.publish.outputs import OutputOptions, build


def folder_size(folder: Path) -> int:
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())


def first_paint_ms(page_file: Path, chromium: str, repeats: int = 3) -> float:
    from playwright.sync_api import sync_playwright

    times = []
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=chromium, args=["--no-sandbox", "--disable-gpu"])
        for _ in range(repeats):
            context = browser.new_context(offline=True)
            page = context.new_page()
            page.goto(page_file.as_uri(), wait_until="load")
            page.wait_for_function("() => performance.getEntriesByName('first-contentful-paint').length > 0")
            times.append(page.evaluate("() => performance.getEntriesByName('first-contentful-paint')[0].startTime"))
            context.close()
        browser.close()
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run_dirs", nargs="+", type=Path)
    parser.add_argument("--chromium", default="/usr/bin/chromium")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp)
        timings = {}
        for name, options in {
            "site": OutputOptions(site=out / "site"),
            "shared": OutputOptions(site=out / "shared", shared_assets=True),
            "single": OutputOptions(single_file=out / "report.html"),
            "pdf": OutputOptions(pdf=out / "report.publish.pdf", chromium=args.chromium),
        }.items():
            started = time.perf_counter()
            build(args.run_dirs, options)
            timings[name] = time.perf_counter() - started
        pages = sorted((out / "site").rglob("*.html"))
        shared_pages = [p for p in (out / "shared").rglob("*.html") if p.name != "index.html"]
        print(f"site (default):     {folder_size(out / 'site') / 1e6:7.2f} MB, {len(pages)} pages, "
              f"largest page {max(p.stat().st_size for p in pages) / 1e6:.2f} MB  (built in {timings['site']:.1f} s)")
        print(f"site (--assets shared): {folder_size(out / 'shared') / 1e6:7.2f} MB, pages "
              f"{min(p.stat().st_size for p in shared_pages) / 1e3:.0f}-"
              f"{max(p.stat().st_size for p in shared_pages) / 1e3:.0f} KB  (built in {timings['shared']:.1f} s)")
        single = out / "report.html"
        print(f"single file:        {single.stat().st_size / 1e6:7.2f} MB, first contentful paint "
              f"{first_paint_ms(single, args.chromium):.0f} ms (median of 3)  (built in {timings['single']:.1f} s)")
        pdf = out / "report.publish.pdf"
        try:
            info = subprocess.run(["pdfinfo", str(pdf)], capture_output=True, text=True, check=True).stdout
            n_pages = next(line.split()[-1] for line in info.splitlines() if line.startswith("Pages:"))
        except (OSError, subprocess.CalledProcessError, StopIteration):
            n_pages = "?"
        print(f"pdf:                {pdf.stat().st_size / 1e6:7.2f} MB, {n_pages} pages  "
              f"(printed in {timings['pdf']:.1f} s)")


if __name__ == "__main__":
    main()
