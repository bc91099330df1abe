"""The golden run: a small run folder committed to the repository, so that tests of `build` and of the pages need no
model and no pipeline run.

`tests/golden/run/` is what `weekday-circuits run --analyses all` wrote for a planted tiny checkpoint (one head,
L1H2, carries the next-day circuit: tests/planted_circuit.py) on three families cut to their first templates
(FAMILIES, TEMPLATES): two day families and a month family, so the pages show a found circuit, both corruptions,
days and months and the transfer between them. `python -m tests.golden.regenerate` writes it again; run it when the
results format changes (report/store/results_format.py) or a summary's keys change, and commit the new folder.

`problems()` says why the committed folder no longer matches this version of the code; the `golden_run` fixture
(tests/conftest.py) and tests/test_golden.py fail with the regenerate command when it returns anything.
"""

from __future__ import annotations

import json
from pathlib import Path

RUN = Path(__file__).parent / "run"
MODEL = "planted-gpt2"  # the checkpoint's folder name, which names the model in the run
FAMILIES = ("tomorrow", "day_after", "next_month")
TEMPLATES = 2  # the first two templates (and relation twins) of each family: intervals over two; about 1 MB
REGENERATE = "python -m tests.golden.regenerate"


def problems(run: Path = RUN) -> list[str]:
    """Why `run` cannot stand for what this version's `run` writes: a results format other than the current one,
    a file whose checksum differs from the manifest's, a summary its schema rejects, a family or model missing."""
    from analyses import REGISTRY
    from report.errors import UserError
    from report.store import results_format, schema
    from report.store.loader import load_run

    recorded = json.loads((run / "manifest.json").read_text(encoding="utf-8")).get(results_format.KEY) \
        if (run / "manifest.json").is_file() else None
    if recorded != results_format.CURRENT:  # the loader upgrades older formats; the golden run must be current
        return [f"{run} holds results format {recorded!r}, not the current {results_format.CURRENT}"]
    try:
        loaded = load_run(run)
    except UserError as err:  # no manifest, another results format, a damaged manifest
        return [str(err)]
    found = [str(problem) for problem in loaded.problems]
    models = loaded.manifest["models"]
    if list(models) != [MODEL]:
        found.append(f"{run} holds models {sorted(models)}, not [{MODEL!r}]")
    families = {family for (_, family, _) in loaded.summaries}
    if families != set(FAMILIES):
        found.append(f"{run} holds families {sorted(families)}, not {sorted(FAMILIES)}")
    for family in FAMILIES:
        analyses = {schema.schema_name(folder) for (_, name, folder) in loaded.summaries if name == family}
        missing = sorted({a.name for a in REGISTRY} - analyses)
        if missing:
            found.append(f"{run} has no result of {', '.join(missing)} for {family} (an analysis added since, or "
                         "one that failed)")
    for (_, family, folder), summary in sorted(loaded.summaries.items()):
        errors = schema.validate(summary, schema.schema_name(folder))
        if errors:
            found.append(f"{family}/{folder}/summary.json does not match its schema: {errors[0][:160]}")
    return found


def stale_message(found: list[str]) -> str:
    more = f" (and {len(found) - 1} more)" if len(found) > 1 else ""
    return (f"the golden run {RUN} is stale: {found[0]}{more}. Regenerate it with `{REGENERATE}` (a few minutes "
            "on 2 cores), look at the diff and commit tests/golden/run/.")
