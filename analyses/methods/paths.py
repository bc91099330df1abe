"""Path patching, batched: a sender head's clean output delivered along one path only (not an analysis).

What it measures, exactly: DIRECT EDGES by DENOISING. The sender's change reaches one receiver; every node between
the sender and that receiver (heads and MLPs) is frozen at the base run; everything after the receiver recomputes.
This is not Wang et al.'s path patching as published, which freezes the other heads but lets the MLPs recompute,
and noises (corrupted into the clean run); both of those are variants here:
  recompute_mlps=True   MLPs recompute on the sender's change; every head after the sender is frozen, except that
                        the receiver head's q / k / v input is read from the changed stream. The MLPs are then part
                        of the edges (no MLP receivers); the logits receiver is sender → (MLPs) → logits.
  setup(noising=True)   base = the clean run, the sender's output from the corrupted twin (necessity of the path);
                        effects are then LD − LD_clean (negative when the path is needed).
Under linearity a sender's direct edges (logits, every later q / k / v, every MLP input) add up to its total effect
(patching its output alone); what they do not add up to is carried by no single edge (the sender's change has to
reach two inputs at once: interactions between routes). `path_patching` reports that share.

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

Three batched passes of `analyses.engine.run_rows`: (0) one row per sender, one block, capturing resid_mid;
(A) one row per (sender, receiver layer), one block, resid_pre + delta_s with that layer's z frozen, capturing q, k,
v and the MLP output; (B) one row per (sender, receiver), from the receiver's layer to the end, replacing the
receiver's input by its pass-A value. Tests compare every number with a reference that freezes every other
component instead of adding delta_s, one forward per path.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass

import torch

from analyses.common.metrics import answer_pair, model_device
from analyses.common.types import PromptSet
from analyses.engine.readout import final_answer_logits, final_logit_diff
from analyses.engine.rows import Base, Edit, Row, collect_base, run_rows

INPUTS = ("q", "k", "v")


def hooks_needed(n_layers: int) -> list[str]:
    return [f"blocks.{layer}.{name}" for layer in range(n_layers)
            for name in ("hook_resid_mid", "attn.hook_z", "attn.hook_q", "attn.hook_k", "attn.hook_v",
                         "hook_mlp_out")]


@dataclass
class PathSetup:
    base: Base  # the run the paths start from: corrupted (denoising) or clean (noising)
    source_z: dict[str, torch.Tensor]  # hook_z name -> the other run's z [B, S, H, d_head] (the sender's new output)
    pos_ids: torch.Tensor  # [B] clean answer
    neg_ids: torch.Tensor  # [B] corrupted answer
    clean_ld: torch.Tensor  # [B]
    corrupted_ld: torch.Tensor  # [B]
    clean_answer: torch.Tensor  # [B] logit(clean answer) in the clean run
    corrupted_answer: torch.Tensor  # [B] logit(clean answer) in the corrupted run
    noising: bool = False

    @property
    def base_ld(self) -> torch.Tensor:
        return self.clean_ld if self.noising else self.corrupted_ld

    @property
    def base_answer(self) -> torch.Tensor:
        return self.clean_answer if self.noising else self.corrupted_answer


@torch.no_grad()
def setup(model, prompts: PromptSet, noising: bool = False) -> PathSetup:
    """Denoising (default): base = the corrupted run, senders take their clean output; noising: the other way round."""
    device = model_device(model)
    n_layers = model.cfg.n_layers
    base_tokens, source_tokens = prompts.corrupted_tokens, prompts.clean_tokens
    if noising:
        base_tokens, source_tokens = source_tokens, base_tokens
    base = collect_base(model, base_tokens, hooks_needed(n_layers))
    z_names = [f"blocks.{layer}.attn.hook_z" for layer in range(n_layers)]
    last = f"blocks.{n_layers - 1}.hook_resid_post"
    _, source = model.run_with_cache(source_tokens.to(device), names_filter=[*z_names, last])
    pos, neg = (t.to(device) for t in answer_pair(prompts, "clean_vs_corrupted"))
    clean_final, corrupted_final = source[last][:, -1], base.cache[last][:, -1]
    if noising:
        clean_final, corrupted_final = corrupted_final, clean_final
    return PathSetup(base=base, source_z={n: source[n] for n in z_names}, pos_ids=pos, neg_ids=neg,
                     clean_ld=final_logit_diff(model, clean_final, pos, neg),
                     corrupted_ld=final_logit_diff(model, corrupted_final, pos, neg),
                     clean_answer=final_answer_logits(model, clean_final, pos),
                     corrupted_answer=final_answer_logits(model, corrupted_final, pos), noising=noising)


def _z(layer: int) -> str:
    return f"blocks.{layer}.attn.hook_z"


def sender_edit(ps: PathSetup, sender: tuple[int, int]) -> Edit:
    layer, head = sender
    return Edit(_z(layer), (slice(None), head), ps.source_z[_z(layer)][:, :, head])


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
def path_effects(model, ps: PathSetup, senders: list[tuple[int, int]], chunk_rows: int | None = None,
                 recompute_mlps: bool = False) -> dict:
    """LD − LD_base along each path from each sender: {"logits": [K, B], "q"/"k"/"v": [K, L, H or H_kv, B],
    "mlp": [K, L, B]}; NaN where the receiver does not lie after the sender (every MLP with recompute_mlps)."""
    return path_effects_both(model, ps, senders, chunk_rows, recompute_mlps)[0]


@torch.no_grad()
def path_effects_both(model, ps: PathSetup, senders: list[tuple[int, int]], chunk_rows: int | None = None,
                      recompute_mlps: bool = False) -> tuple[dict, dict]:
    """(LD − LD_base, logit(clean answer) − its base value) along each path, each shaped as in `path_effects`."""
    finals = path_finals(model, ps, senders, chunk_rows, recompute_mlps)
    B = ps.base.n_prompts

    def read(final: torch.Tensor, fn, base: torch.Tensor) -> torch.Tensor:
        flat = final.reshape(-1, B, final.shape[-1])
        n = flat.shape[0]
        values = fn(flat.flatten(0, 1), n).view(n, B) - base
        return values.view(final.shape[:-1])

    def ld(x, n):
        return final_logit_diff(model, x, ps.pos_ids.repeat(n), ps.neg_ids.repeat(n))

    def answer(x, n):
        return final_answer_logits(model, x, ps.pos_ids.repeat(n))

    return ({k: read(v, ld, ps.base_ld) for k, v in finals.items()},
            {k: read(v, answer, ps.base_answer) for k, v in finals.items()})


def path_finals(model, ps: PathSetup, senders: list[tuple[int, int]], chunk_rows: int | None = None,
                recompute_mlps: bool = False) -> dict[str, torch.Tensor]:
    """The final-position residual after each path, {"logits": [K, B, d], "q"/"k"/"v": [K, L, H or H_kv, B, d],
    "mlp": [K, L, B, d]}; NaN where there is no such receiver."""
    cfg, B = model.cfg, ps.base.n_prompts
    L, K, d = cfg.n_layers, len(senders), cfg.d_model
    last = f"blocks.{L - 1}.hook_resid_post"
    deltas = sender_deltas(model, ps, senders)  # [K, B, S, d]
    if recompute_mlps:  # the sender's change, the MLPs recomputing on it and every later head frozen
        rows = [Row((sender_edit(ps, s), *frozen_heads(ps, s[0] + 1, L - 1))) for s in senders]
        logits, _ = run_rows(model, ps.base, rows, chunk_rows=chunk_rows)
    else:
        logits = ps.base.cache[last][None, :, -1] + deltas[:, :, -1]  # [K, B, d]
    n_kv = ps.base.cache["blocks.0.attn.hook_v"].shape[2]
    nan = dict(device=deltas.device, dtype=logits.dtype)
    out = {"logits": logits, "q": torch.full((K, L, cfg.n_heads, B, d), float("nan"), **nan),
           "k": torch.full((K, L, n_kv, B, d), float("nan"), **nan),
           "v": torch.full((K, L, n_kv, B, d), float("nan"), **nan),
           "mlp": torch.full((K, L, B, d), float("nan"), **nan)}
    inputs = receiver_inputs(model, ps, senders, deltas, recompute_mlps)  # (k, layer) -> {hook: [B, ...]}
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
    if rows:
        resid, _ = run_rows(model, ps.base, rows, chunk_rows=chunk_rows)
        for (kind, k, layer, unit), final in zip(where, resid):
            if kind == "mlp":
                out["mlp"][k, layer] = final
            else:
                out[kind][k, layer, unit] = final
    return out


def frozen_heads(ps: PathSetup, first: int, last: int) -> list[Edit]:
    """Every head of layers first..last (inclusive) frozen at its base-run output."""
    return [Edit(_z(layer), (), ps.base.cache[_z(layer)]) for layer in range(first, last + 1)]


def receiver_inputs(model, ps: PathSetup, senders, deltas,
                    recompute_mlps: bool = False) -> dict[tuple[int, int], dict[str, torch.Tensor]]:
    """Pass A: each receiver layer's q, k, v (layers after the sender) and MLP output, seeing only delta_s; with
    recompute_mlps, the q, k, v of layers after the sender computed with the MLPs recomputing and the heads in
    between frozen (no MLP receivers)."""
    L = model.cfg.n_layers
    out = {}
    for layer in range(L):
        rows, keys = [], []
        for k, (sl, _) in enumerate(senders):
            if recompute_mlps and layer > sl:
                rows.append(Row((sender_edit(ps, senders[k]), *frozen_heads(ps, sl + 1, layer))))
            elif recompute_mlps:
                continue
            elif layer == sl:  # the same layer's MLP reads the sender's patched attention output directly
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
            wanted = [n for n in names if (n.endswith("mlp_out") and not recompute_mlps)
                      or (later and not n.endswith("mlp_out"))]
            out[(k, layer)] = {n: captured[n][j] for n in wanted}
    return out


def without_resid_mid(model) -> str | None:
    """Path patching measures a sender's change in the residual stream between attention and MLP (resid_mid).
    Models whose attention and MLP read the same stream in parallel (GPT-NeoX / Pythia, GPT-J) have none."""
    if "blocks.0.hook_resid_mid" in model.hook_dict:
        return None
    return ("this architecture runs attention and MLP in parallel, so there is no residual stream between them "
            "(resid_mid) for a sender's path to be measured in")
