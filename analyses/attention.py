"""Attention patterns of the heads with the largest positive and negative direct logit attribution.

Heads are ranked by their mean DLA (copy metric, as in dla_heads); the widget shows their attention patterns
[heads, dest, src] on the family's first clean prompt. The summary also gives, for every head shown, the
attention the final position pays to the day token(s) of the prompt, averaged over prompts, and ranks all
heads by that attention (`top_day_attention`).

Honest naming: the narrative names a head for its direct contribution only when its DLA passes the report's rule for
raw effects (`thresholds.notable_logits`, against the clean run's mean copy LD), and for its day attention only when
that is at least ATTENTION_OVER_UNIFORM times the uniform baseline: the share of the final position's attention that
the day token(s) would get if it attended evenly to every position it can see (1 day token of 9 positions: 11%).
"""

from __future__ import annotations

from typing import Annotated, NotRequired

import torch

from analyses.common import phrases
from analyses.common.contract import FamilyHeader, Fraction, Ranked
from analyses.common.metrics import logit_diff
from analyses.common.text import signed
from analyses.common.thresholds import ATTENTION_OVER_UNIFORM, MIN_EFFECT_FRACTION, MIN_EFFECT_LOGITS, notable_logits
from analyses.common.types import Analysis, Figure, PromptSet, Result
from analyses.methods.attribution import head_attributions, parse_head_name, ranked_heads, run_clean_with_cache

N_SHOWN = 3


def day_positions(prompts: PromptSet) -> torch.Tensor:
    """[batch, seq] bool: the positions holding an item of the sequence (with or without its leading space)."""
    return torch.tensor([[tok.strip() in prompts.items for tok in row] for row in prompts.str_tokens])


def uniform_day_attention(prompts: PromptSet) -> float:
    """The day tokens' share of the final position's attention if it were spread evenly over every position it sees
    (causal attention: all of them), mean over prompts."""
    return float(day_positions(prompts).float().mean(-1).mean())


def patterns(cache, n_layers: int) -> torch.Tensor:
    """[layers, batch, heads, dest, src] attention patterns of the clean run."""
    return torch.stack([cache[f"blocks.{layer}.attn.hook_pattern"].float().cpu() for layer in range(n_layers)])


def compute(model, prompts: PromptSet) -> Result:
    logits, cache = run_clean_with_cache(model, prompts)
    mean_attr = head_attributions(model, cache, prompts, "copy").mean(dim=-1).cpu()  # [layers, heads]
    pattern = patterns(cache, model.cfg.n_layers)
    on_days = (pattern[:, :, :, -1, :] * day_positions(prompts)[None, :, None, :]).sum(-1).mean(1)  # [layers, heads]
    shown = ranked_heads(mean_attr, N_SHOWN, largest=True) + ranked_heads(mean_attr, N_SHOWN, largest=False)
    for entry in shown:
        layer, head = parse_head_name(entry["name"])
        entry["day_attention"] = float(on_days[layer, head])
    widgets = [_widget(title, pattern, prompts, heads) for title, heads in
               (("Top positive heads by direct logit attribution", shown[:N_SHOWN]),
                ("Top negative heads by direct logit attribution", shown[N_SHOWN:]))]
    summary = {
        "family": prompts.family,
        "prompt": prompts.clean_prompts[0],
        "top_positive": shown[:N_SHOWN],
        "top_negative": shown[N_SHOWN:],
        "top_day_attention": ranked_heads(on_days, N_SHOWN, largest=True),
        "uniform_day_attention": uniform_day_attention(prompts),
        "copy_logit_diff_mean": float(logit_diff(logits, prompts.answer_ids, prompts.copy_ids).mean()),
    }
    return Result(summary=summary, arrays={"day_attention": on_days.numpy()}, widgets=widgets)


def _widget(title: str, pattern: torch.Tensor, prompts: PromptSet, heads: list[dict]) -> dict:
    stacked = torch.stack([pattern[layer, 0, head] for layer, head in (parse_head_name(h["name"]) for h in heads)])
    # the head selector's tiles hold a short name only (a value in the label overflows the tile); the values go in
    # the widget's title, above it
    values = ", ".join(f"{h['name']} {signed(h['value'])}" for h in heads)
    return {"title": f"{title} (DLA: {values})", "tokens": prompts.str_tokens[0], "attention": stacked.tolist(),
            "head_names": [h["name"] for h in heads]}


def figures(result: Result) -> list[Figure]:
    return []  # the circuitsvis widgets in result.widgets are the figures of this section


def narrative(result: Result) -> list[str]:
    s = result.summary
    if "uniform_day_attention" not in s:  # results saved before the baseline was recorded
        return _narrative_without_baseline(s)
    uniform = s["uniform_day_attention"]
    reference = s["copy_logit_diff_mean"]
    sentences = [f"If the final position attended evenly to every position, the day token(s) would get "
                 f"{100 * uniform:.0f}% of its attention (the uniform baseline); a head's day attention is named only "
                 f"at {ATTENTION_OVER_UNIFORM:g}× that ({100 * ATTENTION_OVER_UNIFORM * uniform:.0f}%), and a head's "
                 f"direct contribution only at ≥ {100 * MIN_EFFECT_FRACTION:.0f}% of the clean copy LD "
                 f"({signed(reference)}) and ≥ {MIN_EFFECT_LOGITS:g} logit."]
    named = [e for e in s["top_positive"] + s["top_negative"] if notable_logits(e["value"], reference)]
    for e in named[:2]:
        sentences.append(f"{e['name']} (direct contribution {signed(e['value'])}) sends {100 * e['day_attention']:.0f}%"
                         f" of the final position's attention to the day token(s), averaged over prompts"
                         + (f" (under {ATTENTION_OVER_UNIFORM:g}× the uniform baseline)."
                            if not _attends(e["day_attention"], uniform) else "."))
    if not named:
        sentences.append(phrases.nothing_stands_out("No head's direct contribution passes the naming threshold"))
    attending = [e for e in s["top_day_attention"] if _attends(e["value"], uniform)]
    if attending:
        listed = phrases.named_percentages(attending)
        sentences.append(f"Heads that attend from the final position to the day token(s) at ≥ "
                         f"{ATTENTION_OVER_UNIFORM:g}× the uniform baseline: {listed}.")
    else:
        most = s["top_day_attention"][0]
        sentences.append(f"No head attends to the day token(s) from the final position at ≥ "
                         f"{ATTENTION_OVER_UNIFORM:g}× the uniform baseline (the most: {most['name']}, "
                         f"{100 * most['value']:.0f}%).")
    return sentences


def _attends(share: float, uniform: float) -> bool:
    return share >= ATTENTION_OVER_UNIFORM * uniform


def _narrative_without_baseline(s: dict) -> list[str]:
    best = s["top_positive"][0]
    sentences = [f"The head with the largest direct contribution, {best['name']}, sends "
                 f"{100 * best['day_attention']:.0f}% of the final position's attention to the day token(s), "
                 "averaged over prompts."]
    top_day = s["top_day_attention"][0]
    sentences.append(f"The head that attends most to the day token(s) from the final position is {top_day['name']} "
                     f"({100 * top_day['value']:.0f}%)"
                     + (", the same head." if top_day["name"] == best["name"] else "."))
    worst = s["top_negative"][0]
    if worst["value"] < 0:
        sentences.append(f"The most negative head, {worst['name']} ({signed(worst['value'])}), puts "
                         f"{100 * worst['day_attention']:.0f}% of its final-position attention on the day token(s).")
    return sentences


class AttentionHead(Ranked):
    day_attention: NotRequired[Annotated[Fraction, "the final position's attention to the item token(s), mean over "
                                                   "prompts"]]


class AttentionSummary(FamilyHeader):
    """The heads with the largest positive and negative direct logit attribution, and where they look."""

    prompt: Annotated[str, "the prompt the widgets show (the family's first clean prompt)"]
    top_positive: Annotated[list[AttentionHead], "heads by mean copy DLA, largest first (value: logits)"]
    top_negative: Annotated[list[AttentionHead], "heads by mean copy DLA, most negative first"]
    top_day_attention: Annotated[list[Ranked], "heads by their final position's attention to the item "
                                               "token(s) (value: fraction)"]
    uniform_day_attention: Annotated[Fraction, "the item tokens' share of the final position's attention if it were "
                                               "uniform (mean over prompts)"]
    copy_logit_diff_mean: Annotated[float, "the clean run's mean copy LD, the reference of the naming threshold"]


ATTENTION = Analysis(
    summary_type=AttentionSummary,
    name="attention",
    title="Attention patterns of the top heads",
    definition="Attention patterns (destination × source) on the first prompt of the family, for the three heads "
               "with the largest and the three with the most negative direct logit attribution (vs the day in the "
               "prompt). Day attention: the weight from the final position to the day token(s), mean over prompts.",
    compute=compute, figures=figures, narrative=narrative,
)
