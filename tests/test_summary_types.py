"""The typed results contract (analyses/common/contract.py): every analysis declares its summary's type, the shipped
schemas are the ones generated from those types, a summary that breaks its type is refused naming the analysis,
node names are made and read in one place, and format-1 summaries are upgraded to the current keys. No model."""

from __future__ import annotations

import json
import typing

import pytest

from analyses import REGISTRY
from analyses.behaviour import BehaviourSummary
from analyses.common.contract import CORRUPTIONS, Corruption, Node, Ranked, summary_schema
from analyses.common.types import Analysis
from report.store import results_format, schema, schema_gen


def test_every_analysis_declares_a_summary_type_whose_schema_is_closed():
    assert REGISTRY
    for analysis in REGISTRY:
        assert analysis.summary_type is not None, analysis.name
        generated = summary_schema(analysis.summary_type, analysis.name)
        shapes = generated.get("anyOf", [generated])
        assert all(shape["additionalProperties"] is False and shape["properties"] for shape in shapes), analysis.name
        for shape in shapes:  # one comment per key: the type's Annotated text is the schema's description
            undescribed = [k for k, v in shape["properties"].items() if not v.get("description")]
            assert undescribed == [], (analysis.name, undescribed)


def test_the_shipped_schemas_are_the_ones_generated_from_the_types():
    assert schema_gen.stale() == [], "run: python -m report.store.schema_gen"
    for analysis in REGISTRY:
        assert schema.load_schema(analysis.name) == summary_schema(analysis.summary_type, analysis.name)


def test_a_shipped_schema_that_differs_from_its_type_is_found(tmp_path):
    for name, text in schema_gen.generated().items():
        (tmp_path / name).write_text(text, encoding="utf-8")
    assert schema_gen.stale(tmp_path) == []
    edited = json.loads((tmp_path / "behaviour.summary.schema.json").read_text())
    edited["required"].remove("items_acc")  # a hand edit: the type still requires it
    (tmp_path / "behaviour.summary.schema.json").write_text(json.dumps(edited, indent=1) + "\n")
    (tmp_path / "gone.summary.schema.json").write_text("{}")  # a schema of no registered analysis
    (tmp_path / "logit_lens.summary.schema.json").unlink()
    assert schema_gen.stale(tmp_path) == ["behaviour.summary.schema.json", "gone.summary.schema.json",
                                          "logit_lens.summary.schema.json"]


def behaviour_summary(**changes) -> dict:
    """A behaviour summary with every required key of its type (a family without relation twin)."""
    summary = {"family": "tomorrow", "sequence": "days", "n_items": 7, "n_prompts": 7, "n_templates": 1,
               "top1_acc": 0.5, "items_acc": 0.75, "chance_acc": 1 / 7, "items_above_chance": True,
               "items_p_value": 0.01, "p_correct_mean": 0.3, "copy_choice_frac": 0.1,
               "items_acc_by_template": [0.75], "p_correct_by_template": [0.3], "items_acc_by_item": [1.0] * 7,
               "offsets": [1], "items_acc_by_offset": [0.75], "n_errors": 2, "error_off_by_one_frac": 0.1,
               "error_copy_frac": 0.1, "n_prompts_by_offset": [7], "first_prompt": "Today it is Monday so",
               "first_top_token": " Tuesday", "first_top_prob": 0.4, "first_correct": " Tuesday",
               "rank_correct": [1] * 7, "p_correct": [0.3] * 7, "predicted_item": ["Tuesday"] * 7,
               "correct_item": ["Tuesday"] * 7}
    summary.update(changes)
    return summary


BEHAVIOUR = next(a for a in REGISTRY if a.name == "behaviour")


def test_a_summary_that_fits_its_type_passes_and_optional_keys_may_be_absent():
    assert schema.summary_errors(BEHAVIOUR, behaviour_summary()) == []
    assert schema.summary_errors(BEHAVIOUR, behaviour_summary(relation_acc=0.2, ignores_relation=False)) == []
    assert set(typing.get_type_hints(BehaviourSummary)) == set(BehaviourSummary.__annotations__)


@pytest.mark.parametrize("change, says", [
    ({"items_acc": "high"}, "items_acc: 'high' is not of type 'number'"),
    ({"items_acc": 1.5}, "items_acc: 1.5 is greater than the maximum of 1"),
    ({"day7_acc": 0.75}, "'day7_acc' was unexpected"),  # a misspelt or old key
    ({"items_above_chance": None}, "items_above_chance"),  # None stands for "delete the key"
    ({"rank_correct": [1, "2"]}, "rank_correct/1: '2' is not of type 'integer'"),
], ids=["wrong-type", "out-of-range", "undeclared-key", "missing-key", "wrong-item-type"])
def test_run_refuses_a_summary_that_breaks_its_type_naming_the_analysis(change, says):
    summary = behaviour_summary(**{k: v for k, v in change.items() if v is not None})
    for key in (k for k, v in change.items() if v is None):
        del summary[key]
    with pytest.raises(schema.SummaryError, match="analysis 'behaviour'") as raised:
        schema.check_summary(BEHAVIOUR, summary)
    assert says in str(raised.value) and "BehaviourSummary" in str(raised.value)


def test_a_summary_of_several_shapes_validates_against_either_and_names_the_nearest():
    geometry = next(a for a in REGISTRY if a.name == "geometry")
    note = {"family": "glued", "sequence": "days", "note": "the item token is glued to other text"}
    assert schema.summary_errors(geometry, note) == []
    errors = schema.summary_errors(geometry, {**note, "note": 3})
    assert errors == ["(top): note: 3 is not of type 'string' (in the nearest of its 2 shapes)"]


def test_ranking_entries_must_name_what_they_rank():
    dla = next(a for a in REGISTRY if a.name == "dla_heads")
    schema_ = summary_schema(dla.summary_type, "dla_heads")
    entry = schema_["properties"]["top_positive"]["items"]
    assert set(entry["required"]) == {"name", "value"} and "ci_low" in entry["properties"]
    assert set(typing.get_type_hints(Ranked)) >= {"value", "ci_low", "ci_high", "value_by_template"}


def test_the_corruption_key_names_one_of_the_corruptions():
    assert typing.get_args(Corruption) == CORRUPTIONS
    patching = next(a for a in REGISTRY if a.name == "patching_heads")
    assert summary_schema(patching.summary_type, "x")["properties"]["corruption"]["enum"] == list(CORRUPTIONS)


@pytest.mark.parametrize("name, node", [("L9H1", Node("head", 9, 1)), ("L0H12", Node.head(0, 12)),
                                        ("MLP3", Node.mlp(3))])
def test_node_names_round_trip(name, node):
    assert Node.parse(name) == node and node.name == name == str(node)
    assert Node(*node.as_tuple) == node


@pytest.mark.parametrize("bad", ["", "L9", "H1", "L9H", "LxH1", "MLP", "MLPx", "a0.h1", "9H1"])
def test_a_name_that_is_no_node_is_refused(bad):
    with pytest.raises(ValueError, match="is not a node name"):
        Node.parse(bad)


def test_a_format_1_summary_is_upgraded_to_the_current_keys_and_a_current_one_is_left_alone():
    current = behaviour_summary()
    old = {(k.replace("items_", "day7_", 1) if k.startswith("items_") else k): v for k, v in current.items()}
    assert "day7_acc" in old and "items_acc" not in old and schema.summary_errors(BEHAVIOUR, old)
    upgraded = results_format.upgrade(old)
    assert upgraded == current and list(upgraded) == list(current)  # renamed in place, nothing else
    assert results_format.upgrade(current) == current


def test_no_current_summary_type_declares_a_key_an_upgrade_renames():
    """The loader upgrades every summary it reads; that is sound only if no current summary holds an old key: no
    `day7_` key (format 1), no entry named by an old name field, and every path entry named (format 2)."""
    assert results_format.CURRENT == 3 and set(results_format.UPGRADES) == {1, 2}
    entry_lists = 0
    for analysis in REGISTRY:
        generated = summary_schema(analysis.summary_type, analysis.name)
        for shape in generated.get("anyOf", [generated]):
            old = [k for k in shape["properties"] if k.startswith(results_format.OLD_PREFIX)]
            assert old == [], (analysis.name, old)
            for key, value in shape["properties"].items():
                entry = value.get("items", {}) if value.get("type") == "array" else {}
                if entry.get("type") != "object":
                    continue
                entry_lists += 1
                fields = set(entry["properties"])
                assert not fields & set(results_format.OLD_NAME_FIELDS), (analysis.name, key)
                assert "name" in entry["required"] or not fields & {"sender", "receiver"}, (analysis.name, key)
    assert entry_lists > 40  # the rankings were found: the check above is not vacuous


def test_an_analysis_without_a_summary_type_cannot_be_run():
    bare = Analysis(name="bare", title="Bare", definition="", compute=lambda m, p: None, figures=lambda r: [],
                    narrative=lambda r: [])
    with pytest.raises(schema.SummaryError, match="'bare' declares no summary_type"):
        schema.check_summary(bare, {"family": "tomorrow"})
