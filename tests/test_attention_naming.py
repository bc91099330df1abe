"""The attention narrative prints the uniform baseline and names only heads that pass the naming threshold: the
planted head is named, with its day attention; a random model's heads are not."""

from __future__ import annotations

import pytest
from conftest import save_tiny_gpt2
from planted_circuit import save_planted_gpt2

from analyses.attention import ATTENTION

pytestmark = pytest.mark.tiny  # builds tiny checkpoints

SEEDS = (0, 1)


def _load(folder):
    from report.run.model import load_model

    return load_model(str(folder), device="cpu").model


def _prompts(model):
    from report.run.families import build_prompt_set
    from report.run.families_file import load_family_specs

    return build_prompt_set(load_family_specs()["tomorrow"], model.tokenizer, model.cfg.default_prepend_bos)


@pytest.mark.parametrize("seed", SEEDS)
def test_the_planted_head_is_named_with_its_day_attention_beside_the_uniform_baseline(tmp_path, seed):
    model = _load(save_planted_gpt2(tmp_path, seed=seed))
    prompts = _prompts(model)
    result = ATTENTION.compute(model, prompts)
    s = result.summary
    n_positions = prompts.clean_tokens.shape[1]
    assert s["uniform_day_attention"] == pytest.approx(1 / n_positions)  # one day token per prompt
    text = " ".join(ATTENTION.narrative(result))
    assert f"would get {100 / n_positions:.0f}% of its attention (the uniform baseline)" in text, text
    assert "L1H2 (direct contribution" in text and "Heads that attend from the final position" in text, text
    assert "L1H2 (" in text.split("Heads that attend")[1], text
    named = [h for h in ("L0H0", "L0H1", "L0H2", "L0H3", "L1H0", "L1H1", "L1H3") if f"{h} (" in text]
    assert named == [], text  # noise heads: under both thresholds


@pytest.mark.parametrize("seed", SEEDS)
def test_a_random_model_names_no_head(tmp_path, seed):
    model = _load(save_tiny_gpt2(tmp_path, seed=seed))
    result = ATTENTION.compute(model, _prompts(model))
    text = " ".join(ATTENTION.narrative(result))
    assert "nothing stands out" in text and "No head attends to the day token(s)" in text, text
    assert "direct contribution +" not in text and "Heads that attend" not in text, text


def test_widget_tiles_hold_short_head_names_and_the_values_sit_in_the_title(tmp_path):
    """circuitsvis draws each head name on a small selector tile: a value in the name overflows it (issue 16)."""
    import re

    model = _load(save_planted_gpt2(tmp_path, seed=0))
    widgets = ATTENTION.compute(model, _prompts(model)).widgets
    assert widgets
    for widget in widgets:
        assert widget["head_names"] and all(re.fullmatch(r"L\d+H\d+", n) for n in widget["head_names"]), widget
        assert all(f"{n} " in widget["title"] for n in widget["head_names"]), widget["title"]  # values kept
