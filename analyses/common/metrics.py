"""The two metrics every analysis reports, and the residual-stream directions they read.

copy logit difference:    logit(correct answer) - logit(day named in the prompt)  (the seed notebook's comparison)
patching logit difference: logit(clean answer) - logit(corrupted answer)
Both are read at the final position. Directions live in the residual stream after the final
LayerNorm's scaling: metric = (scaled resid) @ (W_U[:, a] - W_U[:, b]) + (b_U[a] - b_U[b]).

The seed notebook is the SERI MATS exercise this project grew from (GPT-2 small on "Today it is Monday so tomorrow it
is"; README, References).
"""

from __future__ import annotations

import torch

from analyses.common import thresholds
from analyses.common.types import PromptSet

METRICS = {
    "copy": "logit(correct) − logit(item in the prompt)",
    "clean_vs_corrupted": "logit(clean answer) − logit(corrupted answer)",
}


def answer_pair(prompts: PromptSet, metric: str) -> tuple[torch.Tensor, torch.Tensor]:
    """(positive, negative) answer token ids, each [batch], for a metric name of METRICS."""
    if metric == "copy":
        return prompts.answer_ids, prompts.copy_ids
    if metric == "clean_vs_corrupted":
        return prompts.answer_ids, prompts.corrupted_answer_ids
    raise ValueError(f"unknown metric {metric!r}")


def logit_diff(final_logits: torch.Tensor, pos_ids: torch.Tensor, neg_ids: torch.Tensor) -> torch.Tensor:
    """[batch, vocab] final-position logits -> [batch] logit(pos) - logit(neg)."""
    rows = torch.arange(final_logits.shape[0], device=final_logits.device)
    return final_logits[rows, pos_ids.to(final_logits.device)] - final_logits[rows, neg_ids.to(final_logits.device)]


def diff_directions(model, pos_ids: torch.Tensor, neg_ids: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Unembedding directions [batch, d_model] and bias terms [batch] of logit(pos) - logit(neg)."""
    W_U, b_U = model.W_U, model.b_U
    pos, neg = pos_ids.to(W_U.device), neg_ids.to(W_U.device)
    return (W_U[:, pos] - W_U[:, neg]).T, b_U[pos] - b_U[neg]


def item_choice_correct(model, prompts: PromptSet) -> torch.Tensor:
    """[batch] bool: the correct item is the argmax among the sequence's items on each clean prompt."""
    final = model(prompts.clean_tokens.to(model_device(model)))[:, -1, :].float().cpu()
    choice = final[:, prompts.item_token_ids].argmax(dim=-1)
    return choice == torch.tensor(prompts.answer_items())


def does_the_task(model, prompts: PromptSet) -> bool:
    """Whether the model names the right item above chance on the clean prompts (`thresholds.above_chance`)."""
    correct = item_choice_correct(model, prompts)
    return thresholds.above_chance(int(correct.sum()), prompts.n_prompts, prompts.n_items)[0]


def model_device(model) -> torch.device:
    return model.W_U.device
