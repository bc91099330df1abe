"""The results contract: JSON Schemas of manifest.json and of each analysis's summary.json, shipped with the
package (report/schemas/). Other programs read the results against these; the tests check every summary of
a full run against them. `additionalProperties` is allowed, so a later version may add keys; required keys
and their types are the contract.
"""

from __future__ import annotations

import json
from functools import cache
from importlib import resources

from report.units import unit_of

MANIFEST = "manifest"
DOCUMENTS = ("mib_circuit",)  # schemas of extra result files (report/mib_circuit.py), not of a summary


def schema_name(folder: str) -> str:
    """An analysis folder's schema: a per-corruption folder `<analysis>-<corruption>` uses `<analysis>`'s."""
    from analyses import BY_NAME

    analysis, _ = unit_of(folder)
    return analysis if analysis in BY_NAME else folder


@cache
def load_schema(name: str) -> dict:
    """`manifest` or an analysis name; FileNotFoundError when none ships."""
    file = f"{name}.schema.json" if name in (MANIFEST, *DOCUMENTS) else f"{name}.summary.schema.json"
    return json.loads(resources.files("report").joinpath("schemas", file).read_text(encoding="utf-8"))


def validate(document: dict, name: str) -> list[str]:
    """Every violation of the schema, one line each ([] when valid). Needs the `jsonschema` package."""
    import jsonschema

    validator = jsonschema.Draft202012Validator(load_schema(name))
    return [f"{'/'.join(map(str, e.absolute_path)) or '(top)'}: {e.message}"
            for e in sorted(validator.iter_errors(document), key=lambda e: list(map(str, e.absolute_path)))]
