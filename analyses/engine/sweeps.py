"""Activation patching sweeps: each cell (one layer, one unit) is a row of the one engine (`analyses.engine.rows`).

Method (Meng et al. 2022; Wang et al. 2022; Heimersheim & Nanda 2024, "How to use and interpret activation
patching"): run the corrupted prompts, replace one activation by its value on the clean prompts, and measure
how far the patching logit difference moves back towards the clean run.

    LD(run)     = logit(clean answer) - logit(corrupted answer), at the final position  [batch]

Every sweep keeps the raw patched LD per prompt, [layers, units, batch]; `analyses.common.stats` normalises it.

Sweeps (a unit is one position or one head):
  resid_pre, attn_out, mlp_out   [layer, position]  the activation at one position
  z, v                           [layer, head]      one head's output / values at every position
  pattern                        [layer, head]      one head's whole attention pattern

A `Patch` (sweep, unit pairs at one layer) becomes a `Row` of `Edit`s on the corrupted run (`patch_row`): each part
writes corrupted + scale * (clean - corrupted) at its unit, for every prompt (scale 1: the clean value). The engine
runs the rows batched, starting each at its layer, and only the final position is unembedded, on the two answer
columns of W_U. `looped_sweep` is the reference: one full forward per cell.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from analyses.common.metrics import answer_pair, logit_diff, model_device
from analyses.common.precision import widen
from analyses.common.types import PromptSet
from analyses.engine.blocks import capture_block_args
from analyses.engine.chunks import rows_per_call
from analyses.engine.readout import final_logit_diff
from analyses.engine.rows import Base, Edit, Row, map_rows


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

    @property
    def base(self) -> Base:
        """The corrupted run as the engine's base for `rows.map_rows` / `run_rows` (the same tensors, not copies;
        without the last resid_post that prefix sharing reads for rows with no edit)."""
        return Base(tokens=self.corrupted_tokens, cache=self.corrupted, block_args=self.block_args,
                    n_layers=self.n_layers)


@torch.no_grad()
def collect_runs(model, prompts: PromptSet, sweeps=tuple(SWEEPS)) -> Runs:
    """Cache the activations the sweeps patch (plus every resid_pre) on both runs; capture the block arguments."""
    device = model_device(model)
    n_layers = model.cfg.n_layers
    names = sorted({hook_name(s, layer) for s in (*sweeps, "resid_pre") for layer in range(n_layers)})
    pos_ids, neg_ids = (ids.to(device) for ids in answer_pair(prompts, "clean_vs_corrupted"))
    clean_logits, clean = model.run_with_cache(prompts.clean_tokens.to(device), names_filter=names)
    corrupted_tokens = prompts.corrupted_tokens.to(device)
    with capture_block_args(model) as block_args:
        corrupted_logits, corrupted = model.run_with_cache(corrupted_tokens, names_filter=names)
    return Runs(
        clean={n: clean[n] for n in names}, corrupted={n: corrupted[n] for n in names},
        clean_ld=logit_diff(widen(clean_logits[:, -1]), pos_ids, neg_ids),  # at least float32, whatever the model's
        corrupted_ld=logit_diff(widen(corrupted_logits[:, -1]), pos_ids, neg_ids),
        corrupted_tokens=corrupted_tokens, pos_ids=pos_ids, neg_ids=neg_ids,
        block_args=block_args, n_layers=n_layers,
    )


def patch_row(runs: Runs, patch: Patch, scale: float = 1.0) -> Row:
    """The engine's row for a patch: per part, corrupted + scale * (clean - corrupted) at its unit, every prompt."""
    edits = []
    for sweep, unit in patch.parts:
        name, dim = hook_name(sweep, patch.layer), SWEEPS[sweep].dim
        where = (slice(None),) * dim + (unit,)  # batch axis first, then up to the unit's axis
        value = runs.clean[name][where]  # [B, *rest of the activation]
        if scale != 1.0:
            corrupted = runs.corrupted[name][where]
            value = corrupted + scale * (value - corrupted)
        edits.append(Edit(name, where[1:], value))
    return Row(tuple(edits), start=patch.layer)


@torch.no_grad()
def patched_logit_diffs(model, runs: Runs, patches: list[Patch], scale: float = 1.0,
                        chunk_rows: int | None = None) -> torch.Tensor:
    """LD [n_patches, B] of the corrupted run with each patch applied.

    Patches become rows (`patch_row`) and run on the engine (`rows.map_rows`): sorted by layer, cut into chunks of
    at most chunk_rows rows (patch x prompt), each chunk one staggered pass up the blocks, read out to two answer
    logits per row before the next chunk. A chunk that runs out of memory is halved and retried.
    """
    B = runs.n_prompts

    def read(final: torch.Tensor) -> torch.Tensor:  # [n, B, d_model] -> [n, B]
        n = final.shape[0]
        ld = final_logit_diff(model, final.reshape(n * B, -1), runs.pos_ids.repeat(n), runs.neg_ids.repeat(n))
        return ld.view(n, B)

    rows = [patch_row(runs, p, scale) for p in patches]
    out = torch.empty(len(patches), B, device=runs.clean_ld.device, dtype=runs.clean_ld.dtype)
    for chunk, ld, _ in map_rows(model, runs.base, rows, read=read,
                                 chunk_rows=chunk_rows or auto_chunk_rows(model, runs)):
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
    return rows_per_call(model, runs.corrupted[hook_name("resid_pre", 0)], runs.n_prompts)


def patch_everything(runs: Runs) -> Patch:
    """The whole residual stream before layer 0: this patched run is the clean run (a check of the machinery)."""
    n_positions = runs.corrupted_tokens.shape[1]
    return Patch(0, tuple(("resid_pre", p) for p in range(n_positions)))


@torch.no_grad()
def looped_sweep(model, runs: Runs, sweep: str, scale: float = 1.0, layers=None) -> torch.Tensor:
    """The reference: patched LD [layers, units, B], one full `run_with_hooks` forward per patch.

    A different code path from the engine (no rows, slots, tiling or staggering). `layers` limits the loop to some
    layers (the other rows stay NaN).
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
