"""A checkpoint whose next-day circuit is known (one planted head): the model must behave, and the
analyses must find that head. See tests/planted_circuit.py for the construction."""

from __future__ import annotations

import pytest
import torch
from planted_circuit import save_planted_gpt2

pytestmark = pytest.mark.tiny  # a planted checkpoint built in the session

LAYER, HEAD = 1, 2
PLANTED = f"L{LAYER}H{HEAD}"
FAMILIES = ("tomorrow", "day_after", "if_today")  # answer offset +1: the planted head's job
MIN_MARGIN = 5.0  # logits; the construction gives ~16


@pytest.fixture(scope="module")
def planted_model(tmp_path_factory):
    from report.run.model import load_model

    folder = save_planted_gpt2(tmp_path_factory.mktemp("planted-gpt2"), layer=LAYER, head=HEAD)
    return load_model(str(folder), device="cpu").model


@pytest.fixture(scope="module")
def planted_prompts(planted_model):
    from report.run.families import build_prompt_set
    from report.run.families_file import load_family_specs

    specs = load_family_specs()
    return {name: build_prompt_set(specs[name], planted_model.tokenizer, planted_model.cfg.default_prepend_bos)
            for name in FAMILIES}


@pytest.mark.parametrize("family", FAMILIES)
def test_planted_model_predicts_next_day_top1(planted_model, planted_prompts, family):
    from analyses.common import metrics
    prompts = planted_prompts[family]
    final = planted_model(prompts.clean_tokens)[:, -1]
    assert final.argmax(-1).tolist() == prompts.answer_ids.tolist()
    margin = metrics.logit_diff(final, prompts.answer_ids, prompts.copy_ids)
    assert margin.min().item() > MIN_MARGIN


@pytest.mark.parametrize("family", FAMILIES)
def test_planted_head_attends_to_the_day(planted_model, planted_prompts, family):
    prompts = planted_prompts[family]
    _, cache = planted_model.run_with_cache(prompts.clean_tokens)
    pattern = cache[f"blocks.{LAYER}.attn.hook_pattern"][:, HEAD, -1]  # [batch, src] from the final position
    day_pos = torch.tensor([[tok in prompts.item_token_ids for tok in row] for row in prompts.clean_tokens])
    assert (pattern * day_pos).sum(-1).min().item() > 0.99


@pytest.mark.parametrize("family", FAMILIES)
def test_direct_logit_attribution_ranks_planted_head_first(planted_model, planted_prompts, family):
    from analyses.common import metrics
    prompts = planted_prompts[family]
    _, cache = planted_model.run_with_cache(prompts.clean_tokens)
    results, labels = cache.stack_head_results(layer=-1, pos_slice=-1, return_labels=True)
    results = cache.apply_ln_to_stack(results, layer=-1, pos_slice=-1)  # [heads, batch, d_model]
    directions = metrics.diff_directions(planted_model, prompts.answer_ids, prompts.copy_ids)[0]
    dla = (results * directions).sum(-1).mean(-1)  # [heads]
    assert labels[dla.argmax().item()] == PLANTED
    assert dla.max().item() > MIN_MARGIN


# The analyses themselves must recover the planted head.


def test_dla_heads_analysis_finds_planted_head(planted_model, planted_prompts):
    from analyses.dla_heads import DLA_HEADS

    result = DLA_HEADS.compute(planted_model, planted_prompts["tomorrow"])
    assert result.summary["top_positive"][0]["name"] == PLANTED


@pytest.mark.slow
def test_patching_heads_analysis_finds_planted_head(planted_model, planted_prompts):
    from analyses.patching_heads import PATCHING_HEADS

    result = PATCHING_HEADS.compute(planted_model, planted_prompts["tomorrow"])
    assert result.summary["top_heads"][0]["name"] == PLANTED


def test_attention_analysis_finds_planted_head(planted_model, planted_prompts):
    from analyses.attention import ATTENTION

    result = ATTENTION.compute(planted_model, planted_prompts["tomorrow"])
    assert result.summary["top_positive"][0]["name"] == PLANTED
    assert result.summary["top_day_attention"][0]["name"] == PLANTED
    assert result.summary["top_day_attention"][0]["value"] > 0.99
    assert result.widgets[0]["head_names"][0].startswith(PLANTED)
