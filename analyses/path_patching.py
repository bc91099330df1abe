"""Path patching from the top heads by activation patching: which later inputs each one's output reaches.

What the main numbers are: DIRECT EDGES by DENOISING (`analyses.methods.paths`): the sender's clean output delivered to
one receiver of the corrupted run, every node in between frozen at the corrupted run, everything after the receiver
recomputed. Beside them: each sender's direct edges summed against its total effect (patching its output alone; the
rest is the share carried by no single edge), the variant in which MLPs recompute (Wang et al. 2022's choice: other
heads frozen, MLPs not), and noising (the sender's corrupted output delivered along one path of the clean run), whose
reading beside denoising says which paths are needed, sufficient, or both (`analyses.methods.necessity`: AND / OR
structure,
on the clean answer's own logit).

Method: `analyses.methods.paths` (Wang et al. 2022, §3.1; Goldowsky-Dill et al. 2023). Senders: the SENDERS heads with
the
largest |effect| of exact z patching (clean → corrupted, every position), computed here with the batched engine.
For each sender, its clean output is delivered along one path only: directly to the logits, or into the query,
key or value input of each later head, or the input of each MLP at or after its layer; every other path stays
at the corrupted run. Effect = (LD_path − LD_corrupted), as a fraction of the clean − corrupted gap when that gap
is informative (`analyses.methods.mechanism.informative_gap`), else in logits with no edge named.
Computed once per corruption of the family (`per_corruption`).

Arrays (K senders, L layers, H heads, H_kv key/value heads): logits [K]; q [K, L, H]; k, v [K, L, H_kv]; mlp [K, L]
(NaN where the receiver does not lie after the sender); sender_patching [K] (z patching effect); edge_sum [K] (the
sum of a sender's direct edges); recompute_{logits,q,k,v} (MLPs recomputing; no MLP receivers); noising_{logits,q,k,
v,mlp} (share of the gap the path's noising REMOVES: (LD_clean − LD_path) / gap); answer_denoising_*, answer_noising_*
(the same two on logit(clean answer), shares of its clean − corrupted gap).
Labels: senders [K], heads [L][H], kv_heads [L][H_kv].
Summary: senders = [{"name": "L9H1", "value" (z patching effect)}]; top_edges = [{"name": "L9H1 → L10H3.q",
"sender": "L9H1", "receiver": "L10H3.q" | "MLP9" | "logits", "value"}] by |value|; recompute_top_edges likewise (MLPs
recomputing); noising_top_edges = [{"name", "sender", "receiver", "value" (share removed by noising), "denoising"}];
edge_sums = [{"name" (the sender), "total", "edge_sum", "unexplained" (total − edge_sum)}];
and_paths, or_paths, both_paths = [{"name": "L0H1 → MLP0", "noising", "denoising"}] (`analyses.methods.necessity`);
answer_informative, answer_gap_reason; measured (what the main numbers are, in words); informative, gap_reason,
normalised.
"""

from __future__ import annotations

from typing import Annotated

import numpy as np

from analyses.common import phrases, plots, thresholds
from analyses.common.contract import (
    CorruptionHeader,
    GapState,
    InformativeGap,
    LogitDiffMeans,
    Named,
    Necessity,
    NormalisedValues,
    Ranked,
    RankedPath,
)
from analyses.common.types import Analysis, FamilyContext, Figure, PromptSet, Result
from analyses.methods import necessity, paths, shared
from analyses.methods.attribution import head_name
from analyses.methods.mechanism import NAME_FRACTION, at_chance_lead, gap_state, informative_gap, instead, numpy

NAME = "path_patching"
SENDERS = 3  # senders per family: each costs one batched pass per later receiver
TOP_K = 10


def top_heads_by_patching(ctx: FamilyContext, prompts: PromptSet, k: int) -> tuple[list[tuple[int, int]], np.ndarray]:
    """The k heads with the largest |mean z-patching change of LD| and those changes [k] (logits); the z patching
    is the family's shared one (`patching_heads` computed it)."""
    heads = shared.head_ranking(ctx, prompts)[:k]
    change = shared.head_z_change(ctx, prompts)  # [L, H]
    return heads, np.array([change[h] for h in heads])


MEASURED = ("direct edges by denoising: the sender's clean output reaches one receiver of the corrupted run, every "
            "node in between frozen at the corrupted run, everything after the receiver recomputed")
KINDS = ("logits", "q", "k", "v", "mlp")


def _mean(effects: dict) -> dict:
    return {k: numpy(v.mean(-1)) for k, v in effects.items()}


def compute(model, prompts: PromptSet, context: FamilyContext | None = None) -> Result:
    ctx = shared.context_for(model, context)
    senders, sender_change = top_heads_by_patching(ctx, prompts, SENDERS)
    ps = shared.path_setup(ctx, prompts)
    ld_effects, answer_effects = paths.path_effects_both(model, ps, senders)
    shared.remember_path_effects(ctx, prompts, senders, ld_effects)  # circuit's diagram reuses them
    ld, answer = _mean(ld_effects), _mean(answer_effects)
    recompute = _mean(paths.path_effects(model, ps, senders, recompute_mlps=True))
    noised_ld, noised_answer = (_mean(e) for e in paths.path_effects_both(model, paths.setup(model, prompts, True),
                                                                          senders))
    clean, corrupted = numpy(ps.clean_ld), numpy(ps.corrupted_ld)
    informative, reason = informative_gap(clean, corrupted)
    gap = float(clean.mean() - corrupted.mean())
    scale = gap if informative else 1.0
    answer_gap = thresholds.informative_gap(numpy(ps.clean_answer), numpy(ps.corrupted_answer))
    answer_scale = answer_gap.mean if answer_gap.mean != 0 else 1.0
    arrays = {k: v / scale for k, v in ld.items()}
    arrays.update(sender_patching=sender_change / scale, clean_logit_diff=clean, corrupted_logit_diff=corrupted)
    arrays.update({f"recompute_{k}": v / scale for k, v in recompute.items() if k != "mlp"})
    arrays.update({f"noising_{k}": -v / scale for k, v in noised_ld.items()})  # share REMOVED: positive when needed
    arrays.update({f"answer_denoising_{k}": v / answer_scale for k, v in answer.items()})
    arrays.update({f"answer_noising_{k}": -v / answer_scale for k, v in noised_answer.items()})
    arrays["edge_sum"] = np.array([sum(float(np.nansum(arrays[k][i])) for k in KINDS) for i in range(len(senders))])
    names = [head_name(*s) for s in senders]
    n_kv = arrays["v"].shape[2]
    labels = {"senders": names,
              "heads": [[head_name(layer, h) for h in range(model.cfg.n_heads)] for layer in range(model.cfg.n_layers)],
              "kv_heads": [[head_name(layer, h) for h in range(n_kv)] for layer in range(model.cfg.n_layers)]}
    summary = {"family": prompts.family, "corruption": prompts.corruption, "n_prompts": prompts.n_prompts,
               "n_layers": int(model.cfg.n_layers), "informative": informative, "gap_reason": reason,
               "gap_state": gap_state(clean, corrupted), "normalised": informative,
               "clean_logit_diff_mean": float(clean.mean()),
               "corrupted_logit_diff_mean": float(corrupted.mean()), "name_threshold": NAME_FRACTION,
               "value_unit": "fraction of the clean − corrupted gap" if informative else "change in LD (logits)",
               "senders": [{"name": n, "value": float(v)} for n, v in zip(names, arrays["sender_patching"])],
               "top_edges": edges(arrays, labels)[:TOP_K], "items_above_chance": shared.above_chance(ctx, prompts),
               "measured": MEASURED,
               "recompute_top_edges": edges(arrays, labels, prefix="recompute_")[:TOP_K],
               "noising_top_edges": _noising_edges(arrays, labels)[:TOP_K],
               "edge_sums": [{"name": n, "total": float(t), "edge_sum": float(e), "unexplained": float(t - e)}
                             for n, t, e in zip(names, arrays["sender_patching"], arrays["edge_sum"])],
               "answer_informative": answer_gap.informative, "answer_gap_reason": answer_gap.reason}
    summary.update(_path_structure(arrays, labels, answer_gap.informative))
    return Result(summary=summary, arrays=arrays, labels=labels)


def _noising_edges(arrays: dict, labels: dict) -> list[dict]:
    """Every path's noising share beside its denoising share, largest |noising| first."""
    denoising = {e["name"]: e["value"] for e in edges(arrays, labels)}
    return [dict(e, denoising=denoising[e["name"]]) for e in edges(arrays, labels, prefix="noising_")]


def _path_structure(arrays: dict, labels: dict, informative: bool) -> dict:
    """AND / OR / needed-and-sufficient paths, on the clean answer's logit."""
    noising = edges(arrays, labels, prefix="answer_noising_")
    denoising = {e["name"]: e["value"] for e in edges(arrays, labels, prefix="answer_denoising_")}
    found = (necessity.structure([e["name"] for e in noising], np.array([e["value"] for e in noising]),
                                 np.array([denoising[e["name"]] for e in noising]))
             if informative else {k: [] for k in necessity.KINDS})
    return {f"{kind}_paths": entries[:TOP_K] for kind, entries in found.items()}


def edges(arrays: dict, labels: dict, prefix: str = "") -> list[dict]:
    """Every (sender, receiver) effect of arrays `{prefix}logits`, `{prefix}q`, ... as {"name": "sender → receiver",
    "sender", "receiver", "value"}, largest |value| first (no MLP receivers where there is no `{prefix}mlp`)."""
    out = []

    def add(sender: str, receiver: str, value) -> None:
        out.append({"name": f"{sender} → {receiver}", "sender": sender, "receiver": receiver, "value": float(value)})

    for k, sender in enumerate(labels["senders"]):
        add(sender, "logits", arrays[f"{prefix}logits"][k])
        for kind, names in (("q", labels["heads"]), ("k", labels["kv_heads"]), ("v", labels["kv_heads"])):
            for layer, row in enumerate(names):
                for unit, name in enumerate(row):
                    value = arrays[f"{prefix}{kind}"][k, layer, unit]
                    if np.isfinite(value):
                        add(sender, f"{name}.{kind}", value)
        for layer, value in enumerate(arrays.get(f"{prefix}mlp", np.empty((len(labels["senders"]), 0)))[k]):
            if np.isfinite(value):
                add(sender, f"MLP{layer}", value)
    return sorted(out, key=lambda e: -abs(e["value"]))


def figures(result: Result) -> list[Figure]:
    a, lab, s = result.arrays, result.labels, result.summary
    unit = "fraction of gap" if s["normalised"] else "Δ LD"
    floor = thresholds.SCALE_FRACTION if s["normalised"] else thresholds.SCALE_LOGITS
    out = []
    for kind, names, word in (("q", lab["heads"], "query"), ("k", lab["kv_heads"], "key"),
                              ("v", lab["kv_heads"], "value")):
        receivers = [n for row in names for n in row]
        z = a[kind].reshape(a[kind].shape[0], -1)  # [K, L * H]
        fig = plots.heatmap(z, receivers, lab["senders"], f"Path patching: sender → each later head's {word} input",
                            unit, floor=floor)
        out.append(Figure(f"{NAME}-{kind}", fig))
    other = np.concatenate([a["mlp"], a["logits"][:, None]], axis=1)
    columns = [f"MLP{layer}" for layer in range(a["mlp"].shape[1])] + ["logits"]
    out.append(Figure(f"{NAME}-mlp-logits", plots.heatmap(other, columns, lab["senders"],
                                                          "Path patching: sender → MLP inputs and the logits", unit,
                                                          floor=floor)))
    return out


def narrative(result: Result) -> list[str]:
    s = result.summary
    senders = ", ".join(e["name"] for e in s["senders"])
    sentences = [*at_chance_lead(s),
                 f"Senders: the {len(s['senders'])} heads with the largest z-patching effect ({senders}), on the "
                 f"{s['corruption']} corruption."]
    if not s["informative"]:
        sentences.append(phrases.not_informative(s.get("gap_state"), s["gap_reason"],
                                                 "effects are raw changes in LD and no path is named"))
        return sentences
    named = [e for e in s["top_edges"] if abs(e["value"]) >= s["name_threshold"]]
    if not named:
        sentences.append(phrases.nothing_stands_out(
            f"No single path carries {phrases.share(s['name_threshold'])} of the clean − corrupted gap"))
    for e in named[:4]:
        effect = (phrases.restores(e["value"]) if e["value"] >= 0 else
                  f"moves the LD away from the clean run by {100 * -e['value']:.0f}% of the gap")
        sentences.append(f"{e['sender']}'s output {_reads(e['receiver'])}: that path alone {effect}{instead(s)}.")
    if "edge_sums" in s:  # results saved before these were computed have none
        sentences += _beside_sentences(s)
    return sentences


def _reads(receiver: str) -> str:
    if receiver == "logits":
        return "writes directly to the logits"
    if "." in receiver:
        head, kind = receiver.split(".")
        return f"is read by {head}'s {dict(q='query', k='key', v='value')[kind]}"
    return f"is read by {receiver}"


def _beside_sentences(s: dict) -> list[str]:
    """What the edges are, their sum against each sender's total, the MLP-recompute variant, noising, AND / OR."""
    threshold = s["name_threshold"]
    out = [f"These are {s['measured']} (not Wang et al.'s path patching as published, which lets MLPs recompute and "
           "noises the clean run: both are shown below)."]
    for e in s["edge_sums"]:
        if abs(e["total"]) < threshold:
            continue
        if abs(e["unexplained"]) >= threshold:
            out.append(f"{e['name']}'s direct edges sum to {100 * e['edge_sum']:.0f}% of the gap against its total "
                       f"effect of {100 * e['total']:.0f}%: {100 * e['unexplained']:+.0f}% is carried by no single "
                       f"edge (its change must reach several inputs at once){instead(s)}.")
        else:
            out.append(f"{e['name']}'s direct edges sum to {100 * e['edge_sum']:.0f}% of the gap, within "
                       f"{100 * threshold:.0f}% of its total effect ({100 * e['total']:.0f}%): its edges account "
                       f"for it{instead(s)}.")
    recompute = [e for e in s["recompute_top_edges"] if abs(e["value"]) >= threshold]
    if recompute:
        listed = ", ".join(f"{e['name']} ({100 * e['value']:+.0f}%)" for e in recompute[:4])
        out.append(f"With the MLPs recomputing (every later head frozen; an MLP's share is folded into the edge it "
                   f"feeds){instead(s)}: {listed}.")
    else:
        out.append(phrases.nothing_stands_out("With the MLPs recomputing, no edge carries the naming threshold"))
    noised = [e for e in s["noising_top_edges"] if abs(e["value"]) >= threshold]
    if noised:
        listed = ", ".join(f"{e['name']} (noising removes {100 * e['value']:.0f}%, denoising "
                           f"{phrases.restores(e['denoising'], '')})" for e in noised[:4])
        out.append(f"Noising each path (the sender's corrupted output delivered along it in the clean run), beside "
                   f"denoising{instead(s)}: {listed}.")
    else:
        out.append("No path's noising removes the naming threshold of the gap: no single path is needed.")
    found = {kind: s[f"{kind}_paths"] for kind in necessity.KINDS}
    return out + necessity.sentences(found, s["answer_informative"], s["answer_gap_reason"], what="path",
                                     instead=instead(s))


class NoisedPath(RankedPath):
    denoising: Annotated[float, "its denoising share, beside the noising share (value)"]


class EdgeSum(Named):
    total: Annotated[float, "its total patching effect"]
    edge_sum: Annotated[float, "the sum of its direct edges' effects"]
    unexplained: Annotated[float, "total − edge_sum: what goes through longer paths"]


class PathPatchingSummary(CorruptionHeader, InformativeGap, GapState, LogitDiffMeans, NormalisedValues):
    """Path patching from the top heads to later heads' queries, keys and values and to the logits."""

    name_threshold: Annotated[float, "|effect| a path needs to be named, fraction of the gap"]
    senders: Annotated[list[Ranked], "the heads paths start from, by their patching effect"]
    top_edges: Annotated[list[RankedPath], "direct paths by |denoising effect|, largest first"]
    measured: Annotated[str, "what the main numbers are: direct edges by denoising"]
    recompute_top_edges: Annotated[list[RankedPath], "the variant where MLPs recompute (every later head frozen)"]
    noising_top_edges: Annotated[list[NoisedPath], "share of the gap each path's noising removes (value)"]
    edge_sums: Annotated[list[EdgeSum], "each sender (name) with its direct edges summed against its total effect"]
    answer_informative: Annotated[bool, "the clean answer's logit gap is informative"]
    answer_gap_reason: Annotated[str, "why it is or is not"]
    and_paths: Annotated[list[Necessity], "paths needed but not sufficient alone (clean answer's logit)"]
    or_paths: Annotated[list[Necessity], "paths sufficient alone but not needed"]
    both_paths: Annotated[list[Necessity], "paths needed and sufficient alone"]


PATH_PATCHING = Analysis(
    summary_type=PathPatchingSummary,
    name=NAME,
    title="Path patching between heads",
    definition="Direct edges by denoising: the corrupted prompts run with one sender head's clean output delivered "
               "along one path only (to the logits, to a later head's query, key or value, or to an MLP's input), "
               "every node in between frozen at the corrupted run, everything after the receiver recomputed; change "
               "in LD = logit(clean answer) − logit(corrupted answer), as a fraction of the clean − corrupted gap "
               "(Goldowsky-Dill et al. 2023). Beside it: the MLP-recompute variant (Wang et al. 2022) and noising "
               "(the sender's corrupted output along one path of the clean run).",
    compute=compute, figures=figures, narrative=narrative,
    description="How the heads that matter connect: who reads whose output, and through which input.",
    part="mechanism", per_corruption=True, intervenes=True, uses_context=True,
    cannot_run=paths.without_resid_mid,
)
