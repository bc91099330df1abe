"""OV offsets: a planted +2 head and a planted −1 head are found by their offset, and called neither successor nor
copy heads; layer-0 heads read the token embedding; no position embedding enters the items' inputs; random heads
give no offset head."""

from __future__ import annotations

import pytest
import torch
from conftest import save_tiny_gpt2
from planted_circuit import save_planted_gpt2

from analyses.common.offset_scores import modal_threshold
from analyses.methods.ov_circuits import item_inputs, ov_grids
from analyses.successor_heads import SUCCESSOR_HEADS

pytestmark = pytest.mark.tiny  # tests here build tiny or planted checkpoints in the session (no-model tier: not these)

SEEDS = (0, 1)
TOL = 1e-5


def _load(folder):
    from report.run.model import load_model

    return load_model(str(folder), device="cpu").model


def _prompts(model, family):
    from report.run.families import build_prompt_set
    from report.run.families_file import load_family_specs

    return build_prompt_set(load_family_specs()[family], model.tokenizer, model.cfg.default_prepend_bos)


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize(("shift", "family", "layer"), [(2, "yesterday_tomorrow", 1), (-1, "day_before", 1),
                                                        (2, "yesterday_tomorrow", 0)])
def test_a_planted_offset_head_is_found_by_its_offset_and_not_called_successor_or_copy(tmp_path, seed, shift, family,
                                                                                        layer):
    model = _load(save_planted_gpt2(tmp_path, layer=layer, head=2, seed=seed, shift=shift))
    prompts = _prompts(model, family)
    result = SUCCESSOR_HEADS.compute(model, prompts)
    s, a = result.summary, result.arrays
    name = f"L{layer}H2"
    assert s["family_offset"] == shift
    assert a["modal_offset"][layer, 2] == shift and a["modal_frequency"][layer, 2] == 1.0
    assert a["family_offset_score"][layer, 2] == 1.0
    assert a["successor_score"][layer, 2] == 0.0 and a["copy_score"][layer, 2] == 0.0
    assert s["offset_heads"][0] == {"name": name, "offset": shift, "value": 1.0}
    assert s["top_family_offset"][0] == {"name": name, "value": 1.0}
    text = " ".join(SUCCESSOR_HEADS.narrative(result))
    word = "predecessor" if shift == -1 else f"offset {shift:+d}"
    assert f"{name} ({word}, 100%)" in text, text
    assert "(successor heads)" not in text and "(copy heads)" not in text, text
    assert f"step is {shift:+d}" in text and f"{name} (100%)" in text, text  # scored for the family's own step


@pytest.mark.parametrize("seed", SEEDS)
def test_random_heads_give_no_offset_head(tmp_path, seed):
    model = _load(save_tiny_gpt2(tmp_path, n_layer=4, n_head=8, seed=seed))
    result = SUCCESSOR_HEADS.compute(model, _prompts(model, "yesterday_tomorrow"))
    assert result.arrays["modal_frequency"].size == 32
    assert result.summary["offset_heads"] == []
    assert (result.arrays["modal_frequency"] < result.summary["modal_threshold"]).all()
    assert "nothing stands out in the offset histogram" in " ".join(SUCCESSOR_HEADS.narrative(result))


def test_the_modal_threshold_is_six_of_seven_for_days_and_name_score_for_months():
    """5 of 7 for some one of 7 offsets happens to a random head with probability ~0.007: too often to name."""
    assert modal_threshold(7) == pytest.approx(6 / 7)
    assert modal_threshold(12) == pytest.approx(9 / 12)  # OFFSET_NAME_SCORE (5/7) is the floor


def test_layer_zero_reads_the_token_embedding_and_no_input_carries_the_position_embedding(tmp_path):
    model = _load(save_tiny_gpt2(tmp_path, seed=0))
    tokens = _prompts(model, "tomorrow").item_token_ids
    embedding, effective = item_inputs(model, tokens)
    assert torch.allclose(embedding, model.W_E[tokens], atol=TOL)  # no pos_embed(0) in it
    with model.hooks(fwd_hooks=[("hook_pos_embed", lambda act, hook: torch.zeros_like(act))]):
        _, cache = model.run_with_cache(tokens[:, None], names_filter=["blocks.0.hook_resid_post"])
    assert torch.allclose(effective, cache["blocks.0.hook_resid_post"][:, 0], atol=TOL)
    assert not torch.allclose(model.W_pos[0], torch.zeros_like(model.W_pos[0]), atol=1e-3)  # the check can fail
    grids = ov_grids(model, tokens)
    W_V, W_O = model.W_V[0], model.W_O[0]
    normed = model.blocks[0].ln1(embedding[:, None])[:, 0]
    head0 = (normed @ W_V[0] + model.b_V[0, 0]) @ W_O[0]
    head0 = head0 - head0.mean(-1, keepdim=True)
    assert torch.allclose(grids[0, 0], head0 @ model.W_U[:, tokens], atol=1e-4)
