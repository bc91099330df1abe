"""Path patching from the top heads by activation patching: which later inputs each one's output reaches.

Method: `analyses.paths` (Wang et al. 2022, §3.1; Goldowsky-Dill et al. 2023). Senders: the SENDERS heads with the
largest |effect| of exact z patching (clean → corrupted, every position), computed here with the batched engine.
For each sender, its clean output is delivered along one path only: directly to the logits, or into the query,
key or value input of each later head, or the input of each MLP at or after its layer; every other path stays
at the corrupted run. Effect = (LD_path − LD_corrupted), as a fraction of the clean − corrupted gap when that gap
is informative (`analyses.mechanism.informative_gap`), else in logits with no edge named.
Computed once per corruption of the family (`per_corruption`).

Arrays (K senders, L layers, H heads, H_kv key/value heads): logits [K]; q [K, L, H]; k, v [K, L, H_kv]; mlp [K, L]
(NaN where the receiver does not lie after the sender); sender_patching [K] (z patching effect).
Labels: senders [K], heads [L][H], kv_heads [L][H_kv].
Summary: top_edges = [{"sender": "L9H1", "receiver": "L10H3.q" | "MLP9" | "logits", "value"}] by |value|;
informative, gap_reason, normalised.
"""

from __future__ import annotations

import numpy as np

from analyses import paths, plots, shared, thresholds
from analyses.attribution import head_name
from analyses.mechanism import NAME_FRACTION, at_chance_lead, gap_state, informative_gap, instead, numpy
from analyses.types import Analysis, FamilyContext, Figure, PromptSet, Result

NAME = "path_patching"
SENDERS = 3  # senders per family: each costs one batched pass per later receiver
TOP_K = 10


def top_heads_by_patching(ctx: FamilyContext, prompts: PromptSet, k: int) -> tuple[list[tuple[int, int]], np.ndarray]:
    """The k heads with the largest |mean z-patching change of LD| and those changes [k] (logits); the z patching
    is the family's shared one (`patching_heads` computed it)."""
    heads = shared.head_ranking(ctx, prompts)[:k]
    change = shared.head_z_change(ctx, prompts)  # [L, H]
    return heads, np.array([change[h] for h in heads])


def compute(model, prompts: PromptSet, context: FamilyContext | None = None) -> Result:
    ctx = shared.context_for(model, context)
    senders, sender_change = top_heads_by_patching(ctx, prompts, SENDERS)
    ps = shared.path_setup(ctx, prompts)
    effects = {k: numpy(v.mean(-1)) for k, v in shared.path_effects(ctx, prompts, senders).items()}
    clean, corrupted = numpy(ps.clean_ld), numpy(ps.corrupted_ld)
    informative, reason = informative_gap(clean, corrupted)
    gap = float(clean.mean() - corrupted.mean())
    scale = gap if informative else 1.0
    arrays = {k: v / scale for k, v in effects.items()}
    arrays.update(sender_patching=sender_change / scale, clean_logit_diff=clean, corrupted_logit_diff=corrupted)
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
               "senders": [{"head": n, "value": float(v)} for n, v in zip(names, arrays["sender_patching"])],
               "top_edges": edges(arrays, labels)[:TOP_K], "day7_above_chance": shared.above_chance(ctx, prompts)}
    return Result(summary=summary, arrays=arrays, labels=labels)


def edges(arrays: dict, labels: dict) -> list[dict]:
    """Every (sender, receiver) effect as {"sender", "receiver", "value"}, largest |value| first."""
    out = []
    for k, sender in enumerate(labels["senders"]):
        out.append({"sender": sender, "receiver": "logits", "value": float(arrays["logits"][k])})
        for kind, names in (("q", labels["heads"]), ("k", labels["kv_heads"]), ("v", labels["kv_heads"])):
            for layer, row in enumerate(names):
                for unit, name in enumerate(row):
                    value = arrays[kind][k, layer, unit]
                    if np.isfinite(value):
                        out.append({"sender": sender, "receiver": f"{name}.{kind}", "value": float(value)})
        for layer, value in enumerate(arrays["mlp"][k]):
            if np.isfinite(value):
                out.append({"sender": sender, "receiver": f"MLP{layer}", "value": float(value)})
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
    senders = ", ".join(e["head"] for e in s["senders"])
    sentences = [*at_chance_lead(s),
                 f"Senders: the {len(s['senders'])} heads with the largest z-patching effect ({senders}), on the "
                 f"{s['corruption']} corruption."]
    if not s["informative"]:
        sentences.append(f"{thresholds.gap_clause(s.get('gap_state'))} ({s['gap_reason']}); effects are raw changes in "
                         "LD and no path is named.")
        return sentences
    named = [e for e in s["top_edges"] if abs(e["value"]) >= s["name_threshold"]]
    if not named:
        sentences.append(f"No single path carries {100 * s['name_threshold']:.0f}% of the clean − corrupted gap: "
                         "nothing stands out.")
        return sentences
    for e in named[:4]:
        receiver = e["receiver"]
        if receiver == "logits":
            what = "writes directly to the logits"
        elif "." in receiver:
            head, kind = receiver.split(".")
            what = f"is read by {head}'s {dict(q='query', k='key', v='value')[kind]}"
        else:
            what = f"is read by {receiver}"
        effect = (f"restores {100 * e['value']:.0f}% of the gap" if e["value"] >= 0 else
                  f"moves the LD away from the clean run by {100 * -e['value']:.0f}% of the gap")
        sentences.append(f"{e['sender']}'s output {what}: that path alone {effect}{instead(s)}.")
    return sentences


PATH_PATCHING = Analysis(
    name=NAME,
    title="Path patching between heads",
    definition="The corrupted prompts run with one sender head's clean output delivered along one path only (to the "
               "logits, to a later head's query, key or value, or to an MLP's input), every other path frozen at the "
               "corrupted run; change in LD = logit(clean answer) − logit(corrupted answer), as a fraction of the "
               "clean − corrupted gap (Wang et al. 2022; Goldowsky-Dill et al. 2023).",
    compute=compute, figures=figures, narrative=narrative,
    description="How the heads that matter connect: who reads whose output, and through which input.",
    part="mechanism", per_corruption=True, intervenes=True, uses_context=True,
    cannot_run=paths.without_resid_mid,
)
