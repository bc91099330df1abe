"""Display helpers shared by the patching analyses: paired exact/attribution heatmaps, hover text, the
attribution-vs-exact scatter, and the phrases their narratives are built from. No model, no I/O."""

from __future__ import annotations

import numpy as np
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from analyses.common import phrases, plots, thresholds
from analyses.common.phrases import AT_CHANCE, INSTEAD
from analyses.common.plots import LAYOUT
from analyses.common.types import Result
from analyses.engine.sweeps import SWEEPS


def paired_heatmap(exact: np.ndarray, attribution: np.ndarray, x: list[str], y: list[str], hover: np.ndarray,
                   title: str, colorbar: str, xaxis: str) -> go.Figure:
    """Exact (left) and attribution patching (right) on one shared, zero-centred colour scale.

    The scale spans at least the whole gap (normalised) or the smallest gap the report normalises (raw logits),
    so that a model whose effects are noise is drawn pale (analyses/common/thresholds.py SCALE_*).
    """
    floor = thresholds.SCALE_FRACTION if colorbar == "fraction restored" else thresholds.SCALE_LOGITS
    limit = plots.signed_limit(np.concatenate([exact.ravel(), attribution.ravel()]), floor)
    fig = make_subplots(rows=1, cols=2, shared_yaxes=True, horizontal_spacing=0.04,
                        subplot_titles=("Exact activation patching", "Attribution patching (estimate)"))
    for col, (z, kind) in enumerate(((exact, "exact"), (attribution, "attribution")), start=1):
        fig.add_trace(go.Heatmap(z=z, x=x, y=y, coloraxis="coloraxis", customdata=hover,
                                 hovertemplate="%{customdata}<br>" + kind + ": %{z:.3f}<extra></extra>"), 1, col)
    fig.update_layout(coloraxis=dict(colorscale="RdBu", reversescale=True, cmin=-limit, cmax=limit, cmid=0,
                                     colorbar=dict(title=dict(text=colorbar + plots.scale_note(limit, floor)))))
    fig.update_yaxes(autorange="reversed", type="category", title_text="layer", col=1)
    fig.update_yaxes(autorange="reversed", type="category", col=2)
    fig.update_xaxes(type="category", title_text=xaxis)
    layout = {**LAYOUT, "margin": {**LAYOUT["margin"], "t": 90}}  # room for the title above the subplot titles
    fig.update_layout(title=dict(text=title, x=0.01, y=0.98, yanchor="top"), height=max(360, 26 * len(y) + 190),
                      **layout)
    return fig


def hover_text(result: Result, sweep: str, names: np.ndarray) -> np.ndarray:
    lo, hi = result.arrays[f"{sweep}_ci_low"], result.arrays[f"{sweep}_ci_high"]
    over = spread_over(result.summary)
    return np.array([[f"{n}<br>95% spread over {over} {a:.2f} to {b:.2f}" for n, a, b in zip(rn, rl, rh)]
                     for rn, rl, rh in zip(names, lo, hi)])


def spread_over(summary: dict) -> str:
    """What the interval resampled (analyses.common.bootstrap): whole templates (cluster bootstrap) or prompts."""
    return ("templates (cluster bootstrap)" if summary.get("interval_kind") == "cluster_bootstrap_templates"
            else "prompts")


def unit_label(summary: dict) -> str:
    return "fraction restored" if summary["normalised"] else "Δ logit diff (logits)"


def agreement_scatter(result: Result, sweeps, names: np.ndarray) -> go.Figure:
    """Attribution estimate against the exact effect, one point per cell, one colour per sweep."""
    fig = go.Figure()
    values = []
    for sweep in sweeps:
        x, y = result.arrays[f"{sweep}_exact"].ravel(), result.arrays[f"{sweep}_attribution"].ravel()
        values += [x, y]
        slope = result.summary.get(f"attribution_slope_{sweep}")
        label = SWEEPS[sweep].title + (f" (slope {slope:.2f})" if slope is not None else "")
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
    return phrases.share(value) if normalised else f"{value:+.2g} logits"


def interval(entry: dict, normalised: bool) -> str:
    if entry["ci_low"] is None or entry["ci_high"] is None:
        return ""
    # a ranked entry with per-template values comes from a cluster bootstrap over templates (analyses.common.bootstrap)
    over = "templates, cluster bootstrap" if entry.get("value_by_template") else "prompts"
    if normalised:
        return f" (95% spread over {over} {100 * entry['ci_low']:.0f} to {100 * entry['ci_high']:.0f}%)"
    return f" (95% spread over {over} {entry['ci_low']:+.2f} to {entry['ci_high']:+.2f})"


def effect_phrase(entry: dict, normalised: bool) -> str:
    """'restores 61% (...) of the clean − corrupted gap' or the raw / negative variants."""
    amount = percent(entry["value"], normalised) + interval(entry, normalised)
    if not normalised:
        return f"changes the logit difference by {amount}"
    if entry["value"] is not None and entry["value"] < 0:
        return f"moves the logit difference away from the clean run, by {amount} of the clean − corrupted gap"
    return f"restores {amount} of the clean − corrupted gap"


WHAT_CORRUPTION_ISOLATES = {
    "day": "the corrupted prompts name another item with the same wording, so a component that matters here carries "
           "the identity of the named item towards the answer",
    "relation": "the corrupted prompts keep the item and ask for another step (e.g. yesterday instead of tomorrow), so "
                "a component that matters here carries the step applied to the item",
}
ROLE = {"day": "carries the named item towards the answer", "relation": "carries the step applied to the item"}


def notable(entry: dict, s: dict) -> bool:
    """Worth naming in a narrative (analyses.common.thresholds): a fraction of an informative gap, or enough logits."""
    if s["normalised"]:
        return thresholds.notable_fraction(entry["value"])
    return thresholds.notable_logits(entry["value"], max(abs(s["gap_mean"]), abs(s["clean_logit_diff_mean"])))


def baseline_sentences(s: dict) -> list[str]:
    """What the corruption isolates, whether the model does the task, and whether the gap can be normalised."""
    corruption = s.get("corruption", "day")
    sentences = []
    if not s["items_above_chance"]:
        sentences.append(AT_CHANCE)
    sentences.append(f"{corruption.capitalize()} corruption: {WHAT_CORRUPTION_ISOLATES[corruption]}.")
    gap = (f"the mean logit difference (clean answer − corrupted answer) is {s['clean_logit_diff_mean']:+.3g} on the "
           f"clean prompts and {s['corrupted_logit_diff_mean']:+.3g} on the corrupted ones, a gap of "
           f"{s['gap_mean']:+.3g} logits (standard error {s['gap_standard_error']:.2g}, {s['n_prompts']} prompts)")
    if s["normalised"]:
        sentences.append(f"Over the prompts {gap}; effects are fractions of that gap.")
    else:
        barely = (f"{phrases.gap_clause(s.get('gap_state'))}. Under this corruption {gap}; {s['gap_reason']}. "
                  "Effects are therefore raw changes in logits, not fractions of the gap, and no component is given "
                  "the corruption's role.")
        sentences.insert(len(sentences) - 1, barely)
    return sentences


def top_sentence(entry: dict, s: dict, subject: str) -> str:
    """One sentence on the largest effect of a sweep, or that nothing stands out (size threshold)."""
    if not notable(entry, s):
        threshold = (f"{thresholds.MIN_EFFECT_FRACTION:.0%} of the gap" if s["normalised"] else
                     f"{thresholds.MIN_EFFECT_LOGITS:g} logits and {thresholds.MIN_EFFECT_FRACTION:.0%} of |LD|")
        largest = percent(entry["value"], s["normalised"])
        return phrases.nothing_stands_out_for(subject, f"the largest effect is {largest}, under the naming threshold "
                                                       f"of {threshold}")
    if not s["normalised"]:  # a gap that is not informative gives no component a role, whatever the raw change
        return (f"Patching {entry['name_phrase']} {effect_phrase(entry, s['normalised'])}; the gap is not informative "
                "(see above), so no role is read into it.")
    role = ROLE[s.get("corruption", "day")]
    if not s["items_above_chance"]:
        role += INSTEAD
    return f"Patching {entry['name_phrase']} {effect_phrase(entry, s['normalised'])}: it {role}."


def agreement_sentence(s: dict, sweeps, short: dict) -> str | None:
    """Attribution vs exact: slope, mean absolute error and top-5 overlap (Pearson r alone hides scale errors)."""
    parts = [f"{short[sw]}: slope {s[f'attribution_slope_{sw}']:.2f}, mean |error| "
             f"{percent(s[f'attribution_mae_{sw}'], True)}, top-5 overlap {s[f'attribution_top_overlap_{sw}']:.0%}"
             for sw in sweeps if f"attribution_slope_{sw}" in s]
    if not parts:
        return ("Attribution patching is not compared with the exact effects here: at this noise level the comparison "
                "would measure rounding.") if not s["normalised"] else None
    return ("Attribution patching against the exact effects, over all cells (slope 1 = the right size): "
            + "; ".join(parts) + ".")
