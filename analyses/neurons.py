"""Neurons on the answer path: in the MLPs that patching names, which neurons write the answer, what they fire for.

Method (the neuron-level direct logit attribution of Geva et al. 2022, "Transformer Feed-Forward Layers Build
Predictions by Promoting Concepts in the Vocabulary Space", on the patching change of Meng et al. 2022 / Wang et al.
2022; activation by input item as in Gurnee et al. 2024, "Universal Neurons in GPT2 Language Models"):

1. MLPs: each MLP's whole output (every position) patched from the clean run into the corrupted run (the batched
   engine); the TOP_MLPS with the largest |effect| that reach the naming threshold (NAME_FRACTION of an informative
   clean − corrupted gap) are studied. With an uninformative gap nothing is studied.
2. Direct effect of neuron n of MLP l on LD = logit(clean answer) − logit(corrupted answer) at the final position:
       effect(n) = mean_b [ (a_clean[b, n] / s_clean[b] − a_corr[b, n] / s_corr[b]) · (g ⊙ W_out[l, n]) · u_b / f_b ]
   a = the neuron's activation (hook_post) at the final position, W_out[l, n] its output row (centred over d_model
   for LayerNorm models), u_b = W_U[:, clean answer] − W_U[:, corrupted answer], f_b the clean run's final-norm scale;
   s and g the scale and gain of a norm after the MLP (Gemma 2/3; 1 elsewhere). Summed over all neurons it is the
   MLP's direct effect, the change of its final-position output projected on the LD (a test checks the sum).
   As a fraction of the gap. The TOP_NEURONS neurons by |effect| are shown.
3. Each top neuron's activation by item: its mean final-position activation on the clean prompts with item d in the
   slot [n_items], and the item it promotes: argmax over items of (g ⊙ W_out[l, n]) · W_U[:, item] (centred over
   items). It FIRES FOR ONE ITEM when its most activating item beats the second by at least SELECTIVE_NEURON of the
   range of its activations over items; then the offset (promoted − fired-for) says whether it maps that item to the
   family's step ("maps Monday to Tuesday": the step, for +1), to itself, or elsewhere. Activation by the prompt's
   item cannot say whether the step was computed in the neuron or upstream of it: only that this neuron's input →
   output pair is the step.
4. Top neurons against the whole MLP: the corrupted run with the clean activations of the top k neurons of the MLP
   (every position; k on K_GRID), against the whole MLP's output patched, as fractions of the gap.

Arrays (M studied MLPs, K = TOP_NEURONS, G = len(K_GRID), n items): mlp_patching [L] (every MLP, fraction of the
gap, or logits when the gap is not informative); neuron_index, neuron_effect [M, K]; activation_by_item, promoted
[M, K, n]; k_grid [G]; top_k_patching [M, G]; whole_mlp_patching [M]. Labels: mlps [M], items.
Summary: mlps = [{"name": "MLP3", "value"}]; neurons = [{"name": "MLP3", "neuron": 812, "value" (direct effect,
fraction of the gap), "fires_for" (item or ""), "promotes" (item), "offset" (int, or null), "role"}];
top_k_patching = [{"name" (the MLP), "k", "value", "whole"}]; family_step; informative, gap_reason, corruption.
"""

from __future__ import annotations

from typing import Annotated

import numpy as np
import torch

from analyses.common import phrases, plots
from analyses.common.contract import CorruptionHeader, InformativeGap, Ranked
from analyses.common.metrics import answer_pair, does_the_task, model_device
from analyses.common.precision import widen
from analyses.common.thresholds import NEURONS_ENOUGH, SELECTIVE_NEURON
from analyses.common.types import Analysis, Figure, PromptSet, Result
from analyses.engine.readout import final_logit_diff
from analyses.engine.rows import Edit, Row, collect_base, run_rows
from analyses.engine.sweeps import Patch, Runs, collect_runs, patched_logit_diffs
from analyses.methods.attribution import norm_gain
from analyses.methods.mechanism import (
    NAME_FRACTION,
    at_chance_lead,
    family_step,
    informative_gap,
    instead,
    item_names,
    numpy,
    signed_offsets,
)

NAME = "neurons"
TOP_MLPS = 2
TOP_NEURONS = 10
K_GRID = (1, 2, 5, 10, 20, 50)
NARRATED = 5  # neurons described in words per MLP


def _post(layer: int) -> str:
    return f"blocks.{layer}.mlp.hook_post"


def _mlp_out(layer: int) -> str:
    return f"blocks.{layer}.hook_mlp_out"


def mlp_patching(model, prompts: PromptSet) -> tuple[np.ndarray, Runs]:
    """[L] mean LD change when each MLP's whole output is patched clean → corrupted, and the runs (for their LDs)."""
    runs = collect_runs(model, prompts, ("mlp_out",))
    S = runs.corrupted_tokens.shape[1]
    patches = [Patch(layer, tuple(("mlp_out", p) for p in range(S))) for layer in range(model.cfg.n_layers)]
    return numpy(patched_logit_diffs(model, runs, patches).mean(-1) - runs.corrupted_ld.mean()), runs


def _post_norm(model, cache, layer: int, d_model: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(scale [B], gain [d_model]) of a norm after the MLP at the final position; (1, 1) where there is none."""
    name = f"blocks.{layer}.ln2_post.hook_scale"
    if name not in cache.cache_dict:
        return torch.ones(1), torch.ones(d_model)
    return cache[name][:, -1, 0].float().cpu(), norm_gain(model.blocks[layer].ln2_post, d_model).float().cpu()


@torch.no_grad()
def neuron_effects(model, prompts: PromptSet, layer: int) -> np.ndarray:
    """[d_mlp] direct effect on the LD of each neuron's clean − corrupted change (step 2 of the docstring), logits."""
    device = model_device(model)
    names = [_post(layer), f"blocks.{layer}.ln2_post.hook_scale", "ln_final.hook_scale"]
    names = [n for n in names if n in model.hook_dict]
    _, clean = model.run_with_cache(prompts.clean_tokens.to(device), names_filter=names)
    _, corrupted = model.run_with_cache(prompts.corrupted_tokens.to(device), names_filter=names)
    d_model = model.cfg.d_model
    s_clean, gain = _post_norm(model, clean, layer, d_model)
    s_corr, _ = _post_norm(model, corrupted, layer, d_model)
    change = (clean[_post(layer)][:, -1].float().cpu() / s_clean[:, None]
              - corrupted[_post(layer)][:, -1].float().cpu() / s_corr[:, None])  # [B, d_mlp]
    W_out = model.W_out[layer].float().cpu() * gain  # [d_mlp, d_model]
    if model.cfg.normalization_type in ("LN", "LNPre"):  # the final LayerNorm centres over d_model
        W_out = W_out - W_out.mean(-1, keepdim=True)
    pos, neg = answer_pair(prompts, "clean_vs_corrupted")
    W_U = model.W_U.float().cpu()
    directions = (W_U[:, pos] - W_U[:, neg]) / clean["ln_final.hook_scale"][:, -1, 0].float().cpu()  # [d, B]
    return numpy((change * (W_out @ directions).T).mean(0))  # [d_mlp]


@torch.no_grad()
def activation_by_item(model, prompts: PromptSet, layer: int, neurons: np.ndarray) -> np.ndarray:
    """[K, n_items] mean final-position activation of each neuron on the clean prompts with item d in the slot."""
    _, cache = model.run_with_cache(prompts.clean_tokens.to(model_device(model)), names_filter=[_post(layer)])
    acts = numpy(cache[_post(layer)][:, -1, torch.as_tensor(neurons)])  # [B, K]
    items = np.array(prompts.item_index)
    return np.stack([acts[items == d].mean(0) for d in range(prompts.n_items)], axis=-1)


@torch.no_grad()
def promoted_items(model, prompts: PromptSet, layer: int, neurons: np.ndarray) -> np.ndarray:
    """[K, n_items] logit of each item written by one unit of each neuron's activation, centred over items."""
    gain = norm_gain(model.blocks[layer].ln2_post, model.cfg.d_model) if hasattr(model.blocks[layer], "ln2_post") \
        else 1.0
    rows = widen(model.W_out[layer][torch.as_tensor(neurons)]) * gain  # [K, d]; float32 at least (the gain is)
    logits = numpy(rows @ widen(model.W_U[:, prompts.item_token_ids.to(rows.device)]))
    return logits - logits.mean(-1, keepdims=True)


@torch.no_grad()
def top_k_patching(model, prompts: PromptSet, layer: int, order: np.ndarray, grid: list[int],
                   runs: Runs) -> tuple[np.ndarray, float]:
    """([G] LD change with the top k neurons' clean activations at every position of the corrupted run, whole MLP's)."""
    names = [_post(layer), _mlp_out(layer)]
    clean = collect_base(model, prompts.clean_tokens, names).cache
    base = collect_base(model, prompts.corrupted_tokens, names)
    rows = [Row((Edit(_post(layer), (slice(None), torch.as_tensor(order[:k].copy())),
                                    clean[_post(layer)][:, :, torch.as_tensor(order[:k].copy())]),)) for k in grid]
    rows.append(Row((Edit(_mlp_out(layer), (), clean[_mlp_out(layer)]),)))
    final, _ = run_rows(model, base, rows)
    n = len(rows)
    ld = final_logit_diff(model, final.flatten(0, 1), runs.pos_ids.repeat(n), runs.neg_ids.repeat(n))
    change = numpy(ld.view(n, -1).mean(-1) - runs.corrupted_ld.mean())
    return change[:-1], float(change[-1])


def role(activation: np.ndarray, promoted: np.ndarray, step: int, items: list[str]) -> dict:
    """What one neuron does over the items (step 3 of the docstring): fires_for, promotes, offset, role."""
    n = len(items)
    ranked = np.argsort(-activation, kind="stable")
    spread = float(activation.max() - activation.min())
    selective = spread > 0 and activation[ranked[0]] - activation[ranked[1]] >= SELECTIVE_NEURON * spread
    promotes = int(promoted.argmax())
    out = {"fires_for": items[ranked[0]] if selective else "", "promotes": items[promotes], "offset": None}
    if not selective:
        return {**out, "role": "fires for several items"}
    offset = int(signed_offsets(n)[(promotes - ranked[0]) % n])
    out["offset"] = offset
    if offset == step:
        return {**out, "role": f"maps {items[ranked[0]]} to {items[promotes]} (the family's step, {step:+d})"}
    if offset == 0:
        return {**out, "role": f"fires for {items[ranked[0]]} and promotes it"}
    return {**out, "role": f"fires for {items[ranked[0]]} and promotes {items[promotes]} ({offset:+d})"}


def compute(model, prompts: PromptSet) -> Result:
    change, runs = mlp_patching(model, prompts)
    clean, corrupted = numpy(runs.clean_ld), numpy(runs.corrupted_ld)
    informative, reason = informative_gap(clean, corrupted)
    gap = float(clean.mean() - corrupted.mean())
    scale = gap if informative else 1.0
    order = np.argsort(-np.abs(change), kind="stable")
    studied = [int(layer) for layer in order[:TOP_MLPS] if informative and abs(change[layer]) / scale >= NAME_FRACTION]
    items, step = item_names(prompts), family_step(prompts)
    d_mlp = model.W_out.shape[1]
    grid = [k for k in K_GRID if k <= d_mlp]
    K = min(TOP_NEURONS, d_mlp)
    arrays = {"mlp_patching": change / scale, "k_grid": np.array(grid),
              "neuron_index": np.zeros((len(studied), K), dtype=np.int64), "neuron_effect": np.zeros((len(studied), K)),
              "activation_by_item": np.zeros((len(studied), K, len(items))),
              "promoted": np.zeros((len(studied), K, len(items))),
              "top_k_patching": np.zeros((len(studied), len(grid))), "whole_mlp_patching": np.zeros(len(studied))}
    neurons, patching = [], []
    for m, layer in enumerate(studied):
        effects = neuron_effects(model, prompts, layer)
        ranked = np.argsort(-np.abs(effects), kind="stable")
        top = ranked[:K]
        arrays["neuron_index"][m], arrays["neuron_effect"][m] = top, effects[top] / scale
        arrays["activation_by_item"][m] = activation_by_item(model, prompts, layer, top)
        arrays["promoted"][m] = promoted_items(model, prompts, layer, top)
        by_k, whole = top_k_patching(model, prompts, layer, ranked, grid, runs)
        arrays["top_k_patching"][m], arrays["whole_mlp_patching"][m] = by_k / scale, whole / scale
        for i, neuron in enumerate(top):
            neurons.append({"name": f"MLP{layer}", "neuron": int(neuron), "value": float(effects[neuron] / scale),
                            **role(arrays["activation_by_item"][m, i], arrays["promoted"][m, i], step, items)})
        patching += [{"name": f"MLP{layer}", "k": int(k), "value": float(v / scale), "whole": float(whole / scale)}
                     for k, v in zip(grid, by_k)]
    summary = {"family": prompts.family, "corruption": prompts.corruption, "n_prompts": prompts.n_prompts,
               "n_layers": int(model.cfg.n_layers), "informative": informative, "gap_reason": reason,
               "name_threshold": NAME_FRACTION, "selective_share": SELECTIVE_NEURON, "family_step": step,
               "mlps": [{"name": f"MLP{layer}", "value": float(change[layer] / scale)} for layer in studied],
               "neurons": neurons, "top_k_patching": patching, "items_above_chance": does_the_task(model, prompts)}
    labels = {"mlps": [f"MLP{layer}" for layer in studied], "items": items}
    return Result(summary=summary, arrays=arrays, labels=labels)


def figures(result: Result) -> list[Figure]:
    a, lab, s = result.arrays, result.labels, result.summary
    unit = "fraction of gap" if s["informative"] else "Δ LD"
    out = [Figure(f"{NAME}-mlps", plots.bars([f"MLP{layer}" for layer in range(s["n_layers"])],
                                             {"whole MLP patched": a["mlp_patching"]},
                                             "Each MLP's output patched clean → corrupted", unit))]
    for m, mlp in enumerate(lab["mlps"]):
        rows = [f"n{int(i)}" for i in a["neuron_index"][m]]
        fig = plots.heatmap(a["activation_by_item"][m], lab["items"], rows, f"{mlp}: activation of its top neurons "
                            "(by direct effect) at the final position, by the item in the prompt", "activation",
                            floor=0.0)  # neurons of a named MLP only: the pattern over items is the point
        out.append(Figure(f"{NAME}-{mlp}-by-item", fig))
        curve = plots.lines(a["k_grid"].tolist(), {"top k neurons patched": a["top_k_patching"][m],
                                                   "whole MLP patched": np.full(len(a["k_grid"]),
                                                                                a["whole_mlp_patching"][m])},
                            f"{mlp}: patching its top k neurons against patching the whole MLP", "k neurons", unit)
        out.append(Figure(f"{NAME}-{mlp}-top-k", curve))
    return out


def narrative(result: Result) -> list[str]:
    s = result.summary
    sentences = [*at_chance_lead(s)]
    if not s["informative"]:
        return sentences + [phrases.not_informative(None, s["gap_reason"], "no MLP is studied")]
    if not s["mlps"]:
        return sentences + [phrases.nothing_stands_out(
            f"No MLP's patched output {phrases.restores(s['name_threshold'], 'of the clean − corrupted gap')}",
            ", and no neuron is studied")]
    for mlp in s["mlps"]:
        node = mlp["name"]
        top = [n for n in s["neurons"] if n["name"] == node]
        named = [n for n in top if abs(n["value"]) >= s["name_threshold"]][:NARRATED]
        patched = {p["k"]: p for p in s["top_k_patching"] if p["name"] == node}
        sentence = f"{node} (patching its output {phrases.restores(mlp['value'])}{instead(s)}): "
        if named:
            sentence += "its neurons with the largest direct effect on the LD are " + "; ".join(
                f"n{n['neuron']} ({100 * n['value']:+.0f}%, {n['role']})" for n in named) + "."
        else:
            sentence += (f"no single neuron's direct effect reaches {100 * s['name_threshold']:.0f}% of the gap "
                         f"(the largest: n{top[0]['neuron']}, {100 * top[0]['value']:+.0f}%).")
        sentences.append(sentence)
        if patched:
            sentences.append(_top_k_sentence(node, patched))
        steps = [n for n in named if n["offset"] == s["family_step"]]
        if steps:
            sentences.append(f"{len(steps)} of {node}'s named neurons each fire for one item (its activation "
                             f"beats every other item's by {100 * s['selective_share']:.0f}% of its range) and promote "
                             f"the item {s['family_step']:+d} on: an input → output pair that is the family's step "
                             "(whether the step itself was computed upstream, activation by item cannot say).")
    return sentences


def _top_k_sentence(node: str, patched: dict[int, dict]) -> str:
    """Top-1 neuron against the whole MLP, and the fewest neurons on the grid that restore NEURONS_ENOUGH of what it
    does."""
    whole = next(iter(patched.values()))["whole"]
    first = min(patched)
    enough = [k for k in sorted(patched) if whole and patched[k]["value"] / whole >= NEURONS_ENOUGH]
    tail = (f"; its top {enough[0]} restore {100 * patched[enough[0]]['value']:.0f}%, at least "
            f"{100 * NEURONS_ENOUGH:.0f}% of what the whole MLP restores" if enough else
            f"; even its top {max(patched)} restore only {100 * patched[max(patched)]['value']:.0f}%: the MLP's effect "
            "is spread over more neurons")
    return (f"Patching {node}'s top {first} neuron{'s' if first > 1 else ''} restores "
            f"{100 * patched[first]['value']:.0f}% of the gap against {100 * whole:.0f}% for the whole MLP{tail}.")


class Neuron(Ranked):
    neuron: Annotated[int, "the neuron's index in the MLP the entry names"]
    fires_for: Annotated[str, "the item it fires for selectively ('' when it fires for several)"]
    promotes: Annotated[str, "the item its output weights promote most"]
    offset: Annotated[int | None, "promoted minus fired-for item, signed (null when not selective)"]
    role: Annotated[str, "its role in words"]


class TopKPatching(Ranked):
    k: Annotated[int, "neurons patched (the top k by |effect|)"]
    whole: Annotated[float, "the whole MLP's patching effect, for comparison"]


class NeuronsSummary(CorruptionHeader, InformativeGap):
    """The MLPs that patching names, and the few neurons in each that carry their effect."""

    name_threshold: Annotated[float, "|effect| an MLP needs to be studied, fraction of the gap"]
    selective_share: Annotated[float, "how far its top item must lead for a neuron to fire selectively"]
    family_step: Annotated[int, "the family's step (answer minus copy item)"]
    mlps: Annotated[list[Ranked], "the studied MLPs by |patching effect| (value: fraction of the gap)"]
    neurons: Annotated[list[Neuron], "their top neurons by |patching effect|, each named by its MLP"]
    top_k_patching: Annotated[list[TopKPatching], "each studied MLP's effect when only its top k neurons are "
                                                  "patched"]


NEURONS = Analysis(
    summary_type=NeuronsSummary,
    name=NAME,
    title="Neurons on the answer path",
    definition="For the MLPs whose patched output (clean → corrupted) restores the most of the gap: each neuron's "
               "direct effect on LD = logit(clean answer) − logit(corrupted answer) (its clean − corrupted change at "
               "the final position, through W_out and the unembedding), the top neurons' activation by the item in "
               "the prompt and the item they promote, and patching the top k neurons against patching the whole "
               "MLP (Geva et al. 2022; Gurnee et al. 2024).",
    compute=compute, figures=figures, narrative=narrative,
    description="Inside the MLPs that matter: which neurons write the answer, and whether each maps one day to the "
                "next.",
    part="mechanism", per_corruption=True, intervenes=True,
)
