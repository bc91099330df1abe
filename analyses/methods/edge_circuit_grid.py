"""MIB's grid of edge circuits: at each edge fraction, the circuits kept, run with the rest corrupted, and scored.

At each fraction f of FRACTIONS (Mueller et al. 2025) a circuit keeps the top max(1, round(f·E)) edges by |score|
(`greedy`), the same pruned to the edges on a path from the input to the logits (`logit_connected`), or every edge
between the top f of the nodes (`node_circuit`); `evaluate` runs the clean prompts with every removed edge carrying
its corrupted activation, and `cpr` / `cmd` are the areas MIB reports. `held_out` scores on every template but the
last and evaluates there. Not an analysis: `analyses.edge_circuits` reports them.
"""

from __future__ import annotations

import numpy as np
import torch

from analyses import engine as ee
from analyses.common.faithfulness import area, faithfulness
from analyses.common.metrics import answer_pair
from analyses.common.types import PromptSet
from analyses.methods.mechanism import numpy

FRACTIONS = (0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0)  # MIB's circuit sizes (fractions of edges)


def sizes(n_edges: int) -> list[int]:
    """Edges kept at each fraction of FRACTIONS (at least one)."""
    return [max(1, int(round(f * n_edges))) for f in FRACTIONS]


def greedy(es: ee.EdgeSet, scores: np.ndarray, k: int) -> np.ndarray:
    """[U, V] bool: the k edges with the largest |score|."""
    flat = np.where(es.valid, np.abs(scores), -np.inf).ravel()
    keep = np.zeros(flat.size, dtype=bool)
    keep[np.argsort(-flat, kind="stable")[:k]] = True
    return keep.reshape(scores.shape) & es.valid


def logit_connected(es: ee.EdgeSet, kept: np.ndarray) -> np.ndarray:
    """The edges of `kept` on a path from the input to the logits through kept edges (MIB's pruning)."""
    edges = [(ee_node(es.senders[u]), receiver_nodes(es, v), (u, v)) for u, v in zip(*np.nonzero(kept))]
    fed, reaches = {"input"}, {"logits"}
    changed = True
    while changed:  # a fixpoint: at most one pass per layer adds anything
        before = len(fed) + len(reaches)
        for sender, readers, _ in edges:
            if sender in fed:
                fed |= readers
            if readers & reaches:
                reaches.add(sender)
        changed = len(fed) + len(reaches) > before
    out = np.zeros_like(kept)
    for sender, readers, (u, v) in edges:
        out[u, v] = sender in fed and sender in reaches and bool(readers & reaches)
    return out


def ee_node(sender: tuple[str, int, int]) -> str:
    """A sender's node name: "input", "a<layer>.h<head>" or "m<layer>"."""
    kind, layer, index = sender
    return {"input": "input", "head": f"a{layer}.h{index}", "mlp": f"m{layer}"}[kind]


def receiver_nodes(es: ee.EdgeSet, v: int) -> set[str]:
    """The nodes receiver v feeds (a key/value head's k or v: every query head of its group)."""
    kind, layer, unit = es.receivers[v]
    if kind == "logits":
        return {"logits"}
    if kind == "mlp":
        return {f"m{layer}"}
    if kind == "q":
        return {f"a{layer}.h{unit}"}
    group = es.n_heads // es.n_kv
    return {f"a{layer}.h{h}" for h in range(unit * group, (unit + 1) * group)}


def node_circuit(es: ee.EdgeSet, node_scores: np.ndarray, fraction: float) -> np.ndarray:
    """[U, V] bool: every edge between the top `fraction` of the nodes (senders but the input) by |score|."""
    n = max(1, int(round(fraction * (len(es.senders) - 1))))
    order = np.argsort(-np.abs(node_scores[1:]), kind="stable")[:n] + 1
    kept_nodes = {"input", "logits"} | {ee_node(es.senders[u]) for u in order}
    senders_kept = np.array([ee_node(s) in kept_nodes for s in es.senders])
    receivers_kept = np.array([bool(receiver_nodes(es, v) & kept_nodes) for v in range(len(es.receivers))])
    return es.valid & senders_kept[:, None] & receivers_kept[None, :]


def cpr(curve: np.ndarray) -> float:
    """Circuit performance ratio: the area under the faithfulness curve over FRACTIONS (the last is 1: unscaled)."""
    return area(FRACTIONS, curve)


def cmd(curve: np.ndarray) -> float:
    """Circuit-model distance: the area between the faithfulness curve and 1."""
    return cpr(np.abs(1.0 - np.asarray(curve)))


def evaluate(model, es: ee.EdgeSet, clean, corrupted, pos, neg, circuits: list[np.ndarray]) -> np.ndarray:
    """Faithfulness [C] of each kept-edge set on these prompts (clean run, removed edges corrupted)."""
    pair = ee.make_pair(model, clean, corrupted, pos, neg)  # X = clean, Y = corrupted
    removed = torch.as_tensor(np.stack([es.valid & ~c for c in circuits]))
    ld = numpy(ee.run_edges(model, pair, es, removed))
    return faithfulness(ld, numpy(ee.pair_ld(model, pair)), numpy(ee.pair_ld(model, pair, twin=True)))


def held_out(model, prompts: PromptSet, es: ee.EdgeSet, per_prompt: np.ndarray):
    """(faithfulness [F] of greedy circuits scored on every template but the last (EAP-IG per prompt [U, V, B],
    averaged over those templates' prompts), evaluated on the last template's prompts; why not (""); the held-out
    template) — (None, reason, None) with a single template."""
    templates = sorted(set(prompts.template_index))
    if len(templates) < 2:
        return None, "one template: nothing to hold out", None
    held = templates[-1]
    t = np.asarray(prompts.template_index)
    pos, neg = answer_pair(prompts, "clean_vs_corrupted")
    d, h = (torch.as_tensor(np.nonzero(keep)[0]) for keep in (t != held, t == held))  # discover, held out
    discovered = per_prompt[:, :, d.numpy()].mean(-1)
    circuits = [greedy(es, discovered, k) for k in sizes(es.n_edges)]
    curve = evaluate(model, es, prompts.clean_tokens[h], prompts.corrupted_tokens[h], pos[h], neg[h], circuits)
    return curve, "", int(held)
