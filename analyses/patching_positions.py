"""Activation patching per layer and position: residual stream, attention output, MLP output.

For every layer L and position p, the corrupted prompts are run with one activation at (L, p) taken from the
clean prompts: the residual stream entering block L (resid_pre), the attention output of layer L (attn_out) or
its MLP output (mlp_out). The effect is normalised so that 0 is the corrupted run and 1 the clean run, on the
patching logit difference LD = logit(clean answer) - logit(corrupted answer) at the final position
(`analyses.patching_core` has the method, the normalisation and how it is made fast). Attribution patching
(first-order estimate from one forward and one backward pass) is computed beside it.

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
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from analyses import patching_core as core
from analyses.plots import LAYOUT
from analyses.precision import dtype_name, identity_tolerance
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
    summary = core.common_summary(results, prompts, n_layers)
    arrays = {"clean_logit_diff": results.clean_ld, "corrupted_logit_diff": results.corrupted_ld}
    for sweep in core.POSITION_SWEEPS:
        stats = core.sweep_stats(results, sweep)
        arrays.update(core.stats_arrays(sweep, stats, results))
        summary[f"{sweep}_top"] = core.ranked(stats, names, TOP_K)
        if np.isfinite(stats.correlation):
            summary[f"attribution_corr_{sweep}"] = stats.correlation
    if summary["normalised"]:  # a check of the machinery: this patched run is the clean run, so it must be 1
        summary["resid_pre_all_positions_layer0_effect"] = float(core.normalise_mean(
            results.everything_ld, results.clean_ld, results.corrupted_ld))
        summary["dtype"] = dtype_name(model)
        summary["identity_tolerance"] = identity_tolerance(model)  # what |effect - 1| may reach in this dtype
    labels = {"positions": positions, "layers": [f"L{layer}" for layer in range(n_layers)]}
    return Result(summary=summary, arrays=arrays, labels=labels)


def paired_heatmap(exact: np.ndarray, attribution: np.ndarray, x: list[str], y: list[str], hover: np.ndarray,
                   title: str, colorbar: str, xaxis: str) -> go.Figure:
    """Exact (left) and attribution patching (right) on one shared, zero-centred colour scale."""
    values = np.abs(np.concatenate([exact.ravel(), attribution.ravel()]))
    values = values[np.isfinite(values)]
    limit = float(values.max()) if values.size and values.max() > 0 else 1.0
    fig = make_subplots(rows=1, cols=2, shared_yaxes=True, horizontal_spacing=0.04,
                        subplot_titles=("Exact activation patching", "Attribution patching (estimate)"))
    for col, (z, kind) in enumerate(((exact, "exact"), (attribution, "attribution")), start=1):
        fig.add_trace(go.Heatmap(z=z, x=x, y=y, coloraxis="coloraxis", customdata=hover,
                                 hovertemplate="%{customdata}<br>" + kind + ": %{z:.3f}<extra></extra>"), 1, col)
    fig.update_layout(coloraxis=dict(colorscale="RdBu", reversescale=True, cmin=-limit, cmax=limit, cmid=0,
                                     colorbar=dict(title=dict(text=colorbar))))
    fig.update_yaxes(autorange="reversed", type="category", title_text="layer", col=1)
    fig.update_yaxes(autorange="reversed", type="category", col=2)
    fig.update_xaxes(type="category", title_text=xaxis)
    fig.update_layout(title=dict(text=title, x=0.01), height=max(340, 26 * len(y) + 170), **LAYOUT)
    return fig


def hover_text(result: Result, sweep: str, names: np.ndarray) -> np.ndarray:
    lo, hi = result.arrays[f"{sweep}_ci_low"], result.arrays[f"{sweep}_ci_high"]
    return np.array([[f"{n}<br>95% CI {a:.2f} to {b:.2f}" for n, a, b in zip(rn, rl, rh)]
                     for rn, rl, rh in zip(names, lo, hi)])


def unit_label(summary: dict) -> str:
    return "fraction restored" if summary["normalised"] else "Δ logit diff"


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


def agreement_scatter(result: Result, sweeps, names: np.ndarray) -> go.Figure:
    """Attribution estimate against the exact effect, one point per cell, one colour per sweep."""
    fig = go.Figure()
    values = []
    for sweep in sweeps:
        x, y = result.arrays[f"{sweep}_exact"].ravel(), result.arrays[f"{sweep}_attribution"].ravel()
        values += [x, y]
        r = result.summary.get(f"attribution_corr_{sweep}")
        label = core.SWEEPS[sweep].title + (f" (r = {r:.2f})" if r is not None else "")
        fig.add_trace(go.Scatter(x=x, y=y, mode="markers", name=label, text=list(names.ravel()),
                                 hovertemplate="%{text}<br>exact %{x:.3f}<br>attribution %{y:.3f}<extra></extra>"))
    both = np.concatenate(values)
    lo, hi = float(np.nanmin(both, initial=0.0)), float(np.nanmax(both, initial=0.0))
    fig.add_shape(type="line", x0=lo, y0=lo, x1=hi, y1=hi, line=dict(dash="dot", color="grey"))
    fig.update_xaxes(title_text="exact effect")
    fig.update_yaxes(title_text="attribution patching estimate")
    fig.update_layout(title=dict(text="Attribution patching against exact patching", x=0.01), height=440, **LAYOUT)
    return fig


def percent(value: float | None, normalised: bool) -> str:
    if value is None:
        return "an undefined amount"
    text = f"{100 * value:.0f}%" if normalised else f"{value:+.2f}"
    return "0%" if text == "-0%" else text  # a tiny negative value rounds to "-0%"


def interval(entry: dict, normalised: bool) -> str:
    if entry["ci_low"] is None or entry["ci_high"] is None:
        return ""
    if normalised:
        return f" (95% CI {100 * entry['ci_low']:.0f} to {100 * entry['ci_high']:.0f}%)"
    return f" (95% CI {entry['ci_low']:+.2f} to {entry['ci_high']:+.2f})"


def effect_phrase(entry: dict, normalised: bool) -> str:
    """'restores 61% (95% CI ...) of the clean logit difference' or the raw / negative variants."""
    amount = percent(entry["value"], normalised) + interval(entry, normalised)
    if not normalised:
        return f"changes the logit difference by {amount}"
    if entry["value"] is not None and entry["value"] < 0:
        return f"moves the logit difference away from the clean run, by {amount} of the clean − corrupted gap"
    return f"restores {amount} of the clean logit difference"


def baseline_sentences(s: dict) -> list[str]:
    sentences = [f"Over the {s['n_prompts']} prompts, the mean logit difference (clean answer − corrupted answer) "
                 f"is {s['clean_logit_diff_mean']:+.3g} on the clean prompts and {s['corrupted_logit_diff_mean']:+.3g} "
                 "on the corrupted prompts."]
    if not s["normalised"]:
        sentences.append("The two means are equal, so effects cannot be normalised and are given as raw changes "
                         "in logit difference.")
    return sentences


def correlation_sentence(s: dict, sweeps, short: dict) -> str | None:
    parts = [f"{s[f'attribution_corr_{sw}']:.2f} ({short[sw]})" for sw in sweeps if f"attribution_corr_{sw}" in s]
    if not parts:
        return None
    return ("Pearson correlation between attribution patching's estimates and the exact effects, over all cells: r = "
            + ", ".join(parts) + ".")


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
                         f"recovers {s['resid_pre_all_positions_layer0_effect']:.4f} of the gap; it must be 1"
                     + (f" (within {s['identity_tolerance']:g} in {s['dtype']})." if "dtype" in s else "."))
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
               + core.NORMALISATION + ". Intervals: 95% bootstrap over prompts (1000 resamples). Right-hand panels: "
               "attribution patching, the first-order estimate (clean − corrupted activation) · gradient of the "
               "logit difference on the corrupted run, from one forward and one backward pass.",
    compute=compute, figures=figures, narrative=narrative,
    description="Which layers and positions carry the information that decides the answer.",
)
