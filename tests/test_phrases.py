"""The narrative's recurring sentences come from one phrase book (analyses/common/phrases.py), and say the gap's
state."""

from __future__ import annotations

import re
from pathlib import Path

from analyses.common import phrases
from analyses.common.thresholds import GAP_STATES, INFORMATIVE, NOISY, REVERSED, SMALL

ROOT = Path(__file__).resolve().parent.parent


def test_each_gap_state_that_is_not_informative_is_said_its_own_way():
    said = {state: phrases.gap_clause(state) for state in (REVERSED, SMALL, NOISY)}
    assert len(set(said.values())) == 3 and set(GAP_STATES) - {INFORMATIVE} == set(said)
    assert said[NOISY] == "The clean and corrupted runs barely differ" and "reversed" in said[REVERSED]
    assert phrases.gap_clause(SMALL, runs="The runs that rank").startswith("The runs that rank differ by a small")


def test_the_sentences_keep_their_reason_and_consequence_and_end_once():
    text = phrases.not_informative(NOISY, "the mean gap is +0.1 logits", "no MLP is studied")
    assert text == "The clean and corrupted runs barely differ (the mean gap is +0.1 logits): no MLP is studied."
    assert phrases.nothing_stands_out("No head passes", " in the histogram") == (
        "No head passes: nothing stands out in the histogram.")
    assert phrases.nothing_stands_out_for("the heads", "none writes 1 logit") == (
        "Nothing stands out for the heads: none writes 1 logit.")
    assert phrases.nothing_stands_out_for("", "none") == "Nothing stands out: none."


def test_shares_round_to_whole_percent_and_never_print_minus_zero():
    assert phrases.share(0.613) == "61%" and phrases.share(-0.001) == "0%" and phrases.share(-0.2) == "-20%"
    assert phrases.restores(0.5) == "restores 50% of the gap" and phrases.restores(0.5, of="") == "restores 50%"


def test_no_narrative_writes_the_recurring_sentences_by_hand():
    """'barely differ' and 'nothing stands out' are built in analyses/common/phrases.py only (docstrings and
    comments may name them), so that a reworded rule reads the same on every section."""
    pattern = re.compile(r"""["'][^"'\n]*(barely differ|nothing stands out)""", re.IGNORECASE)
    files = [p for folder in ("analyses", "report") for p in sorted((ROOT / folder).rglob("*.py"))]
    assert ROOT / "analyses" / "common" / "phrases.py" in files
    others = {"phrases.py",
              "thresholds.py",  # its docstring states the rules the phrases say
              "stats.py"}  # the saved `value_unit` label of a raw sweep, read by other programs: not a narrative
    found = [f"{p.relative_to(ROOT)}:{n}: {line.strip()}" for p in files if p.name not in others
             for n, line in enumerate(p.read_text(encoding="utf-8").splitlines(), 1)
             if pattern.search(line) and not line.lstrip().startswith(("#", '"""'))]
    assert found == [], "\n".join(found)
