"""Properties of exact (batched) and attribution patching, on tiny random GPT-2 and Gemma-3 checkpoints."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from analyses import engine as core
from analyses.common import bootstrap, stats, thresholds
from analyses.patching_heads import PATCHING_HEADS
from analyses.patching_positions import PATCHING_POSITIONS

pytestmark = pytest.mark.tiny  # tests here build tiny or planted checkpoints in the session (no-model tier: not these)

FAMILY = "tomorrow"
TOL = 1e-4  # fp32: batched and looped patching must agree to this (brief: within 1e-4)


@pytest.fixture(scope="module")
def prompts(tiny_prompt_sets):
    return tiny_prompt_sets[FAMILY]


@pytest.fixture(scope="module")
def runs(tiny_model, prompts):
    return core.collect_runs(tiny_model, prompts)


@pytest.fixture(scope="module")
def exact(tiny_model, runs):
    return core.exact_sweeps(tiny_model, runs)


@pytest.fixture(scope="module")
def attribution(tiny_model, runs):
    return core.attribution_sweeps(tiny_model, runs)


def normalised(ld: torch.Tensor, runs: core.Runs) -> np.ndarray:
    return stats.normalise_per_prompt(ld.numpy(), runs.clean_ld.numpy(), runs.corrupted_ld.numpy())


def headline(ld: torch.Tensor, runs: core.Runs) -> np.ndarray:
    return stats.normalise_mean(ld.numpy(), runs.clean_ld.numpy(), runs.corrupted_ld.numpy())


# ---- batched equals looped ---------------------------------------------------------------------------------------


@pytest.mark.slow
@pytest.mark.parametrize("sweep", list(core.SWEEPS))
def test_batched_sweep_equals_one_forward_per_patch(tiny_model, runs, exact, sweep):
    looped = core.looped_sweep(tiny_model, runs, sweep)
    assert exact[sweep].shape == looped.shape == (runs.n_layers, runs.n_units(sweep), runs.n_prompts)
    assert (exact[sweep] - looped).abs().max().item() < TOL  # the patched logit difference, per prompt
    assert np.abs(headline(exact[sweep], runs) - headline(looped, runs)).max() < TOL  # the normalised mean


@pytest.mark.slow  # over 5 CPU seconds (docs/testing.md)
def test_interpolated_patch_batched_equals_looped(tiny_model, runs):
    batched = core.exact_sweeps(tiny_model, runs, ("z", "resid_pre"), scale=0.5)
    for sweep in ("z", "resid_pre"):
        assert (batched[sweep] - core.looped_sweep(tiny_model, runs, sweep, scale=0.5)).abs().max().item() < TOL


@pytest.mark.slow  # a chunked sweep equals the whole one also in test_memory.py (fast tier)
def test_chunk_size_does_not_change_results(tiny_model, runs, exact):
    small = core.exact_sweeps(tiny_model, runs, chunk_rows=3 * runs.n_prompts)  # 3 patches per block call
    for sweep in core.SWEEPS:
        assert (small[sweep] - exact[sweep]).abs().max().item() < 1e-5


@pytest.mark.slow  # the rotary, grouped-query variant of the GPT-2 equivalence above: full suite
def test_batched_patching_matches_looped_on_rotary_grouped_query_model(tmp_path, tokenizer):
    """Gemma-3 blocks need the mask and rotary embeddings the model passes them; v has fewer (kv) heads."""
    model = _tiny_gemma3(tmp_path, tokenizer)
    from report.run.families import build_prompt_set
    from report.run.families_file import load_family_specs

    prompts = build_prompt_set(load_family_specs()[FAMILY], model.tokenizer, model.cfg.default_prepend_bos)
    gemma_runs = core.collect_runs(model, prompts)
    assert gemma_runs.n_units("v") < gemma_runs.n_units("z")
    batched = core.exact_sweeps(model, gemma_runs)
    for sweep in core.SWEEPS:
        looped = core.looped_sweep(model, gemma_runs, sweep, layers=(1,))  # the middle layer keeps this test fast
        assert (batched[sweep][1] - looped[1]).abs().max().item() < TOL


# ---- the two ends of the scale -------------------------------------------------------------------------------------


def test_patching_every_position_of_the_residual_stream_restores_exactly_one(tiny_model, runs):
    S = runs.corrupted_tokens.shape[1]
    patches = [core.Patch(layer, tuple(("resid_pre", p) for p in range(S))) for layer in range(runs.n_layers)]
    assert patches
    ld = core.patched_logit_diffs(tiny_model, runs, patches)  # [layers, B]
    # In logits first: the patched run is the clean run, whatever the size of the gap.
    np.testing.assert_allclose(ld.numpy(), np.broadcast_to(runs.clean_ld.numpy(), ld.shape), atol=1e-5)
    # Normalised, the tolerance is relative to the gap: a random tiny model's gap can be ~1e-4 logits, and a
    # fixed tolerance on its ratio would measure rounding, not the maths (it failed on another machine).
    scale = float(np.abs(runs.clean_ld.numpy()).max() + np.abs(runs.corrupted_ld.numpy()).max())
    gap = float(np.mean(runs.clean_ld.numpy() - runs.corrupted_ld.numpy()))
    assert gap != 0
    np.testing.assert_allclose(headline(ld, runs), 1.0, atol=1e-5 * scale / abs(gap))


@pytest.mark.slow
def test_patching_nothing_gives_zero(tiny_model, runs):
    empty = core.patched_logit_diffs(tiny_model, runs, [core.Patch(layer, ()) for layer in range(runs.n_layers)])
    np.testing.assert_allclose(empty.numpy(), np.broadcast_to(runs.corrupted_ld.numpy(), empty.shape), atol=1e-5)
    unmoved = core.exact_sweeps(tiny_model, runs, scale=0.0)  # every patch writes the corrupted value back
    for sweep, ld in unmoved.items():
        assert np.abs(ld.numpy() - runs.corrupted_ld.numpy()).max() < 1e-5, sweep


def test_exact_patching_never_runs_blocks_before_the_patched_layer(tiny_model, runs):
    calls = []
    handles = [block.register_forward_pre_hook(lambda m, a, i=i: calls.append(i)) for i, block in
               enumerate(tiny_model.blocks)]
    try:
        core.patched_logit_diffs(tiny_model, runs, [core.Patch(1, (("z", 0),))])
    finally:
        for handle in handles:
            handle.remove()
    assert calls == [1]


def test_bridge_start_at_layer_still_runs_the_earlier_blocks(tiny_model, runs):
    """Why the sweeps call the blocks themselves: TransformerBridge's start_at_layer recomputes blocks 0..k-1."""
    calls = []
    handles = [block.register_forward_pre_hook(lambda m, a, i=i: calls.append(i)) for i, block in
               enumerate(tiny_model.blocks)]
    try:
        tiny_model(runs.corrupted["blocks.1.hook_resid_pre"], start_at_layer=1)
    finally:
        for handle in handles:
            handle.remove()
    assert calls == [0, 1]


# ---- a head that writes nothing ------------------------------------------------------------------------------------


def test_head_with_zero_output_weights_has_no_effect(tiny_checkpoint, prompts):
    from report.run.model import load_model

    model = load_model(str(tiny_checkpoint)).model
    layer, head = 1, 2
    d_head = model.cfg.d_head
    W = model.blocks[layer].attn.o.original_component.weight  # GPT-2 Conv1D: [n_heads * d_head, d_model]
    W[head * d_head:(head + 1) * d_head] = 0
    assert model.blocks[layer].attn.W_O[head].abs().max() == 0
    head_runs = core.collect_runs(model, prompts)
    patched = core.exact_sweeps(model, head_runs, core.HEAD_SWEEPS)
    unpatched = core.exact_sweeps(model, head_runs, core.HEAD_SWEEPS, scale=0.0)  # same batches, nothing moved
    attribution = core.attribution_sweeps(model, head_runs, core.HEAD_SWEEPS)
    others = [h for h in range(model.cfg.n_heads) if h != head]
    for sweep in core.HEAD_SWEEPS:
        assert torch.equal(patched[sweep][layer, head], unpatched[sweep][layer, head]), sweep
        assert (patched[sweep][layer, head] - head_runs.corrupted_ld).abs().max().item() < 1e-6, sweep
        assert attribution[sweep][layer, head].abs().max().item() == 0, sweep
        moved = (patched[sweep][layer, others] - unpatched[sweep][layer, others]).abs().max().item()
        assert moved > 1e-6, f"{sweep}: the other heads should have an effect, or the test proves nothing"


# ---- attribution patching --------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def model64(tiny_checkpoint):
    """The tiny model in float64, so that finite differences measure the maths, not fp32 rounding."""
    from report.run.model import load_model

    return load_model(str(tiny_checkpoint)).model.to(torch.float64)


@pytest.fixture(scope="module")
def runs64(model64, prompts):
    return core.collect_runs(model64, prompts)


@pytest.mark.slow
@pytest.mark.parametrize("sweep", list(core.SWEEPS))
def test_attribution_is_the_limit_of_exact_patching_as_the_patch_shrinks(model64, runs64, sweep):
    """(LD(corrupted + eps (clean - corrupted)) - LD(corrupted)) / eps -> attribution, with error O(eps)."""
    attribution = core.attribution_sweeps(model64, runs64, (sweep,))[sweep]
    base = core.exact_sweeps(model64, runs64, (sweep,), scale=0.0)[sweep]
    errors = []
    for eps in (1e-1, 1e-2):
        moved = core.exact_sweeps(model64, runs64, (sweep,), scale=eps)[sweep]
        errors.append(((moved - base) / eps - attribution).abs().max().item())
    scale = attribution.abs().max().item()
    assert scale > 0
    assert errors[1] < 0.15 * errors[0] + 1e-9 * scale  # first order: a 10x smaller patch, a ~10x smaller error
    assert errors[1] < 0.01 * scale


def test_attribution_restores_grad_mode_and_leaves_parameters_without_grad(tiny_model, runs, attribution):
    """No process-wide state: the caller's grad mode survives the backward pass, whichever it was."""
    assert attribution
    for mode in (False, True):
        with torch.set_grad_enabled(mode):
            core.attribution_sweeps(tiny_model, runs, ("z",))
            assert torch.is_grad_enabled() == mode
    assert all(p.grad is None for p in tiny_model.parameters())
    assert all(not t.requires_grad for t in attribution.values())


# ---- statistics ----------------------------------------------------------------------------------------------------


def test_bootstrap_interval_is_deterministic_and_contains_the_estimate():
    rng = np.random.default_rng(1)
    clean, corrupted = 2 + rng.normal(size=7), rng.normal(size=7)
    ld = corrupted + 0.5 * (clean - corrupted) + 0.1 * rng.normal(size=(4, 7))
    low, high = bootstrap.bootstrap_ci(ld, clean, corrupted)
    again = bootstrap.bootstrap_ci(ld, clean, corrupted)
    estimate = stats.normalise_mean(ld, clean, corrupted)
    assert np.array_equal(low, again[0]) and np.array_equal(high, again[1])
    assert np.all(low <= estimate) and np.all(estimate <= high)


def test_normalisation_maps_corrupted_to_zero_and_clean_to_one():
    clean, corrupted = np.array([3.0, 1.0]), np.array([-1.0, 0.5])
    assert np.allclose(stats.normalise_per_prompt(corrupted, clean, corrupted), 0)
    assert np.allclose(stats.normalise_per_prompt(clean, clean, corrupted), 1)
    assert np.allclose(stats.normalise_mean(np.stack([corrupted, clean]), clean, corrupted), [0, 1])


# ---- the analyses' contract ------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def head_result(tiny_model, prompts):
    return PATCHING_HEADS.compute(tiny_model, prompts)


@pytest.fixture(scope="module")
def position_result(tiny_model, prompts):
    return PATCHING_POSITIONS.compute(tiny_model, prompts)


@pytest.mark.slow
def test_top_heads_are_sorted_by_absolute_value_largest_first(head_result, tiny_model):
    top = head_result.summary["top_heads"]
    assert top
    assert all({"name", "value"} <= set(entry) for entry in top)
    assert all(entry["name"].startswith("L") and "H" in entry["name"] for entry in top)
    values = [abs(entry["value"]) for entry in top]
    assert values == sorted(values, reverse=True)
    z = head_result.arrays["z_exact"]
    assert values[0] == pytest.approx(np.abs(z).max())
    assert all(entry["ci_low"] <= entry["value"] <= entry["ci_high"] for entry in top)


@pytest.mark.slow
def test_position_tops_are_sorted_and_name_layer_and_position(position_result):
    for sweep in core.POSITION_SWEEPS:
        top = position_result.summary[f"{sweep}_top"]
        assert top
        values = [abs(entry["value"]) for entry in top]
        assert values == sorted(values, reverse=True)
        assert all(entry["name"].split(" ")[1].startswith("pos") for entry in top)


@pytest.mark.slow
@pytest.mark.parametrize("analysis", [PATCHING_POSITIONS, PATCHING_HEADS], ids=lambda a: a.name)
def test_result_is_flat_json_with_fixed_figure_ids_and_numeric_narrative(analysis, position_result, head_result):
    result = position_result if analysis is PATCHING_POSITIONS else head_result
    json.dumps(result.summary, allow_nan=False)
    json.dumps({"labels": result.labels, "widgets": result.widgets}, allow_nan=False)
    assert all(not isinstance(v, dict) and v is not None for v in result.summary.values())
    for sweep in (core.POSITION_SWEEPS if analysis is PATCHING_POSITIONS else core.HEAD_SWEEPS):
        # attribution vs exact is compared only where the gap is informative (a random tiny model's is not)
        assert (f"attribution_slope_{sweep}" in result.summary) == result.summary["normalised"]
    figures = analysis.figures(result)
    assert figures
    ids = [f.id for f in figures]
    assert len(set(ids)) == len(ids) and all(i.startswith(analysis.name) for i in ids)
    assert all(f.figure.layout.height for f in figures)
    assert ids == [f.id for f in analysis.figures(result)]
    sentences = analysis.narrative(result)
    assert sentences and all(isinstance(s, str) and s for s in sentences)
    # the definition states the normalisation formula and the rule that decides when it applies, verbatim
    assert stats.NORMALISATION in analysis.definition
    assert thresholds.RULES in analysis.definition


@pytest.mark.slow
def test_head_widgets_show_top_heads_of_each_layer_third(head_result, prompts):
    widgets = head_result.widgets
    assert widgets
    seq = len(prompts.str_tokens[0])
    for widget in widgets:
        assert widget["tokens"] == prompts.str_tokens[0]
        assert len(widget["attention"]) == len(widget["head_names"]) > 0
        assert all(len(head) == seq and all(len(row) == seq for row in head) for head in widget["attention"])
        assert all(abs(sum(row) - 1) < 1e-3 for head in widget["attention"] for row in head)


# ---- helpers ---------------------------------------------------------------------------------------------------------


def _tiny_gemma3(folder, tokenizer):
    """A 3-layer Gemma-3 (rotary, grouped-query attention, sliding window) with GPT-2's tokenizer."""
    from transformer_lens.model_bridge import TransformerBridge
    from transformers import Gemma3ForCausalLM, Gemma3TextConfig

    torch.manual_seed(0)
    config = Gemma3TextConfig(vocab_size=len(tokenizer), hidden_size=64, intermediate_size=128, num_hidden_layers=3,
                              num_attention_heads=4, num_key_value_heads=2, head_dim=16, max_position_embeddings=64,
                              sliding_window=4, bos_token_id=tokenizer.bos_token_id,
                              eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.eos_token_id)
    Gemma3ForCausalLM(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    model = TransformerBridge.boot_transformers(str(folder), device="cpu")
    # Rotary embeddings rule out refactoring W_Q W_K; the rest is the project's processing.
    model.enable_compatibility_mode(fold_ln=True, center_writing_weights=True, center_unembed=True,
                                    refactor_factored_attn_matrices=False, disable_warnings=True)
    return model.eval()


def test_position_summary_records_that_patching_everything_reproduces_the_clean_run(position_result):
    assert 0 <= position_result.summary["resid_pre_all_positions_layer0_max_abs_error"] < 1e-4


def test_attribution_agreement_sees_an_estimate_a_third_of_the_truth():
    """Pearson r is 1.00 for an estimate a third of the exact effects; slope and error must say so."""
    exact = np.random.default_rng(0).normal(size=(3, 4))
    made_up = stats.SweepStats(exact=exact, attribution=exact / 3, ci_low=exact, ci_high=exact,
                               exact_per_prompt=exact[..., None], attribution_per_prompt=exact[..., None] / 3,
                               normalised=True)
    agreement = stats.agreement(made_up)
    assert agreement["pearson"] == pytest.approx(1.0)
    assert agreement["slope"] == pytest.approx(1 / 3)
    assert agreement["mae"] == pytest.approx(np.abs(exact).mean() * 2 / 3)
    assert agreement["top_overlap"] == 1.0
    assert stats.agreement_summary("z", made_up)["attribution_slope_z"] == pytest.approx(1 / 3)
    assert stats.agreement_summary("z", stats.SweepStats(**{**made_up.__dict__, "normalised": False})) == {}


def test_position_narrative_states_the_machinery_check(position_result):
    assert any("reproduces the clean run to within" in sentence
               for sentence in PATCHING_POSITIONS.narrative(position_result))


def test_cluster_bootstrap_over_templates_covers_the_across_paraphrase_value_where_prompt_resampling_does_not():
    """Prompts are templates x items, and a template's prompts share its wording: when templates differ by ~0.15,
    resampling prompts as if independent gives intervals far too narrow for the across-paraphrase value (the issue
    measured ~40% coverage); resampling whole templates covers it most of the time. Fixed seeds: deterministic."""
    rng = np.random.default_rng(0)
    n_templates, n_items, truth, spread = 6, 7, 0.6, 0.15
    template = np.repeat(np.arange(n_templates), n_items)
    covered = {"prompts": 0, "templates": 0}
    n_sims = 150
    for sim in range(n_sims):
        per_template = truth + spread * rng.normal(size=n_templates)
        clean = 2.0 + 0.05 * rng.normal(size=template.size)
        corrupted = 0.05 * rng.normal(size=template.size)
        ld = (corrupted + per_template[template] * (clean - corrupted) + 0.02 * rng.normal(size=template.size))[None]
        for kind, clusters in (("prompts", None), ("templates", template)):
            low, high = bootstrap.bootstrap_ci(ld, clean, corrupted, n_resamples=300, seed=sim, clusters=clusters)
            covered[kind] += bool(low[0] <= truth <= high[0])
    assert covered["prompts"] / n_sims < 0.5
    assert covered["templates"] / n_sims > 0.7
