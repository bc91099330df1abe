"""Periodic structure: which periods over the item index carry the representation, a cycle of n or base-10 waves?

Two mechanisms for "k days after d" are on the table: a rotation on a circle of period n (7 days, 12 months;
Engels et al. 2025) and base-10 addition on periodic features of periods 2, 5 and 10 over the number line, mapped
back to an item ("arithmetic in the wild", 2026). They predict different periods:

  1. Item view (every family). At every point (resid_pre of each block, then the final stream) the n per-item means
     at the item token (analyses.methods.item_states), centred, [n, d_model], are Fourier-transformed over the item
     index:
     share(f) = |F_f|^2 (twice for f < n/2: the pair f, n - f) / total, for f = 1 .. n // 2, period n / f.
     The same for the answer logits over the items at the final position, [n items in the prompt, n answers].
     A circle (any rotation of it) puts everything at f = 1 (period n). Over n consecutive items a period-10 wave
     is NOT separable from period n (7 samples of it are most of one cycle), so this view alone cannot name base 10.
  2. Sum view (offset families, whose templates ask several steps k). The final-position states are grouped by the
     unreduced sum s = slot item + k (1 .. n - 1 + max k, more than n values), and the share of the centred group
     means explained by a least-squares fit on (cos, sin)(2 pi s / T) is read for T = n and the base-10 periods 2, 5
     and 10 each (`sum_period_share`, [points, periods]), and for the three base-10 periods together (one fit on
     their five waves, `sum_base10_share`, [points]). A cycle of n puts its variance at T = n; base-10 features are
     fit by the base-10 waves together and little by T = n. Only here can the two be told apart.

Finding rule (narrative, at the final stream): the item view names period n when share(f = 1) >= MIN_PERIOD_SHARE.
The sum view names a cycle when the period-n share is >= MIN_PERIOD_SHARE and beats the joint base-10 share by
>= MIN_PERIOD_MARGIN; base-10 periods when the joint base-10 share is >= MIN_PERIOD_SHARE and beats the period-n
share by >= MIN_PERIOD_MARGIN; otherwise the two cannot be told apart. (Five waves over about 12 sums fit noise too:
about 0.45 of pure noise, 0.18 for one period; hence the level and the margin.)
"""

from __future__ import annotations

from typing import Annotated, NotRequired

import numpy as np
import torch

from analyses.common import phrases, plots
from analyses.common.contract import Count, SequenceHeader
from analyses.common.metrics import model_device
from analyses.common.thresholds import MIN_PERIOD_MARGIN, MIN_PERIOD_SHARE
from analyses.common.types import Analysis, Figure, PromptSet, Result
from analyses.engine.readout import final_logits_of
from analyses.methods.item_states import ItemNote, item_positions, residual_streams

NAME = "periodic"
BASE10_PERIODS = (2, 5, 10)


def fourier_shares(values: np.ndarray) -> np.ndarray:
    """[n, ...] values over the item index -> [n // 2] share of the centred variance at f = 1 .. n // 2."""
    n = values.shape[0]
    flat = values.reshape(n, -1) - values.reshape(n, -1).mean(axis=0)
    power = (np.abs(np.fft.fft(flat, axis=0)) ** 2).sum(axis=1)  # [n]; f and n - f are mirror images
    total = power[1:].sum()
    shares = np.array([power[f] + (power[n - f] if f != n - f else 0.0) for f in range(1, n // 2 + 1)])
    return np.clip(shares / total, 0.0, 1.0) if total > 0 else np.zeros(n // 2)  # clip: float rounding above 1


def period_share(values: np.ndarray, index: np.ndarray, *periods: float) -> float:
    """Share of the centred [m, ...] values explained by least squares on (cos, sin)(2 pi index / T), T in periods."""
    flat = values.reshape(len(index), -1)
    flat = flat - flat.mean(axis=0)
    total = float((flat ** 2).sum())
    if total == 0:
        return 0.0
    design = np.stack([wave(2 * np.pi * index / t) for t in periods for wave in (np.cos, np.sin)], axis=1)
    design = design - design.mean(axis=0)
    coef, *_ = np.linalg.lstsq(design, flat, rcond=None)
    return float(min(1.0, ((design @ coef) ** 2).sum() / total))  # a perfect fit can round to just above 1


def candidate_periods(n: int) -> list[int]:
    return list(dict.fromkeys([n, *BASE10_PERIODS]))


def sum_view(states: np.ndarray, sums: np.ndarray, n: int) -> tuple[np.ndarray, np.ndarray]:
    """[points, batch, d] states, [batch] unreduced sums -> ([points, periods] share of the per-sum means per
    candidate period, [points] share of the base-10 periods together)."""
    values = np.unique(sums).astype(float)
    means = np.stack([states[:, sums == v].mean(axis=1) for v in values], axis=1)  # [points, sums, d]
    each = np.array([[period_share(m, values, t) for t in candidate_periods(n)] for m in means])
    joint = np.array([period_share(m, values, *BASE10_PERIODS) for m in means])
    return each, joint


def verdict(cycle: float, base10: float) -> str:
    """'cycle', 'base10' or 'undecided' from the period-n share and the joint base-10 share (module rule)."""
    if cycle >= MIN_PERIOD_SHARE and cycle - base10 >= MIN_PERIOD_MARGIN:
        return "cycle"
    if base10 >= MIN_PERIOD_SHARE and base10 - cycle >= MIN_PERIOD_MARGIN:
        return "base10"
    return "undecided"


def compute(model, prompts: PromptSet) -> Result:
    try:
        positions, position_items = item_positions(prompts)
    except ValueError as err:
        return Result(summary={"family": prompts.family, "sequence": prompts.sequence, "note": str(err)})
    n = prompts.n_items
    streams, labels = residual_streams(model, prompts)
    rows = np.arange(prompts.n_prompts)
    at_item, at_final = streams[:, rows, positions], streams[:, :, -1]  # [points, batch, d_model]
    item_means = np.stack([[at_item[p, position_items == i].mean(axis=0) for i in range(n)]
                           for p in range(len(labels))])  # [points, n, d]
    item_shares = np.stack([fourier_shares(m) for m in item_means])  # [points, n // 2]
    device = model_device(model)
    with torch.no_grad():
        logits = final_logits_of(model, torch.as_tensor(at_final[-1], device=device), prompts.item_token_ids.to(device))
    logits = logits.float().cpu().numpy()  # [batch, n answers]
    logit_means = np.stack([logits[position_items == i].mean(axis=0) for i in range(n)])  # [n items, n answers]
    steps = np.array(prompts.prompt_offsets())
    sums = np.array(prompts.item_index) + steps  # unreduced: Sunday + 2 = 8, not Tuesday = 1
    offset_family = len(set(steps.tolist())) > 1
    summary = {
        "family": prompts.family, "sequence": prompts.sequence, "n_items": n, "layer_labels": labels,
        "periods": [n / f for f in range(1, n // 2 + 1)],
        "item_period_share": item_shares.tolist(),
        "logit_period_share": fourier_shares(logit_means).tolist(),
        "offset_family": offset_family,
    }
    if offset_family:
        shares, joint = sum_view(at_final, sums, n)
        summary.update({"sum_periods": candidate_periods(n), "sum_period_share": shares.tolist(),
                        "sum_base10_share": joint.tolist(), "sum_values": sorted(set(sums.tolist())),
                        "sum_verdict": verdict(float(shares[-1][0]), float(joint[-1]))})
    return Result(summary=summary, arrays={"item_period_share": item_shares, "logit_means": logit_means},
                  labels={"items": list(prompts.items), "layers": labels})


def figures(result: Result) -> list[Figure]:
    s = result.summary
    if "note" in s:
        return []
    periods = [f"period {p:.3g}" for p in s["periods"]]
    heat = plots.score_heatmap(np.asarray(s["item_period_share"]).T, s["layer_labels"], periods,
                               "Item means at the item token: share of variance per Fourier period over the item "
                               "index", "share", chance=1 / len(periods), height=300)  # chance: an even spread
    out = [Figure("periodic-item", heat)]
    if s["offset_family"]:
        names = [f"T = {t}" for t in s["sum_periods"]]
        shares = np.asarray(s["sum_period_share"])
        series = {name: shares[:, j] for j, name in enumerate(names)}
        series["T = 2, 5, 10 together"] = np.asarray(s["sum_base10_share"])
        out.append(Figure("periodic-sum", plots.lines(
            s["layer_labels"], series,
            "Final position grouped by item + k (unreduced): share explained by each period", "residual stream",
            "share", height=340)))
    return out


def narrative(result: Result) -> list[str]:
    s = result.summary
    if "note" in s:
        return [f"No periodic view for this family: {s['note']}."]
    n, last = s["n_items"], s["layer_labels"][-1]
    item = s["item_period_share"][-1]
    best = int(np.argmax(item))
    sentences = []
    if item[0] >= MIN_PERIOD_SHARE:
        sentences.append(f"At {last} period {n} (one cycle of the sequence) holds {item[0]:.0%} of the item means' "
                         f"variance over the item index (at least {MIN_PERIOD_SHARE:.0%} is needed to name it).")
    else:
        sentences.append(f"At {last} no single period dominates the item means: period {n} holds {item[0]:.0%} "
                         f"(naming needs {MIN_PERIOD_SHARE:.0%}); the largest share is {item[best]:.0%} at period "
                         f"{s['periods'][best]:.3g}. {phrases.NOTHING_STANDS_OUT.capitalize()}.")
    logit = s["logit_period_share"]
    sentences.append(f"The answer logits over the item in the prompt put {logit[0]:.0%} of their variance at period "
                     f"{n}.")
    if not s["offset_family"]:
        sentences.append(f"Over {n} consecutive items a period-10 wave cannot be told from period {n}; only an offset "
                         "family (several steps k) separates a cycle from base-10 periods 2, 5 and 10.")
        return sentences
    shares = dict(zip(s["sum_periods"], s["sum_period_share"][-1]))
    numbers = (", ".join(f"T = {t}: {v:.0%}" for t, v in shares.items())
               + f"; T = 2, 5, 10 together: {s['sum_base10_share'][-1]:.0%}")
    words = {"cycle": f"a cycle of period {n} (a rotation), not base-10 periods",
             "base10": "base-10 periods (2, 5, 10), not a cycle of the sequence",
             "undecided": f"neither a cycle of period {n} nor base-10 periods over the other"}[s["sum_verdict"]]
    sentences.append(f"Grouped by the unreduced sum item + k ({len(s['sum_values'])} values), the final position at "
                     f"{last} is explained by {numbers}: this reads as {words} (a side is named when it explains at "
                     f"least {MIN_PERIOD_SHARE:.0%} and beats the other by at least {MIN_PERIOD_MARGIN:.0%} of the "
                     "variance).")
    return sentences


class PeriodicSummary(SequenceHeader):
    """Which periods over the item index carry the representation: a cycle of n, or base-10 waves."""

    n_items: Annotated[Count, "items in the sequence"]
    layer_labels: Annotated[list[str], "the points read: resid_pre of each block, then the final stream"]
    periods: Annotated[list[float], "n / f for f = 1 .. n // 2"]
    item_period_share: Annotated[list[list[float]], "[points][periods] share of the item means' variance"]
    logit_period_share: Annotated[list[float], "[periods] the same for the answer logits over the items"]
    offset_family: Annotated[bool, "the family asks several steps k (then the sum view below is computed)"]
    sum_periods: NotRequired[Annotated[list[float], "offset family: the periods T fitted over the sums"]]
    sum_period_share: NotRequired[Annotated[list[list[float]], "[points][periods] variance share of each T's "
                                                               "fit over the sums"]]
    sum_base10_share: NotRequired[Annotated[list[float], "[points] share of the base-10 periods' joint fit"]]
    sum_values: NotRequired[Annotated[list[int], "the distinct unreduced sums, slot item + k"]]
    sum_verdict: NotRequired[Annotated[str, "cycle, base10 or undecided, at the final stream"]]


PERIODIC = Analysis(
    summary_type=PeriodicSummary | ItemNote,
    name=NAME,
    title="Periodic structure",
    definition="Fourier view over the item index: per layer, the share of the item means' variance (item token) at "
               "each period n/f, and of the answer logits' variance over the item in the prompt. For offset families "
               "(several steps k), the final-position states grouped by the unreduced sum item + k and the share "
               "explained by waves of period n (a cycle of the sequence) and of periods 2, 5 and 10 (base-10 "
               "features), so that a rotation and base-10 addition can be told apart.",
    compute=compute, figures=figures, narrative=narrative, part="representation",
)
