"""A circuit and its faithfulness curve: keep the top-n nodes, mean-ablate the rest.

Method (Wang et al. 2022 §4, faithfulness; Mueller et al. 2025, "MIB: A Mechanistic Interpretability Benchmark",
the faithfulness curve over circuit sizes and its area). Nodes: every head (its output z at every position) and
every MLP (its output); the embeddings are always kept. Nodes are ranked by |exact activation-patching effect|
(clean → corrupted, the node's activation at every position; batched engine) and, for comparison, by attribution
patching (its first-order estimate). For each n on GRID, the clean prompts run with every node outside the top n
replaced by its mean over the clean prompts (per position):

    faithfulness(n) = (LD_circuit(n) − LD_all_ablated) / (LD_full − LD_all_ablated)

with LD = logit(clean answer) − logit(corrupted answer) at the final position, each averaged over prompts;
faithfulness(0) = 0 and faithfulness(N) = 1 by construction. Area under the curve: trapezoid over n / N in [0, 1].
Minimal circuit: the smallest n on the grid with faithfulness >= TARGET (exact ranking). The replication's table:
per item, P(correct) of the full model, of the circuit, and of the circuit without its top-ranked MLP.
The diagram's edges: path patching (`analyses.paths`) from each head of the minimal circuit to the circuit's later
nodes and the logits (an edge drawn when it carries >= the naming threshold of the gap); none for a circuit that is
not named.
Faithfulness is reported only when LD_full − LD_all_ablated is an informative gap (`analyses.mechanism`), and a
circuit is named only when the clean − corrupted gap that ranks the nodes is informative too (else the ranking is
noise: `ranking_informative`).
Computed once per corruption (the ranking depends on it).

Arrays: grid [G]; faithfulness_exact, faithfulness_attribution [G]; ld_exact, ld_attribution [G, B];
exact_effect, attribution_effect [N] (mean LD change); p_correct_full, p_correct_circuit, p_correct_without_mlp
[n_items]; edge_weight [E]. Labels: nodes [N], items, edge_sender, edge_receiver [E].
Summary: minimal_circuit (node names), minimal_circuit_faithfulness, faithfulness_auc, faithfulness_auc_attribution,
ranking = [{"node", "value"}], informative, gap_reason, ranking_informative, ranking_gap_reason, corruption.
"""

from __future__ import annotations

import numpy as np
import plotly.graph_objects as go
import torch

from analyses import intervention as engine
from analyses import paths, plots, shared
from analyses.mechanism import (
    NAME_FRACTION,
    at_chance_lead,
    informative_gap,
    instead,
    item_names,
    node_edit,
    node_hook,
    node_name,
    nodes,
    numpy,
)
from analyses.metrics import answer_pair
from analyses.plots import LAYOUT
from analyses.types import Analysis, FamilyContext, Figure, PromptSet, Result

NAME = "circuit"
TARGET = 0.8
DENSE_UP_TO = 16  # every circuit size up to this, then a geometric grid up to all nodes
LISTED = 10  # nodes named in the narrative; the summary holds the whole circuit


def size_grid(n_nodes: int) -> list[int]:
    dense = list(range(min(n_nodes, DENSE_UP_TO) + 1))
    sparse = np.unique(np.round(np.geomspace(max(DENSE_UP_TO, 1), n_nodes, 12)).astype(int)).tolist()
    return sorted({*dense, *(n for n in sparse if n <= n_nodes), n_nodes})


def patching_effects(ctx: FamilyContext, prompts: PromptSet, node_list) -> tuple[np.ndarray, np.ndarray,
                                                                                 tuple[bool, str]]:
    """[N] exact and attribution patching effect (mean LD change, clean → corrupted) of each node, all positions,
    and whether the clean − corrupted gap they change is informative (else the ranking is noise). A head's exact
    effect is its cell of the family's shared z sweep (the same patch `patching_heads` made); only the MLPs, each
    patched at every position at once, are run here."""
    model, runs = ctx.model, shared.runs(ctx, prompts)
    ranking_gap = informative_gap(numpy(runs.clean_ld), numpy(runs.corrupted_ld))
    S = runs.corrupted_tokens.shape[1]
    z = shared.exact(ctx, prompts, ("z",))["z"]  # [L, H, B]
    mlps = [layer for kind, layer, _ in node_list if kind == "mlp"]
    mlp_ld = engine.patched_logit_diffs(model, runs, [engine.Patch(layer, tuple(("mlp_out", p) for p in range(S)))
                                                      for layer in mlps])
    mlp_row = {layer: i for i, layer in enumerate(mlps)}
    patched = torch.stack([z[layer, head] if kind == "head" else mlp_ld[mlp_row[layer]]
                           for kind, layer, head in node_list])  # [N, B]
    exact = numpy(patched.mean(-1) - runs.corrupted_ld.mean())
    attribution = shared.attribution(ctx, prompts, ("z", "mlp_out"))  # [L, units, B]: additive over positions
    attr = [attribution["z"][layer, head] if kind == "head" else attribution["mlp_out"][layer].sum(0)
            for kind, layer, head in node_list]
    return exact, numpy(torch.stack(attr).mean(-1)), ranking_gap


def circuit_rows(node_list, keep_sets, clean_cache) -> list[engine.Row]:
    """One row per kept set: every node outside it replaced by its mean over the clean prompts."""
    means = {name: value.mean(0) for name, value in clean_cache.items()}
    return [engine.Row(tuple(node_edit(node, means[node_hook(node)]) for i, node in enumerate(node_list)
                             if i not in keep)) for keep in keep_sets]


def _lds_and_p(model, final: torch.Tensor, prompts: PromptSet) -> tuple[np.ndarray, np.ndarray]:
    """[n, B, d] -> LD [n, B] and P(correct) [n, B]."""
    pos, neg = (t.to(final.device) for t in answer_pair(prompts, "clean_vs_corrupted"))
    logits = engine.final_logits(model, final)
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


def compute(model, prompts: PromptSet, context: FamilyContext | None = None) -> Result:
    cfg = model.cfg
    ctx = shared.context_for(model, context)
    node_list = nodes(cfg.n_layers, cfg.n_heads)
    N = len(node_list)
    exact, attribution, (ranking_informative, ranking_reason) = patching_effects(ctx, prompts, node_list)
    order = {"exact": np.argsort(-np.abs(exact), kind="stable"), "attribution": np.argsort(-np.abs(attribution),
                                                                                           kind="stable")}
    grid = size_grid(N)
    hooks = sorted({node_hook(n) for n in node_list})
    base = engine.collect_base(model, prompts.clean_tokens, hooks)
    clean_cache = {h: base.cache[h] for h in hooks}
    keep_sets = [set(order[r][:n].tolist()) for r in ("exact", "attribution") for n in grid]
    # rows that ablate the same early nodes share those blocks (the engine's prefix sharing; same numbers)
    final = engine.run_rows_sharing_prefixes(model, base, circuit_rows(node_list, keep_sets, clean_cache))
    ld, p = _lds_and_p(model, final, prompts)
    ld = {"exact": ld[:len(grid)], "attribution": ld[len(grid):]}
    full_final = base.cache[f"blocks.{cfg.n_layers - 1}.hook_resid_post"][None, :, -1]
    full_ld, full_p = (x[0] for x in _lds_and_p(model, full_final, prompts))
    ablated = ld["exact"][0]  # n = 0: every node mean-ablated
    informative, reason = informative_gap(full_ld, ablated)
    curves = {r: faithfulness(ld[r], full_ld, ablated) for r in ld}
    reached = [i for i, f in enumerate(curves["exact"]) if f >= TARGET]
    size = grid[reached[0]] if reached else N
    circuit = order["exact"][:size].tolist()
    mlps = [i for i in circuit if node_list[i][0] == "mlp"]
    table_rows = circuit_rows(node_list, [set(circuit), set(circuit) - set(mlps[:1])], clean_cache)
    table_final = engine.run_rows_sharing_prefixes(model, base, table_rows)
    _, table_p = _lds_and_p(model, table_final, prompts)
    # A circuit that is not named (either gap is noise) gets no edges: path patching every one of its heads would
    # be the costliest step of the analysis, spent on a diagram that says "not a finding".
    named = informative and ranking_informative
    weights, senders, receivers = (circuit_edges(ctx, prompts, [node_list[i] for i in circuit]) if named
                                   else ([], [], []))
    items = item_names(prompts)
    arrays = {"grid": np.array(grid), "faithfulness_exact": curves["exact"],
              "faithfulness_attribution": curves["attribution"], "ld_exact": ld["exact"],
              "ld_attribution": ld["attribution"], "exact_effect": exact, "attribution_effect": attribution,
              "full_logit_diff": full_ld, "p_correct_full": per_item(full_p, prompts, len(items)),
              "p_correct_circuit": per_item(table_p[0], prompts, len(items)),
              "p_correct_without_mlp": per_item(table_p[1], prompts, len(items)), "edge_weight": np.array(weights)}
    names = [node_name(n) for n in node_list]
    summary = {
        "family": prompts.family, "corruption": prompts.corruption, "n_prompts": prompts.n_prompts,
        "n_nodes": N, "n_layers": int(cfg.n_layers), "n_heads": int(cfg.n_heads), "target": TARGET,
        "informative": informative, "gap_reason": reason,
        "ranking_informative": ranking_informative, "ranking_gap_reason": ranking_reason,
        "full_logit_diff_mean": float(full_ld.mean()), "all_ablated_logit_diff_mean": float(ablated.mean()),
        "minimal_circuit": [names[i] for i in circuit],
        "minimal_circuit_faithfulness": float(curves["exact"][grid.index(size)]),
        "minimal_circuit_reaches_target": bool(reached),
        "faithfulness_auc": area(grid, curves["exact"]),
        "faithfulness_auc_attribution": area(grid, curves["attribution"]),
        "removed_mlp": names[mlps[0]] if mlps else "",
        "ranking": [{"node": names[i], "value": float(exact[i])} for i in order["exact"][:10]],
        "day7_above_chance": shared.above_chance(ctx, prompts),
    }
    # undefined when mean-ablating everything leaves the LD exactly unchanged: left out (the store refuses NaN)
    summary = {k: v for k, v in summary.items() if not (isinstance(v, float) and not np.isfinite(v))}
    labels = {"nodes": names, "items": items, "edge_sender": senders, "edge_receiver": receivers}
    return Result(summary=summary, arrays=arrays, labels=labels)


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
    ok, _ = informative_gap(numpy(ps.clean_ld), numpy(ps.corrupted_ld))
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
    curve = plots.lines(grid, {"ranked by exact patching": a["faithfulness_exact"],
                               "ranked by attribution patching": a["faithfulness_attribution"]},
                        f"Faithfulness of the top-n nodes, the rest mean-ablated ({s['n_nodes']} nodes)",
                        "nodes kept (n)", "faithfulness")
    curve.add_hline(y=s["target"], line=dict(dash="dot", color="grey"))
    table = plots.bars(result.labels["items"], {"full model": a["p_correct_full"], "circuit": a["p_correct_circuit"],
                                                f"circuit without {s['removed_mlp'] or 'an MLP'}":
                                                a["p_correct_without_mlp"]},
                       "P(correct) per answer item: full model, circuit, circuit without its top MLP", "P(correct)")
    return [Figure(f"{NAME}-faithfulness", curve), Figure(f"{NAME}-p-correct", table),
            Figure(f"{NAME}-diagram", diagram(result))]


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
    shown = [*s["minimal_circuit"], "logits"]
    xy = [place(n) for n in shown]
    fig.add_trace(go.Scatter(x=[p[0] for p in xy], y=[p[1] for p in xy], mode="markers+text", text=shown,
                             textposition="top center", marker=dict(size=14, color="black"), showlegend=False,
                             hoverinfo="text"))
    fig.update_xaxes(title_text="layer", range=[-0.5, s["n_layers"] + 0.5])
    fig.update_yaxes(title_text="head (MLPs on top)", showticklabels=False)
    named = s["informative"] and s.get("ranking_informative", True)
    title = ("The minimal circuit; edges: path-patching effect (fraction of the gap)" if named else
             "Not a finding (see the text): the top nodes of a ranking by a gap that barely differs")
    fig.update_layout(title=dict(text=title, x=0.01), height=420, **LAYOUT)
    return fig


def narrative(result: Result) -> list[str]:
    s = result.summary
    sentences = [*at_chance_lead(s),
                 f"Nodes ({s['n_nodes']}: every head and MLP) were ranked by exact activation patching on the "
                 f"{s['corruption']} corruption; all but the top n were mean-ablated on the clean prompts."]
    if not s["informative"] or "faithfulness_auc" not in s:
        sentences.append(f"Mean-ablating every node barely changes the LD ({s['gap_reason']}), so faithfulness is "
                         "not defined meaningfully and no circuit is named.")
        return sentences
    if not s.get("ranking_informative", True):
        sentences.append(f"The ranking rests on a clean − corrupted gap that barely differs under this corruption "
                         f"({s['ranking_gap_reason']}): the order of the nodes is noise, so no circuit is named as a "
                         f"finding; the curve shows what keeping the top n of that order does (area "
                         f"{s['faithfulness_auc']:.2f}).")
        return sentences
    size = len(s["minimal_circuit"])
    listed = ", ".join(s["minimal_circuit"][:LISTED])
    if size > LISTED:
        listed += f", and {size - LISTED} more (all in the summary)"
    if s["minimal_circuit_reaches_target"]:
        grid = [int(n) for n in result.arrays["grid"]]
        below = grid[grid.index(size) - 1]
        sizes = f"{size}" if below == size - 1 else f"{size} (the size grid steps from {below} to {size} here)"
        sentences.append(f"The smallest circuit on the grid reaching {100 * s['target']:.0f}% faithfulness has "
                         f"{sizes} node{'s' if size > 1 else ''} ({listed}) and keeps "
                         f"{100 * s['minimal_circuit_faithfulness']:.0f}% of the full model's LD over the ablated one"
                         f"{instead(s)}.")
    else:
        sentences.append(f"No circuit on the grid short of every node reaches {100 * s['target']:.0f}% faithfulness.")
    sentences.append(f"Area under the faithfulness curve: {s['faithfulness_auc']:.2f} with the exact ranking, "
                     f"{s['faithfulness_auc_attribution']:.2f} with attribution patching's ranking.")
    return sentences


CIRCUIT = Analysis(
    name=NAME,
    title="Circuit and faithfulness",
    definition="Nodes (heads and MLPs) ranked by exact patching effect (and by attribution patching); keep the top "
               "n, mean-ablate the rest on the clean prompts. faithfulness(n) = (LD_circuit − LD_all_ablated) / "
               "(LD_full − LD_all_ablated), LD = logit(clean answer) − logit(corrupted answer) (Wang et al. 2022; "
               "MIB 2025).",
    compute=compute, figures=figures, narrative=narrative,
    description="How much of the behaviour the top components keep, and how they connect.",
    part="mechanism", per_corruption=True, intervenes=True, uses_context=True,
)
