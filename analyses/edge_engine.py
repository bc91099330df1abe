"""Where the edge engine used to live: now `analyses.engine.edges`, `edge_runs`, `edge_scores`, `edge_reference`.

Kept as a re-export so that callers written against it keep working; new code imports from `analyses.engine.*`.
"""

from analyses.engine.edge_reference import looped_edge_patching
from analyses.engine.edge_runs import run_edges
from analyses.engine.edge_scores import attribution_scores, receiver_gradients
from analyses.engine.edges import (
    QKV,
    EdgeSet,
    Pair,
    edge_set,
    hook_names,
    make_pair,
    pair_ld,
    sender_differences,
    single_edge_masks,
)

__all__ = [
    "QKV", "EdgeSet", "Pair", "attribution_scores", "edge_set", "hook_names", "looped_edge_patching", "make_pair",
    "pair_ld", "receiver_gradients", "run_edges", "sender_differences", "single_edge_masks",
]
