"""Edge-level circuits: EAP and EAP-IG over every edge, exact edge patching of the top edges, and circuits on MIB's
grid of edge fractions with counterfactual ablation, their faithfulness, CPR and CMD.

Method. The graph and the engine: `analyses.engine` (senders: the embeddings, each head, each MLP; receivers:
each head's q, each key/value head's k and v, each MLP's input, the logits; parallel-attention models have no
head -> same-layer-MLP edges). On the family's day corruption:
  * scores: EAP (Syed et al. 2023) and EAP-IG (Hanna et al. 2024; `--steps N` interpolation steps of the embeddings
    from the corrupted to the clean prompts, STEPS = 5 by default, 1 = EAP; recorded as `ig_steps`) estimate, per
    edge, LD(edge carries its clean value on the corrupted run) − LD_corrupted; exact edge patching measures it
    for the EXACT_EDGES edges with the largest |EAP-IG|, and the agreement of each estimate with it is stated as
    slope through the origin, mean absolute error, top-k overlap (`analyses.common.stats.agreement`);
  * circuits (MIB, Mueller et al. 2025): at each edge fraction f of FRACTIONS the top max(1, round(f·E)) edges by
    |EAP-IG| ("greedy"), the same pruned to the edges on a path from the input to the logits ("logit-connected"),
    a random order (the baseline) and, beside them, a node-level circuit (the top f of the nodes by |sum of their
    outgoing EAP-IG scores|, every edge between kept nodes, the input and the logits kept). The clean prompts run
    with every removed edge carrying its corrupted activation (`edge_engine.run_edges`);
        faithfulness(C) = (mean LD_C − mean LD_corrupted) / (mean LD_clean − mean LD_corrupted)
    CPR = area under faithfulness over f in [FRACTIONS[0], 1] (trapezoid, higher better; 0.999 for a curve at 1);
    CMD = area between the curve and 1 (lower better);
  * held out: with several templates, scores from every template but the last and the greedy circuits evaluated on
    the last template's prompts only.
LD = logit(clean answer) − logit(corrupted answer) at the final position. Edge values are fractions of the clean −
corrupted gap when it is informative (`analyses.common.thresholds`), else raw LD changes and no edge is named.

Arrays: fractions [F]; faithfulness_{greedy,connected,random,nodes,heldout} [F] (heldout absent with one template;
all absent when the gap is not informative: faithfulness is then not evaluated);
edges_kept_{greedy,connected} [F]; eap, eap_ig [E] (every edge, the order of labels.edges); exact [K], exact_eap,
exact_eap_ig [K] (the patched edges, labels.exact_edges); diagram_score [D]. Labels: edges [E], exact_edges [K],
diagram_sender, diagram_receiver, diagram_input [D].
Documents: circuit-eap-ig-greedy-<f>.json per fraction, MIB's circuit JSON (`analyses.methods.mib_circuit`).
"""

from __future__ import annotations

from types import SimpleNamespace
from typing import Annotated, NotRequired, TypedDict

import numpy as np
import plotly.graph_objects as go

from analyses import engine as ee
from analyses.common import circuit_diagram, phrases, plots
from analyses.common.contract import (
    CorruptionHeader,
    Count,
    InformativeGap,
    LogitDiffMeans,
    NormalisedValues,
    Ranked,
)
from analyses.common.metrics import answer_pair, does_the_task
from analyses.common.plots import LAYOUT
from analyses.common.stats import agreement
from analyses.common.thresholds import FAITHFUL_TARGET
from analyses.common.types import Analysis, FamilyContext, Figure, PromptSet, Result
from analyses.methods.edge_circuit_grid import (
    FRACTIONS,
    cmd,
    cpr,
    ee_node,
    evaluate,
    greedy,
    held_out,
    logit_connected,
    node_circuit,
    receiver_nodes,
    sizes,
)
from analyses.methods.edge_scoring import STEPS, edge_scores, exact_edges
from analyses.methods.mechanism import NAME_FRACTION, at_chance_lead, informative_gap, instead
from analyses.methods.mib_circuit import circuit_document

NAME = "edge_circuits"
EXACT_EDGES = 24  # edges patched exactly, by |EAP-IG|: the check of the estimates
TOP_K = 10  # edges listed in the summary
DIAGRAM_EDGES = 40  # at most this many edges drawn (the largest |score|), so the diagram stays readable
RANDOM_SEED = 0


def compute(model, prompts: PromptSet, steps: int | None = None, context: FamilyContext | None = None) -> Result:
    """`steps`: EAP-IG's interpolation steps; by default the run's `--steps` (the context's `ig_steps`), else STEPS.
    One step is EAP itself (the gradient at the twin's activations only)."""
    steps = steps if steps is not None else (context.ig_steps if context is not None else STEPS)
    if steps < 1:
        raise ValueError(f"EAP-IG needs at least 1 interpolation step (got {steps})")
    es = ee.edge_set(model)
    pos, neg = answer_pair(prompts, "clean_vs_corrupted")
    clean, corrupted = prompts.clean_tokens, prompts.corrupted_tokens
    s = edge_scores(model, es, clean, corrupted, pos, neg, steps)
    informative, reason = informative_gap(s["clean_ld"], s["corrupted_ld"])
    gap = float(s["clean_ld"].mean() - s["corrupted_ld"].mean())
    scale = gap if informative else 1.0
    valid = list(zip(*np.nonzero(es.valid)))
    order = sorted(range(len(valid)), key=lambda i: -abs(s["eap_ig"][valid[i]]))
    patched = [valid[i] for i in order[:EXACT_EDGES]]
    exact = exact_edges(model, es, s["pair"], patched) / scale
    eap, eap_ig = s["eap"] / scale, s["eap_ig"] / scale
    agree = {m: agreement(SimpleNamespace(exact=exact, attribution=np.array([x[e] for e in patched])))
             for m, x in (("eap", eap), ("eap_ig", eap_ig))}

    ks = sizes(es.n_edges)
    rng = np.random.default_rng(RANDOM_SEED)
    random_scores = np.where(es.valid, rng.random(es.valid.shape), 0.0)
    node_scores = eap_ig.sum(1)  # a node's attribution: the sum of its outgoing edges' (first order)
    circuits = {"greedy": [greedy(es, eap_ig, k) for k in ks]}
    circuits["connected"] = [logit_connected(es, c) for c in circuits["greedy"]]
    circuits["random"] = [greedy(es, random_scores, k) for k in ks]
    circuits["nodes"] = [node_circuit(es, node_scores, f) for f in FRACTIONS]
    curves = {}
    # Faithfulness is a ratio to the clean − corrupted gap: at noise level it is not meaningful (a random model's gap
    # of 0.002 logits is itself carried by a few edges, and greedy circuits "reach" 100% of it), so no circuit is
    # evaluated then; the scores and the export remain.
    if informative:
        flat = [c for name in circuits for c in circuits[name]]
        values = evaluate(model, es, clean, corrupted, pos, neg, flat)
        curves = {name: values[i * len(ks):(i + 1) * len(ks)] for i, name in enumerate(circuits)}
    heldout, heldout_reason, held_template = (held_out(model, prompts, es, s["eap_ig_per_prompt"]) if informative
                                              else (None, "the clean − corrupted gap is not informative", None))
    if heldout is not None:
        curves["heldout"] = heldout

    edge_names = [es.edge_name(int(u), int(v)) for u, v in valid]
    arrays = {"fractions": np.array(FRACTIONS), "eap": np.array([eap[e] for e in valid]),
              "eap_ig": np.array([eap_ig[e] for e in valid]), "exact": exact,
              "exact_eap": np.array([eap[e] for e in patched]), "exact_eap_ig": np.array([eap_ig[e] for e in patched]),
              "clean_logit_diff": s["clean_ld"], "corrupted_logit_diff": s["corrupted_ld"],
              **{f"faithfulness_{k}": v for k, v in curves.items()},
              **{f"edges_kept_{k}": np.array([c.sum() for c in circuits[k]]) for k in ("greedy", "connected")}}
    exact_of = {e: float(x) for e, x in zip(patched, exact)}
    named = [{"name": es.edge_name(int(u), int(v)), "value": exact_of[(u, v)]} for u, v in patched
             if informative and abs(exact_of[(u, v)]) >= NAME_FRACTION]
    top = [{"name": es.edge_name(int(u), int(v)), "value": float(eap_ig[u, v]), "eap": float(eap[u, v]),
            **({"exact": exact_of[(u, v)]} if (u, v) in exact_of else {})} for u, v in patched[:TOP_K]]
    reached = [i for i, f in enumerate(curves.get("greedy", [])) if np.isfinite(f) and f >= FAITHFUL_TARGET]
    chosen = reached[0] if (reached and informative) else None
    diagram_edges = _diagram_edges(es, eap_ig, circuits["greedy"][chosen]) if chosen is not None else []
    arrays["diagram_score"] = np.array([eap_ig[u, v] for u, v in diagram_edges])
    summary = {
        "family": prompts.family, "corruption": prompts.corruption, "n_prompts": prompts.n_prompts,
        "n_layers": es.n_layers, "n_heads": es.n_heads, "n_key_value_heads": es.n_kv,
        "edge_set": "parallel attention and MLP (no head -> same-layer MLP edges)" if es.parallel else "sequential",
        "n_edges": es.n_edges, "n_senders": len(es.senders), "n_receivers": len(es.receivers), "ig_steps": steps,
        "informative": informative, "gap_reason": reason, "normalised": informative,
        "value_unit": "fraction of the clean − corrupted gap" if informative else "change in LD (logits)",
        "clean_logit_diff_mean": float(s["clean_ld"].mean()),
        "corrupted_logit_diff_mean": float(s["corrupted_ld"].mean()),
        "name_threshold": NAME_FRACTION, "top_edges": top, "named_edges": named, "exact_edges_patched": len(patched),
        "fractions": list(FRACTIONS), "edges_kept": ks, "target": FAITHFUL_TARGET,
        "items_above_chance": does_the_task(model, prompts), "heldout_reason": heldout_reason,
    }
    for method, numbers in agree.items():
        summary.update({f"{method}_{k}": v for k, v in numbers.items() if np.isfinite(v)})
    for name, curve in curves.items():
        if np.all(np.isfinite(curve)):
            summary[f"cpr_{name}"], summary[f"cmd_{name}"] = cpr(curve), cmd(curve)
    if held_template is not None:
        summary["heldout_template"] = held_template
    if chosen is not None:
        summary.update(diagram_fraction=FRACTIONS[chosen], diagram_faithfulness=float(curves["greedy"][chosen]),
                       diagram_edges_kept=ks[chosen])
    documents = {f"circuit-eap-ig-greedy-{f:g}.json": circuit_document(
        es, eap_ig, c, {"method": "EAP-IG greedy top-k", "edge_fraction": f, "family": prompts.family,
                        "corruption": prompts.corruption, "score_unit": summary["value_unit"]})
        for f, c in zip(FRACTIONS, circuits["greedy"])}
    labels = {"edges": edge_names, "exact_edges": [es.edge_name(int(u), int(v)) for u, v in patched],
              "diagram_sender": [ee_node(es.senders[u]) for u, _ in diagram_edges],
              "diagram_receiver": [sorted(receiver_nodes(es, v))[0] if es.receivers[v][0] != "logits" else "logits"
                                   for _, v in diagram_edges],
              "diagram_input": [es.receivers[v][0] for _, v in diagram_edges]}
    return Result(summary=summary, arrays=arrays, labels=labels, documents=documents)


def _diagram_edges(es: ee.EdgeSet, scores: np.ndarray, kept: np.ndarray) -> list[tuple[int, int]]:
    edges = list(zip(*np.nonzero(kept)))
    return sorted(edges, key=lambda e: -abs(scores[e]))[:DIAGRAM_EDGES]


CURVE_NAMES = {"greedy": "EAP-IG, greedy top-k", "connected": "EAP-IG, logit-connected",
               "random": "random edges (baseline)", "nodes": "node circuit (EAP-IG node scores)",
               "heldout": "EAP-IG greedy, held-out template"}


def figures(result: Result) -> list[Figure]:
    a, s = result.arrays, result.summary
    series = {label: a[f"faithfulness_{k}"] for k, label in CURVE_NAMES.items() if f"faithfulness_{k}" in a}
    title = (f"Faithfulness over MIB's circuit sizes ({s['n_edges']} edges; the rest carry the corrupted activations)"
             if series else "Faithfulness not evaluated: the clean − corrupted gap is not informative (see the text)")
    curve = plots.lines([100 * f for f in a["fractions"].tolist()], series, title,
                        "edges kept (% of all; nodes: % of nodes)", "faithfulness")
    curve.update_xaxes(type="log")
    curve.add_hline(y=1.0, line=dict(dash="dot", color="grey"))
    unit = "fraction of gap" if s["normalised"] else "Δ LD"
    scatter = go.Figure()
    for key, label in (("exact_eap_ig", "EAP-IG"), ("exact_eap", "EAP")):
        scatter.add_trace(go.Scatter(x=a["exact"], y=a[key], mode="markers", name=label,
                                     text=result.labels["exact_edges"], hoverinfo="text+x+y"))
    bound = float(np.nanmax(np.abs(np.concatenate([a["exact"], a["exact_eap_ig"], a["exact_eap"], [1e-9]]))))
    scatter.add_trace(go.Scatter(x=[-bound, bound], y=[-bound, bound], mode="lines", name="y = x",
                                 line=dict(dash="dot", color="grey")))
    scatter.update_layout(title=dict(text=f"Attribution vs exact edge patching ({s['exact_edges_patched']} edges)",
                                     x=0.01), xaxis_title=f"exact ({unit})", yaxis_title=f"estimate ({unit})",
                          height=420, **LAYOUT)
    return [Figure(f"{NAME}-faithfulness", curve), Figure(f"{NAME}-agreement", scatter),
            Figure(f"{NAME}-diagram", circuit_diagram.edge_circuit(result))]


def narrative(result: Result) -> list[str]:
    s = result.summary
    sentences = [*at_chance_lead(s),
                 f"Edges ({s['n_edges']}, {s['edge_set']}) were scored by EAP and EAP-IG ({s['ig_steps']} steps) on "
                 f"the {s['corruption']} corruption; the {s['exact_edges_patched']} edges with the largest |EAP-IG| "
                 "were also patched exactly."]
    if not s["informative"]:
        sentences.append(phrases.not_informative(
            None, s["gap_reason"],
            "scores are raw changes in LD, faithfulness is not meaningful and no edge or circuit is named"))
        return sentences
    if "eap_ig_slope" in s:
        sentences.append(f"Against exact edge patching EAP-IG has slope {s['eap_ig_slope']:.2f}, mean error "
                         f"{s['eap_ig_mae']:.3f} of the gap and top-5 overlap {100 * s['eap_ig_top_overlap']:.0f}%; "
                         f"EAP: slope {s.get('eap_slope', float('nan')):.2f}, overlap "
                         f"{100 * s.get('eap_top_overlap', float('nan')):.0f}%.")
    if s["named_edges"]:
        listed = ", ".join(f"{e['name']} ({100 * e['value']:+.0f}%)" for e in s["named_edges"][:5])
        sentences.append(f"Edges that alone move the LD by at least {100 * s['name_threshold']:.0f}% of the gap "
                         f"when patched exactly: {listed}{instead(s)}.")
    else:
        sentences.append(phrases.nothing_stands_out(
            f"No single edge moves the LD by {phrases.share(s['name_threshold'])} of the gap when patched exactly",
            " edge by edge"))
    if "cpr_greedy" in s:
        parts = [f"{CURVE_NAMES[k]} {s[f'cpr_{k}']:.2f} / {s[f'cmd_{k}']:.2f}" for k in CURVE_NAMES
                 if f"cpr_{k}" in s]
        sentences.append("CPR / CMD (MIB; CPR higher and CMD lower is better, 0.999 / 0 for a perfect curve): "
                         + "; ".join(parts) + ".")
    if "diagram_fraction" in s:
        sentences.append(f"The smallest greedy circuit reaching {100 * s['target']:.0f}% faithfulness keeps "
                         f"{100 * s['diagram_fraction']:g}% of the edges ({s['diagram_edges_kept']}) with faithfulness "
                         f"{s['diagram_faithfulness']:.2f}.")
    else:
        sentences.append(f"No greedy circuit on the grid reaches {100 * s['target']:.0f}% faithfulness.")
    return sentences


class ScoredEdge(Ranked):
    eap: NotRequired[Annotated[float, "the edge's EAP score (value is EAP-IG)"]]
    exact: NotRequired[Annotated[float, "its exact edge-patching effect, where patched"]]


def _curve_keys() -> dict:
    """CPR / CMD of each faithfulness curve that is finite (edge_circuit_grid.cpr, cmd)."""
    return {f"{measure}_{curve}": NotRequired[Annotated[float, f"{words} of the {curve} curve"]]
            for curve in ("greedy", "connected", "random", "nodes", "heldout")
            for measure, words in (("cpr", "circuit performance ratio (area under the curve)"),
                                   ("cmd", "circuit-model distance (area between the curve and 1)"))}


def _agreement_keys() -> dict:
    """How well EAP and EAP-IG estimate the exact edge effects (stats.agreement), where finite."""
    return {f"{method}_{name}": NotRequired[Annotated[float, f"{method}: {name} against exact edge patching"]]
            for method in ("eap", "eap_ig") for name in ("slope", "mae", "top_overlap", "pearson")}


EdgeMeasures = TypedDict("EdgeMeasures", {**_curve_keys(), **_agreement_keys()})


class EdgeCircuitsSummary(CorruptionHeader, InformativeGap, LogitDiffMeans, NormalisedValues, EdgeMeasures):
    """Edge attribution (EAP, EAP-IG) checked against exact edge patching; greedy edge circuits and faithfulness."""

    n_heads: Annotated[Count, "query heads per layer"]
    n_key_value_heads: Annotated[Count, "key/value heads per layer"]
    edge_set: Annotated[str, "sequential, or parallel attention and MLP (no head -> same-layer MLP edges)"]
    n_edges: Annotated[Count, "edges scored"]
    n_senders: Annotated[Count, "senders (input, heads, MLPs)"]
    n_receivers: Annotated[Count, "receivers (q/k/v of heads, MLPs, logits)"]
    ig_steps: Annotated[Count, "integration steps of EAP-IG"]
    name_threshold: Annotated[float, "|exact effect| an edge needs to be named, fraction of the gap"]
    top_edges: Annotated[list[ScoredEdge], "edges of the edge set by |EAP-IG|, largest first, named "
                                           "'a0.h1->m2' (sender->receiver); exact where patched"]
    named_edges: Annotated[list[ScoredEdge], "edges whose exact patching reaches name_threshold of an "
                                             "informative gap"]
    exact_edges_patched: Annotated[Count, "edges checked by exact patching"]
    fractions: Annotated[list[float], "the edge fractions of the faithfulness curves"]
    edges_kept: Annotated[list[int], "edges kept at each fraction"]
    target: Annotated[float, "the faithfulness a circuit must reach"]
    heldout_reason: Annotated[str, "why there is no held-out curve ('' when there is one)"]
    heldout_template: NotRequired[Annotated[int, "the template the held-out curve is evaluated on"]]
    diagram_fraction: NotRequired[Annotated[float, "the edge fraction of the drawn circuit (the first reaching "
                                                   "the target)"]]
    diagram_faithfulness: NotRequired[Annotated[float, "its faithfulness"]]
    diagram_edges_kept: NotRequired[Annotated[int, "its edges"]]


EDGE_CIRCUITS = Analysis(
    summary_type=EdgeCircuitsSummary,
    name=NAME,
    title="Edge circuits (EAP-IG, MIB's faithfulness)",
    definition="Every edge (embeddings, heads and MLPs into later heads' q/k/v, MLPs and the logits) scored by EAP "
               "and EAP-IG and, for the top edges, by exact edge patching; circuits of MIB's edge fractions keep the "
               "top edges, every other edge carrying its corrupted activation; faithfulness = (LD_circuit − "
               "LD_corrupted) / (LD_clean − LD_corrupted), CPR = its area, CMD = the area between it and 1 (Syed et "
               "al. 2023; Hanna et al. 2024; Mueller et al. 2025).",
    compute=compute, figures=figures, narrative=narrative,
    description="The circuit at the level of edges, with the benchmark's numbers, exportable to other tools.",
    part="mechanism", intervenes=True, reads_options=True,  # the context carries --steps (EAP-IG's steps)
)
