"""Reading saved results from your own code: a run's manifest and every analysis's summary, no model needed.

    from report.store.loader import load_run
    run = load_run("runs/20261127-101500")
    for (model, family, analysis), summary in run.summaries.items():
        ...

`read_result` is what `build` uses: it reads one analysis folder and, instead of raising on damage, says
which file is missing or corrupt, so that the page can show that section as missing and why.

Nothing is read as data unless the manifest vouches for it: every file must match the sha256 the manifest
recorded when the run wrote it, and the result's model identity (extras.json) must be its manifest model's.
An edited summary, an arrays file copied from another run, or a result folder the manifest does not record
complete is a Problem like a damaged file, never a result. The manifest itself is validated against
report/store/schemas/manifest.schema.json first (model and family keys are plain folder names).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

from safetensors import SafetensorError
from safetensors.numpy import load_file

from analyses.common.types import Result
from report.errors import UserError
from report.store import results, results_format
from report.store.schema import MANIFEST as MANIFEST_SCHEMA
from report.store.schema import validate

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


def load_manifest(run_dir: Path, resume: bool = False) -> dict:
    """The run's manifest, checked against its schema; a missing, corrupt or damaged one is one line naming it, and
    so is a results format this version cannot read (with `resume`: cannot continue; report/store/results_format.py)."""
    path = Path(run_dir) / MANIFEST
    if not path.is_file():
        if Path(run_dir).is_dir():
            raise UserError(f"{run_dir} holds no {MANIFEST}: it is not a run folder, or its manifest was deleted "
                            "(its results cannot be verified, so they can be neither built nor resumed)")
        raise UserError(f"{run_dir} is not a run folder (no such folder)")
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError) as err:
        raise UserError(f"{path} is corrupt (not valid JSON: {err})") from None
    if not isinstance(manifest, dict) or not isinstance(manifest.get("models"), dict):
        raise UserError(f"{path} is corrupt (no 'models' object)")
    for slug, model in manifest["models"].items():
        if not isinstance(model, dict) or not isinstance(model.get("families", {}), dict):
            raise UserError(f"{path} is corrupt (model {slug!r} is not an object with 'families')")
    results_format.check(manifest, path, resume)
    errors = validate(manifest, MANIFEST_SCHEMA)
    if errors:
        more = f" (and {len(errors) - 1} more)" if len(errors) > 1 else ""
        raise UserError(f"{path} is damaged: {errors[0][:200]}{more}")
    return manifest


def recorded_units(model: dict, family: str) -> dict[str, dict]:
    """{analysis folder: its manifest entry} for one family of one model entry."""
    return {key.split("/", 1)[1]: entry for key, entry in model.get("analyses", {}).items()
            if key.split("/", 1)[0] == family}


def load_run(run_dir: str | Path) -> Run:
    """Every verified summary of a run, keyed by (model folder, family, analysis folder); the rest are problems."""
    run = Run(Path(run_dir), load_manifest(Path(run_dir)))
    for model_slug, model in run.manifest["models"].items():
        for family in model.get("families", {}):
            family_dir = run.path / model_slug / family
            recorded = recorded_units(model, family)
            on_disk = {p.name for p in family_dir.glob("*") if p.is_dir() and not p.name.startswith(".")}
            for unit in sorted(on_disk | {u for u, e in recorded.items() if e.get("status") == "complete"}):
                folder = family_dir / unit
                problem = verify(folder, recorded.get(unit), model.get("fingerprint"))
                summary = None
                if problem is None:
                    summary, problem = read_summary(folder)
                if problem:
                    run.problems.append(problem)
                else:
                    run.summaries[(model_slug, family, unit)] = summary
    return run


def verify(folder: Path, entry: dict | None, identity: str | None) -> Problem | None:
    """None when the manifest records this result complete, every file matches its recorded sha256 and the result
    was computed for the manifest's model; else the first problem, naming the file."""
    if not isinstance(entry, dict) or entry.get("status") != "complete":
        return Problem(folder / SUMMARY, "not recorded complete in the manifest (a run stopped while saving it, "
                                         "or copied in); not published")
    checksums = entry.get("files") or {}
    if SUMMARY not in checksums:
        return Problem(folder / SUMMARY, "the manifest records no checksum for it (an older version wrote it); "
                                         "recompute with --resume")
    if not folder.is_dir():
        return Problem(folder / SUMMARY, "missing (the manifest records this analysis complete)")
    for name, digest in checksums.items():
        path = folder / name
        if not path.is_file():
            return Problem(path, "missing")
        try:
            if results.sha256(path) != digest:
                return Problem(path, "does not match the checksum the manifest recorded (edited or replaced "
                                     "after the run wrote it); not published")
        except OSError as err:
            return Problem(path, f"unreadable ({err.strerror or err})")
    extra = sorted(p.name for p in folder.iterdir() if p.name not in checksums and not p.name.startswith("."))
    if extra:
        return Problem(folder / extra[0], "not written by the run (no checksum in the manifest); not published")
    if identity is not None:
        try:
            carried = json.loads((folder / EXTRAS).read_text(encoding="utf-8")).get("identity")
        except (OSError, UnicodeDecodeError, json.JSONDecodeError, AttributeError):
            carried = None  # read_result names the damage
        if carried != identity:
            return Problem(folder / EXTRAS, f"was computed for another model (identity {str(carried)[:16]}, the "
                                            f"manifest's model is {identity[:16]}); not published")
    return None


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
    return results_format.upgrade(summary), None  # an older format's keys, renamed as the current format has them


def read_result(folder: Path, entry: dict | None, identity: str | None) -> tuple[Result | None, Problem | None]:
    """(Result, None) for a result the manifest vouches for (`entry`: its manifest record; `identity`: its model's
    fingerprint), or (None, one line naming the damaged, edited or unrecorded file)."""
    problem = verify(folder, entry, identity)
    if problem:
        return None, problem
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
