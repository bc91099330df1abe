"""Logit lens: the logit difference read off the accumulated residual stream, layer by layer.

For each point p (before each layer, after each attention layer, and the final stream),
    lens[p, i] = ln_scale(resid_p[i, -1]) @ (W_U[:, a_i] - W_U[:, b_i]) + b_U[a_i] - b_U[b_i]
with the final LayerNorm scale of the real final stream, so the last point is the model's own logit
difference. Shapes: lens [points = 2 * n_layers + 1, batch]. Computed for both metrics; the summary
reports the first point at which the mean passes half its final value.
"""

from __future__ import annotations

from typing import Annotated, TypedDict

import numpy as np

from analyses.common import plots
from analyses.common.contract import FamilyHeader
from analyses.common.text import signed
from analyses.common.thresholds import MIN_EFFECT_LOGITS
from analyses.common.types import Analysis, Figure, PromptSet, Result
from analyses.methods.attribution import METRIC_LABELS, logit_lens, run_clean_with_cache


def point_name(label: str) -> str:
    """'3_pre' -> 'before layer 3', '3_mid' -> 'after attention 3', 'final_post' -> 'final'."""
    if label == "final_post":
        return "final"
    layer, where = label.split("_")
    return f"before layer {layer}" if where == "pre" else f"after attention {layer}"


def point_x(label: str, labels: list[str]) -> float:
    """Position on the layer axis: '3_pre' -> 3, '3_mid' -> 3.5, 'final_post' -> the number of layers.

    Read from the label, not the index: parallel-attention models (GPT-NeoX) have no mid-layer points.
    """
    if label == "final_post":
        return 1 + max(int(other.split("_")[0]) for other in labels if other != "final_post")
    layer, where = label.split("_")
    return int(layer) + (0.5 if where == "mid" else 0.0)


def half_point(mean: np.ndarray, labels: list[str]) -> str:
    """The first point whose mean passes half of the final value ('none' when the final value is not positive)."""
    final = mean[-1]
    if final <= 0:
        return "none"
    index = int(np.argmax(mean >= final / 2))
    return point_name(labels[index])


def compute(model, prompts: PromptSet) -> Result:
    final_logits, cache = run_clean_with_cache(model, prompts)
    arrays, summary = {}, {"family": prompts.family}
    for metric in METRIC_LABELS:
        lens, labels = logit_lens(model, cache, prompts, metric)
        values = lens.cpu().numpy()  # [points, batch]
        arrays[metric] = values
        mean = values.mean(axis=1)
        summary[f"{metric}_final_mean"] = float(mean[-1])
        summary[f"{metric}_half_point"] = half_point(mean, labels)
        summary[f"{metric}_mean_by_point"] = mean.tolist()
    summary["points"] = [point_name(label) for label in labels]
    return Result(summary=summary, arrays=arrays, labels={"points": labels})


def figures(result: Result) -> list[Figure]:
    labels = result.labels["points"]
    x = [point_x(label, labels) for label in labels]  # layer units: 0.5 = after the first attention layer
    series = {METRIC_LABELS[m]: result.arrays[m].mean(axis=1) for m in METRIC_LABELS}
    fig = plots.lines(x, series, "Logit difference read from the accumulated residual stream (mean over prompts)",
                      "layer (x.5 = after that layer's attention)", "logit difference",
                      hover=[point_name(label) for label in labels])
    return [Figure("logit-lens", fig)]


def narrative(result: Result) -> list[str]:
    s = result.summary
    final, half = s["copy_final_mean"], s["copy_half_point"]
    if half == "none" or final < MIN_EFFECT_LOGITS:
        return [f"The final logit difference against the item in the prompt is {signed(final)}, not clearly positive "
                f"(threshold {MIN_EFFECT_LOGITS:g} logits), so there is no point at which the model 'has' the answer."]
    means = s["copy_mean_by_point"]
    return [f"Against the item in the prompt, the residual stream reaches half of its final logit difference "
            f"({signed(final)}) {half}; it starts at {signed(means[0])} from the embeddings alone.",
            f"Against the corrupted answer the final value is {signed(s['clean_vs_corrupted_final_mean'])}, half of it "
            f"reached {s['clean_vs_corrupted_half_point']}."]


def _metric(metric: str) -> dict:
    return {f"{metric}_final_mean": Annotated[float, "the lens's mean at the final stream (= the model's), logits"],
            f"{metric}_half_point": Annotated[str, "the first point whose mean passes half the final value"],
            f"{metric}_mean_by_point": Annotated[list[float], "mean lens value per point, aligned with points"]}


LogitLensKeys = TypedDict("LogitLensKeys", {
    **_metric("copy"), **_metric("clean_vs_corrupted"),
    "points": Annotated[list[str], "where the stream is read: 'before layer 3', 'after attention 3', 'final'"],
})


class LogitLensSummary(FamilyHeader, LogitLensKeys):
    """The logit difference read off the residual stream, point by point, for both metrics."""


LOGIT_LENS = Analysis(
    summary_type=LogitLensSummary,
    name="logit_lens",
    title="Logit lens (final-norm scale frozen)",
    definition="The accumulated residual stream at the final position, before each layer and after each attention "
               "layer, scaled by the final norm's scale FROZEN from the real run's final stream (not each point's own "
               "norm, as a 'true' logit lens would) and projected on W_U[:, correct] − W_U[:, other], plus the "
               "unembedding bias difference. So every point is the direct contribution of the layers so far, in the "
               "final stream's units, and the last point is the model's logit difference.",
    compute=compute, figures=figures, narrative=narrative,
)
