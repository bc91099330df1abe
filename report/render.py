"""`build`: turn saved results into the report's pages (no model is loaded).

This module reads the runs and renders HTML text; where it goes is decided by the output forms:
report/site.py (a folder of pages, the default), report/single_file.py (one HTML file), report/pdf.py.

Every figure is a Plotly JSON spec in a <script type="application/json"> block (escaped so that nothing
from a prompt can close the <script>), drawn by the page's small script (templates/page.js): at once on a
site page and in the PDF, when its page is opened in the single file. Plotly's layout template, which is
most of a small figure's JSON, is stored once per HTML file. Element ids are fixed, so rebuilding the
same runs gives the same bytes.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path

import jinja2
import plotly.io as pio
from markupsafe import Markup

from analyses import REGISTRY
from analyses.contract import entry_name
from analyses.text import num, pct, signed
from analyses.types import CORRUPTIONS, Analysis, Result
from report import abstract, assets, compare, headlines, names, results, transfer_page
from report.errors import UserError
from report.loader import MissingArray, Problem, figures_problem, read_result
from report.merge import Merged, merge_runs

PARTS = ("behaviour", "evidence", "mechanism", "representation")
PART_TITLES = {"behaviour": "Behaviour", "evidence": "Evidence", "mechanism": "Mechanism",
               "representation": "Representation"}
MUTED_PARTS = ("evidence", "mechanism")  # greyed when the model is at chance on the family
DEFAULT_TITLE = "weekday-circuits"
PRINT_FIGURE_WIDTH = 680  # px: an A4 page's text width at 96 dpi with 12 mm margins
PRINT_FIGURE_HEIGHT = 270  # px at most: about a quarter of an A4 page, so that a family's figures fit in a few pages


@dataclass
class Section:
    key: str  # the results folder's name (analysis, or analysis-corruption); the element id
    title: str
    part: str
    analysis: Analysis | None
    corruption: str | None = None
    result: Result | None = None
    figures: list[dict] = field(default_factory=list)  # {"id", "spec" (dict), "height"}
    widgets: list[dict] = field(default_factory=list)  # {"id", "props", "title", "tokens"}
    narrative: list[str] = field(default_factory=list)
    headline: list[tuple[str, str]] = field(default_factory=list)
    seconds: float | None = None
    problem: Problem | None = None
    skipped: str | None = None  # why the analysis was not run for this model (its architecture)
    muted: bool = False

    @property
    def noise_only(self) -> bool:
        """Its effects are raw changes on a clean − corrupted gap that is not informative, or its nodes are ranked by
        such a gap: nothing to print."""
        summary = self.result.summary if self.result else {}
        return any(summary.get(key) is False for key in ("normalised", "informative", "ranking_informative"))


@dataclass
class FamilyPage:
    model_slug: str  # the model's folder in the run
    folder: str  # the model's folder in the site (a few names are reserved there)
    model_name: str  # what the page calls the model: hub id or the local folder's name
    family: str
    info: dict
    sections: list[Section] = field(default_factory=list)

    @property
    def file(self) -> str:
        return names.page_file(self.family)

    @property
    def templates(self) -> list[str]:
        return family_templates(self.info)

    @property
    def href(self) -> str:
        return f"{self.folder}/{self.file}"

    @property
    def anchor(self) -> str:
        return "page-" + names.anchor(f"{self.folder}-{self.family}")

    def summary(self, analysis: str) -> dict | None:
        """The analysis's summary; for a per-corruption analysis the first corruption's (day before relation)."""
        for key in (results.unit_name(analysis, c) for c in (None, *CORRUPTIONS)):
            for section in self.sections:
                if section.key == key and section.result is not None:
                    return section.result.summary
        return None

    @property
    def findings(self) -> abstract.Findings:
        """The "what we found" box: at most five sentences from the saved numbers (report/abstract.py)."""
        summaries = {s.key: s.result.summary for s in self.sections if s.result is not None}
        return abstract.family_findings(summaries, self.model_name)

    def section_title(self, key: str) -> str:
        section = next((s for s in self.sections if s.key == key), None)
        if section is None:
            return key
        return section.title + (f" ({section.corruption} corruption)" if section.corruption else "")

    @property
    def above_chance(self) -> bool | None:
        """Behaviour's chance test on this family; None where behaviour was not computed."""
        behaviour = self.summary("behaviour")
        return behaviour["items_above_chance"] if behaviour else None

    @property
    def at_chance(self) -> bool:
        return self.above_chance is False

    @property
    def problems(self) -> list[Problem]:
        return [s.problem for s in self.sections if s.problem]

    def parts(self) -> list[tuple[str, list[list[Section]]]]:
        """Sections grouped under part headings in PARTS order; the corruptions of one analysis side by side."""
        grouped = []
        for part in PARTS:
            rows: list[list[Section]] = []
            for section in (s for s in self.sections if s.part == part):
                if section.corruption and rows and rows[-1][0].analysis is section.analysis and section.analysis:
                    rows[-1].append(section)
                else:
                    rows.append([section])
            if rows:
                grouped.append((part, rows))
        return grouped


@dataclass
class Build:
    """Everything the templates need, independent of the output form."""

    title: str
    runs: list[dict]  # {"manifest", "pages", "rows", "models": {slug: display info}}
    pages: list[FamilyPage]
    comparison: list[dict]
    section_titles: list[str]

    @property
    def problems(self) -> list[Problem]:
        return [p for page in self.pages for p in page.problems]

    @property
    def overview_columns(self) -> list[headlines.Column]:
        return headlines.columns("overview")

    @property
    def comparison_columns(self) -> list[headlines.Column]:
        return headlines.columns("comparison")

    def abstract(self) -> dict:
        """The index's abstract: the question, each model's provenance, one line per model on what was found."""
        models = []
        for run in self.runs:
            for slug, model in run["manifest"]["models"].items():
                shown = run["models"][slug]
                pages = [p for p in run["pages"] if p.model_slug == slug]
                does = [p.family for p in pages if p.findings.does_task]
                found = [p.family for p in pages if p.findings.found]
                if not does:
                    verdict = (f"Nothing was found: {shown['name']} does not do the task on any of the "
                               f"{len(pages)} famil{'y' if len(pages) == 1 else 'ies'} computed, so no component "
                               "is named.")
                elif not found:
                    verdict = (f"{shown['name']} does the task on {abstract.listing(does, 20)}, but no component "
                               "passes a naming threshold: nothing stands out.")
                else:
                    verdict = (f"{shown['name']} does the task on {len(does)} of {len(pages)} families "
                               f"({abstract.listing(does, 20)}); components are named on "
                               f"{abstract.listing(found, 20)}.")
                models.append({"name": shown["name"], "verdict": verdict, "pages": pages,
                               "provenance": abstract.provenance({**model, "source": shown["source"]},
                                                                 shown["name"])})
        return {"question": abstract.QUESTION, "models": models}

    @property
    def needs_circuitsvis(self) -> bool:
        return any(s.widgets for p in self.pages for s in p.sections)


def script_json(data) -> str:
    """JSON safe inside a <script> element: '<', '>' and '&' become \\u escapes."""
    text = data if isinstance(data, str) else json.dumps(data, ensure_ascii=False, allow_nan=False)
    return text.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")


# Plotly draws a few HTML-like tags in any string it shows (links, inline styles, bold...). Our figures use only
# these attribute-free ones; every other '<', and every '&', in a figure (a template holding <a href=...>, a token
# "<|endoftext|>") is escaped, so that user text is drawn as the text it is: no live link, no restyled label.
_OWN_TAGS = re.compile(r"<(?!/?(?:br|b|i|em|sup|sub|extra)\s*/?>)", re.IGNORECASE)


def as_text(value):
    """A figure spec (JSON-like) with every string's markup, except our own formatting tags, made literal."""
    if isinstance(value, str):
        return _OWN_TAGS.sub("&lt;", value.replace("&", "&amp;")) if ("<" in value or "&" in value) else value
    if isinstance(value, list):
        return [as_text(v) for v in value]
    if isinstance(value, dict):
        return {k: as_text(v) for k, v in value.items()}
    return value


def headline(summary: dict) -> list[tuple[str, str]]:
    """The summary's scalars and head/component rankings, as (label, text) rows; per-prompt lists are in figures."""
    rows = []
    for key, value in summary.items():
        if key in ("family", "corruption"):
            continue
        if isinstance(value, (int, float, str)):
            rows.append((key.replace("_", " "), num(value)))
        elif isinstance(value, list) and value and isinstance(value[0], dict):
            rows.append((key.replace("_", " "), ", ".join(_ranked_entry(v) for v in value)))
    return rows


def _ranked_entry(entry: dict) -> str:
    name = entry_name(entry) or "?"
    text = f"{name} ({num(entry.get('value', float('nan')), signed=True)}"
    if "ci_low" in entry and "ci_high" in entry:
        text += f", 95% CI {num(entry['ci_low'])} to {num(entry['ci_high'])}"
    return text + ")"


def part_of(analysis: Analysis) -> str:
    part = getattr(analysis, "part", None)
    if part in PARTS:
        return part
    return "behaviour" if analysis.name in ("behaviour", "logit_diff") else "evidence"


# ---------------------------------------------------------------- reading the runs


def load_pages(merged: Merged, folders: dict[str, str], labels: dict[str, str] | None = None) -> list[FamilyPage]:
    """The pages of a merged run (one run folder, or several shards: report/merge.py)."""
    labels = labels or names.display_names(merged.manifest["models"])
    pages = []
    for model_slug, model in merged.manifest["models"].items():
        for family, info in model.get("families", {}).items():
            if not isinstance(info, dict) or info.get("status") != "ok":
                continue
            page = FamilyPage(model_slug, folders[model_slug], labels[model_slug], family, info)
            family_dirs = [d / model_slug / family for d in merged.run_dirs if (d / model_slug / family).is_dir()]
            page.sections = _sections(family_dirs or [merged.run_dirs[0] / model_slug / family],
                                      lambda key, m=model_slug, f=family: merged.locate(m, f, key),
                                      family, model.get("analyses", {}), model.get("fingerprint"))
            page.sections += _not_computed(merged.manifest, info, {s.key for s in page.sections})
            _mute_if_at_chance(page)
            pages.append(page)
    return pages


def _not_computed(manifest: dict, info: dict, shown: set[str]) -> list[Section]:
    """A run that did not complete (still running, interrupted, killed): each requested analysis it has not saved
    yet, as a section that says so."""
    status = str(manifest.get("status", "unknown"))
    if status == "complete":
        return []
    sections = []
    for analysis in REGISTRY:
        if analysis.name not in (manifest.get("analyses_requested") or []):
            continue
        keys = ([(f"{analysis.name}-{c}", c) for c in info.get("corruptions") or ["day"]]
                if getattr(analysis, "per_corruption", False) else [(analysis.name, None)])
        for key, corruption in keys:
            if key not in shown:
                sections.append(Section(key, analysis.title, part_of(analysis), analysis, corruption, skipped=(
                    f"the run has not saved it (run status '{status}': still being written, stopped or killed; "
                    "`run --resume` computes it)")))
    return sections


def _sections(family_dirs: list[Path], locate, family: str, recorded: dict, identity: str | None) -> list[Section]:
    """One section per analysis folder present or recorded as complete; damage becomes a section that says so."""
    on_disk = {p.name for d in family_dirs for p in d.glob("*") if p.is_dir() and not p.name.startswith(".")}
    done = {key.split("/", 1)[1] for key, entry in recorded.items()
            if key.startswith(f"{family}/") and isinstance(entry, dict) and entry.get("status") == "complete"}
    present = on_disk | done

    def folder(key: str) -> Path:
        located = locate(key)
        if located.is_dir():
            return located
        return next((d / key for d in family_dirs if (d / key).is_dir()), family_dirs[0] / key)

    sections, known = [], set()
    units = {key: results.unit_of(key) for key in present}
    for analysis in REGISTRY:
        if getattr(analysis, "per_corruption", False):
            found = {c for a, c in units.values() if a == analysis.name and c is not None}
            variants = [c for c in CORRUPTIONS if c in found] + sorted(found - set(CORRUPTIONS))
            keys = [(results.unit_name(analysis.name, c), c) for c in variants]
            if analysis.name in present:  # saved before the analysis ran once per corruption
                keys.insert(0, (analysis.name, None))
        else:
            keys = [(analysis.name, None)] if analysis.name in present else []
        for key, corruption in keys:
            known.add(key)
            entry = recorded.get(f"{family}/{key}")
            sections.append(_section(folder(key), key, analysis, corruption, entry, identity))
    for key, entry in sorted(recorded.items()):
        name = key.split("/", 1)[1] if key.startswith(f"{family}/") else None
        if name and isinstance(entry, dict) and entry.get("status") == "skipped" and name not in known:
            analysis = next((a for a in REGISTRY if a.name == results.unit_of(name)[0]), None)
            known.add(name)
            sections.append(Section(name, analysis.title if analysis else name, part_of(analysis) if analysis
                                    else "evidence", analysis, skipped=str(entry.get("reason", ""))))
    for key in sorted(present - known):
        sections.append(Section(key, key, "evidence", None, problem=Problem(
            folder(key), "not an analysis this version of weekday-circuits knows; not rendered")))
    return sections


def _section(folder: Path, key: str, analysis: Analysis, corruption: str | None, entry, identity) -> Section:
    """One analysis's section, drawn only from a result the manifest vouches for (report/loader.py `verify`)."""
    seconds = entry.get("seconds") if isinstance(entry, dict) else None
    section = Section(key, analysis.title, part_of(analysis), analysis, corruption, seconds=seconds)
    result, problem = read_result(folder, entry, identity)
    if problem:
        section.problem = problem
        return section
    try:  # only a missing array is damage; any other exception of a figure or a narrative is a bug and propagates
        figures = analysis.figures(result)
        narrative = analysis.narrative(result)
    except MissingArray as err:
        section.problem = figures_problem(folder, err)
        return section
    section.result = result
    section.figures = [{"id": f"{key}--{f.id}", "spec": as_text(json.loads(pio.to_json(f.figure, validate=False))),
                        "height": int(f.figure.layout.height or 420)} for f in figures]
    section.widgets = [{"id": f"widget-{key}-{i}", "title": w["title"], "tokens": w["tokens"],
                        "props": {"attention": w["attention"], "tokens": w["tokens"],
                                  "attentionHeadNames": w["head_names"], "maskUpperTri": True}}
                       for i, w in enumerate(result.widgets)]
    section.narrative = narrative
    section.headline = headline(result.summary)
    return section


def _mute_if_at_chance(page: FamilyPage) -> None:
    if page.at_chance:
        for section in page.sections:
            section.muted = section.part in MUTED_PARTS


def overview_rows(manifest: dict, pages: list[FamilyPage]) -> list[dict]:
    by_key = {(p.model_slug, p.family): p for p in pages}
    labels = names.display_names(manifest["models"])
    rows = []
    for model_slug, model in manifest["models"].items():
        for family, info in model.get("families", {}).items():
            page = by_key.get((model_slug, family))
            rows.append({"model": labels[model_slug], "family": family, "info": info, "page": page,
                         "behaviour": page.summary("behaviour") if page else None,  # its badges
                         "above_chance": page.above_chance if page else None,
                         "cells": headlines.cells(page, "overview"), "templates": family_templates(info)})
    return rows


def family_templates(info: dict) -> list[str]:
    """A family's templates: the list of the newer manifests, or the single `template` of older ones."""
    templates = info.get("templates")
    if isinstance(templates, list):
        return [str(t) for t in templates]
    return [str(info["template"])] if "template" in info else []


def collect(run_dirs: list[Path], title: str | None = None) -> Build:
    """Several run folders (shards of one run, or runs of different models) are merged into one run first."""
    merged = merge_runs([Path(d) for d in run_dirs])
    manifest = merged.manifest
    folders = names.site_folders(list(manifest["models"]))
    labels = names.display_names(manifest["models"])  # distinct even for two folders of one name
    run = {"manifest": manifest, "pages": load_pages(merged, folders, labels)}
    run["rows"] = overview_rows(manifest, run["pages"])
    run["models"] = {slug: {"name": labels[slug], "source": names.source_kind(m)}
                     for slug, m in manifest["models"].items()}
    run["command"] = names.public_command(str(manifest.get("command", "")))
    run["transfer"] = {slug: _transfer(run["pages"], slug) for slug in manifest["models"]}
    pages = run["pages"]
    if not pages:
        raise UserError("no complete results to render in " + ", ".join(map(str, run_dirs)))
    titles = [a.title.lower() for a in REGISTRY if any(s.analysis is a for p in pages for s in p.sections)]
    return Build(title or DEFAULT_TITLE, [run], pages, compare.comparison(pages, manifest["models"]), titles)


def _transfer(pages: list[FamilyPage], slug: str):
    """The index's transfer-across-sequences table for one model (report/transfer_page.py); None for one sequence.

    Built from the sections that could be read: a damaged result is left out here as it is on its page.
    """
    families = {p.family: (p.info.get("sequence", "days"), {s.key: s.result for s in p.sections if s.result})
                for p in pages if p.model_slug == slug}
    return transfer_page.transfer_table(families)


# ---------------------------------------------------------------- rendering HTML


class Figures:
    """Figure and widget blocks for one HTML file: the Plotly layout template stored once per distinct template."""

    def __init__(self, form: str):
        self.form = form
        self.templates: dict[str, str] = {}  # template JSON -> element id

    def figure(self, figure: dict, prefix: str = "") -> Markup:
        """`prefix` keeps element ids unique where several pages share one file."""
        dom_id = prefix + figure["id"]
        spec = dict(figure["spec"])
        layout = dict(spec.get("layout", {}))
        template = layout.pop("template", None)
        spec["layout"] = layout
        attrs = ""
        if template is not None:
            text = json.dumps(template, sort_keys=True, ensure_ascii=False)
            template_id = self.templates.setdefault(text, f"wc-template-{len(self.templates)}")
            attrs = f' data-template="{template_id}"'
        config = {"responsive": True, "displaylogo": False}
        height = figure["height"]
        if self.form == "print":
            height = min(height, PRINT_FIGURE_HEIGHT)
            layout["width"], layout["height"] = PRINT_FIGURE_WIDTH, height
            config = {"staticPlot": True}
        return Markup(
            f'<div id="{dom_id}" class="plotly-graph-div" style="height:{height}px;width:100%;"'
            f' data-spec="{dom_id}-spec"{attrs} data-config="{Markup.escape(json.dumps(config))}"></div>\n'
            f'<script type="application/json" id="{dom_id}-spec">{script_json(spec)}</script>'
        )

    def widget(self, widget: dict, prefix: str = "") -> Markup:
        if self.form == "print":
            return self.figure(_widget_still(widget), prefix)
        dom_id = prefix + widget["id"]
        return Markup(f'<div id="{dom_id}" class="cv-widget" data-props="{dom_id}-props"></div>\n'
                      f'<script type="application/json" id="{dom_id}-props">'
                      f'{script_json(widget["props"])}</script>')

    def template_blocks(self) -> Markup:
        return Markup("".join(f'<script type="application/json" id="{tid}">{script_json(text)}</script>\n'
                              for text, tid in self.templates.items()))


PRINT_STILL_HEADS = 2  # heads per printed still: one row, so that subplot titles never overlap


def _widget_still(widget: dict) -> dict:
    """A printable still of an attention widget: a heatmap of each of its first heads' patterns (destination x
    source); the title says how many more heads the HTML report's widget holds."""
    from plotly.subplots import make_subplots

    tokens, heads = widget["tokens"], widget["props"]["attentionHeadNames"][:PRINT_STILL_HEADS]
    more = len(widget["props"]["attentionHeadNames"]) - len(heads)
    labels = [f"{i}:{t}" for i, t in enumerate(tokens)]
    fig = make_subplots(rows=1, cols=max(1, len(heads)), subplot_titles=heads, horizontal_spacing=0.2)
    for i, pattern in enumerate(widget["props"]["attention"][:len(heads)]):
        fig.add_heatmap(z=pattern, x=labels, y=labels, zmin=0, zmax=1, colorscale="Blues", showscale=i == 0,
                        row=1, col=i + 1)
    title = f"and {more} more head{'s' if more > 1 else ''} in the HTML report" if more > 0 else None
    fig.update_layout(template="plotly_white", height=PRINT_FIGURE_HEIGHT, margin=dict(l=90, r=20, t=40, b=90),
                      font=dict(size=9), title=dict(text=title, x=0.99, xanchor="right", font=dict(size=9)))
    fig.update_yaxes(autorange="reversed")
    fig.update_yaxes(title_text="destination", col=1)
    fig.update_xaxes(title_text="source", tickangle=-60)
    return {"id": widget["id"] + "-still", "spec": as_text(json.loads(pio.to_json(fig, validate=False))),
            "height": PRINT_FIGURE_HEIGHT}


def environment() -> jinja2.Environment:
    env = jinja2.Environment(loader=names.template_loader(), autoescape=True, undefined=jinja2.StrictUndefined,
                             keep_trailing_newline=True)
    env.filters["num"] = num
    env.filters["signed"] = signed
    env.filters["pct"] = pct
    env.globals["part_titles"] = PART_TITLES
    return env


def page_script(env: jinja2.Environment) -> Markup:
    return assets.inline_js(env.loader.get_source(env, "page.js")[0])


def render_index(env, build: Build, scripts: Markup, figures: Figures) -> str:
    return env.get_template("index.html").render(build=build, form="site", home="index.html", scripts=scripts,
                                                  figures=figures,
                                                  page_js=page_script(env), link=lambda page: page.href)


def render_family(env, build: Build, run: dict, page: FamilyPage, scripts: Markup, figures: Figures) -> str:
    siblings = [p for p in run["pages"] if p.model_slug == page.model_slug]
    return env.get_template("family.html").render(
        build=build, run=run, page=page, siblings=siblings, form="site", home="../index.html", scripts=scripts,
        figures=figures, page_js=page_script(env), link=lambda other: f"../{other.href}")

