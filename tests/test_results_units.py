"""Results units: `<analysis>` or `<analysis>-<corruption>`, named and split in report/store/units.py only."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from analyses import REGISTRY
from analyses.common.types import CORRUPTIONS
from report.publish import transfer_page
from report.store.schema import schema_name
from report.store.units import unit_name, unit_of

UNITS = [(a.name, c) for a in REGISTRY for c in ((None, *CORRUPTIONS) if a.per_corruption else (None,))]


@pytest.mark.parametrize("analysis, corruption", UNITS, ids=lambda v: str(v))
def test_a_units_folder_splits_back_into_its_analysis_and_corruption(analysis, corruption):
    folder = unit_name(analysis, corruption)
    assert unit_of(folder) == (analysis, corruption)
    assert schema_name(folder) == analysis  # a per-corruption folder is checked against its analysis's schema


def test_names_are_distinct_and_carry_the_corruption_only_when_given():
    folders = [unit_name(a, c) for a, c in UNITS]
    assert len(set(folders)) == len(folders)
    assert unit_name("patching_heads", "day") == "patching_heads-day" and unit_name("behaviour", None) == "behaviour"
    assert all("-" not in a.name for a in REGISTRY)  # what makes the split unambiguous


def test_an_unknown_folder_is_its_own_schema_name_and_the_transfer_table_reads_the_day_unit():
    assert schema_name("not_an_analysis-day") == "not_an_analysis-day"
    units, *_ = transfer_page.HEAD_SCORES["patching"]
    assert unit_of(units[0]) == ("patching_heads", "day")


ROOT = Path(__file__).resolve().parent.parent


def test_no_module_but_units_builds_or_splits_a_unit_name_by_hand():
    """A unit's name written out in code (`f"patching_heads-{c}"`, `"ablations-day"`) or split with a hyphen
    outside report/store/units.py would be a second vocabulary that drifts from the first."""
    names = "|".join(sorted(a.name for a in REGISTRY))
    by_hand = re.compile(rf"""["'](?:{names})-(?:\{{|{"|".join(CORRUPTIONS)}\b)""")
    split = re.compile(r"""\.r?(?:partition|split)\(["']-["']""")
    files = [p for folder in ("report", "analyses") for p in sorted((ROOT / folder).rglob("*.py"))]
    assert ROOT / "report" / "store" / "units.py" in files
    found = [f"{p.relative_to(ROOT)}:{n}: {line.strip()}" for p in files if p.name != "units.py"
             for n, line in enumerate(p.read_text(encoding="utf-8").splitlines(), 1)
             if by_hand.search(line.split("#")[0]) or split.search(line)]
    assert found == [], "unit names built or split outside report/store/units.py:\n" + "\n".join(found)
