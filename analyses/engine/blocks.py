"""Calling the model's blocks directly, on a batch of rows, with the arguments the model passed them in a base run.

TransformerBridge's `start_at_layer` does NOT skip the earlier blocks (it feeds the residual as `inputs_embeds` and
HF still executes blocks 0..L-1, discarding their output; a test counts the block calls), so the engine calls
`model.blocks[L]` itself. Each block gets the other arguments the model passed it in the base run (attention mask,
rotary position embeddings, ...; KV caches dropped), captured once with a forward pre-hook and tiled over the rows,
so any architecture the bridge runs works unchanged.
"""

from __future__ import annotations

import contextlib
from functools import partial

import torch


def resid_pre(layer: int) -> str:
    """The hook name of the residual stream entering block `layer`."""
    return f"blocks.{layer}.hook_resid_pre"


def hook_layer(name: str) -> int:
    """The block a hook name lies in: blocks.3.attn.hook_z -> 3."""
    return int(name.split(".")[1])


@contextlib.contextmanager
def capture_block_args(model):
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
    """Repeat per-prompt tensors to the slot-major rows of a chunk (row = slot * batch + prompt).

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


def run_block(model, base, layer: int, resid: torch.Tensor) -> torch.Tensor:
    """Block `layer` on [rows, S, d_model] rows (rows = reps x B), with the base run's other arguments.

    base: anything with `block_args` (per layer: args after the residual, kwargs, residual by keyword) and
    `n_prompts` (B)."""
    args, kwargs, by_keyword = base.block_args[layer]
    reps = resid.shape[0] // base.n_prompts
    args, kwargs = _tile(args, reps, base.n_prompts), _tile(kwargs, reps, base.n_prompts)
    if by_keyword:
        out = model.blocks[layer](*args, hidden_states=resid, **kwargs)
    else:
        out = model.blocks[layer](resid, *args, **kwargs)
    return out[0] if isinstance(out, tuple) else out
