"""Transfer across sequences: do the heads that carry the next day also carry the next month? (numpy only)

Successor heads (Gould et al., ICLR 2024) and the sequence-continuation circuits of Lan & Barez are shared across
days, months and numbers. Given one per-head score per sequence ([layers, heads]; for example the mean over that
sequence's families of |patching effect| or of the successor score), this module measures how far two sequences
name the same heads:

  jaccard   |top-k(A) ∩ top-k(B)| / |top-k(A) ∪ top-k(B)| over head names: 1 = the same k heads, 0 = disjoint.
  spearman  rank correlation of the two per-head scores over all heads (Pearson correlation of the average
            ranks, ties averaged): 1 = the same ordering, 0 = unrelated, -1 = reversed. NaN when a score is constant.

Per-family patching effects are in different units (normalised fractions where the clean − corrupted gap is
informative, raw logit changes where it is not), so `sequence_scores` scales each family's |score| to a maximum
of 1 before averaging: a head's score is its mean share of its family's strongest head.

Finding rule: the same heads are said to carry both sequences when jaccard >= SAME_HEADS_JACCARD and
spearman >= SAME_HEADS_SPEARMAN; different heads when jaccard <= DIFFERENT_HEADS_JACCARD and spearman <
SAME_HEADS_SPEARMAN; otherwise the overlap is partial. A comparison is only read as a circuit when the model does
both tasks above chance (the behaviour section's binomial test); otherwise the sentence says so.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np

from analyses.stats import pearson

TOP_K = 5
SAME_HEADS_JACCARD = 0.5
SAME_HEADS_SPEARMAN = 0.5
DIFFERENT_HEADS_JACCARD = 0.2


def top_k(scores: np.ndarray, names: Sequence[str], k: int = TOP_K) -> list[str]:
    """The k names with the largest scores, largest first (ties: the earlier name); NaN ranks last."""
    flat = np.nan_to_num(np.asarray(scores, dtype=float).ravel(), nan=-np.inf)
    names = list(np.asarray(names).ravel())
    if len(names) != len(flat):
        raise ValueError(f"{len(names)} names for {len(flat)} scores")
    return [str(names[i]) for i in np.argsort(-flat, kind="stable")[:k]]


def jaccard(a: Iterable[str], b: Iterable[str]) -> float:
    """|A ∩ B| / |A ∪ B|; NaN when both are empty (nothing to compare)."""
    a, b = set(a), set(b)
    union = a | b
    return len(a & b) / len(union) if union else float("nan")


def average_ranks(x: np.ndarray) -> np.ndarray:
    """Ranks 1..n of x, ties given the mean of the ranks they span."""
    x = np.asarray(x, dtype=float).ravel()
    order = np.argsort(x, kind="stable")
    ranks = np.empty(len(x))
    ranks[order] = np.arange(1, len(x) + 1)
    for value in np.unique(x):
        tied = x == value
        if tied.sum() > 1:
            ranks[tied] = ranks[tied].mean()
    return ranks


def spearman(a: np.ndarray, b: np.ndarray) -> float:
    """Spearman rank correlation of two equally shaped score arrays (NaN if either is constant)."""
    a, b = np.asarray(a, dtype=float).ravel(), np.asarray(b, dtype=float).ravel()
    if a.shape != b.shape:
        raise ValueError(f"score arrays differ in size: {a.size} and {b.size}")
    return pearson(average_ranks(a), average_ranks(b))  # Spearman = Pearson of the average ranks


def sequence_scores(per_family: Sequence[np.ndarray], scale_each: bool = True) -> np.ndarray:
    """[layers, heads] mean over families of |score| (each scaled to max 1 first when `scale_each`)."""
    if not per_family:
        raise ValueError("no family scores to combine")
    stacked = []
    for scores in per_family:
        magnitude = np.abs(np.nan_to_num(np.asarray(scores, dtype=float), nan=0.0))
        peak = magnitude.max()
        stacked.append(magnitude / peak if scale_each and peak > 0 else magnitude)
    return np.mean(stacked, axis=0)


@dataclass(frozen=True)
class Overlap:
    """Two sequences' head rankings compared."""

    top_a: list[str]
    top_b: list[str]
    shared: list[str]  # in top_a's order
    jaccard: float
    spearman: float  # NaN when either score array is constant or absent

    @property
    def verdict(self) -> str:
        """'same', 'different' or 'partial' by the module's thresholds."""
        rho = self.spearman if np.isfinite(self.spearman) else -np.inf
        if self.jaccard >= SAME_HEADS_JACCARD and rho >= SAME_HEADS_SPEARMAN:
            return "same"
        if self.jaccard <= DIFFERENT_HEADS_JACCARD and rho < SAME_HEADS_SPEARMAN:
            return "different"
        return "partial"


def compare(scores_a: np.ndarray, scores_b: np.ndarray, names: Sequence[str], k: int = TOP_K) -> Overlap:
    """Top-k overlap and rank correlation of two [layers, heads] score arrays over the same heads."""
    top_a, top_b = top_k(scores_a, names, k), top_k(scores_b, names, k)
    return Overlap(top_a, top_b, [h for h in top_a if h in top_b], jaccard(top_a, top_b),
                   spearman(scores_a, scores_b))


def sentence(kind: str, a: str, b: str, overlap: Overlap, both_above_chance: bool) -> str:
    """One sentence on whether the same heads carry both sequences, from the numbers and the stated rule."""
    rho = f"{overlap.spearman:.2f}" if np.isfinite(overlap.spearman) else "not available"
    numbers = (f"top-{len(overlap.top_a)} Jaccard {overlap.jaccard:.2f} ({len(overlap.shared)} shared"
               + (f": {', '.join(overlap.shared)}" if overlap.shared else "") + f"), rank correlation {rho}")
    claim = {"same": f"the same heads carry {a} and {b}",
             "different": f"different heads carry {a} and {b}",
             "partial": f"{a} and {b} share some heads but not most"}[overlap.verdict]
    rule = (f"same when Jaccard ≥ {SAME_HEADS_JACCARD} and rank correlation ≥ {SAME_HEADS_SPEARMAN}; different when "
            f"Jaccard ≤ {DIFFERENT_HEADS_JACCARD} and rank correlation below {SAME_HEADS_SPEARMAN}")
    if not both_above_chance:
        return (f"By {kind}, {claim} ({numbers}; {rule}); but the model does not do both tasks above chance, so "
                "this compares what the heads do, not a shared next-item circuit.")
    return f"By {kind}, {claim} ({numbers}; {rule})."
