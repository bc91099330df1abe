"""README's findings table, printed from saved runs: `python -m report.findings_table RUN_DIR [RUN_DIR ...]`.

One row per model and family, from the same summaries and rules as the report's abstract (report/abstract.py), so
that every number in README's table can be regenerated from a run folder, without the model.
"""

from __future__ import annotations

import sys
from pathlib import Path

from analyses.text import signed
from report import render

HEADER = ("model", "family", "accuracy among the items (binomial p)", "day-corruption gap",
          "relation-corruption gap", "named components (methods that agree)")


def _gap(ld: dict | None, corruption: str) -> str:
    if not ld or ld.get(f"{corruption}_gap_mean") is None:
        return "–"
    text = f"{signed(ld[f'{corruption}_gap_mean'])} ± {ld.get(f'{corruption}_gap_standard_error', 0):.2f}"
    return text if ld.get(f"{corruption}_gap_informative") else text + ", not informative"


def rows(build: render.Build) -> list[tuple[str, ...]]:
    out = []
    for page in build.pages:
        behaviour, ld = page.summary("behaviour"), page.summary("logit_diff")
        findings = page.findings
        if behaviour:
            n = int(behaviour.get("n_prompts", 0))
            accuracy = (f"{round(behaviour['day7_acc'] * n)}/{n} of {behaviour.get('n_items', 7)} items "
                        f"({behaviour.get('day7_p_value', float('nan')):.2g})")
        else:
            accuracy = "–"
        if not findings.does_task:
            named = "none: at chance" if findings.does_task is False else "–"
        elif not findings.components:
            named = "none passes a naming threshold"
        else:
            named = "; ".join(f"{name} ({', '.join(e.method for e in evidence)})"
                              for name, evidence in list(findings.components.items())[:3])
            extra = len(findings.components) - 3
            named += f"; and {extra} more" if extra > 0 else ""
        out.append((page.model_name, page.family, accuracy, _gap(ld, "day"), _gap(ld, "relation"), named))
    return out


def markdown(build: render.Build) -> str:
    lines = ["| " + " | ".join(HEADER) + " |", "| " + " | ".join("---" for _ in HEADER) + " |"]
    lines += ["| " + " | ".join(row) + " |" for row in rows(build)]
    return "\n".join(lines)


def main(argv: list[str]) -> int:
    if not argv:
        print("usage: python -m report.findings_table RUN_DIR [RUN_DIR ...]", file=sys.stderr)
        return 2
    print(markdown(render.collect([Path(a) for a in argv])))
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
