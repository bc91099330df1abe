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

Notable heads only. Two random sets of heads overlap by chance: two random top-5 sets of 12 heads have a mean
Jaccard of 0.28, so a top-k overlap of noise heads says nothing. Where the per-head scores are fractions of an
informative clean − corrupted gap (head patching), each sequence is represented by its NOTABLE heads (the naming
threshold, analyses.common.thresholds.notable_fraction), and the comparison is skipped, with the reason, when a sequence
has no family with an informative gap or no notable head. Every overlap is printed beside its chance level:

  chance_jaccard(N, a, b)  E[|A ∩ B| / |A ∪ B|] for random sets of a and b of N heads (overlap hypergeometric)
  overlap_p_value          P(overlap >= observed) under that draw (exact hypergeometric tail)

Finding rule: the same heads are said to carry both sequences when jaccard >= SAME_HEADS_JACCARD, spearman >=
SAME_HEADS_SPEARMAN and the overlap is beyond chance (overlap_p_value < ALPHA); different heads when jaccard <=
DIFFERENT_HEADS_JACCARD and spearman < SAME_HEADS_SPEARMAN; otherwise the overlap is partial. A comparison is only
read as a circuit when the model does both tasks above chance (the behaviour section's binomial test); otherwise
the sentence says so.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from math import comb

import numpy as np

from analyses.common import thresholds
from analyses.common.stats import pearson
from analyses.common.thresholds import DIFFERENT_HEADS_JACCARD, SAME_HEADS_JACCARD, SAME_HEADS_SPEARMAN

TOP_K = 5


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


def _overlap_probabilities(n_heads: int, size_a: int, size_b: int) -> dict[int, float]:
    """overlap x -> P(|A ∩ B| = x) for a random a-set and b-set of n_heads heads (hypergeometric)."""
    total = comb(n_heads, size_b)
    return {x: comb(size_a, x) * comb(n_heads - size_a, size_b - x) / total
            for x in range(max(0, size_a + size_b - n_heads), min(size_a, size_b) + 1)}


def chance_jaccard(n_heads: int, size_a: int, size_b: int) -> float:
    """E[Jaccard] of two random head sets of sizes a and b among n_heads (NaN when both are empty)."""
    if size_a + size_b == 0:
        return float("nan")
    return float(sum(p * x / (size_a + size_b - x) for x, p in _overlap_probabilities(n_heads, size_a, size_b).items()))


def overlap_p_value(n_heads: int, size_a: int, size_b: int, shared: int) -> float:
    """P(overlap >= shared) for two random head sets of sizes a and b among n_heads."""
    return float(min(1.0, sum(p for x, p in _overlap_probabilities(n_heads, size_a, size_b).items() if x >= shared)))


def notable_heads(scores: np.ndarray, names: Sequence[str]) -> list[str]:
    """The heads whose |score| (a fraction of an informative gap) passes the naming threshold, largest first."""
    flat = np.abs(np.nan_to_num(np.asarray(scores, dtype=float).ravel(), nan=0.0))
    return [str(np.asarray(names).ravel()[i]) for i in np.argsort(-flat, kind="stable")
            if thresholds.notable_fraction(flat[i])]


@dataclass(frozen=True)
class Overlap:
    """Two sequences' head rankings compared."""

    top_a: list[str]
    top_b: list[str]
    shared: list[str]  # in top_a's order
    jaccard: float
    spearman: float  # NaN when either score array is constant or absent
    chance: float = float("nan")  # the mean Jaccard of random head sets of the same sizes
    p_value: float = float("nan")  # P(an overlap at least this large) for random sets; NaN: not computed

    @property
    def verdict(self) -> str:
        """'same', 'different' or 'partial' by the module's thresholds."""
        rho = self.spearman if np.isfinite(self.spearman) else -np.inf
        beyond_chance = not np.isfinite(self.p_value) or self.p_value < thresholds.ALPHA
        if self.jaccard >= SAME_HEADS_JACCARD and rho >= SAME_HEADS_SPEARMAN and beyond_chance:
            return "same"
        if self.jaccard <= DIFFERENT_HEADS_JACCARD and rho < SAME_HEADS_SPEARMAN:
            return "different"
        return "partial"


def compare(scores_a: np.ndarray, scores_b: np.ndarray, names: Sequence[str], k: int = TOP_K) -> Overlap:
    """Top-k overlap and rank correlation of two [layers, heads] score arrays over the same heads."""
    top_a, top_b = top_k(scores_a, names, k), top_k(scores_b, names, k)
    return _overlap(top_a, top_b, spearman(scores_a, scores_b), len(np.asarray(names).ravel()))


def compare_notable(scores_a: np.ndarray, scores_b: np.ndarray, names: Sequence[str]) -> Overlap:
    """Overlap of the two sequences' notable heads (fractions of informative gaps), and rank correlation."""
    return _overlap(notable_heads(scores_a, names), notable_heads(scores_b, names), spearman(scores_a, scores_b),
                    len(np.asarray(names).ravel()))


def _overlap(top_a: list[str], top_b: list[str], rho: float, n_heads: int) -> Overlap:
    shared = [h for h in top_a if h in top_b]
    return Overlap(top_a, top_b, shared, jaccard(top_a, top_b), rho, chance_jaccard(n_heads, len(top_a), len(top_b)),
                   overlap_p_value(n_heads, len(top_a), len(top_b), len(shared)))


def sentence(kind: str, a: str, b: str, overlap: Overlap, both_above_chance: bool) -> str:
    """One sentence on whether the same heads carry both sequences, from the numbers and the stated rule."""
    rho = f"{overlap.spearman:.2f}" if np.isfinite(overlap.spearman) else "not available"
    chance = (f", chance {overlap.chance:.2f} for random sets of these sizes, p = {overlap.p_value:.2g}"
              if np.isfinite(overlap.chance) else "")
    numbers = (f"{len(overlap.top_a)} and {len(overlap.top_b)} heads, Jaccard {overlap.jaccard:.2f}{chance} "
               f"({len(overlap.shared)} shared" + (f": {', '.join(overlap.shared)}" if overlap.shared else "")
               + f"), rank correlation {rho}")
    claim = {"same": f"the same heads carry {a} and {b}",
             "different": f"different heads carry {a} and {b}",
             "partial": f"{a} and {b} share some heads but not most"}[overlap.verdict]
    rule = (f"same when Jaccard ≥ {SAME_HEADS_JACCARD}, beyond chance (p < {thresholds.ALPHA}) and rank correlation ≥ "
            f"{SAME_HEADS_SPEARMAN}; different when Jaccard ≤ {DIFFERENT_HEADS_JACCARD} and rank correlation below "
            f"{SAME_HEADS_SPEARMAN}")
    if not both_above_chance:
        return (f"By {kind}, {claim} ({numbers}; {rule}); but the model does not do both tasks above chance, so "
                "this compares what the heads do, not a shared next-item circuit.")
    return f"By {kind}, {claim} ({numbers}; {rule})."
