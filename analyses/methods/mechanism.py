"""Shared pieces of the mechanism analyses (successor_heads, ablations, path_patching, circuit); not an analysis.

Nodes are attention heads ("L9H1", the head's output z at every position) and MLPs ("MLP0", the MLP output at
every position); the embeddings are never ablated. Ablation values (Heimersheim & Nanda 2024, §2; Wang et al. 2022;
Mueller et al. 2025, MIB, "counterfactual ablation"), each matched to the contrast of the corruption in use:
  resample  its value on the paired twin of the same corruption (the primary ablation: it varies exactly the variable
            the contrast varies, so the circuit is ranked and evaluated on the same contrast)
  mean      its mean over a reference set that varies the contrasted variable and nothing else, per template (positions
            of different templates hold different tokens, so they are never pooled):
              day       the template's clean prompts, every item named once: removes which item is named;
              relation  the prompt and its relation twin (same template and item, both relation words): removes the
                        step and keeps the item
  zero      the activation set to 0 (shown for comparison; it matches no contrast)
"""

from __future__ import annotations

import numpy as np
import torch

from analyses.common import thresholds
from analyses.common.contract import Node
from analyses.common.phrases import AT_CHANCE, INSTEAD
from analyses.common.types import PromptSet
from analyses.engine.rows import Edit

ABLATIONS = ("zero", "mean", "resample")
PRIMARY_ABLATION = "resample"
ABLATION_TEXT = {
    "resample": "resample (interchange) ablation: each ablated node takes its value on the paired {corruption} twin "
                "(MIB's counterfactual ablation)",
    "mean": "mean ablation over a reference set that varies only the {corruption} contrast, per template",
    "zero": "zero ablation",
}
NAME_FRACTION = thresholds.MIN_EFFECT_FRACTION  # a path or node is named at >= this fraction of an informative gap


def informative_gap(clean_ld: np.ndarray, corrupted_ld: np.ndarray) -> tuple[bool, str]:
    """(informative, why or why not), by the report's one rule (`analyses.common.thresholds.informative_gap`)."""
    gap = thresholds.informative_gap(clean_ld, corrupted_ld)
    return gap.informative, gap.reason or gap_text(gap, len(clean_ld))


def gap_text(gap: thresholds.Gap, n: int) -> str:
    """An informative gap in words (a gap that is not informative says why in its own `reason`)."""
    return f"mean gap {gap.mean:+.2f} logits over {n} prompts"


def gap_state(clean_ld: np.ndarray, corrupted_ld: np.ndarray) -> str:
    """informative / reversed / small / noisy (`analyses.common.thresholds.informative_gap`)."""
    return thresholds.informative_gap(clean_ld, corrupted_ld).state


def at_chance_lead(summary: dict) -> list[str]:
    """The narrative's first sentence when the model does not do the task (`items_above_chance` false), else none."""
    return [] if summary["items_above_chance"] else [AT_CHANCE]


def instead(summary: dict) -> str:
    """Appended to a named component's role when the model does not do the task: it is part of what it does instead."""
    return "" if summary["items_above_chance"] else INSTEAD


def item_names(prompts: PromptSet) -> list[str]:
    return [str(i) for i in prompts.items]


def signed_offsets(n: int) -> np.ndarray:
    """[n] offset k mod n written signed in (−n/2, n/2]: 0, 1, .., then the negative ones (7 items: 0..3, -3..-1)."""
    k = np.arange(n)
    return np.where(k <= n // 2, k, k - n)


def family_step(prompts: PromptSet) -> int:
    """The family's step: the answer's item minus the copy item's (answer_offset − copy_offset), signed."""
    ids = prompts.item_token_ids.tolist()
    step = (ids.index(int(prompts.answer_ids[0])) - ids.index(int(prompts.copy_ids[0]))) % len(ids)
    return int(signed_offsets(len(ids))[step])


# ---- nodes ----------------------------------------------------------------------------------------------------


def nodes(n_layers: int, n_heads: int) -> list[tuple[str, int, int]]:
    """Every node in layer order, heads before the MLP of their layer: (kind, layer, head or -1)."""
    out = []
    for layer in range(n_layers):
        out += [("head", layer, h) for h in range(n_heads)] + [("mlp", layer, -1)]
    return out


def node_name(node: tuple[str, int, int]) -> str:
    """("head", 9, 1) -> 'L9H1', ("mlp", 3, 0) -> 'MLP3' (analyses.common.contract.Node)."""
    return Node(*node).name


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


def ablation_source(kind: str, clean: torch.Tensor, corrupted: torch.Tensor, corruption: str = "day",
                    template_index: list[int] | None = None) -> torch.Tensor:
    """What replaces an activation [B, ...] of the clean run: zeros [...], the contrast-matched mean reference
    [B, ...] (`mean_reference`), or the paired twin's activation [B, ...] (`corrupted`, same corruption)."""
    if kind == "zero":
        return torch.zeros_like(clean[0])
    if kind == "mean":
        return mean_reference(corruption, clean, corrupted, template_index)
    if kind == "resample":
        return corrupted
    raise ValueError(f"unknown ablation {kind!r}")


def mean_reference(corruption: str, clean: torch.Tensor, corrupted: torch.Tensor,
                   template_index: list[int] | None) -> torch.Tensor:
    """[B, ...]: each prompt's mean-ablation value, over a reference set that varies only the contrasted variable.

    day: the mean over the clean prompts of the prompt's own template (all items; one relation word).
    relation: the mean of the prompt and its relation twin (same template and item; both relation words).
    A mean over every prompt would pool different tokens at one position when templates differ, and, for the
    relation contrast, would remove the item too, so nodes carrying the item would look necessary to the step.
    """
    if corruption == "relation":
        return (clean + corrupted) / 2
    templates = torch.as_tensor(template_index if template_index is not None else [0] * clean.shape[0])
    out = torch.empty_like(clean)
    for t in templates.unique():
        rows = (templates == t).nonzero()[:, 0].to(clean.device)
        out[rows] = clean[rows].mean(0, keepdim=True)
    return out


def numpy(t: torch.Tensor) -> np.ndarray:
    return t.detach().float().cpu().numpy()
