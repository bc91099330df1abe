"""Scores of the heads' OV grids over the items: successor and copy scores, offset histograms, the naming threshold.

A grid [L, H, n, n] holds, per head, the logit of item e (column) promoted from item d's input (row;
`analyses.methods.ov_circuits`); a head's offset for item d is (argmax of its row − d) mod n. Numpy only.
"""

from __future__ import annotations

import numpy as np

from analyses.common.thresholds import OFFSET_NAME_P, OFFSET_NAME_SCORE, binomial_tail


def scores(grids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """[L, H, n, n] -> successor and copy scores [L, H]: fraction of rows whose argmax is d + 1, resp. d."""
    n = grids.shape[-1]
    best = grids.argmax(-1)  # [L, H, n]
    items = np.arange(n)
    return (best == (items + 1) % n).mean(-1), (best == items).mean(-1)


def offset_histogram(grids: np.ndarray) -> np.ndarray:
    """[L, H, n, n] -> [L, H, n]: fraction of items d whose row argmax lies at (d + k) mod n, for k = 0 .. n-1."""
    n = grids.shape[-1]
    offsets = (grids.argmax(-1) - np.arange(n)) % n  # [L, H, n]
    return (offsets[..., None] == np.arange(n)).mean(-2)


def offset_score(grids: np.ndarray, offset: int) -> np.ndarray:
    """[L, H]: fraction of rows whose argmax is (d + offset) mod n."""
    return offset_histogram(grids)[..., offset % grids.shape[-1]]


def modal_threshold(n: int) -> float:
    """The smallest modal frequency k / n (at least OFFSET_NAME_SCORE) that a head whose n argmaxes are independent and
    uniform reaches for any of the n offsets with probability under OFFSET_NAME_P (union bound: n x binomial tail)."""
    for k in range(1, n + 1):
        if k / n >= OFFSET_NAME_SCORE and n * binomial_tail(k, n, 1 / n) < OFFSET_NAME_P:
            return k / n
    return 1.0
