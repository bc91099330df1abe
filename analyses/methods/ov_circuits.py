"""Each head's OV circuit on the items: what a head writes from an item's input, and the item logits it promotes.

The input is each item token run alone (one token, no BOS, no position embedding): the token embedding for layer 0,
the residual after block 0 (the effective embedding) for later layers. Not an analysis: `analyses.successor_heads`
scores the grids (`analyses.common.offset_scores`).
"""

from __future__ import annotations

import torch

from analyses.common.metrics import model_device
from analyses.common.precision import widen
from analyses.methods.attribution import norm_gain

POSITION_HOOK = "hook_pos_embed"  # absent (or unused) for rotary models: nothing to remove there


def _no_position(act: torch.Tensor, hook) -> torch.Tensor:
    """A forward hook that zeroes the position embedding."""
    return torch.zeros_like(act)


@torch.no_grad()
def item_inputs(model, tokens: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """([n, d_model] the token embeddings, [n, d_model] the residual after block 0) of each token run alone (a
    one-token sequence, no BOS), the position embedding set to zero where the model has one."""
    names = ["blocks.0.hook_resid_pre", "blocks.0.hook_resid_post"]
    hooks = [(POSITION_HOOK, _no_position)] if has_position_embedding(model) else []
    with model.hooks(fwd_hooks=hooks):
        _, cache = model.run_with_cache(tokens.to(model_device(model))[:, None], names_filter=names)
    return cache[names[0]][:, 0], cache[names[1]][:, 0]


def has_position_embedding(model) -> bool:
    """The model adds a learned position embedding to the residual stream (not rotary)."""
    return POSITION_HOOK in model.hook_dict and model.cfg.positional_embedding_type == "standard"


def effective_embeddings(model, tokens: torch.Tensor) -> torch.Tensor:
    """[n, d_model]: the residual after block 0 of each token run alone, no position embedding (what layers >= 1
    read)."""
    return item_inputs(model, tokens)[1]


@torch.no_grad()
def head_ov_outputs(model, x: torch.Tensor, layer: int) -> torch.Tensor:
    """[H, n, d_model]: what each head of `layer` writes (before any post-attention norm) when it attends only to a
    position whose residual is x [n, d_model]: norm1(x) · W_V[group(h)] (+ b_V) · W_O[h]."""
    W_V, W_O = model.W_V[layer], model.W_O[layer]  # [H_kv, d, d_head], [H, d_head, d]
    group = model.cfg.n_heads // W_V.shape[0]
    normed = model.blocks[layer].ln1(x[:, None])[:, 0]  # [n, d]
    return torch.stack([(normed @ W_V[h // group] + _value_bias(model, layer, h // group)) @ W_O[h]
                        for h in range(model.cfg.n_heads)])


@torch.no_grad()
def ov_grids(model, tokens: torch.Tensor) -> torch.Tensor:
    """[L, H, n, n]: logit of item e (column) promoted by head h's OV circuit from item d's input (the embedding
    for layer 0, the effective embedding after)."""
    embedding, effective = item_inputs(model, tokens)  # [n, d] each
    W_U = model.W_U[:, tokens.to(effective.device)]  # [d, n]
    grids = []
    for layer in range(model.cfg.n_layers):
        out = head_ov_outputs(model, embedding if layer == 0 else effective, layer)  # [H, n, d]
        block = model.blocks[layer]
        if hasattr(block, "ln1_post"):  # Gemma 2/3: the head's share of the normalised attention output
            out = out * norm_gain(block.ln1_post, out.shape[-1])
        if model.cfg.normalization_type in ("LN", "LNPre"):  # the final LayerNorm centres over d_model
            out = out - out.mean(-1, keepdim=True)
        grids.append(widen(out) @ widen(W_U))  # float32 at least: a bfloat16 model's gain comes back float32
    return torch.stack(grids)


def _value_bias(model, layer: int, group: int) -> torch.Tensor | float:
    """b_V of one key/value head, or 0 where the projections have no bias."""
    try:
        return model.b_V[layer, group]
    except AttributeError:  # bias-free projections (Llama, Gemma): the bridge exposes no b_V
        return 0.0
