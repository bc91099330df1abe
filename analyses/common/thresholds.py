"""When a number counts as a finding: the rules every narrative and headline of the report applies.

1. Is the model doing the task at all? (`above_chance`) An exact one-sided binomial test of the number of prompts
   whose correct item is the argmax among the sequence's n items, against chance 1/n, at p < ALPHA over all the
   family's prompts (templates x items). Prompts share templates and items, so they are not independent draws:
   the test is a floor (a model below it is not doing the task), not a proof of a mechanism.

2. Is the clean − corrupted gap informative? (`informative_gap`) Activation patching reports
   (LD_patched − LD_corrupted) / (LD_clean − LD_corrupted). That ratio means something only when the two runs are
   clearly apart. We normalise only when the mean per-prompt gap is at least the floor
   max(MIN_GAP_LOGITS, MIN_GAP_CLEAN_FRACTION x mean |LD_clean|) (a fixed logit floor would be tiny beside a
   30-logit clean preference and large beside a 1-logit one), at least MIN_GAP_STANDARD_ERRORS standard errors of
   the per-prompt gaps above zero, and positive for at least MIN_POSITIVE_FRACTION of the prompts. Otherwise the
   report shows raw changes in logit difference, with units, and no percentages. A gap is in one of three states
   (`Gap.state`), and every narrative says which:
     informative  the above; components may be given the corruption's role ("carries the step ...");
     reversed     the mirror image (mean gap <= −floor, >= the same standard errors below zero, negative for the same
                  fraction of prompts): the model prefers the twin's answer on the clean prompt. That is a
                  behavioural finding, said as such, and no component is given a role;
     small/noisy  neither: "small but consistent" when the gap is under the floor yet clearly one-signed (standard
                  errors and sign as above), else noisy ("barely differ"). No role sentence either.

3. Is a component worth naming? (`notable`) A normalised effect must reach MIN_EFFECT_FRACTION of the gap; a raw
   effect (a direct logit attribution, a raw patching change) MIN_EFFECT_FRACTION of the reference |LD| and at
   least MIN_EFFECT_LOGITS. Below that, the narrative says that nothing stands out.

4. Is a component needed, sufficient, or both? (`analyses.methods.necessity`) Noising it (its activation from the
corrupted
   twin, in the clean run) must remove at least NEEDED_FRACTION of an informative gap for "needed"; denoising it
   (from the clean run, in the corrupted run) must restore at least NEEDED_FRACTION for "sufficient alone"; the
   other reading must stay at or under ALONE_FRACTION before AND (needed, not sufficient) or OR (sufficient, not
   needed) is said.

5. Method-specific rules (a faithful circuit, a selective neuron, an offset head, a circle, a period, the same heads
   across families): the constants of section 5 below, one comment each.
"""

from __future__ import annotations

from dataclasses import dataclass
from math import comb

import numpy as np

ALPHA = 0.05
MIN_GAP_LOGITS = 0.5  # the floor's fixed part, logits
MIN_GAP_CLEAN_FRACTION = 0.25  # the floor's scaling part: a fraction of the mean |LD| on the clean prompts
MIN_GAP_STANDARD_ERRORS = 3.0
MIN_POSITIVE_FRACTION = 0.75
MIN_EFFECT_FRACTION = 0.10
MIN_EFFECT_LOGITS = 0.1
ATTENTION_OVER_UNIFORM = 2.0  # a head's attention to a token is named only at >= this multiple of uniform attention
NEEDED_FRACTION = 0.5
ALONE_FRACTION = 0.25

# 5. Method-specific rules: when one analysis's number counts as a finding. Each is read by that analysis's summary and
# narrative (and by the abstract through the summary's `*_threshold` keys), never restated as a literal.
# circuit (nodes) and edge_circuits: a circuit is "faithful" when ablating everything outside it keeps this share of the
# full model's logit difference.
FAITHFUL_TARGET = 0.8
FAITHFULNESS_EXCESS = 0.05  # circuit: faithfulness above 1 + this is explained (which ablated nodes help the answer)
# neurons: a neuron "fires for one item" when its most activating item beats the second by this share of its range
# over items; the top-k neurons "restore what the MLP does" at NEURONS_ENOUGH of the whole MLP's patching effect.
SELECTIVE_NEURON = 0.5
NEURONS_ENOUGH = 0.8
# successor_heads: a head is named as a successor / copy head only at a score of at least OFFSET_NAME_SCORE (5 of 7
# items), raised until a head with uniform argmaxes reaches it for any offset with probability under OFFSET_NAME_P.
OFFSET_NAME_SCORE = 5 / 7
OFFSET_NAME_P = 0.001
# geometry: the items lie on a circle when at least MIN_CIRCLE_ORDER of consecutive items are angular neighbours; the
# rotation check passes when the mean offset is within MAX_ROTATION_ERROR_STEPS steps of the expected one (half a
# step: the final state is nearer the answer than its neighbours); the plane is causal when editing it moves the answer
# for MIN_CAUSAL_MARGIN more of the trials than the baselines.
MIN_CIRCLE_ORDER = 0.8
MAX_ROTATION_ERROR_STEPS = 0.5
MIN_CAUSAL_MARGIN = 0.25
PLANE_DOMINANCE = 1.5  # circle_stats: the plane holds >= this x the 2/(n-1) floor of n evenly spread centred points
# periodic: period n holds at least MIN_PERIOD_SHARE of the item means' variance, and the winning side's share beats
# the other side's best by MIN_PERIOD_MARGIN (points of variance).
MIN_PERIOD_SHARE = 0.8
MIN_PERIOD_MARGIN = 0.2
# transfer: two families use the same heads at Jaccard >= SAME_HEADS_JACCARD of their top heads and Spearman >=
# SAME_HEADS_SPEARMAN (and an overlap beyond chance); different heads at Jaccard <= DIFFERENT_HEADS_JACCARD.
SAME_HEADS_JACCARD = 0.5
SAME_HEADS_SPEARMAN = 0.5
DIFFERENT_HEADS_JACCARD = 0.2
# behaviour: a model that ignores the relation word is said to answer by the clean prompt's rule, whatever the relation
# word says, when at least this share of the relation twins are answered by that rule.
FOLLOWS_RULE_FRACTION = 0.5

# Colour scales are anchored to these sizes, not to each plot's own maximum, so that noise stays pale: a signed map
# in logits spans at least ±SCALE_LOGITS (the smallest gap the report normalises), one in fractions of a gap at least
# ±SCALE_FRACTION (the whole gap), one in probability at least ±SCALE_PROBABILITY. A map whose cells exceed its
# anchor widens to its own largest cell.
SCALE_LOGITS = MIN_GAP_LOGITS
SCALE_FRACTION = 1.0
SCALE_PROBABILITY = MIN_EFFECT_FRACTION

RULES = (f"normalised only when the mean clean − corrupted gap is ≥ max({MIN_GAP_LOGITS:g} logit, "
         f"{MIN_GAP_CLEAN_FRACTION:.0%} of the clean |LD|), ≥ "
         f"{MIN_GAP_STANDARD_ERRORS:g} standard errors above zero and positive for ≥ {MIN_POSITIVE_FRACTION:.0%} of "
         f"the prompts (a mirror-image gap is reported as reversed, a behavioural finding); a component "
         f"is named only when its effect is ≥ {MIN_EFFECT_FRACTION:.0%} of the gap (or, "
         f"for raw logit effects, of |LD| and ≥ {MIN_EFFECT_LOGITS:g} logit)")


def binomial_tail(successes: int, trials: int, p: float) -> float:
    """P(X >= successes) for X ~ Binomial(trials, p): the exact one-sided p-value against chance."""
    tail = sum(comb(trials, k) * p ** k * (1 - p) ** (trials - k) for k in range(successes, trials + 1))
    return min(1.0, float(tail))  # the sum of all terms can round to just above 1


def sign_test(positive: int, n: int) -> float:
    """Exact two-sided sign test: P(a count at least as far from n/2 as `positive`) under Binomial(n, 1/2)."""
    if n == 0:
        return 1.0
    return min(1.0, 2 * binomial_tail(max(positive, n - positive), n, 0.5))


def above_chance(successes: int, trials: int, n_items: int) -> tuple[bool, float]:
    """(above chance at p < ALPHA, the p-value) for `successes` of `trials` picks among n_items."""
    p_value = binomial_tail(successes, trials, 1.0 / n_items)
    return p_value < ALPHA, p_value


INFORMATIVE, REVERSED, SMALL, NOISY = "informative", "reversed", "small", "noisy"
GAP_STATES = (INFORMATIVE, REVERSED, SMALL, NOISY)  # SMALL and NOISY are the two faces of "small or noisy"


@dataclass(frozen=True)
class Gap:
    """The clean − corrupted gap of a family under one corruption, and whether it may be normalised."""

    mean: float  # mean over prompts of LD_clean − LD_corrupted, logits
    standard_error: float
    positive_fraction: float
    informative: bool
    reason: str  # why not (empty when informative)
    state: str = INFORMATIVE  # one of GAP_STATES
    floor: float = MIN_GAP_LOGITS  # the floor this gap was held to, logits


def gap_floor(clean_ld: np.ndarray) -> float:
    """max(MIN_GAP_LOGITS, MIN_GAP_CLEAN_FRACTION x mean |LD_clean|), logits."""
    return max(MIN_GAP_LOGITS, MIN_GAP_CLEAN_FRACTION * float(np.mean(np.abs(np.asarray(clean_ld, dtype=float)))))


def informative_gap(clean_ld: np.ndarray, corrupted_ld: np.ndarray) -> Gap:
    """Rule 2 above, on per-prompt logit differences [B] of the clean and corrupted runs."""
    gaps = np.asarray(clean_ld, dtype=float) - np.asarray(corrupted_ld, dtype=float)
    mean = float(gaps.mean())
    se = float(gaps.std(ddof=1) / np.sqrt(len(gaps))) if len(gaps) > 1 else float("inf")
    positive, negative = float((gaps > 0).mean()), float((gaps < 0).mean())
    floor = gap_floor(clean_ld)
    consistent = abs(mean) >= MIN_GAP_STANDARD_ERRORS * se and max(positive, negative) >= MIN_POSITIVE_FRACTION
    if mean <= -floor and consistent and negative >= MIN_POSITIVE_FRACTION:
        reason = (f"reversed: the clean prompts prefer the twin's answer, by {-mean:.3g} logits on average "
                  f"(standard error {se:.2g}; {negative:.0%} of the prompts)")
        return Gap(mean, se, positive, False, reason, REVERSED, floor)
    reasons = []
    if mean < floor:
        reasons.append(f"the mean gap is {mean:+.3g} logits, under the floor of {floor:.3g} "
                       f"(max of {MIN_GAP_LOGITS:g} and {MIN_GAP_CLEAN_FRACTION:.0%} of the clean |LD|)")
    if not mean >= MIN_GAP_STANDARD_ERRORS * se:
        reasons.append(f"it is under {MIN_GAP_STANDARD_ERRORS:g} standard errors ({se:.3g}) above zero")
    if positive < MIN_POSITIVE_FRACTION:
        reasons.append(f"only {positive:.0%} of the prompts have a positive gap")
    if not reasons:
        return Gap(mean, se, positive, True, "", INFORMATIVE, floor)
    state = SMALL if consistent and abs(mean) < floor else NOISY
    return Gap(mean, se, positive, False, "; ".join(reasons), state, floor)


def notable_fraction(value: float | None) -> bool:
    """A normalised effect (fraction of an informative gap) large enough to name."""
    return value is not None and np.isfinite(value) and abs(value) >= MIN_EFFECT_FRACTION


def notable_logits(value: float | None, reference: float) -> bool:
    """A raw effect in logits large enough to name, against a reference |LD| of the same prompts."""
    return (value is not None and np.isfinite(value) and abs(value) >= MIN_EFFECT_LOGITS
            and abs(value) >= MIN_EFFECT_FRACTION * abs(reference))
