"""Two more hand-built GPT-2 checkpoints whose answer is known, for the honesty tests (see planted_circuit.py for
the one-head next-day model and the conventions: noise everywhere, identity LayerNorms, untied unembedding).

`save_copy_circle_gpt2`: a model that does NOT do the task. Day d is embedded at angle 2*pi*d/7 on a circle in one
plane; one head attends to the day token and copies that plane (OV = identity) into the answer plane, which the
unembedding of " <day k>" reads at angle 2*pi*k/7. Logit(k) is proportional to cos(angle_k - angle_d): the model
names the day in the prompt (0 of 7 correct), and the next day is its SECOND choice, so the clean - corrupted gap
of the day corruption is large. The relation word ("tomorrow" / "yesterday") is read by nothing.

`save_two_step_gpt2`: a next-day circuit in two steps.
  * mover, L0H0: from every position, attends to the day token and writes "the day is d" into MOVED_DIMS[d];
  * step heads in layer 1, from the final position: L1H0 attends to " tomorrow" (if there is one; else to BOS,
    which carries nothing) and maps MOVED[d] -> answer d + 1; L1H1 attends to " yesterday" and maps MOVED[d] ->
    answer d - 1.
So the day corruption (another day named) should find the mover (and the active step head, which reads it), and
the relation corruption (" tomorrow" -> " yesterday", same day) should find the step heads and not the mover.
"""

from __future__ import annotations

import math
from pathlib import Path

import torch
from planted_circuit import (
    ANSWER_DIMS,
    DAY_DIMS,
    EMBED_SCALE,
    IS_DAY_DIM,
    NOT_DAY_DIM,
    OUTPUT_SCALE,
    QUERY_SCALE,
    TOKENIZER_DIR,
    UNEMBED_SCALE,
    _day_token_ids,
    _fill_with_noise,
)

from analyses.common.types import DAYS

CIRCLE_DIMS = (0, 1)  # the copy model's day plane
ANSWER_PLANE = (9, 10)  # the copy model's answer plane
MOVED_DIMS = list(range(16, 23))  # two-step model: "the day named is d", written by the mover
PLUS_DIM, MINUS_DIM, BOS_DIM = 23, 24, 25  # " tomorrow", " yesterday", the BOS token (the step heads' sink)
SINK_KEY = 0.2  # the step heads' key on BOS: well below the relation word's 1.0, so the word wins when present
# The mover writes small: a large MOVED coordinate would dominate the norm of the relation word's residual, and the
# normalised relation flag would then lose to the BOS sink.
MOVER_SCALE = 0.25


def _new_model(folder: Path, n_layer: int, seed: int):
    from transformers import GPT2Config, GPT2LMHeadModel, GPT2TokenizerFast

    torch.manual_seed(seed)
    tokenizer = GPT2TokenizerFast.from_pretrained(TOKENIZER_DIR)
    config = GPT2Config(n_layer=n_layer, n_head=4, n_embd=64, n_positions=64, vocab_size=len(tokenizer),
                        tie_word_embeddings=False)
    model = GPT2LMHeadModel(config)
    with torch.no_grad():
        _fill_with_noise(model)
    return model, tokenizer


def _head_slices(attn, head: int, n_embd: int = 64, d_head: int = 16):
    """(q, k, v column ranges of c_attn, output rows of c_proj) for one GPT-2 head; its reads zeroed first."""
    cols = range(head * d_head, (head + 1) * d_head)
    q, k, v = ([part * n_embd + c for c in cols] for part in range(3))
    for c in (*q, *k, *v):
        attn.c_attn.weight[:, c] = 0.0
        attn.c_attn.bias[c] = 0.0
    attn.c_proj.weight[list(cols), :] = 0.0
    return q, k, v, list(cols)


def save_copy_circle_gpt2(folder: Path, layer: int = 1, head: int = 2, n_layer: int = 3, seed: int = 0) -> Path:
    model, tokenizer = _new_model(folder, n_layer, seed)
    with torch.no_grad():
        wte, lm_head = model.transformer.wte.weight, model.lm_head.weight
        wte[:, NOT_DAY_DIM] += EMBED_SCALE
        for d, day in enumerate(DAYS):
            angle = 2 * math.pi * d / len(DAYS)
            for token in _day_token_ids(tokenizer)[day]:
                wte[token, NOT_DAY_DIM] -= EMBED_SCALE
                wte[token, IS_DAY_DIM] += EMBED_SCALE
                wte[token, CIRCLE_DIMS[0]] += EMBED_SCALE * math.cos(angle)
                wte[token, CIRCLE_DIMS[1]] += EMBED_SCALE * math.sin(angle)
            spaced = _day_token_ids(tokenizer)[day][0]
            lm_head[spaced, ANSWER_PLANE[0]] += UNEMBED_SCALE * math.cos(angle)
            lm_head[spaced, ANSWER_PLANE[1]] += UNEMBED_SCALE * math.sin(angle)
        attn = model.transformer.h[layer].attn
        q, k, v, out = _head_slices(attn, head)
        attn.c_attn.bias[q[0]] = QUERY_SCALE
        attn.c_attn.weight[IS_DAY_DIM, k[0]] = 1.0
        for i in range(2):  # OV = identity from the day plane to the answer plane
            attn.c_attn.weight[CIRCLE_DIMS[i], v[i]] = 1.0
            attn.c_proj.weight[out[i], ANSWER_PLANE[i]] = OUTPUT_SCALE
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return Path(folder)


def save_two_step_gpt2(folder: Path, seed: int = 0, swapped: bool = False) -> Path:
    """`swapped`: the step heads map the other way (" tomorrow" -> the day before, " yesterday" -> the day after),
    so on the tomorrow family the clean prompts prefer the relation twin's answer: a reversed relation gap."""
    model, tokenizer = _new_model(folder, 2, seed)
    day_ids = _day_token_ids(tokenizer)
    relation_ids = {word: tokenizer.encode(" " + word, add_special_tokens=False) for word in ("tomorrow", "yesterday")}
    assert all(len(ids) == 1 for ids in relation_ids.values())
    with torch.no_grad():
        wte, lm_head = model.transformer.wte.weight, model.lm_head.weight
        wte[:, NOT_DAY_DIM] += EMBED_SCALE
        for d, day in enumerate(DAYS):
            for token in day_ids[day]:
                wte[token, NOT_DAY_DIM] -= EMBED_SCALE
                wte[token, IS_DAY_DIM] += EMBED_SCALE
                wte[token, DAY_DIMS[d]] += EMBED_SCALE
            lm_head[day_ids[day][0], ANSWER_DIMS[d]] += UNEMBED_SCALE
        wte[relation_ids["tomorrow"][0], PLUS_DIM] += EMBED_SCALE
        wte[relation_ids["yesterday"][0], MINUS_DIM] += EMBED_SCALE
        wte[tokenizer.bos_token_id, BOS_DIM] += EMBED_SCALE
        mover = model.transformer.h[0].attn
        q, k, v, out = _head_slices(mover, 0)
        mover.c_attn.bias[q[0]] = QUERY_SCALE
        mover.c_attn.weight[IS_DAY_DIM, k[0]] = 1.0
        for d in range(len(DAYS)):
            mover.c_attn.weight[DAY_DIMS[d], v[d]] = 1.0
            mover.c_proj.weight[out[d], MOVED_DIMS[d]] = MOVER_SCALE
        step = model.transformer.h[1].attn
        sign = -1 if swapped else 1
        for head, (flag, shift) in enumerate(((PLUS_DIM, sign), (MINUS_DIM, -sign))):
            q, k, v, out = _head_slices(step, head)
            step.c_attn.bias[q[0]] = QUERY_SCALE
            step.c_attn.weight[flag, k[0]] = 1.0
            step.c_attn.weight[BOS_DIM, k[0]] = SINK_KEY
            for d in range(len(DAYS)):
                step.c_attn.weight[MOVED_DIMS[d], v[d]] = 1.0
                step.c_proj.weight[out[d], ANSWER_DIMS[(d + shift) % len(DAYS)]] = OUTPUT_SCALE
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return Path(folder)
