"""README's findings table, printed from saved runs: `python -m report.publish.findings_table RUN_DIR [RUN_DIR ...]`.

One row per family (of the run's first model), from the same summaries and rules as the report's abstract
(report/publish/abstract.py), so that every number in README's table can be regenerated from a run folder without the
model: the run needs behaviour, logit_diff and patching_heads.
"""

from __future__ import annotations

import sys
from pathlib import Path

from analyses.common import thresholds
from report.publish import render
from report.store.units import unit_name

HEADER = ("family", "accuracy among the items", "above chance (binomial p)", "names the item in the prompt",
          "day-corruption gap", "relation-corruption gap", "top head, day corruption", "top head, relation corruption")


def _gap(ld: dict | None, corruption: str) -> str:
    if not ld or ld.get(f"{corruption}_gap_mean") is None:
        return "–"
    text = f"{ld[f'{corruption}_gap_mean']:+.2f} ± {ld.get(f'{corruption}_gap_standard_error', 0):.2f}"
    return text if ld.get(f"{corruption}_gap_informative") else text + ", not informative"


def _top_head(page: render.FamilyPage, corruption: str) -> str:
    """The head whose z patching restores most of an informative gap, if it passes the naming threshold."""
    if not page.findings.does_task:
        return "at chance"
    patching = next((s.result.summary for s in page.sections
                     if s.key == unit_name("patching_heads", corruption) and s.result is not None), None)
    if patching is None:
        return "not computed"
    if not patching.get("normalised"):
        return "— (gap not informative)"
    top = patching["top_heads"][0]
    if not thresholds.notable_fraction(top["value"]):
        return f"none ≥ {thresholds.MIN_EFFECT_FRACTION:.0%} (largest {top['name']}, {top['value']:.2f})"
    return f"{top['name']} ({top['value']:.2f})"


def rows(build: render.Build) -> list[tuple[str, ...]]:
    out = []
    for page in build.pages:
        b, ld = page.summary("behaviour") or {}, page.summary("logit_diff")
        n = int(b.get("n_prompts", 0))
        accuracy = f"{round(b['items_acc'] * n)}/{n}" if b else "–"
        chance = (f"{'yes' if b['items_above_chance'] else 'no'} ({b['items_p_value']:.2g})"
                  if b else "–")
        copies = f"{round(b['copy_choice_frac'] * n)}/{n}" if "copy_choice_frac" in b else "–"
        out.append((page.family, accuracy, chance, copies, _gap(ld, "day"), _gap(ld, "relation"),
                    _top_head(page, "day"), _top_head(page, "relation")))
    return out


def markdown(build: render.Build) -> str:
    lines = ["| " + " | ".join(HEADER) + " |", "| " + " | ".join("---" for _ in HEADER) + " |"]
    lines += ["| " + " | ".join(row) + " |" for row in rows(build)]
    return "\n".join(lines)


def main(argv: list[str]) -> int:
    if not argv:
        print("usage: python -m report.publish.findings_table RUN_DIR [RUN_DIR ...]", file=sys.stderr)
        return 2
    print(markdown(render.collect([Path(a) for a in argv])))
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
