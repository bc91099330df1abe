"""Bootstrap intervals of the patching statistic: prompts, or whole templates, resampled with replacement.

The 95% interval is a CLUSTER bootstrap over templates when the family has several: prompts are templates x items,
and prompts of one template are not independent draws (resampling the prompts as if they were covered the
across-paraphrase value about 40% of the time in simulation when templates differ by 0.1-0.2), so whole templates
are resampled with replacement, every item of each (1000 resamples, seed 0), and the same ratio of means is
recomputed on each. With one template it resamples prompts, and says so. It is computed for every cell before any
ranking: descriptive, not a confidence interval for the cell picked as the maximum.
"""

from __future__ import annotations

import numpy as np

N_BOOTSTRAP = 1000


def bootstrap_ci(ld: np.ndarray, clean: np.ndarray, corrupted: np.ndarray, normalised: bool = True,
                 n_resamples: int = N_BOOTSTRAP, level: float = 0.95, seed: int = 0,
                 clusters: list[int] | np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """[N, B] -> (low [N], high [N]): percentile interval over prompts resampled with replacement, or, with
    `clusters` [B] (the template of each prompt) naming two or more, over whole clusters resampled with replacement.

    The statistic is normalise_mean (or, with normalised=False, the mean change LD - LD_corrupted).
    Resamples whose clean and corrupted means coincide (ratio undefined) are left out. Rows holding NaN (cells
    `--exact top:K` left unverified) get NaN, and the others the numbers they get alone (same resamples).
    """
    finite = np.isfinite(ld).all(-1)
    if not finite.all():
        low, high = np.full(ld.shape[0], np.nan), np.full(ld.shape[0], np.nan)
        if finite.any():
            low[finite], high[finite] = bootstrap_ci(ld[finite], clean, corrupted, normalised, n_resamples, level,
                                                     seed, clusters)
        return low, high
    rng = np.random.default_rng(seed)
    B = ld.shape[-1]
    idx = _cluster_resamples(rng, np.asarray(clusters), n_resamples) if clusters is not None and len(
        set(np.asarray(clusters).tolist())) > 1 else rng.integers(0, B, size=(n_resamples, B))  # [R, B']
    change = ld[:, idx].mean(-1) - corrupted[idx].mean(-1)  # [N, R]
    den = clean[idx].mean(-1) - corrupted[idx].mean(-1) if normalised else np.ones(n_resamples)  # [R]
    ok = den != 0
    if not ok.any():
        return np.full(ld.shape[0], np.nan), np.full(ld.shape[0], np.nan)
    stats = change[:, ok] / den[ok]
    tail = 100 * (1 - level) / 2
    return np.percentile(stats, tail, axis=1), np.percentile(stats, 100 - tail, axis=1)


def _cluster_resamples(rng, clusters: np.ndarray, n_resamples: int) -> np.ndarray:
    """[R, B'] prompt indices: each row the prompts of C clusters drawn with replacement (C = number of clusters).
    Clusters of unequal size are padded by resampling within the cluster, so every row has the same length."""
    ids = sorted(set(clusters.tolist()))
    size = max(int((clusters == c).sum()) for c in ids)
    members = np.stack([np.resize(np.flatnonzero(clusters == c), size) for c in ids])  # [C, m]
    picks = rng.integers(0, len(ids), size=(n_resamples, len(ids)))  # [R, C]
    return members[picks].reshape(n_resamples, -1)
