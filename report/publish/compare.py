"""Models side by side, per family: what the index shows when a build holds more than one model.

For each family, one row per model: the headline columns the analyses declare for the comparison
(report/publish/headlines.py: accuracy among the items, the relation twins, the mean logit differences, the top heads by
direct logit attribution and by activation patching of the head outputs), heads with their relative depth
(layer / n_layers: 0 is the first layer, near 1 the last), so that models of different depth can be set against
each other.
"""

from __future__ import annotations

from report.publish import headlines


def comparison(pages, models: dict[str, dict]) -> list[dict]:
    """[{"family", "rows": [...]}] for the families that at least two models have pages for; [] otherwise."""
    if len({p.model_slug for p in pages}) < 2:
        return []
    families: dict[str, list] = {}
    for page in pages:
        families.setdefault(page.family, []).append(page)
    table = []
    for family, family_pages in families.items():
        if len(family_pages) < 2:
            continue
        rows = []
        for page in family_pages:
            n_layers = models.get(page.model_slug, {}).get("n_layers")
            rows.append({"page": page, "model": page.model_name, "n_layers": n_layers,
                         "above_chance": page.above_chance,
                         "cells": headlines.cells(page, "comparison", n_layers)})
        table.append({"family": family, "rows": rows})
    return table
