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
import plotly.graph_objects as go
import torch

from analyses.common import phrases, plots, thresholds
from analyses.common.contract import CorruptionHeader, Count, Ranked
from analyses.common.metrics import answer_pair
from analyses.common.plots import LAYOUT
from analyses.common.thresholds import FAITHFUL_TARGET, FAITHFULNESS_EXCESS
from analyses.common.types import Analysis, FamilyContext, Figure, PromptSet, Result
from analyses.engine.prefixes import run_rows_sharing_prefixes
from analyses.engine.readout import final_logits
from analyses.engine.rows import Row, collect_base
from analyses.engine.sweeps import Patch, Runs, patched_logit_diffs
from analyses.methods import paths, shared
from analyses.methods.mechanism import (
    ABLATION_TEXT,
    NAME_FRACTION,
    PRIMARY_ABLATION,
    ablation_source,
    at_chance_lead,
    instead,
    item_names,
    node_edit,
    node_hook,
    node_name,
    nodes,
    numpy,
)

NAME = "circuit"
DENSE_UP_TO = 16  # every circuit size up to this, then a geometric grid up to all nodes
LISTED = 10  # nodes named in the narrative; the summary holds the whole circuit
HELPFUL_CHECKED = 5  # ablated nodes with a negative patching effect tested when faithfulness exceeds 1
NOT_SUFFICIENT = "the contrast's notable nodes are not sufficient under this ablation"


def size_grid(n_nodes: int) -> list[int]:
    dense = list(range(min(n_nodes, DENSE_UP_TO) + 1))
    sparse = np.unique(np.round(np.geomspace(max(DENSE_UP_TO, 1), n_nodes, 12)).astype(int)).tolist()
    return sorted({*dense, *(n for n in sparse if n <= n_nodes), n_nodes})


def patching_effects(ctx: FamilyContext, prompts: PromptSet, node_list):
    """The runs, [N, B] exact patching change of LD per prompt (clean → corrupted, all positions) and [N] the
    attribution estimate (mean over prompts). A head's exact effect is its cell of the family's shared z sweep (the
    same patch `patching_heads` made); only the MLPs, each patched at every position at once, are run here."""
    model, runs = ctx.model, shared.runs(ctx, prompts)
    S = runs.corrupted_tokens.shape[1]
    z = shared.exact(ctx, prompts, ("z",))["z"]  # [L, H, B]
    mlps = [layer for kind, layer, _ in node_list if kind == "mlp"]
    mlp_ld = patched_logit_diffs(model, runs, [Patch(layer, tuple(("mlp_out", p) for p in range(S)))
                                                      for layer in mlps])
    mlp_row = {layer: i for i, layer in enumerate(mlps)}
    patched = torch.stack([z[layer, head] if kind == "head" else mlp_ld[mlp_row[layer]]
                           for kind, layer, head in node_list])  # [N, B]
    exact = numpy(patched - runs.corrupted_ld)  # [N, B]
    attribution = shared.attribution(ctx, prompts, ("z", "mlp_out"))  # [L, units, B]: additive over positions
    attr = [attribution["z"][layer, head] if kind == "head" else attribution["mlp_out"][layer].sum(0)
            for kind, layer, head in node_list]
    return runs, exact, numpy(torch.stack(attr).mean(-1))


def circuit_rows(node_list, keep_sets, sources) -> list[Row]:
    """One row per kept set: every node outside it replaced by its part of `sources` (hook name -> the ablation's
    values, [B, ...] per prompt or [...] shared)."""
    return [Row(tuple(node_edit(node, sources[node_hook(node)]) for i, node in enumerate(node_list)
                             if i not in keep)) for keep in keep_sets]


def ablation_sources(kind: str, runs: Runs, prompts: PromptSet, hooks) -> dict[str, torch.Tensor]:
    """hook -> what replaces its nodes under ablation `kind`, matched to the contrast of `prompts.corruption`."""
    return {h: ablation_source(kind, runs.clean[h], runs.corrupted[h], prompts.corruption, prompts.template_index)
            for h in hooks}


def _lds_and_p(model, final: torch.Tensor, prompts: PromptSet) -> tuple[np.ndarray, np.ndarray]:
    """[n, B, d] -> LD [n, B] and P(correct) [n, B]."""
    pos, neg = (t.to(final.device) for t in answer_pair(prompts, "clean_vs_corrupted"))
    logits = final_logits(model, final)
    n = final.shape[0]
    pick = torch.stack([pos, neg])[:, None, :, None].expand(2, n, -1, 1)
    ld = logits.gather(-1, pick[0])[..., 0] - logits.gather(-1, pick[1])[..., 0]
    p = torch.softmax(logits.float(), -1).gather(-1, pick[0])[..., 0]
    return numpy(ld), numpy(p)


def faithfulness(ld: np.ndarray, full: np.ndarray, ablated: np.ndarray) -> np.ndarray:
    """[G, B] -> [G]: (mean LD − mean LD_all_ablated) / (mean LD_full − mean LD_all_ablated)."""
    den = float(full.mean() - ablated.mean())
    return (ld.mean(-1) - ablated.mean()) / den if den != 0 else np.full(ld.shape[0], np.nan)


def area(grid: list[int], curve: np.ndarray) -> float:
    x = np.asarray(grid, dtype=float) / grid[-1]
    return float(np.sum((x[1:] - x[:-1]) * (curve[1:] + curve[:-1]) / 2))


def n_notable(effect: np.ndarray, gap: float, informative: bool) -> int:
    """How many nodes (all at the top of the |effect| order) reach the naming threshold; none on a noise gap."""
    return int((np.abs(effect) >= NAME_FRACTION * abs(gap)).sum()) if informative else 0


def smallest_reaching(grid: list[int], curve: np.ndarray, limit: int) -> int | None:
    """The smallest n <= limit on the grid (n >= 1) whose faithfulness reaches FAITHFUL_TARGET, or None."""
    return next((n for n, f in zip(grid, curve) if 1 <= n <= limit and np.isfinite(f) and f >= FAITHFUL_TARGET), None)


def _run(model, base, node_list, keep_sets, sources, prompts):
    # rows that ablate the same early nodes share those blocks (the engine's prefix sharing; same numbers)
    final = run_rows_sharing_prefixes(model, base, circuit_rows(node_list, keep_sets, sources))
    return _lds_and_p(model, final, prompts)


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
        lds[key], _ = _run(model, base, node_list, keep_sets, sources[kind], prompts)
    full_final = base.cache[f"blocks.{cfg.n_layers - 1}.hook_resid_post"][None, :, -1]
    full_ld, full_p = (x[0] for x in _lds_and_p(model, full_final, prompts))
    ablated = lds["exact"][0]  # n = 0: every node ablated
    gap = thresholds.informative_gap(full_ld, ablated)
    curves = {key: faithfulness(lds[key], full_ld, (lds[key][0])) for key in lds}
    size = smallest_reaching(grid, curves["exact"], notable)
    named = bool(gap.informative and ranking_gap.informative and size is not None)
    circuit = order["exact"][:size if named else notable].tolist()
    template = np.asarray(prompts.template_index)
    templates = sorted(set(prompts.template_index))
    by_template = ([_finite(faithfulness(lds["exact"][grid.index(size)][None, template == t], full_ld[template == t],
                                         ablated[template == t])[0]) for t in templates] if named else [])
    excess = named and curves["exact"][grid.index(size)] > 1 + FAITHFULNESS_EXCESS
    helpful = helpful_ablations(model, base, node_list, sources[PRIMARY_ABLATION], prompts, circuit, exact,
                                full_ld, ablated) if excess else []
    heldout = leave_one_template_out(model, base, node_list, sources[PRIMARY_ABLATION], prompts, exact_pp, grid,
                                     full_ld, ablated, clean_ld, corrupted_ld) if len(templates) > 1 else None
    mlps = [i for i in circuit if node_list[i][0] == "mlp"]
    _, table_p = _run(model, base, node_list, [set(circuit), set(circuit) - set(mlps[:1])],
                      sources[PRIMARY_ABLATION], prompts)
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
    reason = _not_named_reason(gap, ranking_gap, notable, size)
    summary = {
        "family": prompts.family, "corruption": prompts.corruption, "n_prompts": prompts.n_prompts,
        "n_nodes": N, "n_layers": int(cfg.n_layers), "n_heads": int(cfg.n_heads), "target": FAITHFUL_TARGET,
        "ablation": PRIMARY_ABLATION, "ablation_text": ABLATION_TEXT[PRIMARY_ABLATION].format(
            corruption=prompts.corruption),
        "named": named, "not_named_reason": reason,
        "informative": gap.informative, "gap_reason": gap.reason or _gap_text(gap, len(full_ld)),
        "gap_state": gap.state,
        "ranking_informative": ranking_gap.informative,
        "ranking_gap_reason": ranking_gap.reason or _gap_text(ranking_gap, len(clean_ld)),
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


def _finite(value) -> float | None:
    """A JSON-safe number (the results store refuses NaN; a template whose gap is exactly 0 has none)."""
    return float(value) if np.isfinite(value) else None


def _gap_text(gap: thresholds.Gap, n: int) -> str:
    return f"mean gap {gap.mean:+.2f} logits over {n} prompts"


def _not_named_reason(gap, ranking_gap, notable: int, size) -> str:
    if not gap.informative:
        return "ablating every node barely changes the LD: faithfulness is not defined meaningfully"
    if not ranking_gap.informative:
        return f"the clean − corrupted gap that ranks the nodes is not informative ({ranking_gap.state})"
    if notable == 0:
        return "no node's patching effect reaches the naming threshold"
    if size is None:
        return NOT_SUFFICIENT
    return ""


def helpful_ablations(model, base, node_list, sources, prompts, circuit, exact, full_ld, ablated) -> list[dict]:
    """Faithfulness above 1: which ablated nodes push against the answer. Of the ablated nodes with the most
    negative patching effects, each is restored beside the circuit; those that lower faithfulness are returned as
    {"name", "value": faithfulness(circuit + node) − faithfulness(circuit)} (negative, at least NAME_FRACTION of the
    excess over 1), largest drop first."""
    outside = [i for i in np.argsort(exact, kind="stable") if i not in circuit and exact[i] < 0][:HELPFUL_CHECKED]
    if not outside:
        return []
    keep = [set(circuit)] + [set(circuit) | {int(i)} for i in outside]
    ld, _ = _run(model, base, node_list, keep, sources, prompts)
    f = faithfulness(ld, full_ld, ablated)
    drops = [(node_name(node_list[i]), float(f[k + 1] - f[0])) for k, i in enumerate(outside)]
    floor = NAME_FRACTION * (f[0] - 1)  # a node is named when it accounts for >= 10% of the excess over 1
    return [{"name": n, "value": v} for n, v in sorted(drops, key=lambda d: d[1]) if v <= -floor]


def leave_one_template_out(model, base, node_list, sources, prompts, exact_pp, grid, full_ld, ablated, clean_ld,
                           corrupted_ld) -> dict:
    """Discover on all templates but one (ranking, notable nodes, minimal circuit), evaluate on the held-out one."""
    template = np.asarray(prompts.template_index)
    names = [node_name(n) for n in node_list]
    held_values, held_circuits = [], []
    for t in sorted(set(prompts.template_index)):
        discover, held = template != t, template == t
        effect = exact_pp[:, discover].mean(-1)
        gap = thresholds.informative_gap(clean_ld[discover], corrupted_ld[discover])
        notable = n_notable(effect, gap.mean, gap.informative)
        order = np.argsort(-np.abs(effect), kind="stable")
        sizes = [n for n in grid if n <= notable] or [0]
        ld, _ = _run(model, base, node_list, [set(order[:n].tolist()) for n in sizes], sources, prompts)
        found = smallest_reaching(sizes, faithfulness(ld[:, discover], full_ld[discover], ablated[discover]),
                                  notable)
        if found is None:
            held_values.append(None)
            held_circuits.append([])
            continue
        value = faithfulness(ld[sizes.index(found)][None, held], full_ld[held], ablated[held])[0]
        held_values.append(float(value) if np.isfinite(value) else None)
        held_circuits.append([names[i] for i in order[:found]])
    finite = [v for v in held_values if v is not None]
    out = {"heldout_faithfulness_by_template": held_values, "heldout_circuit_by_template": held_circuits}
    if finite:
        out.update(heldout_faithfulness_mean=float(np.mean(finite)), heldout_faithfulness_min=float(min(finite)),
                   heldout_faithfulness_max=float(max(finite)))
    return out


def per_item(values: np.ndarray, prompts: PromptSet, n_items: int) -> np.ndarray:
    """[B] -> [n_items]: mean over the prompts whose correct answer is that item (NaN where none)."""
    answers = np.array(prompts.answer_items())
    return np.array([values[answers == i].mean() if (answers == i).any() else np.nan for i in range(n_items)])


def circuit_edges(ctx: FamilyContext, prompts: PromptSet, circuit) -> tuple[list[float], list[str], list[str]]:
    """Path-patching weight of each edge from a circuit head to a later circuit node or the logits (fraction of the
    clean − corrupted gap; raw LD change when the gap is not informative). None on a model without resid_mid
    (parallel attention and MLP), where paths cannot be measured: the diagram then shows nodes only. A sender that
    `path_patching` already followed is not followed again (the family's shared path effects)."""
    model = ctx.model
    senders = [(layer, head) for kind, layer, head in circuit if kind == "head"]
    if not senders or paths.without_resid_mid(model):
        return [], [], []
    ps = shared.path_setup(ctx, prompts)
    effects = {k: numpy(v.mean(-1)) for k, v in shared.path_effects(ctx, prompts, senders).items()}
    ok = thresholds.informative_gap(numpy(ps.clean_ld), numpy(ps.corrupted_ld)).informative
    scale = float((ps.clean_ld - ps.corrupted_ld).mean()) if ok else 1.0
    kv = model.cfg.n_heads // effects["v"].shape[2]
    weights, out_s, out_r = [], [], []
    for k, (layer, head) in enumerate(senders):
        targets = [("logits", effects["logits"][k])]
        for kind, rl, rh in circuit:
            if kind == "head" and rl > layer:
                values = [effects["q"][k, rl, rh], effects["k"][k, rl, rh // kv], effects["v"][k, rl, rh // kv]]
                targets.append((node_name((kind, rl, rh)), max(values, key=abs)))
            elif kind == "mlp" and rl >= layer:
                targets.append((node_name((kind, rl, rh)), effects["mlp"][k, rl]))
        for name, value in targets:
            weights.append(float(value) / scale)
            out_s.append(node_name(("head", layer, head)))
            out_r.append(name)
    return weights, out_s, out_r


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
            Figure(f"{NAME}-diagram", diagram(result))]


def _named(s: dict) -> bool:
    """Older results have no `named`: they named a circuit when both gaps were informative."""
    if "named" in s:
        return bool(s["named"])
    return bool(s["informative"] and s["ranking_informative"])


def diagram(result: Result) -> go.Figure:
    """Circuit nodes by layer (x) and head index (y; MLPs on top), edges by path-patching weight."""
    s, a, lab = result.summary, result.arrays, result.labels

    def place(name: str) -> tuple[float, float]:
        if name == "logits":
            return s["n_layers"], s["n_heads"] / 2
        if name.startswith("MLP"):
            return int(name[3:]) + 0.5, s["n_heads"] + 0.5
        layer, head = name[1:].split("H")
        return int(layer), int(head)

    fig = go.Figure()
    for sender, receiver, w in zip(lab["edge_sender"], lab["edge_receiver"], a["edge_weight"]):
        if abs(w) < NAME_FRACTION:
            continue
        (x0, y0), (x1, y1) = place(sender), place(receiver)
        fig.add_trace(go.Scatter(x=[x0, x1], y=[y0, y1], mode="lines", showlegend=False, hoverinfo="text",
                                 text=f"{sender} → {receiver}: {w:.2f}",
                                 line=dict(width=1 + 6 * min(abs(w), 1.0),
                                           color="firebrick" if w > 0 else "royalblue")))
    named = _named(s)
    shown = [*(s["minimal_circuit"] if named else []), "logits"]
    xy = [place(n) for n in shown]
    fig.add_trace(go.Scatter(x=[p[0] for p in xy], y=[p[1] for p in xy], mode="markers+text", text=shown,
                             textposition="top center", marker=dict(size=14, color="black"), showlegend=False,
                             hoverinfo="text"))
    fig.update_xaxes(title_text="layer", range=[-0.5, s["n_layers"] + 0.5])
    fig.update_yaxes(title_text="head (MLPs on top)", showticklabels=False)
    title = ("The minimal circuit; edges: path-patching effect (fraction of the gap)" if named else
             "Not a finding (see the text): no circuit is named under this contrast")
    fig.update_layout(title=dict(text=title, x=0.01), height=420, **LAYOUT)
    return fig


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
