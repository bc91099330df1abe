"""Direct logit attribution maths shared by the logit lens, per-layer, per-head and attention analyses.

The final logits are linear in the residual stream once the final LayerNorm's scale is fixed at the
value of this run (weights folded in, so only the scale remains):
    logit(a) - logit(b) = sum_c  ln_scale(c) @ (W_U[:, a] - W_U[:, b])  +  b_U[a] - b_U[b]
where c runs over the components that write to the residual stream at the final position
(embeddings, each attention layer, each MLP; an attention layer splits further into its heads plus
its output bias). Method: Elhage et al. 2021, "A Mathematical Framework for Transformer Circuits";
the seed notebook's `residual_stack_to_logit_diff`.
"""

from __future__ import annotations

import torch

from analyses.common.contract import Node
from analyses.common.metrics import answer_pair, diff_directions, model_device
from analyses.common.types import PromptSet

METRIC_LABELS = {"copy": "vs item in prompt", "clean_vs_corrupted": "vs corrupted answer"}


def run_clean_with_cache(model, prompts: PromptSet):
    """Final-position logits [batch, vocab] and the activation cache of the clean prompts."""
    logits, cache = model.run_with_cache(prompts.clean_tokens.to(model_device(model)))
    return logits[:, -1, :].float(), cache


def project(cache, stack: torch.Tensor, directions: torch.Tensor) -> torch.Tensor:
    """[components, batch, d_model] final-position residual pieces -> [components, batch] logit differences."""
    scaled = cache.apply_ln_to_stack(stack, layer=-1, pos_slice=-1)
    return torch.einsum("cbd,bd->cb", scaled.float(), directions.float())


def metric_terms(model, prompts: PromptSet, metric: str) -> tuple[torch.Tensor, torch.Tensor]:
    """Unembedding directions [batch, d_model] and bias terms [batch] for a metric of analyses.common.metrics."""
    pos, neg = answer_pair(prompts, metric)
    directions, bias = diff_directions(model, pos, neg)
    return directions.float(), bias.float()


def logit_lens(model, cache, prompts: PromptSet, metric: str) -> tuple[torch.Tensor, list[str]]:
    """[points, batch] logit difference read from the accumulated residual stream (incl. mid-layer points).

    Every point uses the final LayerNorm scale of the real final stream, plus the unembedding bias,
    so the last point equals the model's own logit difference. Models whose attention and MLP read the same
    input in parallel (GPT-NeoX / Pythia, GPT-J) have no stream between them: no mid-layer points there.
    """
    mid = "blocks.0.hook_resid_mid" in cache.cache_dict
    stack, labels = cache.accumulated_resid(layer=-1, incl_mid=mid, pos_slice=-1, return_labels=True)
    directions, bias = metric_terms(model, prompts, metric)
    return project(cache, stack, directions) + bias, list(labels)


def layer_attributions(model, cache, prompts: PromptSet, metric: str) -> tuple[torch.Tensor, list[str]]:
    """[components, batch]: embeddings, each attention layer, each MLP (plus the unembedding bias: the logit diff)."""
    stack, labels = cache.decompose_resid(layer=-1, pos_slice=-1, return_labels=True)
    directions, _ = metric_terms(model, prompts, metric)
    return project(cache, stack, directions), list(labels)


def head_attributions(model, cache, prompts: PromptSet, metric: str) -> torch.Tensor:
    """[layers, heads, batch] direct logit attribution of each head's output (its share of attn_out, bias excluded)."""
    stack = head_outputs(model, cache)  # [layers, heads, batch, d_model]
    directions, _ = metric_terms(model, prompts, metric)
    per_head = project(cache, stack.flatten(0, 1), directions)
    return per_head.reshape(model.cfg.n_layers, model.cfg.n_heads, -1)


def head_outputs(model, cache) -> torch.Tensor:
    """[layers, heads, batch, d_model]: what each head writes into the residual stream at the final position.

    Models with a norm after attention (Gemma 2 and 3: `ln1_post`) write norm(sum of heads). With the norm's
    scale fixed at this run's value the norm is linear, so a head's share is head / scale * gain.
    """
    n_layers, n_heads = model.cfg.n_layers, model.cfg.n_heads
    stack = cache.stack_head_results(layer=-1, pos_slice=-1)
    stack = stack.reshape(n_layers, n_heads, *stack.shape[1:])
    if "blocks.0.ln1_post.hook_scale" not in cache.cache_dict:
        return stack
    parts = []
    for layer in range(n_layers):
        scale = cache[f"blocks.{layer}.ln1_post.hook_scale"][:, -1]  # [batch, 1]: the RMS divisor
        parts.append(stack[layer] / scale * norm_gain(model.blocks[layer].ln1_post, stack.shape[-1]))
    return torch.stack(parts)


def norm_gain(norm, d_model: int) -> torch.Tensor:
    """[d_model] the elementwise gain of an RMS norm, read off its output for a vector of ones (RMS 1)."""
    ones = torch.ones(1, 1, d_model, device=next(norm.parameters()).device)
    return norm(ones)[0, 0]


def head_name(layer: int, head: int) -> str:
    """(9, 1) -> 'L9H1' (analyses.common.contract.Node: the one place node names are made and read)."""
    return Node.head(layer, head).name


def parse_head_name(name: str) -> tuple[int, int]:
    """'L9H1' -> (9, 1); a ValueError for anything that is not a head's name."""
    node = Node.parse(name)
    if node.kind != "head":
        raise ValueError(f"{name!r} is not an attention head's name ('L9H1')")
    return node.layer, node.index


def ranked_heads(values: torch.Tensor, k: int, largest: bool) -> list[dict]:
    """Top-k heads of a [layers, heads] tensor as [{"name": "L9H1", "value": 1.23}], sorted by value."""
    n_heads = values.shape[1]
    flat = values.flatten()
    order = torch.argsort(flat, descending=largest)[:k]
    return [{"name": head_name(int(i) // n_heads, int(i) % n_heads), "value": float(flat[i])} for i in order]
