"""`build`: turn saved results into the report's pages (no model is loaded).

This module collects the runs into one `Build` (report/publish/pages.py, filled by report/publish/sections.py) and
renders its index and family pages with Jinja; figures and widgets become HTML blocks in report/publish/figure_html.py.
Where the pages go is decided by the output forms: report/publish/site.py (a folder of pages, the default),
report/publish/single_file.py (one HTML file), report/publish/pdf.py.
"""

from __future__ import annotations

from pathlib import Path

import jinja2
from markupsafe import Markup

from analyses import REGISTRY
from analyses.common.text import num, pct, signed
from report.errors import UserError
from report.publish import assets, compare, names, transfer_page
from report.publish.figure_html import Figures, as_text
from report.publish.pages import PART_TITLES, Build, FamilyPage, overview_rows
from report.publish.sections import load_pages
from report.store.merge import merge_runs

__all__ = ["Build", "FamilyPage", "Figures", "as_text", "collect", "environment", "page_script", "render_family",
           "render_index"]

DEFAULT_TITLE = "weekday-circuits"


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
    """The index's transfer-across-sequences table for one model (report/publish/transfer_page.py); None for one
    sequence.

    Built from the sections that could be read: a damaged result is left out here as it is on its page.
    """
    families = {p.family: (p.info.get("sequence", "days"), {s.key: s.result for s in p.sections if s.result})
                for p in pages if p.model_slug == slug}
    return transfer_page.transfer_table(families)


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
