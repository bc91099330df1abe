"""Direct logit attribution and the logit lens decompose the model's own logit difference exactly (fp32)."""

from __future__ import annotations

import pytest
import torch

from analyses.common.metrics import answer_pair, logit_diff
from analyses.dla_heads import DLA_HEADS
from analyses.dla_layers import DLA_LAYERS
from analyses.logit_lens import LOGIT_LENS
from analyses.methods import attribution

TOLERANCE = 1e-4
METRICS = list(attribution.METRIC_LABELS)


def model_logit_diff(model, prompts, metric):
    final = model(prompts.clean_tokens)[:, -1, :].float()
    return logit_diff(final, *answer_pair(prompts, metric))


@pytest.mark.slow
@pytest.mark.parametrize("metric", METRICS)
def test_layer_attributions_plus_bias_reconstruct_the_logit_difference(tiny_model, tiny_prompt_sets, metric):
    assert tiny_prompt_sets
    for prompts in tiny_prompt_sets.values():
        result = DLA_LAYERS.compute(tiny_model, prompts)
        reconstructed = result.arrays[metric].sum(axis=0) + result.arrays[f"{metric}_bias"]
        expected = model_logit_diff(tiny_model, prompts, metric).numpy()
        assert abs(reconstructed - expected).max() <= TOLERANCE
        assert result.summary[f"{metric}_reconstruction_error_max"] <= TOLERANCE


def test_the_bias_term_is_not_trivially_zero(tiny_model, tiny_prompt_sets):
    """The tiny checkpoint has random biases, so the reconstruction test exercises the b_U term."""
    result = DLA_LAYERS.compute(tiny_model, tiny_prompt_sets["tomorrow"])
    assert abs(result.arrays["copy_bias"]).max() > 1e-3


@pytest.mark.parametrize("metric", METRICS)
def test_head_attributions_sum_to_their_layers_attention_attribution(tiny_model, tiny_prompt_sets, metric):
    prompts = tiny_prompt_sets["tomorrow"]
    heads = torch.from_numpy(DLA_HEADS.compute(tiny_model, prompts).arrays[metric])  # [layers, heads, batch]
    layers = DLA_LAYERS.compute(tiny_model, prompts)
    labels = layers.labels["components"]
    _, cache = attribution.run_clean_with_cache(tiny_model, prompts)
    directions, _ = attribution.metric_terms(tiny_model, prompts, metric)
    for layer in range(tiny_model.cfg.n_layers):
        # The layer's output bias b_O is part of attn_out but of no head.
        b_O = tiny_model.b_O[layer].expand(prompts.n_prompts, -1)[None]
        bias_term = attribution.project(cache, b_O, directions)[0]
        attn = torch.from_numpy(layers.arrays[metric][labels.index(f"{layer}_attn_out")])
        assert torch.allclose(heads[layer].sum(dim=0) + bias_term, attn, atol=TOLERANCE)
    assert tiny_model.b_O.abs().max() > 1e-3  # the bias is really there to be accounted for


@pytest.mark.slow
@pytest.mark.parametrize("metric", METRICS)
def test_logit_lens_last_point_equals_the_models_logit_difference(tiny_model, tiny_prompt_sets, metric):
    assert tiny_prompt_sets
    for prompts in tiny_prompt_sets.values():
        lens = LOGIT_LENS.compute(tiny_model, prompts).arrays[metric]  # [points, batch]
        assert lens.shape[0] == 2 * tiny_model.cfg.n_layers + 1
        expected = model_logit_diff(tiny_model, prompts, metric).numpy()
        assert abs(lens[-1] - expected).max() <= TOLERANCE


def test_logit_lens_points_are_running_sums_of_the_layer_attributions(tiny_model, tiny_prompt_sets):
    prompts = tiny_prompt_sets["day_after"]
    lens = LOGIT_LENS.compute(tiny_model, prompts).arrays["copy"]
    layers = DLA_LAYERS.compute(tiny_model, prompts)
    parts, bias = layers.arrays["copy"], layers.arrays["copy_bias"]
    # components: embed, pos_embed, then attn/mlp per layer; lens: before layer 0, after attn 0, before layer 1, ...
    running = parts[:2].sum(axis=0) + bias
    assert abs(lens[0] - running).max() <= TOLERANCE
    for i, component in enumerate(parts[2:], start=1):
        running = running + component
        assert abs(lens[i] - running).max() <= TOLERANCE


def test_dla_heads_rankings_follow_the_summary_contract(tiny_model, tiny_prompt_sets):
    summary = DLA_HEADS.compute(tiny_model, tiny_prompt_sets["tomorrow"]).summary
    positive, negative = [h["value"] for h in summary["top_positive"]], [h["value"] for h in summary["top_negative"]]
    assert positive == sorted(positive, reverse=True) and negative == sorted(negative)
    assert all(set(h) == {"name", "value"} for h in summary["top_positive"] + summary["top_negative"])
    assert all(h["name"].startswith("L") and "H" in h["name"] for h in summary["top_positive"])
