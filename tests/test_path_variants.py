"""Path patching labelled for what it is: direct edges by denoising; each sender's edges summed against its total;
the variant where MLPs recompute; noising beside denoising, with AND / OR paths. Planted models (two seeds), random
controls, and the batched MLP-recompute variant equal to one forward per path."""

from __future__ import annotations

import pytest
import torch
from conftest import save_tiny_gpt2
from planted_mlp import HEAD_A, HEAD_B, MOVER, save_and_or_gpt2, save_neuron_gpt2

from analyses.common.types import Result
from analyses.methods import paths
from analyses.path_patching import PATH_PATCHING

pytestmark = pytest.mark.tiny  # tests here build tiny or planted checkpoints in the session (no-model tier: not these)

SEEDS = (0, 1)
TOL = 1e-4
MOVER_NAME = f"L{MOVER[0]}H{MOVER[1]}"
NEW_SENTENCES = ("These are direct edges", "direct edges sum to", "With the MLPs recomputing", "Noising each path",
                 "AND structure", "OR structure", "Needed and sufficient")


def _load(folder):
    from report.run.model import load_model

    return load_model(str(folder), device="cpu").model


def _prompts(model):
    from report.run.families import build_prompt_set
    from report.run.families_file import load_family_specs

    return build_prompt_set(load_family_specs()["tomorrow"], model.tokenizer, model.cfg.default_prepend_bos)


@pytest.mark.slow
@pytest.mark.parametrize("seed", SEEDS)
def test_a_route_through_an_mlp_is_an_mlp_edge_directly_and_a_logits_edge_when_mlps_recompute(tmp_path, seed):
    """Mover head -> MLP0's next-day neurons -> logits: with every node in between frozen the mover's edge is MLP0;
    with MLPs recomputing it is the logits. Either way its edges add up to its total effect."""
    model = _load(save_neuron_gpt2(tmp_path, seed=seed))
    result = PATH_PATCHING.compute(model, _prompts(model))
    s = result.summary
    assert s["informative"]
    assert s["top_edges"][0]["sender"] == MOVER_NAME and s["top_edges"][0]["receiver"] == "MLP0"
    assert s["top_edges"][0]["value"] == pytest.approx(1.0, abs=0.05)
    k = result.labels["senders"].index(MOVER_NAME)
    assert abs(result.arrays["logits"][k]) < 0.05  # the mover writes nothing the unembedding reads
    assert (s["recompute_top_edges"][0]["sender"], s["recompute_top_edges"][0]["receiver"]) == (MOVER_NAME, "logits")
    assert s["recompute_top_edges"][0]["value"] == pytest.approx(1.0, abs=0.05)
    assert not any(e["receiver"].startswith("MLP") for e in s["recompute_top_edges"])
    sums = {e["name"]: e for e in s["edge_sums"]}
    assert sums[MOVER_NAME]["total"] == pytest.approx(1.0, abs=0.05)
    assert abs(sums[MOVER_NAME]["unexplained"]) < 0.02
    noised = s["noising_top_edges"][0]
    assert (noised["sender"], noised["receiver"]) == (MOVER_NAME, "MLP0")
    assert noised["value"] == pytest.approx(1.0, abs=0.05)
    text = " ".join(PATH_PATCHING.narrative(result))
    assert "These are direct edges by denoising" in text and f"{MOVER_NAME} → logits (+100%)" in text, text
    assert f"{MOVER_NAME}'s direct edges sum to 100% of the gap, within 10%" in text, text


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["and", "or"])
@pytest.mark.parametrize("seed", SEEDS)
def test_and_paths_and_or_paths_are_told_apart_by_noising_against_denoising(tmp_path, kind, seed):
    model = _load(save_and_or_gpt2(tmp_path, kind, seed=seed))
    s = PATH_PATCHING.compute(model, _prompts(model)).summary
    planted = {f"L{layer}H{head} → MLP0" for layer, head in (HEAD_A, HEAD_B)}
    other = "or" if kind == "and" else "and"
    assert s["answer_informative"]
    assert {e["name"] for e in s[f"{kind}_paths"]} == planted
    assert s[f"{other}_paths"] == []


@pytest.mark.slow
@pytest.mark.parametrize("seed", SEEDS)
def test_a_random_model_says_none_of_the_new_sentences(tmp_path, seed):
    model = _load(save_tiny_gpt2(tmp_path, seed=seed))
    result = PATH_PATCHING.compute(model, _prompts(model))
    assert not result.summary["informative"] and not result.summary["answer_informative"]
    assert result.summary["and_paths"] == result.summary["or_paths"] == result.summary["both_paths"] == []
    text = " ".join(PATH_PATCHING.narrative(result))
    assert not any(phrase in text for phrase in NEW_SENTENCES), text


def test_a_sender_whose_edges_fall_short_of_its_total_is_said_so():
    summary = {"senders": [{"name": "L3H1", "value": 0.6}], "corruption": "day", "informative": True,
               "name_threshold": 0.1,
               "top_edges": [{"name": "L3H1 → logits", "sender": "L3H1", "receiver": "logits", "value": 0.3}],
               "measured": "direct edges by denoising", "recompute_top_edges": [], "noising_top_edges": [],
               "edge_sums": [{"name": "L3H1", "total": 0.6, "edge_sum": 0.3, "unexplained": 0.3}],
               "answer_informative": False, "answer_gap_reason": "x", "and_paths": [], "or_paths": [],
               "both_paths": [], "items_above_chance": True}
    text = " ".join(PATH_PATCHING.narrative(Result(summary=summary)))
    assert "L3H1's direct edges sum to 30% of the gap against its total effect of 60%: +30% is carried by no single" \
           in text, text


@pytest.mark.slow
def test_the_batched_mlp_recompute_variant_equals_one_forward_per_path(tmp_path):
    """Reference: the corrupted run with the sender's clean z, every later head's z frozen at the corrupted run,
    MLPs free; for a q / k / v receiver, its input captured there and patched into a fresh corrupted run."""
    model = _load(save_neuron_gpt2(tmp_path))
    prompts = _prompts(model)
    senders = [(0, 0), (0, 3)]
    ps = paths.setup(model, prompts)
    effects = paths.path_effects(model, ps, senders, recompute_mlps=True, chunk_rows=3 * prompts.n_prompts)
    assert torch.isnan(effects["mlp"]).all()
    names = [f"blocks.{layer}.{h}" for layer in range(2) for h in ("attn.hook_z",)]
    _, clean = model.run_with_cache(prompts.clean_tokens, names_filter=names)
    corrupted_logits, corrupted = model.run_with_cache(prompts.corrupted_tokens, names_filter=names)

    def ld(logits):
        rows = torch.arange(len(logits))
        return logits[rows, prompts.answer_ids] - logits[rows, prompts.corrupted_answer_ids]

    base = ld(corrupted_logits[:, -1])
    checked = 0
    for k, (ls, hs) in enumerate(senders):
        def sender(act, hook, hs=hs, ls=ls):
            act = act.clone()
            act[:, :, hs] = clean[f"blocks.{ls}.attn.hook_z"][:, :, hs]
            return act

        frozen = [(f"blocks.{layer}.attn.hook_z", lambda act, hook, n=f"blocks.{layer}.attn.hook_z": corrupted[n])
                  for layer in range(ls + 1, 2)]
        store = {}
        capture = [(f"blocks.1.attn.hook_{x}", lambda act, hook, x=x, store=store: store.setdefault(x, act.clone()))
                   for x in ("q", "k", "v")]
        logits = model.run_with_hooks(prompts.corrupted_tokens, fwd_hooks=[(f"blocks.{ls}.attn.hook_z", sender),
                                                                           *frozen, *capture])[:, -1]
        assert (effects["logits"][k] - (ld(logits) - base)).abs().max().item() < TOL
        checked += 1
        for x in ("q", "k", "v"):
            for unit in range(store[x].shape[2]):
                def put(act, hook, x=x, unit=unit, store=store):
                    act = act.clone()
                    act[:, :, unit] = store[x][:, :, unit]
                    return act

                out = model.run_with_hooks(prompts.corrupted_tokens, fwd_hooks=[(f"blocks.1.attn.hook_{x}", put)])
                assert (effects[x][k, 1, unit] - (ld(out[:, -1]) - base)).abs().max().item() < TOL, (k, x, unit)
                checked += 1
    assert checked == 2 * (1 + 3 * 4)
