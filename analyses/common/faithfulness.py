"""Faithfulness of a circuit and the area under its curve over circuit sizes (numpy only).

    faithfulness = (mean LD_circuit − mean LD_baseline) / (mean LD_full − mean LD_baseline)

where the baseline is every node ablated (`analyses.circuit`) or the corrupted run (`analyses.edge_circuits`); the
area is the trapezoid over the circuit sizes scaled to [0, 1] (MIB's CPR when the sizes are its edge fractions).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from analyses.common.stats import finite_or_none


def faithfulness(ld: np.ndarray, full: np.ndarray, ablated: np.ndarray) -> np.ndarray:
    """[G, B] -> [G]: (mean LD − mean LD_all_ablated) / (mean LD_full − mean LD_all_ablated)."""
    den = float(full.mean() - ablated.mean())
    return (ld.mean(-1) - ablated.mean()) / den if den != 0 else np.full(ld.shape[0], np.nan)


def area(grid: Sequence[float], curve: np.ndarray) -> float:
    """Trapezoid area under `curve` [G] over `grid` scaled by its last size (a curve at 1: 1 − grid[0] / grid[-1])."""
    x = np.asarray(grid, dtype=float) / grid[-1]
    return float(np.sum((x[1:] - x[:-1]) * (curve[1:] + curve[:-1]) / 2))


def faithfulness_by_template(ld: np.ndarray, full: np.ndarray, ablated: np.ndarray,
                             template_index: list[int]) -> list[float | None]:
    """[B] LD of one circuit -> its faithfulness on each template's prompts alone, templates in order."""
    template = np.asarray(template_index)
    # None where a template's gap is exactly 0 (no faithfulness): the results store refuses NaN
    return [finite_or_none(faithfulness(ld[None, template == t], full[template == t], ablated[template == t])[0])
            for t in sorted(set(template_index))]
