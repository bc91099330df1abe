"""Offset families: one template per step k, each with its own answer offset; accuracy by k and the kind of error."""

from __future__ import annotations

import numpy as np
import pytest
from planted_circuit import save_planted_gpt2

from analyses import behaviour
from report.run.families import FamilyError, build_prompt_set
from report.run.families_file import load_family_specs

pytestmark = pytest.mark.tiny  # tests here build tiny or planted checkpoints in the session (no-model tier: not these)

SHIPPED = load_family_specs()
OFFSET_FAMILIES = ("days_after_k_words", "days_after_k_digits", "day_of_week_math", "months_after_k_words",
                   "months_after_k_digits")


@pytest.mark.parametrize("name", OFFSET_FAMILIES)
def test_each_template_asks_its_own_step(name, tokenizer):
    spec = SHIPPED[name]
    prompts = build_prompt_set(spec, tokenizer)
    n = prompts.n_items
    assert prompts.answer_offset is None and prompts.answer_offsets == spec.answer_offsets
    assert len(set(spec.answer_offsets)) == len(spec.templates) >= 6  # one step per template, k = 1 ...
    answers = [tokenizer.decode([t]).strip() for t in prompts.answer_ids.tolist()]
    relation = [tokenizer.decode([t]).strip() for t in prompts.twins["relation"].answer_ids.tolist()]
    assert answers, "no prompts"
    for b, (t, i) in enumerate(zip(prompts.template_index, prompts.item_index)):
        assert answers[b] == prompts.items[(i + spec.answer_offsets[t]) % n]
        assert relation[b] == prompts.items[(i + spec.relation_answer_offsets[t]) % n]
        assert prompts.answer_items()[b] == (i + spec.answer_offsets[t]) % n


def test_three_days_after_saturday_is_tuesday_and_engels_math_has_49_prompts(tokenizer):
    words = build_prompt_set(SHIPPED["days_after_k_words"], tokenizer)
    b = words.clean_prompts.index("Three days after Saturday is")
    assert tokenizer.decode([words.answer_ids[b].item()]) == " Tuesday"
    math = build_prompt_set(SHIPPED["day_of_week_math"], tokenizer)
    assert math.n_prompts == 49 and math.answer_offsets == (1, 2, 3, 4, 5, 6, 7)
    b = math.clean_prompts.index("Let's do some day of the week math. Seven days from Friday is")
    assert tokenizer.decode([math.answer_ids[b].item()]) == " Friday"  # k = 7: the day itself


@pytest.mark.parametrize("offsets, relation, message", [
    ("[1, 2]", "", "lists 2 offsets for 3 template"),
    ('[1, "two", 3]', "", "whole number or a list"),
    ("[1, 2, 3]", "relation_answer_offset = [2, 9, 4]", "gives the same answer as answer_offset 2"),
])
def test_a_bad_offset_list_names_the_family(tmp_path, offsets, relation, message):
    relation_lines = (f'relation_templates = ["{{day}} a", "{{day}} b", "{{day}} c"]\n{relation}\n'
                      if relation else "")
    path = tmp_path / "families.toml"
    path.write_text(f'[mine]\ntemplates = ["{{day}} x", "{{day}} y", "{{day}} z"]\nanswer_offset = {offsets}\n'
                    + relation_lines, encoding="utf-8")
    with pytest.raises(FamilyError, match=f"family 'mine'.*{message}"):
        load_family_specs(path)


@pytest.fixture(scope="module")
def next_day_model(tmp_path_factory):
    """The planted +1 head of tests/planted_circuit.py: it answers day + 1 whatever k the prompt asks."""
    from report.run.model import load_model

    return load_model(str(save_planted_gpt2(tmp_path_factory.mktemp("plus-one"))), device="cpu").model


def test_a_plus_one_model_is_right_at_k_1_and_slips_by_one_at_k_2(next_day_model):
    prompts = build_prompt_set(SHIPPED["days_after_k_words"], next_day_model.tokenizer)
    result = behaviour.compute(next_day_model, prompts)
    s = result.summary
    assert s["offsets"] == [1, 2, 3, 4, 5, 6] and s["n_prompts_by_offset"] == [7] * 6
    np.testing.assert_allclose(s["items_acc_by_offset"], [1, 0, 0, 0, 0, 0])
    # k = 2: day + 1 is one step short of the answer (a counting slip); k = 3..6: another item; never the copy
    assert s["n_errors"] == 35 and s["error_off_by_one_frac"] == pytest.approx(7 / 42)
    assert s["error_copy_frac"] == 0.0
    sentences = behaviour.narrative(result)
    assert "Accuracy by step k: k = +1 7/7, k = +2 0/7" in " ".join(sentences)
    assert "Of the 35 prompts whose most likely item is wrong, 7 pick an item one step from the answer" in \
        " ".join(sentences)


def test_a_report_of_every_offset_family_writes_a_manifest_build_accepts(tiny_checkpoint, tmp_path):
    """Offset families record a list of steps for their relation twins too; the manifest's schema must take it, or
    `build` refuses the whole run as damaged (it did: the default `report`, every family, failed at its build)."""
    import json

    from conftest import invoke

    from report.store.schema import validate

    offset = [name for name, spec in load_family_specs().items()
              if isinstance(spec.answer_offset, tuple) or isinstance(spec.relation_answer_offset, tuple)]
    assert any(isinstance(load_family_specs()[n].relation_answer_offset, tuple) for n in offset)
    invoke("report", "--model", tiny_checkpoint, "--families", ",".join(offset), "--analyses", "behaviour",
           "--out", tmp_path / "runs", "--site", tmp_path / "site", "--device", "cpu", "--run-id", "offsets")
    manifest = json.loads((tmp_path / "runs" / "offsets" / "manifest.json").read_text(encoding="utf-8"))
    assert validate(manifest, "manifest") == []
    assert {page.stem for page in (tmp_path / "site").rglob("*.html")} >= set(offset)
