"""Runs with removed edges (MIB's counterfactual ablation), many circuits batched; the graph: `analyses.engine.edges`.

Run X; a removed edge u->v delivers u's Y activation to v instead of its X one, so v reads
    input_v = (its residual stream in this run) − sum over removed u->v of D_u(this run, Y),
and everything downstream is recomputed. A circuit = the edges kept, evaluated with X = clean, Y = corrupted
(MIB). Exact patching of one edge e is the run X = corrupted, Y = clean with e alone removed: e carries the clean
activation and nothing else changes (the denoising direction of the report's node patching).
Two block calls per layer serve many circuits at once. First the q / k / v receivers with removed edges: one copy of
the block's input per receiver (corrected), run only as far as the q / k / v projections (the call stops there:
the rest of the block would be thrown away). Then the batch holds, per circuit, the real rows (their q / k / v
receivers' values written in), one copy per MLP receiver with removed edges (its input corrected), whose MLP
output hook writes into the real rows, and one copy per head whose D is needed (that head's z set to Y). Rows
write into other rows, which
an `Edit` (a value fixed before the run) cannot say, so edges have their own batch layout; they share the engine's
block calls (`blocks.run_block`), its base run (`rows.Base`) and its chunks, which halve on out-of-memory
(`chunks.Chunker`). Circuits join the batch at the first layer where they differ from X (edges into earlier layers
are all kept), as rows do in `analyses.engine.rows`.

LD = logit(clean answer) − logit(corrupted answer) at the final position, per prompt.
"""

from __future__ import annotations

from functools import partial

import torch

from analyses.engine.blocks import run_block
from analyses.engine.chunks import CPU_TOKENS_PER_CHUNK, Chunker
from analyses.engine.edges import QKV, EdgeSet, Pair, sender_differences
from analyses.engine.readout import final_logit_diff


@torch.no_grad()
def run_edges(model, pair: Pair, es: EdgeSet, removed: torch.Tensor, base_d: torch.Tensor | None = None,
              chunk_rows: int | None = None) -> torch.Tensor:
    """LD [C, B] of run X with, per circuit c, the edges removed[c] ([C, U, V] bool) carrying Y's activations.

    base_d: D(X, Y) of every sender on the unchanged X (`sender_differences`; computed here when a circuit starts
    after layer 0 and none is given). Circuits are grouped by the layer they start at and cut into chunks of at
    most chunk_rows sequences (a circuit's rows at a layer: its real rows plus one copy per receiver and head it
    needs there); a chunk that runs out of memory is halved and retried.
    """
    device = pair.x.tokens.device
    removed = removed.to(device) & torch.as_tensor(es.valid, device=device)
    C, B = removed.shape[0], pair.x.n_prompts
    out = torch.empty(C, B, device=device, dtype=torch.float32)
    first = [_first_layer(es, removed[c]) for c in range(C)]
    if base_d is None and any(f > 0 for f in first):
        base_d = sender_differences(model, pair, es)
    chunker = Chunker(chunk_rows or 4 * CPU_TOKENS_PER_CHUNK // max(1, pair.x.tokens.shape[1]))

    def need(c: int) -> int:  # a rough upper bound of circuit c's rows in one block call
        return B * (2 + int(removed[c].any(0).sum()) + int(removed[c].any(1).sum()))

    for layer in sorted(set(first)):
        members = [c for c in range(C) if first[c] == layer]
        def run(chunk: list[int], start: int = layer) -> torch.Tensor:
            return _run_chunk(model, pair, es, removed[chunk], start, base_d)

        for chunk, ld in chunker.map(members, run, cost=need):
            out[chunk] = ld
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
    per MLP receiver of this layer with removed edges (its resid_mid corrected, or its input in a parallel block) and
    one copy per head of this layer with removed outgoing edges (its z set to Y). The q/k/v receivers with removed
    edges (their input corrected) are projected first, in a call that stops after the projections. Hooks write each
    receiver's q/k/v or MLP output into its circuit's real rows. Returns the real rows [C*B, S, d]."""
    B, C = pair.x.n_prompts, removed.shape[0]
    shape = resid.shape[1:]
    dev = resid.device
    receivers = es.receivers_of_layer(layer)
    heads = [u for u, (kind, sl, _) in enumerate(es.senders) if kind == "head" and sl == layer]
    inputs, copies = [resid], []  # copies: (circuit, "recv"|"head", index)
    qkv_inputs, qkv_copies = [], []  # q / k / v receivers: their projections only, in a call of their own
    mlp_corr: dict[int, torch.Tensor] = {}  # circuit -> [B, S, d]
    for c in range(C):
        mine = [v for v in receivers if bool(removed[c, :, v].any())]
        if mine:
            corr = diffs.correction(c, mine).to(resid.dtype).view(len(mine), B, *shape)
        real = resid[c * B:(c + 1) * B]
        for i, v in enumerate(mine):
            is_mlp = es.receivers[v][0] == "mlp"
            if is_mlp and not es.parallel:
                mlp_corr[c] = corr[i]
                copies.append((c, "recv", v))
                inputs.append(real)
            elif is_mlp:
                copies.append((c, "recv", v))
                inputs.append(real - corr[i])
            else:
                qkv_copies.append((c, v))
                qkv_inputs.append(real - corr[i])
        for u in heads:
            if bool(removed[c, u].any()):
                copies.append((c, "head", u))
                inputs.append(real)
    qkv = _receiver_projections(model, pair, es, layer, qkv_copies, qkv_inputs, B, dev)
    batch = torch.cat(inputs)
    index = _CopyIndex(es, copies, C, B, dev)
    kept: dict[str, torch.Tensor] = {}
    z_y = pair.y[f"blocks.{layer}.attn.hook_z"]

    def write_qkv(act, hook, kind):
        dst, value, unit = qkv[kind]
        act = act.clone()
        act[dst, :, unit] = value.to(act.dtype)
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

    hooks = [(f"blocks.{layer}.attn.hook_{kind}", partial(write_qkv, kind=kind)) for kind in qkv]
    if index.heads:
        hooks += [(f"blocks.{layer}.attn.hook_z", write_z), (f"blocks.{layer}.hook_attn_out", keep_attn)]
    if index.mlps and not es.parallel:
        hooks.append((f"blocks.{layer}.hook_resid_mid", write_mid))
    hooks.append((f"blocks.{layer}.hook_mlp_out", write_mlp))
    with model.hooks(fwd_hooks=hooks):
        out = run_block(model, pair.x, layer, batch)
    for k, (c, u) in enumerate(index.heads):
        diffs.run.setdefault(u, torch.zeros(C, kept["head_d"].shape[1], device=dev, dtype=torch.float32))[c] = \
            kept["head_d"][k].float()
    mlp_u = es.senders.index(("mlp", layer, 0))
    if removed[:, mlp_u].any():
        y_mlp = pair.y[f"blocks.{layer}.hook_mlp_out"].repeat(C, 1, 1)
        diffs.run[mlp_u] = (kept["mlp"] - y_mlp).reshape(C, -1).float()
    return out[:C * B]


class _Projected(Exception):
    """Raised by the last q / k / v hook of a receivers-only block call: nothing after the projections is read."""


def _receiver_projections(model, pair: Pair, es: EdgeSet, layer: int, copies: list[tuple[int, int]],
                          inputs: list[torch.Tensor], B: int, dev) -> dict[str, tuple]:
    """kind -> (real rows [n*B], the receivers' values [n*B, S, d_head], their head units [n*B]) for the q / k / v
    receivers of one layer, each computed from its corrected input.

    A receiver needs only its own projection of the block's input, not the rest of the block: the copies run in a
    call of their own that stops (an exception from the hook) once the block has fired its q, k and v hooks, so
    attention, output projection and MLP are never computed for them. Which module computes q / k / v (fused or
    not, normed or not) is the model's own: this reads the same hooks the full block would."""
    if not copies:
        return {}
    b = torch.arange(B, device=dev)
    captured: dict[str, torch.Tensor] = {}

    def keep(act, hook, kind):
        captured[kind] = act
        if len(captured) == len(QKV):
            raise _Projected
        return act

    try:
        with model.hooks(fwd_hooks=[(f"blocks.{layer}.attn.hook_{kind}", partial(keep, kind=kind)) for kind in QKV]):
            run_block(model, pair.x, layer, torch.cat(inputs))
    except _Projected:
        pass
    by_kind: dict[str, list] = {}
    for k, (c, v) in enumerate(copies):
        kind, _, unit = es.receivers[v]
        by_kind.setdefault(kind, []).append((c * B + b, k * B + b, torch.full((B,), unit, device=dev)))
    out = {}
    for kind, items in by_kind.items():
        dst, src, unit = (torch.cat(parts) for parts in zip(*items))
        out[kind] = (dst, captured[kind][src, :, unit], unit)
    return out


class _CopyIndex:
    """Row indices of one layer's copies, so that each hook is a few tensor operations whatever their number.

    Rows: the real rows of C circuits (circuit c: rows c*B .. c*B+B-1), then B rows per copy in `copies` order."""

    def __init__(self, es: EdgeSet, copies: list[tuple[int, str, int]], C: int, B: int, dev):
        b = torch.arange(B, device=dev)

        def rows(k: int) -> torch.Tensor:
            return C * B + k * B + b

        def real(c: int) -> torch.Tensor:
            return c * B + b

        self.heads: list[tuple[int, int]] = []  # (circuit, sender) per head copy
        self.mlps: list[tuple[int, int]] = []  # (circuit, receiver) per MLP copy
        head_rows, head_real, head_unit, mlp_rows, mlp_real = [], [], [], [], []
        for k, (c, what, i) in enumerate(copies):
            if what == "head":
                self.heads.append((c, i))
                head_rows.append(rows(k))
                head_real.append(real(c))
                head_unit.append(torch.full((B,), es.senders[i][2], device=dev))
            else:  # an MLP receiver (q / k / v receivers run apart: `_receiver_projections`)
                self.mlps.append((c, i))
                mlp_rows.append(rows(k))
                mlp_real.append(real(c))
        empty = torch.zeros(0, dtype=torch.long, device=dev)
        self.head_rows = torch.cat(head_rows) if head_rows else empty
        self.head_real = torch.cat(head_real) if head_real else empty
        self.head_unit = torch.cat(head_unit) if head_unit else empty
        self.head_prompt = self.head_rows % B if head_rows else empty  # copy rows are B-aligned: row % B = prompt
        self.mlp_rows = torch.cat(mlp_rows) if mlp_rows else empty
        self.mlp_real = torch.cat(mlp_real) if mlp_real else empty
        self.mlp_circuits = [c for c, _ in self.mlps]

