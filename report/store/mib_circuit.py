"""Read an edge circuit back from MIB's circuit JSON (written by the edge_circuits analysis as circuit-*.json).

    from report.store.mib_circuit import load_circuit
    circuit = load_circuit("runs/<id>/<model>/tomorrow/edge_circuits/circuit-eap-ig-greedy-0.05.json")
    circuit.edges_in_graph     # ["input->a0.h1<v>", "a0.h1->a1.h3<v>", ...], largest |score| first
    circuit.scores["a1.h3->logits"]

The file is checked against report/store/schemas/mib_circuit.schema.json first; a file that is not valid JSON or does
not match the schema is refused with a UserError naming it. Grouped-query models write each shared key/value edge
once per query head of its group (same score); `kv_groups` folds them back to one edge per key/value head.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path

from report.errors import UserError
from report.store.schema import validate

SCHEMA = "mib_circuit"


@dataclass(frozen=True)
class Circuit:
    cfg: dict
    scores: dict[str, float]  # edge name -> score
    in_graph: dict[str, bool]  # edge name -> in the circuit
    nodes_in_graph: list[str]

    @property
    def edges_in_graph(self) -> list[str]:
        return sorted((e for e, kept in self.in_graph.items() if kept), key=lambda e: -abs(self.scores[e]))

    def kv_groups(self) -> dict[str, list[str]]:
        """Edge names with each grouped key/value receiver named once (a{L}.kv{u}<k>) -> the per-query-head names."""
        group = self.cfg["n_heads"] // self.cfg["n_key_value_heads"]
        out: dict[str, list[str]] = {}
        for name in self.scores:
            match = re.fullmatch(r"(.+)->a(\d+)\.h(\d+)<([kv])>", name)
            key = name if match is None or group == 1 else \
                f"{match[1]}->a{match[2]}.kv{int(match[3]) // group}<{match[4]}>"
            out.setdefault(key, []).append(name)
        return out


def load_circuit(path: str | Path) -> Circuit:
    path = Path(path)
    try:
        document = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as err:
        raise UserError(f"cannot read circuit file {path}: {err}") from None
    problems = validate(document, SCHEMA)
    if problems:
        raise UserError(f"circuit file {path} does not match {SCHEMA}.schema.json: {problems[0]}")
    edges = document["edges"]
    return Circuit(cfg=document["cfg"], scores={k: float(v["score"]) for k, v in edges.items()},
                   in_graph={k: bool(v["in_graph"]) for k, v in edges.items()},
                   nodes_in_graph=[k for k, v in document["nodes"].items() if v["in_graph"]])
