"""The results schemas: every summary of a full tiny run, and its manifest, validate; every analysis has a
schema; the schemas catch a wrong type, a missing required key or an undeclared key in the golden run's (so they are
not vacuous)."""

from __future__ import annotations

import json

import pytest

from analyses import REGISTRY
from report.store import schema
from report.store.loader import load_run


def test_every_analysis_ships_a_schema():
    assert REGISTRY
    for analysis in REGISTRY:
        shipped = schema.load_schema(analysis.name)
        shapes = shipped.get("anyOf", [shipped])  # geometry and periodic: the result, or a note why there is none
        assert all(shape["type"] == "object" for shape in shapes), analysis.name


def test_the_manifest_and_every_summary_of_a_full_run_validate(tiny_report):
    run_dir, _ = tiny_report
    run = load_run(run_dir)
    assert run.problems == []
    assert schema.validate(run.manifest, schema.MANIFEST) == []
    folders = {folder for (_, _, folder) in run.summaries}
    assert {schema.schema_name(f) for f in folders} == {a.name for a in REGISTRY}  # every analysis was checked
    for (model, family, folder), summary in run.summaries.items():
        assert schema.validate(summary, schema.schema_name(folder)) == [], (model, family, folder)


@pytest.mark.parametrize("folder, key, bad", [
    ("behaviour", "items_acc", "high"), ("behaviour", "items_above_chance", "no"),
    ("dla_heads", "top_positive", [{"value": 1.0}]),
    ("patching_heads-day", "corruption", "weekday"), ("logit_diff", "clean_logit_diff_mean", None),
    ("behaviour", "day7_acc", 0.5)])
def test_a_wrong_type_or_a_missing_key_is_caught(golden_run, folder, key, bad):
    run = load_run(golden_run)
    summary = dict(next(s for (_, _, f), s in run.summaries.items() if f == folder))
    if bad is None:
        del summary[key]
    else:
        summary[key] = bad
    errors = schema.validate(summary, schema.schema_name(folder))
    assert errors and any(key in e for e in errors), errors


def test_a_manifest_without_models_is_caught(golden_run):
    manifest = json.loads((golden_run / "manifest.json").read_text())
    del manifest["models"]
    assert schema.validate(manifest, schema.MANIFEST)
