"""The one intervention engine: rows of edits on a base run, batched, in chunks that halve on out-of-memory.

Patching, ablations, path patching and circuits are the same operation (pyvene's one intervention behind every
intervention class): run from layer L on a batch whose rows carry different replacements. A `Row` is a tuple of
`Edit`s (replace or add to part of one activation, for every prompt); the patching sweeps (`analyses.engine.sweeps`)
build their cells as rows, ablations and circuits build theirs, and all of them run here.

Method. Rows are stacked along the batch dimension, slot-major (batch row = slot * B + prompt), so one block call
serves hundreds of rows. A row joins the batch at block L (its `layer`: the smallest layer of its edits, or its
`start`), starting from the base run's residual stream entering block L: blocks before L are never run for it, so
one chunk of rows at all layers costs one call per block, its batch growing layer by layer. Each block is the
model's own module (`analyses.engine.blocks`). Only the final position is returned; callers unembed what they need
(two answer columns or the whole vocabulary, `analyses.engine.readout`).

Chunks: rows sorted by layer, cut into chunks of at most chunk_rows sequences (default: from free memory,
`chunks.rows_per_call`); a chunk that runs out of memory is halved and retried (`chunks.Chunker`).
"""

from __future__ import annotations

import contextlib
from collections import defaultdict
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from functools import partial

import torch

from analyses.common.metrics import model_device
from analyses.engine.blocks import capture_block_args, hook_layer, resid_pre, run_block
from analyses.engine.chunks import Chunker, rows_per_call


@dataclass(frozen=True, eq=False)  # eq=False: tensors have no truth value, rows are compared by identity
class Edit:
    """Replace (add=True: add to) part of one activation, for every prompt of a row.

    hook: full hook name in block L ("blocks.3.attn.hook_z"); "blocks.L.hook_resid_pre" only for the row's own L.
    index: the part within one prompt's activation, batch axis left out: (slice(None), 2) is head 2 of hook_z at
           every position; () is the whole activation.
    value: [B, *part], or [*part] shared by every prompt (a mean over prompts).
    """

    hook: str
    index: tuple
    value: torch.Tensor
    add: bool = False

    @property
    def layer(self) -> int:
        return hook_layer(self.hook)


@dataclass(frozen=True, eq=False)
class Row:
    """One intervened run of the base prompts. It starts at block `layer`: `start` when given (a row with no edit
    that stands for the base run from that block on), else the smallest layer of its edits (0 with none)."""

    edits: tuple[Edit, ...]
    start: int | None = None

    def __post_init__(self):
        if self.start is not None and any(e.layer < self.start for e in self.edits):
            raise ValueError(f"a row starting at block {self.start} cannot edit an earlier block")

    @property
    def layer(self) -> int:
        if self.start is not None:
            return self.start
        return min((e.layer for e in self.edits), default=0)


@dataclass
class Base:
    """The run rows start from: B prompts, their cached activations (every resid_pre at least) and block arguments."""

    tokens: torch.Tensor  # [B, S]
    cache: dict[str, torch.Tensor]  # hook name -> [B, ...]
    block_args: list[tuple[tuple, dict, bool]]
    n_layers: int

    @property
    def n_prompts(self) -> int:
        return self.tokens.shape[0]


@torch.no_grad()
def collect_base(model, tokens: torch.Tensor, names=()) -> Base:
    """Run `tokens` once, caching every resid_pre, the last resid_post and `names`; capture the block arguments."""
    n_layers = model.cfg.n_layers
    wanted = sorted({*names, *(resid_pre(layer) for layer in range(n_layers)),
                     f"blocks.{n_layers - 1}.hook_resid_post"})
    tokens = tokens.to(model_device(model))
    with capture_block_args(model) as block_args:
        _, cache = model.run_with_cache(tokens, names_filter=wanted)
    return Base(tokens=tokens, cache={n: cache[n] for n in wanted}, block_args=block_args, n_layers=n_layers)


def apply_edits(act: torch.Tensor, hook, items: list[tuple[int, Edit]], n_prompts: int) -> torch.Tensor:
    """A copy of `act` with each (slot, edit) written into that slot's B rows (a forward hook with items bound)."""
    out = act.clone()
    for slot, edit in items:
        rows = out[slot * n_prompts:(slot + 1) * n_prompts]  # a view: writing into it writes into out
        where = (slice(None), *edit.index)
        value = edit.value.to(out.dtype)
        rows[where] = rows[where] + value if edit.add else value
    return out


def _keep(act: torch.Tensor, hook, store: list) -> torch.Tensor:
    store.append(act.detach().clone())
    return act


def _run_chunk(model, base: Base, rows: list[Row], capture: tuple[str, ...], last: int):
    """Final-position residual [n, B, d_model] after block `last`, and captures {name: [n, B, ...]}, rows in order.

    `rows` sorted by layer. Model dtype throughout."""
    B = base.n_prompts
    resid, slots = None, []  # slots: index into `rows` of each batch slot, in batch order
    kept: dict[str, list] = {name: [] for name in capture}
    for layer in range(rows[0].layer, last + 1):
        joining = [i for i, r in enumerate(rows) if r.layer == layer]
        if joining:
            fresh = base.cache[resid_pre(layer)].repeat(len(joining), 1, 1)
            own = [(j, e) for j, i in enumerate(joining) for e in rows[i].edits if e.hook == resid_pre(layer)]
            fresh = apply_edits(fresh, None, own, B) if own else fresh
            resid = fresh if resid is None else torch.cat([resid, fresh])
            slots += joining
        items = defaultdict(list)
        for slot, i in enumerate(slots):
            for edit in rows[i].edits:
                if edit.layer == layer and edit.hook != resid_pre(rows[i].layer):
                    if edit.hook.endswith("hook_resid_pre"):
                        raise ValueError(f"{edit.hook}: a row may edit resid_pre only at its first layer")
                    items[edit.hook].append((slot, edit))
        hooks = [(name, partial(apply_edits, items=it, n_prompts=B)) for name, it in items.items()]
        hooks += [(name, partial(_keep, store=kept[name])) for name in capture if hook_layer(name) == layer]
        with model.hooks(fwd_hooks=hooks) if hooks else contextlib.nullcontext():
            resid = run_block(model, base, layer, resid)
    inverse = torch.argsort(torch.tensor(slots))
    final = resid[:, -1].reshape(len(slots), B, -1)[inverse]
    captured = {name: store[0].reshape(len(slots), B, *store[0].shape[1:])[inverse] for name, store in kept.items()}
    return final, captured


def map_rows(model, base: Base, rows: list[Row], read: Callable[[torch.Tensor], torch.Tensor] | None = None,
             capture: tuple[str, ...] = (), last: int | None = None,
             chunk_rows: int | None = None) -> Iterator[tuple[list[int], torch.Tensor, dict[str, torch.Tensor]]]:
    """The one place rows run: yield (row indices, read(final), captures) per chunk, every row once.

    final: the chunk's final-position residual after block `last` [n, B, d_model], in the model's dtype; read
    (default: identity) turns it into what the caller keeps (e.g. two answer logits), so a chunk's working set is
    freed before the next. Rows are sorted by layer (stably) and chunked; a chunk out of memory is halved."""
    if not rows:
        raise ValueError("an engine call needs at least one row")
    last = base.n_layers - 1 if last is None else last
    for name in capture:
        if hook_layer(name) < max(r.layer for r in rows) or hook_layer(name) > last:
            raise ValueError(f"cannot capture {name}: some row joins after it, or it lies after block {last}")
    B = base.n_prompts
    per_chunk = max(1, (chunk_rows or rows_per_call(model, base.cache[resid_pre(0)], B)) // B)
    order = sorted(range(len(rows)), key=lambda i: rows[i].layer)

    def run(chunk: list[int]):
        final, kept = _run_chunk(model, base, [rows[i] for i in chunk], capture, last)
        return (final if read is None else read(final)), kept

    for chunk, (value, kept) in Chunker(per_chunk).map(order, run):
        yield chunk, value, kept


@torch.no_grad()
def run_rows(model, base: Base, rows: list[Row], capture: tuple[str, ...] = (), last: int | None = None,
             chunk_rows: int | None = None) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Run every row from its own layer up to block `last` (default: the last block), batched.

    Returns the final-position residual stream after block `last`, [n_rows, B, d_model] (before the final norm),
    and the activations named in `capture` [n_rows, B, ...]; a captured hook must lie at or after every row's
    first layer (before it, the row is not in the batch yet). Rows are sorted by layer and cut into chunks of at
    most chunk_rows sequences, each chunk one staggered pass up the blocks.
    """
    if not rows:
        raise ValueError("run_rows needs at least one row")
    final = torch.empty(len(rows), base.n_prompts, model.cfg.d_model, device=base.tokens.device)
    captured: dict[str, torch.Tensor] = {}
    for chunk, part, kept in map_rows(model, base, rows, capture=capture, last=last, chunk_rows=chunk_rows):
        final[chunk] = part.to(final.dtype)
        for name, value in kept.items():
            if name not in captured:
                captured[name] = torch.empty(len(rows), *value.shape[1:], device=value.device, dtype=value.dtype)
            captured[name][chunk] = value
    return final, captured


@torch.no_grad()
def looped_rows(model, tokens: torch.Tensor, rows: list[Row], capture: tuple[str, ...] = ()):
    """The reference: one full `run_with_hooks` forward per row. Final-position logits [n, B, d_vocab] and captures."""
    tokens = tokens.to(model_device(model))
    logits, captured = [], {name: [] for name in capture}
    for row in rows:
        by_hook = defaultdict(list)
        for edit in row.edits:
            by_hook[edit.hook].append((0, edit))
        hooks = [(name, partial(apply_edits, items=it, n_prompts=tokens.shape[0])) for name, it in by_hook.items()]
        hooks += [(name, partial(_keep, store=captured[name])) for name in capture]
        logits.append(model.run_with_hooks(tokens, fwd_hooks=hooks)[:, -1])
    return torch.stack(logits), {name: torch.stack(store) for name, store in captured.items()}
