"""The two JavaScript bundles a page needs (plotly.js, circuitsvis) and the page's own small scripts.

Pages either inline the bundles (each page self-contained) or, with `--assets shared`, load them from
`assets/` by a relative path. Both come from the installed Python packages, never from a CDN.
"""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass
from functools import cache
from pathlib import Path

from markupsafe import Markup

CIRCUITSVIS_BUNDLE = Path("dist") / "cdn" / "iife.js"
ASSETS_DIR = "assets"


@dataclass(frozen=True)
class Bundle:
    name: str  # file name under assets/
    source: str


def inline_js(source: str) -> Markup:
    """A library's source for an inline <script>: the only '</script' in the bundles sits inside strings."""
    return Markup(source.replace("</script", "<\\/script"))


@cache
def plotly_bundle() -> Bundle:
    import plotly
    from plotly.offline import get_plotlyjs

    return Bundle(f"plotly-{plotly.__version__}.min.js", get_plotlyjs())


@cache
def circuitsvis_bundle() -> Bundle:
    # find_spec locates the package without importing it (its __init__ pulls in torch and importlib_metadata)
    package = Path(importlib.util.find_spec("circuitsvis").origin).parent
    source = (package / CIRCUITSVIS_BUNDLE).read_text(encoding="utf-8")
    # the bundle ends with a sourceMappingURL comment: a browser asks for the .map only with devtools open,
    # but a file that names a file we do not ship is a broken link; drop the comment
    lines = [line for line in source.splitlines() if not line.startswith("//# sourceMappingURL=")]
    return Bundle("circuitsvis-iife.js", "\n".join(lines) + "\n")


def bundles(need_plotly: bool, need_circuitsvis: bool) -> list[Bundle]:
    return ([plotly_bundle()] if need_plotly else []) + ([circuitsvis_bundle()] if need_circuitsvis else [])


def script_tags(selected: list[Bundle], shared_root: str | None) -> Markup:
    """<script> elements for the bundles: inline, or (shared_root = "../" etc.) by relative path to assets/."""
    if shared_root is None:
        return Markup("".join(f"<script>{inline_js(b.source)}</script>\n" for b in selected))
    return Markup("".join(f'<script src="{shared_root}{ASSETS_DIR}/{b.name}"></script>\n' for b in selected))
