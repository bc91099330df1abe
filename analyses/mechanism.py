"""Shared pieces of the mechanism analyses (successor_heads, ablations, path_patching, circuit); not an analysis.

Nodes are attention heads ("L9H1", the head's output z at every position) and MLPs ("MLP0", the MLP output at
every position); the embeddings are never ablated. Ablation values (Heimersheim & Nanda 2024, §2; Wang et al. 2022):
  zero      the activation set to 0
  mean      its mean over the family's clean prompts, per position (every prompt has the same token length)
  resample  its value on the paired corrupted prompt
"""

from __future__ import annotations

import dataclasses

import numpy as np
import torch

from analyses.attribution import head_name
from analyses.intervention import Edit
from analyses.types import Analysis, PromptSet

ABLATIONS = ("zero", "mean", "resample")
# Size thresholds for naming a component in a narrative (issue 7: name a component only above a stated size).
NAME_FRACTION = 0.10  # of the reference gap (clean − corrupted LD when informative, else of mean |clean LD|)
# An informative clean − corrupted gap (the rule issue 7 sets for every patching section): the mean gap is at
# least MIN_GAP logits, at least MIN_GAP_SE standard errors of the per-prompt gaps, and most prompts have a
# positive gap. The lead unifies this with analyses.stats.informative_gap when it lands.
MIN_GAP = 1.0
MIN_GAP_SE = 3.0


def informative_gap(clean_ld: np.ndarray, corrupted_ld: np.ndarray) -> tuple[bool, str]:
    """(informative, reason): may effects be given as fractions of the clean − corrupted gap?"""
    gap = np.asarray(clean_ld, dtype=float) - np.asarray(corrupted_ld, dtype=float)
    mean = float(gap.mean())
    se = float(gap.std(ddof=1) / np.sqrt(len(gap))) if len(gap) > 1 else float("inf")
    if mean < MIN_GAP:
        return False, f"the mean clean − corrupted gap is {mean:+.2f} logits, under {MIN_GAP:g}"
    if se > 0 and mean < MIN_GAP_SE * se:
        return False, (f"the mean gap {mean:+.2f} is under {MIN_GAP_SE:g} standard errors ({se:.2f}) of the "
                       "per-prompt gaps")
    if (gap > 0).mean() <= 0.5:
        return False, f"only {int((gap > 0).sum())} of {len(gap)} prompts have a positive gap"
    return True, f"mean gap {mean:+.2f} logits over {len(gap)} prompts"


def analysis(**fields) -> Analysis:
    """An Analysis, passing `part` / `per_corruption` only once analyses.types has them (issue 7 adds them)."""
    known = {f.name for f in dataclasses.fields(Analysis)}
    return Analysis(**{k: v for k, v in fields.items() if k in known})


# ---- the prompt set, old and new interface (issue 7 renames day_* to item_*) ----------------------------------


def item_token_ids(prompts: PromptSet) -> torch.Tensor:
    """[n_items] token of each item (" Monday" .. with its leading space)."""
    ids = getattr(prompts, "item_token_ids", None)
    return ids if ids is not None else prompts.day_token_ids


def item_index(prompts: PromptSet) -> list[int]:
    """[batch] the item named in each clean prompt."""
    index = getattr(prompts, "item_index", None)
    return [int(i) for i in (index if index is not None else prompts.days)]


def answer_items(prompts: PromptSet) -> list[int]:
    method = getattr(prompts, "answer_items", None)
    return list(method() if method is not None else prompts.answer_days())


def item_names(prompts: PromptSet) -> list[str]:
    items = getattr(prompts, "items", None)
    if items is None:
        from analyses.types import DAYS

        items = DAYS
    return [str(i) for i in items]


def corruption(prompts: PromptSet) -> str:
    return str(getattr(prompts, "corruption", "day"))


# ---- nodes ----------------------------------------------------------------------------------------------------


def nodes(n_layers: int, n_heads: int) -> list[tuple[str, int, int]]:
    """Every node in layer order, heads before the MLP of their layer: (kind, layer, head or -1)."""
    out = []
    for layer in range(n_layers):
        out += [("head", layer, h) for h in range(n_heads)] + [("mlp", layer, -1)]
    return out


def node_name(node: tuple[str, int, int]) -> str:
    kind, layer, head = node
    return head_name(layer, head) if kind == "head" else f"MLP{layer}"


def node_hook(node: tuple[str, int, int]) -> str:
    kind, layer, _ = node
    return f"blocks.{layer}.attn.hook_z" if kind == "head" else f"blocks.{layer}.hook_mlp_out"


def node_index(node: tuple[str, int, int]) -> tuple:
    """The node's part of its hook's activation, per prompt: one head at every position, or the whole MLP output."""
    return (slice(None), node[2]) if node[0] == "head" else ()


def node_edit(node: tuple[str, int, int], source: torch.Tensor) -> Edit:
    """Replace the node by the matching part of `source` (the node hook's activation [B, ...] or [...] shared)."""
    index = node_index(node)
    value = source[(slice(None), *index)] if source.dim() == _full_dims(node) else source[index]
    return Edit(node_hook(node), index, value)


def _full_dims(node) -> int:
    return 4 if node[0] == "head" else 3  # hook_z [B, S, H, d_head]; hook_mlp_out [B, S, d_model]


def ablation_source(kind: str, clean: torch.Tensor, corrupted: torch.Tensor) -> torch.Tensor:
    """What replaces an activation [B, ...] of the clean run: zeros, the mean over prompts [...], or the corrupted."""
    if kind == "zero":
        return torch.zeros_like(clean[0])
    if kind == "mean":
        return clean.mean(0)
    if kind == "resample":
        return corrupted
    raise ValueError(f"unknown ablation {kind!r}")


def numpy(t: torch.Tensor) -> np.ndarray:
    return t.detach().float().cpu().numpy()
