"""Logit differences: how strongly the model prefers the right item, and how far apart clean and corrupted runs are.

Per prompt, at the final position:
  copy:      logit(correct) - logit(item named in the prompt), clean run (the seed notebook's comparison);
and for each corruption c of the family (`day`: another item named; `relation`: another step applied):
  {c} clean:     logit(clean answer) - logit(c's corrupted answer), clean run;
  {c} corrupted: the same difference on c's corrupted prompts (expected negative).
Their difference, the clean − corrupted gap, is what activation patching normalises by. Whether that gap is
informative (clearly non-zero) is decided by `analyses.common.thresholds.informative_gap`, the same rule every patching
section applies. Summary keys for the day corruption keep their historic names (`clean_logit_diff_mean`,
`corrupted_logit_diff_mean`); the relation corruption's are prefixed `relation_`; both have `{c}_gap_mean`,
`{c}_gap_standard_error`, `{c}_gap_informative` and `{c}_gap_reason`.
"""

from __future__ import annotations

from typing import Annotated, NotRequired, TypedDict

import numpy as np

from analyses.common import phrases, plots, thresholds
from analyses.common.contract import Count, FamilyHeader, Fraction, Headline
from analyses.common.metrics import answer_pair, logit_diff, model_device
from analyses.common.text import num, signed
from analyses.common.types import Analysis, Figure, PromptSet, Result

WHAT = {"day": "another item named (day corruption)", "relation": "another step asked (relation corruption)"}


def _prefix(corruption: str) -> str:
    return "" if corruption == "day" else f"{corruption}_"


def compute(model, prompts: PromptSet) -> Result:
    device = model_device(model)
    clean = model(prompts.clean_tokens.to(device))[:, -1, :].float()
    values = {"copy": logit_diff(clean, *answer_pair(prompts, "copy"))}
    for corruption in prompts.corruptions:
        twin = prompts.with_corruption(corruption)
        corrupted = model(twin.corrupted_tokens.to(device))[:, -1, :].float()
        pos, neg = answer_pair(twin, "clean_vs_corrupted")
        values[f"{_prefix(corruption)}clean"] = logit_diff(clean, pos, neg)
        values[f"{_prefix(corruption)}corrupted"] = logit_diff(corrupted, pos, neg)
    arrays = {k: v.cpu().numpy() for k, v in values.items()}
    summary = {"family": prompts.family, "n_prompts": prompts.n_prompts, "corruptions": list(prompts.corruptions)}
    for key, arr in arrays.items():
        summary[f"{key}_logit_diff_mean"] = float(arr.mean())
        summary[f"{key}_logit_diff_min"] = float(arr.min())
        summary[f"{key}_logit_diff_positive_frac"] = float((arr > 0).mean())
        summary[f"{key}_logit_diff"] = arr.tolist()
    for corruption in prompts.corruptions:
        p = _prefix(corruption)
        gap = thresholds.informative_gap(arrays[f"{p}clean"], arrays[f"{p}corrupted"])
        summary.update({f"{corruption}_gap_mean": gap.mean, f"{corruption}_gap_standard_error": gap.standard_error,
                        f"{corruption}_gap_positive_frac": gap.positive_fraction,
                        f"{corruption}_gap_informative": gap.informative, f"{corruption}_gap_reason": gap.reason,
                        f"{corruption}_gap_state": gap.state})
    return Result(summary=summary, arrays=arrays, labels={"prompts": prompts.clean_prompts,
                                                         "corrupted_prompts": prompts.corrupted_prompts})


def figures(result: Result) -> list[Figure]:
    a, s = result.arrays, result.summary
    series = {"correct − item in prompt (clean run)": a["copy"]}
    for corruption in s["corruptions"]:
        p = _prefix(corruption)
        series[f"{corruption}: clean − corrupted answer, clean run"] = a[f"{p}clean"]
        series[f"{corruption}: clean − corrupted answer, corrupted run"] = a[f"{p}corrupted"]
    fig = plots.bars(result.labels["prompts"], series, "Logit differences per prompt", "logit difference",
                     height=480)
    return [Figure("logit-diff-per-prompt", fig)]


def narrative(result: Result) -> list[str]:
    s = result.summary
    n = s["n_prompts"]
    copy = s["copy_logit_diff_mean"]
    sentences = [
        f"On average the correct item's logit is {signed(copy)} above the item named in the prompt "
        f"(a probability ratio of {num(np.exp(copy))}×), positive for "
        f"{round(s['copy_logit_diff_positive_frac'] * n)} of {n} prompts.",
    ]
    for corruption in s["corruptions"]:
        p = _prefix(corruption)
        gap = s[f"{corruption}_gap_mean"]
        text = (f"With {WHAT[corruption]}, logit(clean answer) − logit(corrupted answer) is "
                f"{signed(s[f'{p}clean_logit_diff_mean'])} on the clean prompts and "
                f"{signed(s[f'{p}corrupted_logit_diff_mean'])} on the corrupted ones: a gap of {signed(gap)} logits "
                f"(standard error {num(s[f'{corruption}_gap_standard_error'])}).")
        if s[f"{corruption}_gap_informative"]:
            text += " The runs are clearly apart, so patching under this corruption is normalised by this gap."
        else:
            text += " " + phrases.not_informative(
                s.get(f"{corruption}_gap_state"), s[f"{corruption}_gap_reason"],
                "patching under this corruption reports raw changes in logits, not fractions of the gap")
        sentences.append(text)
    return sentences


def _runs(prefix: str, what: str, optional: bool) -> dict:
    """The four keys of one per-prompt logit difference `{prefix}_logit_diff*` (NotRequired where `optional`)."""
    keys = {f"{prefix}_logit_diff_mean": Annotated[float, f"mean over prompts of {what}, logits"],
            f"{prefix}_logit_diff_min": Annotated[float, f"smallest {what} over the prompts"],
            f"{prefix}_logit_diff_positive_frac": Annotated[Fraction, f"prompts where {what} > 0"],
            f"{prefix}_logit_diff": Annotated[list[float], f"per prompt, {what}"]}
    return {k: NotRequired[v] for k, v in keys.items()} if optional else keys


def _gap(corruption: str, optional: bool) -> dict:
    """The clean − corrupted gap of one corruption, `{corruption}_gap_*` (analyses/common/thresholds.py)."""
    keys = {f"{corruption}_gap_mean": Annotated[float, f"mean clean − corrupted logit difference, {corruption} "
                                                       "corruption (what patching normalises by), logits"],
            f"{corruption}_gap_standard_error": Annotated[float, "its standard error over prompts"],
            f"{corruption}_gap_positive_frac": Annotated[Fraction, "prompts whose gap is positive"],
            f"{corruption}_gap_informative": Annotated[bool, "the gap passes the informative-gap rule"],
            f"{corruption}_gap_reason": Annotated[str, "why it is or is not informative, in words"],
            f"{corruption}_gap_state": Annotated[str, "its state (analyses/common/thresholds.py)"]}
    return {k: NotRequired[v] for k, v in keys.items()} if optional else keys


LogitDiffKeys = TypedDict("LogitDiffKeys", {
    "n_prompts": Annotated[Count, "clean prompts"],
    "corruptions": Annotated[list[str], "the family's corruptions: day, and relation where it has a twin"],
    **_runs("copy", "logit(correct) − logit(item named in the prompt), clean run", False),
    **_runs("clean", "logit(clean answer) − logit(day-corrupted answer), clean run", False),
    **_runs("corrupted", "logit(clean answer) − logit(day-corrupted answer), day-corrupted run", False),
    **_runs("relation_clean", "logit(clean answer) − logit(relation twin's answer), clean run", True),
    **_runs("relation_corrupted", "logit(clean answer) − logit(relation twin's answer), relation twin", True),
    **_gap("day", False), **_gap("relation", True),
})


class LogitDiffSummary(FamilyHeader, LogitDiffKeys):
    """Logit differences per prompt and their means, and each corruption's clean − corrupted gap."""


LOGIT_DIFF = Analysis(
    name="logit_diff",
    title="Logit difference",
    definition="At the final position: logit(correct) − logit(item named in the prompt), the seed notebook's copy "
               "comparison; and, for each corruption, logit(clean answer) − logit(corrupted answer) on the clean and "
               "on the corrupted prompts. A difference d means the first token is e^d times as likely as the other. "
               "Rule for patching: " + thresholds.RULES + ".",
    compute=compute, figures=figures, narrative=narrative, part="behaviour", summary_type=LogitDiffSummary,
    headlines=(Headline("copy_logit_diff_mean", "mean logit diff vs item in prompt", "logits", "signed"),
               Headline("day_gap_mean", "mean logit diff clean − corrupted", "logits", "signed")),
)
