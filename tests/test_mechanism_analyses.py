"""The mechanism analyses on models whose answer is known: planted successor / copy heads, a planted two-head
circuit, random controls; and every batched sweep equal to one forward per intervention (fp32, 1e-4)."""

from __future__ import annotations

import pytest
import torch
from conftest import save_tiny_gpt2
from planted_circuit import save_planted_gpt2
from planted_two_step import MOVER, SUCCESSOR, save_two_step_gpt2

from analyses import engine as engine
from analyses.ablations import ABLATIONS_ANALYSIS
from analyses.circuit import CIRCUIT
from analyses.methods import paths
from analyses.methods.circuit_search import circuit_rows
from analyses.methods.mechanism import ABLATIONS, node_hook, nodes
from analyses.methods.node_ablations import ablation_rows
from analyses.methods.ov_circuits import effective_embeddings, has_position_embedding, head_ov_outputs
from analyses.path_patching import PATH_PATCHING
from analyses.successor_heads import SUCCESSOR_HEADS

pytestmark = pytest.mark.tiny  # planted and random checkpoints built in the session

TOL = 1e-4
SEEDS = (0, pytest.param(1, marks=pytest.mark.slow))  # the second seed runs in the full suite (docs/testing.md)
PLANTED = (1, 2)  # layer, head of tests/planted_circuit.py's default
RANDOM_SCORE_BOUND = 0.1  # |mean score over 32 random heads − 1/7|: ~4 standard errors of 224 Bernoulli(1/7) picks


def _load(folder):
    from report.run.model import load_model

    return load_model(str(folder), device="cpu").model


def _prompts(model, family="tomorrow"):
    from report.run.families import build_prompt_set
    from report.run.families_file import load_family_specs

    return build_prompt_set(load_family_specs()[family], model.tokenizer, model.cfg.default_prepend_bos)


@pytest.fixture(scope="module", params=SEEDS)
def planted(request, tmp_path_factory):
    model = _load(save_planted_gpt2(tmp_path_factory.mktemp("planted"), seed=request.param))
    return model, _prompts(model)


@pytest.fixture(scope="module", params=SEEDS)
def copy_model(request, tmp_path_factory):
    model = _load(save_planted_gpt2(tmp_path_factory.mktemp("copy"), seed=request.param, shift=0))
    return model, _prompts(model)


@pytest.fixture(scope="module", params=SEEDS)
def two_step(request, tmp_path_factory):
    model = _load(save_two_step_gpt2(tmp_path_factory.mktemp("two-step"), seed=request.param))
    return model, _prompts(model)


@pytest.fixture(scope="module")
def planted_seed0(tmp_path_factory):
    """One seed is enough where the test compares two computations of the same numbers."""
    model = _load(save_planted_gpt2(tmp_path_factory.mktemp("planted0")))
    return model, _prompts(model)


@pytest.fixture(scope="module")
def two_step_seed0(tmp_path_factory):
    model = _load(save_two_step_gpt2(tmp_path_factory.mktemp("two-step0")))
    return model, _prompts(model)


@pytest.fixture(scope="module")
def gemma(tmp_path_factory, tokenizer):
    from test_patching import _tiny_gemma3

    model = _tiny_gemma3(tmp_path_factory.mktemp("gemma"), tokenizer)
    return model, _prompts(model)


# ---- successor heads ----------------------------------------------------------------------------------------------


def test_planted_next_day_head_has_successor_score_one_and_copy_score_zero(planted):
    result = SUCCESSOR_HEADS.compute(*planted)
    layer, head = PLANTED
    assert result.arrays["successor_score"][layer, head] == 1.0
    assert result.arrays["copy_score"][layer, head] == 0.0
    assert result.summary["top_successor"][0] == {"name": f"L{layer}H{head}", "value": 1.0}
    assert any("L1H2 (100%)" in s for s in SUCCESSOR_HEADS.narrative(result))


def test_planted_copy_head_has_copy_score_one_and_successor_score_zero(copy_model):
    result = SUCCESSOR_HEADS.compute(*copy_model)
    layer, head = PLANTED
    assert result.arrays["copy_score"][layer, head] == 1.0
    assert result.arrays["successor_score"][layer, head] == 0.0
    assert result.summary["top_copy"][0]["name"] == f"L{layer}H{head}"
    assert not any("successor heads)" in s for s in SUCCESSOR_HEADS.narrative(result))


@pytest.mark.parametrize("seed", SEEDS)
def test_random_heads_score_near_chance(tmp_path, seed):
    model = _load(save_tiny_gpt2(tmp_path, n_layer=4, n_head=8, seed=seed))
    result = SUCCESSOR_HEADS.compute(model, _prompts(model))
    chance = 1 / 7
    assert result.arrays["successor_score"].size == 32
    assert abs(result.arrays["successor_score"].mean() - chance) < RANDOM_SCORE_BOUND
    assert abs(result.arrays["copy_score"].mean() - chance) < RANDOM_SCORE_BOUND


@pytest.mark.parametrize("which", ["gpt2", pytest.param("gemma", marks=pytest.mark.slow)])
def test_each_heads_ov_uses_its_own_key_value_group(which, planted_seed0, gemma):
    """What the OV maths says head h writes from x equals the model's own attention on a one-token sequence (where
    every head attends to that token), read at hook_z: for GQA this checks the W_V group of every head."""
    model, prompts = planted_seed0 if which == "gpt2" else gemma
    tokens = prompts.item_token_ids
    x = effective_embeddings(model, tokens)  # = resid_pre of layer 1 on the one-token sequence, no position embedding
    no_position = [("hook_pos_embed", lambda act, hook: torch.zeros_like(act))] if has_position_embedding(model) else []
    with model.hooks(fwd_hooks=no_position):
        _, cache = model.run_with_cache(tokens[:, None], names_filter=["blocks.1.attn.hook_z"])
    z = cache["blocks.1.attn.hook_z"][:, 0]  # [n, H, d_head]
    expected = torch.einsum("nhe,hed->hnd", z, model.W_O[1])
    assert torch.allclose(head_ov_outputs(model, x, 1), expected, atol=TOL)


# ---- ablations ------------------------------------------------------------------------------------------------------


@pytest.mark.slow
@pytest.mark.parametrize("which", ["planted", pytest.param("gemma", marks=pytest.mark.slow)])
def test_batched_ablations_equal_one_forward_per_ablation(which, planted_seed0, gemma):
    model, prompts = planted_seed0 if which == "planted" else gemma
    node_list = nodes(model.cfg.n_layers, model.cfg.n_heads)
    names = sorted({node_hook(n) for n in node_list})
    base = engine.collect_base(model, prompts.clean_tokens, names)
    _, corrupted = model.run_with_cache(prompts.corrupted_tokens, names_filter=names)
    rows = ablation_rows(node_list, base.cache, corrupted)
    assert len(rows) == len(ABLATIONS) * len(node_list)
    final, _ = engine.run_rows(model, base, rows, chunk_rows=3 * prompts.n_prompts)  # several chunks
    checked = list(range(0, len(rows), 4))  # every kind and layer (rows are kind-major, 5 nodes a layer): faster
    assert {i // len(node_list) for i in checked} == set(range(len(ABLATIONS)))
    looped, _ = engine.looped_rows(model, prompts.clean_tokens, [rows[i] for i in checked])
    batched = engine.final_logits(model, final[checked])
    diff = torch.stack([_ld(b, prompts) - _ld(lo, prompts) for b, lo in zip(batched, looped)])
    assert diff.abs().max().item() < TOL


@pytest.mark.slow
def test_ablating_the_planted_head_removes_the_answer_and_is_direct(planted):
    model, prompts = planted
    result = ABLATIONS_ANALYSIS.compute(model, prompts)
    top = result.summary["mean_ablation_top"][0]
    assert top["name"] == "L1H2"
    assert top["value"] < -0.9 * result.summary["clean_logit_diff_mean"]  # the mean head output favours no day
    assert top["direct"] == pytest.approx(top["value"], rel=0.05)  # last-layer head: all of its effect is direct
    assert result.summary["off_diagonal"] == []
    assert result.summary["corruption"] == prompts.corruption


# ---- circuit and faithfulness ----------------------------------------------------------------------------------


def test_keeping_every_node_is_the_clean_run_and_ablating_every_node_equals_the_loop(planted_seed0):
    model, prompts = planted_seed0
    node_list = nodes(model.cfg.n_layers, model.cfg.n_heads)
    hooks = sorted({node_hook(n) for n in node_list})
    base = engine.collect_base(model, prompts.clean_tokens, hooks)
    means = {h: base.cache[h].mean(0) for h in hooks}
    rows = circuit_rows(node_list, [set(range(len(node_list))), set(), {4, 6}], means)
    assert rows[0].edits == ()
    final, _ = engine.run_rows(model, base, rows)
    batched = engine.final_logits(model, final)
    looped, _ = engine.looped_rows(model, prompts.clean_tokens, rows)
    assert (batched - looped).abs().max().item() < TOL * batched.abs().max().item()
    clean = model(prompts.clean_tokens)[:, -1]
    assert (batched[0] - clean).abs().max().item() < TOL * clean.abs().max().item()


@pytest.mark.slow
def test_planted_head_alone_is_a_faithful_circuit(planted):
    model, prompts = planted
    result = CIRCUIT.compute(model, prompts)
    s, f = result.summary, result.arrays["faithfulness_exact"]
    assert s["informative"]
    assert f[0] == pytest.approx(0.0, abs=TOL) and f[-1] == pytest.approx(1.0, abs=1e-3)  # all ablated / all kept
    assert s["minimal_circuit"] == ["L1H2"]
    assert s["minimal_circuit_faithfulness"] >= 0.9
    assert s["faithfulness_auc"] > 0.9  # one node of ten is enough: the curve jumps to 1 at n = 1
    assert s["corruption"] == prompts.corruption
    assert "L1H2" in " ".join(CIRCUIT.narrative(result))
    diagram = next(f.figure for f in CIRCUIT.figures(result) if f.id == "circuit-diagram")
    assert diagram.layout.title.text.startswith("The minimal circuit")
    assert result.labels["edge_sender"] == ["L1H2"] and result.labels["edge_receiver"] == ["logits"]
    assert result.arrays["edge_weight"][0] >= 0.9  # the planted head writes the answer directly


# ---- path patching -------------------------------------------------------------------------------------------------


def reference_caches(model, prompts) -> tuple:
    """(clean cache, corrupted cache, corrupted final logits) of every head's z and every MLP output."""
    names = [f"blocks.{layer}.{h}" for layer in range(model.cfg.n_layers) for h in ("attn.hook_z", "hook_mlp_out")]
    _, clean = model.run_with_cache(prompts.clean_tokens.to(model.W_U.device), names_filter=names)
    corrupted_logits, corrupted = model.run_with_cache(prompts.corrupted_tokens.to(model.W_U.device),
                                                       names_filter=names)
    return clean, corrupted, corrupted_logits[:, -1]


def _reference_path(model, prompts, sender, receiver, caches=None) -> torch.Tensor:
    """[B] LD − LD_corrupted, one path, by freezing every other component (two full forwards, no deltas)."""
    L = model.cfg.n_layers
    clean, corrupted, corrupted_final = caches or reference_caches(model, prompts)
    ls, hs = sender
    kind, lr, unit = receiver if receiver[0] != "logits" else ("logits", L, None)

    def put(act, hook, value, index=()):
        act = act.clone()
        act[(slice(None), *index)] = value
        return act

    hooks = [(f"blocks.{ls}.attn.hook_z",
              lambda act, hook: put(act, hook, clean[f"blocks.{ls}.attn.hook_z"][:, :, hs], (slice(None), hs)))]
    for layer in range(ls + 1, lr + (kind == "mlp")):  # heads between sender and receiver (and the MLP's own layer)
        hooks.append((f"blocks.{layer}.attn.hook_z", lambda act, hook, n=f"blocks.{layer}.attn.hook_z":
                      put(act, hook, corrupted[n])))
    for layer in range(ls, lr):  # MLPs from the sender's layer up to the receiver's
        hooks.append((f"blocks.{layer}.hook_mlp_out", lambda act, hook, n=f"blocks.{layer}.hook_mlp_out":
                      put(act, hook, corrupted[n])))
    store = {}
    target = {"q": "attn.hook_q", "k": "attn.hook_k", "v": "attn.hook_v", "mlp": "hook_mlp_out"}.get(kind)
    if target:
        name = f"blocks.{lr}.{target}"
        hooks.append((name, lambda act, hook: store.setdefault("x", act.clone())))
    logits = model.run_with_hooks(prompts.corrupted_tokens.to(model.W_U.device), fwd_hooks=hooks)[:, -1]
    if kind != "logits":
        index = () if kind == "mlp" else (slice(None), unit)
        value = store["x"][(slice(None), *index)]
        logits = model.run_with_hooks(prompts.corrupted_tokens.to(model.W_U.device),
                                      fwd_hooks=[(name, lambda act, hook: put(act, hook, value, index))])[:, -1]
    return _ld(logits, prompts) - _ld(corrupted_final, prompts)


def _ld(final_logits: torch.Tensor, prompts) -> torch.Tensor:
    rows = torch.arange(len(final_logits))
    return final_logits[rows, prompts.answer_ids] - final_logits[rows, prompts.corrupted_answer_ids]


@pytest.mark.slow  # over 5 CPU seconds (docs/testing.md)
@pytest.mark.parametrize("which", ["two_step", "gemma"])
def test_batched_path_patching_equals_freezing_every_other_path(which, two_step_seed0, gemma):
    model, prompts = two_step_seed0 if which == "two_step" else gemma
    senders = [(0, 1), (0, 3), (1, 0)]
    ps = paths.setup(model, prompts)
    effects = paths.path_effects(model, ps, senders, chunk_rows=4 * prompts.n_prompts)
    L, n_kv = model.cfg.n_layers, effects["v"].shape[2]
    caches = reference_caches(model, prompts)
    checked = 0
    for k, (ls, hs) in enumerate(senders):
        receivers = [("logits",)] + [("mlp", lr, None) for lr in range(ls, L)]
        receivers += [(kind, lr, u) for lr in range(ls + 1, L) for kind, n in (("q", model.cfg.n_heads),
                      ("k", n_kv), ("v", n_kv)) for u in range(n)]
        for receiver in receivers[k % 2::2]:  # every other receiver, alternating between senders: keeps it fast
            ref = _reference_path(model, prompts, (ls, hs), receiver, caches)
            got = _batched_effect(effects, k, receiver)
            assert (got - ref).abs().max().item() < TOL, (senders[k], receiver)
            checked += 1
    assert checked >= 15  # logits, every MLP and q / k / v receivers of every sender


def _batched_effect(effects: dict, k: int, receiver: tuple) -> torch.Tensor:
    if receiver[0] == "logits":
        return effects["logits"][k]
    if receiver[0] == "mlp":
        return effects["mlp"][k, receiver[1]]
    return effects[receiver[0]][k, receiver[1], receiver[2]]


@pytest.mark.slow
def test_path_patching_finds_the_planted_edge_and_nothing_else(two_step):
    model, prompts = two_step
    result = PATH_PATCHING.compute(model, prompts)
    s, a = result.summary, result.arrays
    mover, succ = f"L{MOVER[0]}H{MOVER[1]}", f"L{SUCCESSOR[0]}H{SUCCESSOR[1]}"
    assert s["informative"] and {mover, succ} <= {e["name"] for e in s["senders"]}
    top = {(e["sender"], e["receiver"]) for e in s["top_edges"] if abs(e["value"]) >= s["name_threshold"]}
    assert top == {(mover, f"{succ}.v"), (succ, "logits")}
    k = result.labels["senders"].index(mover)
    assert a["v"][k, SUCCESSOR[0], SUCCESSOR[1]] == pytest.approx(1.0, abs=0.05)  # the whole gap
    assert abs(a["logits"][k]) < s["name_threshold"]  # the mover writes nothing the unembedding reads
    assert any(f"{mover}'s output is read by {succ}'s value" in t for t in PATH_PATCHING.narrative(result))


@pytest.mark.slow
def test_per_corruption_summaries_name_their_corruption(two_step):
    model, prompts = two_step
    if "relation" not in prompts.corruptions:
        pytest.skip("the family has no relation twin")
    result = PATH_PATCHING.compute(model, prompts.with_corruption("relation"))
    assert result.summary["corruption"] == "relation"
    # the two-step model only moves and shifts the named day: it cannot tell tomorrow from yesterday, so the clean
    # and relation-corrupted runs give the same logits and nothing may be normalised or named
    assert not result.summary["informative"]
    assert not any("restores" in t for t in PATH_PATCHING.narrative(result))


# ---- narratives from saved numbers (no model) ------------------------------------------------------------------


def test_a_large_circuit_is_listed_in_part_with_the_grid_step_it_falls_in():
    """41 nodes is the first grid size past 35 that reaches the target: the text must not claim 41 is minimal."""
    import numpy as np

    from analyses.circuit import LISTED
    from analyses.common.types import Result
    from analyses.methods.circuit_search import size_grid

    names = [f"L{i}H0" for i in range(41)]
    summary = {"n_nodes": 90, "corruption": "day", "informative": True, "ranking_informative": True, "target": 0.8,
               "minimal_circuit": names, "minimal_circuit_faithfulness": 0.81, "minimal_circuit_reaches_target": True,
               "faithfulness_auc": 0.69, "faithfulness_auc_attribution": 0.68, "gap_reason": "",
               "items_above_chance": True, "ablation_text": "resample-ablated from the paired twin", "named": True,
               "n_notable": 41, "helpful_ablations": [], "heldout_faithfulness_by_template": [],
               "minimal_circuit_faithfulness_by_template": [], "ranking_gap_state": "informative",
               "ranking_gap_reason": ""}
    grid = size_grid(90)
    assert 35 in grid and 41 in grid and grid.index(41) == grid.index(35) + 1
    text = " ".join(CIRCUIT.narrative(Result(summary=summary, arrays={"grid": np.array(grid)})))
    assert "41 (the size grid steps from 35 to 41 here) nodes" in text, text
    assert names[LISTED - 1] in text and names[LISTED] not in text and f"and {41 - LISTED} more" in text


def test_a_path_against_the_answer_is_not_said_to_restore_a_negative_share():
    from analyses.common.types import Result

    summary = {"senders": [{"name": "L11H3", "value": -0.29}], "corruption": "day", "informative": True,
               "name_threshold": 0.1,
               "top_edges": [{"name": "L11H3 → logits", "sender": "L11H3", "receiver": "logits", "value": -0.21}],
               "items_above_chance": True, "measured": "direct edges by denoising", "recompute_top_edges": [],
               "noising_top_edges": [], "edge_sums": [], "answer_informative": False, "answer_gap_reason": "x",
               "and_paths": [], "or_paths": [], "both_paths": []}
    text = " ".join(PATH_PATCHING.narrative(Result(summary=summary)))
    assert "moves the LD away from the clean run by 21% of the gap" in text and "-21%" not in text, text
