"""What an identity check may miss by, per dtype, and the soft-capped logits of Gemma 2.

The analyses accumulate in float32 whatever the model's dtype (DLA projections, logit differences, statistics),
but the activations they start from carry the model's own rounding: bfloat16 keeps 8 significant bits
(relative step 2^-8 = 0.0039), float16 11 bits (2^-11 = 0.00049), float32 24 bits. An identity that holds in
exact arithmetic (components summing to the logit difference, the whole-residual patch recovering the clean run)
therefore holds within a tolerance that depends on the dtype; the summaries state it as `identity_tolerance`.

Tolerances are absolute, in logits (or in fractions of the clean - corrupted gap for patching effects): the
float32 one is the suite's 1e-4; the half-precision ones allow a few rounding steps on logit differences of
order 10, measured on the tiny test models (bfloat16 errors there are 1e-3 to 3e-2).
"""

from __future__ import annotations

import torch

IDENTITY_TOLERANCE = {"float32": 1e-4, "float64": 1e-8, "bfloat16": 0.25, "float16": 0.05}


def dtype_name(model) -> str:
    """'float32', 'bfloat16', ... of the model's unembedding (the dtype its activations are computed in)."""
    return str(model.W_U.dtype).removeprefix("torch.")


def identity_tolerance(model) -> float:
    return IDENTITY_TOLERANCE.get(dtype_name(model), IDENTITY_TOLERANCE["bfloat16"])


def soft_cap(model) -> float | None:
    """Gemma 2's final logit soft-cap (logits = cap * tanh(raw / cap)), or None."""
    cap = getattr(model.cfg, "output_logits_soft_cap", None) or -1.0
    return float(cap) if cap > 0 else None


def uncapped(logits: torch.Tensor, model) -> torch.Tensor:
    """The logits before the soft-cap (float32): what the residual stream's linear decomposition sums to."""
    logits = logits.float()
    cap = soft_cap(model)
    if cap is None:
        return logits
    return cap * torch.atanh((logits / cap).clamp(-1 + 1e-7, 1 - 1e-7))


def widen(tensor: torch.Tensor) -> torch.Tensor:
    """float32 for half-precision tensors; float32 and float64 unchanged (a float64 test model stays float64)."""
    return tensor if tensor.dtype in (torch.float32, torch.float64) else tensor.float()
