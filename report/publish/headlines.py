"""The index's headline columns: what each analysis declares (`Analysis.headlines`, analyses/common/contract.py), read
from the saved summaries. The overview (every family) and the models-side-by-side comparison show these columns in
registry order; neither they nor the templates name an analysis or a summary key.
"""

from __future__ import annotations

from dataclasses import dataclass

from analyses import REGISTRY
from analyses.common.contract import Headline
from analyses.common.types import Analysis
from analyses.methods.attribution import parse_head_name

TOP = 3  # names shown of a ranking headline


@dataclass(frozen=True)
class Column:
    analysis: str  # the analysis whose summary holds the value
    headline: Headline

    @property
    def label(self) -> str:
        return self.headline.label

    @property
    def format(self) -> str:
        return self.headline.format

    @property
    def unit(self) -> str:
        return self.headline.unit


def columns(place: str, registry: tuple[Analysis, ...] | None = None) -> list[Column]:
    """The headline columns shown in `place` ("overview" or "comparison"), in registry order."""
    return [Column(a.name, h) for a in (REGISTRY if registry is None else registry) for h in a.headlines
            if place in h.places]


def cells(page, place: str, n_layers=None, registry: tuple[Analysis, ...] | None = None) -> list:
    """One value per column of `place` for a family page: a number, a ranking's top names (each {"name",
    "depth"}), or None where the analysis was not computed or the family has no such value (e.g. no relation twin).
    """
    out = []
    for column in columns(place, registry):
        summary = page.summary(column.analysis) if page is not None else None
        value = summary.get(column.headline.key) if summary else None  # a NotRequired key may be absent
        out.append(_ranking(value, n_layers) if column.format == "ranking" else value)
    return out


def relative_depth(name: str, n_layers) -> float | None:
    """layer / n_layers of a head 'L9H1' (0 = the first layer), None for anything else."""
    try:
        layer, _ = parse_head_name(name)
    except (ValueError, TypeError):
        return None
    return layer / n_layers if isinstance(n_layers, int) and n_layers > 0 else None


def _ranking(entries: list[dict] | None, n_layers) -> list[dict] | None:
    """The top names of a ranking list (analyses.common.contract.Ranked entries); None where the key is absent."""
    if entries is None:
        return None
    return [{"name": e["name"], "value": e["value"], "depth": relative_depth(e["name"], n_layers)}
            for e in entries[:TOP]]
