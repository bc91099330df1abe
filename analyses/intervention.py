"""The intervention engine: run the corrupted prompts with some activations replaced, batched; the reference loop;
attribution patching. Torch only here; the statistics are in `analyses.stats`, the shared display in
`analyses.patching_display`.

Method (Meng et al. 2022; Wang et al. 2022; Heimersheim & Nanda 2024, "How to use and interpret activation
patching"): run the corrupted prompts, replace one activation by its value on the clean prompts, and measure
how far the patching logit difference moves back towards the clean run.

    LD(run)     = logit(clean answer) - logit(corrupted answer), at the final position  [batch]

Every sweep keeps the raw patched LD per prompt, [layers, units, batch]; `analyses.stats` normalises it.

Sweeps (a unit is one position or one head):
  resid_pre, attn_out, mlp_out   [layer, position]  the activation at one position
  z, v                           [layer, head]      one head's output / values at every position
  pattern                        [layer, head]      one head's whole attention pattern

Exact and fast (`exact_sweeps`). A naive sweep runs the full model once per patch (`looped_sweep`, kept as
the reference). Here:
  * patches are stacked along the batch dimension, rows = patch-major (row = patch * n_prompts + prompt),
    so one block call serves hundreds of patches;
  * a patch at layer L joins the batch at block L, starting from the corrupted run's residual stream entering
    block L: blocks before L are never run for it. One chunk of patches at all layers therefore costs one
    call per block, its batch growing layer by layer (few calls matter on a GPU, where launch overhead
    dominates). The bridge's blocks are called directly: TransformerBridge's `start_at_layer` does NOT skip
    them, it feeds the residual as `inputs_embeds` and HF still executes blocks 0..L-1, discarding their
    output (its docstring says so; a test counts the block calls);
  * each block gets the other arguments the model passed it in the corrupted run (attention mask, rotary
    position embeddings, ...; KV caches dropped), captured once with a forward pre-hook and tiled over the
    patches, so any architecture the bridge runs works unchanged;
  * only the final position is unembedded, and only on the two answer columns of W_U (2 x d_model
    multiply-adds per row instead of d_model x d_vocab per position);
  * chunk sizes come from free memory (CUDA: mem_get_info; CPU: available RAM, capped so a chunk's working
    set stays cache-friendly).
Positions before the patched one are not reused: that would need the K/V of the corrupted run inside each
architecture's attention, which the bridge does not expose; every block is the model's own module.

Attribution patching (`attribution_sweeps`; Nanda 2023, "Attribution Patching"; Syed et al. 2023, EAP): the
first-order Taylor estimate LD_patched - LD_corrupted ~ (a_clean - a_corrupted) . dLD/da at the corrupted
run, for every activation a at once, from one clean forward, one corrupted forward and one backward pass.
"""

from __future__ import annotations

import contextlib
from collections import defaultdict
from dataclasses import dataclass
from functools import partial

import numpy as np
import torch

from analyses.chunking import map_chunks
from analyses.metrics import answer_pair, logit_diff, model_device
from analyses.precision import widen
from analyses.stats import SweepResults
from analyses.types import PromptSet

CPU_TOKENS_PER_CHUNK = 4096  # rows x positions per block call on CPU: larger stops paying off (cache misses)
MEMORY_FRACTION = {"cuda": 0.5, "cpu": 0.25}  # share of free memory one chunk's working set may take


@dataclass(frozen=True)
class Sweep:
    name: str
    hook: str  # hook name template with {layer}
    dim: int  # axis of the unit (position or head) in the hook's activation
    unit: str  # "pos" or "head"
    title: str


SWEEPS = {
    "resid_pre": Sweep("resid_pre", "blocks.{layer}.hook_resid_pre", 1, "pos", "Residual stream before the layer"),
    "attn_out": Sweep("attn_out", "blocks.{layer}.hook_attn_out", 1, "pos", "Attention output"),
    "mlp_out": Sweep("mlp_out", "blocks.{layer}.hook_mlp_out", 1, "pos", "MLP output"),
    "z": Sweep("z", "blocks.{layer}.attn.hook_z", 2, "head", "Head output (z)"),  # [batch, pos, head, d_head]
    "v": Sweep("v", "blocks.{layer}.attn.hook_v", 2, "head", "Head values (v)"),  # [batch, pos, kv_head, d_head]
    "pattern": Sweep("pattern", "blocks.{layer}.attn.hook_pattern", 1, "head", "Attention pattern"),  # [b, h, q, k]
}
POSITION_SWEEPS = ("resid_pre", "attn_out", "mlp_out")
HEAD_SWEEPS = ("z", "v", "pattern")


def hook_name(sweep: str, layer: int) -> str:
    return SWEEPS[sweep].hook.format(layer=layer)


@dataclass(frozen=True)
class Patch:
    """Activations patched together in one run: (sweep, unit) pairs, all at `layer`."""

    layer: int
    parts: tuple[tuple[str, int], ...]


@dataclass
class Runs:
    """The clean and corrupted runs that every patch starts from. B prompts, S positions."""

    clean: dict[str, torch.Tensor]  # hook name -> clean activation [B, ...]
    corrupted: dict[str, torch.Tensor]  # hook name -> corrupted activation [B, ...]
    clean_ld: torch.Tensor  # [B] LD of the clean run (full forward, full vocabulary)
    corrupted_ld: torch.Tensor  # [B]
    corrupted_tokens: torch.Tensor  # [B, S]
    pos_ids: torch.Tensor  # [B] clean answer
    neg_ids: torch.Tensor  # [B] corrupted answer
    block_args: list[tuple[tuple, dict, bool]]  # per layer: (args after the residual, kwargs, residual by keyword)
    n_layers: int

    @property
    def n_prompts(self) -> int:
        return self.corrupted_tokens.shape[0]

    def n_units(self, sweep: str) -> int:
        return self.clean[hook_name(sweep, 0)].shape[SWEEPS[sweep].dim]


# ---- the clean and corrupted runs ---------------------------------------------------------------------------


@torch.no_grad()
def collect_runs(model, prompts: PromptSet, sweeps=tuple(SWEEPS)) -> Runs:
    """Cache the activations the sweeps patch (plus every resid_pre) on both runs; capture the block arguments."""
    device = model_device(model)
    n_layers = model.cfg.n_layers
    names = sorted({hook_name(s, layer) for s in (*sweeps, "resid_pre") for layer in range(n_layers)})
    pos_ids, neg_ids = (ids.to(device) for ids in answer_pair(prompts, "clean_vs_corrupted"))
    clean_logits, clean = model.run_with_cache(prompts.clean_tokens.to(device), names_filter=names)
    corrupted_tokens = prompts.corrupted_tokens.to(device)
    with _capture_block_args(model) as block_args:
        corrupted_logits, corrupted = model.run_with_cache(corrupted_tokens, names_filter=names)
    return Runs(
        clean={n: clean[n] for n in names}, corrupted={n: corrupted[n] for n in names},
        clean_ld=logit_diff(widen(clean_logits[:, -1]), pos_ids, neg_ids),  # at least float32, whatever the model's
        corrupted_ld=logit_diff(widen(corrupted_logits[:, -1]), pos_ids, neg_ids),
        corrupted_tokens=corrupted_tokens, pos_ids=pos_ids, neg_ids=neg_ids,
        block_args=block_args, n_layers=n_layers,
    )


@contextlib.contextmanager
def _capture_block_args(model):
    """Record, per block, what the model passes besides the residual stream (masks, rotary embeddings)."""
    captured: list = [None] * len(model.blocks)

    def pre_hook(layer, module, args, kwargs):
        by_keyword = not (args and isinstance(args[0], torch.Tensor))
        rest = args if by_keyword else args[1:]
        kwargs = {k: v for k, v in kwargs.items() if k != "hidden_states"}
        captured[layer] = (_drop_caches(rest), _drop_caches(kwargs), by_keyword)

    handles = [block.register_forward_pre_hook(partial(pre_hook, i), with_kwargs=True)
               for i, block in enumerate(model.blocks)]
    try:
        yield captured
    finally:
        for handle in handles:
            handle.remove()


def _drop_caches(value):
    """KV caches would make a block extend the cache instead of running fresh: replace them by None."""
    if isinstance(value, dict):
        return {k: (False if k == "use_cache" else _drop_caches(v)) for k, v in value.items()}
    if isinstance(value, (tuple, list)):
        return type(value)(_drop_caches(v) for v in value)
    if type(value).__name__.endswith("Cache"):
        return None
    return value


def _tile(value, reps: int, batch: int):
    """Repeat per-prompt tensors to the patch-major rows of a chunk.

    Per-prompt means at least 2-D with a leading dim of `batch` (masks [B, 1, S, S], padding masks [B, S]);
    1-D tensors (cache positions [S]) and broadcast ones ([1, S, d] rotary tables) are shared as they are.
    """
    if isinstance(value, torch.Tensor):
        if value.dim() > 1 and value.shape[0] == batch and reps > 1:
            return value.repeat(reps, *([1] * (value.dim() - 1)))
        return value
    if isinstance(value, dict):
        return {k: _tile(v, reps, batch) for k, v in value.items()}
    if isinstance(value, (tuple, list)):
        return type(value)(_tile(v, reps, batch) for v in value)
    return value


# ---- running the later blocks ---------------------------------------------------------------------------------


def _block(model, runs: Runs, layer: int, resid: torch.Tensor) -> torch.Tensor:
    """One block on [rows, S, d_model] rows (rows = reps x B), with the corrupted run's other arguments."""
    args, kwargs, by_keyword = runs.block_args[layer]
    reps = resid.shape[0] // runs.n_prompts
    args, kwargs = _tile(args, reps, runs.n_prompts), _tile(kwargs, reps, runs.n_prompts)
    if by_keyword:
        out = model.blocks[layer](*args, hidden_states=resid, **kwargs)
    else:
        out = model.blocks[layer](resid, *args, **kwargs)
    return out[0] if isinstance(out, tuple) else out


def final_logit_diff(model, resid_final: torch.Tensor, pos_ids: torch.Tensor, neg_ids: torch.Tensor) -> torch.Tensor:
    """[rows, d_model] final-position residual -> [rows] LD, unembedding only the two answer columns."""
    return final_answer_logits(model, resid_final, pos_ids) - final_answer_logits(model, resid_final, neg_ids)


def final_answer_logits(model, resid_final: torch.Tensor, ids: torch.Tensor) -> torch.Tensor:
    """[rows, d_model] final-position residual -> [rows] logit of token ids[row], unembedding only that column."""
    x = widen(model.ln_final(resid_final[:, None, :])[:, 0])  # [rows, d_model]; the products in float32 at least
    W_U, b_U = model.W_U, model.b_U
    logit = (x * widen(W_U[:, ids].T)).sum(-1) + widen(b_U[ids])
    cap = getattr(model.cfg, "output_logits_soft_cap", -1.0) or -1.0
    if cap > 0:  # Gemma-2/3-style final soft-capping acts on each logit, not on their difference
        logit = cap * torch.tanh(logit / cap)
    return logit


# ---- exact, batched patching --------------------------------------------------------------------------------


def _patch_values(runs: Runs, sweep: str, layer: int, prompts: torch.Tensor, units: torch.Tensor,
                  scale: float) -> torch.Tensor:
    """Values written at (prompt, unit): corrupted + scale * (clean - corrupted); [k, ...rest of the activation]."""
    name, dim = hook_name(sweep, layer), SWEEPS[sweep].dim
    clean = runs.clean[name].movedim(dim, 1)[prompts, units]
    if scale == 1.0:
        return clean
    corrupted = runs.corrupted[name].movedim(dim, 1)[prompts, units]
    return corrupted + scale * (clean - corrupted)


def _assign_hook(act: torch.Tensor, hook, dim: int, rows: torch.Tensor, units: torch.Tensor,
                 values: torch.Tensor) -> torch.Tensor:
    """Write values[k] at (rows[k], units[k]) along axis `dim` of the activation."""
    out = act.clone()
    out.movedim(dim, 1)[rows, units] = values.to(out.dtype)
    return out


def _join(runs: Runs, layer: int, patches: list[Patch], offset: int, scale: float):
    """Rows [n*B, S, d] for patches at `layer` (the corrupted resid_pre, resid_pre patches applied), and the hooks
    that patch the rest inside block `layer`; these rows sit at offset.. in the batch."""
    B = runs.n_prompts
    resid = runs.corrupted[hook_name("resid_pre", layer)].repeat(len(patches), 1, 1)
    pairs = defaultdict(list)  # sweep -> [(patch index, unit)]
    for i, patch in enumerate(patches):
        for sweep, unit in patch.parts:
            pairs[sweep].append((i, unit))
    hooks = []
    for sweep, items in pairs.items():
        index = torch.tensor(items, device=resid.device)  # [k, 2]
        prompt = torch.arange(B, device=resid.device).repeat(len(items))  # [k*B]
        rows = index[:, 0].repeat_interleave(B) * B + prompt  # patch-major
        units = index[:, 1].repeat_interleave(B)
        values = _patch_values(runs, sweep, layer, prompt, units, scale)
        if sweep == "resid_pre":
            resid[rows, units] = values
        else:
            hook = partial(_assign_hook, dim=SWEEPS[sweep].dim, rows=rows + offset, units=units, values=values)
            hooks.append((hook_name(sweep, layer), hook))
    return resid, hooks


def _run_chunk(model, runs: Runs, patches: list[Patch], scale: float) -> torch.Tensor:
    """Patched LD [n_patches, B] for patches sorted by layer, in one pass up the blocks.

    Rows join the batch at the block of their patch: before it they equal the corrupted run, so they are not
    computed there. One chunk of patches at every layer thus costs n_layers block calls, not one pass per layer.
    """
    resid = None  # [rows, S, d_model]: the rows that have joined, patch-major, in patch order
    for layer in range(patches[0].layer, runs.n_layers):
        joining = [p for p in patches if p.layer == layer]
        hooks = []
        if joining:
            offset = 0 if resid is None else resid.shape[0]
            fresh, hooks = _join(runs, layer, joining, offset, scale)
            resid = fresh if resid is None else torch.cat([resid, fresh])
        with model.hooks(fwd_hooks=hooks) if hooks else contextlib.nullcontext():
            resid = _block(model, runs, layer, resid)
    reps = len(patches)
    ld = final_logit_diff(model, resid[:, -1], runs.pos_ids.repeat(reps), runs.neg_ids.repeat(reps))
    return ld.view(reps, runs.n_prompts)


@torch.no_grad()
def patched_logit_diffs(model, runs: Runs, patches: list[Patch], scale: float = 1.0,
                        chunk_rows: int | None = None) -> torch.Tensor:
    """LD [n_patches, B] of the corrupted run with each patch applied.

    Patches are sorted by layer and cut into chunks of at most chunk_rows rows (patch x prompt); each chunk is one
    staggered pass up the blocks (`_run_chunk`). A chunk that runs out of memory is halved and retried.
    """
    chunk_rows = chunk_rows or auto_chunk_rows(model, runs)
    per_chunk = max(1, chunk_rows // runs.n_prompts)
    out = torch.empty(len(patches), runs.n_prompts, device=runs.clean_ld.device, dtype=runs.clean_ld.dtype)
    order = sorted(range(len(patches)), key=lambda i: patches[i].layer)
    for chunk, ld in map_chunks(order, per_chunk, lambda chunk: _run_chunk(model, runs, [patches[i] for i in chunk],
                                                                           scale)):
        out[chunk] = ld.to(out.dtype)
    return out


def sweep_patches(runs: Runs, sweep: str) -> list[Patch]:
    """One single-unit patch per (layer, unit), layer-major."""
    return [Patch(layer, ((sweep, unit),)) for layer in range(runs.n_layers) for unit in range(runs.n_units(sweep))]


def exact_sweeps(model, runs: Runs, sweeps=tuple(SWEEPS), scale: float = 1.0,
                 chunk_rows: int | None = None) -> dict[str, torch.Tensor]:
    """Patched LD per sweep, [layers, units, B]; the sweeps share chunks (and block calls)."""
    patches = {s: sweep_patches(runs, s) for s in sweeps}
    flat = [p for s in sweeps for p in patches[s]]
    lds = patched_logit_diffs(model, runs, flat, scale, chunk_rows)
    out, start = {}, 0
    for s in sweeps:
        n = len(patches[s])
        out[s] = lds[start:start + n].view(runs.n_layers, runs.n_units(s), runs.n_prompts)
        start += n
    return out


def auto_chunk_rows(model, runs: Runs) -> int:
    """Rows (patched sequences) per block call, from free memory and a rough per-row working set."""
    return _chunk_rows(model, runs.corrupted[hook_name("resid_pre", 0)], runs.n_prompts)


def _chunk_rows(model, resid: torch.Tensor, n_prompts: int) -> int:
    """Rows per block call for sequences shaped like `resid` [B, S, d_model] (see auto_chunk_rows)."""
    cfg, S = model.cfg, resid.shape[1]
    d_mlp = getattr(cfg, "d_mlp", None) or 4 * cfg.d_model
    elem = resid.element_size()
    # residual copies, q/k/v/z, MLP hidden (x3 for gated MLPs), scores + pattern + tiled mask
    per_row = S * (10 * cfg.d_model + 4 * d_mlp + 3 * cfg.n_heads * S + S) * elem
    device = resid.device
    if device.type == "cuda":
        free = torch.cuda.mem_get_info(device)[0]
        rows = int(MEMORY_FRACTION["cuda"] * free) // per_row
    else:
        rows = min(int(MEMORY_FRACTION["cpu"] * _available_ram()) // per_row, CPU_TOKENS_PER_CHUNK // S)
    return max(n_prompts, rows)


def _available_ram() -> int:
    try:
        import psutil

        return int(psutil.virtual_memory().available)
    except ImportError:  # POSIX fallback
        import os

        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")


# ---- the reference: one full forward per patch ----------------------------------------------------------------


@torch.no_grad()
def looped_sweep(model, runs: Runs, sweep: str, scale: float = 1.0, layers=None) -> torch.Tensor:
    """Patched LD [layers, units, B], one full `run_with_hooks` forward per patch (the notebook's way).

    `layers` limits the loop to some layers (the other rows stay NaN).
    """
    out = torch.full((runs.n_layers, runs.n_units(sweep), runs.n_prompts), float("nan"),
                     device=runs.clean_ld.device, dtype=runs.clean_ld.dtype)
    dim = SWEEPS[sweep].dim
    for layer in range(runs.n_layers) if layers is None else layers:
        name = hook_name(sweep, layer)
        for unit in range(runs.n_units(sweep)):
            index = (slice(None),) * dim + (unit,)
            clean, corrupted = runs.clean[name][index], runs.corrupted[name][index]
            value = clean if scale == 1.0 else corrupted + scale * (clean - corrupted)

            def hook(act, hook, index=index, value=value):
                act = act.clone()
                act[index] = value
                return act

            logits = model.run_with_hooks(runs.corrupted_tokens, fwd_hooks=[(name, hook)])
            out[layer, unit] = logit_diff(widen(logits[:, -1]), runs.pos_ids, runs.neg_ids)
    return out


# ---- attribution patching -------------------------------------------------------------------------------------


def attribution_sweeps(model, runs: Runs, sweeps=tuple(SWEEPS)) -> dict[str, torch.Tensor]:
    """First-order estimate of LD_patched - LD_corrupted per sweep, [layers, units, B].

    (a_clean - a_corrupted) . dLD/da, the gradient taken on the corrupted run and summed over every axis of
    the activation except batch and unit. One corrupted forward + one backward (the clean activations come
    from `runs`). Gradients are taken with torch.autograd.grad, so no parameter's .grad is touched, and grad
    mode is switched on only inside this function.
    """
    names = [hook_name(s, layer) for s in sweeps for layer in range(runs.n_layers)]
    acts: dict[str, torch.Tensor] = {}

    def keep(act, hook, name):
        if not act.requires_grad:  # frozen parameters: make the activation a leaf so the graph still reaches it
            act = act.detach().requires_grad_(True)
        acts[name] = act
        return act  # returning it makes the downstream computation depend on this exact tensor

    with torch.enable_grad():
        with model.hooks(fwd_hooks=[(n, partial(keep, name=n)) for n in names]):
            logits = model(runs.corrupted_tokens)
        ld = logit_diff(logits[:, -1], runs.pos_ids, runs.neg_ids)
        grads = torch.autograd.grad(ld.sum(), [acts[n] for n in names], allow_unused=True)
    grads = dict(zip(names, grads))
    out = {}
    for s in sweeps:
        dim = SWEEPS[s].dim
        per_layer = []
        for layer in range(runs.n_layers):
            name = hook_name(s, layer)
            grad = grads[name] if grads[name] is not None else torch.zeros_like(runs.clean[name])
            term = (widen(runs.clean[name] - runs.corrupted[name]) * widen(grad.detach())).movedim(dim, 1)
            per_layer.append(term.flatten(2).sum(-1).T)  # [units, B]
        out[s] = torch.stack(per_layer)
    return out


# ---- one call for an analysis -------------------------------------------------------------------------------------


def run_sweeps(model, prompts: PromptSet, sweeps, chunk_rows: int | None = None) -> SweepResults:
    """Exact and attribution patching of `sweeps` for one prompt family."""
    runs = collect_runs(model, prompts, sweeps)
    exact = exact_sweeps(model, runs, sweeps, chunk_rows=chunk_rows)
    return sweep_results(model, runs, sweeps, exact, attribution_sweeps(model, runs, sweeps))


def sweep_results(model, runs: Runs, sweeps, exact: dict[str, torch.Tensor],
                  attribution: dict[str, torch.Tensor]) -> SweepResults:
    """The sweeps' numbers as numpy, with the checks that ride along (first prompt's patterns, patch-everything)."""
    corrupted = runs.corrupted_ld

    def numpy(t: torch.Tensor) -> np.ndarray:
        return t.detach().float().cpu().numpy()

    return SweepResults(
        exact={s: numpy(exact[s]) for s in sweeps},
        attribution={s: numpy(attribution[s] + corrupted) for s in sweeps},
        clean_ld=numpy(runs.clean_ld), corrupted_ld=numpy(corrupted),
        first_prompt_patterns=np.stack([numpy(runs.clean[hook_name("pattern", layer)][0])
                                        for layer in range(runs.n_layers)]) if "pattern" in sweeps else None,
        everything_ld=numpy(patched_logit_diffs(model, runs, [patch_everything(runs)])[0])
        if "resid_pre" in sweeps else None,
    )


def patch_everything(runs: Runs) -> Patch:
    """The whole residual stream before layer 0: this patched run is the clean run (a check of the machinery)."""
    n_positions = runs.corrupted_tokens.shape[1]
    return Patch(0, tuple(("resid_pre", p) for p in range(n_positions)))


# ---- any intervention: rows of edits on a base run ------------------------------------------------------------
#
# Ablations, path patching and circuits are the same operation as patching: run from layer L on a batch whose
# rows carry different replacements. A `Row` is a list of `Edit`s (replace or add to part of one activation, per
# prompt); rows join the batch at their first edited layer, exactly as patches do above, and only the final
# position is returned, so callers unembed what they need (two answer columns, or the whole vocabulary).


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
        return int(self.hook.split(".")[1])


@dataclass(frozen=True, eq=False)
class Row:
    """One intervened run of the base prompts. It starts at block `layer` (the smallest layer of its edits)."""

    edits: tuple[Edit, ...]

    @property
    def layer(self) -> int:
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
    wanted = sorted({*names, *(hook_name("resid_pre", layer) for layer in range(n_layers)),
                     f"blocks.{n_layers - 1}.hook_resid_post"})
    tokens = tokens.to(model_device(model))
    with _capture_block_args(model) as block_args:
        _, cache = model.run_with_cache(tokens, names_filter=wanted)
    return Base(tokens=tokens, cache={n: cache[n] for n in wanted}, block_args=block_args, n_layers=n_layers)


def _apply_edits(act: torch.Tensor, hook, items: list[tuple[int, Edit]], n_prompts: int) -> torch.Tensor:
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


def _run_rows_chunk(model, base: Base, rows: list[Row], capture: tuple[str, ...], last: int):
    """Final-position residual [n, B, d_model] after block `last`, and captures {name: [n, B, ...]}, rows in order."""
    B = base.n_prompts
    resid, slots = None, []  # slots: index into `rows` of each batch slot, in batch order
    kept: dict[str, list] = {name: [] for name in capture}
    for layer in range(rows[0].layer, last + 1):
        joining = [i for i, r in enumerate(rows) if r.layer == layer]
        if joining:
            fresh = base.cache[hook_name("resid_pre", layer)].repeat(len(joining), 1, 1)
            own = [(j, e) for j, i in enumerate(joining) for e in rows[i].edits
                   if e.hook == hook_name("resid_pre", layer)]
            fresh = _apply_edits(fresh, None, own, B) if own else fresh
            resid = fresh if resid is None else torch.cat([resid, fresh])
            slots += joining
        items = defaultdict(list)
        for slot, i in enumerate(slots):
            for edit in rows[i].edits:
                if edit.layer == layer and edit.hook != hook_name("resid_pre", rows[i].layer):
                    if edit.hook.endswith("hook_resid_pre"):
                        raise ValueError(f"{edit.hook}: a row may edit resid_pre only at its first layer")
                    items[edit.hook].append((slot, edit))
        hooks = [(name, partial(_apply_edits, items=it, n_prompts=B)) for name, it in items.items()]
        hooks += [(name, partial(_keep, store=kept[name])) for name in capture if int(name.split(".")[1]) == layer]
        with model.hooks(fwd_hooks=hooks) if hooks else contextlib.nullcontext():
            resid = _block(model, base, layer, resid)
    inverse = torch.argsort(torch.tensor(slots))
    final = resid[:, -1].reshape(len(slots), B, -1)[inverse]
    captured = {name: store[0].reshape(len(slots), B, *store[0].shape[1:])[inverse] for name, store in kept.items()}
    return final, captured


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
    last = base.n_layers - 1 if last is None else last
    for name in capture:
        if int(name.split(".")[1]) < max(r.layer for r in rows) or int(name.split(".")[1]) > last:
            raise ValueError(f"cannot capture {name}: some row joins after it, or it lies after block {last}")
    B = base.n_prompts
    per_chunk = max(1, (chunk_rows or _chunk_rows(model, base.cache[hook_name("resid_pre", 0)], B)) // B)
    order = sorted(range(len(rows)), key=lambda i: rows[i].layer)
    final = torch.empty(len(rows), B, model.cfg.d_model, device=base.tokens.device)
    captured: dict[str, torch.Tensor] = {}
    for start in range(0, len(order), per_chunk):
        chunk = order[start:start + per_chunk]
        part, kept = _run_rows_chunk(model, base, [rows[i] for i in chunk], capture, last)
        final[chunk] = part.to(final.dtype)
        for name, value in kept.items():
            if name not in captured:
                captured[name] = torch.empty(len(rows), *value.shape[1:], device=value.device, dtype=value.dtype)
            captured[name][chunk] = value
    return final, captured


# ---- rows that share a prefix ----------------------------------------------------------------------------------
#
# A circuit's grid has rows that ablate the same nodes in the early layers and differ only later (the top-n and
# top-(n+1) circuits differ in one node). `run_rows` starts each row at its first edited layer, so such rows are
# recomputed from block 0 each. `run_rows_sharing_prefixes` runs, at each layer, one residual per *group* of rows
# whose edits so far are the same, and splits a group where its rows' edits at that layer differ: a residual is
# computed once up to the first layer where its rows differ. Rows with no edit so far are the base run itself and
# cost nothing. Same numbers as `run_rows` (a test compares them), fewer block rows whenever rows share a prefix.


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
    per_chunk = max(1, (chunk_rows or _chunk_rows(model, base.cache[hook_name("resid_pre", 0)], B)) // B)
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
                source = base.cache[hook_name("resid_pre", layer)] if resid is None else resid
                todo.append((part, source, at[part[0]][layer]))
        pristine = [i for i in pristine if not at[i][layer]]
        groups = []
        for start in range(0, len(todo), per_chunk):
            chunk = todo[start:start + per_chunk]
            groups += [(part, out) for (part, _, _), out in zip(chunk, _run_groups(model, base, layer, chunk))]
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
    pre = hook_name("resid_pre", layer)
    own = [(slot, e) for slot, (_, _, edits) in enumerate(chunk) for e in edits if e.hook == pre]
    resid = _apply_edits(resid, None, own, B) if own else resid
    items = defaultdict(list)
    for slot, (_, _, edits) in enumerate(chunk):
        for edit in edits:
            if edit.hook != pre:
                items[edit.hook].append((slot, edit))
    hooks = [(name, partial(_apply_edits, items=it, n_prompts=B)) for name, it in items.items()]
    with model.hooks(fwd_hooks=hooks) if hooks else contextlib.nullcontext():
        out = _block(model, base, layer, resid)
    return list(out.split(B))


def final_logits(model, resid_final: torch.Tensor) -> torch.Tensor:
    """[..., d_model] final-position residual -> [..., d_vocab] logits (final norm, unembedding, soft-capping)."""
    shape = resid_final.shape[:-1]
    W_U = model.W_U
    x = model.ln_final(resid_final.reshape(-1, 1, resid_final.shape[-1]).to(W_U.dtype))[:, 0]
    # metrics accumulate in float32 (at least): a bfloat16 model's logits are compared in float32
    precision = torch.promote_types(W_U.dtype, torch.float32)
    logits = x.to(precision) @ W_U.to(precision) + model.b_U.to(precision)
    cap = getattr(model.cfg, "output_logits_soft_cap", -1.0) or -1.0
    if cap > 0:
        logits = cap * torch.tanh(logits / cap)
    return logits.reshape(*shape, -1)


@torch.no_grad()
def looped_rows(model, tokens: torch.Tensor, rows: list[Row], capture: tuple[str, ...] = ()):
    """The reference: one full `run_with_hooks` forward per row. Final-position logits [n, B, d_vocab] and captures."""
    tokens = tokens.to(model_device(model))
    logits, captured = [], {name: [] for name in capture}
    for row in rows:
        by_hook = defaultdict(list)
        for edit in row.edits:
            by_hook[edit.hook].append((0, edit))
        hooks = [(name, partial(_apply_edits, items=it, n_prompts=tokens.shape[0])) for name, it in by_hook.items()]
        hooks += [(name, partial(_keep, store=captured[name])) for name in capture]
        logits.append(model.run_with_hooks(tokens, fwd_hooks=hooks)[:, -1])
    return torch.stack(logits), {name: torch.stack(store) for name, store in captured.items()}
