"""Edge-level circuits (analyses/engine/, analyses/edge_circuits.py): a planted two-route model's edges are
found with their receivers, a random model names none, batched edge runs equal full forwards one edge at a time on
every architecture, and the exported MIB circuit JSON validates and loads back."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from planted_edges import PLANTED_EDGES, save_two_route_gpt2
from test_architectures import ARCHITECTURES, save_tiny

from analyses import engine as ee
from analyses.common.metrics import answer_pair
from analyses.edge_circuits import EDGE_CIRCUITS
from analyses.methods.edge_circuit_grid import FRACTIONS

pytestmark = pytest.mark.tiny  # tests here build tiny or planted checkpoints in the session (no-model tier: not these)

PERFECT_CPR = FRACTIONS[-1] - FRACTIONS[0]  # faithfulness 1 at every size
TOLERANCE = 1e-4  # logits, float32 (the suite's identity tolerance)


def prompt_set(model, family: str = "tomorrow"):
    from report.run.families import build_prompt_set
    from report.run.families_file import load_family_specs

    return build_prompt_set(load_family_specs()[family], model.tokenizer, model.cfg.default_prepend_bos)


def load(folder):
    from report.run.model import load_model

    return load_model(str(folder), device="cpu").model


@pytest.fixture(scope="module")
def planted(tmp_path_factory):
    model = load(save_two_route_gpt2(tmp_path_factory.mktemp("two-route")))
    prompts = prompt_set(model)
    return model, prompts, EDGE_CIRCUITS.compute(model, prompts)


@pytest.mark.slow
def test_planted_edges_top_the_eap_ig_ranking_with_their_receivers(planted):
    _, _, result = planted
    s = result.summary
    assert s["informative"]
    top = [e["name"] for e in s["top_edges"]]
    assert set(top[:len(PLANTED_EDGES)]) == set(PLANTED_EDGES)  # q for the query route, v for the value route
    next_best = max(abs(e["value"]) for e in s["top_edges"][len(PLANTED_EDGES):])
    assert next_best < 0.05  # everything else is noise: under 5% of the gap
    assert {e["name"] for e in s["named_edges"]} == set(PLANTED_EDGES)  # named by exact patching, nothing else


@pytest.mark.slow
def test_planted_edges_top_exact_edge_patching_of_every_edge(planted):
    model, prompts, _ = planted
    es = ee.edge_set(model)
    pos, neg = answer_pair(prompts, "clean_vs_corrupted")
    pair = ee.make_pair(model, prompts.corrupted_tokens, prompts.clean_tokens, pos, neg)
    edges = [(int(u), int(v)) for u, v in zip(*np.nonzero(es.valid))]
    assert len(edges) == es.n_edges > 100
    change = (ee.run_edges(model, pair, es, ee.single_edge_masks(es, edges)).mean(-1)
              - ee.pair_ld(model, pair).mean())
    gap = (ee.pair_ld(model, pair, twin=True) - ee.pair_ld(model, pair)).mean()
    fraction = (change / gap).numpy()
    order = np.argsort(-np.abs(fraction))
    assert {es.edge_name(*edges[i]) for i in order[:len(PLANTED_EDGES)]} == set(PLANTED_EDGES)
    assert abs(fraction[order[len(PLANTED_EDGES)]]) < 0.01
    by_name = {es.edge_name(*e): f for e, f in zip(edges, fraction)}
    # the two routes split the gap: each route's two edges carry the same share, and the shares add up to it
    assert by_name["input->a0.h1<v>"] == pytest.approx(1.0, abs=0.02)
    assert by_name["a0.h1->a1.h3<v>"] == pytest.approx(by_name["a1.h3->logits"], abs=0.02)
    assert by_name["a0.h1->a1.h2<q>"] == pytest.approx(by_name["a1.h2->logits"], abs=0.02)
    assert by_name["a0.h1->a1.h3<v>"] + by_name["a0.h1->a1.h2<q>"] == pytest.approx(1.0, abs=0.05)
    assert min(by_name["a0.h1->a1.h3<v>"], by_name["a0.h1->a1.h2<q>"]) > 0.15  # both routes matter


@pytest.mark.slow
def test_planted_circuit_is_faithful_near_the_maximum_and_beats_random(planted):
    _, prompts, result = planted
    s, a = result.summary, result.arrays
    assert s["cpr_greedy"] >= 0.9 * PERFECT_CPR and s["cmd_greedy"] <= 0.1 * PERFECT_CPR
    assert s["cpr_connected"] >= 0.9 * PERFECT_CPR
    assert s["cpr_random"] <= 0.5 * s["cpr_greedy"]
    assert a["faithfulness_greedy"][-1] == pytest.approx(1.0, abs=TOLERANCE)  # every edge kept: the clean run
    # the smallest faithful circuit is the planted one (5 edges: the grid's 5% = 6 edges holds it)
    assert s["diagram_edges_kept"] <= 2 * len(PLANTED_EDGES) and s["diagram_faithfulness"] >= 0.95
    # discovered on every template but the last, the circuit holds on the last
    assert len(prompts.templates) > 1 and s["heldout_template"] == len(prompts.templates) - 1
    assert s["cpr_heldout"] >= 0.9 * PERFECT_CPR


@pytest.mark.slow
def test_eap_ig_is_closer_to_exact_than_eap_on_the_planted_model(planted):
    s = planted[2].summary
    assert s["eap_ig_top_overlap"] == 1.0
    assert abs(1 - s["eap_ig_slope"]) < abs(1 - s["eap_slope"])


@pytest.mark.slow
@pytest.mark.parametrize("seed", [0, 1])
def test_random_model_names_no_edge(tmp_path, seed):
    from conftest import save_tiny_gpt2

    model = load(save_tiny_gpt2(tmp_path / "random", seed=seed))
    result = EDGE_CIRCUITS.compute(model, prompt_set(model))
    s = result.summary
    assert not s["informative"] and s["named_edges"] == [] and "diagram_fraction" not in s
    # faithfulness is a ratio to a gap that is noise here: not evaluated, no CPR or CMD stated
    assert not any(k.startswith(("cpr_", "cmd_")) for k in s)
    assert not any(k.startswith("faithfulness_") for k in result.arrays)
    assert result.summary["top_edges"] and len(result.documents) == len(FRACTIONS)  # the scores and export remain
    assert any("nothing" in sentence or "no edge" in sentence for sentence in EDGE_CIRCUITS.narrative(result))


# ---- the engine: batched equals one edge at a time, on every architecture ----------------------------------------


def sample_edges(es: ee.EdgeSet) -> list[tuple[int, int]]:
    """One edge per (sender kind, receiver kind, same layer or not), so every code path is exercised."""
    seen, out = set(), []
    for u, v in zip(*np.nonzero(es.valid)):
        (skind, sl, _), (rkind, rl, _) = es.senders[u], es.receivers[v]
        key = (skind, rkind, rl == sl)
        if key not in seen:
            seen.add(key)
            out.append((int(u), int(v)))
    return out


@pytest.mark.slow
@pytest.mark.parametrize("architecture", list(ARCHITECTURES))
def test_batched_edge_patching_equals_one_edge_at_a_time(tmp_path, tokenizer, architecture):
    model = load(save_tiny(tmp_path / architecture, architecture, tokenizer))
    prompts = prompt_set(model)
    pos, neg = answer_pair(prompts, "clean_vs_corrupted")
    n = 7  # one template
    pair = ee.make_pair(model, prompts.corrupted_tokens[:n], prompts.clean_tokens[:n], pos[:n], neg[:n])
    es = ee.edge_set(model)
    assert es.parallel == (architecture == "gpt_neox")
    edges = sample_edges(es)
    kinds = {(es.senders[u][0], es.receivers[v][0]) for u, v in edges}
    assert {("input", "q"), ("head", "k"), ("head", "v"), ("mlp", "mlp"), ("head", "logits")} <= kinds
    same_layer_head_mlp = any(es.senders[u][0] == "head" and es.receivers[v] == ("mlp", es.senders[u][1], 0)
                              for u, v in edges)
    assert same_layer_head_mlp != es.parallel  # parallel blocks have no head -> same-layer MLP edge
    batched = ee.run_edges(model, pair, es, ee.single_edge_masks(es, edges))
    looped = ee.looped_edge_patching(model, pair, es, edges)
    assert (batched - looped).abs().max().item() <= TOLERANCE
    assert (batched - ee.pair_ld(model, pair)).abs().max().item() > 10 * TOLERANCE  # the edges did something
    # every edge removed is the twin run; none removed is the run itself
    every = torch.as_tensor(es.valid)[None]
    ends = ee.run_edges(model, pair, es, torch.cat([every, torch.zeros_like(every)]))
    assert (ends[0] - ee.pair_ld(model, pair, twin=True)).abs().max().item() <= TOLERANCE
    assert (ends[1] - ee.pair_ld(model, pair)).abs().max().item() <= TOLERANCE


@pytest.mark.parametrize("architecture", ["gpt2", "llama"])
def test_receivers_are_projected_without_the_rest_of_the_block(tmp_path, tokenizer, architecture):
    """The q / k / v receivers' call stops once the block has fired its q, k and v hooks (nothing after them runs for
    the copies), and gives the values a whole block call gives."""
    from functools import partial

    from analyses.engine import edge_runs

    model = load(save_tiny(tmp_path / architecture, architecture, tokenizer))
    prompts = prompt_set(model)
    pos, neg = answer_pair(prompts, "clean_vs_corrupted")
    pair = ee.make_pair(model, prompts.corrupted_tokens[:7], prompts.clean_tokens[:7], pos[:7], neg[:7])
    es = ee.edge_set(model)
    layer, B = 1, 7
    copies = [(0, v) for v, (kind, rl, _) in enumerate(es.receivers) if rl == layer and kind in ee.QKV]
    inputs = [pair.x.cache[f"blocks.{layer}.hook_resid_pre"] * (1 + 0.1 * k) for k in range(len(copies))]
    fired, whole = [], {}
    later = [(f"blocks.{layer}.hook_attn_out", lambda a, hook: fired.append(hook.name) or a),
             (f"blocks.{layer}.hook_mlp_out", lambda a, hook: fired.append(hook.name) or a)]
    with model.hooks(fwd_hooks=later):
        projected = edge_runs._receiver_projections(model, pair, es, layer, copies, inputs, B, torch.device("cpu"))
    assert fired == [] and set(projected) == set(ee.QKV)

    def keep(act, hook, kind):
        whole[kind] = act
        return act

    with model.hooks(fwd_hooks=[(f"blocks.{layer}.attn.hook_{k}", partial(keep, kind=k)) for k in ee.QKV]):
        edge_runs.run_block(model, pair.x, layer, torch.cat(inputs))
    for kind, (dst, value, _) in projected.items():
        rows = [k for k, (_, v) in enumerate(copies) if es.receivers[v][0] == kind]
        expected = torch.cat([whole[kind][k * B:(k + 1) * B, :, es.receivers[copies[k][1]][2]] for k in rows])
        torch.testing.assert_close(value, expected, atol=0, rtol=0)
        assert torch.equal(dst, torch.arange(B).repeat(len(rows)))


def test_grouped_query_heads_share_their_key_value_receivers(tmp_path, tokenizer):
    model = load(save_tiny(tmp_path / "llama", "llama", tokenizer))
    es = ee.edge_set(model)
    assert es.n_kv == 2 < es.n_heads == 4
    per_layer = [r for r in es.receivers if r[1] == 1]
    assert [k for k, _, _ in per_layer].count("q") == 4 and [k for k, _, _ in per_layer].count("k") == 2


@pytest.mark.slow
def test_one_ig_step_is_eap(planted):
    model, prompts, _ = planted
    es = ee.edge_set(model)
    pos, neg = answer_pair(prompts, "clean_vs_corrupted")
    pair = ee.make_pair(model, prompts.corrupted_tokens[:7], prompts.clean_tokens[:7], pos[:7], neg[:7])
    eap, ig1 = ee.attribution_scores(model, pair, es, 1)
    assert torch.equal(eap, ig1) and eap.abs().max() > 0.1


# ---- export -----------------------------------------------------------------------------------------------------


@pytest.mark.slow
def test_exported_circuits_validate_and_load_back(planted, tmp_path):
    from report.store.mib_circuit import load_circuit
    from report.store.schema import validate

    _, _, result = planted
    assert len(result.documents) == len(FRACTIONS)
    name = "circuit-eap-ig-greedy-0.05.json"
    document = result.documents[name]
    assert validate(document, "mib_circuit") == []
    path = tmp_path / name
    path.write_text(json.dumps(document), encoding="utf-8")
    circuit = load_circuit(path)
    assert set(circuit.edges_in_graph[:len(PLANTED_EDGES)]) == set(PLANTED_EDGES)
    assert len(circuit.edges_in_graph) == result.summary["edges_kept"][FRACTIONS.index(0.05)]
    assert {"input", "a0.h1", "a1.h2", "a1.h3", "logits"} <= set(circuit.nodes_in_graph)
    assert circuit.cfg["edge_fraction"] == 0.05


def test_grouped_query_export_round_trips(tmp_path, tokenizer):
    from analyses.methods.mib_circuit import circuit_document, matrices
    from report.store.mib_circuit import load_circuit

    es = ee.edge_set(load(save_tiny(tmp_path / "llama", "llama", tokenizer)))
    scores = np.where(es.valid, np.random.default_rng(0).normal(size=es.valid.shape), 0.0)
    kept = es.valid & (np.abs(scores) > 1.0)
    document = circuit_document(es, scores, kept, {"method": "test", "edge_fraction": 0.5})
    back_scores, back_kept = matrices(es, document)
    assert np.array_equal(back_kept, kept) and np.allclose(back_scores[es.valid], scores[es.valid])
    path = tmp_path / "c.json"
    path.write_text(json.dumps(document), encoding="utf-8")
    groups = load_circuit(path).kv_groups()
    assert len(groups) == es.n_edges  # each shared key/value edge folds back to one
    assert max(len(names) for names in groups.values()) == es.n_heads // es.n_kv


def test_a_file_that_is_not_a_circuit_is_refused(tmp_path):
    from report.errors import UserError
    from report.store.mib_circuit import load_circuit

    path = tmp_path / "bad.json"
    path.write_text(json.dumps({"cfg": {}, "nodes": {}, "edges": {"a->b": 1}}), encoding="utf-8")
    with pytest.raises(UserError, match="bad.json"):
        load_circuit(path)
