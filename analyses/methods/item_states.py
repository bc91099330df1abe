"""The residual stream at the item token and the final position of every clean prompt, at every layer.

Read by analyses.geometry (the circle) and analyses.periodic (the Fourier view). The item token is the LAST token
of the prompt that is an item of the sequence, with or without its leading space: the slot's item in one-item
families, the last listed item in list families. points = n_layers + 1: resid_pre of every block, then the stream
after the last block (the final stream, before the final norm).
"""

from __future__ import annotations

from typing import Annotated

import numpy as np

from analyses.common.contract import SequenceHeader
from analyses.common.metrics import model_device
from analyses.common.types import PromptSet


class ItemNote(SequenceHeader):
    """The whole summary of geometry or periodic on a family whose item token cannot be found (glued to other
    text): nothing is computed, and the page says why."""

    note: Annotated[str, "why nothing was computed"]


def item_positions(prompts: PromptSet) -> tuple[np.ndarray, np.ndarray]:
    """[batch] position of the last item token of each prompt and [batch] the item it names.

    Raises ValueError naming the family and prompt when a prompt holds no item as a whole token.
    """
    lookup = {item: i for i, item in enumerate(prompts.items)}
    positions, items = [], []
    for prompt, tokens in zip(prompts.clean_prompts, prompts.str_tokens):
        found = [(p, lookup[t.strip()]) for p, t in enumerate(tokens) if t.strip() in lookup]
        if not found:
            raise ValueError(f"family '{prompts.family}', prompt {prompt!r}: no token is an item of sequence "
                             f"'{prompts.sequence}', so there is no item position to read")
        positions.append(found[-1][0])
        items.append(found[-1][1])
    return np.array(positions), np.array(items)


def residual_streams(model, prompts: PromptSet) -> tuple[np.ndarray, list[str]]:
    """[points, batch, seq, d_model] residual stream: resid_pre of every block, then the final stream."""
    n_layers = model.cfg.n_layers
    final = f"blocks.{n_layers - 1}.hook_resid_post"

    def wanted(name: str) -> bool:
        return name.endswith("hook_resid_pre") or name == final

    _, cache = model.run_with_cache(prompts.clean_tokens.to(model_device(model)), names_filter=wanted)
    stack = [cache[f"blocks.{layer}.hook_resid_pre"] for layer in range(n_layers)] + [cache[final]]
    labels = [f"L{layer} resid_pre" for layer in range(n_layers)] + ["final"]
    return np.stack([s.detach().float().cpu().numpy() for s in stack]), labels
