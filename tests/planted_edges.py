"""A tiny GPT-2 checkpoint with two step heads fed by one mover: one through its value input, one through its query.

Built on tests/planted_two_step.py (read it first: the mover L0H1 copies the day into MOVED_DIMS; the successor
L1H3 reads them through its VALUE input and writes the next day's answer). Added here:

    POS_DIMS[p]  (24..30)  "this is position p", written by the position embedding of positions 0..6

  * query step head L1H{QUERY_STEP}: its QUERY reads MOVED_DIMS[d] (at the final position: the day the mover moved)
    and its key reads POS_DIMS[p], so it attends to position d; its value reads POS_DIMS[p] and its output writes
    ANSWER_DIMS[p + 1]. Position codes are the same in the clean and corrupted prompts, so the day reaches this
    head's output only through its query: the edge mover -> L1H2<q>.

Planted edges (day corruption: only the day's identity differs): input -> L0H1<v> (the mover reads the day),
L0H1 -> L1H3<v>, L0H1 -> L1H2<q>, L1H3 -> logits, L1H2 -> logits. Every other edge carries nothing that differs
between the twins. The prompts must have at least 7 tokens (BOS included), so every day has a position.
"""

from __future__ import annotations

from pathlib import Path

import torch
from planted_circuit import ANSWER_DIMS
from planted_two_step import MOVED_DIMS, _head, save_two_step_gpt2

from analyses.common.types import DAYS

POS_DIMS = list(range(24, 31))
QUERY_STEP = (1, 2)  # (layer, head)
POS_SCALE = 1.0
QUERY_GAIN = 4.0  # query on the moved day x key on the position: sets how sharply the head picks position d
OUTPUT_GAIN = 4.0
PLANTED_EDGES = ("input->a0.h1<v>", "a0.h1->a1.h3<v>", "a0.h1->a1.h2<q>", "a1.h3->logits", "a1.h2->logits")


def save_two_route_gpt2(folder: Path, seed: int = 0) -> Path:
    from transformers import GPT2LMHeadModel

    folder = save_two_step_gpt2(Path(folder), seed=seed)
    model = GPT2LMHeadModel.from_pretrained(folder)
    n_embd, n_head = model.config.n_embd, model.config.n_head
    with torch.no_grad():
        wpe = model.transformer.wpe.weight
        for p, dim in enumerate(POS_DIMS):
            wpe[p, dim] += POS_SCALE
        step = _head(model.transformer.h[QUERY_STEP[0]].attn, QUERY_STEP[1], n_embd // n_head, n_embd)
        for d in range(len(DAYS)):
            step.w[MOVED_DIMS[d], step.q[d]] = QUERY_GAIN
            step.w[POS_DIMS[d], step.k[d]] = 1.0
            step.w[POS_DIMS[d], step.v[d]] = 1.0
            step.proj[step.out.start + d, ANSWER_DIMS[(d + 1) % len(DAYS)]] = OUTPUT_GAIN
    model.save_pretrained(folder)
    return folder
