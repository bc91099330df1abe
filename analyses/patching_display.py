"""Display helpers shared by the patching analyses: paired exact/attribution heatmaps, hover text, the
attribution-vs-exact scatter, and the phrases their narratives are built from. No model, no I/O."""

from __future__ import annotations

import numpy as np
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from analyses.intervention import SWEEPS
from analyses.plots import LAYOUT
from analyses.types import Result


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


def agreement_scatter(result: Result, sweeps, names: np.ndarray) -> go.Figure:
    """Attribution estimate against the exact effect, one point per cell, one colour per sweep."""
    fig = go.Figure()
    values = []
    for sweep in sweeps:
        x, y = result.arrays[f"{sweep}_exact"].ravel(), result.arrays[f"{sweep}_attribution"].ravel()
        values += [x, y]
        r = result.summary.get(f"attribution_corr_{sweep}")
        label = SWEEPS[sweep].title + (f" (r = {r:.2f})" if r is not None else "")
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
