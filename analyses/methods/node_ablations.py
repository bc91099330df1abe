"""Each node ablated alone: the rows (one per ablation and node), their readouts, direct effects, noising/denoising.

The ablations (zero, contrast-matched mean, resample from the paired twin) are `analyses.methods.mechanism`'s; the rows
run on the engine (`analyses.engine.rows`). Not an analysis: `analyses.ablations` reports them.
"""

from __future__ import annotations

import numpy as np
import torch

from analyses.common.metrics import answer_pair, model_device
from analyses.common.types import FamilyContext, PromptSet
from analyses.engine.readout import final_answer_logits, final_log_partition
from analyses.engine.rows import Base, Row, run_rows
from analyses.methods.attribution import head_outputs, metric_terms, project
from analyses.methods.mechanism import ABLATIONS, ablation_source, mean_reference, node_edit, node_hook, numpy


def ablation_rows(node_list, clean: dict, corrupted: dict, kinds=ABLATIONS, corruption: str = "day",
                  template_index: list[int] | None = None) -> list[Row]:
    """One row per (kind, node), kind-major: the node's activation replaced by that ablation's values (the twin
    and the mean reference of `corruption`, per template)."""
    sources = {kind: {h: ablation_source(kind, clean[h], corrupted[h], corruption, template_index)
                      for h in {node_hook(n) for n in node_list}} for kind in kinds}
    return [Row((node_edit(node, sources[kind][node_hook(node)]),)) for kind in kinds for node in node_list]


def ablation_readouts(ctx: FamilyContext, prompts: PromptSet, node_list, base: Base,
                      corrupted: dict) -> dict[str, torch.Tensor]:
    """{metric: [kinds, N, B]} (`readouts`' metrics) of every node under each ablation of ABLATIONS, on the clean run
    `base`. The zero ablation does not depend on the corruption (the clean run with the node zeroed): its final
    residuals and P(correct) are kept in the family context and reused by the other corruption, which reads only
    its own LD again (the negative answer is the corruption's)."""
    model = ctx.model
    key = ("zero_ablation", prompts.family)
    kept = ctx.memo.get(key)
    if kept is not None and not torch.equal(kept["tokens"], base.tokens):
        kept = None  # another clean prompt set under the same family name: nothing to reuse
    kinds = [k for k in ABLATIONS if not (k == "zero" and kept is not None)]
    rows = ablation_rows(node_list, base.cache, corrupted, kinds, prompts.corruption, prompts.template_index)
    final, _ = run_rows(model, base, rows)
    final = final.reshape(len(kinds), len(node_list), *final.shape[1:])
    by_kind = {kind: readouts(model, final[i], prompts) for i, kind in enumerate(kinds)}
    if kept is None:
        zero = kinds.index("zero")
        ctx.memo[key] = {"tokens": base.tokens, "final": final[zero], "p_correct": by_kind["zero"]["p_correct"]}
    else:
        by_kind["zero"] = {**readouts(model, kept["final"], prompts, vocabulary=False), "p_correct": kept["p_correct"]}
    return {metric: torch.stack([by_kind[k][metric] for k in ABLATIONS]) for metric in by_kind[ABLATIONS[0]]}


@torch.no_grad()
def readouts(model, final: torch.Tensor, prompts: PromptSet, vocabulary: bool = True) -> dict[str, torch.Tensor]:
    """[n, B, d_model] final residuals -> LD, copy LD, logit(clean answer) and (vocabulary=True) P(correct), each
    [n, B]. The logits are read from the answer columns alone; only P(correct) unembeds the whole vocabulary (for
    its log-sum-exp): with Gemma's 262,144-token vocabulary that product is most of a readout's cost."""
    device = final.device
    pos, neg = (t.to(device) for t in answer_pair(prompts, "clean_vs_corrupted"))
    copy = prompts.copy_ids.to(device)
    n, B, d = final.shape
    flat = final.reshape(n * B, d)

    def column(ids: torch.Tensor) -> torch.Tensor:
        return final_answer_logits(model, flat, ids.repeat(n)).reshape(n, B)

    answer = column(pos)
    out = {"logit_diff": answer - column(neg), "copy_logit_diff": answer - column(copy), "answer_logit": answer}
    if vocabulary:
        out["p_correct"] = torch.exp(answer - final_log_partition(model, final))
    return out


@torch.no_grad()
def direct_effects(model, prompts: PromptSet, node_list) -> np.ndarray:
    """[N] direct effect on LD of mean-ablating each node (contrast-matched reference, per template), mean over
    prompts (clean final-norm scale)."""
    device = model_device(model)
    _, cache = model.run_with_cache(prompts.clean_tokens.to(device))
    _, twin_cache = model.run_with_cache(prompts.corrupted_tokens.to(device))
    heads, twin_heads = head_outputs(model, cache), head_outputs(model, twin_cache)  # [L, H, B, d]
    pieces = []
    for kind, layer, head in node_list:
        if kind == "head":
            out, twin = heads[layer, head], twin_heads[layer, head]
        else:
            out, twin = (c[f"blocks.{layer}.hook_mlp_out"][:, -1] for c in (cache, twin_cache))  # [B, d]
        pieces.append(mean_reference(prompts.corruption, out, twin, prompts.template_index) - out)
    directions, _ = metric_terms(model, prompts, "clean_vs_corrupted")
    return numpy(project(cache, torch.stack(pieces), directions).mean(-1))


def noising_and_denoising(model, prompts: PromptSet, node_list, clean: Base, corrupted: Base,
                          noised: dict[str, torch.Tensor]) -> dict[str, np.ndarray]:
    """Each node noised (clean run, its output from the corrupted twin) and denoised (corrupted run, its output from
    the clean prompt): LD and logit(clean answer) [N, B] each. Noising is the resample ablation (the same rows: the
    paired twin's activation on the clean run), so its readouts `noised` ("logit_diff", "answer_logit", [N, B]) are
    taken, not run a second time; only the denoising rows run here, read on the answer columns alone."""
    rows = [Row((node_edit(node, clean.cache[node_hook(node)]),)) for node in node_list]
    final, _ = run_rows(model, corrupted, rows)
    denoised = readouts(model, final, prompts, vocabulary=False)
    return {f"{word}_{metric}": numpy(reads[metric]) for word, reads in (("noising", noised), ("denoising", denoised))
            for metric in ("logit_diff", "answer_logit")}
