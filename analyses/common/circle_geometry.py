"""The circle maths of analyses.geometry (numpy only): a plane through the item means, angles on it, how well the
items keep their sequence order round the circle and by chance, and offsets of the final states in steps.

n items, angles in radians; a step is 2 pi / n, forward = positive.
"""

from __future__ import annotations

from functools import cache

import numpy as np

CHANCE_DRAWS = 20000  # Monte Carlo draws for the circle order's chance probability
CHANCE_SEED = 0


def pca_2d(means: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """[n, d] item means -> (centre [d], basis [2, d] (rows = top two components), explained [2] fractions)."""
    centre = means.mean(axis=0)
    _, s, vt = np.linalg.svd(means - centre, full_matrices=False)
    total = float((s ** 2).sum())
    explained = (s[:2] ** 2) / total if total > 0 else np.zeros(2)
    basis = vt[:2]
    if basis.shape[0] < 2:  # fewer than 2 informative directions (d = 1): pad so the plane is defined
        basis = np.vstack([basis, np.zeros((2 - basis.shape[0], means.shape[1]))])
        explained = np.pad(explained, (0, 2 - explained.shape[0]))
    return centre, basis, explained


def angles(xy: np.ndarray) -> np.ndarray:
    """[..., 2] plane coordinates -> [...] angles in radians."""
    return np.arctan2(xy[..., 1], xy[..., 0])


def circle_order(item_angles: np.ndarray) -> float:
    """Fraction of consecutive pairs (i, i+1 mod n) that are neighbours in the circular order of the angles."""
    n = len(item_angles)
    rank = np.empty(n, dtype=int)
    rank[np.argsort(item_angles, kind="stable")] = np.arange(n)
    gap = (rank[(np.arange(n) + 1) % n] - rank) % n
    return float(((gap == 1) | (gap == n - 1)).mean())


def circle_chance(n: int) -> float:
    """Expected circle order for random angles: a pair is adjacent with probability 2 / (n - 1)."""
    return min(1.0, 2.0 / (n - 1))


@cache  # a pure function of its arguments, called once per scanned point with few distinct scores
def circle_p_value(score: float, n: int, draws: int = CHANCE_DRAWS, seed: int = CHANCE_SEED) -> float:
    """P(circle order >= score) for n items at random angles (Monte Carlo, fixed seed, so reruns agree); at least
    1 / (draws + 1), the resolution of the estimate."""
    rng = np.random.default_rng(seed)
    order = np.argsort(rng.random((draws, n)), axis=1)
    rank = np.argsort(order, axis=1)
    gap = (rank[:, (np.arange(n) + 1) % n] - rank) % n
    scores = ((gap == 1) | (gap == n - 1)).mean(axis=1)
    return float(((scores >= score - 1e-9).sum() + 1) / (draws + 1))  # (k + 1) / (N + 1): never 0


def wrap(angle: np.ndarray) -> np.ndarray:
    """Angles to (-pi, pi]."""
    return -(((-np.asarray(angle)) + np.pi) % (2 * np.pi) - np.pi)


def orientation(item_angles: np.ndarray) -> float:
    """+1 if the sequence runs counter-clockwise on the plane (mean step between consecutive items > 0), else -1."""
    steps = wrap(np.roll(item_angles, -1) - item_angles)
    return 1.0 if np.sin(steps).sum() >= 0 else -1.0


def rotation_offsets(item_angles: np.ndarray, final_angles: np.ndarray, position_items: np.ndarray) -> np.ndarray:
    """[batch] offset of each final state from its item's angle, in steps of 2 pi / n, forward = positive."""
    n = len(item_angles)
    delta = wrap(final_angles - item_angles[position_items])
    return orientation(item_angles) * delta / (2 * np.pi / n)


def circular_mean_steps(offsets: np.ndarray, n: int) -> float:
    """Circular mean of offsets given in steps (so that +n/2 and -n/2 do not cancel to 0)."""
    radians = np.asarray(offsets) * 2 * np.pi / n
    return float(np.arctan2(np.sin(radians).mean(), np.cos(radians).mean()) / (2 * np.pi / n))


def nearest_items(item_angles: np.ndarray, final_angles: np.ndarray) -> np.ndarray:
    """[batch] index of the item whose angle is nearest each final state's angle."""
    return np.abs(wrap(final_angles[:, None] - item_angles[None, :])).argmin(axis=1)


def signed_step(step: int, n: int) -> int:
    """A step modulo n, as the signed value in (-n/2, n/2]."""
    step %= n
    return step - n if step > n // 2 else step
