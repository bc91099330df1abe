"""Reading saved results from your own code: a run's manifest and every analysis's summary, no model needed.

    from report.loader import load_run
    run = load_run("runs/20261127-101500")
    for (model, family, analysis), summary in run.summaries.items():
        ...

`read_result` is what `build` uses: it reads one analysis folder and, instead of raising on damage, says
which file is missing or corrupt, so that the page can show that section as missing and why.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

from safetensors import SafetensorError
from safetensors.numpy import load_file

from analyses.types import Result
from report import results_format
from report.errors import UserError

MANIFEST = "manifest.json"
SUMMARY, ARRAYS, EXTRAS = "summary.json", "arrays.safetensors", "extras.json"


@dataclass(frozen=True)
class Problem:
    """A damaged or missing results file: the CLI prints `path: what`; a page shows only the file's name."""

    path: Path
    what: str

    def __str__(self) -> str:
        return f"{self.path}: {self.what}"


class MissingArray(KeyError):
    """An array that a figure or a narrative reads is not in the result's arrays file (or the file is gone)."""


class SavedArrays(dict):
    """The arrays of one saved result. Looking up one that was not saved raises MissingArray: damaged data, which
    `build` shows as a missing section, where any other exception of a figure or a narrative is a bug."""

    def __missing__(self, key):
        raise MissingArray(key)


@dataclass
class Run:
    """One run folder: its manifest, and (model, family, folder name) -> summary for every readable summary."""

    path: Path
    manifest: dict
    summaries: dict[tuple[str, str, str], dict] = field(default_factory=dict)
    problems: list[Problem] = field(default_factory=list)  # one per unreadable summary


def load_manifest(run_dir: Path) -> dict:
    """The run's manifest; a missing or corrupt one is a one-line error naming the file."""
    path = Path(run_dir) / MANIFEST
    if not path.is_file():
        raise UserError(f"{run_dir} is not a run folder (no {MANIFEST})")
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise UserError(f"{path} is corrupt (not valid JSON: {err})") from None
    if not isinstance(manifest, dict) or not isinstance(manifest.get("models"), dict):
        raise UserError(f"{path} is corrupt (no 'models' object)")
    for slug, model in manifest["models"].items():
        if not isinstance(model, dict) or not isinstance(model.get("families", {}), dict):
            raise UserError(f"{path} is corrupt (model {slug!r} is not an object with 'families')")
    results_format.check(manifest, path)
    return manifest


def load_run(run_dir: str | Path) -> Run:
    """Every summary of a run, keyed by (model folder, family, analysis folder)."""
    run = Run(Path(run_dir), load_manifest(Path(run_dir)))
    for model in run.manifest["models"]:
        for family in run.manifest["models"][model].get("families", {}):
            family_dir = run.path / model / family
            for folder in sorted(p for p in family_dir.glob("*") if p.is_dir() and not p.name.startswith(".")):
                summary, problem = read_summary(folder)
                if problem:
                    run.problems.append(problem)
                else:
                    run.summaries[(model, family, folder.name)] = summary
    return run


def read_summary(folder: Path) -> tuple[dict | None, Problem | None]:
    path = folder / SUMMARY
    if not path.is_file():
        return None, Problem(path, "missing")
    try:
        summary = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        return None, Problem(path, f"corrupt (not valid JSON: {err})")
    if not isinstance(summary, dict):
        return None, Problem(path, "corrupt (not a JSON object)")
    return summary, None


def read_result(folder: Path) -> tuple[Result | None, Problem | None]:
    """(Result, None), or (None, one line naming the damaged file and the damage)."""
    summary, problem = read_summary(folder)
    if problem:
        return None, problem
    extras_path = folder / EXTRAS
    if not extras_path.is_file():
        return None, Problem(extras_path, "missing")
    try:
        extras = json.loads(extras_path.read_text(encoding="utf-8"))
        labels, widgets = extras["labels"], extras["widgets"]
    except (UnicodeDecodeError, json.JSONDecodeError, KeyError, TypeError) as err:
        return None, Problem(extras_path, f"corrupt ({type(err).__name__}: {err})")
    arrays_path = folder / ARRAYS
    arrays = SavedArrays()
    if arrays_path.exists():
        try:
            arrays = SavedArrays(load_file(str(arrays_path)))
        except (SafetensorError, OSError, ValueError) as err:
            return None, Problem(arrays_path, f"corrupt ({err})")
    return Result(summary=summary, arrays=arrays, labels=labels, widgets=widgets), None


def figures_problem(folder: Path, err: MissingArray) -> Problem:
    """Why a result that loaded cannot be drawn: its arrays file is gone, or lacks an array the analysis reads."""
    arrays_path = folder / ARRAYS
    if not arrays_path.exists():
        return Problem(arrays_path, "missing")
    return Problem(arrays_path, f"does not hold the array {err.args[0]!r} that this analysis draws")
