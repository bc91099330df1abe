"""Attribution scores of every edge at once (EAP, EAP-IG); the graph and the pair of runs: `analyses.engine.edges`.

The first-order estimate of what patching one edge does on the corrupted run,
    EAP(u->v)    = Δ_u · ∂LD/∂input_v, summed over positions and d_model, per prompt  (at the corrupted run)
    EAP-IG(u->v) = Δ_u · (1/m) sum_{k=0}^{m-1} ∂LD/∂input_v  at embeddings corrupted + (k/m)(clean − corrupted)
with Δ_u = −D_u(corrupted, clean) (u's clean activation minus its corrupted one) and m steps (Hanna et al. 2024,
EAP-IG on the inputs; m = 1 is EAP). ∂LD/∂input_v per receiver: one backward to the q/k/v/MLP-output hooks, then
per layer one block call with one copy of the block's input per receiver, each copy's loss the receiver's hook
activation dotted with its upstream gradient (so a copy's input gradient is that receiver's alone).

LD = logit(clean answer) − logit(corrupted answer) at the final position, per prompt.
"""

from __future__ import annotations

from functools import partial

import torch

from analyses.common.precision import widen
from analyses.engine.blocks import run_block
from analyses.engine.edges import QKV, EdgeSet, Pair, hook_of, sender_differences


def attribution_scores(model, corrupted: Pair, es: EdgeSet, steps: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(EAP, EAP-IG), each [U, V, B]: estimates of LD(edge u->v patched clean on the corrupted run) − LD_corrupted.

    corrupted: the pair X = corrupted, Y = clean. EAP is EAP-IG's first step (the gradient at the corrupted run).
    0 where (u, v) is not an edge."""
    delta = widen(-sender_differences(model, corrupted, es))  # [U, B, S, d]: clean − corrupted
    x0 = corrupted.x.cache["blocks.0.hook_resid_pre"]
    y0 = corrupted.y["blocks.0.hook_resid_pre"]
    valid = torch.as_tensor(es.valid, device=delta.device)[:, :, None]
    grads, first = None, None
    for k in range(steps):
        g = widen(receiver_gradients(model, corrupted, es, x0 + (k / steps) * (y0 - x0)))
        first = g if first is None else first
        grads = g if grads is None else grads + g
    eap = torch.einsum("ubsd,vbsd->uvb", delta, first) * valid
    return eap, torch.einsum("ubsd,vbsd->uvb", delta, grads / steps) * valid


def receiver_gradients(model, pair: Pair, es: EdgeSet, embeddings: torch.Tensor) -> torch.Tensor:
    """[V, B, S, d] ∂LD/∂input_v on the run of pair.x's tokens with resid_pre of block 0 set to `embeddings`."""
    L = es.n_layers
    acts, resids = {}, {}

    def keep(act, hook, name):  # by the name asked for: a hook may report an alias of it
        acts[name] = act
        return act

    def record(act, hook, name):
        resids[name] = act.detach()
        return act

    def set_input(act, hook):
        return embeddings.detach().clone().requires_grad_(True)

    names = [hook_of(k, layer) for layer in range(L) for k in (*QKV, "mlp")] + [f"blocks.{L - 1}.hook_resid_post"]
    recorded = [f"blocks.{layer}.hook_resid_{p}" for layer in range(L) for p in ("pre", "mid")
                if p == "pre" or not es.parallel]
    hooks = [("blocks.0.hook_resid_pre", set_input)] + [(n, partial(keep, name=n)) for n in names]
    hooks += [(n, partial(record, name=n)) for n in recorded]
    with torch.enable_grad():
        with model.hooks(fwd_hooks=hooks):
            logits = model(pair.x.tokens)
        rows = torch.arange(logits.shape[0], device=logits.device)
        ld = logits[rows, -1, pair.pos_ids] - logits[rows, -1, pair.neg_ids]
        upstream = dict(zip(names, torch.autograd.grad(ld.sum(), [acts[n] for n in names], allow_unused=True)))
    out = torch.zeros(len(es.receivers), *embeddings.shape, device=embeddings.device, dtype=embeddings.dtype)
    out[-1] = upstream[names[-1]]
    for layer in range(L):
        mine = es.receivers_of_layer(layer)
        out[mine] = _input_gradients(model, pair, es, layer, mine, resids, upstream)
    return out


def _input_gradients(model, pair, es, layer, mine, resids, upstream) -> torch.Tensor:
    """[len(mine), B, S, d]: one copy of block `layer`'s input per receiver, each loss the receiver's own."""
    R = len(mine)
    pre = resids[f"blocks.{layer}.hook_resid_pre"]
    n = pre.shape[0]
    with torch.enable_grad():
        leaf = pre.repeat(R, 1, 1).requires_grad_(True)
        mids = {}
        captured = {}

        def capture(act, hook, name):
            captured[name] = act
            return act

        def mid_leaf(act, hook):
            mids["leaf"] = resids[f"blocks.{layer}.hook_resid_mid"].repeat(R, 1, 1).requires_grad_(True)
            return mids["leaf"]

        hooks = [(hook_of(k, layer), partial(capture, name=hook_of(k, layer))) for k in (*QKV, "mlp")]
        if not es.parallel:
            hooks.append((f"blocks.{layer}.hook_resid_mid", mid_leaf))
        with model.hooks(fwd_hooks=hooks):
            run_block(model, pair.x, layer, leaf)
        loss = 0.0
        for i, v in enumerate(mine):
            kind, _, unit = es.receivers[v]
            name = hook_of(kind, layer)
            g = upstream[name]
            if g is None:
                continue
            part = captured[name][i * n:(i + 1) * n]
            if kind in QKV:
                loss = loss + (part[:, :, unit] * g[:, :, unit]).sum()
            else:
                loss = loss + (part * g).sum()
        inputs = [leaf] + ([mids["leaf"]] if "leaf" in mids else [])
        if not isinstance(loss, torch.Tensor):
            return torch.zeros(R, *pre.shape, device=pre.device, dtype=pre.dtype)
        grads = torch.autograd.grad(loss, inputs, allow_unused=True)
    g_pre = grads[0] if grads[0] is not None else torch.zeros_like(leaf)
    g_mid = grads[1] if len(grads) > 1 and grads[1] is not None else None
    out = g_pre.view(R, n, *pre.shape[1:]).clone()
    for i, v in enumerate(mine):
        if es.receivers[v][0] == "mlp" and g_mid is not None:
            out[i] = g_mid[i * n:(i + 1) * n]
    return out.detach()


