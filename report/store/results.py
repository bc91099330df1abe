"""The results store: runs/<run-id>/manifest.json and <model>/<family>/<analysis>/{summary.json, arrays.safetensors,
extras.json}.

Every analysis folder is written under a temporary name, its files and the folder fsynced, then renamed into
place; the manifest (rewritten atomically after every step) records the sha256 of every file of every
analysis, so `--resume` recomputes a result whose files are missing, damaged or unrecorded, and a power cut
cannot leave an empty file that looks complete. JSON and safetensors only, never pickle.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
from pathlib import Path
from typing import Any

import numpy as np
from safetensors.numpy import load_file, save_file

from analyses.common.types import Result
from report.errors import UserError
from report.store.files import fsync_dir, fsync_file, lock, temp_dir, temp_name
from report.store.units import unit_name

MANIFEST = "manifest.json"


def slug(name: str) -> str:
    """A folder name for a model: the hub id or the folder's last part, safe characters only."""
    base = Path(name.rstrip("/\\")).name if (os.sep in name or Path(name).exists()) else name
    return (re.sub(r"[^A-Za-z0-9._-]+", "_", base).strip("._") or "model")[:100]  # a folder name, kept short


def write_text_atomic(path: Path, text: str) -> None:
    """Write to a temporary file beside `path`, then rename it into place: readers never see half a file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.parent / temp_name(path.name)
    try:
        with open(tmp, "x", encoding="utf-8") as handle:
            lock(handle.fileno())  # held until closed: no other process takes it for a dead run's
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())  # the data is on disk before the rename makes it the file
        os.chmod(tmp, 0o644)  # results and published pages are meant to be read by others
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    fsync_dir(path.parent)


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


def sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def is_complete(folder: Path, checksums: dict[str, str] | None = None) -> bool:
    """With `checksums` (from the manifest): every recorded file present, readable and unchanged. Without:
    the files every result has are present (what `build` can know without a manifest entry)."""
    if checksums is None:
        return (folder / "summary.json").is_file() and (folder / "extras.json").is_file()
    if not isinstance(checksums, dict) or "summary.json" not in checksums:
        return False
    try:
        return all(sha256(folder / name) == digest for name, digest in checksums.items())
    except OSError:
        return False


def save_result(folder: Path, result: Result, identity: str | None = None) -> dict[str, str]:
    """Write one analysis's result under a temporary name, then rename it into place; return {file: sha256}.

    `identity` (the model's fingerprint, report/run/model.py) travels in extras.json, so that `build` can refuse a
    result folder copied in from another model's run."""
    with temp_dir(folder.parent, folder.name) as tmp:
        _check_flat(result.summary, folder)
        write_json_atomic(tmp / "summary.json", result.summary)
        arrays = {k: np.ascontiguousarray(v, dtype=np.float32) for k, v in result.arrays.items()}
        if arrays:
            save_file(arrays, str(tmp / "arrays.safetensors"))
            fsync_file(tmp / "arrays.safetensors")
        extras = {"labels": result.labels, "widgets": result.widgets}
        if identity is not None:
            extras["identity"] = identity
        write_json_atomic(tmp / "extras.json", extras)
        for name, document in result.documents.items():
            if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]*\.json", name) or name in ("summary.json", "extras.json"):
                raise ValueError(f"document name {name!r} of {folder} is not a plain .json file name")
            write_json_atomic(tmp / name, document)
        checksums = {p.name: sha256(p) for p in sorted(tmp.iterdir())}
        if folder.exists():
            trash = folder.parent / temp_name(folder.name)
            os.rename(folder, trash)  # a damaged earlier result: set aside first, rename() needs the name free
            shutil.rmtree(trash)
        os.replace(tmp, folder)
        fsync_dir(folder.parent)
    return checksums


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


def latest_run(out: Path) -> Path | None:
    """The run created last, by its manifest's creation time (run ids need not sort by time)."""
    runs = []
    for path in Path(out).glob("*"):
        if (path / MANIFEST).is_file() and not path.name.startswith("."):
            try:
                created = float(json.loads((path / MANIFEST).read_text(encoding="utf-8")).get("created_unix", 0))
            except (OSError, ValueError, TypeError, AttributeError):
                created = 0.0  # an unreadable manifest: resuming it would fail anyway, prefer any other
            runs.append((created, path.name, path))
    return max(runs)[2] if runs else None
