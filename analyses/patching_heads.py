"""Activation patching per attention head: head output (z), values (v) and attention pattern, over all positions.

For every head, the corrupted prompts are run with that head's z (its output before W_O), its values or its
attention pattern taken from the clean prompts at every position. Patching v changes the head's output through
what it moves; patching the pattern, through where it looks; z is both. Effects are normalised so that 0 is the
corrupted run and 1 the clean run, on LD = logit(clean answer) - logit(corrupted answer) at the final position
(`analyses.engine`, `analyses.common.stats`). Attribution patching is computed beside it.

Arrays, per sweep s in (z, v, pattern), L layers, H heads (v: key-value heads), B prompts:
    {s}_exact, {s}_attribution, {s}_ci_low, {s}_ci_high      [L, H]
    {s}_exact_per_prompt, {s}_attribution_per_prompt        [L, H, B]
    {s}_exact_logit_diff, {s}_attribution_logit_diff        [L, H, B]
    clean_logit_diff, corrupted_logit_diff                  [B]
    z_noising                                               [L, H] share of the gap that NOISING the head's z
                                                            removes (the clean run with its z from the corrupted
                                                            twin; `analyses.methods.necessity`), beside z_exact
                                                            (denoising)
Labels: `heads` ([L][H] "L9H1"), `kv_heads` ([L][H_kv] names of the value heads).
Widgets: attention patterns, on the first clean prompt, of the top heads by |z effect| in the early, middle and
late thirds of the layers.
Summary contract: `corruption` ("day" or "relation": computed and saved once per corruption); `top_heads` =
[{"name": "L9H1", "value": 0.61, "ci_low", "ci_high", "attribution", "value_by_template", "v_value",
"pattern_value", "noising_value"}] sorted by |value| (z sweep), largest first; `v_top_heads`, `pattern_top_heads`
likewise; attribution_{slope,mae,top_overlap,pearson}_{s} (informative gap only); clean_logit_diff_mean,
corrupted_logit_diff_mean, gap_*, normalised, items_above_chance.
Under `--exact top:K,sample:S` (`analyses.methods.verified`, AtP*) exact patching runs only on each sweep's top K cells
by |attribution| and a random sample of S others (the noising sweep too): the rest are NaN in the exact arrays,
{s}_verified [L, H] (1 = exact) says which, the rankings list verified heads only, and the summary records
exact_mode, verified_cells, cells, fn_sample, fn_hits, false_negative_rate (+ _ci_low/_ci_high) and `verification`
per sweep (in every mode).
"""

from __future__ import annotations

from typing import Annotated, NotRequired, TypedDict

import numpy as np

from analyses.common import plots
from analyses.common import stats as st
from analyses.common.contract import Count, Headline
from analyses.common.phrases import INSTEAD
from analyses.common.thresholds import RULES
from analyses.common.types import Analysis, FamilyContext, Figure, PromptSet, Result
from analyses.engine.attribution_patching import attribution_sweeps
from analyses.engine.sweep_runs import run_sweeps
from analyses.engine.sweeps import HEAD_SWEEPS, collect_runs
from analyses.methods import necessity, shared
from analyses.methods import verified as verify
from analyses.methods.attribution import head_name, parse_head_name
from analyses.methods.patching_display import (
    agreement_scatter,
    agreement_sentence,
    baseline_sentences,
    hover_text,
    notable,
    paired_heatmap,
    percent,
    top_sentence,
    unit_label,
)

NAME = "patching_heads"
TOP_K = 10
WIDGET_HEADS = 3  # heads per layer group in the attention widgets
GROUPS = ("early", "middle", "late")
SHORT = {"z": "head output", "v": "values", "pattern": "attention pattern"}


def head_names(n_layers: int, n_heads: int) -> np.ndarray:
    return np.array([[head_name(layer, head) for head in range(n_heads)] for layer in range(n_layers)])


def z_to_kv(n_heads: int, n_kv: int) -> np.ndarray:
    """[n_heads] the key-value head each query head reads (grouped-query attention; identity otherwise)."""
    return np.arange(n_heads) // (n_heads // n_kv)


def compute(model, prompts: PromptSet, context: FamilyContext | None = None) -> Result:
    ctx = shared.context_for(model, context)
    results = shared.sweep_results(ctx, prompts, HEAD_SWEEPS)  # exact where --exact verified, NaN elsewhere
    checked = shared.verification(ctx, prompts, HEAD_SWEEPS)
    n_layers = model.cfg.n_layers
    stats = {s: st.sweep_stats(results, s, prompts.template_index) for s in HEAD_SWEEPS}
    names = {s: head_names(n_layers, stats[s].exact.shape[1]) for s in HEAD_SWEEPS}
    summary = st.common_summary(results, prompts, n_layers, shared.above_chance(ctx, prompts))
    arrays = {"clean_logit_diff": results.clean_ld, "corrupted_logit_diff": results.corrupted_ld}
    for sweep in HEAD_SWEEPS:
        arrays.update(st.stats_arrays(sweep, stats[sweep], results))
        summary.update(st.agreement_summary(sweep, stats[sweep]))
    noising, noising_checked = _noising(ctx, prompts)
    arrays["z_noising"] = noising.exact
    summary.update(verify.summarise({**checked, "z_noising": noising_checked}))
    for sweep, info in checked.items():
        if not info.complete:
            arrays[f"{sweep}_verified"] = info.verified.astype(np.float32)
    summary["n_heads"], summary["n_kv_heads"] = int(names["z"].shape[1]), int(names["v"].shape[1])
    by_template = dict(results=results, template_index=prompts.template_index)
    summary["top_heads"] = _top_heads(stats, names["z"], by_template)
    for entry in summary["top_heads"]:
        entry["noising_value"] = st.finite_or_none(noising.exact[parse_head_name(entry["name"])])
    summary["v_top_heads"] = st.ranked(stats["v"], names["v"], TOP_K, sweep="v", **by_template)
    summary["pattern_top_heads"] = st.ranked(stats["pattern"], names["pattern"], TOP_K, sweep="pattern",
                                             **by_template)
    widgets = _widgets(stats["z"].exact, names["z"], results.first_prompt_patterns, prompts)
    labels = {"heads": names["z"].tolist(), "kv_heads": names["v"].tolist()}
    return Result(summary=summary, arrays=arrays, labels=labels, widgets=widgets)


def _noising(ctx: FamilyContext, prompts: PromptSet) -> tuple[st.SweepStats, verify.Verification]:
    """z patched the other way (the clean run with each head's z from the corrupted twin), under --exact too."""
    model, swapped, mode = ctx.model, necessity.swapped(prompts), shared.exact_mode(ctx)
    if not mode.partial:
        results = run_sweeps(model, swapped, ("z",))
        return st.sweep_stats(results, "z"), verify.everything(str(mode), results.exact["z"].shape[:2])
    runs = collect_runs(model, swapped, ("z",))
    attribution = attribution_sweeps(model, runs, ("z",))
    values, info = verify.verified_sweeps(model, runs, ("z",), mode.k, mode.sample, mode.seed, attribution=attribution)

    def numpy(t):
        return t.detach().float().cpu().numpy()

    results = st.SweepResults(exact={"z": numpy(values["z"])},
                              attribution={"z": numpy(attribution["z"] + runs.corrupted_ld)},
                              clean_ld=numpy(runs.clean_ld), corrupted_ld=numpy(runs.corrupted_ld))
    return st.sweep_stats(results, "z"), info["z"]


def _top_heads(stats: dict[str, st.SweepStats], names: np.ndarray, by_template: dict) -> list[dict]:
    """Top heads by |z effect|, each with its v and pattern effects (v through its key-value head)."""
    entries = st.ranked(stats["z"], names, TOP_K, sweep="z", **by_template)
    kv = z_to_kv(stats["z"].exact.shape[1], stats["v"].exact.shape[1])
    for entry in entries:
        layer, head = parse_head_name(entry["name"])
        entry["v_value"] = st.finite_or_none(stats["v"].exact[layer, kv[head]])
        entry["pattern_value"] = st.finite_or_none(stats["pattern"].exact[layer, head])
    return entries


def layer_group(layer: int, n_layers: int) -> int:
    """0, 1, 2 = early, middle, late third of the layers."""
    return min(2, 3 * layer // n_layers)


def _widgets(z_effect: np.ndarray, names: np.ndarray, patterns: np.ndarray, prompts: PromptSet) -> list[dict]:
    """Per third of the layers, the attention patterns [heads][dest][src] of its top heads by |z effect|."""
    n_layers = z_effect.shape[0]
    widgets = []
    for group, label in enumerate(GROUPS):
        layers = [layer for layer in range(n_layers) if layer_group(layer, n_layers) == group]
        if not layers:
            continue
        cells = [(layer, head) for layer in layers for head in range(z_effect.shape[1])]
        cells.sort(key=lambda c: -np.nan_to_num(abs(z_effect[c]), nan=-1.0))
        chosen = cells[:WIDGET_HEADS]
        widgets.append({
            # short names on the selector's tiles (a value in the label overflows the tile); values in the title
            "title": f"{label.capitalize()} layers (L{layers[0]}–L{layers[-1]}): top heads by |z patching effect|, "
                     f"first clean prompt (z: " + ", ".join(f"{names[c]} {z_effect[c]:+.2f}" for c in chosen) + ")",
            "tokens": list(prompts.str_tokens[0]),
            "attention": [np.round(patterns[layer, head], 4).tolist() for layer, head in chosen],
            "head_names": [str(names[c]) for c in chosen],
        })
    return widgets


def figures(result: Result) -> list[Figure]:
    heads = np.array(result.labels["heads"])
    kv_heads = np.array(result.labels["kv_heads"])
    layers = [f"L{layer}" for layer in range(heads.shape[0])]
    unit = unit_label(result.summary)
    out = []
    for sweep, names in (("z", heads), ("v", kv_heads), ("pattern", heads)):
        columns = [f"H{h}" for h in range(names.shape[1])]
        fig = paired_heatmap(result.arrays[f"{sweep}_exact"], result.arrays[f"{sweep}_attribution"], columns, layers,
                             hover_text(result, sweep, names),
                             f"Patching each head's {SHORT[sweep]} at every position (clean → corrupted)", unit,
                             "head")
        if f"{sweep}_verified" in result.arrays:
            verify.mark_unverified(fig, result.arrays[f"{sweep}_attribution"], result.arrays[f"{sweep}_verified"],
                                   columns, layers)
        out.append(Figure(f"{NAME}-{sweep}", fig))
    kv = z_to_kv(heads.shape[1], kv_heads.shape[1])
    z = result.arrays["z_exact"]
    for sweep, other in (("v", result.arrays["v_exact"][:, kv]), ("pattern", result.arrays["pattern_exact"])):
        fig = plots.scatter(z.ravel(), other.ravel(), heads.ravel().tolist(),
                            f"Head output (z) against {SHORT[sweep]}, exact patching",
                            f"z effect ({unit})", f"{sweep} effect ({unit})")
        out.append(Figure(f"{NAME}-z-vs-{sweep}", fig))
    out.append(Figure(f"{NAME}-attribution-vs-exact", agreement_scatter(result, HEAD_SWEEPS, heads)))
    return out


def narrative(result: Result) -> list[str]:
    s = result.summary
    normalised = s["normalised"]
    sentences = baseline_sentences(s)
    checked = verify.sentence(s)
    sentences += [checked] if checked else []
    best = dict(s["top_heads"][0], name_phrase=f"head {s['top_heads'][0]['name']}'s output")
    sentences.append(top_sentence(best, s, "any head's output"))
    if not notable(best, s):
        return sentences + [sentence for sentence in [agreement_sentence(s, HEAD_SWEEPS, SHORT)] if sentence]
    others = [e for e in s["top_heads"][1:3] if notable(e, s)]
    if others:
        sentences.append("The next largest are " + " and ".join(
            f"{e['name']} ({percent(e['value'], normalised)})" for e in others) + ".")
    if best["v_value"] is not None and best["pattern_value"] is not None:
        values = "its values" if s["n_kv_heads"] == s["n_heads"] else "the values of its key-value group"
        sentences.append(f"Through {values} alone {best['name']} moves {percent(best['v_value'], normalised)}, "
                         f"through its attention pattern alone {percent(best['pattern_value'], normalised)}.")
    if best.get("noising_value") is not None:
        at_chance = "" if s["items_above_chance"] else INSTEAD
        sentences.append(f"Noising {best['name']} (the clean run with its output from the corrupted twin) removes "
                         f"{percent(best['noising_value'], normalised)}, beside the "
                         f"{percent(best['value'], normalised)} its denoising restores{at_chance} (the ablations "
                         "section reads AND / OR structure from the two).")
    if best.get("value_by_template"):
        sentences.append(f"Per template, {best['name']}'s effect is " + ", ".join(
            f"T{t} {percent(v, normalised)}" for t, v in enumerate(best["value_by_template"])) + ".")
    agreement = agreement_sentence(s, HEAD_SWEEPS, SHORT)
    if agreement:
        sentences.append(agreement)
    return sentences


class TopHead(st.PatchedEntry):
    v_value: NotRequired[Annotated[float | None, "the v sweep's effect of its key/value head"]]
    pattern_value: NotRequired[Annotated[float | None, "the pattern sweep's effect of the head"]]
    noising_value: NotRequired[Annotated[float | None, "noising: the effect of corrupting only this head"]]


HeadAgreement = TypedDict("HeadAgreement", st.agreement_keys(HEAD_SWEEPS))


class PatchingHeadsSummary(st.PatchingCommon, HeadAgreement, st.ExactOptions):
    """Activation patching of each head's output (z), values (v) and attention pattern, per corruption."""

    n_heads: Annotated[Count, "query heads per layer"]
    n_kv_heads: Annotated[Count, "key/value heads per layer"]
    top_heads: Annotated[list[TopHead], "heads by |z effect|, largest first"]
    v_top_heads: Annotated[list[st.PatchedEntry], "key/value heads by |v effect| (under grouped-query attention, "
                                                  "'L9H1' is layer 9's key/value head 1)"]
    pattern_top_heads: Annotated[list[st.PatchedEntry], "heads by |pattern effect|"]


PATCHING_HEADS = Analysis(
    headlines=(Headline("top_heads", "top heads by patching", format="ranking", places=("comparison",)),),
    summary_type=PatchingHeadsSummary,
    name=NAME,
    title="Activation patching by attention head",
    definition="Each cell: the corrupted prompts run with one head's output (z, before W_O), its values (v) or its "
               "attention pattern taken from the clean prompts at every position. " + st.NORMALISATION
               + ", when the gap is informative (" + RULES + "). Intervals: " + st.CLUSTER_INTERVAL
               + ". Noising beside it (the clean run with one head's output from the corrupted twin: the share of the "
               "gap it removes). Right-hand panels: attribution patching, "
               "the first-order estimate (clean − corrupted activation) · gradient of the logit difference on the "
               "corrupted run. With grouped-query attention, v is patched per key-value head.",
    compute=compute, figures=figures, narrative=narrative,
    description="Which heads cause the answer, and whether through what they move or where they look.",
    per_corruption=True, intervenes=True, uses_context=True,
)
