"""Direct logit attribution per attention head.

attr[layer, head, i] = ln_scale(head_output[i, -1]) @ (W_U[:, a_i] - W_U[:, b_i]): the head's share of its
layer's attention attribution. The heads plus the layer's output bias term sum to it; with the value biases folded
(`fold_value_biases`, recorded in the model's weight processing) that bias term also holds every head's b_V W_O,
which does not depend on where the head looks, and is reported per layer (`output_bias_by_layer`), not given to
any head. For models with a norm after attention (Gemma 2 and 3), a head's value is its share of the NORMALISED
attention output, the norm's scale frozen at this run's value (`post_attention_norm`). Shapes: [layers, heads, batch].
Summary contract: `top_positive` / `top_negative` are lists of {"name": "L9H1", "value": 1.23} sorted by value
(largest first / most negative first), for the copy metric (correct vs the item in the prompt); `logit_diff_mean`
is the model's own mean logit difference, against which the narrative's size threshold is set.
"""

from __future__ import annotations

from typing import Annotated

import numpy as np

from analyses.common import phrases, plots
from analyses.common.contract import Count, FamilyHeader, Headline, Ranked
from analyses.common.metrics import answer_pair, logit_diff
from analyses.common.text import signed
from analyses.common.thresholds import MIN_EFFECT_FRACTION, MIN_EFFECT_LOGITS, SCALE_LOGITS, notable_logits
from analyses.common.types import Analysis, Figure, PromptSet, Result
from analyses.methods.attribution import (
    METRIC_LABELS,
    head_attributions,
    head_name,
    layer_attributions,
    ranked_heads,
    run_clean_with_cache,
)

TOP_K = 5


def compute(model, prompts: PromptSet) -> Result:
    final_logits, cache = run_clean_with_cache(model, prompts)
    arrays, summary = {}, {"family": prompts.family}
    for metric in METRIC_LABELS:
        attr = head_attributions(model, cache, prompts, metric)  # [layers, heads, batch]
        arrays[metric] = attr.cpu().numpy()
        mean = attr.mean(dim=-1).cpu()
        prefix = "" if metric == "copy" else f"{metric}_"
        summary[f"{prefix}top_positive"] = ranked_heads(mean, TOP_K, largest=True)
        summary[f"{prefix}top_negative"] = ranked_heads(mean, TOP_K, largest=False)
        summary[f"{prefix}logit_diff_mean"] = float(logit_diff(final_logits, *answer_pair(prompts, metric)).mean())
        layers, labels = layer_attributions(model, cache, prompts, metric)  # [components, batch]
        attn = layers[[i for i, label in enumerate(labels) if label.endswith("attn_out")]]  # [layers, batch]
        summary[f"{prefix}output_bias_by_layer"] = (attn - attr.sum(dim=1)).mean(dim=-1).cpu().tolist()
    summary["n_layers"], summary["n_heads"] = model.cfg.n_layers, model.cfg.n_heads
    summary["post_attention_norm"] = "blocks.0.ln1_post.hook_scale" in cache.cache_dict
    return Result(summary=summary, arrays=arrays)


def figures(result: Result) -> list[Figure]:
    out = []
    for metric, label in METRIC_LABELS.items():
        mean = result.arrays[metric].mean(axis=-1)  # [layers, heads]
        layers, heads = mean.shape
        hover = np.array([[head_name(layer, head) for head in range(heads)] for layer in range(layers)])
        fig = plots.heatmap(mean, [f"H{h}" for h in range(heads)], [f"L{layer}" for layer in range(layers)],
                            f"Direct logit attribution per head, {label} (mean over prompts)",
                            "logit diff", hover=hover, floor=SCALE_LOGITS)
        out.append(Figure(f"dla-heads-{metric.replace('_', '-')}", fig))
    return out


def narrative(result: Result) -> list[str]:
    s = result.summary
    pos, neg = s["top_positive"], s["top_negative"]
    reference = s["logit_diff_mean"]
    sentences = []
    positive = [h for h in pos if h["value"] > 0 and notable_logits(h["value"], reference)][:3]
    negative = [h for h in neg if h["value"] < 0 and notable_logits(h["value"], reference)][:3]
    if positive:
        sentences.append("Against the item in the prompt, the heads that write most for the correct item are "
                         + ", ".join(f"{h['name']} ({signed(h['value'])})" for h in positive)
                         + f", of a logit difference of {signed(reference)}.")
    if negative:
        sentences.append("The heads that write most against it are "
                         + ", ".join(f"{h['name']} ({signed(h['value'])})" for h in negative) + ".")
    if not positive and not negative:
        sentences.append(phrases.nothing_stands_out_for("the heads", (
            f"none writes at least {MIN_EFFECT_LOGITS:g} logits and {MIN_EFFECT_FRACTION:.0%} of the logit difference "
            f"({signed(reference)}) directly")))
    other = s["clean_vs_corrupted_top_positive"][0]
    if notable_logits(other["value"], s["clean_vs_corrupted_logit_diff_mean"]):
        same = "the same head" if other["name"] == pos[0]["name"] else "a different head"
        sentences.append(f"Against the corrupted answer, the top head is {other['name']} ({signed(other['value'])}), "
                         f"{same} as for the copy comparison.")
    return sentences


class DlaHeadsSummary(FamilyHeader):
    """Direct logit attribution per head, for the copy metric and for clean vs corrupted answer."""

    top_positive: Annotated[list[Ranked], "heads by mean copy DLA, largest first (value: logits)"]
    top_negative: Annotated[list[Ranked], "heads by mean copy DLA, most negative first"]
    logit_diff_mean: Annotated[float, "the model's mean copy logit difference, logits"]
    output_bias_by_layer: Annotated[list[float], "per layer, the attention output bias term's mean copy share"]
    clean_vs_corrupted_top_positive: Annotated[list[Ranked], "the same ranking for logit(clean answer) − "
                                                                 "logit(corrupted answer)"]
    clean_vs_corrupted_top_negative: Annotated[list[Ranked], "most negative first, that metric"]
    clean_vs_corrupted_logit_diff_mean: Annotated[float, "the model's mean clean vs corrupted logit difference"]
    clean_vs_corrupted_output_bias_by_layer: Annotated[list[float], "per layer, the bias term's share, that metric"]
    n_layers: Annotated[Count, "layers of the model"]
    n_heads: Annotated[Count, "heads per layer"]
    post_attention_norm: Annotated[bool, "the model normalises attention output (Gemma 2/3): head shares are of "
                                         "the normalised output, the norm's scale frozen"]


DLA_HEADS = Analysis(
    headlines=(Headline("top_positive", "top heads by DLA", format="ranking", places=("comparison",)),),
    summary_type=DlaHeadsSummary,
    name="dla_heads",
    title="Direct logit attribution by head",
    definition="Each head's output at the final position, scaled by the final LayerNorm of the run and projected on "
               "W_U[:, correct] − W_U[:, other]. A layer's heads plus its output bias sum to that layer's attention "
               "attribution; the folded value biases (b_V W_O) stay in that bias term. Direct effects only: what a "
               "head does through later layers is not counted here. With a norm after attention (Gemma 2/3), a "
               "head's value is its share of the normalised attention output, with that norm's scale frozen at this "
               "run's value.",
    compute=compute, figures=figures, narrative=narrative,
)
