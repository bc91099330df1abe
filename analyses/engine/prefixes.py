"""Rows that share a prefix: the same numbers as `rows.run_rows`, each block computed once per group of rows whose
edits so far are the same.

A circuit's grid has rows that ablate the same nodes in the early layers and differ only later (the top-n and
top-(n+1) circuits differ in one node). `run_rows` starts each row at its first edited layer, so such rows are
recomputed from there each. `run_rows_sharing_prefixes` runs, at each layer, one residual per *group* of rows whose
edits so far are the same, and splits a group where its rows' edits at that layer differ: a residual is computed
once up to the first layer where its rows differ. Rows with no edit so far are the base run itself and cost nothing.
Same numbers as `run_rows` (a test compares them), fewer block rows whenever rows share a prefix. Each layer's
groups run in chunks that halve on out-of-memory; the halved size carries over to the later layers.
"""

from __future__ import annotations

import contextlib
from collections import defaultdict
from functools import partial

import torch

from analyses.engine.blocks import resid_pre, run_block
from analyses.engine.chunks import Chunker, rows_per_call
from analyses.engine.rows import Base, Edit, Row, apply_edits


def _edit_key(edit: Edit) -> tuple:
    """Edits that write the same values in the same place have the same key. Values are compared by storage
    (the same tensor, or the same view of it: callers slice one mean per hook), never by reading them."""
    v = edit.value
    return (edit.hook, repr(edit.index), edit.add, v.data_ptr(), tuple(v.shape), v.stride(), v.dtype, v.device)


@torch.no_grad()
def run_rows_sharing_prefixes(model, base: Base, rows: list[Row], chunk_rows: int | None = None) -> torch.Tensor:
    """Final-position residual after the last block, [n_rows, B, d_model], as `run_rows(model, base, rows)[0]`."""
    if not rows:
        raise ValueError("run_rows_sharing_prefixes needs at least one row")
    B, n_layers = base.n_prompts, base.n_layers
    chunker = Chunker(max(1, (chunk_rows or rows_per_call(model, base.cache[resid_pre(0)], B)) // B))
    at = [defaultdict(list) for _ in rows]  # row -> layer -> its edits there
    for i, row in enumerate(rows):
        for edit in row.edits:
            at[i][edit.layer].append(edit)
    pristine = list(range(len(rows)))  # rows with no edit so far: their residual is the base run's
    groups: list[tuple[list[int], torch.Tensor]] = []  # (rows, residual entering this layer [B, S, d])
    for layer in range(n_layers):
        todo = []  # (rows, residual before the block, this layer's edits): one group's block input each
        for members, resid in [*groups, (pristine, None)]:
            parts = defaultdict(list)
            for i in members:
                parts[tuple(sorted(_edit_key(e) for e in at[i][layer]))].append(i)
            for key, part in parts.items():
                if resid is None and not key:
                    continue  # still the base run
                source = base.cache[resid_pre(layer)] if resid is None else resid
                todo.append((part, source, at[part[0]][layer]))
        pristine = [i for i in pristine if not at[i][layer]]
        groups = []
        for chunk, outs in chunker.map(todo, partial(_run_groups, model, base, layer)):
            groups += [(part, out) for (part, _, _), out in zip(chunk, outs)]
    final = torch.empty(len(rows), B, model.cfg.d_model, device=base.tokens.device)
    for members, resid in groups:
        final[members] = resid[:, -1].to(final.dtype)
    if pristine:
        final[pristine] = base.cache[f"blocks.{n_layers - 1}.hook_resid_post"][:, -1].to(final.dtype)
    return final


def _run_groups(model, base: Base, layer: int, chunk) -> list[torch.Tensor]:
    """Block `layer` on each group's residual with the group's edits at that layer; one block call for the chunk."""
    B = base.n_prompts
    resid = torch.cat([source for _, source, _ in chunk])  # [n * B, S, d]
    pre = resid_pre(layer)
    own = [(slot, e) for slot, (_, _, edits) in enumerate(chunk) for e in edits if e.hook == pre]
    resid = apply_edits(resid, None, own, B) if own else resid
    items = defaultdict(list)
    for slot, (_, _, edits) in enumerate(chunk):
        for edit in edits:
            if edit.hook != pre:
                items[edit.hook].append((slot, edit))
    hooks = [(name, partial(apply_edits, items=it, n_prompts=B)) for name, it in items.items()]
    with model.hooks(fwd_hooks=hooks) if hooks else contextlib.nullcontext():
        out = run_block(model, base, layer, resid)
    return list(out.split(B))
