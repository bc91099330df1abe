"""`--single-file FILE.html`: the whole build in one HTML file, to attach or send.

The index, then every model × family page as a closed <details>; plotly.js and the circuitsvis bundle are
inlined once. A page's figures are drawn only when it is opened (templates/page.js), so the file opens
fast however many pages it holds; the figure JSON waits in inert <script type="application/json"> blocks.
"""

from __future__ import annotations

from pathlib import Path

from report.publish import assets, render
from report.store.results import write_text_atomic


def render_single(build: render.Build) -> str:
    env = render.environment()
    scripts = assets.script_tags(assets.bundles(True, build.needs_circuitsvis), None)
    return env.get_template("single.html").render(
        build=build, form="single", home="#top", scripts=scripts, figures=render.Figures("single"),
        page_js=render.page_script(env), link=lambda page: f"#{page.anchor}")


def write_single(build: render.Build, path: Path) -> Path:
    write_text_atomic(Path(path), render_single(build))
    return Path(path)
