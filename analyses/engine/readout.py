"""Reading the final position's residual stream out as logits: all of them, only the answer columns, or the
log-sum-exp over the vocabulary (for probabilities) without keeping the logits."""

from __future__ import annotations

import torch

from analyses.common.precision import widen


def soft_cap(model, logits: torch.Tensor) -> torch.Tensor:
    """The model's final logit soft-capping (Gemma 2/3: cap · tanh(logit / cap)), which acts on each logit, not on
    their difference; the logits unchanged where the model has none."""
    cap = getattr(model.cfg, "output_logits_soft_cap", -1.0) or -1.0
    return cap * torch.tanh(logits / cap) if cap > 0 else logits


def final_logit_diff(model, resid_final: torch.Tensor, pos_ids: torch.Tensor, neg_ids: torch.Tensor) -> torch.Tensor:
    """[rows, d_model] final-position residual -> [rows] LD, unembedding only the two answer columns."""
    return final_answer_logits(model, resid_final, pos_ids) - final_answer_logits(model, resid_final, neg_ids)


def final_answer_logits(model, resid_final: torch.Tensor, ids: torch.Tensor) -> torch.Tensor:
    """[rows, d_model] final-position residual -> [rows] logit of token ids[row], unembedding only that column."""
    x = widen(model.ln_final(resid_final[:, None, :])[:, 0])  # [rows, d_model]; the products in float32 at least
    W_U, b_U = model.W_U, model.b_U
    logit = (x * widen(W_U[:, ids].T)).sum(-1) + widen(b_U[ids])
    return soft_cap(model, logit)


def final_logits_of(model, resid_final: torch.Tensor, ids: torch.Tensor) -> torch.Tensor:
    """[..., d_model] final-position residual -> [..., K] logits of the K tokens `ids` only (every row the same
    columns; `final_logits(...)[..., ids]` without unembedding the rest of the vocabulary)."""
    W_U = model.W_U
    x = widen(model.ln_final(resid_final.reshape(-1, 1, resid_final.shape[-1]).to(W_U.dtype))[:, 0])
    logits = x @ widen(W_U[:, ids]) + widen(model.b_U[ids])
    return soft_cap(model, logits).reshape(*resid_final.shape[:-1], -1)


def final_logits(model, resid_final: torch.Tensor) -> torch.Tensor:
    """[..., d_model] final-position residual -> [..., d_vocab] logits (final norm, unembedding, soft-capping)."""
    shape = resid_final.shape[:-1]
    W_U = model.W_U
    x = model.ln_final(resid_final.reshape(-1, 1, resid_final.shape[-1]).to(W_U.dtype))[:, 0]
    # metrics accumulate in float32 (at least): a bfloat16 model's logits are compared in float32
    precision = torch.promote_types(W_U.dtype, torch.float32)
    logits = x.to(precision) @ W_U.to(precision) + model.b_U.to(precision)
    return soft_cap(model, logits).reshape(*shape, -1)


LOG_PARTITION_ROWS = 512  # vectors unembedded at once: 512 MiB of float32 logits with a 262,144-token vocabulary


def final_log_partition(model, resid_final: torch.Tensor) -> torch.Tensor:
    """[..., d_model] final-position residual -> [...] log-sum-exp of the logits over the whole vocabulary (float32 at
    least), unembedded LOG_PARTITION_ROWS vectors at a time: with a 262,144-token vocabulary the whole [n, d_vocab]
    would be gigabytes. P(token) = exp(final_answer_logits(...) - this)."""
    shape = resid_final.shape[:-1]
    flat = resid_final.reshape(-1, resid_final.shape[-1])
    parts = [torch.logsumexp(final_logits(model, flat[start:start + LOG_PARTITION_ROWS]).float(), -1)
             for start in range(0, flat.shape[0], LOG_PARTITION_ROWS)]
    return torch.cat(parts).reshape(shape)
