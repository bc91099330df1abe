"""A circuit and its faithfulness curve: keep the top-n nodes, ablate the rest with an ablation matched to the contrast.

Method (Wang et al. 2022 §4, faithfulness; Mueller et al. 2025, "MIB: A Mechanistic Interpretability Benchmark",
the faithfulness curve over circuit sizes, its area, and counterfactual ablation). Nodes: every head (its output z
at every position) and every MLP (its output); the embeddings are always kept. Nodes are ranked by |exact
activation-patching effect| (clean → corrupted, the node's activation at every position; batched engine) and, for
comparison, by attribution patching (its first-order estimate). For each n on GRID, the clean prompts run with every
node outside the top n ablated. The primary ablation (`ablation` in the summary) is resample ablation from the
paired twin of the same corruption (`analyses.methods.mechanism`): the ranking and the evaluation then vary the same
variable. (Mean-ablating over all clean prompts, which share the relation word and differ in the item, removed
the item under the relation contrast: the nodes that carry the item ranked among the noise yet broke the answer.)
A second curve shows mean ablation over the contrast-matched reference set, per template.

    faithfulness(n) = (LD_circuit(n) − LD_all_ablated) / (LD_full − LD_all_ablated)

with LD = logit(clean answer) − logit(corrupted answer) at the final position, each averaged over prompts;
faithfulness(0) = 0 and faithfulness(N) = 1 by construction. Area under the curve: trapezoid over n / N in [0, 1].

Naming. A node whose |patching effect| is under the naming threshold (NAME_FRACTION of the clean − corrupted gap)
never enters a named circuit. The minimal circuit is the smallest n on the grid, among the notable nodes only, with
faithfulness >= FAITHFUL_TARGET; `named` is true only when that exists and both gaps (clean − corrupted, which
ranks; full − all ablated, which normalises) are informative. When the notable nodes do not reach FAITHFUL_TARGET
the text says "the contrast's notable nodes are not sufficient under this ablation"; when nothing is named
`minimal_circuit` is empty and the curve stays for the reader. Faithfulness above 1 names the ablated nodes whose
removal helps the answer: of the ablated nodes with a negative patching effect (at most HELPFUL_CHECKED), those
whose restoring beside the circuit lowers its faithfulness.

Held-out wordings (leave-one-template-out). With two or more templates, for each template t the nodes are ranked
and the minimal circuit chosen on the other templates' prompts (same rules), then its faithfulness is read on
t's prompts alone: `heldout_faithfulness_by_template` (None where the other templates name no circuit), its mean
and spread. `minimal_circuit_faithfulness_by_template`: the named circuit on each template's prompts.

The replication's table: per item, P(correct) of the full model, of the circuit (the notable nodes when none is
named), and of the circuit without its top-ranked MLP. The diagram's edges: path patching (`analyses.methods.paths`)
from
each head of the named circuit to the circuit's later nodes and the logits; none when nothing is named.
Computed once per corruption (the ranking and the ablation depend on it).

Arrays: grid [G]; faithfulness_exact, faithfulness_attribution, faithfulness_mean [G]; ld_exact, ld_attribution,
ld_mean [G, B]; exact_effect, attribution_effect [N] (mean LD change); p_correct_full, p_correct_circuit,
p_correct_without_mlp [n_items]; edge_weight [E]. Labels: nodes [N], items, edge_sender, edge_receiver [E].
Summary: ablation, named, not_named_reason, minimal_circuit (node names; empty unless named),
minimal_circuit_faithfulness, minimal_circuit_faithfulness_by_template, n_notable, name_threshold_logits,
faithfulness_auc, faithfulness_auc_attribution, faithfulness_auc_mean, heldout_*, helpful_ablations,
ranking = [{"name", "value"}], informative, gap_reason, gap_state, ranking_informative, ranking_gap_reason,
ranking_gap_state, corruption.
"""

from __future__ import annotations

from typing import Annotated, NotRequired

import numpy as np

from analyses.common import circuit_diagram, phrases, plots, thresholds
from analyses.common.contract import CorruptionHeader, Count, Ranked
from analyses.common.faithfulness import area, faithfulness, faithfulness_by_template
from analyses.common.thresholds import FAITHFUL_TARGET, FAITHFULNESS_EXCESS
from analyses.common.types import Analysis, FamilyContext, Figure, PromptSet, Result
from analyses.engine.rows import collect_base
from analyses.methods import shared
from analyses.methods.circuit_edges import circuit_edges
from analyses.methods.circuit_search import (
    HELPFUL_CHECKED,
    NOT_SUFFICIENT,
    ablation_sources,
    helpful_ablations,
    lds_and_p,
    leave_one_template_out,
    n_notable,
    not_named_reason,
    patching_effects,
    run_kept_sets,
    size_grid,
    smallest_reaching,
)
from analyses.methods.mechanism import (
    ABLATION_TEXT,
    NAME_FRACTION,
    PRIMARY_ABLATION,
    at_chance_lead,
    gap_text,
    instead,
    item_names,
    node_hook,
    node_name,
    nodes,
    numpy,
)

NAME = "circuit"
LISTED = 10  # nodes named in the narrative; the summary holds the whole circuit


def compute(model, prompts: PromptSet, context: FamilyContext | None = None) -> Result:
    cfg = model.cfg
    ctx = shared.context_for(model, context)
    node_list = nodes(cfg.n_layers, cfg.n_heads)
    N = len(node_list)
    runs, exact_pp, attribution = patching_effects(ctx, prompts, node_list)
    exact = exact_pp.mean(-1)
    clean_ld, corrupted_ld = numpy(runs.clean_ld), numpy(runs.corrupted_ld)
    ranking_gap = thresholds.informative_gap(clean_ld, corrupted_ld)
    order = {"exact": np.argsort(-np.abs(exact), kind="stable"),
             "attribution": np.argsort(-np.abs(attribution), kind="stable")}
    notable = n_notable(exact, ranking_gap.mean, ranking_gap.informative)
    grid = sorted({*size_grid(N), notable})
    hooks = sorted({node_hook(n) for n in node_list})
    base = collect_base(model, prompts.clean_tokens, hooks)
    sources = {kind: ablation_sources(kind, runs, prompts, hooks) for kind in (PRIMARY_ABLATION, "mean")}
    curves, lds = {}, {}
    for key, ranking, kind in (("exact", "exact", PRIMARY_ABLATION), ("attribution", "attribution", PRIMARY_ABLATION),
                               ("mean", "exact", "mean")):
        keep_sets = [set(order[ranking][:n].tolist()) for n in grid]
        lds[key], _ = run_kept_sets(model, base, node_list, keep_sets, sources[kind], prompts)
    full_final = base.cache[f"blocks.{cfg.n_layers - 1}.hook_resid_post"][None, :, -1]
    full_ld, full_p = (x[0] for x in lds_and_p(model, full_final, prompts))
    ablated = lds["exact"][0]  # n = 0: every node ablated
    gap = thresholds.informative_gap(full_ld, ablated)
    curves = {key: faithfulness(lds[key], full_ld, (lds[key][0])) for key in lds}
    size = smallest_reaching(grid, curves["exact"], notable)
    named = bool(gap.informative and ranking_gap.informative and size is not None)
    circuit = order["exact"][:size if named else notable].tolist()
    templates = sorted(set(prompts.template_index))
    by_template = (faithfulness_by_template(lds["exact"][grid.index(size)], full_ld, ablated, prompts.template_index)
                   if named else [])
    excess = named and curves["exact"][grid.index(size)] > 1 + FAITHFULNESS_EXCESS
    helpful = helpful_ablations(model, base, node_list, sources[PRIMARY_ABLATION], prompts, circuit, exact,
                                full_ld, ablated) if excess else []
    heldout = leave_one_template_out(model, base, node_list, sources[PRIMARY_ABLATION], prompts, exact_pp, grid,
                                     full_ld, ablated, clean_ld, corrupted_ld) if len(templates) > 1 else None
    mlps = [i for i in circuit if node_list[i][0] == "mlp"]
    _, table_p = run_kept_sets(model, base, node_list, [set(circuit), set(circuit) - set(mlps[:1])],
                               sources[PRIMARY_ABLATION], prompts, p_correct=True)
    # A circuit that is not named gets no edges: path patching every one of its heads would be the costliest step
    # of the analysis, spent on a diagram that says "not a finding".
    weights, senders, receivers = (circuit_edges(ctx, prompts, [node_list[i] for i in circuit]) if named
                                   else ([], [], []))
    items = item_names(prompts)
    arrays = {"grid": np.array(grid), "faithfulness_exact": curves["exact"],
              "faithfulness_attribution": curves["attribution"], "faithfulness_mean": curves["mean"],
              "ld_exact": lds["exact"], "ld_attribution": lds["attribution"], "ld_mean": lds["mean"],
              "exact_effect": exact, "attribution_effect": attribution,
              "full_logit_diff": full_ld, "p_correct_full": per_item(full_p, prompts, len(items)),
              "p_correct_circuit": per_item(table_p[0], prompts, len(items)),
              "p_correct_without_mlp": per_item(table_p[1], prompts, len(items)), "edge_weight": np.array(weights)}
    names = [node_name(n) for n in node_list]
    reason = not_named_reason(gap, ranking_gap, notable, size)
    summary = {
        "family": prompts.family, "corruption": prompts.corruption, "n_prompts": prompts.n_prompts,
        "n_nodes": N, "n_layers": int(cfg.n_layers), "n_heads": int(cfg.n_heads), "target": FAITHFUL_TARGET,
        "ablation": PRIMARY_ABLATION, "ablation_text": ABLATION_TEXT[PRIMARY_ABLATION].format(
            corruption=prompts.corruption),
        "named": named, "not_named_reason": reason,
        "informative": gap.informative, "gap_reason": gap.reason or gap_text(gap, len(full_ld)),
        "gap_state": gap.state,
        "ranking_informative": ranking_gap.informative,
        "ranking_gap_reason": ranking_gap.reason or gap_text(ranking_gap, len(clean_ld)),
        "ranking_gap_state": ranking_gap.state,
        "name_threshold_logits": NAME_FRACTION * abs(ranking_gap.mean), "n_notable": notable,
        "full_logit_diff_mean": float(full_ld.mean()), "all_ablated_logit_diff_mean": float(ablated.mean()),
        "minimal_circuit": [names[i] for i in circuit] if named else [],
        "minimal_circuit_faithfulness": float(curves["exact"][grid.index(size)]) if named else None,
        "minimal_circuit_faithfulness_by_template": by_template,
        "minimal_circuit_reaches_target": named,
        "notable_nodes_faithfulness": float(curves["exact"][grid.index(notable)]),
        "faithfulness_auc": area(grid, curves["exact"]),
        "faithfulness_auc_attribution": area(grid, curves["attribution"]),
        "faithfulness_auc_mean": area(grid, curves["mean"]),
        "helpful_ablations": helpful,
        "removed_mlp": names[mlps[0]] if mlps else "",
        "ranking": [{"name": names[i], "value": float(exact[i])} for i in order["exact"][:10]],
        "items_above_chance": shared.above_chance(ctx, prompts),
        **(heldout or {}),
    }
    # undefined values (a gap of exactly 0) are left out: the store refuses NaN
    summary = {k: v for k, v in summary.items()
               if v is not None and not (isinstance(v, float) and not np.isfinite(v))}
    labels = {"nodes": names, "items": items, "edge_sender": senders, "edge_receiver": receivers}
    return Result(summary=summary, arrays=arrays, labels=labels)


def per_item(values: np.ndarray, prompts: PromptSet, n_items: int) -> np.ndarray:
    """[B] -> [n_items]: mean over the prompts whose correct answer is that item (NaN where none)."""
    answers = np.array(prompts.answer_items())
    return np.array([values[answers == i].mean() if (answers == i).any() else np.nan for i in range(n_items)])


def figures(result: Result) -> list[Figure]:
    s, a = result.summary, result.arrays
    grid = a["grid"].tolist()
    ablation = s["ablation"]
    series = {f"ranked by exact patching, {ablation} ablation": a["faithfulness_exact"],
              f"ranked by attribution patching, {ablation} ablation": a["faithfulness_attribution"]}
    if "faithfulness_mean" in a:
        series["ranked by exact patching, contrast-matched mean ablation"] = a["faithfulness_mean"]
    curve = plots.lines(grid, series, f"Faithfulness of the top-n nodes, the rest ablated ({s['n_nodes']} nodes)",
                        "nodes kept (n)", "faithfulness")
    curve.add_hline(y=s["target"], line=dict(dash="dot", color="grey"))
    if s["n_notable"]:
        curve.add_vline(x=s["n_notable"], line=dict(dash="dash", color="grey"))  # beyond it: under the threshold
    kept = "circuit" if _named(s) else "notable nodes"
    table = plots.bars(result.labels["items"], {"full model": a["p_correct_full"], kept: a["p_correct_circuit"],
                                                f"{kept} without {s['removed_mlp'] or 'an MLP'}":
                                                a["p_correct_without_mlp"]},
                       f"P(correct) per answer item: full model, {kept}, {kept} without its top MLP", "P(correct)")
    return [Figure(f"{NAME}-faithfulness", curve), Figure(f"{NAME}-p-correct", table),
            Figure(f"{NAME}-diagram", circuit_diagram.node_circuit(result, _named(result.summary), NAME_FRACTION))]


def _named(s: dict) -> bool:
    """Older results have no `named`: they named a circuit when both gaps were informative."""
    if "named" in s:
        return bool(s["named"])
    return bool(s["informative"] and s["ranking_informative"])


def narrative(result: Result) -> list[str]:
    s = result.summary
    ablation = s["ablation_text"]
    sentences = [*at_chance_lead(s),
                 f"Nodes ({s['n_nodes']}: every head and MLP) were ranked by exact activation patching on the "
                 f"{s['corruption']} corruption; all but the top n were ablated on the clean prompts by {ablation}."]
    if not s["informative"] or "faithfulness_auc" not in s:
        sentences.append(f"Ablating every node barely changes the LD ({s['gap_reason']}), so faithfulness is "
                         "not defined meaningfully and no circuit is named.")
        return sentences
    if not s["ranking_informative"]:
        sentences.append(phrases.not_informative(
            s["ranking_gap_state"], s["ranking_gap_reason"],
            "the order of the nodes is not a finding, so no circuit is named; the curve shows what keeping the top n "
            f"of that order does (area {s['faithfulness_auc']:.2f})", runs=f"{phrases.RUNS} that rank the nodes"))
        return sentences
    if not _named(s):
        notable = s["n_notable"]
        if notable:
            sentences.append(f"The {notable} node{'s' if notable > 1 else ''} whose patching effect reaches the "
                             f"naming threshold ({s['name_threshold_logits']:.2f} logits, {100 * NAME_FRACTION:.0f}% "
                             f"of the gap) keep {100 * s['notable_nodes_faithfulness']:.0f}% of the LD: "
                             f"{NOT_SUFFICIENT}, so no circuit is named (target {100 * s['target']:.0f}%).")
        else:
            sentences.append(phrases.nothing_stands_out(
                f"No node's patching effect reaches the naming threshold ({phrases.share(NAME_FRACTION)} of the gap)",
                " and no circuit is named"))
        sentences.append(f"Area under the faithfulness curve (every node, for the reader): "
                         f"{s['faithfulness_auc']:.2f}.")
        return sentences
    size = len(s["minimal_circuit"])
    listed = ", ".join(s["minimal_circuit"][:LISTED])
    if size > LISTED:
        listed += f", and {size - LISTED} more (all in the summary)"
    grid = [int(n) for n in result.arrays["grid"]]
    below = grid[grid.index(size) - 1]
    sizes = f"{size}" if below == size - 1 else f"{size} (the size grid steps from {below} to {size} here)"
    by_template = s["minimal_circuit_faithfulness_by_template"]
    per = (" (per template: " + ", ".join(f"T{t} " + (f"{100 * v:.0f}%" if v is not None else "undefined")
                                          for t, v in enumerate(by_template)) + ")"
           if len(by_template) > 1 else "")
    sentences.append(f"The smallest circuit of notable nodes reaching {100 * s['target']:.0f}% faithfulness has "
                     f"{sizes} node{'s' if size > 1 else ''} ({listed}) and keeps "
                     f"{100 * s['minimal_circuit_faithfulness']:.0f}% of the full model's LD over the ablated one"
                     f"{per}{instead(s)}.")
    if s["minimal_circuit_faithfulness"] > 1 + FAITHFULNESS_EXCESS:
        helpful = s["helpful_ablations"]
        if helpful:
            listed = ", ".join(f"{e['name']} (restoring it lowers faithfulness by {-100 * e['value']:.0f} points)"
                               for e in helpful[:3])
            sentences.append(f"Faithfulness above 100%: ablated nodes push against the answer, and removing them "
                             f"helps: {listed}.")
        else:
            sentences.append(f"Faithfulness above 100%: none of the {HELPFUL_CHECKED} ablated nodes with the most "
                             f"negative patching effects accounts for {100 * NAME_FRACTION:.0f}% of the excess alone.")
    held = [v for v in s.get("heldout_faithfulness_by_template", []) if v is not None]
    if "heldout_faithfulness_mean" in s:
        n_t = len(s["heldout_faithfulness_by_template"])
        sentences.append(f"Found on all templates but one and tested on the held-out one, circuits keep "
                         f"{100 * s['heldout_faithfulness_mean']:.0f}% on average (from "
                         f"{100 * s['heldout_faithfulness_min']:.0f}% to {100 * s['heldout_faithfulness_max']:.0f}%; "
                         f"{len(held)} of {n_t} folds name a circuit).")
    sentences.append(f"Area under the faithfulness curve: {s['faithfulness_auc']:.2f} with the exact ranking, "
                     f"{s['faithfulness_auc_attribution']:.2f} with attribution patching's ranking"
                     + (f", {s['faithfulness_auc_mean']:.2f} with contrast-matched mean ablation"
                        if "faithfulness_auc_mean" in s else "") + ".")
    return sentences


class CircuitSummary(CorruptionHeader):
    """The minimal circuit: nodes ranked by patching, kept in order until faithfulness reaches the target."""

    n_nodes: Annotated[Count, "heads and MLPs ranked"]
    n_heads: Annotated[Count, "heads per layer"]
    target: Annotated[float, "the faithfulness a minimal circuit must reach"]
    ablation: Annotated[str, "the ablation of every node outside the kept set (resample: its value on the paired "
                             "twin, MIB's counterfactual ablation)"]
    ablation_text: Annotated[str, "the ablation in words, as the page states it"]
    named: Annotated[bool, "a circuit is named: both gaps informative and the notable nodes reach the target"]
    not_named_reason: Annotated[str, "why no circuit is named (empty when one is)"]
    # the gap here is full − all-ablated, not the clean − corrupted one of contract.InformativeGap: keys of its own
    informative: Annotated[bool, "the full − all-ablated gap (which normalises faithfulness) is informative"]
    gap_reason: Annotated[str, "why it is or is not"]
    gap_state: Annotated[str, "state of the full − all-ablated gap (analyses/common/thresholds.py)"]
    ranking_informative: Annotated[bool, "the clean − corrupted gap that ranks the nodes is informative"]
    ranking_gap_reason: Annotated[str, "why the ranking gap is or is not informative"]
    ranking_gap_state: Annotated[str, "state of the clean − corrupted gap that ranks the nodes"]
    name_threshold_logits: NotRequired[Annotated[float, "|patching effect| a node needs to enter a named circuit"]]
    n_notable: Annotated[Count, "nodes whose |patching effect| reaches that threshold"]
    full_logit_diff_mean: Annotated[float, "mean LD of the full model, logits"]
    all_ablated_logit_diff_mean: Annotated[float, "mean LD with every node ablated, logits"]
    minimal_circuit: Annotated[list[str], "node names of the named circuit; empty when `named` is false"]
    # faithfulness values are left out where undefined (a gap of exactly 0): the store refuses NaN
    minimal_circuit_faithfulness: NotRequired[Annotated[float, "the named circuit's faithfulness"]]
    minimal_circuit_faithfulness_by_template: Annotated[list[float | None], "the named circuit's faithfulness on "
                                                                            "each template alone (empty when none)"]
    minimal_circuit_reaches_target: Annotated[bool, "the named circuit reaches the target"]
    notable_nodes_faithfulness: NotRequired[Annotated[float, "faithfulness when every notable node is kept"]]
    faithfulness_auc: NotRequired[Annotated[float, "area under the faithfulness curve, nodes ranked by exact "
                                                   "patching"]]
    faithfulness_auc_attribution: NotRequired[Annotated[float, "the same, ranked by attribution patching"]]
    faithfulness_auc_mean: NotRequired[Annotated[float, "the same, with contrast-matched mean ablation"]]
    helpful_ablations: Annotated[list[Ranked], "ablated nodes whose restoring lowers faithfulness (value: the "
                                               "change, negative)"]
    removed_mlp: Annotated[str, "the circuit's top-ranked MLP, removed in the replication table ('' if none)"]
    ranking: Annotated[list[Ranked], "nodes by exact patching effect (value: mean LD change), top 10"]
    # leave-one-template-out, with two or more templates
    heldout_faithfulness_by_template: NotRequired[Annotated[list[float | None], "the circuit found on the other "
                                                                                "templates, on this one (null "
                                                                                "where they name none)"]]
    heldout_circuit_by_template: NotRequired[Annotated[list[list[str]], "the circuit each fold found"]]
    heldout_faithfulness_mean: NotRequired[Annotated[float, "mean of the finite held-out faithfulness values"]]
    heldout_faithfulness_min: NotRequired[Annotated[float, "their smallest"]]
    heldout_faithfulness_max: NotRequired[Annotated[float, "their largest"]]


CIRCUIT = Analysis(
    summary_type=CircuitSummary,
    name=NAME,
    title="Circuit and faithfulness",
    definition="Nodes (heads and MLPs) ranked by exact patching effect (and by attribution patching); keep the top "
               "n, ablate the rest on the clean prompts by resample ablation from the paired twin of the same "
               "corruption (MIB's counterfactual ablation; a second curve: mean over a reference set varying only the "
               "contrasted variable, per template). faithfulness(n) = (LD_circuit − LD_all_ablated) / "
               "(LD_full − LD_all_ablated), LD = logit(clean answer) − logit(corrupted answer) (Wang et al. 2022; "
               "MIB 2025). Only nodes at ≥ 10% of the gap enter a named circuit; held-out: leave one template out.",
    compute=compute, figures=figures, narrative=narrative,
    description="How much of the behaviour the top components keep, and how they connect.",
    part="mechanism", per_corruption=True, intervenes=True, uses_context=True,
)
