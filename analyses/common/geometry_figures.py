"""Geometry's figures: every layer's item plane behind a slider, circle order and rotation per layer, the causal
test's bars (no model, no I/O; analyses/geometry.py computes the numbers they draw)."""

from __future__ import annotations

import numpy as np
import plotly.graph_objects as go

from analyses.common import plots
from analyses.common.types import Result

TRACES_PER_POINT = 3  # per layer's plane: the item means' loop, the item token per prompt, the final position


def plane_figure(result: Result):
    """One figure, every point's plane; a slider shows one point at a time (visibility only: works offline)."""
    s, a, lab = result.summary, result.arrays, result.labels
    items, layers, best = lab["items"], lab["layers"], s["best_layer"]
    fig = go.Figure()
    for point, label in enumerate(layers):
        # closed: the last item joins the first, whose second point is left unlabelled
        loop = np.vstack([a["item_xy"][point], a["item_xy"][point][:1]])
        visible = point == best
        fig.add_trace(go.Scatter(x=loop[:, 0], y=loop[:, 1], mode="lines+markers+text", text=items + [""],
                                 textposition="top center", name="item means (sequence order)", visible=visible,
                                 hovertemplate="%{text}<extra>" + label + "</extra>"))
        fig.add_trace(go.Scatter(x=a["prompt_xy"][point][:, 0], y=a["prompt_xy"][point][:, 1], mode="markers",
                                 marker=dict(size=5, opacity=0.5), name="item token, per prompt", visible=visible,
                                 text=lab["prompts"], hovertemplate="%{text}<extra>item token</extra>"))
        fig.add_trace(go.Scatter(x=a["final_xy"][point][:, 0], y=a["final_xy"][point][:, 1], mode="markers",
                                 marker=dict(size=6, symbol="x"), name="final position (own centre)",
                                 visible=visible, text=[f"{p} → {ans}" for p, ans in zip(lab["prompts"],
                                                                                        lab["answer_items"])],
                                 hovertemplate="%{text}<extra>final position</extra>"))
    steps = []
    for point, label in enumerate(layers):
        visible = [trace // TRACES_PER_POINT == point for trace in range(TRACES_PER_POINT * len(layers))]
        steps.append(dict(method="update", label=label,
                          args=[{"visible": visible},
                                {"title.text": plane_title(s, point)}]))
    fig.update_layout(sliders=[dict(active=best, steps=steps, currentvalue=dict(prefix="layer: "), pad=dict(t=40))])
    fig.update_xaxes(title="PC 1", zeroline=True)
    fig.update_yaxes(title="PC 2", zeroline=True, scaleanchor="x", scaleratio=1)
    fig.update_layout(title=dict(text=plane_title(s, best), x=0.01), height=560, **plots.LAYOUT)
    return fig


def plane_title(s: dict, point: int) -> str:
    return (f"{s['layer_labels'][point]}: items on the top-2 PCA plane (circle order "
            f"{s['circle_order'][point]:.2f}, top-2 variance {100 * s['variance_top2'][point]:.0f}%)")


def by_layer_figures(result: Result) -> list:
    s = result.summary
    needed = s["plane_dominance"] * s["plane_floor"]
    fig = plots.lines(s["layer_labels"], {"circle order": np.asarray(s["circle_order"]),
                                          "variance explained by the top 2 PCs": np.asarray(s["variance_top2"]),
                                          "circulant null's median top-2 share": np.asarray(s["circulant_null_share"])},
                      "Circle order and top-2 variance per layer", "residual stream", "fraction", height=360)
    fig.add_hline(y=s["circle_chance"], line_dash="dot",
                  annotation_text=f"circle order chance {s['circle_chance']:.2f}")
    fig.add_hline(y=needed, line_dash="dash", annotation_text=f"plane share needed {needed:.2f} "
                  f"({s['plane_dominance']:g} × floor 2/(n−1))")
    offsets = np.array([np.nan if v is None else v for v in s["rotation_offset_steps_by_layer"]], dtype=float)
    rotation = plots.lines(s["layer_labels"], {f"final position − item at {s['reference_layer_label']} (steps)":
                                               offsets},
                           f"Rotation per layer against the fixed reference {s['reference_layer_label']} (gaps: the "
                           f"final position carries no item there; the answer is {s['expected_offset_steps']:+.0f} "
                           "steps on)", "residual stream", "steps", height=340)
    rotation.add_hline(y=s["expected_offset_steps"], line_dash="dot", annotation_text="answer's step")
    return [fig, rotation]


def causal_figure(s: dict):
    fig = plots.bars(s["causal_variants"], {"answer moved to the intended item": np.asarray(s["causal_success"])},
                     f"Causal test at the item token of {s['causal_layer_label']}: how often editing it to name item "
                     "i + k moves the answer by k", "fraction of (prompt, k) trials", height=340)
    fig.add_hline(y=s["causal_chance"], line_dash="dot", annotation_text=f"chance {s['causal_chance']:.2f}")
    return fig
