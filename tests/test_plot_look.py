"""The figures' look (analyses/common/plots.py): plotly_white, cut to the trace types the analyses draw, so that a
report's hundreds of figures copy a small template. A trace type drawn but left out of the cut would fall back to
plotly.js's own defaults and look unlike the rest."""

from __future__ import annotations

import re
from pathlib import Path

import plotly.io as pio

from analyses.common import plots

ROOT = Path(__file__).resolve().parent.parent
TRACE = re.compile(r"\bgo\.([A-Z][A-Za-z]*)\(")
NOT_TRACES = {"Figure"}


def test_every_trace_type_the_analyses_draw_is_in_the_look():
    drawn = {name.lower() for path in (ROOT / "analyses").rglob("*.py")
             for name in TRACE.findall(path.read_text(encoding="utf-8")) if name not in NOT_TRACES}
    assert {"heatmap", "scatter"} <= drawn  # the scan found the analyses' figures
    assert drawn <= set(plots.TRACE_TYPES), drawn - set(plots.TRACE_TYPES)


def test_the_look_is_plotly_white_for_those_trace_types():
    white, look = pio.templates["plotly_white"], plots.LAYOUT["template"]
    assert look.layout == white.layout
    for kind in plots.TRACE_TYPES:
        assert look.data[kind] == white.data[kind], kind
    assert not look.data.pie  # the cut: a type we never draw is not copied into every figure


def test_a_finished_figure_carries_the_look():
    fig = plots.heatmap([[0.0, 1.0]], ["a", "b"], ["L0"], "title", "effect", floor=0.1)
    # plotly_white's plot area is white; Plotly's default template's is blue-grey (#E5ECF6)
    assert fig.layout.template.layout.plot_bgcolor == pio.templates["plotly_white"].layout.plot_bgcolor
    assert fig.layout.template.layout.plot_bgcolor != pio.templates["plotly"].layout.plot_bgcolor
