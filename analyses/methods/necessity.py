"""Necessity beside sufficiency: noising and denoising one component, and the AND / OR structure they reveal.

Not an analysis: the maths and the sentences that `ablations` (heads and MLPs) and `path_patching` (paths) share.

Method (Heimersheim & Nanda 2024, "How to use and interpret activation patching", §3 "noising and denoising"; the
AND / OR reading is theirs). For a component X and a metric M read at the final position:
  denoising (sufficiency)  the corrupted run with X's activation from the clean run:
                           d = (M_denoised − M_corrupted) / (M_clean − M_corrupted)   share of the gap X restores alone
  noising (necessity)      the clean run with X's activation from the corrupted twin:
                           n = (M_clean − M_noised) / (M_clean − M_corrupted)        share of the gap X removes alone
Read together (thresholds.NEEDED_FRACTION, thresholds.ALONE_FRACTION):
  n >= NEEDED and d <= ALONE   AND: X is needed but does not suffice alone; it acts only together with others
  d >= NEEDED and n <= ALONE   OR:  X suffices alone but is not needed; another component does its job (a backup)
  n >= NEEDED and d >= NEEDED  X alone is needed and sufficient (a single route, or a chain X lies on)
Two or more AND nodes are an AND circuit (each needed, none enough alone); two or more OR nodes an OR circuit
(either suffices).

The structure is read on the clean answer's own logit, M = logit(clean answer), whose clean − corrupted gap must be
informative (`thresholds.informative_gap`). Not on the LD = logit(clean answer) − logit(corrupted answer): under a day
swap the two answers trade places, and a state in which NEITHER answer is promoted (an AND whose inputs disagree) and
one in which BOTH are (an OR whose inputs disagree) give the same LD, 0; the clean answer's logit tells them apart
(low in the first, high in the second). The LD shares are reported beside it, as everywhere in the report.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace

import numpy as np

from analyses.common import phrases, thresholds
from analyses.common.thresholds import ALONE_FRACTION, NEEDED_FRACTION
from analyses.common.types import Corrupted, PromptSet

KINDS = {"and": "AND", "or": "OR", "both": "needed and sufficient"}


def shares(clean: np.ndarray, corrupted: np.ndarray, noised: np.ndarray,
           denoised: np.ndarray) -> tuple[np.ndarray, np.ndarray, thresholds.Gap]:
    """clean, corrupted [B]; noised, denoised [N, B] -> noising share n [N], denoising share d [N] (fractions of the
    mean clean − corrupted gap; NaN when the gap is zero) and the gap's verdict (`thresholds.informative_gap`)."""
    gap = thresholds.informative_gap(clean, corrupted)
    size = float(np.mean(clean) - np.mean(corrupted))
    if size == 0:
        nan = np.full(noised.shape[0], np.nan)
        return nan, nan.copy(), gap
    return (np.mean(clean) - noised.mean(-1)) / size, (denoised.mean(-1) - np.mean(corrupted)) / size, gap


def swapped(prompts: PromptSet) -> PromptSet:
    """The same prompts with the clean run and the current corrupted twin exchanged (answers too). Denoising on it IS
    noising on `prompts`: the base run is the clean one and the patched activation comes from the corrupted twin, and
    its normalised effect, (LD'_patched − LD'_base) / (LD'_source − LD'_base) with LD' = −LD, equals
    (LD_clean − LD_noised) / (LD_clean − LD_corrupted), the share of the gap that noising removes."""
    twin = prompts.twins[prompts.corruption]
    clean_as_twin = Corrupted(prompts=list(prompts.clean_prompts), tokens=prompts.clean_tokens,
                              answer_ids=prompts.answer_ids, str_tokens=list(prompts.str_tokens))
    return replace(prompts, clean_prompts=list(twin.prompts), clean_tokens=twin.tokens, answer_ids=twin.answer_ids,
                   str_tokens=list(twin.str_tokens), twins={**prompts.twins, prompts.corruption: clean_as_twin})


def structure(names: list[str], noising: np.ndarray, denoising: np.ndarray) -> dict[str, list[dict]]:
    """{"and", "or", "both"} -> [{"name", "noising", "denoising"}], each list by the larger share, first."""
    out: dict[str, list[dict]] = {kind: [] for kind in KINDS}
    for name, n, d in zip(names, noising, denoising):
        if not (np.isfinite(n) and np.isfinite(d)):
            continue
        kind = ("both" if n >= NEEDED_FRACTION and d >= NEEDED_FRACTION else
                "and" if n >= NEEDED_FRACTION and d <= ALONE_FRACTION else
                "or" if d >= NEEDED_FRACTION and n <= ALONE_FRACTION else None)
        if kind:
            out[kind].append({"name": name, "noising": float(n), "denoising": float(d)})
    for entries in out.values():
        entries.sort(key=lambda e: -max(e["noising"], e["denoising"]))
    return out


def _listed(entries: list[dict], limit: int = 4) -> str:
    shown = ", ".join(f"{e['name']} (noising {100 * e['noising']:.0f}%, denoising {100 * e['denoising']:.0f}%)"
                      for e in entries[:limit])
    return shown + (f" and {len(entries) - limit} more" if len(entries) > limit else "")


def _group(entries: list[dict], several: str, one: Callable[[dict], str]) -> list[str]:
    """A structure's sentence: `several` with the list for two or more entries, `one(entry)` for one, none for none
    (a lone entry is described with its own numbers, since there is no group to list)."""
    if len(entries) >= 2:
        return [f"{several}: {_listed(entries)}."]
    return [one(entries[0])] if entries else []


def sentences(found: dict[str, list[dict]], informative: bool, reason: str, what: str = "node",
              instead: str = "") -> list[str]:
    """The AND / OR sentences for `found` (from `structure`), or why none is said. `instead` is appended to each
    claim (the report's phrase for a model at chance: what it does instead of the task)."""
    rule = (f"needed: noising it alone removes ≥ {100 * NEEDED_FRACTION:.0f}% of the clean answer's logit gap; "
            f"sufficient: denoising it alone restores ≥ {100 * NEEDED_FRACTION:.0f}%; 'not' means ≤ "
            f"{100 * ALONE_FRACTION:.0f}%")
    if not informative:
        return [phrases.not_informative(None, reason, f"no {what} is called needed or sufficient (no AND / OR "
                                        "structure is assessed)", runs="The clean answer's logits in the clean and "
                                        "corrupted runs")]
    ands, ors, both = found["and"], found["or"], found["both"]
    out = [*_group(ands, f"AND structure: these {what}s are each needed but none suffices alone ({rule}){instead}",
                   lambda e: f"{e['name']} is needed but does not suffice alone ({rule}; noising "
                             f"{100 * e['noising']:.0f}%, denoising {100 * e['denoising']:.0f}%): it acts only "
                             f"together with components that no single {what} stands for (AND){instead}."),
           *_group(ors, f"OR structure: these {what}s each suffice alone but none is needed, so one stands in for "
                        f"another (a backup) ({rule}){instead}",
                   lambda e: f"{e['name']} suffices alone but is not needed ({rule}; denoising "
                             f"{100 * e['denoising']:.0f}%, noising {100 * e['noising']:.0f}%): when it is noised, "
                             f"something no single {what} stands for does its job (OR, a backup){instead}.")]
    if both:
        out.append(f"Needed and sufficient alone{instead}: {_listed(both)}.")
    if not out:
        out.append(f"No {what} is needed without being sufficient alone, or sufficient without being needed ({rule}): "
                   "no AND or OR structure stands out.")
    return out
