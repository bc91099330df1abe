"""Scanning the residual stream for the item circle: each point's plane, circle order and nulls; rotation on one plane.

Numpy only; the method and its thresholds are `analyses.geometry`'s docstring (steps 2, 3 and 5), the circle maths
`analyses.common.circle_geometry` and the nulls `analyses.common.circle_stats`. Shapes: states [points, batch,
d_model] at the item token and at the final position; `position_items` [batch], the item at each prompt's item token.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from analyses.common import circle_stats
from analyses.common.circle_geometry import angles, circle_order, nearest_items, pca_2d, rotation_offsets

MIN_FINAL_SPREAD = 1e-3  # final states spread less than this (relative to the items) carry no angle


@dataclass
class PlaneScan:
    """Per point: its PCA plane of the item means and what lies on it."""

    item_xy: np.ndarray  # [points, n, 2] the item means, centred
    prompt_xy: np.ndarray  # [points, batch, 2] each prompt's state at the item token, centred on the item means
    final_xy: np.ndarray  # [points, batch, 2] the final states, centred on their own mean
    explained: np.ndarray  # [points, 2] variance share of the two components
    scores: np.ndarray  # [points] circle-order score
    circulant_p: np.ndarray  # [points] p of the plane share under the circulant null (uncorrected)
    null_share: np.ndarray  # [points] the null's plane share
    planes: list[np.ndarray]  # per point the [2, d_model] basis


def scan_planes(at_item: np.ndarray, at_final: np.ndarray, position_items: np.ndarray, n: int) -> PlaneScan:
    """Every point's plane (PCA of its n item means) and its circle order and circulant null."""
    n_points = at_item.shape[0]
    item_xy = np.zeros((n_points, n, 2))
    prompt_xy = np.zeros((n_points, len(position_items), 2))
    final_xy = np.zeros_like(prompt_xy)
    explained = np.zeros((n_points, 2))
    scores, circulant_p, null_share = np.zeros(n_points), np.zeros(n_points), np.zeros(n_points)
    planes = []
    for point in range(n_points):
        means = item_means(at_item[point], position_items, n)
        centre, basis, explained[point] = pca_2d(means)
        planes.append(basis)
        item_xy[point] = (means - centre) @ basis.T
        prompt_xy[point] = (at_item[point] - centre) @ basis.T
        final_xy[point] = (at_final[point] - at_final[point].mean(axis=0)) @ basis.T
        scores[point] = circle_order(angles(item_xy[point]))
        circulant_p[point], null_share[point] = circle_stats.circulant_p_value(means - centre)
    return PlaneScan(item_xy, prompt_xy, final_xy, explained, scores, circulant_p, null_share, planes)


@dataclass
class Rotation:
    """The final states of every point read on one reference plane, against the reference's item angles."""

    reference_angles: np.ndarray  # [n] the item means' angles on the reference plane
    on_reference: np.ndarray  # [points, batch, 2] the final states (centred on their mean) on that plane
    spread: np.ndarray  # [points] spread of their per-item means over the reference items' spread
    offsets: np.ndarray  # [points, batch] angle offset from the item's reference angle, in steps
    match: np.ndarray  # [points] fraction of prompts whose nearest reference item is the answer


def rotation_on_reference(reference_states: np.ndarray, at_final: np.ndarray, plane: np.ndarray,
                          position_items: np.ndarray, answers: np.ndarray, n: int) -> Rotation:
    """Every point's final states on the reference point's plane (`reference_states`: its item-token states)."""
    n_points = at_final.shape[0]
    ref_means = item_means(reference_states, position_items, n)
    ref_centre = ref_means.mean(axis=0)
    ref_angles = angles((ref_means - ref_centre) @ plane.T)
    ref_spread = spread((ref_means - ref_centre) @ plane.T)
    on_ref = np.stack([(at_final[p] - at_final[p].mean(axis=0)) @ plane.T for p in range(n_points)])
    spreads = np.array([spread(item_means(on_ref[p], position_items, n)) / max(ref_spread, 1e-30)
                        for p in range(n_points)])
    offset_by_point = np.stack([rotation_offsets(ref_angles, angles(on_ref[p]), position_items)
                                for p in range(n_points)])  # [points, batch]
    match_by_point = np.array([(nearest_items(ref_angles, angles(on_ref[p])) == answers).mean()
                               for p in range(n_points)])
    return Rotation(ref_angles, on_ref, spreads, offset_by_point, match_by_point)


def item_means(xy: np.ndarray, position_items: np.ndarray, n: int) -> np.ndarray:
    """[n, ...] mean over the prompts of each item."""
    return np.stack([xy[position_items == i].mean(axis=0) for i in range(n)])


def spread(xy: np.ndarray) -> float:
    """Root mean square distance of the points from their mean."""
    return float(np.sqrt(((xy - xy.mean(axis=0)) ** 2).sum(axis=1).mean()))
