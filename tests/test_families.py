"""The shipped families are valid for GPT-2's tokenizer, their answers follow the calendar, and bad files fail."""

from __future__ import annotations

import pytest

from report.run.families import FamilyError, build_prompt_set
from report.run.families_file import load_family_specs, select_families

SHIPPED = load_family_specs()


def test_ships_at_least_six_families_covering_the_required_offsets():
    assert len(SHIPPED) >= 6
    offsets = {spec.answer_offset for spec in SHIPPED.values()}
    assert {1, 2, -1, 3} <= offsets
    templates = {t for spec in SHIPPED.values() for t in spec.templates}
    assert "Yesterday it was {day} so tomorrow it is" in templates
    assert "If today is {day}, tomorrow is" in templates


@pytest.mark.parametrize("name", list(SHIPPED))
def test_family_tokenizes_into_single_token_answers_and_equal_lengths(name, tokenizer):
    prompts = build_prompt_set(SHIPPED[name], tokenizer)
    n_templates, items = len(SHIPPED[name].templates), SHIPPED[name].items
    n = len(items)
    assert n_templates >= 3  # paraphrases, so that no finding rests on one wording
    assert prompts.item_index == list(range(n)) * n_templates  # every item of the sequence under every template
    assert prompts.template_index == [t for t in range(n_templates) for _ in range(n)]
    assert prompts.corruptions == ("day", "relation")
    for corruption in prompts.corruptions:
        twin = prompts.with_corruption(corruption)
        shape = (n * n_templates, prompts.clean_tokens.shape[1])
        assert twin.clean_tokens.shape == twin.corrupted_tokens.shape == shape
        for ids in (twin.answer_ids, twin.copy_ids, twin.corrupted_answer_ids):
            for token in ids.tolist():
                assert tokenizer.decode([token]).strip() in items
                assert tokenizer.decode([token]).startswith(" ")
        assert (twin.answer_ids != twin.corrupted_answer_ids).all()
    assert prompts.clean_tokens[0, 0].item() == tokenizer.bos_token_id


def test_yesterday_tomorrow_answer_is_two_days_after_the_named_day(tokenizer):
    prompts = build_prompt_set(SHIPPED["yesterday_tomorrow"], tokenizer)
    monday = prompts.clean_prompts.index("Yesterday it was Monday so tomorrow it is")
    assert tokenizer.decode([prompts.answer_ids[monday].item()]) == " Wednesday"
    assert tokenizer.decode([prompts.copy_ids[monday].item()]) == " Monday"


def test_list_continuation_wraps_around_the_week(tokenizer):
    prompts = build_prompt_set(SHIPPED["list_continuation"], tokenizer)
    saturday = prompts.clean_prompts.index("Saturday, Sunday, Monday,")
    assert tokenizer.decode([prompts.answer_ids[saturday].item()]) == " Tuesday"
    assert tokenizer.decode([prompts.copy_ids[saturday].item()]) == " Monday"


def _write(tmp_path, text):
    path = tmp_path / "families.toml"
    path.write_text(text, encoding="utf-8")
    return path


def test_unknown_key_names_the_family_and_the_key(tmp_path):
    path = _write(tmp_path, '[mine]\ntemplate = "Today it is {day} so tomorrow it is"\nanswer_offset = 1\nofset = 2\n')
    with pytest.raises(FamilyError, match=r"family 'mine'.*unknown key.*ofset"):
        load_family_specs(path)


def test_unequal_token_lengths_name_the_family_and_the_prompt(tmp_path, tokenizer):
    path = _write(tmp_path, '[plural]\ntemplate = "Today it is {day}s so tomorrow it is"\nanswer_offset = 1\n')
    spec = load_family_specs(path)["plural"]
    with pytest.raises(FamilyError, match=r"family 'plural', prompt 'Today it is \w+s so tomorrow it is'"):
        build_prompt_set(spec, tokenizer)


def test_malformed_toml_names_the_file(tmp_path):
    path = _write(tmp_path, "[broken\ntemplate = 1")
    with pytest.raises(FamilyError, match="not valid TOML"):
        load_family_specs(path)


@pytest.mark.parametrize("body, message", [
    ('template = "Today it is Monday"\nanswer_offset = 1', "no {day} slot"),
    ('template = "Today it is {day} {weekday}"\nanswer_offset = 1', "slot other than"),
    ('template = "Today it is {day}"\nanswer_offset = 1\ncorrupt_shift = 7', "multiple of 7"),
    ('template = "Today it is {day}"\nanswer_offset = "one"', "whole number"),
    ('template = "Today it is {day}"', "missing key"),
])
def test_invalid_family_definitions_are_rejected(tmp_path, body, message):
    with pytest.raises(FamilyError, match=message):
        load_family_specs(_write(tmp_path, f"[mine]\n{body}\n"))


def test_unknown_family_lists_the_known_ones():
    with pytest.raises(FamilyError, match=r"unknown family 'nope'; known: tomorrow"):
        select_families(SHIPPED, "tomorrow,nope")


# ---- relation twins that vary the step and nothing else (issue 17) ---------------------------------------------------


OLD_LIST = ('[lst]\ntemplates = ["{day}, {day+1}, {day+2},"]\nanswer_offset = 3\n'
            'relation_templates = ["{day+4}, {day+3}, {day+2},"]\nrelation_answer_offset = 1\n')


def test_a_relation_twin_naming_other_items_is_rejected_unless_the_family_says_why(tmp_path):
    """The old list twin named {day+4}, {day+3}, {day+2}: two of three listed days differ from the clean prompt's."""
    with pytest.raises(FamilyError, match=r"family 'lst'.*names other items.*relation_items_differ"):
        load_family_specs(_write(tmp_path, OLD_LIST))
    spec = load_family_specs(_write(tmp_path, OLD_LIST + 'relation_items_differ = "a deliberate control"\n'))["lst"]
    assert spec.relation_items_differ == "a deliberate control"


def test_shipped_relation_twins_name_the_same_items_and_change_one_token_or_only_the_order(tokenizer):
    specs = load_family_specs()
    with_relation = [s for s in specs.values() if s.has_relation]
    assert with_relation
    for spec in with_relation:
        assert not spec.relation_items_differ, spec.name
        prompts = build_prompt_set(spec, tokenizer).with_corruption("relation")
        clean, twin = prompts.clean_tokens, prompts.corrupted_tokens
        changed = (clean != twin).sum(-1)
        if spec.name.endswith("list_continuation"):  # the same items in the other order; both answers unlisted
            assert (changed > 0).all(), spec.name
            for a, b, ans, twin_ans in zip(prompts.str_tokens, prompts.corrupted_str_tokens,
                                           prompts.answer_items(), prompts.corrupted_answer_ids.tolist()):
                listed = sorted(t.strip() for t in a if t.strip() in spec.items)
                assert len(listed) == 3 and listed == sorted(t.strip() for t in b if t.strip() in spec.items)
                assert spec.items[ans] not in listed and tokenizer.decode([twin_ans]).strip() not in listed
        elif isinstance(spec.answer_offset, tuple):  # offset families: "One day" -> "Two days", the plural
            assert set(changed.tolist()) <= {1, 2}, spec.name  # changes with the number k, the relation here
        else:
            assert changed.tolist() == [1] * prompts.n_prompts, spec.name  # only the relation word


def test_the_bundled_models_families_ship_six_templates():
    specs = load_family_specs()
    for name in ("tomorrow", "if_today", "list_continuation"):
        assert len(specs[name].templates) >= 6, name


def test_a_family_name_longer_than_a_folder_name_may_be_is_refused_and_the_longest_allowed_loads(tmp_path):
    """A family's name becomes a results folder and a page name: families_file.MAX_NAME (64) is the one limit."""
    from report.run.families_file import MAX_NAME

    body = '\ntemplate = "Today it is {day} so tomorrow it is"\nanswer_offset = 1\n'
    longest = "f" * MAX_NAME
    assert list(load_family_specs(_write(tmp_path, f"[{longest}]{body}"))) == [longest]
    with pytest.raises(FamilyError, match=rf"at most {MAX_NAME} characters"):
        load_family_specs(_write(tmp_path, f"[{longest}g]{body}"))
