"""The minimal node circuit's search: the smallest top-ranked kept set on the size grid that reaches the target.

The nodes are ranked by patching; each kept set runs the clean prompts with every other node ablated; the checks
beside the search (the helpful ablations past faithfulness 1, leave-one-template-out) run the same kept sets.

Not an analysis: `analyses.circuit` runs the search and reports it (the method, the formulas and the naming rule are
in its docstring). Nodes are heads and MLPs (`analyses.methods.mechanism.nodes`); faithfulness and its area are
`analyses.common.faithfulness`.
"""

from __future__ import annotations

import numpy as np
import torch

from analyses.common import thresholds
from analyses.common.faithfulness import faithfulness
from analyses.common.stats import finite_or_none
from analyses.common.thresholds import FAITHFUL_TARGET
from analyses.common.types import FamilyContext, PromptSet
from analyses.engine.prefixes import run_rows_sharing_prefixes
from analyses.engine.rows import Row
from analyses.engine.sweeps import Patch, Runs, patched_logit_diffs
from analyses.methods import shared
from analyses.methods.mechanism import NAME_FRACTION, ablation_source, node_edit, node_hook, node_name, numpy
from analyses.methods.node_ablations import readouts

DENSE_UP_TO = 16  # every circuit size up to this, then a geometric grid up to all nodes
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


def lds_and_p(model, final: torch.Tensor, prompts: PromptSet, p_correct: bool = True):
    """[n, B, d] -> LD [n, B] and P(correct) [n, B] (None with p_correct=False), as `node_ablations.readouts` reads
    them: LD from the two answer columns, and only P(correct) over the whole vocabulary, so rows whose P is not
    shown skip it."""
    reads = readouts(model, final, prompts, vocabulary=p_correct)
    return numpy(reads["logit_diff"]), (numpy(reads["p_correct"]) if p_correct else None)


def n_notable(effect: np.ndarray, gap: float, informative: bool) -> int:
    """How many nodes (all at the top of the |effect| order) reach the naming threshold; none on a noise gap."""
    return int((np.abs(effect) >= NAME_FRACTION * abs(gap)).sum()) if informative else 0


def smallest_reaching(grid: list[int], curve: np.ndarray, limit: int) -> int | None:
    """The smallest n <= limit on the grid (n >= 1) whose faithfulness reaches FAITHFUL_TARGET, or None."""
    return next((n for n, f in zip(grid, curve) if 1 <= n <= limit and np.isfinite(f) and f >= FAITHFUL_TARGET), None)


def run_kept_sets(model, base, node_list, keep_sets, sources, prompts, p_correct: bool = False):
    """LD [K, B] and (p_correct=True; else None) P(correct) [K, B] of the clean prompts with every node outside each
    kept set ablated."""
    # rows that ablate the same early nodes share those blocks (the engine's prefix sharing; same numbers)
    final = run_rows_sharing_prefixes(model, base, circuit_rows(node_list, keep_sets, sources))
    return lds_and_p(model, final, prompts, p_correct)


def helpful_ablations(model, base, node_list, sources, prompts, circuit, exact, full_ld, ablated) -> list[dict]:
    """Faithfulness above 1: which ablated nodes push against the answer. Of the ablated nodes with the most
    negative patching effects, each is restored beside the circuit; those that lower faithfulness are returned as
    {"name", "value": faithfulness(circuit + node) − faithfulness(circuit)} (negative, at least NAME_FRACTION of the
    excess over 1), largest drop first."""
    outside = [i for i in np.argsort(exact, kind="stable") if i not in circuit and exact[i] < 0][:HELPFUL_CHECKED]
    if not outside:
        return []
    keep = [set(circuit)] + [set(circuit) | {int(i)} for i in outside]
    ld, _ = run_kept_sets(model, base, node_list, keep, sources, prompts)
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
        ld, _ = run_kept_sets(model, base, node_list, [set(order[:n].tolist()) for n in sizes], sources, prompts)
        found = smallest_reaching(sizes, faithfulness(ld[:, discover], full_ld[discover], ablated[discover]),
                                  notable)
        if found is None:
            held_values.append(None)
            held_circuits.append([])
            continue
        value = faithfulness(ld[sizes.index(found)][None, held], full_ld[held], ablated[held])[0]
        held_values.append(finite_or_none(value))
        held_circuits.append([names[i] for i in order[:found]])
    finite = [v for v in held_values if v is not None]
    out = {"heldout_faithfulness_by_template": held_values, "heldout_circuit_by_template": held_circuits}
    if finite:
        out.update(heldout_faithfulness_mean=float(np.mean(finite)), heldout_faithfulness_min=float(min(finite)),
                   heldout_faithfulness_max=float(max(finite)))
    return out


def not_named_reason(gap, ranking_gap, notable: int, size) -> str:
    """Why the search names no circuit ('' when it names one): the first of its conditions that fails."""
    if not gap.informative:
        return "ablating every node barely changes the LD: faithfulness is not defined meaningfully"
    if not ranking_gap.informative:
        return f"the clean − corrupted gap that ranks the nodes is not informative ({ranking_gap.state})"
    if notable == 0:
        return "no node's patching effect reaches the naming threshold"
    if size is None:
        return NOT_SUFFICIENT
    return ""
