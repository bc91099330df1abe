"""Direct logit attribution per attention head.

attr[layer, head, i] = ln_scale(head_output[i, -1]) @ (W_U[:, a_i] - W_U[:, b_i]): the head's share of its
layer's attention attribution (the heads plus the layer's output bias sum to it). Shapes: [layers, heads, batch].
Summary contract: `top_positive` / `top_negative` are lists of {"head": "L9H1", "value": 1.23} sorted by value
(largest first / most negative first), for the copy metric (correct vs the day in the prompt).
"""

from __future__ import annotations

import numpy as np

from analyses import plots
from analyses.attribution import METRIC_LABELS, head_attributions, head_name, ranked_heads, run_clean_with_cache
from analyses.text import signed
from analyses.types import Analysis, Figure, PromptSet, Result

TOP_K = 5


def compute(model, prompts: PromptSet) -> Result:
    _, cache = run_clean_with_cache(model, prompts)
    arrays, summary = {}, {"family": prompts.family}
    for metric in METRIC_LABELS:
        attr = head_attributions(model, cache, prompts, metric)  # [layers, heads, batch]
        arrays[metric] = attr.cpu().numpy()
        mean = attr.mean(dim=-1).cpu()
        prefix = "" if metric == "copy" else f"{metric}_"
        summary[f"{prefix}top_positive"] = ranked_heads(mean, TOP_K, largest=True)
        summary[f"{prefix}top_negative"] = ranked_heads(mean, TOP_K, largest=False)
    summary["n_layers"], summary["n_heads"] = model.cfg.n_layers, model.cfg.n_heads
    return Result(summary=summary, arrays=arrays)


def figures(result: Result) -> list[Figure]:
    out = []
    for metric, label in METRIC_LABELS.items():
        mean = result.arrays[metric].mean(axis=-1)  # [layers, heads]
        layers, heads = mean.shape
        hover = np.array([[head_name(layer, head) for head in range(heads)] for layer in range(layers)])
        fig = plots.heatmap(mean, [f"H{h}" for h in range(heads)], [f"L{layer}" for layer in range(layers)],
                            f"Direct logit attribution per head, {label} (mean over prompts)",
                            "logit diff", hover=hover)
        out.append(Figure(f"dla-heads-{metric.replace('_', '-')}", fig))
    return out


def narrative(result: Result) -> list[str]:
    s = result.summary
    pos, neg = s["top_positive"], s["top_negative"]
    sentences = []
    positive = [h for h in pos if h["value"] > 0][:3]
    if positive:
        sentences.append("Against the day in the prompt, the heads that write most for the correct day are "
                         + ", ".join(f"{h['head']} ({signed(h['value'])})" for h in positive) + ".")
    negative = [h for h in neg if h["value"] < 0][:3]
    if negative:
        sentences.append("The heads that write most against it are "
                         + ", ".join(f"{h['head']} ({signed(h['value'])})" for h in negative) + ".")
    other = s["clean_vs_corrupted_top_positive"][0]
    same = "the same head" if other["head"] == pos[0]["head"] else "a different head"
    sentences.append(f"Against the corrupted answer, the top head is {other['head']} ({signed(other['value'])}), "
                     f"{same} as for the copy comparison.")
    return sentences


DLA_HEADS = Analysis(
    name="dla_heads",
    title="Direct logit attribution by head",
    definition="Each head's output at the final position, scaled by the final LayerNorm of the run and projected on "
               "W_U[:, correct] − W_U[:, other]. A layer's heads plus its output bias sum to that layer's attention "
               "attribution. Direct effects only: what a head does through later layers is not counted here.",
    compute=compute, figures=figures, narrative=narrative,
)
