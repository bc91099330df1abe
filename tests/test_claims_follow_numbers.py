"""The report says only what its numbers support: planted models with known answers, a copy-only model that does
not do the task, and a random model whose gap is noise (issue: honest causal evidence).

Each planted model is built on two seeds of its background noise, so no assertion rests on one draw.
"""

from __future__ import annotations

import re

import pytest
from planted_circuit import save_planted_gpt2
from planted_honesty import save_copy_circle_gpt2, save_two_step_gpt2

from analyses.ablations import ABLATIONS_ANALYSIS
from analyses.behaviour import BEHAVIOUR
from analyses.circuit import CIRCUIT
from analyses.dla_heads import DLA_HEADS
from analyses.logit_diff import LOGIT_DIFF
from analyses.patching_heads import PATCHING_HEADS
from analyses.patching_positions import PATCHING_POSITIONS
from analyses.path_patching import PATH_PATCHING

pytestmark = pytest.mark.tiny  # planted and random checkpoints built in the session

SEEDS = (0, pytest.param(1, marks=pytest.mark.slow))  # the second seed runs in the full suite (docs/testing.md)
FAMILY = "tomorrow"  # templates with " tomorrow", relation twins with " yesterday": what the two-step model reads


def _load(builder, folder, **kwargs):
    from report.run.families import build_prompt_set
    from report.run.families_file import load_family_specs
    from report.run.model import load_model

    model = load_model(str(builder(folder, **kwargs)), device="cpu").model
    return model, build_prompt_set(load_family_specs()[FAMILY], model.tokenizer, model.cfg.default_prepend_bos)


def _fraction_of_gap(text: str):
    """A sentence that reports an effect as a fraction of the clean − corrupted gap."""
    return re.search(r"restores|of the clean − corrupted gap|\d+% \(95% spread|moves -?\d+%", text)


_CACHE: dict = {}


def _patched(analysis, loaded, corruption: str):
    """analysis.compute on one corruption, computed once per model (the tests share these results)."""
    model, prompts = loaded
    key = (id(model), analysis.name, corruption)
    if key not in _CACHE:
        _CACHE[key] = (model, analysis.compute(model, prompts.with_corruption(corruption)))
    return _CACHE[key][1]


def _z(summary: dict, head: str) -> float:
    return next(e["value"] for e in summary["top_heads"] if e["name"] == head)


# ---- one planted next-day head in a middle layer: magnitudes, not just ranks ---------------------------------------


@pytest.fixture(scope="module", params=SEEDS, ids=lambda s: f"seed{s}")
def middle_head(request, tmp_path_factory):
    return _load(save_planted_gpt2, tmp_path_factory.mktemp("middle"), layer=1, head=2, n_layer=3,
                 seed=request.param)


def test_dla_of_the_planted_head_is_the_logit_difference(middle_head):
    """With the final norm's scale removed from DLA, the planted head's value is ~3x too large: this fails."""
    model, prompts = middle_head
    summary = DLA_HEADS.compute(model, prompts).summary
    top = summary["top_positive"][0]
    assert top["name"] == "L1H2"
    assert summary["logit_diff_mean"] > 5  # a real next-day margin
    assert top["value"] == pytest.approx(summary["logit_diff_mean"], rel=0.1)


@pytest.mark.slow
def test_patching_a_value_carrying_head_restores_z_and_v_but_not_the_pattern(middle_head):
    summary = _patched(PATCHING_HEADS, middle_head, "day").summary
    assert summary["normalised"] and summary["corruption"] == "day"
    best = summary["top_heads"][0]
    assert best["name"] == "L1H2"
    assert best["value"] == pytest.approx(1.0, abs=0.05)
    assert best["v_value"] == pytest.approx(1.0, abs=0.05)
    assert best["pattern_value"] == pytest.approx(0.0, abs=0.05)  # it looks at the day token in both runs
    assert all(v == pytest.approx(1.0, abs=0.05) for v in best["value_by_template"])


@pytest.mark.slow
def test_a_head_blind_to_the_relation_gives_no_relation_gap(middle_head):
    """The one-head model ignores " tomorrow" / " yesterday": the relation corruption must not be normalised."""
    result = _patched(PATCHING_HEADS, middle_head, "relation")
    assert result.summary["corruption"] == "relation"
    assert not result.summary["normalised"]
    assert not _fraction_of_gap(" ".join(PATCHING_HEADS.narrative(result)))


@pytest.mark.slow  # over 5 CPU seconds (docs/testing.md)
def test_no_circuit_is_named_from_a_ranking_by_a_noise_gap(middle_head):
    """The next-day head ignores the relation word, so the relation corruption barely changes the model: the
    patching effects that rank the nodes are noise, and resample-ablating from the relation twin (which the model
    reads as the same prompt) barely changes the LD either. No circuit may be named, and the summary says so to a
    program too (`named` false, `minimal_circuit` empty)."""
    result = _patched(CIRCUIT, middle_head, "relation")
    s = result.summary
    assert not s["ranking_informative"] and s["ablation"] == "resample"
    assert s["named"] is False and s["minimal_circuit"] == []
    text = " ".join(CIRCUIT.narrative(result))
    assert "no circuit is named" in text and "smallest circuit" not in text, text
    diagram = next(f.figure for f in CIRCUIT.figures(result) if f.id == "circuit-diagram")
    assert diagram.layout.title.text.startswith("Not a finding")
    assert len(result.arrays["edge_weight"]) == 0 and result.labels["edge_sender"] == []  # no paths measured


# ---- a two-step circuit: each corruption finds its own head ----------------------------------------------------------


@pytest.fixture(scope="module", params=SEEDS, ids=lambda s: f"seed{s}")
def two_step(request, tmp_path_factory):
    return _load(save_two_step_gpt2, tmp_path_factory.mktemp("two-step"), seed=request.param)


def test_two_step_model_does_the_task_both_ways(two_step):
    model, prompts = two_step
    summary = BEHAVIOUR.compute(model, prompts).summary
    assert summary["items_acc"] == 1.0 and summary["items_above_chance"]
    relation = prompts.with_corruption("relation")
    final = model(relation.corrupted_tokens)[:, -1]
    assert final.argmax(-1).tolist() == relation.corrupted_answer_ids.tolist()  # " yesterday" -> the day before


@pytest.mark.slow
def test_day_corruption_finds_the_mover(two_step):
    summary = _patched(PATCHING_HEADS, two_step, "day").summary
    assert summary["normalised"]
    assert _z(summary, "L0H0") == pytest.approx(1.0, abs=0.05)  # moves the named day to where the step reads it
    assert _z(summary, "L1H0") == pytest.approx(1.0, abs=0.05)  # the active step head reads the moved day


def test_relation_corruption_finds_the_step_heads_and_not_the_mover(two_step):
    result = _patched(PATCHING_HEADS, two_step, "relation")
    summary = result.summary
    assert summary["normalised"]
    z = {e["name"]: e["value"] for e in summary["top_heads"]}
    assert abs(z.get("L0H0", 0.0)) < 0.05  # the same day is moved in both runs
    assert 0.3 < z["L1H0"] < 0.7 and 0.3 < z["L1H1"] < 0.7  # one switched on, the other off
    assert z["L1H0"] + z["L1H1"] == pytest.approx(1.0, abs=0.1)
    assert {e["name"] for e in summary["top_heads"][:2]} == {"L1H0", "L1H1"}
    assert any("carries the step applied to the item" in s for s in PATCHING_HEADS.narrative(result))


# ---- a copy-only model: at chance, and the report says so -----------------------------------------------------------


@pytest.fixture(scope="module", params=SEEDS, ids=lambda s: f"seed{s}")
def copy_only(request, tmp_path_factory):
    return _load(save_copy_circle_gpt2, tmp_path_factory.mktemp("copy"), seed=request.param)


def test_copy_model_is_at_chance_and_copies(copy_only):
    model, prompts = copy_only
    result = BEHAVIOUR.compute(model, prompts)
    assert not result.summary["items_above_chance"]
    assert result.summary["copy_choice_frac"] == 1.0
    assert BEHAVIOUR.narrative(result)[0].startswith("The model does not do this task")


@pytest.mark.slow  # over 5 CPU seconds (docs/testing.md)
def test_copy_model_relation_patching_is_not_normalised(copy_only):
    model, prompts = copy_only
    assert not LOGIT_DIFF.compute(model, prompts).summary["relation_gap_informative"]
    for analysis in (PATCHING_HEADS, PATCHING_POSITIONS):
        result = _patched(analysis, copy_only, "relation")
        assert not result.summary["normalised"]
        text = " ".join(analysis.narrative(result))
        assert not _fraction_of_gap(text), text  # no percentage of a noise gap
        assert "barely differ" in text


@pytest.mark.slow
def test_no_sentence_credits_the_copy_head_with_the_next_day_step(copy_only):
    """The day corruption restores 100% through the copy head (it carries the named day); every sentence that
    names the head must frame it as what the model does instead of the task."""
    sentences = []
    for corruption in copy_only[1].corruptions:
        sentences += PATCHING_HEADS.narrative(_patched(PATCHING_HEADS, copy_only, corruption))
    assert sentences[0].startswith("The model does not do this task")
    naming = [s for s in sentences if "L1H2" in s and ("restores" in s or "carries" in s)]
    assert naming, "the day corruption should name the copy head"
    assert all("instead" in s for s in naming)
    assert not any("step applied" in s and "L1H2" in s for s in sentences)


@pytest.mark.slow  # over 5 CPU seconds (docs/testing.md)
def test_mechanism_narratives_of_the_copy_model_say_it_is_what_the_model_does_instead(copy_only):
    """Ablation, path patching and the circuit on the day corruption all find the copy head (it carries the named
    day, so it restores the whole gap); at chance each narrative opens by saying so, and every sentence giving a
    node an effect frames it as what the model does instead of the task."""
    for analysis in (ABLATIONS_ANALYSIS, PATH_PATCHING, CIRCUIT):
        result = _patched(analysis, copy_only, "day")
        assert result.summary["items_above_chance"] is False
        sentences = analysis.narrative(result)
        assert sentences[0].startswith("The model does not do this task"), (analysis.name, sentences)
        naming = [s for s in sentences[1:] if "L1H2" in s and re.search(r"restores|changes the LD|keeps", s)]
        assert naming, (analysis.name, sentences)  # the copy head is found, and named
        assert all("instead" in s for s in naming), (analysis.name, naming)


# ---- a random model: its gap is noise -------------------------------------------------------------------------------


@pytest.mark.slow  # over 5 CPU seconds (docs/testing.md)
def test_random_model_mechanism_names_no_node(tiny_model, tiny_prompt_sets):
    """The control for ablations, path patching and the circuit: on a random model the gap is noise, so no node
    is given an effect in any narrative, and the circuit's ranking is flagged as noise."""
    prompts = tiny_prompt_sets[FAMILY]
    for analysis in (ABLATIONS_ANALYSIS, PATH_PATCHING, CIRCUIT):
        result = analysis.compute(tiny_model, prompts)
        text = " ".join(analysis.narrative(result))
        assert not re.search(r"restores|changes the LD by at least|keeps \d+%|Far from the diagonal", text), text
        if analysis is CIRCUIT:
            assert result.summary["ranking_informative"] is False
        else:
            assert result.summary["informative"] is False
        assert "barely" in text, text


@pytest.mark.slow
def test_random_model_patching_reports_raw_logits_and_names_nothing(tiny_model, tiny_prompt_sets):
    prompts = tiny_prompt_sets[FAMILY]
    for corruption in prompts.corruptions:
        result = PATCHING_HEADS.compute(tiny_model, prompts.with_corruption(corruption))
        assert not result.summary["normalised"]
        text = " ".join(PATCHING_HEADS.narrative(result))
        assert not _fraction_of_gap(text), text
        assert "Nothing stands out" in text
