"""The one vocabulary of results units: a unit is one analysis, or one analysis under one corruption.

Its folder (and its section key on a page) is `<analysis>` or `<analysis>-<corruption>`. These two functions are
the only places that build or split that name (analysis names have no hyphen), for the pipeline, the results store,
the renderer, the schema lookup, the abstract and the transfer table alike.
"""

from __future__ import annotations


def unit_name(analysis: str, corruption: str | None) -> str:
    """The results folder of `analysis` (under `corruption`, for a per-corruption analysis)."""
    return analysis if corruption is None else f"{analysis}-{corruption}"


def unit_of(folder: str) -> tuple[str, str | None]:
    """(analysis, corruption or None) of a results folder's name: the inverse of unit_name."""
    analysis, _, corruption = folder.partition("-")
    return analysis, corruption or None
