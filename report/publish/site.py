"""`--site DIR`: one HTML page per model and family plus index.html, written whole or not at all.

The site is rendered into a temporary folder beside DIR and swapped in by two renames, so a reader sees
the old site or the new one, and nothing of an earlier build survives. DIR/.weekday-circuits-site.json
lists the files we wrote; a DIR that holds anything else (the user's own files) is refused unless
`--force`, and even then unless an earlier build wrote DIR (an empty folder is always fine). With
`--assets shared`, plotly.js and the circuitsvis bundle are written once under DIR/assets/ and every page
loads them by a relative path.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

from report.errors import UserError
from report.publish import assets, render
from report.store import files

MARKER = ".weekday-circuits-site.json"
GENERATOR = "weekday-circuits"
# A placeholder that keeps an empty folder in git (the repository tracks site/.gitkeep so that a clone has the
# default --site folder). It is neither foreign nor ours: the check ignores it and every build carries it over,
# so that building into a fresh clone's site/ needs no --force and leaves `git status` clean.
PLACEHOLDER = ".gitkeep"


def render_site(build: render.Build, shared_assets: bool) -> dict[str, str]:
    """relative path -> file text, for every file of the site."""
    env = render.environment()
    outputs: dict[str, str] = {}
    index_figures = render.Figures("site")
    outputs["index.html"] = render.render_index(env, build, assets.script_tags([], None), index_figures)
    used: list[assets.Bundle] = []
    for run in build.runs:
        for page in run["pages"]:
            selected = assets.bundles(any(s.figures for s in page.sections), any(s.widgets for s in page.sections))
            used += [b for b in selected if b not in used]
            scripts = assets.script_tags(selected, "../" if shared_assets else None)
            outputs[page.href] = render.render_family(env, build, run, page, scripts, render.Figures("site"))
    if shared_assets:
        for bundle in used:
            outputs[f"{assets.ASSETS_DIR}/{bundle.name}"] = bundle.source
    return outputs


def check_site_folder(site: Path, force: bool) -> None:
    """Refuse a --site that is a file, or a folder holding files this command did not write. `force` replaces such
    a folder only if an earlier build wrote it (its record file is there): a folder no build wrote (your home, a
    results folder) is never replaced, unless it is empty. Links are entries, never followed out of the site."""
    if site.exists() and not site.is_dir():
        raise UserError(f"--site {site} is a file, not a folder")
    if not site.is_dir():
        return
    present = _entries(site)
    if not present:
        return
    ours = _recorded_files(site)
    foreign = [p for p in present if p not in ours and p not in (MARKER, PLACEHOLDER)]
    if not foreign:
        return
    shown = ", ".join(foreign[:3]) + (f" and {len(foreign) - 3} more" if len(foreign) > 3 else "")
    if not force:
        raise UserError(f"--site {site} holds files that weekday-circuits did not write ({shown}); "
                        "choose an empty or new folder, or pass --force to replace the folder and all it holds")
    if not ours:
        raise UserError(f"--site {site} holds files that weekday-circuits did not write ({shown}) and no earlier "
                        f"build wrote it (no {MARKER}); --force replaces only a folder a build wrote: choose an "
                        "empty or new folder")


def _entries(site: Path) -> list[str]:
    """Every file and link under `site` (relative, sorted), without following links."""
    found = []
    for dirpath, dirnames, filenames in os.walk(site):  # followlinks=False: a link is an entry, not a way out
        here = Path(dirpath)
        found += [(here / n).relative_to(site).as_posix() for n in filenames]
        found += [(here / n).relative_to(site).as_posix() for n in dirnames if (here / n).is_symlink()]
    return sorted(found)


def _recorded_files(site: Path) -> set[str]:
    try:
        marker = json.loads((site / MARKER).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return set()
    if not isinstance(marker, dict) or marker.get("generator") != GENERATOR:
        return set()
    if not isinstance(marker.get("files"), list):
        return set()
    return {f for f in marker["files"] if isinstance(f, str)}


def write_site(outputs: dict[str, str], site: Path, force: bool) -> Path:
    """Write every file into a fresh temporary folder beside `site`, then swap it in whole."""
    site = Path(site)
    check_site_folder(site, force)
    _clean_stale_builds(site)
    with files.temp_dir(site.parent, site.name) as tmp:
        os.chmod(tmp, 0o755)  # mkdtemp makes 0700; the site is meant to be read (served) by others
        for relative, text in outputs.items():
            path = tmp / relative
            path.parent.mkdir(parents=True, exist_ok=True)
            _write_synced(path, text)
        marker = {"generator": GENERATOR, "files": sorted(outputs)}
        _write_synced(tmp / MARKER, json.dumps(marker, indent=1) + "\n")
        if (site / PLACEHOLDER).is_file() and not (site / PLACEHOLDER).is_symlink():  # never copy from outside
            shutil.copy2(site / PLACEHOLDER, tmp / PLACEHOLDER)
        for folder in {tmp, *(p.parent for p in tmp.rglob("*"))}:
            files.fsync_dir(folder)
        _swap_in(tmp, site)
    return site / "index.html"


def _write_synced(path: Path, text: str) -> None:
    with open(path, "w", encoding="utf-8") as handle:
        handle.write(text)
        handle.flush()
        os.fsync(handle.fileno())  # on disk before the rename publishes the site


def _clean_stale_builds(site: Path) -> None:
    """Temporary folders beside the site left by a build that was killed (report/store/files.py `is_stale`)."""
    for path in site.parent.glob(f".{site.name}.*.tmp"):
        if path.is_dir() and files.is_stale(path):
            shutil.rmtree(path, ignore_errors=True)


def _swap_in(new: Path, site: Path) -> None:
    if not site.exists():
        os.replace(new, site)
        files.fsync_dir(site.parent)
        return
    old = site.parent / files.temp_name(site.name)  # the old site is renamed to this unused name
    os.replace(site, old)
    try:
        os.replace(new, site)
    except OSError:
        os.replace(old, site)  # put the previous site back rather than leave none
        raise
    files.fsync_dir(site.parent)
    if old.is_symlink():
        old.unlink()  # --site was a link: it goes, what it pointed to is left alone
    else:
        shutil.rmtree(old, ignore_errors=True)
