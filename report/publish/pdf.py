"""`--pdf FILE.pdf`: a printable write-up, printed by headless Chromium.

The print page holds the index and every page one after another; Plotly draws each figure as SVG, which
Chromium prints as vectors (a heatmap's cells are a bitmap inside the vector axes, as on screen); each
attention widget is replaced by a still of its pattern (one heatmap per head), since an interactive
widget has nothing to print. Chromium is `--chromium PATH`, else `chromium` / `chromium-browser` /
`google-chrome` on PATH; it is run with no network use of its own and a throwaway profile.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from pathlib import Path

from report.errors import UserError
from report.publish import assets, pdf_pages, render

BROWSERS = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")
TIMEOUT_S = 600
FLAGS = ["--headless", "--disable-gpu", "--no-first-run", "--no-default-browser-check", "--disable-extensions",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--disable-dev-shm-usage", "--no-pdf-header-footer", "--run-all-compositor-stages-before-draw",
         "--virtual-time-budget=60000"]


def find_chromium(given: str | None) -> str:
    if given:
        path = shutil.which(given) or (given if Path(given).is_file() else None)
        if not path:
            raise UserError(f"--chromium {given}: no such program")
        return path
    for name in BROWSERS:
        path = shutil.which(name)
        if path:
            return path
    raise UserError("--pdf needs Chromium: install it (Debian: apt-get install chromium) or name it with "
                    "--chromium PATH")


def render_print(build: render.Build, numbers: dict[str, int] | None = None) -> str:
    """The print page; `numbers` (element id -> page) fills the contents list's page numbers (second pass)."""
    env = render.environment()
    scripts = assets.script_tags(assets.bundles(True, False), None)  # widgets print as Plotly stills
    # before the first pass, each number is a placeholder as wide as a two-digit one, so that filling them in
    # does not move anything to another page
    numbers = numbers if numbers is not None else _Placeholder()
    return env.get_template("print.html").render(
        build=build, form="print", home="#top", scripts=scripts, figures=render.Figures("print"),
        page_js=render.page_script(env), link=lambda page: f"#{page.anchor}", numbers=numbers)


class _Placeholder(dict):
    def get(self, key, default=None):
        return "00"


def write_pdf(build: render.Build, path: Path, chromium: str | None = None) -> Path:
    browser = find_chromium(chromium)
    path = Path(path).resolve()
    path.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="weekday-circuits-pdf-") as tmp:
        partial = _print(browser, render_print(build), Path(tmp), "first")
        numbers = pdf_pages.page_numbers(partial.read_bytes())
        if numbers:  # the second pass prints the contents list with the page numbers the first one found
            partial = _print(browser, render_print(build, numbers), Path(tmp), "numbered")
        staged = Path(tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")[1])
        try:  # copied beside the target, then renamed: the PDF appears whole or not at all
            shutil.copyfile(partial, staged)
            os.chmod(staged, 0o644)
            os.replace(staged, path)
        finally:
            staged.unlink(missing_ok=True)
    return path


def _print(browser: str, html: str, tmp: Path, name: str) -> Path:
    page = tmp / f"{name}.html"
    page.write_text(html, encoding="utf-8")
    partial = tmp / f"{name}.pdf"
    command = [browser, *FLAGS, f"--user-data-dir={tmp / 'profile'}", f"--print-to-pdf={partial}"]
    if hasattr(os, "geteuid") and os.geteuid() == 0:
        command.append("--no-sandbox")  # Chromium refuses to run as root with its sandbox
    try:
        done = subprocess.run([*command, page.as_uri()], capture_output=True, text=True, timeout=TIMEOUT_S)
    except subprocess.TimeoutExpired:
        raise UserError(f"{browser} did not finish printing the PDF within {TIMEOUT_S} s") from None
    except OSError as err:
        raise UserError(f"cannot run {browser}: {err.strerror}") from None
    if not partial.is_file() or partial.stat().st_size == 0:
        last = (done.stderr.strip().splitlines() or ["no message"])[-1]
        raise UserError(f"{browser} printed no PDF (exit {done.returncode}): {last}")
    return partial
