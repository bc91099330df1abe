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
  attribution_sweeps.py  attribution patching of the same sweeps (one forward, one backward)
  sweep_runs.py          `run_sweeps` / `sweep_results`: one call for an analysis, as numpy
  edges.py               the edge graph and the pair of runs (senders' differences are rows)
  edge_runs.py           runs with removed edges, many circuits per block call (own layout, same chunks)
  edge_scores.py         EAP and EAP-IG of every edge
  edge_reference.py      one edge at a time by full forwards (the reference)

Not an analysis: nothing here is registered, and nothing here imports an analysis or `report/`.
"""
