"""The results store: runs/<run-id>/manifest.json and <model>/<family>/<analysis>/{summary.json, arrays.safetensors,
extras.json}.

Every analysis folder is written under a temporary name and renamed into place, so a folder that exists is
complete; an interrupted run leaves only complete results, and `--resume` skips them. The manifest is
rewritten atomically (temp file, then rename) after every step. JSON and safetensors only, never pickle.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
from safetensors.numpy import load_file, save_file

from analyses.types import Result
from report.errors import UserError

MANIFEST = "manifest.json"


def slug(name: str) -> str:
    """A folder name for a model: the hub id or the folder's last part, safe characters only."""
    base = Path(name.rstrip("/\\")).name if (os.sep in name or Path(name).exists()) else name
    return re.sub(r"[^A-Za-z0-9._-]+", "_", base).strip("._") or "model"


def write_text_atomic(path: Path, text: str) -> None:
    """Write to a temporary file beside `path`, then rename it into place: readers never see half a file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    with os.fdopen(fd, "w", encoding="utf-8") as handle:
        handle.write(text)
    os.chmod(tmp, 0o644)  # mkstemp makes 0600; results and published pages are meant to be read by others
    os.replace(tmp, path)


def write_json_atomic(path: Path, data: Any) -> None:
    write_text_atomic(path, json.dumps(data, indent=1, ensure_ascii=False, allow_nan=False) + "\n")


def read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise UserError(f"missing results file: {path}") from None
    except json.JSONDecodeError as err:
        raise UserError(f"results file {path} is not valid JSON: {err}") from None


def analysis_dir(run_dir: Path, model: str, family: str, analysis: str) -> Path:
    return run_dir / model / family / analysis


def units(analysis, prompts) -> list[tuple[str, object]]:
    """(results folder name, prompt set) per saved unit of an analysis: one, or one per corruption of the family
    for a per-corruption analysis (`patching_heads-day`, `patching_heads-relation`)."""
    if not analysis.per_corruption:
        return [(analysis.name, prompts)]
    return [(unit_name(analysis.name, c), prompts.with_corruption(c)) for c in prompts.corruptions]


def unit_name(analysis: str, corruption: str | None) -> str:
    return analysis if corruption is None else f"{analysis}-{corruption}"


def is_complete(folder: Path) -> bool:
    return (folder / "summary.json").is_file()


def save_result(folder: Path, result: Result) -> None:
    """Write one analysis's result under a temporary name, then rename it into place."""
    folder.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=folder.parent, prefix=f".{folder.name}.", suffix=".tmp"))
    try:
        _check_flat(result.summary, folder)
        write_json_atomic(tmp / "summary.json", result.summary)
        arrays = {k: np.ascontiguousarray(v, dtype=np.float32) for k, v in result.arrays.items()}
        if arrays:
            save_file(arrays, str(tmp / "arrays.safetensors"))
        write_json_atomic(tmp / "extras.json", {"labels": result.labels, "widgets": result.widgets})
        if folder.exists():
            shutil.rmtree(folder)
        os.replace(tmp, folder)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp)


def load_result(folder: Path) -> Result:
    if not is_complete(folder):
        raise UserError(f"incomplete or missing result: {folder}")
    arrays_file = folder / "arrays.safetensors"
    arrays = load_file(str(arrays_file)) if arrays_file.is_file() else {}
    extras = read_json(folder / "extras.json")
    return Result(summary=read_json(folder / "summary.json"), arrays=arrays,
                  labels=extras["labels"], widgets=extras["widgets"])


def _check_flat(summary: dict, folder: Path) -> None:
    """The summary contract: a flat object of numbers, strings and lists (other tools read it)."""
    for key, value in summary.items():
        if isinstance(value, dict) or value is None:
            raise ValueError(f"summary key {key!r} of {folder} is a {type(value).__name__}; "
                             "summaries hold numbers, strings and lists")


def load_manifest(run_dir: Path) -> dict:
    path = Path(run_dir) / MANIFEST
    if not path.is_file():
        raise UserError(f"{run_dir} is not a run folder (no {MANIFEST})")
    return read_json(path)


def latest_run(out: Path) -> Path | None:
    runs = sorted(p for p in Path(out).glob("*") if (p / MANIFEST).is_file())
    return runs[-1] if runs else None
