"""Edges of the computational graph: their set, attribution scores (EAP, EAP-IG) and exact runs with some edges
carrying the twin run's activations. Not an analysis; `analyses.edge_circuits` uses it. Torch only.

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

Runs with removed edges (`run_edges`; MIB's counterfactual ablation). Run X; a removed edge u->v delivers u's Y
activation to v instead of its X one, so v reads
    input_v = (its residual stream in this run) − sum over removed u->v of D_u(this run, Y),
and everything downstream is recomputed. A circuit = the edges kept, evaluated with X = clean, Y = corrupted
(MIB). Exact patching of one edge e is the run X = corrupted, Y = clean with e alone removed: e carries the clean
activation and nothing else changes (the denoising direction of the report's node patching).
One block call per layer serves many circuits at once: the batch holds, per circuit, the real rows plus one copy
of the block per receiver with removed edges (its input corrected), whose q / k / v / MLP output hooks write into
the real rows, and one copy per head whose D is needed (that head's z set to Y).
Circuits join the batch at the first layer where they differ from X (edges into earlier layers are
all kept), as in `analyses.intervention`.

Scores (`attribution_scores`): the first-order estimate of what patching one edge does on the corrupted run,
    EAP(u->v)    = Δ_u · ∂LD/∂input_v, summed over positions and d_model, per prompt  (at the corrupted run)
    EAP-IG(u->v) = Δ_u · (1/m) sum_{k=0}^{m-1} ∂LD/∂input_v  at embeddings corrupted + (k/m)(clean − corrupted)
with Δ_u = −D_u(corrupted, clean) (u's clean activation minus its corrupted one) and m steps (Hanna et al. 2024,
EAP-IG on the inputs; m = 1 is EAP). ∂LD/∂input_v per receiver: one backward to the q/k/v/MLP-output hooks, then
per layer one block call with one copy of the block's input per receiver, each copy's loss the receiver's hook
activation dotted with its upstream gradient (so a copy's input gradient is that receiver's alone).

LD = logit(clean answer) − logit(corrupted answer) at the final position, per prompt.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import partial

import numpy as np
import torch

from analyses.intervention import (
    CPU_TOKENS_PER_CHUNK,
    Base,
    Edit,
    Row,
    _block,
    collect_base,
    final_logit_diff,
    run_rows,
)
from analyses.precision import widen

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


# ---- runs with removed edges ------------------------------------------------------------------------------------


def _hook_of(kind: str, layer: int) -> str:
    return f"blocks.{layer}.attn.hook_{kind}" if kind in QKV else f"blocks.{layer}.hook_mlp_out"


@torch.no_grad()
def run_edges(model, pair: Pair, es: EdgeSet, removed: torch.Tensor, base_d: torch.Tensor | None = None,
              chunk_rows: int | None = None) -> torch.Tensor:
    """LD [C, B] of run X with, per circuit c, the edges removed[c] ([C, U, V] bool) carrying Y's activations.

    base_d: D(X, Y) of every sender on the unchanged X (`sender_differences`; computed here when a circuit starts
    after layer 0 and none is given). Circuits are grouped by the layer they start at and cut into chunks of at
    most chunk_rows sequences (a circuit's rows at a layer: its real rows plus one copy per receiver and head it
    needs there).
    """
    device = pair.x.tokens.device
    removed = removed.to(device) & torch.as_tensor(es.valid, device=device)
    C, B = removed.shape[0], pair.x.n_prompts
    out = torch.empty(C, B, device=device, dtype=torch.float32)
    first = [_first_layer(es, removed[c]) for c in range(C)]
    if base_d is None and any(f > 0 for f in first):
        base_d = sender_differences(model, pair, es)
    budget = chunk_rows or 4 * CPU_TOKENS_PER_CHUNK // max(1, pair.x.tokens.shape[1])
    for layer in sorted(set(first)):
        members = [c for c in range(C) if first[c] == layer]
        chunk, rows = [], 0
        for c in members:
            need = B * (2 + int(removed[c].any(0).sum()) + int(removed[c].any(1).sum()))  # a rough upper bound
            if chunk and rows + need > budget:
                out[chunk] = _run_chunk(model, pair, es, removed[chunk], layer, base_d)
                chunk, rows = [], 0
            chunk.append(c)
            rows += need
        out[chunk] = _run_chunk(model, pair, es, removed[chunk], layer, base_d)
    return out


def _first_layer(es: EdgeSet, removed: torch.Tensor) -> int:
    """The first layer whose receivers read a removed edge (n_layers when only the logits do, or none)."""
    into = removed.any(0).nonzero().flatten().tolist()
    return min([es.receivers[v][1] for v in into] + [es.n_layers])


def _run_chunk(model, pair: Pair, es: EdgeSet, removed: torch.Tensor, first: int,
               base_d: torch.Tensor | None) -> torch.Tensor:
    """LD [C, B] of C circuits that all start at layer `first`."""
    x, B, L = pair.x, pair.x.n_prompts, es.n_layers
    C = removed.shape[0]
    shared = [u for u, (_, sl, _) in enumerate(es.senders) if sl < first]
    if base_d is None:  # first == 0: only the input precedes, measured on X directly
        base = (x.cache["blocks.0.hook_resid_pre"] - pair.y["blocks.0.hook_resid_pre"])[None]
    else:
        base = base_d[shared]
    diffs = _Differences(removed.float(), shared, base.float())
    if first < L:
        resid = x.cache[f"blocks.{first}.hook_resid_pre"].repeat(C, 1, 1)  # [C*B, S, d], circuit-major
    else:
        resid = x.cache[f"blocks.{L - 1}.hook_resid_post"].repeat(C, 1, 1)
    for layer in range(first, L):
        resid = _layer(model, pair, es, layer, resid, removed, diffs)
    final = resid.view(C, B, *resid.shape[1:])[:, :, -1]
    logits_v = len(es.receivers) - 1
    for c in range(C):
        if removed[c, :, logits_v].any():
            final[c] = final[c] - diffs.correction(c, [logits_v])[0].view(B, *resid.shape[1:])[:, -1]
    ld = final_logit_diff(model, final.flatten(0, 1), pair.pos_ids.repeat(C), pair.neg_ids.repeat(C))
    return ld.view(C, B).float()


class _Differences:
    """D_u per circuit: from the unchanged X for senders before the first layer run, then measured in the run."""

    def __init__(self, removed: torch.Tensor, shared: list[int], base: torch.Tensor):
        self.removed = removed  # [C, U, V] float
        self.shared, self.base = shared, base.flatten(1)  # [len(shared), B*S*d]
        self.run: dict[int, torch.Tensor] = {}  # sender -> [C, B*S*d] (zero for circuits that do not need it)

    def correction(self, c: int, receivers: list[int]) -> torch.Tensor:
        """[len(receivers), B*S*d]: sum over u with u->v removed in circuit c of D_u."""
        weights = self.removed[c][:, receivers]  # [U, R]
        out = weights[self.shared].T @ self.base
        used = [u for u in self.run if bool(weights[u].any())]
        if used:
            out = out + weights[used].T @ torch.stack([self.run[u][c] for u in used])
        return out


def _layer(model, pair: Pair, es: EdgeSet, layer: int, resid: torch.Tensor, removed: torch.Tensor,
           diffs: _Differences) -> torch.Tensor:
    """One block for C circuits. Rows: the real rows of every circuit (circuit-major), then per circuit one copy
    per receiver of this layer with removed edges (q/k/v: its input corrected; MLP: its resid_mid corrected, or its
    input in a parallel block) and one copy per head of this layer with removed outgoing edges (its z set to Y).
    Hooks write each copy's q/k/v or MLP output into its circuit's real rows. Returns the real rows [C*B, S, d]."""
    B, C = pair.x.n_prompts, removed.shape[0]
    shape = resid.shape[1:]
    dev = resid.device
    receivers = es.receivers_of_layer(layer)
    heads = [u for u, (kind, sl, _) in enumerate(es.senders) if kind == "head" and sl == layer]
    inputs, copies = [resid], []  # copies: (circuit, "recv"|"head", index)
    mlp_corr: dict[int, torch.Tensor] = {}  # circuit -> [B, S, d]
    for c in range(C):
        mine = [v for v in receivers if bool(removed[c, :, v].any())]
        if mine:
            corr = diffs.correction(c, mine).to(resid.dtype).view(len(mine), B, *shape)
        real = resid[c * B:(c + 1) * B]
        for i, v in enumerate(mine):
            copies.append((c, "recv", v))
            is_mlp = es.receivers[v][0] == "mlp"
            if is_mlp and not es.parallel:
                mlp_corr[c] = corr[i]
                inputs.append(real)
            else:
                inputs.append(real - corr[i])
        for u in heads:
            if bool(removed[c, u].any()):
                copies.append((c, "head", u))
                inputs.append(real)
    batch = torch.cat(inputs)
    index = _CopyIndex(es, copies, C, B, dev)
    kept: dict[str, torch.Tensor] = {}
    z_y = pair.y[f"blocks.{layer}.attn.hook_z"]

    def write_qkv(act, hook, kind):
        dst, src, unit = index.qkv[kind]
        act = act.clone()
        act[dst, :, unit] = act[src, :, unit]
        return act

    def write_z(act, hook):
        act = act.clone()
        act[index.head_rows] = act[index.head_real]
        act[index.head_rows, :, index.head_unit] = z_y[index.head_prompt, :, index.head_unit]
        return act

    def keep_attn(act, hook):  # D of each head copy: the real rows' attention output minus the copy's
        kept["head_d"] = (act[index.head_real] - act[index.head_rows]).view(len(index.heads), -1)
        return act

    def write_mid(act, hook):
        act = act.clone()
        value = act[index.mlp_real] - torch.cat([mlp_corr[c] for c in index.mlp_circuits])
        if index.heads:  # this layer's heads feed its MLP: their D is measured in this very call
            weights = torch.tensor([[float(c == c2 and bool(removed[c, u, v])) for c2, u in index.heads]
                                    for c, v in index.mlps], device=dev, dtype=act.dtype)
            value = value - (weights @ kept["head_d"]).view(-1, *act.shape[1:])
        act[index.mlp_rows] = value
        return act

    def write_mlp(act, hook):
        act = act.clone()
        act[index.mlp_real] = act[index.mlp_rows]
        kept["mlp"] = act[:C * B]
        return act

    hooks = [(f"blocks.{layer}.attn.hook_{kind}", partial(write_qkv, kind=kind)) for kind in index.qkv]
    if index.heads:
        hooks += [(f"blocks.{layer}.attn.hook_z", write_z), (f"blocks.{layer}.hook_attn_out", keep_attn)]
    if index.mlps and not es.parallel:
        hooks.append((f"blocks.{layer}.hook_resid_mid", write_mid))
    hooks.append((f"blocks.{layer}.hook_mlp_out", write_mlp))
    with model.hooks(fwd_hooks=hooks):
        out = _block(model, pair.x, layer, batch)
    for k, (c, u) in enumerate(index.heads):
        diffs.run.setdefault(u, torch.zeros(C, kept["head_d"].shape[1], device=dev, dtype=torch.float32))[c] = \
            kept["head_d"][k].float()
    mlp_u = es.senders.index(("mlp", layer, 0))
    if removed[:, mlp_u].any():
        y_mlp = pair.y[f"blocks.{layer}.hook_mlp_out"].repeat(C, 1, 1)
        diffs.run[mlp_u] = (kept["mlp"] - y_mlp).reshape(C, -1).float()
    return out[:C * B]


class _CopyIndex:
    """Row indices of one layer's copies, so that each hook is a few tensor operations whatever their number.

    Rows: the real rows of C circuits (circuit c: rows c*B .. c*B+B-1), then B rows per copy in `copies` order."""

    def __init__(self, es: EdgeSet, copies: list[tuple[int, str, int]], C: int, B: int, dev):
        b = torch.arange(B, device=dev)

        def rows(k: int) -> torch.Tensor:
            return C * B + k * B + b

        def real(c: int) -> torch.Tensor:
            return c * B + b

        qkv: dict[str, list] = {}
        self.heads: list[tuple[int, int]] = []  # (circuit, sender) per head copy
        self.mlps: list[tuple[int, int]] = []  # (circuit, receiver) per MLP copy
        head_rows, head_real, head_unit, mlp_rows, mlp_real = [], [], [], [], []
        for k, (c, what, i) in enumerate(copies):
            if what == "head":
                self.heads.append((c, i))
                head_rows.append(rows(k))
                head_real.append(real(c))
                head_unit.append(torch.full((B,), es.senders[i][2], device=dev))
            elif es.receivers[i][0] == "mlp":
                self.mlps.append((c, i))
                mlp_rows.append(rows(k))
                mlp_real.append(real(c))
            else:
                kind, _, unit = es.receivers[i]
                qkv.setdefault(kind, []).append((real(c), rows(k), torch.full((B,), unit, device=dev)))
        self.qkv = {kind: tuple(torch.cat(parts) for parts in zip(*items)) for kind, items in qkv.items()}
        empty = torch.zeros(0, dtype=torch.long, device=dev)
        self.head_rows = torch.cat(head_rows) if head_rows else empty
        self.head_real = torch.cat(head_real) if head_real else empty
        self.head_unit = torch.cat(head_unit) if head_unit else empty
        self.head_prompt = self.head_rows % B if head_rows else empty  # copy rows are B-aligned: row % B = prompt
        self.mlp_rows = torch.cat(mlp_rows) if mlp_rows else empty
        self.mlp_real = torch.cat(mlp_real) if mlp_real else empty
        self.mlp_circuits = [c for c, _ in self.mlps]


def single_edge_masks(es: EdgeSet, edges: list[tuple[int, int]]) -> torch.Tensor:
    """[E, U, V] bool: one mask per edge (u, v) with that edge alone removed."""
    masks = torch.zeros(len(edges), *es.valid.shape, dtype=torch.bool)
    for i, (u, v) in enumerate(edges):
        masks[i, u, v] = True
    return masks


# ---- attribution scores ---------------------------------------------------------------------------------------


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

    names = [_hook_of(k, layer) for layer in range(L) for k in (*QKV, "mlp")] + [f"blocks.{L - 1}.hook_resid_post"]
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

        hooks = [(_hook_of(k, layer), partial(capture, name=_hook_of(k, layer))) for k in (*QKV, "mlp")]
        if not es.parallel:
            hooks.append((f"blocks.{layer}.hook_resid_mid", mid_leaf))
        with model.hooks(fwd_hooks=hooks):
            _block(model, pair.x, layer, leaf)
        loss = 0.0
        for i, v in enumerate(mine):
            kind, _, unit = es.receivers[v]
            name = _hook_of(kind, layer)
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


# ---- the reference: one edge at a time, full forwards -----------------------------------------------------------


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
            name = _hook_of(rkind, rl)

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
    hooks = [(point, lambda a, hook: a - d), (_hook_of(rkind, rl), keep)]
    model.run_with_hooks(pair.x.tokens, fwd_hooks=hooks)  # only the receiver's hook is read
    return store["a"]
