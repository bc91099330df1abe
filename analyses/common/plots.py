"""Small Plotly builders shared by the analyses: one look for every figure, explicit heights.

Each returns a `go.Figure`; no global theme is set (no import-time side effects).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import plotly.graph_objects as go
import plotly.io as pio

TRACE_TYPES = ("bar", "heatmap", "scatter", "table")  # every trace type the analyses draw (go.Bar, go.Heatmap, ...)


def _look() -> go.layout.Template:
    """Plotly's "plotly_white" look, cut to the layout and the trace types we draw: the same figures, a third of the
    template to copy. Plotly copies a figure's template whenever one is set (about 9 ms for the whole plotly_white,
    most of a build's time on a report with hundreds of figures; about 3 ms for this one). Nothing is registered
    with plotly (no process-wide theme)."""
    white = pio.templates["plotly_white"]
    return go.layout.Template(layout=white.layout, data={kind: white.data[kind] for kind in TRACE_TYPES})


LAYOUT = dict(template=_look(), margin=dict(l=60, r=20, t=50, b=50), font=dict(size=12))


def _finish(fig: go.Figure, title: str, height: int) -> go.Figure:
    fig.update_layout(title=dict(text=title, x=0.01), height=height, **LAYOUT)
    return fig


def signed_limit(z: np.ndarray, floor: float) -> float:
    """The half-width of a diverging colour scale: the largest |cell|, but never under `floor` (noise stays pale)."""
    z = np.asarray(z, dtype=float)
    largest = float(np.nanmax(np.abs(z))) if z.size and np.isfinite(z).any() else 0.0
    return max(largest, floor)


def scale_note(limit: float, floor: float) -> str:
    """The colour bar's statement of its scale, and whether the anchor or the data set it."""
    anchor = "the anchor" if limit <= floor else "the largest cell"
    return f"<br><sub>scale ±{limit:.3g} ({anchor})</sub>"


def heatmap(z: np.ndarray, x: Sequence, y: Sequence, title: str, colorbar: str, *, floor: float,
            hover: np.ndarray | None = None, height: int | None = None) -> go.Figure:
    """A diverging heatmap (blue negative, white 0, red positive) of signed effects; rows y, columns x.

    The scale spans ±max(largest |cell|, floor): `floor` is a meaningful size in the map's unit
    (analyses/common/thresholds.py SCALE_*), so that a map of noise is drawn pale instead of saturated at its own
    maximum.
    """
    limit = signed_limit(z, floor)
    trace = go.Heatmap(
        z=np.asarray(z, dtype=float), x=list(x), y=list(y), colorscale="RdBu", reversescale=True,
        zmid=0.0, zmin=-limit, zmax=limit, colorbar=dict(title=dict(text=colorbar + scale_note(limit, floor))),
        customdata=hover, hovertemplate=("%{customdata}<br>" if hover is not None else "%{y}, %{x}<br>")
        + "value: %{z:.3f}<extra></extra>",
    )
    fig = go.Figure(trace)
    fig.update_yaxes(autorange="reversed", type="category")
    fig.update_xaxes(type="category")
    return _finish(fig, title, height or max(320, 28 * len(y) + 140))


def score_heatmap(z: np.ndarray, x: Sequence, y: Sequence, title: str, colorbar: str, *, chance: float,
                  named_at: float | None = None, hover: np.ndarray | None = None,
                  height: int | None = None) -> go.Figure:
    """An unsigned score in [0, 1] (a fraction of items): sequential from white at 0, chance marked on the bar.

    Up to chance the colour stays near white, so that a head scoring what a head ignoring its input would
    score is not drawn as a finding.
    """
    pale = "#eef1f6"
    colorscale = [[0.0, "#ffffff"], [chance, pale], [1.0, "#08306b"]]
    ticks = sorted({0.0, round(chance, 3), 0.5, 1.0})
    if named_at is not None and chance < named_at < 1:
        # scores between chance and the naming threshold are what heads ignoring their input reach by luck: they
        # stay in the pale band, and the colour deepens only past the threshold
        colorscale = [[0.0, "#ffffff"], [chance, pale], [named_at, "#c6dbef"], [1.0, "#08306b"]]
        ticks = sorted({0.0, round(chance, 3), round(named_at, 3), 1.0})
    text = [f"chance {t:.2f}" if t == round(chance, 3) else f"named at {t:.2f}"
            if named_at is not None and t == round(named_at, 3) else f"{t:g}" for t in ticks]
    trace = go.Heatmap(z=np.asarray(z, dtype=float), x=list(x), y=list(y), colorscale=colorscale, zmin=0.0,
                       zmax=1.0, colorbar=dict(title=dict(text=colorbar + "<br><sub>scale 0 to 1</sub>"),
                                               tickvals=ticks, ticktext=text),
                       customdata=hover, hovertemplate=("%{customdata}<br>" if hover is not None else "%{y}, %{x}<br>")
                       + "score: %{z:.3f}<extra></extra>")
    fig = go.Figure(trace)
    fig.update_yaxes(autorange="reversed", type="category")
    fig.update_xaxes(type="category")
    return _finish(fig, title, height or max(320, 28 * len(y) + 140))


def lines(x: Sequence, series: dict[str, np.ndarray], title: str, xaxis: str, yaxis: str, *,
          hover: Sequence[str] | None = None, height: int = 380) -> go.Figure:
    """One line per named series over a shared x axis (hover shows `hover` labels when given)."""
    fig = go.Figure()
    for name, values in series.items():
        fig.add_trace(go.Scatter(x=list(x), y=np.asarray(values, dtype=float), mode="lines+markers", name=name,
                                 text=list(hover) if hover is not None else None,
                                 hovertemplate="%{text}<br>%{y:.3f}<extra>" + name + "</extra>"
                                 if hover is not None else None))
    fig.update_xaxes(title=xaxis)
    fig.update_yaxes(title=yaxis, zeroline=True)
    return _finish(fig, title, height)


def bars(x: Sequence[str], series: dict[str, np.ndarray], title: str, yaxis: str, *,
         error: dict[str, np.ndarray] | None = None, height: int = 380) -> go.Figure:
    """Grouped bars, one group per x label; optional symmetric error bars per series."""
    fig = go.Figure()
    for name, values in series.items():
        err = None if not error or name not in error else dict(type="data", array=np.asarray(error[name]))
        fig.add_trace(go.Bar(x=list(x), y=np.asarray(values, dtype=float), name=name, error_y=err,
                             hovertemplate="%{x}<br>%{y:.3f}<extra>" + name + "</extra>"))
    fig.update_layout(barmode="group")
    fig.update_xaxes(type="category")
    fig.update_yaxes(title=yaxis)
    return _finish(fig, title, height)


def table(header: Sequence[str], columns: Sequence[Sequence], title: str, *, height: int | None = None) -> go.Figure:
    fig = go.Figure(go.Table(header=dict(values=list(header), align="left"),
                             cells=dict(values=[list(c) for c in columns], align="left")))
    rows = len(columns[0]) if columns else 0
    return _finish(fig, title, height or 90 + 24 * rows)


def scatter(x: np.ndarray, y: np.ndarray, names: Sequence[str], title: str, xaxis: str, yaxis: str, *,
            color: np.ndarray | None = None, color_title: str = "", height: int = 420) -> go.Figure:
    """Points labelled by `names` on hover (e.g. head names), with a y = x guide line."""
    x, y = np.asarray(x, dtype=float), np.asarray(y, dtype=float)
    marker = dict(size=9)
    if color is not None:
        marker.update(color=np.asarray(color, dtype=float), colorscale="Viridis", showscale=True,
                      colorbar=dict(title=dict(text=color_title)))
    fig = go.Figure(go.Scatter(x=x, y=y, mode="markers", text=list(names), marker=marker,
                               hovertemplate="%{text}<br>x: %{x:.3f}<br>y: %{y:.3f}<extra></extra>"))
    lo = float(min(x.min(initial=0.0), y.min(initial=0.0)))
    hi = float(max(x.max(initial=0.0), y.max(initial=0.0)))
    fig.add_shape(type="line", x0=lo, y0=lo, x1=hi, y1=hi, line=dict(dash="dot", color="grey"))
    fig.update_xaxes(title=xaxis)
    fig.update_yaxes(title=yaxis)
    return _finish(fig, title, height)
