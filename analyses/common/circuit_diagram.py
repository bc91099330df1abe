"""Drawing a circuit: nodes placed by layer (x) and head (y, MLPs on top), edges as lines coloured by their sign.

The two circuit analyses (`analyses.circuit`, node circuits; `analyses.edge_circuits`, edge circuits) name their
nodes differently, so each places its own; the lines, the markers and the axes are drawn the same way here.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import plotly.graph_objects as go

from analyses.common.contract import Node
from analyses.common.plots import LAYOUT
from analyses.common.types import Result

INPUT_DASH = {"q": "solid", "k": "dot", "v": "dash", "mlp": "solid", "logits": "solid"}  # an edge's receiver input
Place = Callable[[str], tuple[float, float]]  # a node's name -> its (layer, head) position on the diagram


def edge_line(start: tuple[float, float], end: tuple[float, float], text: str, width: float, weight: float,
              dash: str | None = None) -> go.Scatter:
    """One edge from its sender to its receiver: red where its weight helps the answer, blue where it hurts."""
    (x0, y0), (x1, y1) = start, end
    # a dash is written only where the diagram marks something by it, so a diagram without dashes draws as before
    line = dict(width=width, **({"dash": dash} if dash else {}), color="firebrick" if weight > 0 else "royalblue")
    return go.Scatter(x=[x0, x1], y=[y0, y1], mode="lines", showlegend=False, hoverinfo="text", text=text, line=line)


def node_markers(names: list[str], place: Place, size: int) -> go.Scatter:
    """The named nodes as black markers, each labelled above."""
    xy = [place(n) for n in names]
    return go.Scatter(x=[p[0] for p in xy], y=[p[1] for p in xy], mode="markers+text", text=names,
                      textposition="top center", marker=dict(size=size, color="black"), showlegend=False,
                      hoverinfo="text")


def node_circuit(result: Result, named: bool, min_weight: float) -> go.Figure:
    """The named node circuit (`analyses.circuit`): its nodes and the logits, edges by path-patching weight (those of
    at least `min_weight`, a fraction of the gap); the logits alone when `named` is false."""
    s, a, lab = result.summary, result.arrays, result.labels

    def place(name: str) -> tuple[float, float]:
        if name == "logits":
            return s["n_layers"], s["n_heads"] / 2
        node = Node.parse(name)
        return (node.layer + 0.5, s["n_heads"] + 0.5) if node.kind == "mlp" else (node.layer, node.index)

    fig = go.Figure()
    for sender, receiver, w in zip(lab["edge_sender"], lab["edge_receiver"], a["edge_weight"]):
        if abs(w) < min_weight:
            continue
        fig.add_trace(edge_line(place(sender), place(receiver), f"{sender} → {receiver}: {w:.2f}",
                                1 + 6 * min(abs(w), 1.0), w))
    fig.add_trace(node_markers([*(s["minimal_circuit"] if named else []), "logits"], place, 14))
    title = ("The minimal circuit; edges: path-patching effect (fraction of the gap)" if named else
             "Not a finding (see the text): no circuit is named under this contrast")
    return lay_out(fig, title, [-0.5, s["n_layers"] + 0.5], 420)


def lay_out(fig: go.Figure, title: str, x_range: list[float], height: int) -> go.Figure:
    """Layers along x, heads along y (their indices hidden: a head's name is its label)."""
    fig.update_xaxes(title_text="layer", range=x_range)
    fig.update_yaxes(title_text="head (MLPs on top)", showticklabels=False)
    fig.update_layout(title=dict(text=title, x=0.01), height=height, **LAYOUT)
    return fig


def edge_circuit(result: Result) -> go.Figure:
    """The chosen edge circuit (`analyses.edge_circuits`): nodes by layer (x) and head (y; MLPs on top, input left,
    logits right); edges coloured by sign, width by |EAP-IG|, the receiver's input marked by the line style (q solid,
    k dotted, v dashed) and in the hover text."""
    s, a, lab = result.summary, result.arrays, result.labels

    def place(name: str) -> tuple[float, float]:
        if name == "input":
            return -1, s["n_heads"] / 2
        if name == "logits":
            return s["n_layers"], s["n_heads"] / 2
        if name.startswith("m"):
            return int(name[1:]) + 0.5, s["n_heads"] + 0.5
        layer, head = name[1:].split(".h")
        return int(layer), int(head)

    fig = go.Figure()
    scores = a.get("diagram_score", np.zeros(0))
    top = float(np.max(np.abs(scores))) if len(scores) else 1.0
    shown = set()
    for sender, receiver, kind, w in zip(lab["diagram_sender"], lab["diagram_receiver"], lab["diagram_input"], scores):
        target = receiver if kind in ("mlp", "logits") else f"{receiver}<{kind}>"
        fig.add_trace(edge_line(place(sender), place(receiver), f"{sender} → {target}: {w:+.3f}",
                                1 + 7 * abs(w) / top, w, INPUT_DASH[kind]))
        shown |= {sender, receiver}
    fig.add_trace(node_markers(sorted(shown | {"input", "logits"}), place, 12))
    if "diagram_fraction" in s:
        title = (f"Edge circuit at {100 * s['diagram_fraction']:g}% of edges ({s['diagram_edges_kept']} edges, "
                 f"faithfulness {s['diagram_faithfulness']:.2f}); red +, blue −; q solid, k dotted, v dashed")
    else:
        title = "No edge circuit is drawn: no circuit on the grid is a finding (see the text)"
    return lay_out(fig, title, [-1.5, s["n_layers"] + 0.5], 460)
