"""Write the golden run again: `python -m tests.golden.regenerate` from the repository's root (a few minutes on 2
cores; no network). It builds the planted checkpoint in a temporary folder, runs every analysis on the golden
families (tests/golden/__init__.py), and replaces tests/golden/run/ with the result; commit the new folder."""

from __future__ import annotations

import json
import shutil
import sys
import tempfile
from pathlib import Path

import tomllib
from click.testing import CliRunner

from report.cli import main
from report.run.families_file import default_families_path
from tests.golden import FAMILIES, MODEL, RUN, TEMPLATES, problems
from tests.planted_circuit import save_planted_gpt2

RUN_ID = "golden"


def families_file(path: Path) -> Path:
    """The shipped FAMILIES, each cut to its first TEMPLATES templates and relation twins, as a families file."""
    shipped = tomllib.loads(default_families_path().read_text(encoding="utf-8"))
    lines = []
    for name in FAMILIES:
        lines.append(f"[{name}]")
        for key, value in shipped[name].items():
            if key in ("templates", "relation_templates"):
                value = value[:TEMPLATES]
            lines.append(f"{key} = {json.dumps(value, ensure_ascii=False)}")  # a JSON string or list is TOML too
        lines.append("")
    path.write_text("\n".join(lines), encoding="utf-8")
    return path


def regenerate(dest: Path = RUN) -> Path:
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        model = save_planted_gpt2(tmp / MODEL)
        families = families_file(tmp / "golden-families.toml")
        result = CliRunner().invoke(main, ["run", "--model", str(model), "--families-file", str(families),
                                           "--analyses", "all", "--out", str(tmp / "runs"), "--run-id", RUN_ID,
                                           "--device", "cpu"])
        if result.exit_code != 0:
            sys.exit(f"the golden run failed:\n{result.output}")
        found = problems(tmp / "runs" / RUN_ID)
        if found:
            sys.exit("the new golden run does not pass its own check:\n" + "\n".join(found))
        if dest.exists():
            shutil.rmtree(dest)
        shutil.copytree(tmp / "runs" / RUN_ID, dest)
    return dest


if __name__ == "__main__":
    written = regenerate()
    size = sum(p.stat().st_size for p in written.rglob("*") if p.is_file())
    print(f"wrote {written} ({size / 1024:.0f} KB)")
