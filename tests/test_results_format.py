"""The results format recorded in every manifest: `build` and report.store.loader read the format this version writes
and upgrade formats 1 and 2 (renames, and a path's name) to it where they read a summary; `run --resume` continues
only the current format; any other run (unrecorded, unknown older, newer, malformed) is refused in one line naming
the manifest."""

from __future__ import annotations

import json
import shutil

import golden
import pytest
from conftest import invoke
from publish_util import copy_run, fails, restamp

from analyses.common.text import pct
from report.errors import UserError
from report.store import results, results_format
from report.store.loader import load_run
from report.store.schema import validate
from report.store.units import unit_of


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
    (0, "results format 0, older than the formats 1, 2 and 3"),
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
    assert output.count("\n") == 1 and "results format 1, older than the format 3" in output, output
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


# What format 2 named each analysis's list entries by (report/store/results_format.py, History): one field per
# analysis, except path_patching, whose paths had only `sender` and `receiver` and whose AND / OR entries had `node`.
FORMAT_2_NAME_FIELD = {"ablations": "node", "attention": "head", "circuit": "node", "dla_heads": "head",
                       "edge_circuits": "edge", "neurons": "node", "patching_heads": "head",
                       "patching_positions": "component", "path_patching": "head", "successor_heads": "head"}
FORMAT_2_NODE_LISTS = {"path_patching": ("and_paths", "or_paths", "both_paths")}


def as_format_2(analysis: str, summary: dict) -> dict:
    """A current summary as format 2 wrote it: every entry's name under its analysis's old field, in place; a path's
    name left out (its sender and receiver were all it had)."""
    field_of = {key: "node" for key in FORMAT_2_NODE_LISTS.get(analysis, ())}

    def old(key: str, entry: dict) -> dict:
        if "sender" in entry:
            return {k: v for k, v in entry.items() if k != "name"}
        field = field_of.get(key, FORMAT_2_NAME_FIELD.get(analysis))
        return {(field if k == "name" else k): v for k, v in entry.items()}
    return {key: [old(key, e) if isinstance(e, dict) and "name" in e else e for e in value]
            if isinstance(value, list) else value for key, value in summary.items()}


def golden_summaries() -> list[tuple[str, dict]]:
    """(analysis, summary) of every result of the committed golden run, which the current version wrote."""
    return [(unit_of(path.parent.name)[0], json.loads(path.read_text(encoding="utf-8")))
            for path in sorted(golden.RUN.rglob("summary.json"))]


def kinds_of_names(summary: dict) -> set[str]:
    """Which old name fields (and `sender`, for paths) the entries of a summary's lists use."""
    return {field for value in summary.values() if isinstance(value, list) for entry in value
            if isinstance(entry, dict) for field in (*results_format.OLD_NAME_FIELDS, "sender") if field in entry}


def test_a_format_2_summary_of_every_entry_kind_upgrades_to_the_current_one_and_fits_its_schema():
    kinds = set()
    for analysis, current in golden_summaries():
        old = as_format_2(analysis, current)
        if old == current:
            continue  # no list of named entries (or only empty ones)
        kinds |= kinds_of_names(old)
        assert validate(old, analysis), analysis  # format 2 is not the current form: its schema refuses it
        upgraded = results_format.upgrade(old)
        assert json.dumps(upgraded) == json.dumps(current), analysis  # the same keys, values and key order
        assert validate(upgraded, analysis) == [], analysis
    assert kinds == {"head", "node", "component", "edge", "sender"}  # every kind of format-2 entry was upgraded


def test_a_current_summary_is_left_as_it_is_by_the_upgrade():
    summaries = golden_summaries()
    assert any(any(isinstance(v, list) and v and isinstance(v[0], dict) for v in s.values()) for _, s in summaries)
    for analysis, current in summaries:
        assert json.dumps(results_format.upgrade(current)) == json.dumps(current), analysis


def test_a_format_2_run_loads_and_builds_with_its_entries_named(tmp_path):
    run = copy_run(golden.RUN, tmp_path / "run", families=["tomorrow"])
    for path in run.rglob("summary.json"):
        analysis = unit_of(path.parent.name)[0]
        path.write_text(json.dumps(as_format_2(analysis, json.loads(path.read_text(encoding="utf-8")))))
    restamp(run)
    manifest = json.loads((run / "manifest.json").read_text())
    (run / "manifest.json").write_text(json.dumps({**manifest, results_format.KEY: 2}))
    patching = run / golden.MODEL / "tomorrow" / "patching_heads-day" / "summary.json"
    assert '"head": "L1H2"' in patching.read_text()  # what format 2 wrote
    loaded = load_run(run)
    assert loaded.problems == []
    for (_, family, unit), summary in loaded.summaries.items():
        folder = golden.RUN / golden.MODEL / family / unit
        assert summary == json.loads((folder / "summary.json").read_text(encoding="utf-8")), unit
    invoke("build", run, "--site", tmp_path / "site")
    page = (tmp_path / "site" / golden.MODEL / "tomorrow.html").read_text(encoding="utf-8")
    assert "This section is missing" not in page
    assert "<th>top heads</th><td>L1H2 (" in page  # the ranking's names, read from the upgraded entries
