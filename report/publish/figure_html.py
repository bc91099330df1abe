"""Figures and widgets as HTML blocks: escaped JSON in <script> elements, drawn by templates/page.js.

Every figure is a Plotly JSON spec in a <script type="application/json"> block (escaped so that nothing
from a prompt can close the <script>), drawn by the page's small script (templates/page.js): at once on a
site page and in the PDF, when its page is opened in the single file. Plotly's layout template, which is
most of a small figure's JSON, is stored once per HTML file. Element ids are fixed, so rebuilding the
same runs gives the same bytes.
"""

from __future__ import annotations

import json
import re

import plotly.io as pio
from markupsafe import Markup

PRINT_FIGURE_WIDTH = 680  # px: an A4 page's text width at 96 dpi with 12 mm margins
PRINT_FIGURE_HEIGHT = 200  # px at most: under a quarter of an A4 page, so that a family's figures fit in a few pages


def script_json(data) -> str:
    """JSON safe inside a <script> element: '<', '>' and '&' become \\u escapes."""
    text = data if isinstance(data, str) else json.dumps(data, ensure_ascii=False, allow_nan=False)
    return text.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")


# Plotly draws a few HTML-like tags in any string it shows (links, inline styles, bold...). Our figures use only
# these attribute-free ones; every other '<', and every '&', in a figure (a template holding <a href=...>, a token
# "<|endoftext|>") is escaped, so that user text is drawn as the text it is: no live link, no restyled label.
_OWN_TAGS = re.compile(r"<(?!/?(?:br|b|i|em|sup|sub|extra)\s*/?>)", re.IGNORECASE)


def as_text(value):
    """A figure spec (JSON-like) with every string's markup, except our own formatting tags, made literal."""
    if isinstance(value, str):
        return _OWN_TAGS.sub("&lt;", value.replace("&", "&amp;")) if ("<" in value or "&" in value) else value
    if isinstance(value, list):
        return [as_text(v) for v in value]
    if isinstance(value, dict):
        return {k: as_text(v) for k, v in value.items()}
    return value

class Figures:
    """Figure and widget blocks for one HTML file: the Plotly layout template stored once per distinct template."""

    def __init__(self, form: str):
        self.form = form
        self.templates: dict[str, str] = {}  # template JSON -> element id

    def figure(self, figure: dict, prefix: str = "") -> Markup:
        """`prefix` keeps element ids unique where several pages share one file."""
        dom_id = prefix + figure["id"]
        spec = dict(figure["spec"])
        layout = dict(spec.get("layout", {}))
        template = layout.pop("template", None)
        spec["layout"] = layout
        attrs = ""
        if template is not None:
            text = json.dumps(template, sort_keys=True, ensure_ascii=False)
            template_id = self.templates.setdefault(text, f"wc-template-{len(self.templates)}")
            attrs = f' data-template="{template_id}"'
        config = {"responsive": True, "displaylogo": False}
        height = figure["height"]
        if self.form == "print":
            height = min(height, PRINT_FIGURE_HEIGHT)
            layout["width"], layout["height"] = PRINT_FIGURE_WIDTH, height
            spec["data"] = _fit_for_print(layout, spec.get("data", []))
            config = {"staticPlot": True}
        return Markup(
            f'<div id="{dom_id}" class="plotly-graph-div" style="height:{height}px;width:100%;"'
            f' data-spec="{dom_id}-spec"{attrs} data-config="{Markup.escape(json.dumps(config))}"></div>\n'
            f'<script type="application/json" id="{dom_id}-spec">{script_json(spec)}</script>'
        )

    def widget(self, widget: dict, prefix: str = "") -> Markup:
        if self.form == "print":
            return self.figure(_widget_still(widget), prefix)
        dom_id = prefix + widget["id"]
        return Markup(f'<div id="{dom_id}" class="cv-widget" data-props="{dom_id}-props"></div>\n'
                      f'<script type="application/json" id="{dom_id}-props">'
                      f'{script_json(widget["props"])}</script>')

    def template_blocks(self) -> Markup:
        return Markup("".join(f'<script type="application/json" id="{tid}">{script_json(text)}</script>\n'
                              for text, tid in self.templates.items()))


PRINT_STILL_HEADS = 2  # heads per printed still: one row, so that subplot titles never overlap


def _widget_still(widget: dict) -> dict:
    """A printable still of an attention widget: a heatmap of each of its first heads' patterns (destination x
    source); the title says how many more heads the HTML report's widget holds."""
    from plotly.subplots import make_subplots

    tokens, heads = widget["tokens"], widget["props"]["attentionHeadNames"][:PRINT_STILL_HEADS]
    more = len(widget["props"]["attentionHeadNames"]) - len(heads)
    labels = [f"{i}:{t}" for i, t in enumerate(tokens)]
    fig = make_subplots(rows=1, cols=max(1, len(heads)), subplot_titles=heads, horizontal_spacing=0.2)
    for i, pattern in enumerate(widget["props"]["attention"][:len(heads)]):
        fig.add_heatmap(z=pattern, x=labels, y=labels, zmin=0, zmax=1, colorscale="Blues", showscale=i == 0,
                        row=1, col=i + 1)
    title = f"and {more} more head{'s' if more > 1 else ''} in the HTML report" if more > 0 else None
    fig.update_layout(template="plotly_white", height=PRINT_FIGURE_HEIGHT, margin=dict(l=90, r=20, t=40, b=90),
                      font=dict(size=9), title=dict(text=title, x=0.99, xanchor="right", font=dict(size=9)))
    fig.update_yaxes(autorange="reversed")
    fig.update_yaxes(title_text="destination", col=1)
    fig.update_xaxes(title_text="source", tickangle=-60)
    return {"id": widget["id"] + "-still", "spec": as_text(json.loads(pio.to_json(fig, validate=False))),
            "height": PRINT_FIGURE_HEIGHT}


def _fit_for_print(layout: dict, traces: list) -> list:
    """At print height, long rotated tick labels run into the axis titles and a colour bar's labels onto each
    other: let every axis push its margin out (Plotly's automargin) and draw colour bars the plot's full height,
    small-typed."""
    for key in list(layout):
        if key.startswith(("xaxis", "yaxis")) and isinstance(layout[key], dict):
            axis = dict(layout[key])
            axis["automargin"] = True
            axis["tickfont"] = {**axis.get("tickfont", {}), "size": 8}
            layout[key] = axis
    for key in list(layout):
        axis = layout[key]
        if key.startswith("coloraxis") and isinstance(axis, dict) and isinstance(axis.get("colorbar"), dict):
            layout[key] = {**axis, "colorbar": _print_colorbar(axis["colorbar"])}
    fitted = []  # copies: the figure's own traces stay as the other output forms draw them
    for trace in traces:
        bar = trace.get("colorbar") if isinstance(trace, dict) else None
        if isinstance(bar, dict):
            trace = {**trace, "colorbar": _print_colorbar(bar)}
        fitted.append(trace)
    return fitted


def _print_colorbar(bar: dict) -> dict:
    return {**bar, "thickness": 10, "len": 1.0, "lenmode": "fraction", "y": 0.5, "yanchor": "middle",
            "tickfont": {**bar.get("tickfont", {}), "size": 8}}
