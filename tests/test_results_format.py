"""The results format recorded in every manifest: `build`, `run --resume` and report.loader read the format this
version writes, and refuse any other (older, unrecorded, newer, malformed) in one line naming the manifest."""

from __future__ import annotations

import json
import shutil

import pytest
from publish_util import fails

from report import results_format
from report.errors import UserError
from report.loader import load_run
from report.schema import validate


def edited_copy(small_run, tmp_path, **changes):
    """A copy of the small run whose manifest has `changes` (a value of None deletes the key)."""
    run = shutil.copytree(small_run, tmp_path / "run")
    manifest = json.loads((run / "manifest.json").read_text())
    for key, value in changes.items():
        if value is None:
            manifest.pop(key, None)
        else:
            manifest[key] = value
    (run / "manifest.json").write_text(json.dumps(manifest))
    return run


def test_a_run_records_the_format_it_was_written_in(small_run):
    manifest = json.loads((small_run / "manifest.json").read_text())
    assert manifest[results_format.KEY] == results_format.CURRENT
    assert validate(manifest, "manifest") == []
    assert any("results_format" in problem for problem in validate({**manifest, "results_format": "1"}, "manifest"))


@pytest.mark.parametrize("recorded, says", [
    (None, "records no results format"),
    (results_format.CURRENT - 1, f"results format {results_format.CURRENT - 1}, older than"),
    (results_format.CURRENT + 1, f"results format {results_format.CURRENT + 1}, newer than"),
    ("1", "is corrupt"),
], ids=["unrecorded", "older", "newer", "not-a-number"])
def test_build_of_another_format_is_refused_in_one_line(small_run, tmp_path, recorded, says):
    run = edited_copy(small_run, tmp_path, **{results_format.KEY: recorded})
    if recorded is None:
        assert results_format.KEY not in json.loads((run / "manifest.json").read_text())
    _, output = fails("build", run, "--site", tmp_path / "site")
    assert output.count("\n") == 1 and str(run / "manifest.json") in output and says in output, output
    assert not (tmp_path / "site").exists()
    with pytest.raises(UserError, match=says):
        load_run(run)


def test_an_older_run_is_refused_with_the_command_that_computes_it_again(small_run, tmp_path):
    run = edited_copy(small_run, tmp_path, results_format=None, command="weekday-circuits run --model x")
    _, output = fails("build", run, "--site", tmp_path / "site")
    assert "compute it again (weekday-circuits run --model x)" in output


def test_resume_of_a_run_in_another_format_is_refused_before_computing(small_run, tmp_path, tiny_checkpoint):
    run = edited_copy(small_run, tmp_path, results_format=None)
    before = sorted(p.relative_to(run) for p in run.rglob("*"))
    _, output = fails("run", "--resume", "--out", run.parent, "--run-id", run.name, "--model", tiny_checkpoint,
                      "--device", "cpu")
    assert output.count("\n") == 1 and "records no results format" in output, output
    assert sorted(p.relative_to(run) for p in run.rglob("*")) == before
