"""Successor, copy and offset heads, read from the weights: which item each head's OV circuit promotes for each item.

Method (Gould, Ong, Ogden & Conmy, "Successor Heads: Recurring, Interpretable Attention Heads In The Wild",
ICLR 2024): a head's OV circuit is applied to each item's *effective* token embedding and read through the
unembedding of the items; a successor head promotes the next item (Monday -> Tuesday), a copy head the item
itself. The recipe implemented here, for items t_0 .. t_{n-1} (the family's items with their leading space):

  x_d      = what head h's layer reads for item d:
             layer 0:   the token embedding embed(t_d) alone (blocks.0.hook_resid_pre with the position embedding
                        set to zero): layer-0 heads read the embedding, not what block 0 makes of it;
             layer >= 1: the residual stream after block 0 when the model runs on the one-token sequence [t_d]
                        (no BOS) with the position embedding set to zero: embed(t_d) + attn0 (which can only
                        attend to t_d itself) + MLP0(norm(...)), the paper's effective embedding. Without the
                        zeroing it would carry pos_embed(0), the first position's embedding, which in GPT-2 is
                        large and shared by every token (the attention sink), and not what a day token in the
                        middle of a prompt carries. Models with rotary positions add none to the stream.
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
only with a score of at least OFFSET_NAME_SCORE (for 7 items a head with independent uniform argmaxes reaches it with
probability below 0.001).

Offsets (any step, not only +1 and 0): for each head, the offset of each row's argmax, (argmax − d) mod n, written
signed in (−n/2, n/2]; the offset histogram [L, H, n] counts them over the n items, the modal offset is its most
frequent and the modal frequency that count / n. A head maps items by a fixed offset (it is named "an offset +2
head", a predecessor head for −1) when its modal frequency reaches `modal_threshold(n)`: OFFSET_NAME_SCORE, raised until
a head with uniform argmaxes reaches it for ANY of the n offsets with probability below OFFSET_NAME_P (n x the binomial
tail; 6/7 for 7 items). The family's own step, family_offset = answer_offset − copy_offset (the answer counted from
the item the copy comparison names: +2 for yesterday_tomorrow, −1 for day_before, +1 for a list), gets its own
score beside +1 and copy: the fraction of rows whose argmax is d + family_offset.

Arrays: successor_score, copy_score, family_offset_score, modal_offset, modal_frequency [L, H]; offset_histogram
[L, H, n] (column k: offset k mod n); grids [L, H, n, n] (M_h, each row centred). Labels: heads, items, offsets
(the signed offset of each histogram column).
Summary: top_successor, top_copy, top_family_offset = [{"name": "L9H1", "value": 0.86}] sorted descending (value in
[0, 1]); offset_heads = [{"name", "offset", "value" (modal frequency)}] for every head at or above
modal_threshold, largest first; family_offset; modal_threshold; embedding (which input the heads were read on).
"""

from __future__ import annotations

from typing import Annotated

import numpy as np

from analyses.common import phrases, plots, thresholds
from analyses.common.contract import Count, FamilyHeader, Fraction, Ranked
from analyses.common.offset_scores import modal_threshold, offset_histogram, offset_score, scores
from analyses.common.thresholds import OFFSET_NAME_P, OFFSET_NAME_SCORE
from analyses.common.types import Analysis, Figure, PromptSet, Result
from analyses.methods.attribution import head_name, parse_head_name
from analyses.methods.mechanism import family_step, item_names, numpy, signed_offsets
from analyses.methods.ov_circuits import has_position_embedding, ov_grids

NAME = "successor_heads"
TOP_K = 10
GRID_HEADS = 3  # 7x7 grids shown for the top heads of each kind
EMBEDDING_NOTE = {True: "the token embedding without any position embedding (layer 0), and the residual after "
                        "block 0 of the token run alone with the position embedding set to zero (later layers)",
                  False: "the token embedding (layer 0), and the residual after block 0 of the token run alone "
                         "(later layers; this model adds no position embedding to the residual stream)"}


def offset_word(offset: int) -> str:
    return {0: "copy", 1: "successor", -1: "predecessor"}.get(offset, f"offset {offset:+d}")


def ranked(values: np.ndarray, k: int = TOP_K) -> list[dict]:
    flat = values.ravel()
    order = np.argsort(-flat, kind="stable")[:k]
    n_heads = values.shape[1]
    return [{"name": head_name(int(i) // n_heads, int(i) % n_heads), "value": float(flat[i])} for i in order]


def compute(model, prompts: PromptSet) -> Result:
    tokens = prompts.item_token_ids
    grids = numpy(ov_grids(model, tokens))
    successor, copy = scores(grids)
    L, H = successor.shape
    n = len(tokens)
    histogram = offset_histogram(grids)  # [L, H, n]
    modal = histogram.argmax(-1)  # [L, H], ties to the smallest unsigned offset (copy first)
    frequency = histogram.max(-1)
    step = family_step(prompts)
    family_score = offset_score(grids, step)
    threshold = modal_threshold(n)
    order = np.argsort(-frequency.ravel(), kind="stable")
    offset_heads = [{"name": head_name(int(i) // H, int(i) % H), "offset": int(signed_offsets(n)[modal.ravel()[i]]),
                     "value": float(frequency.ravel()[i])} for i in order if frequency.ravel()[i] >= threshold]
    summary = {"family": prompts.family, "n_items": int(n), "n_layers": int(L), "n_heads": int(H),
               "chance_score": 1 / n, "name_threshold": OFFSET_NAME_SCORE, "modal_threshold": threshold,
               "family_offset": step, "embedding": EMBEDDING_NOTE[has_position_embedding(model)],
               "top_successor": ranked(successor), "top_copy": ranked(copy),
               "top_family_offset": ranked(family_score), "offset_heads": offset_heads}
    arrays = {"successor_score": successor, "copy_score": copy, "family_offset_score": family_score,
              "modal_offset": signed_offsets(n)[modal], "modal_frequency": frequency, "offset_histogram": histogram,
              "grids": grids - grids.mean(-1, keepdims=True)}
    labels = {"heads": [[head_name(layer, h) for h in range(H)] for layer in range(L)],
              "items": item_names(prompts), "offsets": [int(k) for k in signed_offsets(n)]}
    return Result(summary=summary, arrays=arrays, labels=labels)


def figures(result: Result) -> list[Figure]:
    s, a = result.summary, result.arrays
    layers = [f"L{layer}" for layer in range(s["n_layers"])]
    heads = [f"H{h}" for h in range(s["n_heads"])]
    out = []
    for key, word in (("successor_score", "successor"), ("copy_score", "copy")):
        fig = plots.score_heatmap(a[key], heads, layers, f"{word.capitalize()} score per head (OV circuit, "
                                  f"chance {s['chance_score']:.2f})", f"{word} score", chance=s["chance_score"],
                                  named_at=s["name_threshold"])
        out.append(Figure(f"{NAME}-{word}", fig))
    if "offset_histogram" in a:
        out += _offset_figures(result)
    items = result.labels["items"]
    shown = []
    for entry in s["offset_heads"][:GRID_HEADS] + s["top_successor"][:GRID_HEADS] + s["top_copy"][:GRID_HEADS]:
        head = entry["name"]
        if head in shown:
            continue
        shown.append(head)
        layer, h = parse_head_name(head)
        fig = plots.heatmap(a["grids"][layer, h], items, items, f"{head}: item given (row) → item promoted "
                            "(column), logits centred per row", "logit", floor=thresholds.SCALE_LOGITS)
        fig.update_xaxes(title="promoted item")
        fig.update_yaxes(title="given item")
        out.append(Figure(f"{NAME}-grid-{head}", fig))
    return out


def _offset_figures(result: Result) -> list[Figure]:
    """The modal offset's frequency per head, and every head's offset histogram (columns in signed order)."""
    s, a = result.summary, result.arrays
    layers = [f"L{layer}" for layer in range(s["n_layers"])]
    heads = [f"H{h}" for h in range(s["n_heads"])]
    modal = np.vectorize(lambda k: f"modal offset {int(k):+d}")(a["modal_offset"])
    names = np.array(result.labels["heads"])
    fig = plots.score_heatmap(a["modal_frequency"], heads, layers, "How regular each head's OV map is: frequency of "
                              f"its modal offset over the items (chance {s['chance_score']:.2f}; named at "
                              f"{s['modal_threshold']:.2f})", "frequency", chance=s["chance_score"],
                              named_at=s["modal_threshold"],
                              hover=np.char.add(np.char.add(names, ": "), modal))
    signed = np.array(result.labels["offsets"])
    order = np.argsort(signed, kind="stable")
    flat = a["offset_histogram"].reshape(-1, len(signed))[:, order]
    histogram = plots.score_heatmap(flat, [f"{int(k):+d}" for k in signed[order]], names.ravel().tolist(),
                                    "Offset histogram per head: fraction of items whose most promoted item lies k "
                                    "steps on", "fraction", chance=s["chance_score"],
                                    named_at=s["modal_threshold"])
    histogram.update_xaxes(title="offset k (0 = copy, +1 = successor)")
    return [Figure(f"{NAME}-modal-offset", fig), Figure(f"{NAME}-offset-histogram", histogram)]


def _offset_sentences(s: dict) -> list[str]:
    step = s["family_offset"]
    sentences = []
    if step not in (0, 1):  # +1 and 0 have their own sentences above
        named = [e for e in s["top_family_offset"] if e["value"] >= s["name_threshold"]]
        if named:
            listed = phrases.named_percentages(named[:3])
            sentences.append(f"This family's step is {step:+d}: heads whose OV circuit promotes the item {step:+d} "
                             f"away for at least {100 * s['name_threshold']:.0f}% of the items: {listed}.")
        else:
            best = s["top_family_offset"][0]
            sentences.append(f"This family's step is {step:+d}, and no head's OV circuit promotes the item {step:+d} "
                             f"away for {100 * s['name_threshold']:.0f}% of the items (highest: {best['name']}'s "
                             f"{100 * best['value']:.0f}%).")
    named = s["offset_heads"]
    if named:
        listed = ", ".join(f"{e['name']} ({offset_word(e['offset'])}, {100 * e['value']:.0f}%)" for e in named[:4])
        sentences.append(f"Heads that map the items by one fixed offset for at least {100 * s['modal_threshold']:.0f}% "
                         f"of them (a head with random argmaxes does so for some offset with probability under "
                         f"{OFFSET_NAME_P:g}): {listed}.")
    else:
        sentences.append(phrases.nothing_stands_out(
            f"No head maps the items by one fixed offset for {phrases.share(s['modal_threshold'])} of them",
            " in the offset histogram"))
    return sentences


def narrative(result: Result) -> list[str]:
    s = result.summary
    read_on = f" (read on {s['embedding']})" if "embedding" in s else ""
    sentences = [f"Each head's OV circuit was applied to the {s['n_items']} items{read_on}; a head whose argmax "
                 f"ignored the item would score {s['chance_score']:.2f} on each score."]
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
    if "offset_heads" in s:  # results saved before the offset view have none
        sentences += _offset_sentences(s)
    return sentences


class OffsetHead(Ranked):
    offset: Annotated[int, "the head's modal offset: the step its OV circuit most often promotes"]


class SuccessorHeadsSummary(FamilyHeader):
    """Successor, copy and offset heads read from the weights (OV circuits on the items' effective embeddings)."""

    n_items: Annotated[Count, "items in the sequence"]
    n_layers: Annotated[Count, "layers of the model"]
    n_heads: Annotated[Count, "heads per layer"]
    chance_score: Annotated[Fraction, "1 / n_items: a score of a head unrelated to the items"]
    name_threshold: Annotated[Fraction, "the score a head needs to be named"]
    modal_threshold: Annotated[Fraction, "modal-offset frequency at or above which a head is an offset head"]
    family_offset: Annotated[int, "the family's step: answer item minus the copy item, signed"]
    embedding: Annotated[str, "which input the heads' OV circuits were read on"]
    top_successor: Annotated[list[Ranked], "heads by successor score, largest first"]
    top_copy: Annotated[list[Ranked], "heads by copy score"]
    top_family_offset: Annotated[list[Ranked], "heads by the score of the family's own step"]
    offset_heads: Annotated[list[OffsetHead], "heads whose modal offset reaches modal_threshold (value: frequency)"]


SUCCESSOR_HEADS = Analysis(
    summary_type=SuccessorHeadsSummary,
    name=NAME,
    title="Successor, copy and offset heads (OV circuit)",
    definition="For each head, its OV circuit applied to each item's input (layer 0: the token embedding; later "
               "layers: the residual after block 0 of the item token run alone; no position embedding in either) and "
               "read on the items' unembeddings. Successor score: fraction of items whose most promoted item is the "
               "next one; copy score: the item itself (Gould et al. 2024). Offset histogram: for each head, how often "
               "the most promoted item lies k steps on, for every k; the family's own step is scored beside +1 and 0.",
    compute=compute, figures=figures, narrative=narrative,
    description="Which heads promote the next item, the same item, or the item any fixed number of steps on, by their "
                "weights alone.",
    part="mechanism",
)
