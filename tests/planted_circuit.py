"""A tiny GPT-2 checkpoint whose next-weekday prediction is carried, by construction, by one head.

`save_planted_gpt2(folder, layer, head)` writes a GPT-2-architecture model (GPT-2's real tokenizer, so
the shipped prompt families tokenize exactly as for GPT-2 small) in which a single attention head,
`L{layer}H{head}`, reads the day named in the prompt and writes the NEXT day's unembedding direction.
Everything else is near-zero random noise, so analyses (direct logit attribution, activation patching,
attention) should all point at that head.

The residual stream (d_model = 64) is split into hand-picked coordinates; the rest carry only noise:

    DAY_DIMS[d]     (0..6)   "this token is day d"      written by the embedding of " Monday" / "Monday" ..
    IS_DAY_DIM      (7)      "this token is a day"      written by every day token; the planted head's key
    NOT_DAY_DIM     (8)      "this token is not a day"  written by every other token (BOS included), so
                                                        LayerNorm has a fixed direction to normalise, and
                                                        the non-day keys stay near zero instead of being
                                                        noise blown up by the normalisation
    ANSWER_DIMS[d]  (9..15)  "the answer is day d"      written only by the planted head; read by the
                                                        unembedding of " <day d>" (with its leading space)

The planted head:
  * QK: a constant query (bias only, so every position asks the same question) dotted with a key that
    reads IS_DAY_DIM. A day token's key is large, every other token's is ~0, so the head puts almost all
    of its attention on the day token (or the last day token before the position).
  * OV: the value reads DAY_DIMS[d] and the output writes ANSWER_DIMS[d + 1 mod 7], i.e. Monday ->
    Tuesday, ..., Sunday -> Monday, for both spellings of the day (" Monday" and the list family's
    "Monday" share one embedding).

Embeddings are untied (`tie_word_embeddings=False`): the token embedding writes DAY_DIMS while the
unembedding reads ANSWER_DIMS, so the day in the prompt (the copy distractor) gets no logit boost and
the correct day wins over the whole vocabulary. LayerNorm gains are 1 and biases 0, so the folding and
centring `report.run.model.load_model` applies leave the logits unchanged (up to a constant per position).
"""

from __future__ import annotations

from pathlib import Path

import torch

from analyses.common.types import DAYS

TOKENIZER_DIR = Path(__file__).parent / "fixtures" / "gpt2-tokenizer"

DAY_DIMS = list(range(0, 7))
IS_DAY_DIM = 7
NOT_DAY_DIM = 8
ANSWER_DIMS = list(range(9, 16))

NOISE_STD = 0.01  # every weight not set by hand: small enough that no other component matters
EMBED_SCALE = 1.0  # size of the hand-set embedding coordinates (the noise rows are ~NOISE_STD)
QUERY_SCALE = 16.0  # constant query on the "is a day" key: sets how sharply the head picks the day
OUTPUT_SCALE = 4.0  # planted head's OV gain: its output must dominate the final residual before ln_f
UNEMBED_SCALE = 2.0  # gain of each " <day>" unembedding on its ANSWER_DIM: sets the logit margin


def save_planted_gpt2(folder: Path, layer: int = 1, head: int = 2, n_layer: int = 2, n_head: int = 4,
                      n_embd: int = 64, seed: int = 0, shift: int = 1) -> Path:
    """Write the planted-circuit checkpoint (weights + GPT-2 tokenizer) to `folder`; return `folder`.

    `shift` is the day the planted head writes, relative to the day it reads: 1 = the next day (default),
    0 = the day itself (a copy head, the control that does not do the task).
    """
    from transformers import GPT2Config, GPT2LMHeadModel, GPT2TokenizerFast

    if not (0 <= layer < n_layer and 0 <= head < n_head):
        raise ValueError(f"head L{layer}H{head} does not exist in a {n_layer}-layer, {n_head}-head model")
    d_head = n_embd // n_head
    if d_head < len(DAYS) + 1 or n_embd <= max(ANSWER_DIMS):
        raise ValueError(f"n_embd={n_embd}, n_head={n_head} leave too few dimensions for the planted circuit")
    torch.manual_seed(seed)
    tokenizer = GPT2TokenizerFast.from_pretrained(TOKENIZER_DIR)
    config = GPT2Config(n_layer=n_layer, n_head=n_head, n_embd=n_embd, n_positions=64,
                        vocab_size=len(tokenizer), tie_word_embeddings=False)
    model = GPT2LMHeadModel(config)
    with torch.no_grad():
        _fill_with_noise(model)
        _set_embeddings(model, _day_token_ids(tokenizer))
        _plant_head(model.transformer.h[layer].attn, head, d_head, n_embd, shift)
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return Path(folder)


def _day_token_ids(tokenizer) -> dict[str, list[int]]:
    """Both single-token spellings of each day: " Monday" (mid-sentence) and "Monday" (start of a list)."""
    ids = {}
    for day in DAYS:
        spellings = [tokenizer.encode(text, add_special_tokens=False) for text in (" " + day, day)]
        assert all(len(s) == 1 for s in spellings), f"{day} is not one token in both spellings"
        ids[day] = [s[0] for s in spellings]
    return ids


def _fill_with_noise(model) -> None:
    """Every weight small random, biases zero, LayerNorms identity: the background nothing relies on."""
    for name, param in model.named_parameters():
        if name.endswith(".bias"):
            param.zero_()
        elif ".ln_" in name or name.startswith("transformer.ln_f"):
            param.fill_(1.0)  # LayerNorm gains; folding an identity gain changes nothing
        else:
            param.normal_(0.0, NOISE_STD)


def _set_embeddings(model, day_ids: dict[str, list[int]]) -> None:
    """Token embedding: day flags for day tokens, a 'not a day' flag for all others; unembedding reads answers."""
    wte = model.transformer.wte.weight  # [vocab, d_model]
    lm_head = model.lm_head.weight  # [vocab, d_model], untied from wte
    wte[:, NOT_DAY_DIM] += EMBED_SCALE
    for d, day in enumerate(DAYS):
        for token in day_ids[day]:
            wte[token, NOT_DAY_DIM] -= EMBED_SCALE
            wte[token, DAY_DIMS[d]] += EMBED_SCALE
            wte[token, IS_DAY_DIM] += EMBED_SCALE
        spaced = day_ids[day][0]  # answers are scored with their leading space
        lm_head[spaced, ANSWER_DIMS[d]] += UNEMBED_SCALE


def _plant_head(attn, head: int, d_head: int, n_embd: int, shift: int = 1) -> None:
    """Hand-set one head's Q, K, V and O.

    GPT-2's `c_attn` is a Conv1D: weight [d_model, 3 * d_model] (input @ weight), columns ordered
    [Q | K | V], each split into heads of d_head columns. `c_proj.weight` is [d_model(heads), d_model].
    """
    cols = slice(head * d_head, (head + 1) * d_head)
    q_cols = range(0 * n_embd + cols.start, 0 * n_embd + cols.stop)
    k_cols = range(1 * n_embd + cols.start, 1 * n_embd + cols.stop)
    v_cols = range(2 * n_embd + cols.start, 2 * n_embd + cols.stop)
    w, b = attn.c_attn.weight, attn.c_attn.bias
    for c in (*q_cols, *k_cols, *v_cols):
        w[:, c] = 0.0  # the planted head reads only what is set below
    # QK: query = constant bias on head dim 0; key dim 0 = the (normalised) "is a day" coordinate.
    b[q_cols[0]] = QUERY_SCALE
    w[IS_DAY_DIM, k_cols[0]] = 1.0
    # OV: value dim d = "day d"; output of value dim d = "answer is day d + shift".
    proj = attn.c_proj.weight
    proj[cols, :] = 0.0
    for d in range(len(DAYS)):
        w[DAY_DIMS[d], v_cols[d]] = 1.0
        proj[cols.start + d, ANSWER_DIMS[(d + shift) % len(DAYS)]] = OUTPUT_SCALE
