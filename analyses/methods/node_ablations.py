"""Each node ablated alone: the rows (one per ablation and node), their readouts, direct effects, noising/denoising.

The ablations (zero, contrast-matched mean, resample from the paired twin) are `analyses.methods.mechanism`'s; the rows
run on the engine (`analyses.engine.rows`). Not an analysis: `analyses.ablations` reports them.
"""

from __future__ import annotations

import numpy as np
import torch

from analyses.common.metrics import answer_pair, model_device
from analyses.common.types import PromptSet
from analyses.engine.readout import final_logits
from analyses.engine.rows import Base, Row, run_rows
from analyses.methods.attribution import head_outputs, metric_terms, project
from analyses.methods.mechanism import ABLATIONS, ablation_source, mean_reference, node_edit, node_hook, numpy

READOUT_ROWS = 64  # rows unembedded over the whole vocabulary at once (P(correct))


def ablation_rows(node_list, clean: dict, corrupted: dict, kinds=ABLATIONS, corruption: str = "day",
                  template_index: list[int] | None = None) -> list[Row]:
    """One row per (kind, node), kind-major: the node's activation replaced by that ablation's values (the twin
    and the mean reference of `corruption`, per template)."""
    sources = {kind: {h: ablation_source(kind, clean[h], corrupted[h], corruption, template_index)
                      for h in {node_hook(n) for n in node_list}} for kind in kinds}
    return [Row((node_edit(node, sources[kind][node_hook(node)]),)) for kind in kinds for node in node_list]


def readouts(model, final: torch.Tensor, prompts: PromptSet) -> dict[str, torch.Tensor]:
    """[n, B, d_model] final residuals -> LD, copy LD, P(correct), logit(clean answer), each [n, B]."""
    device = final.device
    pos, neg = (t.to(device) for t in answer_pair(prompts, "clean_vs_corrupted"))
    copy = prompts.copy_ids.to(device)
    out = {"logit_diff": [], "copy_logit_diff": [], "p_correct": [], "answer_logit": []}
    for start in range(0, final.shape[0], READOUT_ROWS):
        logits = final_logits(model, final[start:start + READOUT_ROWS])  # [r, B, V]
        out["logit_diff"].append(_pick(logits, pos) - _pick(logits, neg))
        out["answer_logit"].append(_pick(logits, pos))
        out["copy_logit_diff"].append(_pick(logits, pos) - _pick(logits, copy))
        out["p_correct"].append(_pick(torch.softmax(logits.float(), -1), pos))
    return {k: torch.cat(v) for k, v in out.items()}


def _pick(values: torch.Tensor, ids: torch.Tensor) -> torch.Tensor:
    """[r, B, V], [B] -> [r, B]: each prompt's column."""
    return values.gather(-1, ids.expand(values.shape[0], -1)[..., None])[..., 0]


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


def noising_and_denoising(model, prompts: PromptSet, node_list, clean: Base,
                          corrupted: Base) -> dict[str, np.ndarray]:
    """Each node noised (clean run, its output from the corrupted twin) and denoised (corrupted run, its output from
    the clean prompt): LD and logit(clean answer) [N, B] each, and their shares of the gap [N]."""
    out = {}
    for word, base, source in (("noising", clean, corrupted), ("denoising", corrupted, clean)):
        rows = [Row((node_edit(node, source.cache[node_hook(node)]),)) for node in node_list]
        final, _ = run_rows(model, base, rows)
        reads = readouts(model, final, prompts)
        out[f"{word}_logit_diff"], out[f"{word}_answer_logit"] = numpy(reads["logit_diff"]), numpy(
            reads["answer_logit"])
    return out
