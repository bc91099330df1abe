"""Attribution patching (Nanda 2023, "Attribution Patching"; Syed et al. 2023, EAP): the first-order Taylor estimate

    LD_patched - LD_corrupted ~ (a_clean - a_corrupted) . dLD/da     at the corrupted run,

for every activation a of the patching sweeps (`analyses.engine.sweeps`) at once, from one corrupted forward and one
backward pass (the clean activations come from the runs). The prompts are independent rows, so a batch that runs
out of memory is split into halves of prompts and retried (`chunks.Chunker`); with enough memory it is one pass.
"""

from __future__ import annotations

from functools import partial

import torch

from analyses.common.metrics import logit_diff
from analyses.common.precision import widen
from analyses.engine.chunks import Chunker
from analyses.engine.sweeps import SWEEPS, Runs, hook_name


def attribution_sweeps(model, runs: Runs, sweeps=tuple(SWEEPS)) -> dict[str, torch.Tensor]:
    """First-order estimate of LD_patched - LD_corrupted per sweep, [layers, units, B].

    (a_clean - a_corrupted) . dLD/da, the gradient taken on the corrupted run and summed over every axis of
    the activation except batch and unit. One corrupted forward + one backward (the clean activations come
    from `runs`). Gradients are taken with torch.autograd.grad, so no parameter's .grad is touched, and grad
    mode is switched on only inside this function.
    """
    B = runs.n_prompts
    parts = [part for _, part in Chunker(B).map(range(B), partial(_attribution, model, runs, sweeps))]
    return {s: torch.cat([part[s] for part in parts], dim=-1) for s in sweeps}


def _attribution(model, runs: Runs, sweeps, prompts: list[int]) -> dict[str, torch.Tensor]:
    """The estimate on some prompts, [layers, units, len(prompts)] per sweep (all prompts: the runs' own tensors)."""
    pick = slice(None) if prompts == list(range(runs.n_prompts)) else torch.tensor(prompts)
    names = [hook_name(s, layer) for s in sweeps for layer in range(runs.n_layers)]
    acts: dict[str, torch.Tensor] = {}

    def keep(act, hook, name):
        if not act.requires_grad:  # frozen parameters: make the activation a leaf so the graph still reaches it
            act = act.detach().requires_grad_(True)
        acts[name] = act
        return act  # returning it makes the downstream computation depend on this exact tensor

    with torch.enable_grad():
        with model.hooks(fwd_hooks=[(n, partial(keep, name=n)) for n in names]):
            logits = model(runs.corrupted_tokens[pick])
        ld = logit_diff(logits[:, -1], runs.pos_ids[pick], runs.neg_ids[pick])
        grads = torch.autograd.grad(ld.sum(), [acts[n] for n in names], allow_unused=True)
    grads = dict(zip(names, grads))
    out = {}
    for s in sweeps:
        dim = SWEEPS[s].dim
        per_layer = []
        for layer in range(runs.n_layers):
            name = hook_name(s, layer)
            clean, corrupted = runs.clean[name][pick], runs.corrupted[name][pick]
            grad = grads[name] if grads[name] is not None else torch.zeros_like(clean)
            term = (widen(clean - corrupted) * widen(grad.detach())).movedim(dim, 1)
            per_layer.append(term.flatten(2).sum(-1).T)  # [units, prompts]
        out[s] = torch.stack(per_layer)
    return out
