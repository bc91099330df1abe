"""The index's "transfer across sequences" section: rows from saved results, no maths (see
analyses/methods/transfer.py).

Per model, the families are grouped by sequence (days, months, ...). Per sequence: how many families the model
does above chance and its mean accuracy above chance (behaviour), the best circle (geometry), and the top heads by
the day-corruption head patching (`patching_heads-day`, arrays `z_exact`) and by successor score
(`successor_heads`, arrays `successor_score`), each combined over the sequence's families by
analyses.methods.transfer.sequence_scores. Per pair of sequences and per head score: the overlap, its chance level and
one sentence. Head patching is compared over NOTABLE heads only: per sequence, the mean |z effect| over the families
whose day-corruption gap is informative (fractions of the gap, one unit), and the heads that pass the naming
threshold; a pair is skipped, with the reason, when a sequence has no informative family or no notable head. The
successor score (no gap) is compared by its top k, beside the chance Jaccard of two random top-k sets.
An analysis that was not run (or whose arrays are absent) is left out of the table, never guessed.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from itertools import combinations

import numpy as np

from analyses.common.types import Result
from analyses.methods import transfer
from analyses.methods.attribution import head_name
from report.store.units import unit_name

# head score kind -> (results units, first found wins; arrays key; summary ranking key; words for the sentence).
# Head patching is saved per corruption (`patching_heads-day`); runs from before that saved one `patching_heads`.
HEAD_SCORES = {
    "patching": ((unit_name("patching_heads", "day"), "patching_heads"), "z_exact", "top_heads",
                 "head patching (|z effect|, day corruption)"),
    "successor": (("successor_heads",), "successor_score", "top_successor", "successor score (OV circuit)"),
}


@dataclass
class SequenceRow:
    sequence: str
    families: list[str]
    n_above_chance: int  # families whose item accuracy passes the binomial test
    n_with_behaviour: int
    accuracy_above_chance: float | None  # mean over families of (item accuracy - 1/n)
    best_circle: str | None  # "0.86 at L5 resid_pre (tomorrow)"
    top_heads: dict[str, list[str]] = field(default_factory=dict)  # kind -> top-k head names


@dataclass
class ComparisonRow:
    kind: str
    a: str
    b: str
    overlap: transfer.Overlap | None  # None when skipped
    sentence: str
    skipped: str = ""  # why the pair was not compared

    @property
    def rho(self) -> float | None:
        """The rank correlation, None where it is undefined (a constant score) or the pair was skipped."""
        return self.overlap.spearman if self.overlap and np.isfinite(self.overlap.spearman) else None

    @property
    def chance(self) -> float | None:
        return self.overlap.chance if self.overlap and np.isfinite(self.overlap.chance) else None


@dataclass
class TransferTable:
    sequences: list[SequenceRow]
    comparisons: list[ComparisonRow]
    k: int = transfer.TOP_K


def transfer_table(families: dict[str, tuple[str, dict[str, Result]]], k: int = transfer.TOP_K) -> TransferTable | None:
    """The section's rows for one model; None when its families cover fewer than two sequences."""
    by_sequence: dict[str, list[str]] = {}
    for family, (sequence, _) in families.items():
        by_sequence.setdefault(sequence, []).append(family)
    if len(by_sequence) < 2:
        return None
    scores = {kind: {seq: _combined(families, names, kind) for seq, names in by_sequence.items()}
              for kind in HEAD_SCORES}
    rows = [_sequence_row(seq, names, families, {kind: scores[kind][seq] for kind in HEAD_SCORES}, k)
            for seq, names in by_sequence.items()]
    above = {row.sequence: row.n_above_chance > 0 for row in rows}
    comparisons = []
    for kind, (_, _, _, words) in HEAD_SCORES.items():
        for a, b in combinations(by_sequence, 2):
            pair = (scores[kind][a], scores[kind][b])
            if pair[0] is None or pair[1] is None:
                continue
            reason = next((f"{seq}: {value}" for seq, value in ((a, pair[0]), (b, pair[1])) if isinstance(value, str)),
                          "")
            if not reason and pair[0][0].shape != pair[1][0].shape:
                continue
            if kind == "patching" and not reason:
                empty = [seq for seq, value in ((a, pair[0]), (b, pair[1]))
                         if not transfer.notable_heads(value[0], value[1])]
                reason = "; ".join(f"{seq}: no head reaches the naming threshold" for seq in empty)
            if reason:
                comparisons.append(ComparisonRow(kind, a, b, None, f"By {words}, {a} and {b} are not compared: "
                                                 f"{reason}.", reason))
                continue
            overlap = (transfer.compare_notable(pair[0][0], pair[1][0], pair[0][1]) if kind == "patching"
                       else transfer.compare(pair[0][0], pair[1][0], pair[0][1], k))
            comparisons.append(ComparisonRow(kind, a, b, overlap,
                                             transfer.sentence(words, a, b, overlap, above[a] and above[b])))
    return TransferTable(rows, comparisons, k)


def _combined(families, names: list[str], kind: str) -> tuple[np.ndarray, list[str]] | str | None:
    """(combined [layers, heads] scores, head names) over the families that have this score; None if none has;
    for head patching, the reason (a string) when none of them has an informative gap."""
    units, key, _, _ = HEAD_SCORES[kind]
    found = []
    for family in names:
        saved = families[family][1]
        unit = next((u for u in units if u in saved and key in saved[u].arrays), None)
        if unit is not None:
            found.append(saved[unit])
    if not found:
        return None
    if kind == "patching":  # only fractions of an informative gap can be named (analyses.common.thresholds, rule 2)
        found = [r for r in found if r.summary.get("normalised")]
        if not found:
            return "no family has an informative clean − corrupted gap, so no head can be named"
    arrays = [np.asarray(r.arrays[key], dtype=float) for r in found]
    if any(a.shape != arrays[0].shape or a.ndim != 2 for a in arrays):
        return None
    heads = found[0].labels.get("heads") or [[head_name(layer, h) for h in range(arrays[0].shape[1])]
                                             for layer in range(arrays[0].shape[0])]
    if kind == "patching":  # every array is a fraction of its family's gap: one unit, averaged as it is
        return np.mean(np.abs(np.nan_to_num(np.stack(arrays), nan=0.0)), axis=0), list(np.asarray(heads).ravel())
    return transfer.sequence_scores(arrays, scale_each=False), list(np.asarray(heads).ravel())


def _sequence_row(sequence: str, names: list[str], families, scores: dict, k: int) -> SequenceRow:
    behaviours = [families[f][1]["behaviour"].summary for f in names if "behaviour" in families[f][1]]
    circles = [(families[f][1]["geometry"].summary, f) for f in names
               if "geometry" in families[f][1] and "best_circle_order" in families[f][1]["geometry"].summary]
    best_circle = None
    if circles:
        summary, family = max(circles, key=lambda c: c[0]["best_circle_order"])
        best_circle = f"{summary['best_circle_order']:.2f} at {summary['best_layer_label']} ({family})"
        # a polygon is not a circle until the causal test says so
        best_circle += "; circle named (causal test)" if summary["circle_named"] else "; no circle named"
    return SequenceRow(
        sequence=sequence, families=names,
        n_above_chance=sum(s["items_above_chance"] for s in behaviours), n_with_behaviour=len(behaviours),
        accuracy_above_chance=(float(np.mean([s["items_acc"] - s["chance_acc"] for s in behaviours]))
                               if behaviours else None),
        best_circle=best_circle,
        top_heads={kind: (transfer.notable_heads(value[0], value[1]) if kind == "patching"
                          else transfer.top_k(value[0], value[1], k))
                   for kind, value in scores.items() if value is not None and not isinstance(value, str)},
    )
