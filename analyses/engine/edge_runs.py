"""Runs with removed edges (MIB's counterfactual ablation), many circuits batched; the graph: `analyses.engine.edges`.

Run X; a removed edge u->v delivers u's Y activation to v instead of its X one, so v reads
    input_v = (its residual stream in this run) − sum over removed u->v of D_u(this run, Y),
and everything downstream is recomputed. A circuit = the edges kept, evaluated with X = clean, Y = corrupted
(MIB). Exact patching of one edge e is the run X = corrupted, Y = clean with e alone removed: e carries the clean
activation and nothing else changes (the denoising direction of the report's node patching).
Block calls serve many circuits at once, up to three per layer (`_layer`): the q / k / v receivers with removed
edges, one copy of the block's input each (corrected), run only as far as the projections; the heads whose D is
needed, one copy each beside the circuits' real rows (that head's z set to Y), only as far as the attention output
(D = the real rows' attention output minus the copy's); then the real rows, whole, with their receivers' q / k / v
written in, beside one copy per MLP receiver with removed edges (its input corrected), whose MLP output is written
into the real rows. A call stops early by an exception from the hook after which nothing is read, so which modules
compute q / k / v and the attention output is the model's own. Rows write into other rows, which
an `Edit` (a value fixed before the run) cannot say, so edges have their own batch layout; they share the engine's
block calls (`blocks.run_block`), its base run (`rows.Base`) and its chunks, which halve on out-of-memory
(`chunks.Chunker`). Circuits join the batch at the first layer where they differ from X (edges into earlier layers
are all kept), as rows do in `analyses.engine.rows`.

LD = logit(clean answer) − logit(corrupted answer) at the final position, per prompt.
"""

from __future__ import annotations

import contextlib
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
    """One block for C circuits, in up to three calls. (1) The q/k/v receivers with removed edges, one copy each
    with its input corrected, only as far as the projections. (2) If a head of this layer has removed outgoing
    edges: the real rows of every circuit (circuit-major, their receivers' q/k/v written in) and one copy per such
    head (its z set to Y), only as far as the attention output, whose difference is the head's D. (3) The real
    rows again, whole, and one copy per MLP receiver with removed edges (its resid_mid corrected, or its input in a
    parallel block), whose MLP output is written into its circuit's real rows. Returns the real rows [C*B, S, d]."""
    B, C = pair.x.n_prompts, removed.shape[0]
    shape = resid.shape[1:]
    dev = resid.device
    receivers = es.receivers_of_layer(layer)
    heads = [u for u, (kind, sl, _) in enumerate(es.senders) if kind == "head" and sl == layer]
    # per circuit, the copies of this layer's block each call needs: (circuit, "recv"|"head", index) and its input
    qkv_copies, qkv_inputs, mlp_copies, mlp_inputs, head_copies, head_inputs = [], [], [], [], [], []
    mlp_corr: dict[int, torch.Tensor] = {}  # circuit -> [B, S, d]
    for c in range(C):
        mine = [v for v in receivers if bool(removed[c, :, v].any())]
        if mine:
            corr = diffs.correction(c, mine).to(resid.dtype).view(len(mine), B, *shape)
        real = resid[c * B:(c + 1) * B]
        for i, v in enumerate(mine):
            if es.receivers[v][0] != "mlp":
                qkv_copies.append((c, v))
                qkv_inputs.append(real - corr[i])
                continue
            mlp_copies.append((c, "recv", v))
            if es.parallel:
                mlp_inputs.append(real - corr[i])
            else:
                mlp_corr[c] = corr[i]
                mlp_inputs.append(real)
        for u in heads:
            if bool(removed[c, u].any()):
                head_copies.append((c, "head", u))
                head_inputs.append(real)
    qkv = _receiver_projections(model, pair, es, layer, qkv_copies, qkv_inputs, B, dev)
    heads_index = _CopyIndex(es, head_copies, C, B, dev)
    index = _CopyIndex(es, mlp_copies, C, B, dev)
    kept: dict[str, torch.Tensor] = {}
    z_y = pair.y[f"blocks.{layer}.attn.hook_z"]
    qkv_hooks = [(f"blocks.{layer}.attn.hook_{kind}", partial(_write_qkv, value=qkv[kind])) for kind in qkv]

    def write_z(act, hook):
        act = act.clone()
        act[heads_index.head_rows] = act[heads_index.head_real]
        act[heads_index.head_rows, :, heads_index.head_unit] = \
            z_y[heads_index.head_prompt, :, heads_index.head_unit]
        return act

    def keep_attn(act, hook):  # D of each head copy: the real rows' attention output minus the copy's
        kept["head_d"] = (act[heads_index.head_real] - act[heads_index.head_rows]).view(len(heads_index.heads), -1)
        raise _StopBlock  # the rest of the block is not needed for the head copies

    if heads_index.heads:  # the heads' D first, in a call of their own that stops after the attention
        with contextlib.suppress(_StopBlock), model.hooks(fwd_hooks=[
                *qkv_hooks, (f"blocks.{layer}.attn.hook_z", write_z), (f"blocks.{layer}.hook_attn_out", keep_attn)]):
            run_block(model, pair.x, layer, torch.cat([resid, *head_inputs]))

    def write_mid(act, hook):
        act = act.clone()
        value = act[index.mlp_real] - torch.cat([mlp_corr[c] for c in index.mlp_circuits])
        if heads_index.heads:  # this layer's heads feed its MLP: their D, measured just before
            weights = torch.tensor([[float(c == c2 and bool(removed[c, u, v])) for c2, u in heads_index.heads]
                                    for c, v in index.mlps], device=dev, dtype=act.dtype)
            value = value - (weights @ kept["head_d"]).view(-1, *act.shape[1:])
        act[index.mlp_rows] = value
        return act

    def write_mlp(act, hook):
        act = act.clone()
        act[index.mlp_real] = act[index.mlp_rows]
        kept["mlp"] = act[:C * B]
        return act

    hooks = list(qkv_hooks)
    if index.mlps and not es.parallel:
        hooks.append((f"blocks.{layer}.hook_resid_mid", write_mid))
    hooks.append((f"blocks.{layer}.hook_mlp_out", write_mlp))
    with model.hooks(fwd_hooks=hooks):
        out = run_block(model, pair.x, layer, torch.cat([resid, *mlp_inputs]))
    for k, (c, u) in enumerate(heads_index.heads):
        diffs.run.setdefault(u, torch.zeros(C, kept["head_d"].shape[1], device=dev, dtype=torch.float32))[c] = \
            kept["head_d"][k].float()
    mlp_u = es.senders.index(("mlp", layer, 0))
    if removed[:, mlp_u].any():
        y_mlp = pair.y[f"blocks.{layer}.hook_mlp_out"].repeat(C, 1, 1)
        diffs.run[mlp_u] = (kept["mlp"] - y_mlp).reshape(C, -1).float()
    return out[:C * B]


def _write_qkv(act, hook, value: tuple):
    """Write the receivers' projected q / k / v (`_receiver_projections`) into their circuits' real rows."""
    dst, projected, unit = value
    act = act.clone()
    act[dst, :, unit] = projected.to(act.dtype)
    return act


class _StopBlock(Exception):
    """Raised from the hook after which nothing of the block is read (the last of q / k / v for the receivers, the
    attention output for the heads' D): the block call ends there, its remaining modules never run."""


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
            raise _StopBlock
        return act

    with contextlib.suppress(_StopBlock), model.hooks(
            fwd_hooks=[(f"blocks.{layer}.attn.hook_{kind}", partial(keep, kind=kind)) for kind in QKV]):
        run_block(model, pair.x, layer, torch.cat(inputs))
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

