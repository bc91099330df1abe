"""Activation patching per layer and position: residual stream, attention output, MLP output.

For every layer L and position p, the corrupted prompts are run with one activation at (L, p) taken from the
clean prompts: the residual stream entering block L (resid_pre), the attention output of layer L (attn_out) or
its MLP output (mlp_out). The effect is normalised so that 0 is the corrupted run and 1 the clean run, on the
patching logit difference LD = logit(clean answer) - logit(corrupted answer) at the final position
(`analyses.engine` has the method and how it is made fast, `analyses.common.stats` the normalisation).
Attribution patching (first-order estimate from one forward and one backward pass) is computed beside it.

Arrays, per sweep s in (resid_pre, attn_out, mlp_out), L layers, S positions, B prompts:
    {s}_exact, {s}_attribution, {s}_ci_low, {s}_ci_high      [L, S]   headline effect (normalised mean), 95% CI
    {s}_exact_per_prompt, {s}_attribution_per_prompt        [L, S, B] per-prompt normalisation
    {s}_exact_logit_diff, {s}_attribution_logit_diff        [L, S, B] raw patched LD (attribution: estimated)
    clean_logit_diff, corrupted_logit_diff                  [B]
Labels: `positions` (x axis, "5:' Monday'*": the token of each template at that position, joined by '|' where
the templates differ; * = the token differs between the items of one template), `layers`.
Summary: `corruption` ("day" or "relation": the analysis is computed and saved once per corruption);
{s}_top = [{"name": "L3 pos5 ' Monday'", "value", "ci_low", "ci_high", "attribution", "value_by_template"}]
sorted by |value|, largest first; attribution_{slope,mae,top_overlap,pearson}_{s} (only for an informative gap);
clean_logit_diff_mean, corrupted_logit_diff_mean, gap_*, normalised, items_above_chance.
Under `--exact top:K,sample:S` (`analyses.methods.verified`, AtP*) only each sweep's top K cells by |attribution| and a
random sample of S others are patched exactly: the rest are NaN in the exact arrays, {s}_verified [L, S] (1 = exact)
says which, the rankings list verified cells only, and the summary records exact_mode, verified_cells, cells,
fn_sample, fn_hits, false_negative_rate (+ _ci_low/_ci_high) and `verification` per sweep (in every mode). The role
maps read the same cells: a role whose position was not verified for some prompt is NaN there.
With several templates, a position holds different words in different templates: read a cell with its label, and
`value_by_template` says whether the effect holds for each wording.

By role (issue 17: equal token length is not equal roles). Each template's tokens carry roles (`PromptSet.roles`:
start, item / item+1 ..., relation, final, other); for each role held by one position in every template, each
prompt's patched LD is read at ITS template's position of that role, then normalised as above:
    {s}_role_exact, {s}_role_attribution, {s}_role_ci_low, {s}_role_ci_high   [L, R]   (labels `roles`)
    {s}_role_top = [{"name": "L3 item", "value", ..., "value_by_template"}]
and the per-index effect of each template alone, {s}_exact_by_template [T, L, S] (the heatmap's template menu).
"""

from __future__ import annotations

from typing import Annotated, NotRequired, TypedDict

import numpy as np

from analyses.common import phrases, plots, thresholds
from analyses.common import stats as st
from analyses.common.precision import dtype_name, identity_tolerance
from analyses.common.thresholds import RULES
from analyses.common.types import Analysis, FamilyContext, Figure, PromptSet, Result
from analyses.engine.sweeps import POSITION_SWEEPS
from analyses.methods import shared
from analyses.methods import verified as verify
from analyses.methods.patching_display import (
    agreement_scatter,
    agreement_sentence,
    baseline_sentences,
    hover_text,
    paired_heatmap,
    percent,
    spread_over,
    top_sentence,
    unit_label,
)

NAME = "patching_positions"
TOP_K = 5
WHAT = {"resid_pre": "the residual stream before layer {layer}", "attn_out": "the attention output of layer {layer}",
        "mlp_out": "the MLP output of layer {layer}"}
SHORT = {"resid_pre": "residual stream", "attn_out": "attention output", "mlp_out": "MLP output"}


def position_labels(prompts: PromptSet) -> list[str]:
    """'p:'token'' per position: each template's token there (first item), joined by '|' where they differ; '*'
    marks positions whose token differs between the items of a template (the slot)."""
    firsts = [prompts.template_index.index(t) for t in sorted(set(prompts.template_index))]
    rows = prompts.str_tokens
    labels = []
    for p in range(len(rows[0])):
        tokens = list(dict.fromkeys(rows[i][p] for i in firsts))
        varies = any(len({rows[i][p] for i, t in enumerate(prompts.template_index) if t == template}) > 1
                     for template in set(prompts.template_index))
        labels.append(f"{p}:" + "|".join(f"'{tok}'" for tok in tokens) + ("*" if varies else ""))
    return labels


def compute(model, prompts: PromptSet, context: FamilyContext | None = None) -> Result:
    ctx = shared.context_for(model, context)
    results = shared.sweep_results(ctx, prompts, POSITION_SWEEPS)  # exact where --exact verified, NaN elsewhere
    checked = shared.verification(ctx, prompts, POSITION_SWEEPS)
    positions = position_labels(prompts)
    n_layers = model.cfg.n_layers
    names = np.array([[f"L{layer} pos{p[:p.index(':')]} {p[p.index(':') + 1:]}" for p in positions]
                      for layer in range(n_layers)])
    summary = st.common_summary(results, prompts, n_layers, shared.above_chance(ctx, prompts))
    arrays = {"clean_logit_diff": results.clean_ld, "corrupted_logit_diff": results.corrupted_ld}
    summary.update(verify.summarise(checked))
    for sweep in POSITION_SWEEPS:
        if not checked[sweep].complete:
            arrays[f"{sweep}_verified"] = checked[sweep].verified.astype(np.float32)
        stats = st.sweep_stats(results, sweep, prompts.template_index)
        arrays.update(st.stats_arrays(sweep, stats, results))
        summary[f"{sweep}_top"] = st.ranked(stats, names, TOP_K, results=results, sweep=sweep,
                                            template_index=prompts.template_index)
        summary.update(st.agreement_summary(sweep, stats))
        arrays[f"{sweep}_exact_by_template"] = st.per_template(results, sweep, prompts.template_index,
                                                               stats.normalised).reshape(-1, *stats.exact.shape)
    roles = prompts.shared_roles()
    if roles:
        role_results = by_role(results, prompts, roles)
        role_names = np.array([[f"L{layer} {r}" for r in roles] for layer in range(n_layers)])
        for sweep in POSITION_SWEEPS:
            stats = st.sweep_stats(role_results, sweep, prompts.template_index)
            arrays.update({f"{sweep}_role_exact": stats.exact, f"{sweep}_role_attribution": stats.attribution,
                           f"{sweep}_role_ci_low": stats.ci_low, f"{sweep}_role_ci_high": stats.ci_high})
            if not checked[sweep].complete:  # a role cell is exact where every prompt's position of it was verified
                arrays[f"{sweep}_role_verified"] = np.isfinite(stats.exact).astype(np.float32)
            summary[f"{sweep}_role_top"] = st.ranked(stats, role_names, TOP_K, results=role_results, sweep=sweep,
                                                     template_index=prompts.template_index)
    # A check of the machinery: patching every position before layer 0 IS the clean run. Stated as the largest
    # per-prompt |LD_patched - LD_clean| in logits, so that it holds on any gap, informative or not.
    summary["resid_pre_all_positions_layer0_max_abs_error"] = float(
        np.abs(results.everything_ld - results.clean_ld).max())
    summary["dtype"] = dtype_name(model)
    summary["identity_tolerance"] = identity_tolerance(model)  # what that error may reach in this dtype, logits
    if summary["normalised"]:
        summary["resid_pre_all_positions_layer0_effect"] = float(st.normalise_mean(
            results.everything_ld, results.clean_ld, results.corrupted_ld))
    labels = {"positions": positions, "layers": [f"L{layer}" for layer in range(n_layers)], "roles": roles,
              "templates": list(prompts.templates),
              "template_positions": [[f"{p}:'{tok}'" for p, tok in enumerate(prompts.str_tokens[
                  prompts.template_index.index(t)])] for t in sorted(set(prompts.template_index))]}
    return Result(summary=summary, arrays=arrays, labels=labels)


def by_role(results: st.SweepResults, prompts: PromptSet, roles: list[str]) -> st.SweepResults:
    """The sweeps with the position axis replaced by roles: [L, R, B], each prompt read at its own template's
    position of each role (never one index pooled over templates that hold different tokens there)."""
    index = np.array([prompts.role_positions(r) for r in roles])[None]  # [1, R, B]

    def pick(values: dict) -> dict:
        return {s: np.take_along_axis(values[s], index, axis=1) for s in POSITION_SWEEPS}

    return st.SweepResults(exact=pick(results.exact), attribution=pick(results.attribution),
                           clean_ld=results.clean_ld, corrupted_ld=results.corrupted_ld)


def figures(result: Result) -> list[Figure]:
    positions, layers = result.labels["positions"], result.labels["layers"]
    names = np.array([[f"{layer} pos {p}" for p in positions] for layer in layers])
    out = []
    for sweep in POSITION_SWEEPS:
        title = f"Patching the {SHORT[sweep]}, per layer and position (clean → corrupted)"
        fig = paired_heatmap(result.arrays[f"{sweep}_exact"], result.arrays[f"{sweep}_attribution"], positions,
                             layers, hover_text(result, sweep, names), title, unit_label(result.summary),
                             "position (* differs between prompts)")
        if f"{sweep}_verified" in result.arrays:
            verify.mark_unverified(fig, result.arrays[f"{sweep}_attribution"], result.arrays[f"{sweep}_verified"],
                                   positions, layers)
        out.append(Figure(f"{NAME}-{sweep.replace('_', '-')}", fig))
    roles = result.labels.get("roles") or []
    for sweep in POSITION_SWEEPS if roles else ():
        role_names = np.array([[f"{layer} {r}" for r in roles] for layer in layers])
        lo, hi = result.arrays[f"{sweep}_role_ci_low"], result.arrays[f"{sweep}_role_ci_high"]
        over = spread_over(result.summary)
        hover = np.array([[f"{n}<br>95% spread over {over} {a:.2f} to {b:.2f}" for n, a, b in zip(rn, rl, rh)]
                          for rn, rl, rh in zip(role_names, lo, hi)])
        fig = paired_heatmap(result.arrays[f"{sweep}_role_exact"], result.arrays[f"{sweep}_role_attribution"], roles,
                             layers, hover, f"Patching the {SHORT[sweep]}, per layer and token role (each prompt "
                             "at its own template's position)", unit_label(result.summary), "token role")
        if f"{sweep}_role_verified" in result.arrays:
            verify.mark_unverified(fig, result.arrays[f"{sweep}_role_attribution"],
                                   result.arrays[f"{sweep}_role_verified"], roles, layers)
        out.append(Figure(f"{NAME}-{sweep.replace('_', '-')}-by-role", fig))
        if f"{sweep}_exact_by_template" in result.arrays:
            out.append(Figure(f"{NAME}-{sweep.replace('_', '-')}-per-template", _per_template(result, sweep)))
    out.append(Figure(f"{NAME}-attribution-vs-exact", agreement_scatter(result, POSITION_SWEEPS, names)))
    return out


def _per_template(result: Result, sweep: str):
    """The per-index heatmap of each template alone (its own tokens on the x axis), one at a time by a menu."""
    import plotly.graph_objects as go

    values, layers = result.arrays[f"{sweep}_exact_by_template"], result.labels["layers"]
    columns = result.labels["template_positions"]
    unit = unit_label(result.summary)
    # anchored like every signed map (analyses/common/plots.py): noise stays pale instead of filling the scale
    floor = thresholds.SCALE_FRACTION if unit == "fraction restored" else thresholds.SCALE_LOGITS
    limit = plots.signed_limit(values, floor)
    fig = go.Figure([go.Heatmap(z=z, x=columns[t], y=layers, visible=t == 0, colorscale="RdBu", reversescale=True,
                                zmin=-limit, zmax=limit, zmid=0, colorbar=dict(title=dict(
                                    text=unit + plots.scale_note(limit, floor)))) for t, z in enumerate(values)])
    menu = [dict(label=f"T{t}", method="update", args=[{"visible": [k == t for k in range(len(values))]}])
            for t in range(len(values))]
    fig.update_layout(updatemenus=[dict(buttons=menu, direction="down", x=1.0, y=1.15)],
                      title=dict(text=f"Patching the {SHORT[sweep]} per position, one template at a time", x=0.01),
                      height=max(340, 26 * len(layers) + 170))
    fig.update_yaxes(autorange="reversed", type="category", title_text="layer")
    fig.update_xaxes(type="category", title_text="position: token of this template")
    return fig


def narrative(result: Result) -> list[str]:
    s = result.summary
    sentences = baseline_sentences(s)
    checked = verify.sentence(s)
    sentences += [checked] if checked else []
    for sweep in POSITION_SWEEPS:
        top = dict(s[f"{sweep}_top"][0])
        layer, pos, token = _parse_component(top["name"])
        if token.endswith("*"):
            token = f"{token[:-1]}, the token that differs between the prompts"
        top["name_phrase"] = f"{WHAT[sweep].format(layer=layer)} at position {pos} ({token})"
        sentences.append(top_sentence(top, s, f"the {SHORT[sweep]}"))
    for sweep in POSITION_SWEEPS:
        if not s.get(f"{sweep}_role_top"):  # none, or (--exact top:K) no role verified for every prompt
            continue
        top = dict(s[f"{sweep}_role_top"][0])
        layer, role = top["name"].split(" ", 1)
        top["name_phrase"] = (f"{WHAT[sweep].format(layer=layer[1:])} at the {role} token (each template's own "
                              "position of it)")
        sentence = top_sentence(top, s, f"the {SHORT[sweep]} by token role")
        by_template = top.get("value_by_template") or []
        if by_template and s["normalised"] and phrases.NOTHING_STANDS_OUT.capitalize() not in sentence:
            sentence = sentence[:-1] + " (per template: " + ", ".join(
                f"T{t} {percent(v, True)}" for t, v in enumerate(by_template)) + ")."
        sentences.append(sentence)
    agreement = agreement_sentence(s, POSITION_SWEEPS, SHORT)
    if agreement:
        sentences.append(agreement)
    sentences.append("As a check, patching the whole residual stream before layer 0 reproduces the clean run to within "
                     f"{s['resid_pre_all_positions_layer0_max_abs_error']:.2g} logits per prompt"
                     + (f" (tolerance in {s['dtype']}: {s['identity_tolerance']:g})." if "dtype" in s else "."))
    return sentences


def _parse_component(name: str) -> tuple[int, int, str]:
    """'L3 pos5 ' Monday'*' -> (3, 5, "' Monday'*")."""
    layer, pos, token = name.split(" ", 2)
    return int(layer[1:]), int(pos[3:]), token


PositionAgreement = TypedDict("PositionAgreement", st.agreement_keys(POSITION_SWEEPS))


class PatchingPositionsSummary(st.PatchingCommon, PositionAgreement, st.ExactOptions):
    """Activation patching of the residual stream, attention and MLP outputs at each (layer, position)."""

    resid_pre_top: Annotated[list[st.PatchedEntry], "resid_pre (layer, position) cells by |effect|, largest first, "
                                                    "each named by its layer, position and the position's token, "
                                                    "e.g. L3 pos5 ' Monday'* ('|' between the templates' tokens, * "
                                                    "where it differs between a template's items)"]
    attn_out_top: Annotated[list[st.PatchedEntry], "attention-output (layer, position) cells by |effect|"]
    mlp_out_top: Annotated[list[st.PatchedEntry], "MLP-output (layer, position) cells by |effect|"]
    # by token role (the same role sits at different positions in different templates): where roles are known
    resid_pre_role_top: NotRequired[Annotated[list[st.PatchedEntry], "resid_pre (layer, role) cells by |effect|, "
                                                                     "named 'L3 final'"]]
    attn_out_role_top: NotRequired[Annotated[list[st.PatchedEntry], "attention-output (layer, role) cells"]]
    mlp_out_role_top: NotRequired[Annotated[list[st.PatchedEntry], "MLP-output (layer, role) cells"]]
    resid_pre_all_positions_layer0_max_abs_error: Annotated[float, "check: largest per-prompt |LD(patch every "
                                                                   "position before layer 0) − LD(clean)|, logits"]
    resid_pre_all_positions_layer0_effect: NotRequired[Annotated[float, "that patch's normalised effect (1 = the "
                                                                        "clean run), where the gap is informative"]]
    dtype: Annotated[str, "the dtype the model ran in"]
    identity_tolerance: Annotated[float, "what the check's error may reach in that dtype, logits"]


PATCHING_POSITIONS = Analysis(
    summary_type=PatchingPositionsSummary,
    name=NAME,
    title="Activation patching by layer and position",
    definition="Each cell: the corrupted prompts run with one activation (the residual stream entering the layer, "
               "the attention output or the MLP output, at one position) taken from the clean prompts. "
               + st.NORMALISATION + ", when the gap is informative (" + RULES + "). Intervals: " + st.CLUSTER_INTERVAL
               + ". Right-hand panels: "
               "attribution patching, the first-order estimate (clean − corrupted activation) · gradient of the "
               "logit difference on the corrupted run, from one forward and one backward pass.",
    compute=compute, figures=figures, narrative=narrative,
    description="Which layers and positions carry the information that decides the answer.",
    per_corruption=True, intervenes=True, uses_context=True,
)
