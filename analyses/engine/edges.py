"""The graph of edges and the pair of runs they are measured on. Not an analysis; `analyses.edge_circuits` uses it.

Graph (Elhage et al. 2021; Conmy et al. 2023, ACDC; Syed et al. 2023, EAP; Hanna et al. 2024, EAP-IG; MIB 2025).
  senders    "input" (the embeddings: resid_pre of block 0), each head's output, each MLP's output
  receivers  each head's query input, each key/value head's key and value input (grouped-query heads share one
             key/value receiver per key/value head), each MLP's input, the logits (the final residual stream)
  edge u->v  u writes before v reads: a head of layer L feeds the q/k/v of later layers, the MLP of its own layer
             (sequential blocks) or of later layers only (parallel attention and MLP, GPT-NeoX / GPT-J: their
             MLP reads the block's input, not the attention output), and the logits; an MLP of layer L feeds
             layers > L and the logits; the input feeds everything.

A sender's activation is what it adds to the residual stream. Heads: with a norm after attention (Gemma 2/3) the
heads' outputs are not additive, so a head's difference between two runs X and Y is measured exactly, as the
change in the layer's attention output when that head alone takes its Y value (z) with every other head at X:
    D_u(X, Y) = attn_out(X) − attn_out(X with z_u from Y)              (= (z_u^X − z_u^Y) W_O[u] without the norm)
    D_u       = mlp_out^X − mlp_out^Y  (MLP),   resid_pre0^X − resid_pre0^Y  (input).
The heads' D on the unchanged X are rows of the one engine (`analyses.engine.rows.run_rows`): one row per head with
its z from Y, captured at the layer's attention output.

Runs with removed edges: `analyses.engine.edge_runs`; attribution scores: `analyses.engine.edge_scores`; the
one-edge-at-a-time reference: `analyses.engine.edge_reference`.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from analyses.engine.readout import final_logit_diff
from analyses.engine.rows import Base, Edit, Row, collect_base, run_rows

QKV = ("q", "k", "v")

# ---- the edge set ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class EdgeSet:
    """Senders U, receivers V and which (u, v) are edges. Names follow MIB: input, a{L}.h{H}, m{L}, logits."""

    n_layers: int
    n_heads: int
    n_kv: int  # key/value heads (= n_heads without grouped-query attention)
    parallel: bool  # attention and MLP read the same stream (no MLP input between them)
    senders: tuple[tuple[str, int, int], ...]  # ("input", -1, 0) | ("head", L, h) | ("mlp", L, 0)
    receivers: tuple[tuple[str, int, int], ...]  # ("q"|"k"|"v", L, unit) | ("mlp", L, 0) | ("logits", n_layers, 0)
    valid: np.ndarray  # [U, V] bool

    @property
    def n_edges(self) -> int:
        return int(self.valid.sum())

    def sender_name(self, u: int) -> str:
        kind, layer, h = self.senders[u]
        return {"input": "input", "head": f"a{layer}.h{h}", "mlp": f"m{layer}"}[kind]

    def receiver_name(self, v: int) -> str:
        """a1.h2<q>, a1.kv0<k> (a key/value head), m1, logits."""
        kind, layer, unit = self.receivers[v]
        if kind in QKV:  # a key/value head of a grouped-query model is named kv{u}
            head = "h" if kind == "q" or self.n_kv == self.n_heads else "kv"
            return f"a{layer}.{head}{unit}<{kind}>"
        return f"m{layer}" if kind == "mlp" else "logits"

    def edge_name(self, u: int, v: int) -> str:
        return f"{self.sender_name(u)}->{self.receiver_name(v)}"

    def receivers_of_layer(self, layer: int) -> list[int]:
        return [i for i, r in enumerate(self.receivers) if r[1] == layer and r[0] != "logits"]


def edge_set(model) -> EdgeSet:
    cfg = model.cfg
    L, H = cfg.n_layers, cfg.n_heads
    n_kv = getattr(cfg, "n_key_value_heads", None) or H
    parallel = "blocks.0.hook_resid_mid" not in model.hook_dict
    senders = [("input", -1, 0)]
    receivers = []
    for layer in range(L):
        senders += [("head", layer, h) for h in range(H)] + [("mlp", layer, 0)]
        receivers += ([("q", layer, h) for h in range(H)] + [("k", layer, u) for u in range(n_kv)]
                      + [("v", layer, u) for u in range(n_kv)] + [("mlp", layer, 0)])
    receivers.append(("logits", L, 0))
    valid = np.zeros((len(senders), len(receivers)), dtype=bool)
    for i, (skind, sl, _) in enumerate(senders):
        for j, (rkind, rl, _) in enumerate(receivers):
            same_layer_mlp = skind == "head" and rkind == "mlp" and rl == sl and not parallel
            valid[i, j] = rl > sl or same_layer_mlp
    return EdgeSet(L, H, int(n_kv), parallel, tuple(senders), tuple(receivers), valid)


# ---- the two runs ---------------------------------------------------------------------------------------------


def hook_names(n_layers: int) -> list[str]:
    return [f"blocks.{layer}.{name}" for layer in range(n_layers)
            for name in ("attn.hook_z", "hook_attn_out", "hook_mlp_out")]


@dataclass
class Pair:
    """A run X (the base rows start from) and its twin Y, on B prompts with the same answers."""

    x: Base  # every resid_pre, the last resid_post, z, attn_out, mlp_out of X; block arguments of X
    y: dict[str, torch.Tensor]  # the same hooks on Y (and resid_pre of block 0)
    pos_ids: torch.Tensor  # [B] clean answer
    neg_ids: torch.Tensor  # [B] corrupted answer


@torch.no_grad()
def make_pair(model, x_tokens: torch.Tensor, y_tokens: torch.Tensor, pos_ids, neg_ids) -> Pair:
    L = model.cfg.n_layers
    names = hook_names(L)
    x = collect_base(model, x_tokens, names)
    wanted = [*names, "blocks.0.hook_resid_pre", f"blocks.{L - 1}.hook_resid_post"]
    _, cache = model.run_with_cache(y_tokens.to(x.tokens.device), names_filter=wanted)
    device = x.tokens.device
    return Pair(x=x, y={n: cache[n] for n in wanted}, pos_ids=pos_ids.to(device), neg_ids=neg_ids.to(device))


def pair_ld(model, pair: Pair, twin: bool = False) -> torch.Tensor:
    """[B] LD of X (or of Y)."""
    last = f"blocks.{pair.x.n_layers - 1}.hook_resid_post"
    final = (pair.y if twin else pair.x.cache)[last][:, -1]
    return final_logit_diff(model, final, pair.pos_ids, pair.neg_ids)


@torch.no_grad()
def sender_differences(model, pair: Pair, es: EdgeSet) -> torch.Tensor:
    """[U, B, S, d_model] D_u(X, Y) of every sender on the unchanged run X (see the module docstring)."""
    x, y = pair.x, pair.y
    out = [None] * len(es.senders)
    out[0] = x.cache["blocks.0.hook_resid_pre"] - y["blocks.0.hook_resid_pre"]
    for layer in range(es.n_layers):
        z, attn = f"blocks.{layer}.attn.hook_z", f"blocks.{layer}.hook_attn_out"
        rows = [Row((Edit(z, (slice(None), h), y[z][:, :, h]),)) for h in range(es.n_heads)]
        _, captured = run_rows(model, x, rows, capture=(attn,), last=layer)
        for h in range(es.n_heads):
            out[es.senders.index(("head", layer, h))] = x.cache[attn] - captured[attn][h]
        mlp = f"blocks.{layer}.hook_mlp_out"
        out[es.senders.index(("mlp", layer, 0))] = x.cache[mlp] - y[mlp]
    return torch.stack(out)



def hook_of(kind: str, layer: int) -> str:
    """The hook a receiver's value is read at: its q / k / v, or its MLP's output."""
    return f"blocks.{layer}.attn.hook_{kind}" if kind in QKV else f"blocks.{layer}.hook_mlp_out"


def single_edge_masks(es: EdgeSet, edges: list[tuple[int, int]]) -> torch.Tensor:
    """[E, U, V] bool: one mask per edge (u, v) with that edge alone removed."""
    masks = torch.zeros(len(edges), *es.valid.shape, dtype=torch.bool)
    for i, (u, v) in enumerate(edges):
        masks[i, u, v] = True
    return masks

