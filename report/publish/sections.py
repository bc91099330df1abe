"""Reading a run into pages: one section per results unit found on disk or recorded in the manifest.

Damage (an unreadable or unvouched file, an array the figures need that is not saved) becomes a section that says
so; any other exception of a figure or a narrative is a bug and propagates (report/boundary.py prints it).
"""

from __future__ import annotations

import json
from pathlib import Path

import plotly.io as pio

from analyses import REGISTRY
from analyses.common.types import CORRUPTIONS, Analysis
from report.publish import names
from report.publish.figure_html import as_text
from report.publish.pages import MUTED_PARTS, FamilyPage, Section, headline, part_of
from report.store.loader import MissingArray, Problem, figures_problem, read_result
from report.store.merge import Merged
from report.store.units import unit_name, unit_of


def load_pages(merged: Merged, folders: dict[str, str], labels: dict[str, str] | None = None) -> list[FamilyPage]:
    """The pages of a merged run (one run folder, or several shards: report/store/merge.py)."""
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
        keys = ([(unit_name(analysis.name, c), c) for c in info.get("corruptions") or ["day"]]
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
    units = {key: unit_of(key) for key in present}
    for analysis in REGISTRY:
        if getattr(analysis, "per_corruption", False):
            found = {c for a, c in units.values() if a == analysis.name and c is not None}
            variants = [c for c in CORRUPTIONS if c in found] + sorted(found - set(CORRUPTIONS))
            keys = [(unit_name(analysis.name, c), c) for c in variants]
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
            analysis = next((a for a in REGISTRY if a.name == unit_of(name)[0]), None)
            known.add(name)
            sections.append(Section(name, analysis.title if analysis else name, part_of(analysis) if analysis
                                    else "evidence", analysis, skipped=str(entry.get("reason", ""))))
    for key in sorted(present - known):
        sections.append(Section(key, key, "evidence", None, problem=Problem(
            folder(key), "not an analysis this version of weekday-circuits knows; not rendered")))
    return sections


def _section(folder: Path, key: str, analysis: Analysis, corruption: str | None, entry, identity) -> Section:
    """One analysis's section, drawn only from a result the manifest vouches for (report/store/loader.py `verify`)."""
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
    except Exception as err:  # named, so that the traceback says which analysis's code failed on which result
        err.add_note(f"while drawing the figures and narrative of analysis {analysis.name!r} from {folder}")
        raise
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
