"""Step evidence that isolates the step (issue 17): planted models whose mechanism is known by construction.

Every model is built on two seeds of its background noise. Each test names the old behaviour it guards against:
  * the two-step model's relation circuit is exactly its two step heads (old: clean-mean ablation kept the relation
    and removed the day, so the mover looked necessary and the "circuit" was 9 of 10 nodes);
  * an order-blind head gets no relation effect on the list family (old: the twin named other days);
  * a relation-blind next-day head is said to ignore the relation word (old: 21/21 and nothing said);
  * a reversed gap gets no role sentence (old: "barely differ", then a role on raw logits).
"""

from __future__ import annotations

import re

import pytest
from planted_circuit import save_planted_gpt2
from planted_honesty import save_two_step_gpt2

from analyses.behaviour import BEHAVIOUR
from analyses.circuit import CIRCUIT
from analyses.logit_diff import LOGIT_DIFF
from analyses.patching_heads import PATCHING_HEADS

pytestmark = pytest.mark.tiny  # tests here build tiny or planted checkpoints in the session (no-model tier: not these)

SEEDS = (0, 1)
ROLE = re.compile(r"carries the (step|named item)")  # the corruption's role, given to a head in the same sentence


def _roles(sentences: list[str]) -> list[str]:
    return [s for s in sentences if ROLE.search(s) and re.search(r"L\d+H\d+", s)]
STEP_HEADS = ["L1H0", "L1H1"]


def _load(builder, folder, family="tomorrow", families_file=None, **kwargs):
    from report.run.families import build_prompt_set
    from report.run.families_file import load_family_specs
    from report.run.model import load_model

    model = load_model(str(builder(folder, **kwargs)), device="cpu").model
    spec = load_family_specs(families_file)[family]
    return model, build_prompt_set(spec, model.tokenizer, model.cfg.default_prepend_bos)


@pytest.fixture(scope="module", params=SEEDS, ids=lambda s: f"seed{s}")
def two_step(request, tmp_path_factory):
    return _load(save_two_step_gpt2, tmp_path_factory.mktemp("two-step"), seed=request.param)


# ---- 1. the contrast-matched circuit ---------------------------------------------------------------------------------


@pytest.mark.slow
def test_the_two_step_models_relation_circuit_is_exactly_its_two_step_heads(two_step):
    """Resample ablation from the relation twin keeps the day (the mover reads the same day in both prompts), so
    the two step heads alone keep the whole LD; the mover is not notable and never enters the circuit."""
    model, prompts = two_step
    result = CIRCUIT.compute(model, prompts.with_corruption("relation"))
    s = result.summary
    assert s["ablation"] == "resample" and s["named"] is True
    assert sorted(s["minimal_circuit"]) == STEP_HEADS
    assert s["n_notable"] == 2
    assert s["minimal_circuit_faithfulness"] == pytest.approx(1.0, abs=0.05)
    assert len(s["minimal_circuit_faithfulness_by_template"]) == len(prompts.templates)
    assert all(v == pytest.approx(1.0, abs=0.05) for v in s["minimal_circuit_faithfulness_by_template"])
    # leave one template out: every fold finds the same two heads and they hold on the held-out wording
    assert [sorted(c) for c in s["heldout_circuit_by_template"]] == [STEP_HEADS] * len(prompts.templates)
    assert all(v == pytest.approx(1.0, abs=0.05) for v in s["heldout_faithfulness_by_template"])
    text = " ".join(CIRCUIT.narrative(result))
    assert "resample" in text and "relation twin" in text


@pytest.mark.slow
def test_the_day_circuit_of_the_two_step_model_is_the_mover_and_the_active_step_head(two_step):
    model, prompts = two_step
    s = CIRCUIT.compute(model, prompts.with_corruption("day")).summary
    assert s["named"] and sorted(s["minimal_circuit"]) == ["L0H0", "L1H0"]
    assert s["minimal_circuit_faithfulness"] == pytest.approx(1.0, abs=0.05)


@pytest.mark.slow
def test_a_circuit_that_is_not_named_leaves_minimal_circuit_empty(tmp_path_factory):
    """The relation-blind next-day head: the relation gap is noise, so nothing is named; a program reading the
    JSON must not get the noise circuit."""
    model, prompts = _load(save_planted_gpt2, tmp_path_factory.mktemp("blind"), layer=1, head=2, n_layer=3)
    result = CIRCUIT.compute(model, prompts.with_corruption("relation"))
    s = result.summary
    assert s["named"] is False and s["minimal_circuit"] == [] and "minimal_circuit_faithfulness" not in s
    assert s["not_named_reason"]
    assert len(result.arrays["faithfulness_exact"]) == len(result.arrays["grid"])  # the curve stays for the reader


# ---- 2. a list twin that holds the listed days fixed ---------------------------------------------------------------

OLD_LIST_TWIN = """
[old_list]
templates = ["{day}, {day+1}, {day+2},", "{day}; {day+1}; {day+2};", "{day} - {day+1} - {day+2} -"]
answer_offset = 3
copy_offset = 2
relation_templates = ["{day+4}, {day+3}, {day+2},", "{day+4}; {day+3}; {day+2};", "{day+4} - {day+3} - {day+2} -"]
relation_answer_offset = 1
relation_items_differ = "the old twin, kept here to show what it confounded"
"""


@pytest.fixture(scope="module", params=SEEDS, ids=lambda s: f"seed{s}")
def order_blind(request, tmp_path_factory):
    """The planted head attends equally to every day token and writes day + 2 for each: it averages the listed
    days and cannot tell their order."""
    folder = tmp_path_factory.mktemp("order-blind")
    return _load(save_planted_gpt2, folder, family="list_continuation", layer=1, head=2, n_layer=3, shift=2,
                 seed=request.param)


@pytest.mark.slow
def test_an_order_blind_head_gets_no_relation_effect_on_the_list_family(order_blind):
    model, prompts = order_blind
    result = PATCHING_HEADS.compute(model, prompts.with_corruption("relation"))
    assert not result.summary["normalised"]
    assert _roles(PATCHING_HEADS.narrative(result)) == []
    assert CIRCUIT.compute(model, prompts.with_corruption("relation")).summary["named"] is False


@pytest.mark.slow
def test_the_old_list_twin_credits_the_order_blind_head_with_the_step(order_blind, tmp_path):
    """The mutant: the old twin ({day+4}, {day+3}, {day+2}) changes which days are listed, so the same head
    'restores' the whole gap and is said to carry the step. This is what the shipped twin removes."""
    from report.run.families import build_prompt_set
    from report.run.families_file import load_family_specs

    model, _ = order_blind
    path = tmp_path / "old.toml"
    path.write_text(OLD_LIST_TWIN, encoding="utf-8")
    old = build_prompt_set(load_family_specs(path)["old_list"], model.tokenizer, model.cfg.default_prepend_bos)
    result = PATCHING_HEADS.compute(model, old.with_corruption("relation"))
    assert result.summary["normalised"]
    assert result.summary["top_heads"][0]["name"] == "L1H2"
    assert any("L1H2" in s and "carries the step" in s for s in _roles(PATCHING_HEADS.narrative(result)))


# ---- 4. a model that ignores the relation word ----------------------------------------------------------------------


@pytest.fixture(scope="module", params=SEEDS, ids=lambda s: f"seed{s}")
def relation_blind(request, tmp_path_factory):
    return _load(save_planted_gpt2, tmp_path_factory.mktemp("blind"), layer=1, head=2, n_layer=3, seed=request.param)


def test_a_relation_blind_next_day_head_is_said_to_ignore_the_relation_word(relation_blind):
    model, prompts = relation_blind
    result = BEHAVIOUR.compute(model, prompts)
    s = result.summary
    assert s["items_acc"] == 1.0 and s["relation_acc"] == 0.0 and s["relation_follows_clean_rule_frac"] == 1.0
    assert s["ignores_relation"] is True
    assert abs(s["relation_discrimination_mean"]) < 0.1  # the twin's LD is the clean one's
    assert BEHAVIOUR.narrative(result)[0].startswith(
        "The model answers the day after the one named, whatever the relation word says")


def test_the_badge_says_ignores_only_when_the_relation_word_moves_nothing(relation_blind):
    """A model at chance on the twins whose logits still move with the relation word (Gemma 3 270M on if_today:
    +1.6 logits, 42 of 42 prompts) misses the twin; only one whose logits do not move ignores the word."""
    from report.publish.render import environment

    model, prompts = relation_blind
    blind = BEHAVIOUR.compute(model, prompts).summary
    badge = environment().get_template("_macros.html").module.relation_badge
    assert blind["relation_discrimination_state"] != "informative"
    assert "ignores the relation word" in badge(blind) and "misses the relation twin" not in badge(blind)
    moved = {**blind, "relation_discrimination_state": "informative", "relation_discrimination_mean": 1.6}
    assert "misses the relation twin" in badge(moved) and "ignores the relation word" not in badge(moved)
    result = BEHAVIOUR.compute(model, prompts)
    assert "does not move the answer's logits" in BEHAVIOUR.narrative(result)[0]


def test_a_model_that_follows_the_relation_word_is_not_said_to_ignore_it(two_step):
    model, prompts = two_step
    result = BEHAVIOUR.compute(model, prompts)
    s = result.summary
    assert s["relation_acc"] == 1.0 and s["ignores_relation"] is False
    assert s["relation_discrimination_positive"] == prompts.n_prompts
    assert s["relation_discrimination_p_value"] < 1e-5 and s["relation_discrimination_mean"] > 5
    assert not any("whatever the relation word says" in x for x in BEHAVIOUR.narrative(result))


# ---- 3. a reversed gap is a behavioural finding, and no component gets a role --------------------------------------


@pytest.fixture(scope="module", params=SEEDS, ids=lambda s: f"seed{s}")
def swapped(request, tmp_path_factory):
    return _load(save_two_step_gpt2, tmp_path_factory.mktemp("swapped"), seed=request.param, swapped=True)


@pytest.mark.slow
def test_a_reversed_gap_is_said_to_be_reversed_and_gets_no_role_sentence(swapped):
    model, prompts = swapped
    gaps = LOGIT_DIFF.compute(model, prompts).summary
    assert gaps["relation_gap_state"] == "reversed" and gaps["relation_gap_mean"] < -5
    result = PATCHING_HEADS.compute(model, prompts.with_corruption("relation"))
    s = result.summary
    assert s["gap_state"] == "reversed" and not s["normalised"]
    assert {e["name"] for e in s["top_heads"][:2]} == set(STEP_HEADS)  # large raw effects: what tempted a role
    sentences = PATCHING_HEADS.narrative(result)
    text = " ".join(sentences)
    assert "reversed" in text and "behavioural finding" in text, text
    assert "barely differ" not in text
    assert _roles(sentences) == [], sentences
    assert CIRCUIT.compute(model, prompts.with_corruption("relation")).summary["named"] is False


# ---- 5. roles, not indices ------------------------------------------------------------------------------------------


@pytest.mark.slow
def test_positional_patching_by_role_finds_the_planted_role_at_100_percent_in_every_template(relation_blind):
    """The next-day head reads the day token, which sits at different indices in different templates; read by role
    (each prompt at its own template's item position) patching the residual stream there restores the whole gap
    in every template, where pooling one index over templates mixes the day with other words."""
    from analyses.patching_positions import PATCHING_POSITIONS

    model, prompts = relation_blind
    assert len({roles.index("item") for roles in prompts.roles}) > 1  # the templates are misaligned by index
    result = PATCHING_POSITIONS.compute(model, prompts.with_corruption("day"))
    s = result.summary
    assert s["normalised"]
    entries = {e["name"]: e for e in s["resid_pre_role_top"]}
    top = entries["L0 item"]  # beside "L1 item" and "L2 final" (after the head has written): each the whole gap
    assert top["value"] == pytest.approx(1.0, abs=0.05)
    assert len(top["value_by_template"]) == len(prompts.templates)
    assert all(v == pytest.approx(1.0, abs=0.05) for v in top["value_by_template"])
    assert any("by token role" not in x and "T5 100%" in x for x in PATCHING_POSITIONS.narrative(result))
    by_index = result.arrays["resid_pre_exact"][0]  # layer 0 by index: no index holds the day in every template
    assert by_index.max() < 0.9
