"""What a newcomer meets first: a version, a licence and a citation that agree with the package, and a line of
progress per analysis when stderr is not a terminal (CI, a log file), where the progress bar is silent."""

from __future__ import annotations

import re
import sys
from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner

from report.cli import main

if sys.version_info >= (3, 11):
    import tomllib
else:  # pyproject's dependency for Python 3.10
    import tomli as tomllib

ROOT = Path(__file__).resolve().parent.parent
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]


def test_version_licence_and_citation_agree_with_the_package():
    result = CliRunner().invoke(main, ["--version"])
    assert result.exit_code == 0 and result.output.strip().endswith(PYPROJECT["version"]), result.output
    assert PYPROJECT["license"]["text"] == "MIT"
    assert (ROOT / "LICENSE").read_text(encoding="utf-8").startswith("MIT License")
    citation = yaml.safe_load((ROOT / "CITATION.cff").read_text(encoding="utf-8"))
    assert citation["version"] == PYPROJECT["version"] and citation["license"] == "MIT"


@pytest.mark.slow
def test_one_progress_line_per_analysis_when_stderr_is_not_a_terminal(tiny_checkpoint, tmp_path):
    analyses = ["behaviour", "logit_diff", "dla_layers"]
    result = CliRunner().invoke(main, ["run", "--model", str(tiny_checkpoint), "--families", "tomorrow",
                                       "--analyses", ",".join(analyses), "--out", str(tmp_path), "--device", "cpu"])
    assert result.exit_code == 0, result.output
    lines = re.findall(r"^.*: tomorrow / (\w+) done \((\d) of (\d)\)$", result.output, re.M)
    assert [name for name, _, _ in lines] == analyses, result.output
    assert [(int(i), int(n)) for _, i, n in lines] == [(1, 3), (2, 3), (3, 3)]
