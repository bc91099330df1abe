"""Tiny GPT-2 checkpoints whose day representation is chosen by hand: a circle, orthogonal features, base-10 waves.

Built on tests/planted_circuit.py (same tokenizer, noise, "is a day" flag and attention; read it first). What
differs: the day embedding writes FEATURES[d] (a row of a [7, k] matrix) into the first k coordinates, the planted
head L1H2 reads those coordinates and writes `features @ step` back INTO THE SAME coordinates (so it also rewrites
the day token's own state, as a real successor head does), and the unembedding of " <day e>" reads FEATURES[e].
`step` maps FEATURES[d] to FEATURES[d + shift] exactly, so the answer is day + shift.

  circle       FEATURES[d] = (cos, sin)(2 pi d / 7);   step = rotation by 2 pi shift / 7.  A 7-circle, +shift rotation.
  orthogonal   FEATURES[d] = one-hot e_d;              step = the cyclic shift e_d -> e_{d+shift}.  No circle at all,
               but after the head the day token holds e_d + g e_{d+1}: neighbours alike (the false circle of issue 18).
  base10       FEATURES[d] = (cos, sin)(2 pi d / 10), (cos, sin)(2 pi d / 5), (-1)^d;  step = one step along each
               wave (d -> d + shift on the number line, no wrap at 7).  Periodic features of periods 10, 5, 2.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from planted_circuit import (
    IS_DAY_DIM,
    NOT_DAY_DIM,
    QUERY_SCALE,
    TOKENIZER_DIR,
    _day_token_ids,
    _fill_with_noise,
)

from analyses.common.types import DAYS

HEAD = (1, 2)  # (layer, head) of the planted head
EMBED_SCALE = 1.0
OUTPUT_SCALE = 4.0
UNEMBED_SCALE = 2.0
KINDS = ("circle", "orthogonal", "base10")


def _rotation(angle: float) -> np.ndarray:
    return np.array([[np.cos(angle), np.sin(angle)], [-np.sin(angle), np.cos(angle)]])  # row vector @ R


def features_and_step(kind: str, shift: int = 1) -> tuple[np.ndarray, np.ndarray]:
    """([7, k] day features, [k, k] step with FEATURES[d] @ step = FEATURES[d + shift])."""
    d = np.arange(len(DAYS))
    if kind == "circle":
        theta = 2 * np.pi * d / 7
        return np.stack([np.cos(theta), np.sin(theta)], 1), _rotation(2 * np.pi * shift / 7)
    if kind == "orthogonal":
        return np.eye(7), np.roll(np.eye(7), shift, axis=1)
    if kind == "base10":
        waves = [np.stack([np.cos(2 * np.pi * d / t), np.sin(2 * np.pi * d / t)], 1) for t in (10, 5)]
        features = np.hstack([*waves, ((-1.0) ** d)[:, None]])
        step = np.zeros((5, 5))
        step[:2, :2], step[2:4, 2:4] = _rotation(2 * np.pi * shift / 10), _rotation(2 * np.pi * shift / 5)
        step[4, 4] = (-1.0) ** shift
        return features, step
    raise ValueError(f"unknown planted representation {kind!r}; known: {KINDS}")


def save_planted_features(folder: Path, kind: str, shift: int = 1, seed: int = 0,
                          output_scale: float = OUTPUT_SCALE) -> Path:
    """Write the checkpoint; `output_scale` sets how much of day + shift the head adds (after the day token's
    LayerNorm, which scales its ~1.4-norm state up about 5.7 times): 0.18 makes the day token e_d + ~1 e_{d+1}."""
    from transformers import GPT2Config, GPT2LMHeadModel, GPT2TokenizerFast

    features, step = features_and_step(kind, shift)
    k = features.shape[1]
    n_embd, n_head = 64, 4
    d_head = n_embd // n_head
    assert k <= IS_DAY_DIM < d_head
    torch.manual_seed(seed)
    tokenizer = GPT2TokenizerFast.from_pretrained(TOKENIZER_DIR)
    config = GPT2Config(n_layer=2, n_head=n_head, n_embd=n_embd, n_positions=64, vocab_size=len(tokenizer),
                        tie_word_embeddings=False)
    model = GPT2LMHeadModel(config)
    with torch.no_grad():
        _fill_with_noise(model)
        wte, lm_head = model.transformer.wte.weight, model.lm_head.weight
        wte[:, NOT_DAY_DIM] += EMBED_SCALE
        for day, ids in zip(range(len(DAYS)), _day_token_ids(tokenizer).values()):
            for token in ids:
                wte[token, NOT_DAY_DIM] -= EMBED_SCALE
                wte[token, IS_DAY_DIM] += EMBED_SCALE
                wte[token, :k] += EMBED_SCALE * torch.tensor(features[day], dtype=wte.dtype)
            lm_head[ids[0], :k] += UNEMBED_SCALE * torch.tensor(features[day], dtype=wte.dtype)
        layer, head = HEAD
        attn = model.transformer.h[layer].attn
        cols = range(head * d_head, (head + 1) * d_head)
        q, key, v = (range(i * n_embd + cols.start, i * n_embd + cols.stop) for i in range(3))
        w, b, proj = attn.c_attn.weight, attn.c_attn.bias, attn.c_proj.weight
        for c in (*q, *key, *v):
            w[:, c] = 0.0
        proj[cols.start:cols.stop, :] = 0.0
        b[q[0]] = QUERY_SCALE  # a constant query ...
        w[IS_DAY_DIM, key[0]] = 1.0  # ... on the "is a day" key: every position attends to the last day token
        for a in range(k):
            w[a, v[a]] = 1.0  # value = the day's features
            proj[cols.start + a, :k] = output_scale * torch.tensor(step[a], dtype=proj.dtype)  # out = features @ step
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return Path(folder)
