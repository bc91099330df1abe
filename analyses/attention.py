"""Attention patterns of the heads with the largest positive and negative direct logit attribution.

Heads are ranked by their mean DLA (copy metric, as in dla_heads); the widget shows their attention patterns
[heads, dest, src] on the family's first clean prompt. The summary also gives, for every head shown, the
attention the final position pays to the day token(s) of the prompt, averaged over prompts, and ranks all
heads by that attention (`top_day_attention`).
"""

from __future__ import annotations

import torch

from analyses.attribution import head_attributions, parse_head_name, ranked_heads, run_clean_with_cache
from analyses.text import signed
from analyses.types import Analysis, Figure, PromptSet, Result

N_SHOWN = 3


def day_positions(prompts: PromptSet) -> torch.Tensor:
    """[batch, seq] bool: the positions holding an item of the sequence (with or without its leading space)."""
    return torch.tensor([[tok.strip() in prompts.items for tok in row] for row in prompts.str_tokens])


def patterns(cache, n_layers: int) -> torch.Tensor:
    """[layers, batch, heads, dest, src] attention patterns of the clean run."""
    return torch.stack([cache[f"blocks.{layer}.attn.hook_pattern"].float().cpu() for layer in range(n_layers)])


def compute(model, prompts: PromptSet) -> Result:
    _, cache = run_clean_with_cache(model, prompts)
    mean_attr = head_attributions(model, cache, prompts, "copy").mean(dim=-1).cpu()  # [layers, heads]
    pattern = patterns(cache, model.cfg.n_layers)
    on_days = (pattern[:, :, :, -1, :] * day_positions(prompts)[None, :, None, :]).sum(-1).mean(1)  # [layers, heads]
    shown = ranked_heads(mean_attr, N_SHOWN, largest=True) + ranked_heads(mean_attr, N_SHOWN, largest=False)
    for entry in shown:
        layer, head = parse_head_name(entry["head"])
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
    }
    return Result(summary=summary, arrays={"day_attention": on_days.numpy()}, widgets=widgets)


def _widget(title: str, pattern: torch.Tensor, prompts: PromptSet, heads: list[dict]) -> dict:
    stacked = torch.stack([pattern[layer, 0, head] for layer, head in (parse_head_name(h["head"]) for h in heads)])
    return {"title": title, "tokens": prompts.str_tokens[0], "attention": stacked.tolist(),
            "head_names": [f"{h['head']} (DLA {signed(h['value'])})" for h in heads]}


def figures(result: Result) -> list[Figure]:
    return []  # the circuitsvis widgets in result.widgets are the figures of this section


def narrative(result: Result) -> list[str]:
    s = result.summary
    best = s["top_positive"][0]
    sentences = [f"The head with the largest direct contribution, {best['head']}, sends "
                 f"{100 * best['day_attention']:.0f}% of the final position's attention to the day token(s), "
                 "averaged over prompts."]
    top_day = s["top_day_attention"][0]
    sentences.append(f"The head that attends most to the day token(s) from the final position is {top_day['head']} "
                     f"({100 * top_day['value']:.0f}%)"
                     + (", the same head." if top_day["head"] == best["head"] else "."))
    worst = s["top_negative"][0]
    if worst["value"] < 0:
        sentences.append(f"The most negative head, {worst['head']} ({signed(worst['value'])}), puts "
                         f"{100 * worst['day_attention']:.0f}% of its final-position attention on the day token(s).")
    return sentences


ATTENTION = Analysis(
    name="attention",
    title="Attention patterns of the top heads",
    definition="Attention patterns (destination × source) on the first prompt of the family, for the three heads "
               "with the largest and the three with the most negative direct logit attribution (vs the day in the "
               "prompt). Day attention: the weight from the final position to the day token(s), mean over prompts.",
    compute=compute, figures=figures, narrative=narrative,
)
