"""Hand-built GPT-2 checkpoints whose MLP does a known job (conventions of tests/planted_circuit.py: noise
everywhere, identity LayerNorms, untied unembedding reading ANSWER_DIMS; ReLU MLPs so that a neuron is off exactly).

`save_and_or_gpt2(folder, kind)`: two layer-0 heads, A = L0H1 and B = L0H2, both attend to the day token and write
"the day is d" into their own coordinates (X_DIMS[d], Y_DIMS[d]); layer 0's MLP combines them, per day e:
    AND  neuron_e = ReLU(x_e + y_e − 1.5 v)                         fires only when BOTH heads name e
    OR   out_e    = ReLU(x_e + y_e − 0.25 v) − ReLU(x_e + y_e − 0.75 v)   saturates: ONE head naming e is enough
and writes "the answer is e + 1" (ANSWER_DIMS). v is the size of one head's coordinate after the MLP's LayerNorm
(the same in every state: each head always writes one day). So, on the clean answer's logit, noising A or B (its
output from the corrupted twin) removes the whole lift in the AND model and nothing in the OR model; denoising A
or B alone restores nothing in the AND model and the whole lift in the OR model.

`save_neuron_gpt2(folder, shift)`: a mover head L0H0 copies the day into MOVED_DIMS at every later position; layer 0's
MLP has one ReLU neuron per day d, NEURONS[d], that reads MOVED_DIMS[d] (it fires for day d only) and writes the
answer d + shift. shift = 1: the MLP computes the next day (its neurons are the answer path); shift = 0: the neurons
fire for one day each and write that same day (a control that detects days but computes no step).
"""

from __future__ import annotations

import math
from pathlib import Path

import torch
from planted_circuit import (
    ANSWER_DIMS,
    DAY_DIMS,
    IS_DAY_DIM,
    QUERY_SCALE,
    TOKENIZER_DIR,
    _day_token_ids,
    _fill_with_noise,
    _set_embeddings,
)
from planted_honesty import _head_slices

from analyses.common.types import DAYS

X_DIMS = list(range(16, 23))
Y_DIMS = list(range(23, 30))
MOVED_DIMS = X_DIMS
HEAD_A, HEAD_B, MOVER = (0, 1), (0, 2), (0, 0)  # (layer, head)
NEURONS = [40 + 3 * d for d in range(len(DAYS))]  # not 0..6, so that a test cannot pass by reading indices as days
WRITE = 1.0  # each head's coordinate before the MLP's LayerNorm
ANSWER_GAIN = 2.0  # MLP output gain on the answer coordinate
N_EMBD = 64


def _layer_norm(size: float, others: list[float]) -> float:
    """LayerNorm output (identity gain, no bias) of a coordinate of `size` in a residual whose other non-zero
    coordinates are `others`, over N_EMBD dimensions (the noise, ~0.01 per weight, ignored)."""
    values = [size, *others]
    mean = sum(values) / N_EMBD
    var = sum(x * x for x in values) / N_EMBD - mean ** 2
    return (size - mean) / math.sqrt(var)


def _normalised_size(active: int) -> float:
    """v: one head's day coordinate at the final position after the MLP's LayerNorm. Each head reads the day
    token's normalised day coordinate (its residual: the day flag and the 'is a day' flag, 1 each) and writes it times
    WRITE; the final position's residual holds the 'not a day' flag (1) and `active` such coordinates."""
    head_out = WRITE * _layer_norm(1.0, [1.0])
    return _layer_norm(head_out, [1.0] + [head_out] * (active - 1))


def _new(folder: Path, seed: int, n_layer: int = 2):
    from transformers import GPT2Config, GPT2LMHeadModel, GPT2TokenizerFast

    torch.manual_seed(seed)
    tokenizer = GPT2TokenizerFast.from_pretrained(TOKENIZER_DIR)
    config = GPT2Config(n_layer=n_layer, n_head=4, n_embd=N_EMBD, n_positions=64, vocab_size=len(tokenizer),
                        tie_word_embeddings=False, activation_function="relu")
    model = GPT2LMHeadModel(config)
    with torch.no_grad():
        _fill_with_noise(model)
        _set_embeddings(model, _day_token_ids(tokenizer))
    return model, tokenizer


def _day_reader(attn, head: int, dims: list[int], scale: float) -> None:
    """A head that attends to the day token and writes day d into dims[d] (the planted QK; OV: day d -> dims[d])."""
    q, k, v, out = _head_slices(attn, head)
    attn.c_attn.bias[q[0]] = QUERY_SCALE
    attn.c_attn.weight[IS_DAY_DIM, k[0]] = 1.0
    for d in range(len(DAYS)):
        attn.c_attn.weight[DAY_DIMS[d], v[d]] = 1.0
        attn.c_proj.weight[out[d], dims[d]] = scale


def _clear_neurons(mlp, neurons: list[int]) -> None:
    mlp.c_fc.weight[:, neurons] = 0.0  # Conv1D: [d_model, d_mlp]
    mlp.c_fc.bias[neurons] = 0.0
    mlp.c_proj.weight[neurons, :] = 0.0  # [d_mlp, d_model]


def save_and_or_gpt2(folder: Path, kind: str, seed: int = 0) -> Path:
    if kind not in ("and", "or"):
        raise ValueError(f"kind must be 'and' or 'or', not {kind!r}")
    model, tokenizer = _new(folder, seed)
    v = _normalised_size(active=2)  # both heads always write one coordinate each
    with torch.no_grad():
        attn = model.transformer.h[0].attn
        _day_reader(attn, HEAD_A[1], X_DIMS, WRITE)
        _day_reader(attn, HEAD_B[1], Y_DIMS, WRITE)
        mlp = model.transformer.h[0].mlp
        n = len(DAYS)
        if kind == "and":
            neurons = [[e] for e in range(n)]
            parts = [[(1.0, -1.5 * v)] for _ in range(n)]
        else:
            neurons = [[e, n + e] for e in range(n)]
            parts = [[(1.0, -0.25 * v), (-1.0, -0.75 * v)] for _ in range(n)]
        _clear_neurons(mlp, [i for group in neurons for i in group])
        for e in range(n):
            for neuron, (sign, bias) in zip(neurons[e], parts[e]):
                mlp.c_fc.weight[X_DIMS[e], neuron] = 1.0
                mlp.c_fc.weight[Y_DIMS[e], neuron] = 1.0
                mlp.c_fc.bias[neuron] = bias
                mlp.c_proj.weight[neuron, ANSWER_DIMS[(e + 1) % n]] = sign * ANSWER_GAIN
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return Path(folder)


def save_neuron_gpt2(folder: Path, shift: int = 1, seed: int = 0) -> Path:
    model, tokenizer = _new(folder, seed)
    v = _normalised_size(active=1)
    with torch.no_grad():
        _day_reader(model.transformer.h[0].attn, MOVER[1], MOVED_DIMS, WRITE)
        mlp = model.transformer.h[0].mlp
        _clear_neurons(mlp, NEURONS)
        n = len(DAYS)
        for d, neuron in enumerate(NEURONS):
            mlp.c_fc.weight[MOVED_DIMS[d], neuron] = 1.0
            mlp.c_fc.bias[neuron] = -0.5 * v
            mlp.c_proj.weight[neuron, ANSWER_DIMS[(d + shift) % n]] = 2 * ANSWER_GAIN
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return Path(folder)
