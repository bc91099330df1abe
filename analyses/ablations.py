"""Ablations of every head and MLP (zero, mean, resample), beside direct logit attribution.

Method (Wang et al. 2022, "Interpretability in the Wild", mean ablation; Heimersheim & Nanda 2024 on ablation
kinds; McGrath et al. 2023, "The Hydra Effect", for self-repair): the clean prompts are run with one node's
activation replaced (`analyses.mechanism`: a head's output z at every position, or an MLP's output at every
position) by its value on the paired twin of the corruption in use (resample: the primary ablation, `ablation` in
the summary; MIB's counterfactual ablation), by its mean over a reference set that varies only that corruption's
variable, per template (`analyses.mechanism.mean_reference`), or by zero. Computed once per corruption, since both
the resample and the mean reference depend on it. Effects are read on three numbers at the final position:
    LD        logit(clean answer) − logit(corrupted answer)   (the patching metric)
    copy LD   logit(correct answer) − logit(item named in the prompt)
    P(correct) softmax over the whole vocabulary
each as (ablated − clean), averaged over prompts.

Direct against total effect: for mean ablation, the direct effect of a node is what its change writes straight
into the logits, (reference output − output) at the final position, scaled by the clean run's final-norm scale and
read on the LD direction (direct logit attribution, Elhage et al. 2021). The total effect is the ablated LD
change. On the diagonal a node acts only directly; far above it (total smaller in size than direct) later
components compensate (self-repair, backup heads); far below, the node also acts through later components.

Batched with `analyses.intervention.run_rows`: one row per (node, ablation), joining the batch at the node's layer.
A node is named only when |effect| >= NAME_FRACTION of the clean − corrupted gap and the gap is informative
(`analyses.mechanism.informative_gap`).

Arrays (N nodes, B prompts): {kind}_logit_diff, {kind}_copy_logit_diff, {kind}_p_correct [N, B] (ablated runs);
clean_logit_diff, corrupted_logit_diff, clean_copy_logit_diff, clean_p_correct [B]; direct_mean [N] (direct effect
of mean ablation on LD, mean over prompts). Labels: nodes [N] ("L9H1", "MLP0"), in layer order.
Summary: ablation (the primary kind, "resample"); mean_ablation_top = [{"node", "value" (ΔLD), "direct",
"p_correct" (ΔP)}] by |value|; {kind}_top (zero_top, mean_top, resample_top) = [{"node", "value" (ΔLD),
"p_correct" (ΔP)}] by |value|; off_diagonal =
nodes named for |total − direct| above threshold; informative, gap_reason, corruption.
"""

from __future__ import annotations

import numpy as np
import plotly.graph_objects as go
import torch

from analyses import intervention as engine
from analyses import plots, shared, thresholds
from analyses.attribution import head_outputs, metric_terms, project
from analyses.mechanism import (
    ABLATION_TEXT,
    ABLATIONS,
    NAME_FRACTION,
    PRIMARY_ABLATION,
    ablation_source,
    at_chance_lead,
    gap_state,
    informative_gap,
    instead,
    mean_reference,
    node_edit,
    node_hook,
    node_name,
    nodes,
    numpy,
)
from analyses.metrics import answer_pair, model_device
from analyses.plots import LAYOUT
from analyses.types import Analysis, FamilyContext, Figure, PromptSet, Result

NAME = "ablations"
TOP_K = 10
READOUT_ROWS = 64  # rows unembedded over the whole vocabulary at once (P(correct))


def ablation_rows(node_list, clean: dict, corrupted: dict, kinds=ABLATIONS, corruption: str = "day",
                  template_index: list[int] | None = None) -> list[engine.Row]:
    """One row per (kind, node), kind-major: the node's activation replaced by that ablation's values (the twin
    and the mean reference of `corruption`, per template)."""
    sources = {kind: {h: ablation_source(kind, clean[h], corrupted[h], corruption, template_index)
                      for h in {node_hook(n) for n in node_list}} for kind in kinds}
    return [engine.Row((node_edit(node, sources[kind][node_hook(node)]),)) for kind in kinds for node in node_list]


def readouts(model, final: torch.Tensor, prompts: PromptSet) -> dict[str, torch.Tensor]:
    """[n, B, d_model] final residuals -> LD, copy LD, P(correct), each [n, B]."""
    device = final.device
    pos, neg = (t.to(device) for t in answer_pair(prompts, "clean_vs_corrupted"))
    copy = prompts.copy_ids.to(device)
    out = {"logit_diff": [], "copy_logit_diff": [], "p_correct": []}
    for start in range(0, final.shape[0], READOUT_ROWS):
        logits = engine.final_logits(model, final[start:start + READOUT_ROWS])  # [r, B, V]
        out["logit_diff"].append(_pick(logits, pos) - _pick(logits, neg))
        out["copy_logit_diff"].append(_pick(logits, pos) - _pick(logits, copy))
        out["p_correct"].append(_pick(torch.softmax(logits.float(), -1), pos))
    return {k: torch.cat(v) for k, v in out.items()}


def _pick(values: torch.Tensor, ids: torch.Tensor) -> torch.Tensor:
    """[r, B, V], [B] -> [r, B]: each prompt's column."""
    return values.gather(-1, ids.expand(values.shape[0], -1)[..., None])[..., 0]


@torch.no_grad()
def direct_effects(model, prompts: PromptSet, node_list) -> np.ndarray:
    """[N] direct effect on LD of mean-ablating each node (contrast-matched reference, per template), mean over
    prompts (clean final-norm scale)."""
    device = model_device(model)
    _, cache = model.run_with_cache(prompts.clean_tokens.to(device))
    _, twin_cache = model.run_with_cache(prompts.corrupted_tokens.to(device))
    heads, twin_heads = head_outputs(model, cache), head_outputs(model, twin_cache)  # [L, H, B, d]
    pieces = []
    for kind, layer, head in node_list:
        if kind == "head":
            out, twin = heads[layer, head], twin_heads[layer, head]
        else:
            out, twin = (c[f"blocks.{layer}.hook_mlp_out"][:, -1] for c in (cache, twin_cache))  # [B, d]
        pieces.append(mean_reference(prompts.corruption, out, twin, prompts.template_index) - out)
    directions, _ = metric_terms(model, prompts, "clean_vs_corrupted")
    return numpy(project(cache, torch.stack(pieces), directions).mean(-1))


def compute(model, prompts: PromptSet, context: FamilyContext | None = None) -> Result:
    cfg = model.cfg
    node_list = nodes(cfg.n_layers, cfg.n_heads)
    names = sorted({node_hook(n) for n in node_list})
    base = engine.collect_base(model, prompts.clean_tokens, names)
    _, corrupted = model.run_with_cache(prompts.corrupted_tokens.to(model_device(model)), names_filter=names)
    rows = ablation_rows(node_list, base.cache, corrupted, corruption=prompts.corruption,
                         template_index=prompts.template_index)
    final, _ = engine.run_rows(model, base, rows)
    shape = (len(ABLATIONS), len(node_list), -1)
    reads = {k: numpy(v).reshape(shape) for k, v in readouts(model, final, prompts).items()}
    clean_final = base.cache[f"blocks.{cfg.n_layers - 1}.hook_resid_post"][None, :, -1]  # [1, B, d]
    clean = {k: numpy(v[0]) for k, v in readouts(model, clean_final, prompts).items()}
    corrupted_ld = numpy(readouts(model, torch.stack([corrupted_final(model, prompts)]), prompts)["logit_diff"][0])
    direct = direct_effects(model, prompts, node_list)
    informative, reason = informative_gap(clean["logit_diff"], corrupted_ld)
    arrays = {f"{kind}_{metric}": reads[metric][i] for i, kind in enumerate(ABLATIONS) for metric in reads}
    arrays.update({"clean_logit_diff": clean["logit_diff"], "clean_copy_logit_diff": clean["copy_logit_diff"],
                   "clean_p_correct": clean["p_correct"], "corrupted_logit_diff": corrupted_ld, "direct_mean": direct})
    labels = {"nodes": [node_name(n) for n in node_list]}
    summary = _summary(arrays, labels["nodes"], prompts, cfg, informative, reason)
    summary["gap_state"] = gap_state(clean["logit_diff"], corrupted_ld)
    summary["day7_above_chance"] = shared.above_chance(shared.context_for(model, context), prompts)
    return Result(summary=summary, arrays=arrays, labels=labels)


@torch.no_grad()
def corrupted_final(model, prompts: PromptSet) -> torch.Tensor:
    """[B, d_model] final-position residual of the corrupted run (before the final norm)."""
    name = f"blocks.{model.cfg.n_layers - 1}.hook_resid_post"
    _, cache = model.run_with_cache(prompts.corrupted_tokens.to(model_device(model)), names_filter=[name])
    return cache[name][:, -1]


def _summary(arrays: dict, names: list[str], prompts: PromptSet, cfg, informative: bool, reason: str) -> dict:
    total = arrays["mean_logit_diff"].mean(-1) - arrays["clean_logit_diff"].mean()  # [N]
    direct = arrays["direct_mean"]
    dp = arrays["mean_p_correct"].mean(-1) - arrays["clean_p_correct"].mean()
    gap = float(arrays["clean_logit_diff"].mean() - arrays["corrupted_logit_diff"].mean())
    order = np.argsort(-np.abs(total), kind="stable")
    threshold = NAME_FRACTION * abs(gap)
    off = np.abs(total - direct)
    return {
        "family": prompts.family, "corruption": prompts.corruption, "n_prompts": prompts.n_prompts,
        "n_layers": int(cfg.n_layers), "n_heads": int(cfg.n_heads),
        "clean_logit_diff_mean": float(arrays["clean_logit_diff"].mean()),
        "corrupted_logit_diff_mean": float(arrays["corrupted_logit_diff"].mean()),
        "clean_p_correct_mean": float(arrays["clean_p_correct"].mean()),
        "informative": informative, "gap_reason": reason, "name_threshold_logits": threshold,
        "ablation": PRIMARY_ABLATION,
        "mean_ablation_top": [{"node": names[i], "value": float(total[i]), "direct": float(direct[i]),
                               "p_correct": float(dp[i])} for i in order[:TOP_K]],
        "off_diagonal": [{"node": names[i], "value": float(total[i] - direct[i])}
                         for i in np.argsort(-off, kind="stable") if informative and off[i] >= threshold][:TOP_K],
        **{f"{kind}_top": _top(arrays, kind, names) for kind in ABLATIONS},
    }


def _top(arrays: dict, kind: str, names: list[str]) -> list[dict]:
    change = arrays[f"{kind}_logit_diff"].mean(-1) - arrays["clean_logit_diff"].mean()
    dp = arrays[f"{kind}_p_correct"].mean(-1) - arrays["clean_p_correct"].mean()
    return [{"node": names[i], "value": float(change[i]), "p_correct": float(dp[i])}
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
    return out


def _direct_vs_total(result: Result) -> go.Figure:
    a, names = result.arrays, result.labels["nodes"]
    total = a["mean_logit_diff"].mean(-1) - a["clean_logit_diff"].mean()
    fig = plots.scatter(a["direct_mean"], total, names, "Mean ablation: direct effect (DLA) against total effect",
                        "direct effect on LD (logits)", "total effect on LD (logits)")
    fig.update_layout(**LAYOUT)
    return fig


def narrative(result: Result) -> list[str]:
    s = result.summary
    primary = s.get("ablation", "mean")
    text = ABLATION_TEXT[primary].format(corruption=s["corruption"])
    sentences = [*at_chance_lead(s),
                 f"Each head and MLP was ablated on the clean prompts, primarily by {text}; also by mean ablation "
                 f"over a reference set that varies only the {s['corruption']} contrast (per template), and by zero. "
                 f"The clean run's mean LD is {s['clean_logit_diff_mean']:+.2f} "
                 f"and its mean P(correct) {100 * s['clean_p_correct_mean']:.1f}%."]
    if not s["informative"]:
        sentences.append(f"{thresholds.gap_clause(s.get('gap_state'))} ({s['gap_reason']}), so no ablation effect is "
                         "named as a finding.")
        return sentences
    top = s.get(f"{primary}_top") if primary != "mean" else s["mean_ablation_top"]
    named = [e for e in top if abs(e["value"]) >= s["name_threshold_logits"]]
    if not named:
        sentences.append(f"No single node's {primary} ablation moves the LD by {100 * NAME_FRACTION:.0f}% of the "
                         f"clean − corrupted gap ({s['name_threshold_logits']:.2f} logits): nothing stands out.")
    else:
        listed = ", ".join(f"{e['node']} ({e['value']:+.2f} logits"
                           + (f", P(correct) {100 * e['p_correct']:+.1f} points" if "p_correct" in e else "") + ")"
                           for e in named[:3])
        sentences.append(f"{primary.capitalize()}-ablating these changes the LD by at least "
                         f"{s['name_threshold_logits']:.2f} logits ({100 * NAME_FRACTION:.0f}% of the gap)"
                         f"{instead(s)}: {listed}.")
    if s["off_diagonal"]:
        listed = ", ".join(f"{e['node']} (total − direct {e['value']:+.2f})" for e in s["off_diagonal"][:3])
        sentences.append("Far from the diagonal of the direct-vs-total plot (later components compensate or carry "
                         f"the effect){instead(s)}: {listed}.")
    else:
        sentences.append("Every node lies near the diagonal: no self-repair or indirect effect passes the threshold.")
    return sentences


ABLATIONS_ANALYSIS = Analysis(
    name=NAME,
    title="Ablations of heads and MLPs",
    definition="Each node (a head's output at every position, or an MLP's output) replaced on the clean prompts by "
               "its value on the paired twin of this corruption (resample, the primary ablation), its mean over a "
               "reference set varying only the contrasted variable (per template), or zero; change in "
               "LD = logit(clean answer) − logit(corrupted answer), in the copy LD and in P(correct), averaged over "
               "prompts. Direct effect: the mean-ablation change written straight into the logits (DLA).",
    compute=compute, figures=figures, narrative=narrative,
    description="Which components matter when removed, and where later components compensate.",
    part="mechanism", per_corruption=True, intervenes=True, uses_context=True,
)
