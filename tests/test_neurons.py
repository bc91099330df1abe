"""Neurons on the answer path: a planted MLP whose neurons each fire for one day and write the next is found, neuron
by neuron; a random model studies nothing; neuron effects sum to the MLP's direct effect (GPT-2 and Gemma-3 norms)."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import save_tiny_gpt2
from planted_mlp import NEURONS as PLANTED_NEURONS
from planted_mlp import save_neuron_gpt2

from analyses.common.types import DAYS
from analyses.methods.attribution import metric_terms, project
from analyses.neurons import NEURONS, neuron_effects, role

pytestmark = pytest.mark.tiny  # tests here build tiny or planted checkpoints in the session (no-model tier: not these)

SEEDS = (0, 1)


def _load(folder):
    from report.run.model import load_model

    return load_model(str(folder), device="cpu").model


def _prompts(model, family="tomorrow"):
    from report.run.families import build_prompt_set
    from report.run.families_file import load_family_specs

    return build_prompt_set(load_family_specs()[family], model.tokenizer, model.cfg.default_prepend_bos)


@pytest.mark.slow
@pytest.mark.parametrize("seed", SEEDS)
def test_planted_next_day_neurons_are_found_each_mapping_its_day_to_the_next(tmp_path, seed):
    model = _load(save_neuron_gpt2(tmp_path, seed=seed))
    result = NEURONS.compute(model, _prompts(model))
    s, a = result.summary, result.arrays
    assert s["informative"] and [m["name"] for m in s["mlps"]] == ["MLP0"]
    top7 = s["neurons"][:7]
    assert {n["neuron"] for n in top7} == set(PLANTED_NEURONS)
    for n in top7:
        d = PLANTED_NEURONS.index(n["neuron"])
        assert (n["fires_for"], n["promotes"], n["offset"]) == (DAYS[d], DAYS[(d + 1) % 7], 1)
        assert n["value"] == pytest.approx(1 / 7, abs=0.03)  # each neuron carries the prompts of its own day
    assert all(abs(n["value"]) < 0.02 for n in s["neurons"][7:])
    assert np.sum(a["neuron_effect"][0, :7]) == pytest.approx(1.0, abs=0.05)
    by_k = {p["k"]: p for p in s["top_k_patching"]}
    assert by_k[1]["value"] == pytest.approx(1 / 7, abs=0.03)
    assert by_k[10]["value"] == pytest.approx(by_k[10]["whole"], abs=0.03) and by_k[10]["whole"] > 0.95
    text = " ".join(NEURONS.narrative(result))
    first = PLANTED_NEURONS.index(top7[0]["neuron"])
    assert f"maps {DAYS[first]} to {DAYS[(first + 1) % 7]} (the family's step, +1)" in text, text
    assert "5 of MLP0's named neurons each fire for one item" in text, text


@pytest.mark.slow
@pytest.mark.parametrize("seed", SEEDS)
def test_a_random_model_studies_no_mlp_and_names_no_neuron(tmp_path, seed):
    model = _load(save_tiny_gpt2(tmp_path, seed=seed))
    result = NEURONS.compute(model, _prompts(model))
    assert result.summary["mlps"] == [] and result.summary["neurons"] == []
    text = " ".join(NEURONS.narrative(result))
    assert "no MLP is studied" in text and "maps" not in text and "fire for one item" not in text, text


@pytest.mark.parametrize("which", ["gpt2", "gemma"])
def test_neuron_effects_sum_to_the_mlps_direct_effect(tmp_path, tokenizer, which):
    if which == "gpt2":
        model = _load(save_neuron_gpt2(tmp_path))
    else:
        from test_patching import _tiny_gemma3

        model = _tiny_gemma3(tmp_path, tokenizer)
    prompts = _prompts(model)
    # the planted MLP; the tiny Gemma's sliding window keeps the day out of layer 0's final position
    layer = 0 if which == "gpt2" else model.cfg.n_layers - 1
    effects = neuron_effects(model, prompts, layer)
    assert effects.shape == (model.W_out.shape[1],)
    name = f"blocks.{layer}.hook_mlp_out"
    _, clean = model.run_with_cache(prompts.clean_tokens)
    _, corrupted = model.run_with_cache(prompts.corrupted_tokens, names_filter=[name])
    change = (clean[name] - corrupted[name])[:, -1]  # [B, d]
    directions, _ = metric_terms(model, prompts, "clean_vs_corrupted")
    whole = project(clean, change[None], directions)[0].mean().item()
    assert abs(whole) > 1e-4  # the check can fail
    assert effects.sum() == pytest.approx(whole, rel=1e-3, abs=1e-5)


def test_a_neuron_is_described_by_what_it_fires_for_and_what_it_promotes():
    days = list(DAYS)
    one_day = np.array([0.0, 3.0, 0.1, 0.0, 0.2, 0.0, 0.0])  # fires for Tuesday
    promote = np.eye(7)
    assert role(one_day, promote[2], 1, days)["role"] == "maps Tuesday to Wednesday (the family's step, +1)"
    assert role(one_day, promote[1], 1, days)["role"] == "fires for Tuesday and promotes it"
    assert role(one_day, promote[0], 1, days)["role"] == "fires for Tuesday and promotes Monday (-1)"
    assert role(one_day, promote[0], -1, days)["offset"] == -1 and "step" in role(one_day, promote[0], -1, days)["role"]
    several = np.array([2.0, 1.8, 0.0, 0.0, 0.0, 0.0, 0.0])  # top beats second by 10% of the range: not one day
    described = role(several, promote[1], 1, days)
    assert described["role"] == "fires for several items"
    assert described["fires_for"] == "" and described["offset"] is None


@pytest.mark.slow
def test_figures_and_text_rebuild_from_saved_results(tmp_path):
    """`build` draws from saved results alone (arrays come back as float32): the planted neuron model's neurons
    and successor_heads sections, figures and text, rebuild from disk."""
    from analyses.successor_heads import SUCCESSOR_HEADS
    from report.store.results import load_result, save_result

    model = _load(save_neuron_gpt2(tmp_path / "model"))
    prompts = _prompts(model)
    for analysis, figure in ((NEURONS, "neurons-MLP0-by-item"), (SUCCESSOR_HEADS, "successor_heads-offset-histogram")):
        result = analysis.compute(model, prompts)
        save_result(tmp_path / analysis.name, result)
        loaded = load_result(tmp_path / analysis.name)
        assert [f.id for f in analysis.figures(loaded)] == [f.id for f in analysis.figures(result)]
        assert analysis.narrative(loaded) == analysis.narrative(result)
        assert figure in [f.id for f in analysis.figures(loaded)]
