"""Shipped families cut to their first templates (and relation twins), as a families file: the same kinds of prompt,
fewer of them, for tests and the golden run that need a family's shape but not all its prompts."""

from __future__ import annotations

import json
from pathlib import Path

import tomllib

from report.run.families_file import default_families_path


def cut_families_file(path: Path, families: list[str], templates: int) -> Path:
    """Write `families` from the shipped file, each cut to its first `templates` templates and relation twins."""
    shipped = tomllib.loads(default_families_path().read_text(encoding="utf-8"))
    lines = []
    for name in families:
        lines.append(f"[{name}]")
        for key, value in shipped[name].items():
            if key in ("templates", "relation_templates"):
                value = value[:templates]
            lines.append(f"{key} = {json.dumps(value, ensure_ascii=False)}")  # a JSON string or list is TOML too
        lines.append("")
    path.write_text("\n".join(lines), encoding="utf-8")
    return path
