"""When a number counts as a finding: the rules every narrative and headline of the report applies.

1. Is the model doing the task at all? (`above_chance`) An exact one-sided binomial test of the number of prompts
   whose correct item is the argmax among the sequence's n items, against chance 1/n, at p < ALPHA over all the
   family's prompts (templates x items). Prompts share templates and items, so they are not independent draws:
   the test is a floor (a model below it is not doing the task), not a proof of a mechanism.

2. Is the clean − corrupted gap informative? (`informative_gap`) Activation patching reports
   (LD_patched − LD_corrupted) / (LD_clean − LD_corrupted). That ratio means something only when the two runs are
   clearly apart. We normalise only when the mean per-prompt gap is at least MIN_GAP_LOGITS, at least
   MIN_GAP_STANDARD_ERRORS standard errors of the per-prompt gaps above zero, and positive for at least
   MIN_POSITIVE_FRACTION of the prompts. Otherwise the report shows raw changes in logit difference, with units,
   and no percentages.

3. Is a component worth naming? (`notable`) A normalised effect must reach MIN_EFFECT_FRACTION of the gap; a raw
   effect (a direct logit attribution, a raw patching change) MIN_EFFECT_FRACTION of the reference |LD| and at
   least MIN_EFFECT_LOGITS. Below that, the narrative says that nothing stands out.

4. Is a component needed, sufficient, or both? (`analyses.necessity`) Noising it (its activation from the corrupted
   twin, in the clean run) must remove at least NEEDED_FRACTION of an informative gap for "needed"; denoising it
   (from the clean run, in the corrupted run) must restore at least NEEDED_FRACTION for "sufficient alone"; the
   other reading must stay at or under ALONE_FRACTION before AND (needed, not sufficient) or OR (sufficient, not
   needed) is said.
"""

from __future__ import annotations

from dataclasses import dataclass
from math import comb

import numpy as np

ALPHA = 0.05
MIN_GAP_LOGITS = 1.0
MIN_GAP_STANDARD_ERRORS = 3.0
MIN_POSITIVE_FRACTION = 0.75
MIN_EFFECT_FRACTION = 0.10
MIN_EFFECT_LOGITS = 0.1
ATTENTION_OVER_UNIFORM = 2.0  # a head's attention to a token is named only at >= this multiple of uniform attention
NEEDED_FRACTION = 0.5
ALONE_FRACTION = 0.25

RULES = (f"normalised only when the mean clean − corrupted gap is ≥ {MIN_GAP_LOGITS:g} logit, ≥ "
         f"{MIN_GAP_STANDARD_ERRORS:g} standard errors above zero and positive for ≥ {MIN_POSITIVE_FRACTION:.0%} of "
         f"the prompts; a component is named only when its effect is ≥ {MIN_EFFECT_FRACTION:.0%} of the gap (or, "
         f"for raw logit effects, of |LD| and ≥ {MIN_EFFECT_LOGITS:g} logit)")


def binomial_tail(successes: int, trials: int, p: float) -> float:
    """P(X >= successes) for X ~ Binomial(trials, p): the exact one-sided p-value against chance."""
    tail = sum(comb(trials, k) * p ** k * (1 - p) ** (trials - k) for k in range(successes, trials + 1))
    return min(1.0, float(tail))  # the sum of all terms can round to just above 1


def above_chance(successes: int, trials: int, n_items: int) -> tuple[bool, float]:
    """(above chance at p < ALPHA, the p-value) for `successes` of `trials` picks among n_items."""
    p_value = binomial_tail(successes, trials, 1.0 / n_items)
    return p_value < ALPHA, p_value


@dataclass(frozen=True)
class Gap:
    """The clean − corrupted gap of a family under one corruption, and whether it may be normalised."""

    mean: float  # mean over prompts of LD_clean − LD_corrupted, logits
    standard_error: float
    positive_fraction: float
    informative: bool
    reason: str  # why not (empty when informative)


def informative_gap(clean_ld: np.ndarray, corrupted_ld: np.ndarray) -> Gap:
    """Rule 2 above, on per-prompt logit differences [B] of the clean and corrupted runs."""
    gaps = np.asarray(clean_ld, dtype=float) - np.asarray(corrupted_ld, dtype=float)
    mean = float(gaps.mean())
    se = float(gaps.std(ddof=1) / np.sqrt(len(gaps))) if len(gaps) > 1 else float("inf")
    positive = float((gaps > 0).mean())
    reasons = []
    if mean < MIN_GAP_LOGITS:
        reasons.append(f"the mean gap is {mean:+.3g} logits, under {MIN_GAP_LOGITS:g}")
    if not mean >= MIN_GAP_STANDARD_ERRORS * se:
        reasons.append(f"it is under {MIN_GAP_STANDARD_ERRORS:g} standard errors ({se:.3g}) above zero")
    if positive < MIN_POSITIVE_FRACTION:
        reasons.append(f"only {positive:.0%} of the prompts have a positive gap")
    return Gap(mean, se, positive, not reasons, "; ".join(reasons))


def notable_fraction(value: float | None) -> bool:
    """A normalised effect (fraction of an informative gap) large enough to name."""
    return value is not None and np.isfinite(value) and abs(value) >= MIN_EFFECT_FRACTION


def notable_logits(value: float | None, reference: float) -> bool:
    """A raw effect in logits large enough to name, against a reference |LD| of the same prompts."""
    return (value is not None and np.isfinite(value) and abs(value) >= MIN_EFFECT_LOGITS
            and abs(value) >= MIN_EFFECT_FRACTION * abs(reference))
