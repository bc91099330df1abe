"""The results contract: JSON Schemas of manifest.json and of each analysis's summary.json.

A summary's schema is generated from its analysis's TypedDict (`Analysis.summary_type`, analyses/common/contract.py),
and `run` checks every summary against it before writing (`check_summary`): a key the type does not declare, a missing
required key or a wrong type stops the run, naming the analysis. The generated schemas also ship with the package
(report/store/schemas/, written by `python -m report.store.schema_gen`) for other programs; a test fails when a shipped
schema and its type disagree. The manifest's schema (and the MIB circuit document's) are written by hand.
"""

from __future__ import annotations

import json
from functools import cache
from importlib import resources

from analyses.common.contract import summary_schema
from analyses.common.types import Analysis
from report.store.units import unit_of

MANIFEST = "manifest"
DOCUMENTS = ("mib_circuit",)  # schemas of extra result files (report/store/mib_circuit.py), not of a summary


class SummaryError(ValueError):
    """An analysis computed a summary its own type does not allow: a bug in that analysis, never bad input."""


def schema_name(folder: str) -> str:
    """An analysis folder's schema: a per-corruption folder `<analysis>-<corruption>` uses `<analysis>`'s."""
    from analyses import BY_NAME

    analysis, _ = unit_of(folder)
    return analysis if analysis in BY_NAME else folder


@cache
def load_schema(name: str) -> dict:
    """`manifest` or an analysis name, as shipped in report/store/schemas/; FileNotFoundError when none ships."""
    file = f"{name}.schema.json" if name in (MANIFEST, *DOCUMENTS) else f"{name}.summary.schema.json"
    return json.loads(resources.files("report.store").joinpath("schemas", file).read_text(encoding="utf-8"))


def validate(document: dict, name: str) -> list[str]:
    """Every violation of the shipped schema `name`, one line each ([] when valid)."""
    return _errors(document, load_schema(name))


def summary_errors(analysis: Analysis, summary: dict) -> list[str]:
    """Every violation of the schema generated from the analysis's summary type, one line each."""
    if analysis.summary_type is None:
        raise SummaryError(f"analysis {analysis.name!r} declares no summary_type (analyses/common/contract.py)")
    return _errors(summary, _generated(analysis.name, analysis.summary_type))


def check_summary(analysis: Analysis, summary: dict) -> None:
    """Raise SummaryError, naming the analysis and the first violations, unless the summary fits its type."""
    errors = summary_errors(analysis, summary)
    if errors:
        more = f" (and {len(errors) - 3} more)" if len(errors) > 3 else ""
        raise SummaryError(f"analysis {analysis.name!r} computed a summary that its type "
                           f"{_type_name(analysis.summary_type)} does not allow: {'; '.join(errors[:3])}{more}")


@cache
def _generated(name: str, summary_type) -> dict:
    return summary_schema(summary_type, name)


def _type_name(summary_type) -> str:
    return getattr(summary_type, "__name__", None) or " | ".join(t.__name__ for t in summary_type.__args__)


def _errors(document: dict, schema: dict) -> list[str]:
    import jsonschema

    validator = jsonschema.Draft202012Validator(schema)
    errors = sorted(validator.iter_errors(document), key=lambda e: list(map(str, e.absolute_path)))
    return [f"{'/'.join(map(str, e.absolute_path)) or '(top)'}: {_message(e)}" for e in errors]


def _message(error) -> str:
    """The error's message; for a summary of several possible shapes, the first error of the nearest shape."""
    if error.validator != "anyOf" or not error.context:
        return error.message
    by_shape: dict[int, list] = {}
    for sub in error.context:
        by_shape.setdefault(sub.relative_schema_path[0], []).append(sub)
    nearest = min(by_shape.values(), key=len)
    where = "/".join(map(str, nearest[0].absolute_path))
    return f"{where + ': ' if where else ''}{nearest[0].message} (in the nearest of its {len(by_shape)} shapes)"
