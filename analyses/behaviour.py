"""Behaviour: does the model name the right day at all?

For each clean prompt, read the final-position logits [batch, vocab]:
  - the top-k tokens of the family's first prompt (token, logit, probability), as in the notebook;
  - per prompt: the rank of the correct answer in the whole vocabulary (1 = top), P(correct),
    and the argmax among the seven day tokens;
  - per family: top-1 accuracy over the vocabulary, accuracy of the argmax over the seven days,
    mean P(correct), and a 7x7 confusion matrix (day in the prompt -> predicted day).
"""

from __future__ import annotations

import numpy as np
import torch

from analyses import plots
from analyses.attribution import run_clean_with_cache
from analyses.text import num
from analyses.types import DAYS, Analysis, Figure, PromptSet, Result

TOP_K = 10


def compute(model, prompts: PromptSet) -> Result:
    final_logits, _ = run_clean_with_cache(model, prompts)  # [batch, vocab]
    final_logits = final_logits.cpu()
    probs = final_logits.softmax(dim=-1)
    rows = torch.arange(prompts.n_prompts)
    correct_logit = final_logits[rows, prompts.answer_ids]
    ranks = 1 + (final_logits > correct_logit[:, None]).sum(dim=-1)  # [batch]
    day_choice = final_logits[:, prompts.day_token_ids].argmax(dim=-1)  # [batch] index into DAYS
    answer_days = torch.tensor(prompts.answer_days())
    confusion = np.zeros((7, 7))
    for prompt_day, predicted in zip(prompts.days, day_choice.tolist()):
        confusion[prompt_day, predicted] += 1
    top = probs[0].topk(TOP_K)
    tokenizer = model.tokenizer
    summary = {
        "family": prompts.family,
        "n_prompts": prompts.n_prompts,
        "top1_acc": float((ranks == 1).float().mean()),
        "day7_acc": float((day_choice == answer_days).float().mean()),
        "p_correct_mean": float(probs[rows, prompts.answer_ids].mean()),
        "copy_choice_frac": float((day_choice == torch.tensor([d % 7 for d in _copy_days(prompts)])).float().mean()),
        "first_prompt": prompts.clean_prompts[0],
        "first_top_token": tokenizer.decode([int(top.indices[0])]),
        "first_top_prob": float(top.values[0]),
        "first_correct": " " + DAYS[answer_days[0]],
        "rank_correct": ranks.tolist(),
        "p_correct": probs[rows, prompts.answer_ids].tolist(),
        "predicted_day": [DAYS[i] for i in day_choice.tolist()],
        "correct_day": [DAYS[i] for i in answer_days.tolist()],
    }
    return Result(
        summary=summary,
        arrays={"topk_logits": final_logits[0, top.indices].numpy(), "topk_probs": top.values.numpy(),
                "confusion": confusion},
        labels={"topk_tokens": [tokenizer.decode([int(i)]) for i in top.indices], "prompts": prompts.clean_prompts},
    )


def _copy_days(prompts: PromptSet) -> list[int]:
    """The day index of each prompt's copy distractor (the day named in the prompt that is scored against)."""
    lookup = {int(t): i for i, t in enumerate(prompts.day_token_ids)}
    return [lookup[int(t)] for t in prompts.copy_ids]


def figures(result: Result) -> list[Figure]:
    s, a, lab = result.summary, result.arrays, result.labels
    topk = plots.table(
        ["rank", "token", "logit", "probability"],
        [list(range(1, len(lab["topk_tokens"]) + 1)), [repr(t) for t in lab["topk_tokens"]],
         [f"{num(v)}" for v in a["topk_logits"]], [f"{num(100 * v)}%" for v in a["topk_probs"]]],
        f"Top {len(lab['topk_tokens'])} next tokens for {s['first_prompt']!r}",
    )
    per_prompt = plots.bars(lab["prompts"], {"P(correct)": np.asarray(s["p_correct"])},
                            "Probability of the correct day, per prompt", "P(correct)", height=420)
    confusion = plots.heatmap(a["confusion"], [f"→ {d}" for d in DAYS], list(DAYS),
                              "Day in the prompt (rows) → day the model prefers among the seven (columns)",
                              "prompts", zmid=None, height=420)
    confusion.update_traces(colorscale="Blues", reversescale=False, zmin=0, zmax=max(1.0, float(a["confusion"].max())))
    return [Figure("behaviour-topk", topk), Figure("behaviour-p-correct", per_prompt),
            Figure("behaviour-confusion", confusion)]


def narrative(result: Result) -> list[str]:
    s = result.summary
    n = s["n_prompts"]
    top1, day7 = round(s["top1_acc"] * n), round(s["day7_acc"] * n)
    sentences = [
        f"The correct day is the single most likely next token for {top1} of {n} prompts, and the most likely "
        f"of the seven day names for {day7} of {n}; the mean probability of the correct day is "
        f"{100 * s['p_correct_mean']:.1f}%.",
        f"For {s['first_prompt']!r} the top token is {s['first_top_token']!r} "
        f"({100 * s['first_top_prob']:.1f}%); the correct answer is {s['first_correct']!r}, "
        f"ranked {s['rank_correct'][0]} in the vocabulary.",
    ]
    copies = round(s["copy_choice_frac"] * n)
    if copies:
        sentences.append(f"Among the seven days, the model picks the day named in the prompt (the copy distractor) "
                         f"for {copies} of {n} prompts.")
    return sentences


BEHAVIOUR = Analysis(
    name="behaviour",
    title="Behaviour",
    definition="Top-1 accuracy: the correct day (with its leading space) is the argmax over the whole vocabulary "
               "at the final position. 7-day accuracy: it is the argmax among the seven day tokens. "
               "P(correct): its softmax probability over the vocabulary.",
    compute=compute, figures=figures, narrative=narrative,
)
