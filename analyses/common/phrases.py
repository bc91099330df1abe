"""The narrative's recurring sentences, written once: a model at chance, a gap that is not informative, nothing that
stands out, a share of the gap restored.

Every narrative builds these sentences here, so the report says one thing one way: a reader who has learnt what
"barely differ" or "nothing stands out" means on one section reads the same rule on every other. The rules behind the
words (when a gap is informative, when a component is named) are analyses/common/thresholds.py; this module only says
them.
"""

from __future__ import annotations

from analyses.common.thresholds import REVERSED, SMALL

# The first sentence of a narrative when the model does not do the task (its accuracy is not above chance).
AT_CHANCE = ("The model does not do this task (see Behaviour): what follows describes what it does instead, not how "
             "it computes the answer.")
INSTEAD = " (in what this model does instead of the task)"  # after a named component's role, at chance
NOTHING_STANDS_OUT = "nothing stands out"  # no component passes its method's naming threshold
RUNS = "The clean and corrupted runs"


def gap_clause(state: str | None, runs: str = RUNS) -> str:
    """How a narrative opens its sentence on a gap that is not informative: the runs '…' (reason follows).
    `state` is a `thresholds.Gap.state`; `runs` names the two runs when they are not the family's clean and
    corrupted prompts."""
    if state == REVERSED:
        return ("The model prefers the twin's answer on the clean prompts (a reversed gap): that is a behavioural "
                "finding, not a mechanism, and no component is given the corruption's role")
    if state == SMALL:
        return f"{runs} differ by a small but consistent amount, under the floor"
    return f"{runs} barely differ"


def not_informative(state: str | None, reason: str, consequence: str, runs: str = RUNS) -> str:
    """'<the gap clause> (<why the gap is not informative>): <what the section therefore does not claim>.'"""
    return f"{gap_clause(state, runs)} ({reason}): {consequence}."


def nothing_stands_out(why: str, then: str = "") -> str:
    """'<why no component passes the threshold>: nothing stands out<then>.'"""
    return f"{why}: {NOTHING_STANDS_OUT}{then}."


def nothing_stands_out_for(subject: str, why: str) -> str:
    """'Nothing stands out[ for <subject>]: <why>.' — the same finding, said first."""
    return f"{NOTHING_STANDS_OUT.capitalize()}{f' for {subject}' if subject else ''}: {why}."


def share(fraction: float) -> str:
    """A fraction as a whole percentage: 0.613 -> '61%' (never '-0%')."""
    text = f"{100 * fraction:.0f}%"
    return "0%" if text == "-0%" else text


def named_percentages(entries: list[dict]) -> str:
    """'L9H1 (61%), L9H6 (20%)': ranked entries by name, each with its value (a fraction) as a whole percentage."""
    return ", ".join(f"{e['name']} ({100 * e['value']:.0f}%)" for e in entries)


def restores(fraction: float, of: str = "of the gap") -> str:
    """'restores 61% of the gap' (`of=""`: 'restores 61%'): what patching (denoising) a component brings back of the
    clean − corrupted gap."""
    return f"restores {share(fraction)}" + (f" {of}" if of else "")
