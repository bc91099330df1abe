"""The reference for `edge_runs.run_edges`: one edge at a time, by full `run_with_hooks` forwards (a different code
path: no staggering, slots, copies or tiling). Slow; for tests and benchmarks."""

from __future__ import annotations

import torch

from analyses.common.precision import widen
from analyses.engine.edges import QKV, EdgeSet, Pair, hook_of


@torch.no_grad()
def looped_edge_patching(model, pair: Pair, es: EdgeSet, edges: list[tuple[int, int]]) -> torch.Tensor:
    """LD [E, B] of run X with each edge (u, v) alone carrying Y's activation, by full `run_with_hooks` forwards:
    D_u from a forward with u's Y value, v's input from a forward with D_u subtracted before v, then a forward with
    v's input replaced. The reference for `run_edges` (a different code path: no staggering, slots or tiling)."""
    tokens = pair.x.tokens
    out = []
    for u, v in edges:
        d = _looped_difference(model, pair, es, u)
        rkind, rl, unit = es.receivers[v]
        if rkind == "logits":
            logits = model.run_with_hooks(tokens, fwd_hooks=[(f"blocks.{rl - 1}.hook_resid_post",
                                                                lambda a, hook, d=d: a - d)])
        else:
            value = _looped_receiver_value(model, pair, es, u, v, d)
            name = hook_of(rkind, rl)

            def put(act, hook, value=value, unit=unit, kind=rkind):
                act = act.clone()
                if kind in QKV:
                    act[:, :, unit] = value[:, :, unit]
                else:
                    act[:] = value
                return act

            logits = model.run_with_hooks(tokens, fwd_hooks=[(name, put)])
        rows = torch.arange(logits.shape[0], device=logits.device)
        out.append(widen(logits[rows, -1, pair.pos_ids] - logits[rows, -1, pair.neg_ids]))
    return torch.stack(out)


def _looped_difference(model, pair, es, u) -> torch.Tensor:
    kind, layer, h = es.senders[u]
    if kind == "input":
        return pair.x.cache["blocks.0.hook_resid_pre"] - pair.y["blocks.0.hook_resid_pre"]
    if kind == "mlp":
        name = f"blocks.{layer}.hook_mlp_out"
        return pair.x.cache[name] - pair.y[name]
    z, attn = f"blocks.{layer}.attn.hook_z", f"blocks.{layer}.hook_attn_out"
    store = {}

    def swap(act, hook):
        act = act.clone()
        act[:, :, h] = pair.y[z][:, :, h]
        return act

    def keep(act, hook):
        store["a"] = act
        return act

    model.run_with_hooks(pair.x.tokens, fwd_hooks=[(z, swap), (attn, keep)])
    return pair.x.cache[attn] - store["a"]


def _looped_receiver_value(model, pair, es, u, v, d) -> torch.Tensor:
    """v's q/k/v (or MLP output) when v alone reads its input minus d."""
    rkind, rl, _ = es.receivers[v]
    store = {}

    def keep(act, hook):
        store["a"] = act.clone()
        return act

    if rkind == "mlp" and not es.parallel:
        point = f"blocks.{rl}.hook_resid_mid"  # an MLP reads resid_mid; only its own input changes
    else:
        point = f"blocks.{rl}.hook_resid_pre"
    hooks = [(point, lambda a, hook: a - d), (hook_of(rkind, rl), keep)]
    model.run_with_hooks(pair.x.tokens, fwd_hooks=hooks)  # only the receiver's hook is read
    return store["a"]
