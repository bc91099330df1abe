"""The committed golden run (tests/golden/) is current, small, and its check is not vacuous: a run in another
results format, an edited file or a summary its schema rejects is reported with the command that regenerates it."""

from __future__ import annotations

import json
import shutil

import golden
import pytest

from report.store import results_format


def test_the_golden_run_is_current():
    found = golden.problems()
    assert not found, golden.stale_message(found)


def test_the_golden_run_stays_small():
    size = sum(p.stat().st_size for p in golden.RUN.rglob("*") if p.is_file())
    assert 0 < size < 1_200_000, f"{size} bytes: cut golden.TEMPLATES or golden.FAMILIES, then `{golden.REGENERATE}`"


def _copy(tmp_path):
    return shutil.copytree(golden.RUN, tmp_path / "run")


def _edit_json(path, edit):
    data = json.loads(path.read_text(encoding="utf-8"))
    edit(data)
    path.write_text(json.dumps(data), encoding="utf-8")


@pytest.mark.parametrize("recorded", [results_format.CURRENT - 1, results_format.CURRENT + 1, None])
def test_a_golden_run_in_another_results_format_is_stale(tmp_path, recorded):
    run = _copy(tmp_path)
    _edit_json(run / "manifest.json", lambda m: m.update({results_format.KEY: recorded}))
    found = golden.problems(run)
    assert found and "results format" in found[0], found
    assert golden.REGENERATE in golden.stale_message(found)


def test_an_edited_golden_file_is_stale(tmp_path):
    run = _copy(tmp_path)
    summary = run / golden.MODEL / "tomorrow" / "behaviour" / "summary.json"
    _edit_json(summary, lambda s: s.update({"n_prompts": s["n_prompts"] + 1}))
    found = golden.problems(run)
    assert any("behaviour" in problem and "checksum" in problem for problem in found), found


def test_a_golden_summary_its_schema_rejects_is_stale(tmp_path):
    """Keys renamed in the code (its schema) but not in the golden run: what a change of the summaries leaves behind
    when the golden run is not regenerated, seen even where the format number did not change."""
    from publish_util import restamp

    run = _copy(tmp_path)
    summary = run / golden.MODEL / "tomorrow" / "behaviour" / "summary.json"
    _edit_json(summary, lambda s: [s.update({f"renamed_{key}": s.pop(key)}) for key in list(s)])
    restamp(run)  # the checksums match: only the keys are stale
    found = golden.problems(run)
    assert found and all("behaviour/summary.json does not match its schema" in problem for problem in found), found
