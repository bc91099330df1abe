"""Logit differences: how strongly the model prefers the right day, on clean and corrupted prompts.

Per prompt, at the final position:
  copy:      logit(correct) - logit(day named in the prompt), clean run (the notebook's comparison);
  clean:     logit(clean answer) - logit(corrupted answer), clean run;
  corrupted: logit(clean answer) - logit(corrupted answer), corrupted run (expected negative).
The clean and corrupted values are the 1 and 0 that activation patching normalises between.
"""

from __future__ import annotations

import numpy as np

from analyses import plots
from analyses.metrics import answer_pair, logit_diff, model_device
from analyses.text import num, signed
from analyses.types import Analysis, Figure, PromptSet, Result


def compute(model, prompts: PromptSet) -> Result:
    device = model_device(model)
    clean = model(prompts.clean_tokens.to(device))[:, -1, :].float()
    corrupted = model(prompts.corrupted_tokens.to(device))[:, -1, :].float()
    pos, neg = answer_pair(prompts, "clean_vs_corrupted")
    values = {
        "copy": logit_diff(clean, *answer_pair(prompts, "copy")),
        "clean": logit_diff(clean, pos, neg),
        "corrupted": logit_diff(corrupted, pos, neg),
    }
    arrays = {k: v.cpu().numpy() for k, v in values.items()}
    summary = {"family": prompts.family, "n_prompts": prompts.n_prompts}
    for key, arr in arrays.items():
        summary[f"{key}_logit_diff_mean"] = float(arr.mean())
        summary[f"{key}_logit_diff_min"] = float(arr.min())
        summary[f"{key}_logit_diff_positive_frac"] = float((arr > 0).mean())
        summary[f"{key}_logit_diff"] = arr.tolist()
    return Result(summary=summary, arrays=arrays, labels={"prompts": prompts.clean_prompts,
                                                         "corrupted_prompts": prompts.corrupted_prompts})


def figures(result: Result) -> list[Figure]:
    a = result.arrays
    fig = plots.bars(result.labels["prompts"], {
        "correct − day in prompt (clean run)": a["copy"],
        "clean − corrupted answer (clean run)": a["clean"],
        "clean − corrupted answer (corrupted run)": a["corrupted"],
    }, "Logit differences per prompt", "logit difference", height=440)
    return [Figure("logit-diff-per-prompt", fig)]


def narrative(result: Result) -> list[str]:
    s = result.summary
    n = s["n_prompts"]
    copy = s["copy_logit_diff_mean"]
    sentences = [
        f"On average the correct day's logit is {signed(copy)} above the day named in the prompt "
        f"(a probability ratio of {num(np.exp(copy))}×), positive for "
        f"{round(s['copy_logit_diff_positive_frac'] * n)} of {n} prompts.",
        f"Against the corrupted prompt's answer, the logit difference is {signed(s['clean_logit_diff_mean'])} on the "
        f"clean prompts and {signed(s['corrupted_logit_diff_mean'])} on the corrupted ones.",
    ]
    gap = s["clean_logit_diff_mean"] - s["corrupted_logit_diff_mean"]
    if gap <= 0:
        sentences.append("The clean and corrupted runs are not separated (the gap is not positive), so activation "
                         "patching's normalised scores are not meaningful for this family on this model.")
    return sentences


LOGIT_DIFF = Analysis(
    name="logit_diff",
    title="Logit difference",
    definition="At the final position: logit(correct) − logit(day named in the prompt), the notebook's copy "
               "comparison; and logit(clean answer) − logit(corrupted answer), on the clean and on the corrupted "
               "prompts. A difference d means the correct token is e^d times as likely as the other.",
    compute=compute, figures=figures, narrative=narrative,
)
