"""The intervention engine shared by the analyses: run the model with some activations replaced, batched.

One engine (`rows`): a `Row` is a tuple of `Edit`s (replace or add to part of one activation); rows join the batch
at their first edited block, run up the model's own blocks in chunks that halve on out-of-memory, and return the
final position. Everything that intervenes is built on it:

  chunks.py              chunk sizes from free memory; `Chunker`: halve a chunk on out-of-memory and retry
  blocks.py              calling a block directly with the base run's masks and rotary tables, tiled over rows
  readout.py             final position -> logits (all, or the two answer columns)
  rows.py                Edit, Row, Base; `map_rows` (the one place rows run), `run_rows`, `looped_rows` (reference)
  prefixes.py            `run_rows_sharing_prefixes`: rows with the same edits below a layer share those blocks
  sweeps.py              activation patching: Patch, Runs, SWEEPS; each cell a Row (`patch_row`); `looped_sweep`
  attribution_patching.pyattribution patching of the same sweeps (one forward, one backward)
  sweep_runs.py          `run_sweeps` / `sweep_results`: one call for an analysis, as numpy
  edges.py               the edge graph and the pair of runs (senders' differences are rows)
  edge_runs.py           runs with removed edges, many circuits per block call (own layout, same chunks)
  edge_scores.py         EAP and EAP-IG of every edge
  edge_reference.py      one edge at a time by full forwards (the reference)

Not an analysis: nothing here is registered, and nothing here imports an analysis or `report/`. The names below are
the engine's public surface (`from analyses import engine`, then `engine.run_rows`); the modules are its parts.
"""

from analyses.engine.attribution_patching import attribution_sweeps
from analyses.engine.chunks import (
    CPU_TOKENS_PER_CHUNK,
    MEMORY_FRACTION,
    OUT_OF_MEMORY,
    Chunker,
    map_chunks,
    release_cached_memory,
)
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
from analyses.engine.prefixes import run_rows_sharing_prefixes
from analyses.engine.readout import final_answer_logits, final_logit_diff, final_logits
from analyses.engine.rows import Base, Edit, Row, collect_base, looped_rows, map_rows, run_rows
from analyses.engine.sweep_runs import run_sweeps, sweep_results
from analyses.engine.sweeps import (
    HEAD_SWEEPS,
    POSITION_SWEEPS,
    SWEEPS,
    Patch,
    Runs,
    Sweep,
    auto_chunk_rows,
    collect_runs,
    exact_sweeps,
    hook_name,
    looped_sweep,
    patch_everything,
    patch_row,
    patched_logit_diffs,
    sweep_patches,
)

__all__ = [
    "CPU_TOKENS_PER_CHUNK", "HEAD_SWEEPS", "MEMORY_FRACTION", "OUT_OF_MEMORY", "POSITION_SWEEPS", "QKV", "SWEEPS",
    "Base", "Chunker", "Edit", "EdgeSet", "Pair", "Patch", "Row", "Runs", "Sweep", "attribution_scores",
    "attribution_sweeps", "auto_chunk_rows", "collect_base", "collect_runs", "edge_set", "exact_sweeps",
    "final_answer_logits", "final_logit_diff", "final_logits", "hook_name", "hook_names", "looped_edge_patching",
    "looped_rows", "looped_sweep", "make_pair", "map_chunks", "map_rows", "pair_ld", "patch_everything",
    "patch_row", "patched_logit_diffs", "receiver_gradients", "release_cached_memory", "run_edges", "run_rows",
    "run_rows_sharing_prefixes", "run_sweeps", "sender_differences", "single_edge_masks", "sweep_patches",
    "sweep_results",
]
