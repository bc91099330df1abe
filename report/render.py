"""`build`: render saved results into a self-contained HTML report (no model is loaded).

site/index.html holds the overview (model x family) and links to one page per model and family,
site/<model>/<family>.html. plotly.js and the circuitsvis bundle are inlined once per page; each figure
and widget is a small script call into them with its JSON, escaped so that nothing from a prompt can
close the <script>. Element ids are fixed, so rebuilding the same runs gives the same bytes.
"""

from __future__ import annotations

import importlib.util
import json
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path

import jinja2
import plotly.io as pio
from markupsafe import Markup

from analyses import REGISTRY
from analyses.text import num, pct, signed
from analyses.types import CORRUPTIONS, Analysis, Result
from report import results, transfer_page
from report.errors import UserError
from report.merge import merge_runs

TEMPLATES = Path(__file__).resolve().parent.parent / "templates"
CIRCUITSVIS_BUNDLE = Path("dist") / "cdn" / "iife.js"


@dataclass
class Section:
    analysis: Analysis
    result: Result
    figures: list[Markup]
    widgets: list[Markup]
    narrative: list[str]
    headline: list[tuple[str, str]]
    seconds: float | None
    corruption: str | None = None  # for per-corruption analyses: "day" or "relation"

    @property
    def anchor(self) -> str:
        return results.unit_name(self.analysis.name, self.corruption)


@dataclass
class FamilyPage:
    model_slug: str
    family: str
    info: dict
    sections: list[Section] = field(default_factory=list)

    @property
    def href(self) -> str:
        return f"{self.model_slug}/{self.family}.html"


def script_json(data) -> str:
    """JSON safe inside a <script> element: '<', '>' and '&' become \\u escapes."""
    text = data if isinstance(data, str) else json.dumps(data, ensure_ascii=False, allow_nan=False)
    return text.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")


def inline_js(source: str) -> Markup:
    """A library's source for an inline <script>: the only '</script' in the bundles sits inside strings."""
    return Markup(source.replace("</script", "<\\/script"))


@cache
def plotly_js() -> Markup:
    from plotly.offline import get_plotlyjs

    return inline_js(get_plotlyjs())


@cache
def circuitsvis_js() -> Markup:
    # find_spec locates the package without importing it (its __init__ pulls in torch and importlib_metadata)
    package = Path(importlib.util.find_spec("circuitsvis").origin).parent
    return inline_js((package / CIRCUITSVIS_BUNDLE).read_text(encoding="utf-8"))


def figure_html(figure_id: str, figure) -> Markup:
    height = int(figure.layout.height or 420)
    spec = pio.to_json(figure, validate=False)
    config = {"responsive": True, "displaylogo": False}
    return Markup(
        f'<div id="{figure_id}" class="plotly-graph-div" style="height:{height}px;width:100%;"></div>\n'
        f"<script>(function(){{var f={script_json(spec)};"
        f'Plotly.newPlot("{figure_id}",f.data,f.layout,{json.dumps(config)});}})();</script>'
    )


def widget_html(widget_id: str, widget: dict) -> Markup:
    props = {"attention": widget["attention"], "tokens": widget["tokens"],
             "attentionHeadNames": widget["head_names"], "maskUpperTri": True}
    return Markup(
        f'<div id="{widget_id}" class="cv-widget"></div>\n'
        f'<script>CircuitsVis.render("{widget_id}",CircuitsVis.AttentionHeads,{script_json(props)});</script>'
    )


def headline(summary: dict) -> list[tuple[str, str]]:
    """The summary's scalars and head/component rankings, as (label, text) rows; per-prompt lists are in figures."""
    rows = []
    for key, value in summary.items():
        if key == "family":
            continue
        if isinstance(value, (int, float, str)):
            rows.append((key.replace("_", " "), num(value)))
        elif isinstance(value, list) and value and isinstance(value[0], dict):
            rows.append((key.replace("_", " "), ", ".join(_ranked_entry(v) for v in value)))
    return rows


def _ranked_entry(entry: dict) -> str:
    name = entry.get("head") or entry.get("component") or "?"
    text = f"{name} ({num(entry.get('value', float('nan')), signed=True)}"
    if "ci_low" in entry and "ci_high" in entry:
        text += f", 95% CI {num(entry['ci_low'])} to {num(entry['ci_high'])}"
    return text + ")"


def environment() -> jinja2.Environment:
    env = jinja2.Environment(loader=jinja2.FileSystemLoader(TEMPLATES), autoescape=True,
                             undefined=jinja2.StrictUndefined, keep_trailing_newline=True)
    env.filters["num"] = num
    env.filters["signed"] = signed
    env.filters["pct"] = pct
    return env


def load_pages(locate, manifest: dict) -> list[FamilyPage]:
    """`locate(model_slug, family, analysis)` gives the result folder (report/merge.py `Merged.locate`)."""
    pages = []
    for model_slug, model in manifest["models"].items():
        for family, info in model.get("families", {}).items():
            if info.get("status") != "ok":
                continue
            page = FamilyPage(model_slug, family, info)
            for analysis in REGISTRY:
                for corruption in CORRUPTIONS if analysis.per_corruption else (None,):
                    unit = results.unit_name(analysis.name, corruption)
                    folder = locate(model_slug, family, unit)
                    if results.is_complete(folder):
                        page.sections.append(_section(analysis, results.load_result(folder),
                                                      model["analyses"].get(f"{family}/{unit}", {}), corruption))
            pages.append(page)
    return pages


def _section(analysis: Analysis, result: Result, timing: dict, corruption: str | None = None) -> Section:
    unit = results.unit_name(analysis.name, corruption)
    figures = [figure_html(f"{f.id}-{corruption}" if corruption else f.id, f.figure) for f in analysis.figures(result)]
    widgets = [widget_html(f"widget-{unit}-{i}", w) for i, w in enumerate(result.widgets)]
    return Section(analysis, result, figures, widgets, analysis.narrative(result), headline(result.summary),
                   timing.get("seconds"), corruption)


def overview_rows(manifest: dict, pages: list[FamilyPage]) -> list[dict]:
    by_key = {(p.model_slug, p.family): p for p in pages}
    rows = []
    for model_slug, model in manifest["models"].items():
        for family, info in model.get("families", {}).items():
            page = by_key.get((model_slug, family))
            sections = {s.analysis.name: s.result.summary for s in page.sections} if page else {}
            rows.append({"model": model.get("name", model_slug), "family": family, "info": info,
                         "href": page.href if page else None, "behaviour": sections.get("behaviour"),
                         "logit_diff": sections.get("logit_diff")})
    return rows


def build_site(run_dirs: list[Path], site: Path) -> Path:
    """Render every page in memory first (so errors surface before anything is written), then write them."""
    env = environment()
    outputs = {}
    merged = merge_runs([Path(d) for d in run_dirs])  # several folders (shards) render as one run
    pages = load_pages(merged.locate, merged.manifest)
    runs = [{"manifest": merged.manifest, "pages": pages, "rows": overview_rows(merged.manifest, pages),
             # transfer across sequences (issue 11): one table per model, None with a single sequence
             "transfer": {slug: transfer_page.transfer_table(transfer_page.from_pages(
                 [p for p in pages if p.model_slug == slug])) for slug in merged.manifest["models"]}}]
    all_pages = [p for run in runs for p in run["pages"]]
    if not all_pages:
        raise UserError("no complete results to render in " + ", ".join(map(str, run_dirs)))
    titles = [a.title.lower() for a in REGISTRY if any(s.analysis is a for p in all_pages for s in p.sections)]
    outputs["index.html"] = env.get_template("index.html").render(runs=runs, section_titles=titles, plotly_js=None,
                                                                 circuitsvis_js=None, root="")
    for run in runs:
        for page in run["pages"]:
            siblings = [p for p in run["pages"] if p.model_slug == page.model_slug]
            outputs[page.href] = env.get_template("family.html").render(
                page=page, siblings=siblings, manifest=run["manifest"],
                model=run["manifest"]["models"][page.model_slug], plotly_js=plotly_js(),
                circuitsvis_js=circuitsvis_js() if any(s.widgets for s in page.sections) else None, root="../")
    for relative, html in outputs.items():
        results.write_text_atomic(Path(site) / relative, html)
    return Path(site) / "index.html"

