"""Path patching, batched: a sender head's clean output delivered along one path only (not an analysis).

Method (Wang et al. 2022, "Interpretability in the Wild", §3.1 path patching; Goldowsky-Dill et al. 2023, "Localizing
Model Behavior with Path Patching"). Base = the corrupted run. For a sender head s in layer Ls:
  delta_s   = resid_mid(Ls) with z_s taken from the clean run − resid_mid(Ls) of the corrupted run   [B, S, d]
              (what the sender's change adds to the residual stream; exact under a post-attention norm too).
  receivers, each seeing delta_s and nothing else changed (every other path frozen at the corrupted run):
    logits        the final residual + delta_s, through the final norm and the two answer columns;
    q / k / v of a head in layer Lr > Ls: the head's query (key, value) computed from resid_pre(Lr) + delta_s,
                  everything else in block Lr reading the corrupted residual (GQA: k and v per key/value head);
    MLP of layer Lr >= Ls: the MLP's output computed from resid_mid(Lr) + delta_s, the attention output of Lr
                  frozen (for Lr = Ls the MLP simply reads the sender's patched attention output).
  Then everything downstream of the receiver runs freely, and the LD = logit(clean answer) − logit(corrupted answer)
  is read at the final position. Effect = LD − LD_corrupted (callers normalise by the clean − corrupted gap).

Three batched passes of `analyses.intervention.run_rows`: (0) one row per sender, one block, capturing resid_mid;
(A) one row per (sender, receiver layer), one block, resid_pre + delta_s with that layer's z frozen, capturing q, k,
v and the MLP output; (B) one row per (sender, receiver), from the receiver's layer to the end, replacing the
receiver's input by its pass-A value. Tests compare every number with a reference that freezes every other
component instead of adding delta_s, one forward per path.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass

import torch

from analyses.intervention import Base, Edit, Row, collect_base, final_logit_diff, run_rows
from analyses.metrics import answer_pair, model_device
from analyses.types import PromptSet

INPUTS = ("q", "k", "v")


def hooks_needed(n_layers: int) -> list[str]:
    return [f"blocks.{layer}.{name}" for layer in range(n_layers)
            for name in ("hook_resid_mid", "attn.hook_z", "attn.hook_q", "attn.hook_k", "attn.hook_v",
                         "hook_mlp_out")]


@dataclass
class PathSetup:
    base: Base  # the corrupted run
    clean_z: dict[str, torch.Tensor]  # hook_z name -> clean [B, S, H, d_head]
    pos_ids: torch.Tensor  # [B]
    neg_ids: torch.Tensor  # [B]
    clean_ld: torch.Tensor  # [B]
    corrupted_ld: torch.Tensor  # [B]


@torch.no_grad()
def setup(model, prompts: PromptSet) -> PathSetup:
    device = model_device(model)
    n_layers = model.cfg.n_layers
    base = collect_base(model, prompts.corrupted_tokens, hooks_needed(n_layers))
    z_names = [f"blocks.{layer}.attn.hook_z" for layer in range(n_layers)]
    last = f"blocks.{n_layers - 1}.hook_resid_post"
    _, clean = model.run_with_cache(prompts.clean_tokens.to(device), names_filter=[*z_names, last])
    pos, neg = (t.to(device) for t in answer_pair(prompts, "clean_vs_corrupted"))
    return PathSetup(base=base, clean_z={n: clean[n] for n in z_names}, pos_ids=pos, neg_ids=neg,
                     clean_ld=final_logit_diff(model, clean[last][:, -1], pos, neg),
                     corrupted_ld=final_logit_diff(model, base.cache[last][:, -1], pos, neg))


def _z(layer: int) -> str:
    return f"blocks.{layer}.attn.hook_z"


def sender_edit(ps: PathSetup, sender: tuple[int, int]) -> Edit:
    layer, head = sender
    return Edit(_z(layer), (slice(None), head), ps.clean_z[_z(layer)][:, :, head])


def sender_deltas(model, ps: PathSetup, senders: list[tuple[int, int]]) -> torch.Tensor:
    """[K, B, S, d_model]: what each sender's clean output adds to the residual stream (pass 0)."""
    out = [None] * len(senders)
    by_layer = defaultdict(list)
    for i, s in enumerate(senders):
        by_layer[s[0]].append(i)
    for layer, index in by_layer.items():
        name = f"blocks.{layer}.hook_resid_mid"
        _, captured = run_rows(model, ps.base, [Row((sender_edit(ps, senders[i]),)) for i in index],
                               capture=(name,), last=layer)
        for j, i in enumerate(index):
            out[i] = captured[name][j] - ps.base.cache[name]
    return torch.stack(out)


@torch.no_grad()
def path_effects(model, ps: PathSetup, senders: list[tuple[int, int]], chunk_rows: int | None = None) -> dict:
    """LD − LD_corrupted along each path from each sender: {"logits": [K, B], "q"/"k"/"v": [K, L, H or H_kv, B],
    "mlp": [K, L, B]}; NaN where the receiver does not lie after the sender."""
    cfg, B = model.cfg, ps.base.n_prompts
    L = cfg.n_layers
    deltas = sender_deltas(model, ps, senders)  # [K, B, S, d]
    last = f"blocks.{L - 1}.hook_resid_post"
    final = ps.base.cache[last][None, :, -1] + deltas[:, :, -1]  # [K, B, d]
    logits = final_logit_diff(model, final.flatten(0, 1), ps.pos_ids.repeat(len(senders)),
                              ps.neg_ids.repeat(len(senders))).view(len(senders), B) - ps.corrupted_ld
    n_kv = ps.base.cache["blocks.0.attn.hook_v"].shape[2]
    nan = dict(device=deltas.device, dtype=deltas.dtype)
    out = {"logits": logits, "q": torch.full((len(senders), L, cfg.n_heads, B), float("nan"), **nan),
           "k": torch.full((len(senders), L, n_kv, B), float("nan"), **nan),
           "v": torch.full((len(senders), L, n_kv, B), float("nan"), **nan),
           "mlp": torch.full((len(senders), L, B), float("nan"), **nan)}
    inputs = receiver_inputs(model, ps, senders, deltas)  # (k, layer) -> {hook: [B, ...]}
    rows, where = [], []
    for (k, layer), captured in inputs.items():
        for name, value in captured.items():
            kind = name.rsplit("_", 1)[-1]  # q, k, v or out (mlp)
            if kind == "out":
                rows.append(Row((Edit(name, (), value),)))
                where.append(("mlp", k, layer, None))
                continue
            for unit in range(value.shape[2]):
                rows.append(Row((Edit(name, (slice(None), unit), value[:, :, unit]),)))
                where.append((kind, k, layer, unit))
    resid, _ = run_rows(model, ps.base, rows, chunk_rows=chunk_rows)
    n = len(rows)
    lds = final_logit_diff(model, resid.flatten(0, 1), ps.pos_ids.repeat(n), ps.neg_ids.repeat(n)).view(n, B)
    for (kind, k, layer, unit), ld in zip(where, lds - ps.corrupted_ld):
        if kind == "mlp":
            out["mlp"][k, layer] = ld
        else:
            out[kind][k, layer, unit] = ld
    return out


def receiver_inputs(model, ps: PathSetup, senders, deltas) -> dict[tuple[int, int], dict[str, torch.Tensor]]:
    """Pass A: each receiver layer's q, k, v (layers after the sender) and MLP output, seeing only delta_s."""
    L = model.cfg.n_layers
    out = {}
    for layer in range(L):
        rows, keys = [], []
        for k, (sl, _) in enumerate(senders):
            if layer == sl:  # the same layer's MLP reads the sender's patched attention output directly
                rows.append(Row((sender_edit(ps, senders[k]),)))
            elif layer > sl:
                rows.append(Row((Edit(f"blocks.{layer}.hook_resid_pre", (), deltas[k], add=True),
                                 Edit(_z(layer), (), ps.base.cache[_z(layer)]))))
            else:
                continue
            keys.append((k, layer, layer > sl))
        if not rows:
            continue
        names = (*(f"blocks.{layer}.attn.hook_{x}" for x in INPUTS), f"blocks.{layer}.hook_mlp_out")
        _, captured = run_rows(model, ps.base, rows, capture=names, last=layer)
        for j, (k, _, later) in enumerate(keys):
            out[(k, layer)] = {n: captured[n][j] for n in names if later or n.endswith("mlp_out")}
    return out


def without_resid_mid(model) -> str | None:
    """Path patching measures a sender's change in the residual stream between attention and MLP (resid_mid).
    Models whose attention and MLP read the same stream in parallel (GPT-NeoX / Pythia, GPT-J) have none."""
    if "blocks.0.hook_resid_mid" in model.hook_dict:
        return None
    return ("this architecture runs attention and MLP in parallel, so there is no residual stream between them "
            "(resid_mid) for a sender's path to be measured in")
