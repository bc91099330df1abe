"""The index's "transfer across sequences" section: rows from saved results, no maths (see analyses/transfer.py).

Per model, the families are grouped by sequence (days, months, ...). Per sequence: how many families the model
does above chance and its mean accuracy above chance (behaviour), the best circle (geometry), and the top heads by
the day-corruption head patching (`patching_heads-day`, arrays `z_exact`) and by successor score
(`successor_heads`, arrays `successor_score`), each combined over the sequence's families by
analyses.transfer.sequence_scores. Per pair of sequences and per head score: the overlap and one sentence.
An analysis that was not run (or whose arrays are absent) is left out of the table, never guessed.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from itertools import combinations

import numpy as np

from analyses import transfer
from analyses.attribution import head_name
from analyses.types import Result
from report.results import unit_name

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
    overlap: transfer.Overlap
    sentence: str

    @property
    def rho(self) -> float | None:
        """The rank correlation, None where it is undefined (a constant score)."""
        return self.overlap.spearman if np.isfinite(self.overlap.spearman) else None


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
            if pair[0] is None or pair[1] is None or pair[0][0].shape != pair[1][0].shape:
                continue
            overlap = transfer.compare(pair[0][0], pair[1][0], pair[0][1], k)
            comparisons.append(ComparisonRow(kind, a, b, overlap,
                                             transfer.sentence(words, a, b, overlap, above[a] and above[b])))
    return TransferTable(rows, comparisons, k)


def _combined(families, names: list[str], kind: str) -> tuple[np.ndarray, list[str]] | None:
    """(combined [layers, heads] scores, head names) over the families that have this score; None if none has."""
    units, key, _, _ = HEAD_SCORES[kind]
    found = []
    for family in names:
        saved = families[family][1]
        unit = next((u for u in units if u in saved and key in saved[u].arrays), None)
        if unit is not None:
            found.append(saved[unit])
    if not found:
        return None
    arrays = [np.asarray(r.arrays[key], dtype=float) for r in found]
    if any(a.shape != arrays[0].shape or a.ndim != 2 for a in arrays):
        return None
    heads = found[0].labels.get("heads") or [[head_name(layer, h) for h in range(arrays[0].shape[1])]
                                             for layer in range(arrays[0].shape[0])]
    return transfer.sequence_scores(arrays, scale_each=kind == "patching"), list(np.asarray(heads).ravel())


def _sequence_row(sequence: str, names: list[str], families, scores: dict, k: int) -> SequenceRow:
    behaviours = [families[f][1]["behaviour"].summary for f in names if "behaviour" in families[f][1]]
    circles = [(families[f][1]["geometry"].summary, f) for f in names
               if "geometry" in families[f][1] and "best_circle_order" in families[f][1]["geometry"].summary]
    best_circle = None
    if circles:
        summary, family = max(circles, key=lambda c: c[0]["best_circle_order"])
        best_circle = f"{summary['best_circle_order']:.2f} at {summary['best_layer_label']} ({family})"
    return SequenceRow(
        sequence=sequence, families=names,
        n_above_chance=sum(bool(s.get("day7_above_chance")) for s in behaviours), n_with_behaviour=len(behaviours),
        accuracy_above_chance=(float(np.mean([s["day7_acc"] - s["chance_acc"] for s in behaviours]))
                               if behaviours else None),
        best_circle=best_circle,
        top_heads={kind: transfer.top_k(value[0], value[1], k) for kind, value in scores.items() if value is not None},
    )
