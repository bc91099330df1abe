"""The page model of `build`: what the templates read (sections, family pages, the whole build), with no I/O.

A `Section` is one results unit (an analysis, or an analysis under one corruption) as drawn on a family page; a
`FamilyPage` groups a family's sections under the report's four parts; a `Build` is everything the templates need,
whatever the output form. report/publish/sections.py fills them from the run folders; report/publish/render.py renders
them.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from analyses.common import phrases
from analyses.common.text import num
from analyses.common.types import CORRUPTIONS, Analysis, Result
from report.publish import abstract, headlines, names
from report.store.loader import Problem
from report.store.units import unit_name

PARTS = ("behaviour", "evidence", "mechanism", "representation")
PART_TITLES = {"behaviour": "Behaviour", "evidence": "Evidence", "mechanism": "Mechanism",
               "representation": "Representation"}
MUTED_PARTS = ("evidence", "mechanism")  # greyed when the model is at chance on the family


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
        for key in (unit_name(analysis, c) for c in (None, *CORRUPTIONS)):
            for section in self.sections:
                if section.key == key and section.result is not None:
                    return section.result.summary
        return None

    @property
    def findings(self) -> abstract.Findings:
        """The "what we found" box: at most five sentences from the saved numbers (report/publish/abstract.py)."""
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
                    verdict = phrases.nothing_stands_out(f"{shown['name']} does the task on "
                                                         f"{abstract.listing(does, 20)}, but no component passes a "
                                                         "naming threshold")
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

def headline(summary: dict) -> list[tuple[str, str]]:
    """The summary's scalars and its lists of named entries (rankings, AND / OR nodes), as (label, text) rows;
    per-prompt lists are in figures, and a list of unnamed records (`verification`, one per sweep) is no ranking:
    the narrative states it where a sweep was not patched in full (analyses.methods.verified.sentence)."""
    rows = []
    for key, value in summary.items():
        if key in ("family", "corruption"):
            continue
        if isinstance(value, (int, float, str)):
            rows.append((key.replace("_", " "), num(value)))
        elif isinstance(value, list) and value and isinstance(value[0], dict) and "name" in value[0]:
            rows.append((key.replace("_", " "), ", ".join(_ranked_entry(v) for v in value)))
    return rows


def _ranked_entry(entry: dict) -> str:
    text = f"{entry['name']} ({num(entry.get('value', float('nan')), signed=True)}"
    if "ci_low" in entry and "ci_high" in entry:
        text += f", 95% CI {num(entry['ci_low'])} to {num(entry['ci_high'])}"
    return text + ")"


def part_of(analysis: Analysis) -> str:
    part = getattr(analysis, "part", None)
    if part in PARTS:
        return part
    return "behaviour" if analysis.name in ("behaviour", "logit_diff") else "evidence"


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
