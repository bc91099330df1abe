"""Models side by side, per family: what the index shows when a build holds more than one model.

For each family, one row per model: accuracy among the items with the chance flag, the two mean logit differences,
and the top heads by direct logit attribution and by activation patching of the head outputs, each with
its relative depth (layer / n_layers: 0 is the first layer, near 1 the last), so that models of different
depth can be set against each other.
"""

from __future__ import annotations

from analyses.attribution import parse_head_name

TOP = 3  # heads shown per method


def relative_depth(head: str, n_layers) -> float | None:
    try:
        layer, _ = parse_head_name(head)
    except (ValueError, TypeError):
        return None
    return layer / n_layers if isinstance(n_layers, int) and n_layers > 0 else None


def _heads(entries, n_layers) -> list[dict]:
    if not isinstance(entries, list):
        return []
    heads = []
    for entry in entries[:TOP]:
        if isinstance(entry, dict) and isinstance(entry.get("head"), str):
            heads.append({"head": entry["head"], "value": entry.get("value"),
                          "depth": relative_depth(entry["head"], n_layers)})
    return heads


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
            behaviour = page.summary("behaviour") or {}
            logit_diff = page.summary("logit_diff") or {}
            clean, corrupted = logit_diff.get("clean_logit_diff_mean"), logit_diff.get("corrupted_logit_diff_mean")
            rows.append({
                "page": page, "model": page.model_name, "n_layers": n_layers,
                "day7_acc": behaviour.get("day7_acc"), "above_chance": behaviour.get("day7_above_chance"),
                "relation_acc": behaviour.get("relation_acc"), "ignores_relation": behaviour.get("ignores_relation"),
                "relation_discrimination": behaviour.get("relation_discrimination_mean"),
                "copy_logit_diff": logit_diff.get("copy_logit_diff_mean"),
                "clean_minus_corrupted": clean - corrupted if isinstance(clean, (int, float))
                and isinstance(corrupted, (int, float)) else None,
                "dla": _heads((page.summary("dla_heads") or {}).get("top_positive"), n_layers),
                "patching": _heads((page.summary("patching_heads") or {}).get("top_heads"), n_layers),
            })
        table.append({"family": family, "rows": rows})
    return table
