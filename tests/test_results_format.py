"""The results format recorded in every manifest: `build` and report.store.loader read the format this version writes
and
upgrade format 1 (only renames) to it where they read a summary; `run --resume` continues only the current format;
any other run (unrecorded, unknown older, newer, malformed) is refused in one line naming the manifest."""

from __future__ import annotations

import json
import shutil

import pytest
from conftest import invoke
from publish_util import fails

from analyses.common.text import pct
from report.errors import UserError
from report.store import results, results_format
from report.store.loader import load_run
from report.store.schema import validate


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
    (0, "results format 0, older than the formats 1 and 2"),
    (results_format.CURRENT + 1, f"results format {results_format.CURRENT + 1}, newer than"),
    ("1", "is corrupt"),
], ids=["unrecorded", "unknown-older", "newer", "not-a-number"])
def test_build_of_another_format_is_refused_in_one_line(small_run, tmp_path, recorded, says):
    run = edited_copy(small_run, tmp_path, **{results_format.KEY: recorded})
    if recorded is None:
        assert results_format.KEY not in json.loads((run / "manifest.json").read_text())
    _, output = fails("build", run, "--site", tmp_path / "site")
    assert output.count("\n") == 1 and str(run / "manifest.json") in output and says in output, output
    assert not (tmp_path / "site").exists()
    with pytest.raises(UserError, match=says):
        load_run(run)


def as_format_1(small_run, tmp_path):
    """A copy of the small run as format 1 wrote it: `day7_*` keys in its behaviour summary, checksums to match."""
    run = shutil.copytree(small_run, tmp_path / "run")
    manifest = json.loads((run / "manifest.json").read_text())
    path = run / "tiny-gpt20" / "tomorrow" / "behaviour" / "summary.json"
    summary = json.loads(path.read_text())
    path.write_text(json.dumps({k.replace("items_", "day7_", 1): v for k, v in summary.items()}))
    entry = manifest["models"]["tiny-gpt20"]["analyses"]["tomorrow/behaviour"]
    entry["files"]["summary.json"] = results.sha256(path)
    manifest[results_format.KEY] = 1
    (run / "manifest.json").write_text(json.dumps(manifest))
    return run, summary


def test_a_format_1_run_builds_with_its_keys_upgraded_where_they_are_read(small_run, tmp_path):
    run, current = as_format_1(small_run, tmp_path)
    assert "day7_acc" in (run / "tiny-gpt20" / "tomorrow" / "behaviour" / "summary.json").read_text()
    loaded = load_run(run)
    assert loaded.problems == [] and loaded.summaries[("tiny-gpt20", "tomorrow", "behaviour")] == current
    invoke("build", run, "--site", tmp_path / "site")
    index = (tmp_path / "site" / "index.html").read_text(encoding="utf-8")
    assert pct(current["items_acc"]) in index
    page = (tmp_path / "site" / "tiny-gpt20" / "tomorrow.html").read_text(encoding="utf-8")
    assert "This section is missing" not in page


def test_resume_of_a_format_1_run_is_refused_before_computing(small_run, tmp_path, tiny_checkpoint):
    run, _ = as_format_1(small_run, tmp_path)
    before = sorted(p.relative_to(run) for p in run.rglob("*"))
    _, output = fails("run", "--resume", "--out", run.parent, "--run-id", run.name, "--model", tiny_checkpoint,
                      "--device", "cpu")
    assert output.count("\n") == 1 and "results format 1, older than the format 2" in output, output
    assert "`build` reads it" in output
    assert sorted(p.relative_to(run) for p in run.rglob("*")) == before


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
