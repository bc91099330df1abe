"""Exact patching where it matters, attribution elsewhere, stated: AtP* (Kramár et al. 2024, "AtP*: An efficient
and scalable method for localizing LLM behaviour to components").

Attribution patching (`analyses.engine.attribution_sweeps`) estimates every cell of a sweep from one forward
and one backward pass. Here it ranks every cell, and exact patching verifies

  * the top K cells by |attribution| (|mean over prompts of the estimated change of LD|), and
  * a seeded random sample of S of the other cells,

so that the cells that matter carry exact values and the sample measures what the ranking missed:

  false-negative rate = share of the sampled cells whose exact |effect| reaches the smallest exact |effect| among
                        the top K (|effect| = |mean_i LD_patched - mean_i LD_corrupted|, logits; the same order as
                        the normalised headline), with its sample size and a 95% Wilson interval.

A sweep with at most K + S cells is patched exactly in full (`exact_sweeps`, the numbers of `--exact all`). The
verified sweep holds the exact LD per prompt [L, U, B] on verified cells and NaN elsewhere; `analyses.common.stats` and
`analyses.common.bootstrap` are NaN-aware, and rankings list verified cells only.

Modes (`--exact`): "all" (every cell exact), "top:K" (S = K) or "top:K,sample:S", "auto" (resolved per device by
`resolve`: every cell exact on CUDA, `CPU_DEFAULT` on a CPU, chosen from benchmarks/patching.py, docs/performance.md).
Built only on the public functions of `analyses.engine`.
"""

from __future__ import annotations

import math
import re
import zlib
from dataclasses import dataclass

import numpy as np
import torch

from analyses import engine as engine

ALL, AUTO = "all", "auto"
SEED = 0
CPU_DEFAULT = "top:16,sample:16"  # measured: docs/performance.md "Exact where it matters"
_TOP = re.compile(r"top:(\d+)(?:,sample:(\d+))?")


@dataclass(frozen=True)
class ExactMode:
    kind: str  # "all", "auto" or "top"
    k: int = 0  # top:K cells verified by exact patching, per sweep
    sample: int = 0  # S further cells drawn at random (seeded) from the rest, per sweep
    seed: int = SEED

    def __str__(self) -> str:
        return self.kind if self.kind != "top" else f"top:{self.k},sample:{self.sample}"

    @property
    def partial(self) -> bool:
        return self.kind == "top"


def parse_exact(text: str) -> ExactMode:
    """'all', 'auto', 'top:K' or 'top:K,sample:S' (K >= 1, S >= 0; 'top:K' samples S = K); ValueError otherwise."""
    value = str(text).strip()
    if value in (ALL, AUTO):
        return ExactMode(value)
    match = _TOP.fullmatch(value)
    if match is None:
        raise ValueError(f"--exact {text!r}: expected 'all', 'auto', 'top:K' or 'top:K,sample:S' (K >= 1, S >= 0 "
                         "whole numbers)")
    k = int(match.group(1))
    sample = k if match.group(2) is None else int(match.group(2))
    if k < 1:
        raise ValueError(f"--exact {text!r}: K must be at least 1 (top:0 would verify nothing)")
    return ExactMode("top", k, sample)


def resolve(mode: ExactMode | str, device: str) -> ExactMode:
    """'auto' -> every cell exact on CUDA, `CPU_DEFAULT` elsewhere; any other mode as it is."""
    mode = parse_exact(mode) if isinstance(mode, str) else mode
    if mode.kind != AUTO:
        return mode
    return ExactMode(ALL) if str(device).startswith("cuda") else parse_exact(CPU_DEFAULT)


@dataclass(frozen=True)
class FalseNegatives:
    """Sampled cells whose exact |effect| reaches the smallest exact |effect| of the top K, out of the sample."""

    hits: int
    n: int
    threshold: float  # the smallest exact |effect| among the top K (logits)

    @property
    def rate(self) -> float:
        return self.hits / self.n if self.n else float("nan")

    def interval(self, z: float = 1.96) -> tuple[float, float]:
        """95% Wilson score interval of the rate (NaN without a sample)."""
        if not self.n:
            return float("nan"), float("nan")
        p, n = self.rate, self.n
        centre = (p + z * z / (2 * n)) / (1 + z * z / n)
        half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
        return max(0.0, centre - half), min(1.0, centre + half)


def false_negatives(top_effect: np.ndarray, sample_effect: np.ndarray) -> FalseNegatives:
    """[K] exact |effect| of the top K, [S] of the random sample -> how many of the sample reach the top K's least."""
    threshold = float(np.min(np.abs(top_effect))) if np.size(top_effect) else float("inf")
    hits = int((np.abs(sample_effect) >= threshold).sum())
    return FalseNegatives(hits, int(np.size(sample_effect)), threshold)


@dataclass(frozen=True)
class Verification:
    """Which cells of one sweep [L, U] exact patching verified, and the false-negative estimate."""

    mode: str  # the mode as given to the engine ("all" or "top:K,sample:S")
    top: np.ndarray  # [L, U] bool: among the top K by |attribution|
    sampled: np.ndarray  # [L, U] bool: in the random sample
    fn: FalseNegatives | None  # None when every cell was verified

    @property
    def verified(self) -> np.ndarray:
        return self.top | self.sampled

    @property
    def complete(self) -> bool:
        return bool(self.verified.all())

    def summary(self) -> dict:
        """exact_mode, verified_cells, cells, false_negative_rate (+ interval), fn_sample, fn_hits."""
        out = {"exact_mode": self.mode, "verified_cells": int(self.verified.sum()), "cells": int(self.top.size),
               "fn_sample": 0 if self.fn is None else self.fn.n}
        if self.fn is not None and self.fn.n:
            low, high = self.fn.interval()
            out.update(false_negative_rate=self.fn.rate, false_negative_rate_ci_low=low,
                       false_negative_rate_ci_high=high, fn_hits=self.fn.hits)
        return out


def everything(mode: str, shape: tuple[int, int]) -> Verification:
    return Verification(mode, np.ones(shape, dtype=bool), np.zeros(shape, dtype=bool), None)


def choose_cells(score: np.ndarray, k: int, sample: int, seed: int, salt: str = "") -> tuple[np.ndarray, np.ndarray]:
    """[cells] |attribution| -> (top K cell indices by score, largest first; S others drawn without replacement).

    The draw is seeded by (seed, salt), so a sweep's sample does not depend on which other sweeps ran."""
    top = np.argsort(-score, kind="stable")[:k]
    rest = np.setdiff1d(np.arange(score.size), top)
    rng = np.random.default_rng([seed, zlib.crc32(salt.encode())])
    sampled = np.sort(rng.choice(rest, size=min(sample, rest.size), replace=False)) if rest.size else rest
    return top, sampled


def cell_effect(ld: torch.Tensor, runs: engine.Runs) -> np.ndarray:
    """[..., B] patched LD (not an attribution estimate, which is already a change) -> [...] |mean change of LD|."""
    return (ld.mean(-1) - runs.corrupted_ld.mean()).abs().detach().double().cpu().numpy()


def verified_sweeps(model, runs: engine.Runs, sweeps, k: int, sample: int, seed: int = SEED,
                    attribution: dict[str, torch.Tensor] | None = None, chunk_rows: int | None = None
                    ) -> tuple[dict[str, torch.Tensor], dict[str, Verification]]:
    """Exact patched LD [L, U, B] on the verified cells of each sweep (NaN elsewhere), and what was verified.

    attribution: the sweeps' `attribution_sweeps` (computed here when not given). Sweeps with at most K + S cells are
    patched in full by one `exact_sweeps` call (the numbers of every-cell mode); the others' verified cells are
    patched together in one `patched_logit_diffs` call.
    """
    if k < 1 or sample < 0:
        raise ValueError(f"verified_sweeps needs k >= 1 and sample >= 0 (got k={k}, sample={sample})")
    mode = str(ExactMode("top", k, sample))
    shapes = {s: (runs.n_layers, runs.n_units(s)) for s in sweeps}
    full = tuple(s for s in sweeps if math.prod(shapes[s]) <= k + sample)
    out: dict[str, torch.Tensor] = dict(engine.exact_sweeps(model, runs, full, chunk_rows=chunk_rows)) if full else {}
    info = {s: everything(mode, shapes[s]) for s in full}
    partial = [s for s in sweeps if s not in full]
    if not partial:
        return out, info
    if attribution is None:
        attribution = engine.attribution_sweeps(model, runs, tuple(partial))
    chosen, patches = {}, []
    for s in partial:
        score = attribution[s].mean(-1).abs().double().cpu().numpy().ravel()  # the estimated |change of LD|
        top, sampled = choose_cells(score, k, sample, seed, s)
        cells = np.concatenate([top, sampled])
        every = engine.sweep_patches(runs, s)  # layer-major: cell index = layer * U + unit
        chosen[s] = (top, sampled, len(patches))
        patches += [every[int(i)] for i in cells]
    lds = engine.patched_logit_diffs(model, runs, patches, chunk_rows=chunk_rows)  # [n_patches, B]
    for s in partial:
        top, sampled, start = chosen[s]
        cells = np.concatenate([top, sampled])
        L, U = shapes[s]
        values = torch.full((L * U, runs.n_prompts), float("nan"), device=lds.device, dtype=lds.dtype)
        values[torch.as_tensor(cells, device=lds.device)] = lds[start:start + len(cells)]
        out[s] = values.view(L, U, runs.n_prompts)
        effect = cell_effect(values, runs)
        info[s] = Verification(mode, _mask(top, (L, U)), _mask(sampled, (L, U)),
                               false_negatives(effect[top], effect[sampled]))
    return {s: out[s] for s in sweeps}, info


def complete(model, runs: engine.Runs, sweep: str, values: torch.Tensor, chunk_rows: int | None = None
             ) -> torch.Tensor:
    """A verified sweep [L, U, B] with its unverified (NaN) cells patched exactly too: every cell exact."""
    missing = torch.isnan(values).any(-1).flatten().nonzero().flatten().tolist()
    if not missing:
        return values
    every = engine.sweep_patches(runs, sweep)
    lds = engine.patched_logit_diffs(model, runs, [every[i] for i in missing], chunk_rows=chunk_rows)
    out = values.clone().view(-1, runs.n_prompts)
    out[torch.as_tensor(missing, device=out.device)] = lds.to(out.dtype)
    return out.view(values.shape)


def _mask(cells: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    mask = np.zeros(int(np.prod(shape)), dtype=bool)
    mask[cells] = True
    return mask.reshape(shape)


def ranking(exact: np.ndarray, attribution: np.ndarray) -> np.ndarray:
    """Cell order [cells]: verified cells (finite exact) by |exact|, then the others by |attribution| (never an
    unverified cell above a verified one). Inputs [...] of one statistic; ties keep the flat order."""
    exact, attribution = np.ravel(exact).astype(float), np.ravel(attribution).astype(float)
    verified = np.isfinite(exact)
    first = np.flatnonzero(verified)[np.argsort(-np.abs(exact[verified]), kind="stable")]
    rest = np.flatnonzero(~verified)
    rest = rest[np.argsort(-np.nan_to_num(np.abs(attribution[rest]), nan=-1.0), kind="stable")]
    return np.concatenate([first, rest]).astype(int)


def summarise(infos: dict[str, Verification]) -> dict:
    """Summary keys for an analysis's sweeps: exact_mode, verified_cells, cells, fn_sample, fn_hits and
    false_negative_rate (+ its 95% Wilson interval; absent without a sample) pooled over the sweeps, and
    `verification` = [{"sweep": name, the same keys for that sweep alone}] (summaries are flat: lists, not maps)."""
    per = {s: info.summary() for s, info in infos.items()}
    hits = sum(info.fn.hits for info in infos.values() if info.fn is not None)
    n = sum(info.fn.n for info in infos.values() if info.fn is not None)
    out = {"exact_mode": next(iter(per.values()))["exact_mode"] if per else ALL,
           "verified_cells": sum(p["verified_cells"] for p in per.values()),
           "cells": sum(p["cells"] for p in per.values()), "fn_sample": n,
           "verification": [{"sweep": name, **p} for name, p in per.items()]}
    if n:
        fn = FalseNegatives(hits, n, float("nan"))
        low, high = fn.interval()
        out.update(fn_hits=hits, false_negative_rate=fn.rate, false_negative_rate_ci_low=low,
                   false_negative_rate_ci_high=high)
    return out


def sentence(summary: dict) -> str | None:
    """One sentence for a section: the mode, how many cells are exact, the false-negative estimate with its sample
    and interval. None when every cell was patched exactly."""
    if "verified_cells" not in summary or summary["verified_cells"] >= summary.get("cells", 0):
        return None
    partial = [v["sweep"] for v in summary.get("verification", []) if v["verified_cells"] < v["cells"]]
    n = summary.get("fn_sample", 0)
    if n:
        estimate = (f"{summary['fn_hits']} of {n} randomly sampled other cells reached the smallest exact effect of "
                    f"the top K: an estimated false-negative rate of {100 * summary['false_negative_rate']:.0f}% "
                    f"(95% Wilson interval {100 * summary['false_negative_rate_ci_low']:.0f}–"
                    f"{100 * summary['false_negative_rate_ci_high']:.0f}%)")
    else:
        estimate = "no other cell was sampled, so the false-negative rate is not estimated"
    return (f"Exact patching verified {summary['verified_cells']} of {summary['cells']} cells (--exact "
            f"{summary['exact_mode']}: in {', '.join(partial)}, the top K by |attribution| plus a random sample); the "
            f"other cells are drawn pale, marked ≈, as attribution estimates, and no ranking lists them; {estimate}.")


# ---- on the page ---------------------------------------------------------------------------------------------------


def mark_unverified(fig, attribution: np.ndarray, verified: np.ndarray, x: list[str], y: list[str]) -> None:
    """In a `paired_heatmap`'s exact (left) panel, where exact patching left cells blank (unverified), draw their
    attribution estimate pale on the same colour scale, each marked ≈, and say so in the panel's title."""
    import plotly.graph_objects as go

    verified = np.asarray(verified) > 0.5
    if verified.all():
        return
    estimate = np.where(verified, np.nan, np.asarray(attribution, dtype=float))
    fig.add_trace(go.Heatmap(z=estimate, x=x, y=y, coloraxis="coloraxis", opacity=0.35,
                             text=np.where(verified, "", "≈"), texttemplate="%{text}",
                             hovertemplate="%{y}, %{x}<br>not verified by exact patching; attribution estimate: "
                                           "%{z:.3f}<extra></extra>"), 1, 1)
    title = fig.layout.annotations[0]
    title.text = f"{title.text} (pale ≈: not verified, attribution estimate)"
