"""Direct logit attribution per component: embeddings, each attention layer, each MLP.

attr[c, i] = ln_scale(component_c[i, -1]) @ (W_U[:, a_i] - W_U[:, b_i]); summed over components and
added to the unembedding bias term b_U[a_i] - b_U[b_i], it gives the model's logit difference exactly
(the summary records the largest reconstruction error). Shapes: attr [components, batch].
"""

from __future__ import annotations

from typing import Annotated, NotRequired, TypedDict

from analyses.common import phrases, plots
from analyses.common.contract import FamilyHeader
from analyses.common.metrics import answer_pair, logit_diff
from analyses.common.precision import dtype_name, identity_tolerance, soft_cap, uncapped
from analyses.common.text import num, signed
from analyses.common.thresholds import MIN_EFFECT_FRACTION, MIN_EFFECT_LOGITS, notable_logits
from analyses.common.types import Analysis, Figure, PromptSet, Result
from analyses.methods.attribution import METRIC_LABELS, layer_attributions, metric_terms, run_clean_with_cache


def compute(model, prompts: PromptSet) -> Result:
    final_logits, cache = run_clean_with_cache(model, prompts)
    arrays, summary = {}, {"family": prompts.family}
    for metric in METRIC_LABELS:
        attr, labels = layer_attributions(model, cache, prompts, metric)
        _, bias = metric_terms(model, prompts, metric)
        # the decomposition is linear in the residual stream: it sums to the logits before any soft-cap
        actual = logit_diff(uncapped(final_logits, model), *answer_pair(prompts, metric))
        error = (attr.sum(dim=0) + bias - actual).abs().max()
        values = attr.cpu().numpy()
        arrays[metric] = values
        arrays[f"{metric}_bias"] = bias.cpu().numpy()
        mean = values.mean(axis=1)
        top, bottom = int(mean.argmax()), int(mean.argmin())
        summary.update({
            f"{metric}_top_component": labels[top], f"{metric}_top_value": float(mean[top]),
            f"{metric}_bottom_component": labels[bottom], f"{metric}_bottom_value": float(mean[bottom]),
            f"{metric}_bias_mean": float(bias.mean()),
            f"{metric}_logit_diff_mean": float(actual.mean()),
            f"{metric}_reconstruction_error_max": float(error),
            f"{metric}_mean_by_component": mean.tolist(),
        })
    summary["components"] = labels
    summary["dtype"] = dtype_name(model)
    summary["identity_tolerance"] = identity_tolerance(model)  # what the reconstruction error may reach
    if soft_cap(model) is not None:
        summary["logit_soft_cap"] = soft_cap(model)
    return Result(summary=summary, arrays=arrays, labels={"components": labels})


def figures(result: Result) -> list[Figure]:
    labels = result.labels["components"]
    series = {METRIC_LABELS[m]: result.arrays[m].mean(axis=1) for m in METRIC_LABELS}
    fig = plots.bars(labels, series, "Direct logit attribution of each component (mean over prompts)",
                     "logit difference", height=420)
    return [Figure("dla-layers", fig)]


def narrative(result: Result) -> list[str]:
    s = {key.removeprefix("copy_"): value for key, value in result.summary.items()}
    reference = s["logit_diff_mean"]
    if s["top_value"] > 0 and notable_logits(s["top_value"], reference):
        sentences = [f"Against the item in the prompt, {s['top_component']} writes the most "
                     f"({signed(s['top_value'])} of {signed(reference)}) directly into the answer."]
    else:
        sentences = [phrases.nothing_stands_out(
            f"Against the item in the prompt, no component writes a positive direct contribution of at least "
            f"{MIN_EFFECT_LOGITS:g} logits and {MIN_EFFECT_FRACTION:.0%} of the logit difference "
            f"({signed(reference)})")]
    if s["bottom_value"] < 0 and notable_logits(s["bottom_value"], reference):
        sentences.append(f"{s['bottom_component']} pushes the other way most ({signed(s['bottom_value'])}).")
    sentences.append(f"The components plus the unembedding bias ({signed(s['bias_mean'])}) reconstruct the logit "
                     f"difference to within {num(s['reconstruction_error_max'])}"
                     + (f" (tolerance in {s['dtype']}: {num(s['identity_tolerance'])})." if "dtype" in s else "."))
    if "logit_soft_cap" in s:
        sentences.append(f"The model soft-caps its logits at {num(s['logit_soft_cap'])}; the components sum to the "
                         "logit difference before the cap.")
    return sentences


def _metric(metric: str, what: str) -> dict:
    """The keys of one metric's decomposition, `{metric}_*`."""
    return {f"{metric}_top_component": Annotated[str, f"the component with the largest mean share of {what}"],
            f"{metric}_top_value": Annotated[float, "its mean share, logits"],
            f"{metric}_bottom_component": Annotated[str, "the component with the most negative mean share"],
            f"{metric}_bottom_value": Annotated[float, "its mean share, logits"],
            f"{metric}_bias_mean": Annotated[float, "the unembedding bias term's mean, logits"],
            f"{metric}_logit_diff_mean": Annotated[float, f"the model's mean {what}, logits"],
            f"{metric}_reconstruction_error_max": Annotated[float, "largest |components + bias − logit difference| "
                                                                   "over prompts, logits"],
            f"{metric}_mean_by_component": Annotated[list[float], "mean share per component, aligned with "
                                                                  "components"]}


DlaLayersKeys = TypedDict("DlaLayersKeys", {
    **_metric("copy", "logit(correct) − logit(item in the prompt)"),
    **_metric("clean_vs_corrupted", "logit(clean answer) − logit(corrupted answer)"),
    "components": Annotated[list[str], "the components: embeddings, each attention layer, each MLP"],
    "dtype": Annotated[str, "the dtype the model ran in"],
    "identity_tolerance": Annotated[float, "what the reconstruction error may reach in that dtype, logits"],
    "logit_soft_cap": NotRequired[Annotated[float, "the model's final logit soft-cap, where it has one"]],
})


class DlaLayersSummary(FamilyHeader, DlaLayersKeys):
    """Direct logit attribution per component; the decomposition's reconstruction error."""


DLA_LAYERS = Analysis(
    summary_type=DlaLayersSummary,
    name="dla_layers",
    title="Direct logit attribution by layer",
    definition="Each component's output at the final position (embeddings, each attention layer, each MLP), scaled "
               "by the final norm's scale of the run (frozen, so the decomposition is exact) and projected on "
               "W_U[:, correct] − W_U[:, other]. The components "
               "sum, with the unembedding bias difference, to the model's logit difference.",
    compute=compute, figures=figures, narrative=narrative,
)
