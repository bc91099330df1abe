"""Ablations of every head and MLP (zero, mean, resample), beside direct logit attribution.

Method (Wang et al. 2022, "Interpretability in the Wild", mean ablation; Heimersheim & Nanda 2024 on ablation
kinds; McGrath et al. 2023, "The Hydra Effect", for self-repair): the clean prompts are run with one node's
activation replaced (`analyses.methods.mechanism`: a head's output z at every position, or an MLP's output at every
position) by its value on the paired twin of the corruption in use (resample: the primary ablation, `ablation` in
the summary; MIB's counterfactual ablation), by its mean over a reference set that varies only that corruption's
variable, per template (`analyses.methods.mechanism.mean_reference`), or by zero. Computed once per corruption, since
both the resample and the mean reference depend on it. Effects are read on three numbers at the final position:
    LD        logit(clean answer) − logit(corrupted answer)   (the patching metric)
    copy LD   logit(correct answer) − logit(item named in the prompt)
    P(correct) softmax over the whole vocabulary
each as (ablated − clean), averaged over prompts.

Direct against total effect: for mean ablation, the direct effect of a node is what its change writes straight
into the logits, (reference output − output) at the final position, scaled by the clean run's final-norm scale and
read on the LD direction (direct logit attribution, Elhage et al. 2021). The total effect is the ablated LD
change. On the diagonal a node acts only directly; far above it (total smaller in size than direct) later
components compensate (self-repair, backup heads); far below, the node also acts through later components.

Off the diagonal, split by which side: |total| < |direct| is self-repair (later components compensate for the
node, McGrath et al. 2023); |total| > |direct| is an indirect effect (the node also acts through later components).

Necessity beside sufficiency (`analyses.methods.necessity`): every node is also noised (the clean run with its output
from
the paired corrupted prompt) and denoised (the corrupted run with its output from the clean prompt), read as shares
of the clean − corrupted gap on the LD and on the clean answer's own logit; the latter says which nodes form AND
(each needed, none sufficient alone) and OR (each sufficient alone, none needed: backups) structure.

Batched with `analyses.engine.run_rows`: one row per (node, ablation), joining the batch at the node's layer.
Noising is the resample ablation (the same rows), read once; the zero ablation, the same under both corruptions,
runs once per family (`analyses.methods.node_ablations.ablation_readouts`); only P(correct) unembeds the whole
vocabulary.
A node is named only when |effect| >= NAME_FRACTION of the clean − corrupted gap and the gap is informative
(`analyses.methods.mechanism.informative_gap`).

Arrays (N nodes, B prompts): {kind}_logit_diff, {kind}_copy_logit_diff, {kind}_p_correct, {kind}_answer_logit
[N, B] (ablated runs; answer_logit = logit(clean answer)); clean_logit_diff, corrupted_logit_diff,
clean_copy_logit_diff, clean_p_correct, clean_answer_logit, corrupted_answer_logit [B]; direct_mean [N] (direct
effect of mean ablation on LD, mean over prompts); noising_logit_diff, denoising_logit_diff, noising_answer_logit,
denoising_answer_logit [N, B]; noising_share, denoising_share (LD), noising_share_answer, denoising_share_answer
(clean answer's logit) [N] (fractions of the gap; NaN where it is zero). Labels: nodes [N] ("L9H1", "MLP0"), in
layer order.
Summary: ablation (the primary kind, "resample"); gap_state; mean_ablation_top = [{"name", "value" (ΔLD),
"direct", "p_correct" (ΔP)}] by |value|; {kind}_top
(zero_top, mean_top, resample_top) = [{"name", "value" (ΔLD)}] by |value|; off_diagonal =
nodes named for |total − direct| above threshold, split into self_repair (|total| < |direct|) and indirect
(|total| >= |direct|), each [{"name", "value" (total − direct), "total", "direct"}]; noising_top = [{"name", "value"
(noising share of the LD gap), "denoising"}] by the larger of the two; and_nodes, or_nodes, both_nodes =
[{"name", "noising", "denoising"}] (shares of the clean answer's logit gap; empty unless answer_informative: AND,
OR and needed-and-sufficient nodes, `analyses.methods.necessity`); answer_informative,
answer_gap_reason; informative, gap_reason, corruption.
"""

from __future__ import annotations

from typing import Annotated, NotRequired

import numpy as np
import plotly.graph_objects as go

from analyses.common import phrases, plots, thresholds
from analyses.common.contract import (
    CorruptionHeader,
    Count,
    Fraction,
    GapState,
    InformativeGap,
    LogitDiffMeans,
    Necessity,
    Ranked,
)
from analyses.common.plots import LAYOUT
from analyses.common.types import Analysis, FamilyContext, Figure, PromptSet, Result
from analyses.engine.rows import collect_base
from analyses.methods import necessity, shared
from analyses.methods.mechanism import (
    ABLATION_TEXT,
    ABLATIONS,
    NAME_FRACTION,
    PRIMARY_ABLATION,
    at_chance_lead,
    gap_state,
    informative_gap,
    instead,
    node_hook,
    node_name,
    nodes,
    numpy,
)
from analyses.methods.node_ablations import ablation_readouts, direct_effects, noising_and_denoising, readouts

NAME = "ablations"
TOP_K = 10
def compute(model, prompts: PromptSet, context: FamilyContext | None = None) -> Result:
    cfg = model.cfg
    node_list = nodes(cfg.n_layers, cfg.n_heads)
    names = sorted({node_hook(n) for n in node_list})
    base = collect_base(model, prompts.clean_tokens, names)
    corrupted_base = collect_base(model, prompts.corrupted_tokens, names)
    corrupted = corrupted_base.cache
    ctx = shared.context_for(model, context)
    reads = ablation_readouts(ctx, prompts, node_list, base, corrupted)  # {metric: [kinds, N, B]}
    clean_final = base.cache[f"blocks.{cfg.n_layers - 1}.hook_resid_post"][None, :, -1]  # [1, B, d]
    clean = {k: numpy(v[0]) for k, v in readouts(model, clean_final, prompts).items()}
    corrupted_reads = readouts(model, corrupted_base.cache[f"blocks.{cfg.n_layers - 1}.hook_resid_post"][None, :, -1],
                               prompts)
    corrupted_ld = numpy(corrupted_reads["logit_diff"][0])
    direct = direct_effects(model, prompts, node_list)
    informative, reason = informative_gap(clean["logit_diff"], corrupted_ld)
    arrays = {f"{kind}_{metric}": numpy(reads[metric][i]) for i, kind in enumerate(ABLATIONS) for metric in reads}
    arrays.update({"clean_logit_diff": clean["logit_diff"], "clean_copy_logit_diff": clean["copy_logit_diff"],
                   "clean_p_correct": clean["p_correct"], "corrupted_logit_diff": corrupted_ld, "direct_mean": direct,
                   "clean_answer_logit": clean["answer_logit"],
                   "corrupted_answer_logit": numpy(corrupted_reads["answer_logit"][0])})
    resample = ABLATIONS.index(PRIMARY_ABLATION)  # noising is the resample ablation: its rows, read once
    arrays.update(noising_and_denoising(model, prompts, node_list, base, corrupted_base,
                                        {metric: values[resample] for metric, values in reads.items()}))
    labels = {"nodes": [node_name(n) for n in node_list]}
    summary = _summary(arrays, labels["nodes"], prompts, cfg, informative, reason)
    summary.update(_necessity_summary(arrays, labels["nodes"], informative))
    summary["gap_state"] = gap_state(clean["logit_diff"], corrupted_ld)
    summary["items_above_chance"] = shared.above_chance(ctx, prompts)
    return Result(summary=summary, arrays=arrays, labels=labels)


def _necessity_summary(arrays: dict, names: list[str], informative: bool) -> dict:
    """Shares of the LD gap and of the clean answer's logit gap; the AND / OR structure on the latter."""
    n, d, _ = necessity.shares(arrays["clean_logit_diff"], arrays["corrupted_logit_diff"],
                               arrays["noising_logit_diff"], arrays["denoising_logit_diff"])
    n_answer, d_answer, gap = necessity.shares(arrays["clean_answer_logit"], arrays["corrupted_answer_logit"],
                                               arrays["noising_answer_logit"], arrays["denoising_answer_logit"])
    arrays.update(noising_share=n, denoising_share=d, noising_share_answer=n_answer, denoising_share_answer=d_answer)
    order = np.argsort(-np.nan_to_num(np.maximum(np.abs(n), np.abs(d)), nan=-1.0), kind="stable")
    found = necessity.structure(names, n_answer, d_answer) if gap.informative else {k: [] for k in necessity.KINDS}
    return {"noising_top": [{"name": names[i], "value": float(n[i]), "denoising": float(d[i])}
                            for i in order[:TOP_K] if informative],
            "answer_informative": gap.informative, "answer_gap_reason": gap.reason,
            **{f"{kind}_nodes": entries for kind, entries in found.items()}}


def _summary(arrays: dict, names: list[str], prompts: PromptSet, cfg, informative: bool, reason: str) -> dict:
    total = arrays["mean_logit_diff"].mean(-1) - arrays["clean_logit_diff"].mean()  # [N]
    direct = arrays["direct_mean"]
    dp = arrays["mean_p_correct"].mean(-1) - arrays["clean_p_correct"].mean()
    gap = float(arrays["clean_logit_diff"].mean() - arrays["corrupted_logit_diff"].mean())
    order = np.argsort(-np.abs(total), kind="stable")
    threshold = NAME_FRACTION * abs(gap)
    off = np.abs(total - direct)
    off_diagonal = [i for i in np.argsort(-off, kind="stable") if informative and off[i] >= threshold][:TOP_K]

    def entry(i: int) -> dict:
        return {"name": names[i], "value": float(total[i] - direct[i]), "total": float(total[i]),
                "direct": float(direct[i])}
    return {
        "family": prompts.family, "corruption": prompts.corruption, "n_prompts": prompts.n_prompts,
        "n_layers": int(cfg.n_layers), "n_heads": int(cfg.n_heads),
        "clean_logit_diff_mean": float(arrays["clean_logit_diff"].mean()),
        "corrupted_logit_diff_mean": float(arrays["corrupted_logit_diff"].mean()),
        "clean_p_correct_mean": float(arrays["clean_p_correct"].mean()),
        "informative": informative, "gap_reason": reason, "name_threshold_logits": threshold,
        "ablation": PRIMARY_ABLATION,
        "mean_ablation_top": [{"name": names[i], "value": float(total[i]), "direct": float(direct[i]),
                               "p_correct": float(dp[i])} for i in order[:TOP_K]],
        "off_diagonal": [{"name": names[i], "value": float(total[i] - direct[i])} for i in off_diagonal],
        "self_repair": [entry(i) for i in off_diagonal if abs(total[i]) < abs(direct[i])],
        "indirect": [entry(i) for i in off_diagonal if abs(total[i]) >= abs(direct[i])],
        **{f"{kind}_top": _top(arrays, kind, names) for kind in ABLATIONS},
    }


def _top(arrays: dict, kind: str, names: list[str]) -> list[dict]:
    change = arrays[f"{kind}_logit_diff"].mean(-1) - arrays["clean_logit_diff"].mean()
    dp = arrays[f"{kind}_p_correct"].mean(-1) - arrays["clean_p_correct"].mean()
    return [{"name": names[i], "value": float(change[i]), "p_correct": float(dp[i])}
            for i in np.argsort(-np.abs(change), kind="stable")[:TOP_K]]


def _grid(values: np.ndarray, s: dict) -> np.ndarray:
    """[N] in node order -> [L, H + 1] (the last column is the MLP)."""
    return values.reshape(s["n_layers"], s["n_heads"] + 1)


def figures(result: Result) -> list[Figure]:
    s, a = result.summary, result.arrays
    layers = [f"L{layer}" for layer in range(s["n_layers"])]
    columns = [f"H{h}" for h in range(s["n_heads"])] + ["MLP"]
    out = []
    for kind in ABLATIONS:
        for metric, unit in (("logit_diff", "Δ logit diff"), ("p_correct", "Δ P(correct)")):
            change = a[f"{kind}_{metric}"].mean(-1) - a[f"clean_{metric}"].mean()
            floor = thresholds.SCALE_LOGITS if metric == "logit_diff" else thresholds.SCALE_PROBABILITY
            fig = plots.heatmap(_grid(change, s), columns, layers, f"{kind.capitalize()} ablation of each head and "
                                f"MLP: change in {'LD' if metric == 'logit_diff' else 'P(correct)'}", unit,
                                floor=floor)
            out.append(Figure(f"{NAME}-{kind}-{metric.replace('_', '-')}", fig))
    out.append(Figure(f"{NAME}-direct-vs-total", _direct_vs_total(result)))
    if "noising_share_answer" in a:
        out.append(Figure(f"{NAME}-necessity-vs-sufficiency", _necessity_vs_sufficiency(result)))
    return out


def _necessity_vs_sufficiency(result: Result) -> go.Figure:
    a = result.arrays
    fig = plots.scatter(a["denoising_share_answer"], a["noising_share_answer"], result.labels["nodes"],
                        "Sufficiency (denoising) against necessity (noising), on the clean answer's logit",
                        "denoising: share of the gap restored by this node alone",
                        "noising: share of the gap removed by this node alone")
    for value in (necessity.ALONE_FRACTION, necessity.NEEDED_FRACTION):
        fig.add_hline(y=value, line=dict(dash="dot", color="grey"))
        fig.add_vline(x=value, line=dict(dash="dot", color="grey"))
    fig.update_layout(**LAYOUT)
    return fig


def _direct_vs_total(result: Result) -> go.Figure:
    a, names = result.arrays, result.labels["nodes"]
    total = a["mean_logit_diff"].mean(-1) - a["clean_logit_diff"].mean()
    fig = plots.scatter(a["direct_mean"], total, names, "Mean ablation: direct effect (DLA) against total effect",
                        "direct effect on LD (logits)", "total effect on LD (logits)")
    fig.update_layout(**LAYOUT)
    return fig


def narrative(result: Result) -> list[str]:
    s = result.summary
    primary = s["ablation"]
    text = ABLATION_TEXT[primary].format(corruption=s["corruption"])
    sentences = [*at_chance_lead(s),
                 f"Each head and MLP was ablated on the clean prompts, primarily by {text}; also by mean ablation "
                 f"over a reference set that varies only the {s['corruption']} contrast (per template), and by zero. "
                 f"The clean run's mean LD is {s['clean_logit_diff_mean']:+.2f} "
                 f"and its mean P(correct) {100 * s['clean_p_correct_mean']:.1f}%."]
    if not s["informative"]:
        sentences.append(phrases.not_informative(s.get("gap_state"), s["gap_reason"],
                                                 "no ablation effect is named as a finding"))
        return sentences
    top = s.get(f"{primary}_top") if primary != "mean" else s["mean_ablation_top"]
    named = [e for e in top if abs(e["value"]) >= s["name_threshold_logits"]]
    if not named:
        sentences.append(phrases.nothing_stands_out(
            f"No single node's {primary} ablation moves the LD by {phrases.share(NAME_FRACTION)} of the clean − "
            f"corrupted gap ({s['name_threshold_logits']:.2f} logits)"))
    else:
        listed = ", ".join(f"{e['name']} ({e['value']:+.2f} logits"
                           + (f", P(correct) {100 * e['p_correct']:+.1f} points" if "p_correct" in e else "") + ")"
                           for e in named[:3])
        sentences.append(f"{primary.capitalize()}-ablating these changes the LD by at least "
                         f"{s['name_threshold_logits']:.2f} logits ({100 * NAME_FRACTION:.0f}% of the gap)"
                         f"{instead(s)}: {listed}.")
    if "self_repair" in s:
        sentences += _off_diagonal_sentences(s)
    elif s["off_diagonal"]:  # results saved before the split
        listed = ", ".join(f"{e['name']} (total − direct {e['value']:+.2f})" for e in s["off_diagonal"][:3])
        sentences.append("Far from the diagonal of the direct-vs-total plot (later components compensate or carry "
                         f"the effect){instead(s)}: {listed}.")
    else:
        sentences.append("Every node lies near the diagonal: no self-repair or indirect effect passes the threshold.")
    if "and_nodes" in s:  # results saved before necessity was reported have none
        sentences += _necessity_sentences(s)
    return sentences


def _off_diagonal_sentences(s: dict) -> list[str]:
    if not s["self_repair"] and not s["indirect"]:
        return ["Every node lies near the diagonal: no self-repair or indirect effect passes the threshold."]
    out = []
    if s["self_repair"]:
        listed = ", ".join(f"{e['name']} (total {e['total']:+.2f}, direct {e['direct']:+.2f})"
                           for e in s["self_repair"][:3])
        out.append(f"Self-repair (|total| < |direct|: later components compensate when the node is removed)"
                   f"{instead(s)}: {listed}.")
    if s["indirect"]:
        listed = ", ".join(f"{e['name']} (total {e['total']:+.2f}, direct {e['direct']:+.2f})"
                           for e in s["indirect"][:3])
        out.append(f"Indirect effect (|total| > |direct|: the node also acts through later components){instead(s)}: "
                   f"{listed}.")
    return out


def _necessity_sentences(s: dict) -> list[str]:
    out = []
    named = [e for e in s["noising_top"] if max(abs(e["value"]), abs(e["denoising"])) >= NAME_FRACTION]
    if named:
        listed = ", ".join(f"{e['name']} (noising removes {100 * e['value']:.0f}%, denoising restores "
                           f"{100 * e['denoising']:.0f}%)" for e in named[:3])
        out.append("Necessity beside sufficiency, as shares of the clean − corrupted LD gap (noising: the node's "
                   "output from the corrupted twin in the clean run; denoising: from the clean prompt in the corrupted "
                   "run)"
                   f"{instead(s)}: {listed}.")
    found = {kind: s[f"{kind}_nodes"] for kind in necessity.KINDS}
    return out + necessity.sentences(found, s["answer_informative"], s["answer_gap_reason"], instead=instead(s))


class AblatedNode(Ranked):
    p_correct: NotRequired[Annotated[float, "change in P(correct answer) under the ablation"]]
    direct: NotRequired[Annotated[float, "mean ablation's direct effect on LD (what it writes into the logits)"]]
    total: NotRequired[Annotated[float, "mean ablation's total effect on LD"]]
    denoising: NotRequired[Annotated[float, "noising_top: the denoising share of the LD gap"]]


class AblationsSummary(CorruptionHeader, LogitDiffMeans, InformativeGap, GapState):
    """Zero, mean and resample ablation of every head and MLP; direct against total effect; AND / OR nodes."""

    n_heads: Annotated[Count, "heads per layer"]
    clean_p_correct_mean: Annotated[Fraction, "mean P(correct answer), clean run"]
    name_threshold_logits: Annotated[float, "|effect| a node needs to be named, logits"]
    ablation: Annotated[str, "the primary ablation (resample from the paired twin of this corruption)"]
    mean_ablation_top: Annotated[list[AblatedNode], "nodes by |ΔLD| under mean ablation (value: ΔLD, logits)"]
    off_diagonal: Annotated[list[Ranked], "nodes whose |total − direct| reaches the threshold (value: "
                                          "total − direct)"]
    self_repair: Annotated[list[AblatedNode], "off-diagonal nodes with |total| < |direct| (later components "
                                              "compensate)"]
    indirect: Annotated[list[AblatedNode], "off-diagonal nodes with |total| >= |direct| (the node also acts "
                                           "through later components)"]
    zero_top: Annotated[list[AblatedNode], "nodes by |ΔLD| under zero ablation"]
    mean_top: Annotated[list[AblatedNode], "nodes by |ΔLD| under mean ablation"]
    resample_top: Annotated[list[AblatedNode], "nodes by |ΔLD| under resample ablation"]
    noising_top: Annotated[list[AblatedNode], "noising share of the LD gap (value) beside denoising share, by the "
                                              "larger; empty where the gap is not informative"]
    answer_informative: Annotated[bool, "the clean answer's logit gap (clean − corrupted run) is informative"]
    answer_gap_reason: Annotated[str, "why it is or is not"]
    and_nodes: Annotated[list[Necessity], "needed, not sufficient alone (shares of the clean answer's logit gap)"]
    or_nodes: Annotated[list[Necessity], "sufficient alone, not needed: backups"]
    both_nodes: Annotated[list[Necessity], "needed and sufficient alone"]


ABLATIONS_ANALYSIS = Analysis(
    summary_type=AblationsSummary,
    name=NAME,
    title="Ablations of heads and MLPs",
    definition="Each node (a head's output at every position, or an MLP's output) replaced on the clean prompts by "
               "its value on the paired twin of this corruption (resample, the primary ablation), its mean over a "
               "reference set varying only the contrasted variable (per template), or zero; change in "
               "LD = logit(clean answer) − logit(corrupted answer), in the copy LD and in P(correct), averaged over "
               "prompts. Direct effect: the mean-ablation change written straight into the logits (DLA). Noising: "
               "the clean run with one node's output from the corrupted prompt (necessity); denoising: the corrupted "
               "run with it from the clean prompt (sufficiency); AND / OR structure read on logit(clean answer) "
               "(Heimersheim & Nanda 2024).",
    compute=compute, figures=figures, narrative=narrative,
    description="Which components matter when removed, and where later components compensate.",
    part="mechanism", per_corruption=True, intervenes=True, uses_context=True,
)
