"""Helpers for the publishing tests: edited copies of a saved run (no model needed) and CLI calls that must fail."""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path

from click.testing import CliRunner


def copy_run(run_dir: Path, dest: Path, families: list[str] | None = None, model_name: str | None = None,
             family_names: dict[str, str] | None = None, run_id: str | None = None,
             command: str | None = None) -> Path:
    """A copy of a saved run, keeping only `families`, renaming the model (folder, key and name) and families."""
    shutil.copytree(run_dir, dest)
    manifest = json.loads((dest / "manifest.json").read_text())
    if run_id:
        manifest["run_id"] = run_id
    if command:
        manifest["command"] = command
    (slug,) = manifest["models"]
    model = manifest["models"][slug]
    for family in list(model["families"]):
        if families is not None and family not in families:
            del model["families"][family]
            shutil.rmtree(dest / slug / family)
    for old, new in (family_names or {}).items():
        model["families"][new] = model["families"].pop(old)
        (dest / slug / old).rename(dest / slug / new)
        model["analyses"] = {(new + k[len(old):] if k.startswith(old + "/") else k): v
                             for k, v in model["analyses"].items()}
    model["analyses"] = {k: v for k, v in model["analyses"].items() if k.split("/")[0] in model["families"]}
    if model_name:
        manifest["models"] = {model_name: {**model, "name": model_name}}
        (dest / slug).rename(dest / model_name)
    (dest / "manifest.json").write_text(json.dumps(manifest, indent=1))
    return dest


def edit_summary(folder: Path, **changes) -> None:
    path = folder / "summary.json"
    summary = json.loads(path.read_text())
    summary.update(changes)
    path.write_text(json.dumps(summary))


def restamp(run_dir: Path) -> None:
    """Record the current files of every result in the manifest, as the run would have had it computed them: for
    tests that edit saved results to stage a state (an at-chance family) rather than to test tamper detection."""
    from report.store.results import sha256

    manifest = json.loads((run_dir / "manifest.json").read_text())
    for slug, model in manifest["models"].items():
        for key, entry in model["analyses"].items():
            folder = run_dir / slug / key
            if isinstance(entry, dict) and entry.get("status") == "complete" and folder.is_dir():
                entry["files"] = {p.name: sha256(p) for p in sorted(folder.iterdir()) if p.is_file()}
    (run_dir / "manifest.json").write_text(json.dumps(manifest, indent=1))


def fails(*args) -> tuple[int, str]:
    """Run the CLI; it must exit non-zero without a traceback. Returns (exit code, output)."""
    from report.cli import main

    result = CliRunner().invoke(main, [str(a) for a in args])
    assert result.exit_code not in (0, None), result.output
    assert result.exception is None or isinstance(result.exception, SystemExit), repr(result.exception)
    assert "Traceback" not in result.output
    return result.exit_code, result.output


def local_paths(*extra: Path) -> list[str]:
    """Absolute paths of this machine that no published output may contain."""
    paths = {str(Path.home()), os.getcwd(), str(Path(tempfile.gettempdir()).resolve()) + "/", *map(str, extra)}
    return sorted(p for p in paths if len(p) > 4)  # "/" or "/tmp" alone would match unrelated text


def assert_no_local_path(text: str, where: str, paths: list[str]) -> None:
    for path in paths:
        assert path not in text, f"{where} contains the local path {path!r}"
