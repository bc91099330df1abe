"""Activation patching per layer and position: residual stream, attention output, MLP output.

For every layer L and position p, the corrupted prompts are run with one activation at (L, p) taken from the
clean prompts: the residual stream entering block L (resid_pre), the attention output of layer L (attn_out) or
its MLP output (mlp_out). The effect is normalised so that 0 is the corrupted run and 1 the clean run, on the
patching logit difference LD = logit(clean answer) - logit(corrupted answer) at the final position
(`analyses.intervention` has the method and how it is made fast, `analyses.stats` the normalisation).
Attribution patching (first-order estimate from one forward and one backward pass) is computed beside it.

Arrays, per sweep s in (resid_pre, attn_out, mlp_out), L layers, S positions, B prompts:
    {s}_exact, {s}_attribution, {s}_ci_low, {s}_ci_high      [L, S]   headline effect (normalised mean), 95% CI
    {s}_exact_per_prompt, {s}_attribution_per_prompt        [L, S, B] per-prompt normalisation
    {s}_exact_logit_diff, {s}_attribution_logit_diff        [L, S, B] raw patched LD (attribution: estimated)
    clean_logit_diff, corrupted_logit_diff                  [B]
Labels: `positions` (x axis, "5:' Monday'*", * = the token differs between prompts), `layers`.
Summary: {s}_top = [{"component": "L3 pos5 ' Monday'", "value", "ci_low", "ci_high", "attribution"}] sorted by
|value|, largest first; attribution_corr_{s} (Pearson r, attribution vs exact, over all cells, when defined);
clean_logit_diff_mean, corrupted_logit_diff_mean.
"""

from __future__ import annotations

import numpy as np

from analyses import intervention as core
from analyses import stats as st
from analyses.patching_display import (
    agreement_scatter,
    baseline_sentences,
    correlation_sentence,
    effect_phrase,
    hover_text,
    paired_heatmap,
    unit_label,
)
from analyses.types import Analysis, Figure, PromptSet, Result

NAME = "patching_positions"
TOP_K = 5
WHAT = {"resid_pre": "the residual stream before layer {layer}", "attn_out": "the attention output of layer {layer}",
        "mlp_out": "the MLP output of layer {layer}"}
SHORT = {"resid_pre": "residual stream", "attn_out": "attention output", "mlp_out": "MLP output"}


def position_labels(prompts: PromptSet) -> list[str]:
    """'p:'token'' per position, from the first clean prompt; '*' marks tokens that differ between prompts."""
    first = prompts.str_tokens[0]
    varies = [len({row[p] for row in prompts.str_tokens}) > 1 for p in range(len(first))]
    return [f"{p}:'{tok}'" + ("*" if v else "") for p, (tok, v) in enumerate(zip(first, varies))]


def compute(model, prompts: PromptSet) -> Result:
    results = core.run_sweeps(model, prompts, core.POSITION_SWEEPS)
    positions = position_labels(prompts)
    n_layers = model.cfg.n_layers
    names = np.array([[f"L{layer} pos{p[:p.index(':')]} {p[p.index(':') + 1:]}" for p in positions]
                      for layer in range(n_layers)])
    summary = st.common_summary(results, prompts, n_layers)
    arrays = {"clean_logit_diff": results.clean_ld, "corrupted_logit_diff": results.corrupted_ld}
    for sweep in core.POSITION_SWEEPS:
        stats = st.sweep_stats(results, sweep)
        arrays.update(st.stats_arrays(sweep, stats, results))
        summary[f"{sweep}_top"] = st.ranked(stats, names, TOP_K)
        if np.isfinite(stats.correlation):
            summary[f"attribution_corr_{sweep}"] = stats.correlation
    if summary["normalised"]:  # a check of the machinery: this patched run is the clean run, so it must be 1
        summary["resid_pre_all_positions_layer0_effect"] = float(st.normalise_mean(
            results.everything_ld, results.clean_ld, results.corrupted_ld))
    labels = {"positions": positions, "layers": [f"L{layer}" for layer in range(n_layers)]}
    return Result(summary=summary, arrays=arrays, labels=labels)








def figures(result: Result) -> list[Figure]:
    positions, layers = result.labels["positions"], result.labels["layers"]
    names = np.array([[f"{layer} pos {p}" for p in positions] for layer in layers])
    out = []
    for sweep in core.POSITION_SWEEPS:
        title = f"Patching the {SHORT[sweep]}, per layer and position (clean → corrupted)"
        fig = paired_heatmap(result.arrays[f"{sweep}_exact"], result.arrays[f"{sweep}_attribution"], positions,
                             layers, hover_text(result, sweep, names), title, unit_label(result.summary),
                             "position (* differs between prompts)")
        out.append(Figure(f"{NAME}-{sweep.replace('_', '-')}", fig))
    out.append(Figure(f"{NAME}-attribution-vs-exact", agreement_scatter(result, core.POSITION_SWEEPS, names)))
    return out














def narrative(result: Result) -> list[str]:
    s = result.summary
    sentences = baseline_sentences(s)
    for sweep in core.POSITION_SWEEPS:
        top = s[f"{sweep}_top"][0]
        layer, pos, token = _parse_component(top["component"])
        if token.endswith("*"):
            token = f"{token[:-1]} in the first prompt; this token differs between prompts"
        sentences.append(f"Patching {WHAT[sweep].format(layer=layer)} at position {pos} ({token}) "
                         f"{effect_phrase(top, s['normalised'])}, the largest effect of any layer and position.")
    corr = correlation_sentence(s, core.POSITION_SWEEPS, SHORT)
    if corr:
        sentences.append(corr)
    if "resid_pre_all_positions_layer0_effect" in s:
        sentences.append("As a check, patching the whole residual stream before layer 0 (every position at once) "
                         f"recovers {s['resid_pre_all_positions_layer0_effect']:.4f} of the gap; it must be 1.")
    return sentences


def _parse_component(name: str) -> tuple[int, int, str]:
    """'L3 pos5 ' Monday'*' -> (3, 5, "' Monday'*")."""
    layer, pos, token = name.split(" ", 2)
    return int(layer[1:]), int(pos[3:]), token


PATCHING_POSITIONS = Analysis(
    name=NAME,
    title="Activation patching by layer and position",
    definition="Each cell: the corrupted prompts run with one activation (the residual stream entering the layer, "
               "the attention output or the MLP output, at one position) taken from the clean prompts. "
               + st.NORMALISATION + ". Intervals: 95% bootstrap over prompts (1000 resamples). Right-hand panels: "
               "attribution patching, the first-order estimate (clean − corrupted activation) · gradient of the "
               "logit difference on the corrupted run, from one forward and one backward pass.",
    compute=compute, figures=figures, narrative=narrative,
    description="Which layers and positions carry the information that decides the answer.",
)
