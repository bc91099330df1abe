"""Names, not paths: what a published page calls a model, a command line and a file, and where templates live.

A page never shows an absolute local path: a local model is called by its folder's name, the recorded
command has every absolute path cut to its last part, and page files get names that are valid on every
file system whatever the model or family is called.
"""

from __future__ import annotations

import hashlib
import ntpath
import os
import re
import shlex
from pathlib import Path, PurePosixPath

import jinja2

MAX_NAME = 100  # characters of a file or folder name we write (file systems allow 255 bytes)
RESERVED = {"index.html", "assets"}  # names the site itself uses at its top level
ABSOLUTE = re.compile(r"""(?<![\w.~-])(?:~|[A-Za-z]:\\|/)[^\s'"]*""")  # /x/y, ~/x, C:\x in a command line


def _is_local_path(text: str) -> bool:
    return text.startswith(("/", "~", "\\")) or bool(re.match(r"[A-Za-z]:[\\/]", text)) or text.startswith(".")


def _last_part(text: str) -> str:
    cut = PurePosixPath(text.replace("\\", "/").rstrip("/")).name
    return cut or ntpath.basename(text.rstrip("\\/")) or "…"


def display_name(model: dict, slug: str) -> str:
    """The hub id as the user wrote it, or a local checkpoint's folder name."""
    name = str(model.get("name") or slug)
    resolved = str(model.get("resolved") or "")
    if _is_local_path(name) or (resolved and _is_local_path(resolved) and os.sep in name):
        return _last_part(name)
    return name


def display_names(models: dict[str, dict]) -> dict[str, str]:
    """{model folder: what the pages call it}; distinct models whose folders share a name (a/tiny, b/tiny) are
    told apart by their run folder names (tiny, tiny-2), never by more of their paths."""
    base = {slug: display_name(model, slug) for slug, model in models.items()}
    shared = {name for name in base.values() if list(base.values()).count(name) > 1}
    labels = {slug: (slug if name in shared else name) for slug, name in base.items()}
    if len(set(labels.values())) < len(labels):  # a folder name equal to another model's name: number them
        labels = {slug: f"{name} ({i})" for i, (slug, name) in enumerate(labels.items(), 1)}
    return labels


def source_kind(model: dict) -> str:
    """Where the weights came from, without the local path: "a local folder" or the hub id / bundled name."""
    resolved = str(model.get("resolved") or model.get("name") or "")
    return "a local folder" if _is_local_path(resolved) or _is_local_path(str(model.get("name") or "")) else resolved


def public_command(command: str) -> str:
    """The recorded command with every absolute path replaced by '…/' and its last part."""
    try:
        words = shlex.split(command)
    except ValueError:
        words = command.split()
    cleaned = []
    for word in words:
        option, sep, value = word.partition("=") if word.startswith("--") else ("", "", word)
        if _is_local_path(value) and not value.startswith("./"):  # the whole word is the path, spaces and all
            cleaned.append(option + sep + "…/" + _last_part(value))
            continue
        cleaned.append(option + sep + ABSOLUTE.sub(lambda m: "…/" + _last_part(m.group(0)), value))
    return " ".join(w if re.fullmatch(r"[\w@%+=:,./…-]+", w) else shlex.quote(w) for w in cleaned)


def _shorten(name: str, suffix: str = "") -> str:
    if len(name) + len(suffix) <= MAX_NAME:
        return name + suffix
    digest = hashlib.sha256(name.encode("utf-8")).hexdigest()[:10]
    return name[: MAX_NAME - len(suffix) - 11] + "-" + digest + suffix


# Names Windows reserves with any extension (con.html cannot be created there, nor unzipped from a site archive).
WINDOWS_RESERVED = {"con", "prn", "aux", "nul", *(f"com{i}" for i in range(10)), *(f"lpt{i}" for i in range(10))}


def _portable(name: str) -> str:
    """`name`, prefixed with '_' when its stem is a name Windows reserves (family names cannot start with '_')."""
    return "_" + name if name.split(".")[0].lower() in WINDOWS_RESERVED else name


def page_file(family: str) -> str:
    """A family's page file; long family names keep a readable prefix and a hash of the whole name."""
    return _portable(_shorten(re.sub(r"[^A-Za-z0-9._-]", "_", family), ".html"))


def site_folders(slugs: list[str]) -> dict[str, str]:
    """Each model's folder in the site: its run folder's name unless that clashes with the site's own names."""
    folders: dict[str, str] = {}
    taken = set(RESERVED)
    for slug in slugs:
        base = _portable(_shorten(re.sub(r"[^A-Za-z0-9._-]", "_", slug).lstrip(".") or "model"))
        if base in RESERVED or base.lower().endswith(".html"):
            base = _shorten("model-" + base)
        candidate, n = base, 2
        while candidate in taken:
            candidate, n = f"{base}-{n}", n + 1
        taken.add(candidate)
        folders[slug] = candidate
    return folders


def anchor(text: str) -> str:
    """An element id made of safe characters, unique for distinct texts (a short hash is appended)."""
    digest = hashlib.sha256(text.encode("utf-8")).hexdigest()[:8]
    return re.sub(r"[^A-Za-z0-9_-]", "_", text)[:60] + "-" + digest


def templates_dir() -> Path:
    """templates/ beside report/ in a source checkout; report/templates/ in an installed wheel (see pyproject)."""
    package = Path(__file__).resolve().parent.parent  # report/ (this module is report/publish/names.py)
    for candidate in (package / "templates", package.parent / "templates"):
        if (candidate / "base.html").is_file():
            return candidate
    raise FileNotFoundError(f"the report templates are missing from the installation ({package})")


def template_loader() -> jinja2.BaseLoader:
    package = Path(__file__).resolve().parent.parent
    if (package / "templates" / "base.html").is_file():  # installed: the templates ship inside the package
        return jinja2.PackageLoader("report", "templates")
    return jinja2.FileSystemLoader(templates_dir())
