"""Statistics of patching, numpy only: normalisation, bootstrap intervals, correlation, summary shaping.

    effect      = (LD_patched - LD_corrupted) / (LD_clean - LD_corrupted)              0 = corrupted, 1 = clean

Normalisation. Every sweep keeps the raw patched LD per prompt, [layers, units, batch]. Two normalisations:
  * per prompt:  (LD_patched[i] - LD_corrupted[i]) / (LD_clean[i] - LD_corrupted[i])   (arrays `*_per_prompt`)
  * of the mean: (mean_i LD_patched - mean_i LD_corrupted) / (mean_i LD_clean - mean_i LD_corrupted)
The headline numbers (heatmaps, rankings, summary) use the normalisation of the mean: a prompt whose clean
and corrupted LD nearly agree has a tiny per-prompt denominator and would dominate a mean of per-prompt
ratios. The 95% interval resamples prompts (1000 bootstrap resamples, seed 0) and recomputes that same
ratio of means on each resample.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from analyses.types import PromptSet

NORMALISATION = ("effect = (LD_patched − LD_corrupted) / (LD_clean − LD_corrupted), with LD = logit(clean answer) "
                 "− logit(corrupted answer) at the final position and each LD averaged over the prompts first; "
                 "0 = the corrupted run, 1 = the clean run")
N_BOOTSTRAP = 1000


# ---- normalisation and statistics (numpy) -----------------------------------------------------------------------


def normalise_per_prompt(ld: np.ndarray, clean: np.ndarray, corrupted: np.ndarray) -> np.ndarray:
    """[..., B] -> [..., B]: (LD - LD_corrupted) / (LD_clean - LD_corrupted) per prompt (NaN where they agree)."""
    den = clean - corrupted
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(den != 0, (ld - corrupted) / np.where(den != 0, den, 1.0), np.nan)


def normalise_mean(ld: np.ndarray, clean: np.ndarray, corrupted: np.ndarray) -> np.ndarray:
    """[..., B] -> [...]: the normalisation of the means over prompts (the headline statistic)."""
    den = float(np.mean(clean) - np.mean(corrupted))
    change = ld.mean(-1) - np.mean(corrupted)
    return change / den if den != 0 else np.full(change.shape, np.nan)


def bootstrap_ci(ld: np.ndarray, clean: np.ndarray, corrupted: np.ndarray, normalised: bool = True,
                 n_resamples: int = N_BOOTSTRAP, level: float = 0.95, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """[N, B] -> (low [N], high [N]): percentile interval over prompts resampled with replacement.

    The statistic is normalise_mean (or, with normalised=False, the mean change LD - LD_corrupted).
    Resamples whose clean and corrupted means coincide (ratio undefined) are left out.
    """
    rng = np.random.default_rng(seed)
    B = ld.shape[-1]
    idx = rng.integers(0, B, size=(n_resamples, B))  # [R, B]
    change = ld[:, idx].mean(-1) - corrupted[idx].mean(-1)  # [N, R]
    den = clean[idx].mean(-1) - corrupted[idx].mean(-1) if normalised else np.ones(n_resamples)  # [R]
    ok = den != 0
    if not ok.any():
        return np.full(ld.shape[0], np.nan), np.full(ld.shape[0], np.nan)
    stats = change[:, ok] / den[ok]
    tail = 100 * (1 - level) / 2
    return np.percentile(stats, tail, axis=1), np.percentile(stats, 100 - tail, axis=1)


def pearson(a: np.ndarray, b: np.ndarray) -> float:
    """Pearson r of two arrays (flattened); NaN when either is constant."""
    a, b = np.ravel(a).astype(float), np.ravel(b).astype(float)
    keep = np.isfinite(a) & np.isfinite(b)
    a, b = a[keep] - a[keep].mean(), b[keep] - b[keep].mean()
    den = float(np.sqrt((a * a).sum() * (b * b).sum()))
    return float((a * b).sum() / den) if den > 0 else float("nan")


# ---- the numbers of a sweep, and what an analysis stores and summarises ------------------------------------------


@dataclass
class SweepResults:
    """Numbers of exact and attribution patching for some sweeps, as numpy arrays (B prompts)."""

    exact: dict[str, np.ndarray]  # sweep -> patched LD [layers, units, B]
    attribution: dict[str, np.ndarray]  # sweep -> estimated LD_patched [layers, units, B] (LD_corrupted + estimate)
    clean_ld: np.ndarray  # [B]
    corrupted_ld: np.ndarray  # [B]
    first_prompt_patterns: np.ndarray | None = None  # [layers, heads, S, S] clean attention of prompt 0
    everything_ld: np.ndarray | None = None  # [B] LD with the whole residual stream before layer 0 patched


@dataclass
class SweepStats:
    """What the report shows for one sweep. U units (positions or heads), B prompts.

    With `normalised` False (clean and corrupted mean LD equal, the ratio undefined) every statistic is the raw
    change LD - LD_corrupted instead of the fraction of the clean-corrupted gap.
    """

    exact: np.ndarray  # [layers, U] headline statistic
    attribution: np.ndarray  # [layers, U] same statistic of the attribution estimate
    ci_low: np.ndarray  # [layers, U] 95% bootstrap interval of `exact`
    ci_high: np.ndarray  # [layers, U]
    exact_per_prompt: np.ndarray  # [layers, U, B] per-prompt normalisation (NaN where a prompt's runs agree)
    attribution_per_prompt: np.ndarray  # [layers, U, B]
    correlation: float  # Pearson r of attribution vs exact over all [layers, U] cells
    normalised: bool


def is_normalisable(results: SweepResults) -> bool:
    return float(np.mean(results.clean_ld) - np.mean(results.corrupted_ld)) != 0


def sweep_stats(results: SweepResults, sweep: str) -> SweepStats:
    k, c = results.clean_ld, results.corrupted_ld
    exact, attr = results.exact[sweep], results.attribution[sweep]  # [L, U, B]
    normalised = is_normalisable(results)

    def headline(ld: np.ndarray) -> np.ndarray:
        return normalise_mean(ld, k, c) if normalised else ld.mean(-1) - c.mean()

    def per_prompt(ld: np.ndarray) -> np.ndarray:
        return normalise_per_prompt(ld, k, c) if normalised else ld - c

    low, high = bootstrap_ci(exact.reshape(-1, exact.shape[-1]), k, c, normalised)
    return SweepStats(
        exact=headline(exact), attribution=headline(attr),
        ci_low=low.reshape(exact.shape[:2]), ci_high=high.reshape(exact.shape[:2]),
        exact_per_prompt=per_prompt(exact), attribution_per_prompt=per_prompt(attr),
        correlation=pearson(headline(attr), headline(exact)), normalised=normalised,
    )


def stats_arrays(sweep: str, stats: SweepStats, results: SweepResults) -> dict[str, np.ndarray]:
    """The arrays an analysis stores for one sweep (names prefixed by the sweep)."""
    return {
        f"{sweep}_exact": stats.exact, f"{sweep}_attribution": stats.attribution,
        f"{sweep}_ci_low": stats.ci_low, f"{sweep}_ci_high": stats.ci_high,
        f"{sweep}_exact_per_prompt": stats.exact_per_prompt,
        f"{sweep}_attribution_per_prompt": stats.attribution_per_prompt,
        f"{sweep}_exact_logit_diff": results.exact[sweep],
        f"{sweep}_attribution_logit_diff": results.attribution[sweep],
    }


def finite_or_none(x) -> float | None:
    """A JSON-safe float (the results store refuses NaN)."""
    x = float(x)
    return x if np.isfinite(x) else None


def ranked(stats: SweepStats, names: np.ndarray, k: int, key: str = "component") -> list[dict]:
    """The k cells with the largest |exact effect|, largest first, as summary entries."""
    flat = np.nan_to_num(np.abs(stats.exact.ravel()), nan=-1.0)
    order = np.argsort(-flat, kind="stable")[:k]
    return [{key: str(names.ravel()[i]), "value": finite_or_none(stats.exact.ravel()[i]),
             "ci_low": finite_or_none(stats.ci_low.ravel()[i]), "ci_high": finite_or_none(stats.ci_high.ravel()[i]),
             "attribution": finite_or_none(stats.attribution.ravel()[i])} for i in order]


def common_summary(results: SweepResults, prompts: PromptSet, n_layers: int) -> dict:
    normalised = is_normalisable(results)
    return {
        "family": prompts.family, "n_prompts": int(len(results.clean_ld)), "n_layers": int(n_layers),
        "clean_logit_diff_mean": float(np.mean(results.clean_ld)),
        "corrupted_logit_diff_mean": float(np.mean(results.corrupted_ld)),
        "normalised": normalised,
        "value_unit": "fraction of the clean − corrupted logit difference" if normalised
        else "change in logit difference (clean and corrupted runs agree, so no normalisation)",
        "bootstrap_resamples": N_BOOTSTRAP,
    }
