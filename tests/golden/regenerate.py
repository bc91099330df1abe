"""Write the golden run again: `python -m tests.golden.regenerate` from the repository's root (a few minutes on 2
cores; no network). It builds the planted checkpoint in a temporary folder, runs every analysis on the golden
families (tests/golden/__init__.py), and replaces tests/golden/run/ with the result; commit the new folder."""

from __future__ import annotations

import shutil
import sys
import tempfile
from pathlib import Path

from click.testing import CliRunner

from report.cli import main
from tests.cut_families import cut_families_file
from tests.golden import FAMILIES, MODEL, RUN, TEMPLATES, problems
from tests.planted_circuit import save_planted_gpt2

RUN_ID = "golden"


def regenerate(dest: Path = RUN) -> Path:
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        model = save_planted_gpt2(tmp / MODEL)
        families = cut_families_file(tmp / "golden-families.toml", list(FAMILIES), TEMPLATES)
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
