"""An edge circuit as MIB's circuit JSON (the format of Hanna et al.'s EAP-IG library, which MIB's circuit track
reads), so another tool can load our circuits. Not an analysis: `analyses.edge_circuits` builds the documents.

    {"cfg": {"n_layers", "n_heads", "n_key_value_heads", "parallel_attn_mlp", "model", "family", "corruption",
             "method", "edge_fraction", "score_unit"},
     "nodes": {"input" | "a{L}.h{H}" | "m{L}" | "logits": {"in_graph": bool, "score": float | null}},
     "edges": {"<sender>-><receiver>": {"score": float, "in_graph": bool}}}

Edge names: "a0.h1->a1.h3<v>", "input->m0", "m1->logits"; an attention receiver carries its input in angle brackets
(<q>, <k>, <v>). Grouped-query models (several query heads per key/value head) share one key/value receiver per
key/value head in our graph; MIB names k/v edges per query head, so each shared edge is written once per query
head of its group with the same score and in_graph, and `cfg.n_key_value_heads` says so (the loader folds them
back). A node is in the graph when an edge in the graph touches it; its score is the sum of |score| of its edges
in the graph (null for a node outside it). The schema ships as report/store/schemas/mib_circuit.schema.json and
`report.store.mib_circuit.load_circuit` reads a file back.
"""

from __future__ import annotations

import numpy as np

from analyses.engine.edges import QKV, EdgeSet


def node_name(es: EdgeSet, kind: str, layer: int, index: int) -> str:
    return {"input": "input", "head": f"a{layer}.h{index}", "mlp": f"m{layer}", "logits": "logits"}[kind]


def receiver_entries(es: EdgeSet, v: int) -> list[tuple[str, str]]:
    """[(node, MIB receiver suffix)] of receiver v: one per query head that reads it."""
    kind, layer, unit = es.receivers[v]
    if kind == "logits":
        return [("logits", "")]
    if kind == "mlp":
        return [(f"m{layer}", "")]
    if kind == "q":
        return [(f"a{layer}.h{unit}", "<q>")]
    group = es.n_heads // es.n_kv
    return [(f"a{layer}.h{h}", f"<{kind}>") for h in range(unit * group, (unit + 1) * group)]


def circuit_document(es: EdgeSet, scores: np.ndarray, in_graph: np.ndarray, cfg: dict) -> dict:
    """scores [U, V] (any unit; NaN-free), in_graph [U, V] bool -> MIB circuit JSON (a dict)."""
    edges, touched = {}, {}
    for u, v in zip(*np.nonzero(es.valid)):
        sender = es.sender_name(int(u))
        kept = bool(in_graph[u, v])
        for node, suffix in receiver_entries(es, int(v)):
            edges[f"{sender}->{node}{suffix}"] = {"score": float(scores[u, v]), "in_graph": kept}
            if kept:
                for name in (sender, node):
                    touched[name] = touched.get(name, 0.0) + abs(float(scores[u, v]))
    nodes = {}
    for kind, layer, index in es.senders:
        name = node_name(es, kind, layer, index)
        nodes[name] = {"in_graph": name in touched, "score": touched.get(name)}
    nodes["logits"] = {"in_graph": "logits" in touched, "score": touched.get("logits")}
    return {"cfg": {"n_layers": es.n_layers, "n_heads": es.n_heads, "n_key_value_heads": es.n_kv,
                    "parallel_attn_mlp": es.parallel, **cfg}, "nodes": nodes, "edges": edges}


def matrices(es: EdgeSet, document: dict) -> tuple[np.ndarray, np.ndarray]:
    """The inverse of `circuit_document` for our graph: (scores [U, V], in_graph [U, V]) from a document's edges."""
    scores = np.zeros(es.valid.shape)
    in_graph = np.zeros(es.valid.shape, dtype=bool)
    for u, v in zip(*np.nonzero(es.valid)):
        node, suffix = receiver_entries(es, int(v))[0]  # a shared k/v edge: its first query head stands for all
        entry = document["edges"][f"{es.sender_name(int(u))}->{node}{suffix}"]
        scores[u, v], in_graph[u, v] = entry["score"], entry["in_graph"]
    return scores, in_graph


__all__ = ["QKV", "circuit_document", "matrices", "node_name", "receiver_entries"]
