"""A tiny GPT-2 checkpoint with a two-head next-day circuit: a mover, then a successor, in two layers.

Built on tests/planted_circuit.py (same tokenizer, embeddings and noise; read it first). Coordinates added:

    MOVED_DIMS[d]  (16..22)  "the day moved here is d"   written by the mover head
    MOVED_FLAG     (23)      "a day was moved here"      written by the mover head at every position after the day

  * mover  L0H{MOVER}: attends to the day token (the planted head's QK) and copies it: DAY_DIMS[d] -> MOVED_DIMS[d],
    IS_DAY_DIM -> MOVED_FLAG. It writes nothing the unembedding reads.
  * successor L1H{SUCCESSOR}: a constant query against a key reading MOVED_FLAG (so it attends to the positions
    the mover wrote to), a value reading MOVED_DIMS[d], an output writing ANSWER_DIMS[d + 1].
So the day reaches the answer only along mover -> successor's value -> logits. Path patching must find that edge
(value input, about the whole clean − corrupted gap) and nothing else above its threshold.
"""

from __future__ import annotations

from pathlib import Path

import torch
from planted_circuit import (
    ANSWER_DIMS,
    DAY_DIMS,
    IS_DAY_DIM,
    OUTPUT_SCALE,
    QUERY_SCALE,
    TOKENIZER_DIR,
    _day_token_ids,
    _fill_with_noise,
    _set_embeddings,
)

from analyses.common.types import DAYS

MOVED_DIMS = list(range(16, 23))
MOVED_FLAG = 23
MOVER, SUCCESSOR = (0, 1), (1, 3)  # (layer, head)
MOVE_SCALE = 2.0


def save_two_step_gpt2(folder: Path, n_head: int = 4, n_embd: int = 64, seed: int = 0) -> Path:
    from transformers import GPT2Config, GPT2LMHeadModel, GPT2TokenizerFast

    d_head = n_embd // n_head
    torch.manual_seed(seed)
    tokenizer = GPT2TokenizerFast.from_pretrained(TOKENIZER_DIR)
    config = GPT2Config(n_layer=2, n_head=n_head, n_embd=n_embd, n_positions=64, vocab_size=len(tokenizer),
                        tie_word_embeddings=False)
    model = GPT2LMHeadModel(config)
    with torch.no_grad():
        _fill_with_noise(model)
        _set_embeddings(model, _day_token_ids(tokenizer))
        mover = _head(model.transformer.h[MOVER[0]].attn, MOVER[1], d_head, n_embd)
        # QK: constant query on the "is a day" key; OV: day d -> moved d, is-a-day -> moved flag.
        mover.bias_q[0] = QUERY_SCALE
        mover.w[IS_DAY_DIM, mover.k[0]] = 1.0
        for d in range(len(DAYS)):
            mover.w[DAY_DIMS[d], mover.v[d]] = 1.0
            mover.proj[mover.out.start + d, MOVED_DIMS[d]] = MOVE_SCALE
        mover.w[IS_DAY_DIM, mover.v[len(DAYS)]] = 1.0
        mover.proj[mover.out.start + len(DAYS), MOVED_FLAG] = MOVE_SCALE
        succ = _head(model.transformer.h[SUCCESSOR[0]].attn, SUCCESSOR[1], d_head, n_embd)
        succ.bias_q[0] = QUERY_SCALE
        succ.w[MOVED_FLAG, succ.k[0]] = 1.0
        for d in range(len(DAYS)):
            succ.w[MOVED_DIMS[d], succ.v[d]] = 1.0
            succ.proj[succ.out.start + d, ANSWER_DIMS[(d + 1) % len(DAYS)]] = OUTPUT_SCALE
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return Path(folder)


class _head:
    """Column ranges of one GPT-2 head (Conv1D c_attn [d_model, 3 d_model], c_proj [d_model, d_model]), zeroed."""

    def __init__(self, attn, head: int, d_head: int, n_embd: int):
        start = head * d_head
        self.q = range(start, start + d_head)
        self.k = range(n_embd + start, n_embd + start + d_head)
        self.v = range(2 * n_embd + start, 2 * n_embd + start + d_head)
        self.out = slice(start, start + d_head)
        self.w, self.proj = attn.c_attn.weight, attn.c_proj.weight
        for c in (*self.q, *self.k, *self.v):
            self.w[:, c] = 0.0
        self.proj[self.out, :] = 0.0
        self.bias_q = attn.c_attn.bias[self.q.start:self.q.stop]  # a view: writing sets the query bias
