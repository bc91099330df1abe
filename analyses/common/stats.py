"""A patching sweep's numbers as an analysis stores and summarises them (numpy only): normalised effects,
intervals, rankings, attribution's agreement with exact patching and the keys every patching summary shares.

    effect      = (LD_patched - LD_corrupted) / (LD_clean - LD_corrupted)              0 = corrupted, 1 = clean

Normalisation. Every sweep keeps the raw patched LD per prompt, [layers, units, batch]. Two normalisations:
  * per prompt:  (LD_patched[i] - LD_corrupted[i]) / (LD_clean[i] - LD_corrupted[i])   (arrays `*_per_prompt`)
  * of the mean: (mean_i LD_patched - mean_i LD_corrupted) / (mean_i LD_clean - mean_i LD_corrupted)
The headline numbers (heatmaps, rankings, summary) use the normalisation of the mean: a prompt whose clean
and corrupted LD nearly agree has a tiny per-prompt denominator and would dominate a mean of per-prompt
ratios. The 95% interval is a cluster bootstrap over templates when the family has several
(analyses/common/bootstrap.py). Beside every ranked headline, `value_by_template` (the statistic on each template
alone) and `value_template_mean` (their plain mean: the headline is a ratio of means, which weights templates by
their gaps).

When the gap is not informative (`analyses.common.thresholds.informative_gap`: too small, too noisy or not mostly
positive), nothing is normalised: every statistic is the raw change LD_patched - LD_corrupted, in logits.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, NotRequired, TypedDict

import numpy as np

from analyses.common import thresholds
from analyses.common.bootstrap import N_BOOTSTRAP, bootstrap_ci
from analyses.common.contract import (
    CorruptionHeader,
    Count,
    Fraction,
    GapState,
    LogitDiffMeans,
    NormalisedValues,
    Ranked,
)
from analyses.common.types import PromptSet

NORMALISATION = ("effect = (LD_patched − LD_corrupted) / (LD_clean − LD_corrupted), with LD = logit(clean answer) "
                 "− logit(corrupted answer) at the final position and each LD averaged over the prompts first; "
                 "0 = the corrupted run, 1 = the clean run")
INTERVAL = "95% bootstrap spread over this family's prompts (descriptive; computed for every cell before ranking)"
CLUSTER_INTERVAL = ("95% cluster-bootstrap spread over templates (whole templates resampled with replacement, every "
                    "item of each; descriptive; computed for every cell before ranking)")
TOP_OVERLAP_K = 5  # attribution vs exact: how many of the top cells by |exact| are also top by |attribution|


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
    normalised: bool


def gap_of(results: SweepResults) -> thresholds.Gap:
    return thresholds.informative_gap(results.clean_ld, results.corrupted_ld)


def is_normalisable(results: SweepResults) -> bool:
    """One rule for every patching section and logit_diff: normalise only an informative gap."""
    return gap_of(results).informative


def sweep_stats(results: SweepResults, sweep: str, template_index: list[int] | None = None) -> SweepStats:
    k, c = results.clean_ld, results.corrupted_ld
    exact, attr = results.exact[sweep], results.attribution[sweep]  # [L, U, B]
    normalised = is_normalisable(results)

    def headline(ld: np.ndarray) -> np.ndarray:
        return normalise_mean(ld, k, c) if normalised else ld.mean(-1) - c.mean()

    def per_prompt(ld: np.ndarray) -> np.ndarray:
        return normalise_per_prompt(ld, k, c) if normalised else ld - c

    low, high = bootstrap_ci(exact.reshape(-1, exact.shape[-1]), k, c, normalised, clusters=template_index)
    return SweepStats(
        exact=headline(exact), attribution=headline(attr),
        ci_low=low.reshape(exact.shape[:2]), ci_high=high.reshape(exact.shape[:2]),
        exact_per_prompt=per_prompt(exact), attribution_per_prompt=per_prompt(attr),
        normalised=normalised,
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


def ranked(stats: SweepStats, names: np.ndarray, k: int, results: SweepResults | None = None,
           sweep: str | None = None, template_index: list[int] | None = None) -> list[dict]:
    """The k cells with the largest |exact effect|, largest first, as summary entries. Only cells with an exact
    value are ranked: under `--exact top:K` an unverified cell (NaN) is never listed (the page shows its estimate).

    With `results`, `sweep` and `template_index`, each entry also carries `value_by_template`: the same statistic
    recomputed on each template's prompts alone (how much the effect depends on the wording).
    """
    flat = np.nan_to_num(np.abs(stats.exact.ravel()), nan=-1.0)
    order = [i for i in np.argsort(-flat, kind="stable") if np.isfinite(stats.exact.ravel()[i])][:k]
    entries = [{"name": str(names.ravel()[i]), "value": finite_or_none(stats.exact.ravel()[i]),
                "ci_low": finite_or_none(stats.ci_low.ravel()[i]), "ci_high": finite_or_none(stats.ci_high.ravel()[i]),
                "attribution": finite_or_none(stats.attribution.ravel()[i])} for i in order]
    if results is not None and template_index is not None and len(set(template_index)) > 1:
        by_template = per_template(results, sweep, template_index, stats.normalised)  # [T, L*U]
        for entry, i in zip(entries, order):
            entry["value_by_template"] = [finite_or_none(v) for v in by_template[:, i]]
            finite = by_template[:, i][np.isfinite(by_template[:, i])]
            entry["value_template_mean"] = finite_or_none(finite.mean()) if finite.size else None
    return entries


def per_template(results: SweepResults, sweep: str, template_index: list[int], normalised: bool) -> np.ndarray:
    """[templates, cells] the headline statistic on each template's prompts alone."""
    t = np.asarray(template_index)
    ld = results.exact[sweep].reshape(-1, len(t))
    rows = []
    for template in sorted(set(template_index)):
        keep = t == template
        k, c = results.clean_ld[keep], results.corrupted_ld[keep]
        rows.append(normalise_mean(ld[:, keep], k, c) if normalised else ld[:, keep].mean(-1) - c.mean())
    return np.stack(rows)


def agreement(stats: SweepStats, k: int = TOP_OVERLAP_K) -> dict[str, float]:
    """How well attribution patching estimates the exact effects of one sweep, over all cells.

    slope: least-squares slope of attribution on exact through the origin (1 = right size, 0.3 = a third);
    mae: mean |attribution - exact|; top_overlap: fraction of the top-k cells by |exact| also in the top-k by
    |attribution|; pearson: r. Pearson alone reads 1.00 for an estimate that is a third of the truth.
    """
    x, y = stats.exact.ravel().astype(float), stats.attribution.ravel().astype(float)
    keep = np.isfinite(x) & np.isfinite(y)
    x, y = x[keep], y[keep]
    den = float((x * x).sum())
    top_x = set(np.argsort(-np.abs(x), kind="stable")[:k].tolist())
    top_y = set(np.argsort(-np.abs(y), kind="stable")[:k].tolist())
    return {"slope": float((x * y).sum() / den) if den > 0 else float("nan"),
            "mae": float(np.abs(y - x).mean()) if x.size else float("nan"),
            "top_overlap": len(top_x & top_y) / max(1, min(k, x.size)),
            "pearson": pearson(x, y)}


def agreement_summary(sweep: str, stats: SweepStats) -> dict:
    """Summary keys `attribution_{slope,mae,top_overlap,pearson}_{sweep}`; none at noise level (not normalised)."""
    if not stats.normalised:
        return {}
    return {f"attribution_{name}_{sweep}": value for name, value in agreement(stats).items() if np.isfinite(value)}


class PatchedEntry(Ranked):
    """A ranked cell of an exact patching sweep (`ranked`): its exact effect (value) and attribution estimate."""

    attribution: NotRequired[Annotated[float | None, "attribution patching's estimate of the same effect"]]


class PatchingCommon(CorruptionHeader, LogitDiffMeans, GapState, NormalisedValues):
    """The keys every activation-patching summary shares (`common_summary`)."""

    n_templates: Annotated[Count, "templates of the family"]
    gap_mean: Annotated[float, "mean clean − corrupted gap, logits (what effects are fractions of)"]
    gap_standard_error: Annotated[float, "its standard error over prompts"]
    gap_positive_frac: Annotated[Fraction, "prompts whose gap is positive"]
    interval: Annotated[str, "how the 95% intervals are computed, in words"]
    interval_kind: Annotated[str, "cluster_bootstrap_templates or bootstrap_prompts"]
    bootstrap_resamples: Annotated[Count, "bootstrap resamples per interval"]


class VerifiedCells(TypedDict):
    """How much of one sweep, or of all an analysis's sweeps pooled, was patched exactly under `--exact`
    (analyses/methods/verified.py), and the false-negative estimate."""

    exact_mode: Annotated[str, "how the exact sweeps were computed: all, or top:K,sample:S (AtP*)"]
    verified_cells: Annotated[int, "cells patched exactly"]
    cells: Annotated[int, "cells swept"]
    fn_sample: Annotated[int, "cells sampled outside the top K to estimate the false-negative rate (0: none)"]
    fn_hits: NotRequired[Annotated[int, "sampled cells whose exact |effect| reaches the smallest among the top K"]]
    false_negative_rate: NotRequired[Annotated[float, "fn_hits / fn_sample"]]
    false_negative_rate_ci_low: NotRequired[Annotated[float, "95% Wilson interval, low end"]]
    false_negative_rate_ci_high: NotRequired[Annotated[float, "95% Wilson interval, high end"]]


class Verification(VerifiedCells):
    """One sweep's share (analyses/methods/verified.py `Verification.summary`)."""

    sweep: Annotated[str, "the sweep (z, v, pattern, z_noising, resid_pre, ...)"]


class ExactOptions(VerifiedCells):
    """Keys written by `--exact` (analyses/methods/verified.py `summarise`) in every mode: the analysis's sweeps
    pooled, and each sweep alone in `verification`."""

    verification: Annotated[list[Verification], "the same keys for each sweep alone"]


def agreement_keys(sweeps: tuple[str, ...]) -> dict:
    """The optional keys of `agreement_summary` for these sweeps, for a functional TypedDict."""
    what = {"slope": "least-squares slope of attribution on exact through the origin (1 = right size)",
            "mae": "mean |attribution − exact|", "top_overlap": f"share of the top {TOP_OVERLAP_K} cells by |exact| "
            "also top by |attribution|", "pearson": "Pearson r of attribution and exact"}
    return {f"attribution_{name}_{sweep}": NotRequired[Annotated[float, f"{sweep} sweep: {text} (only where the "
                                                                        "gap is informative)"]]
            for sweep in sweeps for name, text in what.items()}


def common_summary(results: SweepResults, prompts: PromptSet, n_layers: int, above_chance: bool) -> dict:
    gap = gap_of(results)
    return {
        "family": prompts.family, "corruption": prompts.corruption, "n_prompts": int(len(results.clean_ld)),
        "n_templates": len(prompts.templates), "n_layers": int(n_layers),
        "clean_logit_diff_mean": float(np.mean(results.clean_ld)),
        "corrupted_logit_diff_mean": float(np.mean(results.corrupted_ld)),
        "gap_mean": gap.mean, "gap_standard_error": gap.standard_error, "gap_positive_frac": gap.positive_fraction,
        "normalised": gap.informative, "gap_reason": gap.reason, "gap_state": gap.state,
        "items_above_chance": bool(above_chance),
        "value_unit": "fraction of the clean − corrupted logit difference" if gap.informative
        else "change in logit difference, logits (the clean and corrupted runs barely differ, so no normalisation)",
        "interval": CLUSTER_INTERVAL if len(set(prompts.template_index)) > 1 else INTERVAL,
        "interval_kind": "cluster_bootstrap_templates" if len(set(prompts.template_index)) > 1 else "bootstrap_prompts",
        "bootstrap_resamples": N_BOOTSTRAP,
    }
