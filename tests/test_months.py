"""The month families: valid for GPT-2's tokenizer (and the bundled Gemma's), calendar answers, 12 x 12 behaviour."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import gemma_cache

from analyses.common.types import MONTHS
from report.run.families import build_prompt_set
from report.run.families_file import load_family_specs

SHIPPED = load_family_specs()
MONTH_FAMILIES = [name for name, spec in SHIPPED.items() if spec.sequence == "months"]


def test_ships_the_four_month_families():
    assert {"next_month", "month_after", "previous_month", "month_list_continuation"} <= set(MONTH_FAMILIES)
    assert {SHIPPED[name].answer_offset for name in MONTH_FAMILIES} >= {1, -1, 3}


@pytest.mark.parametrize("name", MONTH_FAMILIES)
def test_month_family_has_twelve_items_single_token_answers_and_equal_lengths(name, tokenizer):
    prompts = build_prompt_set(SHIPPED[name], tokenizer)  # raises on a multi-token answer or unequal lengths
    n_templates = len(SHIPPED[name].templates)
    assert prompts.items == MONTHS and prompts.n_items == 12 and n_templates >= 3
    assert prompts.item_index == list(range(12)) * n_templates
    assert prompts.corruptions == ("day", "relation")
    lengths = {len(row) for twin in prompts.twins.values() for row in twin.tokens.tolist()}
    assert lengths == {prompts.clean_tokens.shape[1]}
    for corruption in prompts.corruptions:
        twin = prompts.with_corruption(corruption)
        for ids in (twin.answer_ids, twin.corrupted_answer_ids):
            assert all(tokenizer.decode([t]).startswith(" ") and tokenizer.decode([t]).strip() in MONTHS
                       for t in ids.tolist())
        assert (twin.answer_ids != twin.corrupted_answer_ids).all()


@pytest.mark.parametrize("name, prompt, answer", [
    ("next_month", "This month it is December so next month it is", " January"),
    ("month_after", "The month after May is", " June"),
    ("previous_month", "The month before January is", " December"),
    ("month_list_continuation", "October, November, December,", " January"),
])
def test_month_answers_follow_the_calendar_and_wrap_around_the_year(name, prompt, answer, tokenizer):
    prompts = build_prompt_set(SHIPPED[name], tokenizer)
    index = prompts.clean_prompts.index(prompt)
    assert tokenizer.decode([prompts.answer_ids[index].item()]) == answer


@pytest.mark.parametrize("name", MONTH_FAMILIES)
def test_behaviour_gives_a_twelve_by_twelve_confusion_matrix(name, tiny_model, tiny_prompt_sets):
    from analyses.behaviour import BEHAVIOUR

    prompts = tiny_prompt_sets[name]
    result = BEHAVIOUR.compute(tiny_model, prompts)
    confusion = result.arrays["confusion"]
    assert confusion.shape == (12, 12)
    # every prompt counted once, in the row of the month it names
    np.testing.assert_array_equal(confusion.sum(axis=1), [len(prompts.templates)] * 12)
    assert result.summary["n_items"] == 12 and result.summary["chance_acc"] == pytest.approx(1 / 12)
    assert len(result.summary["items_acc_by_item"]) == 12
    if prompts.answer_offset is not None:  # one step for every template: the confusion matrix's shifted diagonal
        assert result.summary["items_acc"] == pytest.approx(
            sum(confusion[i, (i + prompts.answer_offset) % 12] for i in range(12)) / prompts.n_prompts)
    else:  # an offset family ("{k} months after {month} is"): each template its own step, so read it per prompt
        s = result.summary
        assert s["items_acc"] == pytest.approx(np.mean([p == c for p, c in zip(s["predicted_item"],
                                                                                s["correct_item"])]))
        assert s["correct_item"] == [prompts.items[(i + k) % 12]
                                     for i, k in zip(prompts.item_index, prompts.prompt_offsets())]


@pytest.fixture(scope="module")
def gemma_tokenizer(gemma_first_load):
    from report.run.bundled import load_bundled_tokenizer

    with gemma_cache(gemma_first_load):
        return load_bundled_tokenizer()


@pytest.mark.slow
@pytest.mark.parametrize("name", MONTH_FAMILIES)
def test_month_family_is_valid_for_the_bundled_gemma_tokenizer(name, gemma_tokenizer):
    prompts = build_prompt_set(SHIPPED[name], gemma_tokenizer, prepend_bos=True)
    assert prompts.n_items == 12 and prompts.clean_tokens.shape[0] == 12 * len(SHIPPED[name].templates)


def test_the_readme_example_adds_a_sequence_that_gpt2_can_use(tmp_path, tokenizer):
    import re
    from pathlib import Path

    readme = (Path(__file__).parent.parent / "docs" / "methods.md").read_text(encoding="utf-8")  # moved from README
    (example,) = re.findall(r"```toml\n(.*?)```", readme, flags=re.S)
    path = tmp_path / "hours.toml"
    path.write_text(example, encoding="utf-8")
    (spec,) = load_family_specs(path).values()
    prompts = build_prompt_set(spec, tokenizer)
    assert prompts.sequence == "hours" and prompts.n_items == 12
    twelve = prompts.clean_prompts.index("It is twelve o'clock, so in an hour it will be")
    assert tokenizer.decode([prompts.answer_ids[twelve].item()]) == " one"  # the clock wraps around


def test_list_families_shows_every_sequence_with_its_items():
    from tests.conftest import invoke

    output = invoke("list", "families").output
    assert "months                   12 items: January, February" in output
    assert "days                      7 items: Monday" in output
    assert "next_month               months" in output
