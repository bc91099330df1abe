"""`--dtype`: the precision a model is loaded and run in.

The rule for `auto`: float32 on the CPU and on MPS, and for every model of at most 1B parameters anywhere;
bfloat16 on CUDA for models over 1B parameters (gpt2-xl, Llama-3.2-1B, Qwen2.5-1.5B, Gemma-2-2B). Small models
are cheap in float32 and their numbers then match the float32 tests to 1e-4; large models are what does not fit
or runs too slowly in float32, and bfloat16 keeps float32's range (no overflow in attention scores), which
float16 does not. Whatever the model's dtype, the analyses accumulate metrics, DLA sums and statistics in float32
(`analyses/common/precision.py` states the identity tolerance each dtype allows; summaries report it).
"""

from __future__ import annotations

import torch

from report.errors import UserError

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
CHOICES = ("auto", *DTYPES)
HALF_PRECISION_ABOVE = 1_000_000_000  # parameters; `auto` picks bfloat16 on CUDA above this
BYTES = {"float32": 4, "bfloat16": 2, "float16": 2}
AUTO_RULE = ("auto: float32 on CPU and MPS and for models of at most 1B parameters; "
             "bfloat16 on CUDA for models over 1B parameters")


def resolve_dtype(requested: str, device: str, n_params: int | None) -> str:
    """The dtype name to load with; `n_params` (None when unknown) matters only for `auto` on CUDA."""
    if requested not in CHOICES:
        raise UserError(f"unknown --dtype {requested!r}; choose one of {', '.join(CHOICES)}")
    if requested != "auto":
        return requested
    if device == "cuda" and n_params is not None and n_params > HALF_PRECISION_ABOVE:
        return "bfloat16"
    return "float32"


def torch_dtype(name: str) -> torch.dtype:
    return DTYPES[name]
