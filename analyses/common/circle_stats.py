"""Is a ring of item means a circle, or only neighbours that look alike? The nulls a circle must beat (numpy only).

A PCA of n item means draws a polygon whenever neighbouring items are more alike than distant ones: n mutually
orthogonal day features, each mixed with a little of the next day (a head that writes day + 1 at the day token does
exactly that), have a circulant Gram matrix, and the top two principal components of ANY circulant Gram matrix are
the period-n Fourier pair, i.e. a perfect n-gon in sequence order. So the circle-order score (analyses.geometry) is
1 under that null too, and random angles are far too weak a null for it. What a circle has that neighbour mixing
lacks is concentration: the plane holds nearly all the variance. Three checks (thresholds in
analyses.common.thresholds):

  1. Floor. n centred points span n - 1 dimensions; spread evenly, any plane holds 2 / (n - 1) of their variance
     (1/3 for the days, 2/11 for the months). The plane must hold at least PLANE_DOMINANCE times that.
  2. Circulant null. Item means x_i = g_i + a g_{i+1} (one-sided) or g_i + a (g_{i-1} + g_{i+1}) (symmetric), with
     g_i independent Gaussian features in NULL_DIMS dimensions and a in [0, 1] chosen so that the null's expected
     neighbour cosine (cos of centred means i and i + 1, which for a circulant Gram is sum_f lambda_f cos(2 pi f/n)
     / sum_f lambda_f) matches the observed one (the largest a the kernel allows when the observed one is larger).
     p = P(null plane share >= observed) by Monte Carlo (fixed seed); the larger of the two kernels' p is kept
     (the most generous null).
  3. Many looks. The best of m scanned points (layers x the one position read, the item token) is tested m times:
     every p-value of a scan is Bonferroni-corrected, min(1, m p).
"""

from __future__ import annotations

import numpy as np

NULL_DIMS = 64  # independent feature dimensions of the circulant null's items
NULL_DRAWS = 2000
NULL_SEED = 0
KERNELS = ("one-sided", "symmetric")
_MIXING_GRID = np.linspace(0.0, 1.0, 201)


def plane_floor(n: int) -> float:
    """Share of variance any plane holds when n centred points are spread evenly over their n - 1 dimensions."""
    return min(1.0, 2.0 / (n - 1))


def plane_share(centred: np.ndarray) -> float:
    """[n, d] centred points -> share of their variance in the top two principal components."""
    eig = np.sort(np.linalg.eigvalsh(centred @ centred.T))[::-1]
    total = float(eig.clip(min=0).sum())
    return float(eig[:2].clip(min=0).sum() / total) if total > 0 else 0.0


def neighbour_cosine(centred: np.ndarray) -> float:
    """Mean cosine of consecutive centred item means (i, i + 1 mod n)."""
    nxt = np.roll(centred, -1, axis=0)
    norms = np.linalg.norm(centred, axis=1) * np.linalg.norm(nxt, axis=1)
    return float(np.mean((centred * nxt).sum(axis=1) / np.where(norms > 0, norms, 1.0)))


def _mixing(kernel: str, a: float, n: int) -> np.ndarray:
    """[n, n] circulant mixing matrix of the null: row i = g_i + a g_{i+1} (+ a g_{i-1} when symmetric)."""
    shift = np.roll(np.eye(n), 1, axis=1)
    return np.eye(n) + a * (shift if kernel == "one-sided" else shift + shift.T)


def expected_neighbour_cosine(kernel: str, a: float, n: int) -> float:
    """The null's neighbour cosine in expectation: the eigenvalues of its circulant Gram, weighted by cos(2 pi f/n)."""
    theta = 2 * np.pi * np.arange(1, n) / n  # f = 0 is removed by centring
    spectrum = (1 + a * a + 2 * a * np.cos(theta)) if kernel == "one-sided" else (1 + 2 * a * np.cos(theta)) ** 2
    return float((spectrum * np.cos(theta)).sum() / spectrum.sum())


def matched_mixing(kernel: str, cosine: float, n: int) -> float:
    """The a in [0, 1] whose expected neighbour cosine is nearest the observed one."""
    expected = np.array([expected_neighbour_cosine(kernel, a, n) for a in _MIXING_GRID])
    return float(_MIXING_GRID[np.abs(expected - cosine).argmin()])


def circulant_null_shares(kernel: str, a: float, n: int, draws: int = NULL_DRAWS, seed: int = NULL_SEED) -> np.ndarray:
    """[draws] plane shares of item means drawn from the circulant null."""
    rng = np.random.default_rng(seed)
    g = rng.normal(size=(draws, n, NULL_DIMS))
    x = _mixing(kernel, a, n) @ g
    x = x - x.mean(axis=1, keepdims=True)
    eig = np.sort(np.linalg.eigvalsh(x @ x.transpose(0, 2, 1)), axis=1)[:, ::-1].clip(min=0)
    return eig[:, :2].sum(axis=1) / eig.sum(axis=1)


def circulant_p_value(centred: np.ndarray, draws: int = NULL_DRAWS, seed: int = NULL_SEED) -> tuple[float, float]:
    """(p, the null's median share) for the observed plane share under the most generous circulant null."""
    n = centred.shape[0]
    share, cosine = plane_share(centred), neighbour_cosine(centred)
    best_p, median = 0.0, 0.0
    for kernel in KERNELS:
        shares = circulant_null_shares(kernel, matched_mixing(kernel, cosine, n), n, draws, seed)
        p = float(((shares >= share - 1e-12).sum() + 1) / (draws + 1))
        if p >= best_p:
            best_p, median = p, float(np.median(shares))
    return best_p, median


def corrected(p: float, looks: int) -> float:
    """Bonferroni: the p-value of the best of `looks` tests."""
    return float(min(1.0, p * max(1, looks)))
