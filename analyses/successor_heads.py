"""Successor and copy heads, read from the weights: which item each head's OV circuit promotes for each item.

Method (Gould, Ong, Ogden & Conmy, "Successor Heads: Recurring, Interpretable Attention Heads In The Wild",
ICLR 2024): a head's OV circuit is applied to each item's *effective* token embedding and read through the
unembedding of the items; a successor head promotes the next item (Monday -> Tuesday), a copy head the item
itself. The recipe implemented here, for items t_0 .. t_{n-1} (the family's items with their leading space):

  x_d      = the residual stream after block 0 when the model runs on the one-token sequence [t_d] (no BOS):
             embed(t_d) + pos_embed(0) + attn0 (which can only attend to t_d itself) + MLP0(norm(...)).
             This is the paper's effective embedding, the token as later layers see it once block 0 has acted.
  out_h(d) = norm1_L(x_d) · W_V[L, g(h)] · W_O[L, h]   (+ the value bias b_V · W_O where the model has one).
             norm1_L is layer L's input norm (its gain is folded into W_V); g(h) is the key/value group of head
             h under grouped-query attention (h // (H / H_kv)), so each head gets its own OV = W_V(group) W_O(head).
             Models with a norm after attention (Gemma 2/3) scale it by that norm's gain.
  M_h[d,e] = out_h(d) · W_U[:, t_e]                   [n_items, n_items], rows: given item, columns: promoted item.
             The final norm is a positive scale per vector (after centring, for LayerNorm: the head's output is
             centred over d_model first); neither changes the argmax of a row, and neither does the per-row constant
             that centring the unembedding adds, so the scores need no run of the model beyond x_d.

  successor score(h) = fraction of items d whose row argmax is (d + 1) mod n;  copy score(h) = argmax is d.
Chance for a head whose rows are unrelated to the items is 1/n for each score. A head is named in the narrative
only with a score of at least NAME_SCORE (for 7 items a head with independent uniform argmaxes reaches it with
probability below 0.001).

Arrays: successor_score, copy_score [L, H]; grids [L, H, n, n] (M_h, each row centred). Labels: heads, items.
Summary: top_successor, top_copy = [{"head": "L9H1", "value": 0.86}] sorted descending (value in [0, 1]).
"""

from __future__ import annotations

import numpy as np
import torch

from analyses import plots, thresholds
from analyses.attribution import head_name, norm_gain, parse_head_name
from analyses.mechanism import item_names, numpy
from analyses.metrics import model_device
from analyses.types import Analysis, Figure, PromptSet, Result

NAME = "successor_heads"
TOP_K = 10
NAME_SCORE = 5 / 7  # a head is named as successor / copy head only at or above this score
GRID_HEADS = 3  # 7x7 grids shown for the top heads of each kind


@torch.no_grad()
def effective_embeddings(model, tokens: torch.Tensor) -> torch.Tensor:
    """[n, d_model]: the residual after block 0 of each token run alone (a one-token sequence, no BOS)."""
    name = "blocks.0.hook_resid_post"
    _, cache = model.run_with_cache(tokens.to(model_device(model))[:, None], names_filter=[name])
    return cache[name][:, 0]


@torch.no_grad()
def head_ov_outputs(model, x: torch.Tensor, layer: int) -> torch.Tensor:
    """[H, n, d_model]: what each head of `layer` writes (before any post-attention norm) when it attends only to a
    position whose residual is x [n, d_model]: norm1(x) · W_V[group(h)] (+ b_V) · W_O[h]."""
    W_V, W_O = model.W_V[layer], model.W_O[layer]  # [H_kv, d, d_head], [H, d_head, d]
    group = model.cfg.n_heads // W_V.shape[0]
    normed = model.blocks[layer].ln1(x[:, None])[:, 0]  # [n, d]
    return torch.stack([(normed @ W_V[h // group] + _value_bias(model, layer, h // group)) @ W_O[h]
                        for h in range(model.cfg.n_heads)])


@torch.no_grad()
def ov_grids(model, tokens: torch.Tensor) -> torch.Tensor:
    """[L, H, n, n]: logit of item e (column) promoted by head h's OV circuit from item d's effective embedding."""
    x = effective_embeddings(model, tokens)  # [n, d]
    W_U = model.W_U[:, tokens.to(x.device)]  # [d, n]
    grids = []
    for layer in range(model.cfg.n_layers):
        out = head_ov_outputs(model, x, layer)  # [H, n, d]
        block = model.blocks[layer]
        if hasattr(block, "ln1_post"):  # Gemma 2/3: the head's share of the normalised attention output
            out = out * norm_gain(block.ln1_post, out.shape[-1])
        if model.cfg.normalization_type in ("LN", "LNPre"):  # the final LayerNorm centres over d_model
            out = out - out.mean(-1, keepdim=True)
        grids.append(out @ W_U)
    return torch.stack(grids)


def _value_bias(model, layer: int, group: int) -> torch.Tensor | float:
    try:
        return model.b_V[layer, group]
    except AttributeError:  # bias-free projections (Llama, Gemma): the bridge exposes no b_V
        return 0.0


def scores(grids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """[L, H, n, n] -> successor and copy scores [L, H]: fraction of rows whose argmax is d + 1, resp. d."""
    n = grids.shape[-1]
    best = grids.argmax(-1)  # [L, H, n]
    items = np.arange(n)
    return (best == (items + 1) % n).mean(-1), (best == items).mean(-1)


def ranked(values: np.ndarray, k: int = TOP_K) -> list[dict]:
    flat = values.ravel()
    order = np.argsort(-flat, kind="stable")[:k]
    n_heads = values.shape[1]
    return [{"head": head_name(int(i) // n_heads, int(i) % n_heads), "value": float(flat[i])} for i in order]


def compute(model, prompts: PromptSet) -> Result:
    tokens = prompts.item_token_ids
    grids = numpy(ov_grids(model, tokens))
    successor, copy = scores(grids)
    L, H = successor.shape
    summary = {"family": prompts.family, "n_items": int(len(tokens)), "n_layers": int(L), "n_heads": int(H),
               "chance_score": 1 / len(tokens), "name_threshold": NAME_SCORE,
               "top_successor": ranked(successor), "top_copy": ranked(copy)}
    arrays = {"successor_score": successor, "copy_score": copy,
              "grids": grids - grids.mean(-1, keepdims=True)}
    labels = {"heads": [[head_name(layer, h) for h in range(H)] for layer in range(L)],
              "items": item_names(prompts)}
    return Result(summary=summary, arrays=arrays, labels=labels)


def figures(result: Result) -> list[Figure]:
    s, a = result.summary, result.arrays
    layers = [f"L{layer}" for layer in range(s["n_layers"])]
    heads = [f"H{h}" for h in range(s["n_heads"])]
    out = []
    for key, word in (("successor_score", "successor"), ("copy_score", "copy")):
        fig = plots.score_heatmap(a[key], heads, layers, f"{word.capitalize()} score per head (OV circuit, "
                                  f"chance {s['chance_score']:.2f})", f"{word} score", chance=s["chance_score"])
        out.append(Figure(f"{NAME}-{word}", fig))
    items = result.labels["items"]
    shown = []
    for entry in s["top_successor"][:GRID_HEADS] + s["top_copy"][:GRID_HEADS]:
        if entry["head"] in shown:
            continue
        shown.append(entry["head"])
        layer, h = parse_head_name(entry["head"])
        fig = plots.heatmap(a["grids"][layer, h], items, items, f"{entry['head']}: item given (row) → item promoted "
                            "(column), logits centred per row", "logit", floor=thresholds.SCALE_LOGITS)
        fig.update_xaxes(title="promoted item")
        fig.update_yaxes(title="given item")
        out.append(Figure(f"{NAME}-grid-{entry['head']}", fig))
    return out


def narrative(result: Result) -> list[str]:
    s = result.summary
    sentences = [f"Each head's OV circuit was applied to the effective embeddings of the {s['n_items']} items; a "
                 f"head whose argmax ignored the item would score {s['chance_score']:.2f} on each score."]
    names = [name for row in result.labels["heads"] for name in row]
    for word, what in (("successor", "the next item"), ("copy", "the item itself")):
        # from the whole [L, H] score array, not the summary's top list: every named head and every tie is counted
        score = np.asarray(result.arrays[f"{word}_score"], dtype=float).ravel()
        order = np.argsort(-score, kind="stable")
        named = [i for i in order if score[i] >= s["name_threshold"]]
        if named:
            listed = ", ".join(f"{names[i]} ({100 * score[i]:.0f}%)" for i in named[:3])
            more = f" and {len(named) - 3} more" if len(named) > 3 else ""
            sentences.append(f"Heads whose OV circuit promotes {what} for at least {100 * s['name_threshold']:.0f}% "
                             f"of the items ({word} heads): {listed}{more}.")
        else:
            best = float(score.max())
            tied = [names[i] for i in order if score[i] == best]
            if len(tied) == 1:
                who = f"is {tied[0]}'s, {100 * best:.0f}%"
            else:
                more = f" and {len(tied) - 3} more" if len(tied) > 3 else ""
                who = f"{100 * best:.0f}%, is shared by {len(tied)} tied heads ({', '.join(tied[:3])}{more})"
            sentences.append(f"No head is a {word} head by this test: the highest {word} score {who}, under the "
                             f"{100 * s['name_threshold']:.0f}% threshold.")
    return sentences


SUCCESSOR_HEADS = Analysis(
    name=NAME,
    title="Successor and copy heads (OV circuit)",
    definition="For each head, its OV circuit applied to each item's effective embedding (the residual after block 0 "
               "of the item token run alone) and read on the items' unembeddings. Successor score: fraction of items "
               "whose most promoted item is the next one; copy score: the item itself (Gould et al. 2024).",
    compute=compute, figures=figures, narrative=narrative,
    description="Which heads promote the next item, or the same item, by their weights alone.",
    part="mechanism",
)
