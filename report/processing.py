"""The weight processing each architecture gets: one home for the flags that model.py and bundled.py apply.

The notebook's processing folds LayerNorm into the next weights, centres what writes to the residual stream
and the unembedding, folds the value biases into the output bias (b_V W_O does not depend on where a head looks,
so per-head DLA leaves it in the layer's b_O; recorded so the report can say so), and refactors W_Q W_K / W_V W_O;
none of it changes the logits.
"""

from __future__ import annotations

WEIGHT_PROCESSING = dict(fold_ln=True, center_writing_weights=True, center_unembed=True, fold_value_biases=True,
                         refactor_factored_attn_matrices=True)

# The bundled Gemma 3 270M: the GPT-2 processing less the two steps that are invalid for Gemma 3.
# - center_writing_weights assumes a LayerNorm that subtracts the mean; Gemma's RMSNorm does not, so
#   centring would change the output (TransformerLens skips it for RMS anyway; False says so).
# - refactor_factored_attn_matrices rewrites W_Q W_K^T, which is not the QK circuit here: rotary embeddings
#   and q_norm / k_norm sit between the projections and the scores (TransformerLens asserts on rotary).
# fold_ln is valid (RMS gains, with Gemma's 1 + w offset, fold into W_Q/W_K/W_V, W_gate/W_in and W_U; the
# post-attention / post-MLP norms stay). center_unembed is kept: Gemma 3 has no final logit soft-cap, so it
# shifts each position's logits by one constant and leaves softmax and logit differences unchanged.
GEMMA3_PROCESSING = {**WEIGHT_PROCESSING, "center_writing_weights": False, "refactor_factored_attn_matrices": False}


def processing_for(cfg) -> dict:
    """The notebook's processing, less the steps that do not apply to this architecture.

    Centring the writing weights assumes a LayerNorm that subtracts the mean (RMSNorm does not, so it would
    change the logits); refactoring W_Q W_K assumes scores computed from them directly (rotary embeddings sit
    in between, and TransformerLens refuses it). Pythia, Llama-style and Gemma models need these exceptions.
    """
    flags = dict(WEIGHT_PROCESSING)
    if str(getattr(cfg, "normalization_type", "") or "").upper().startswith("RMS"):
        flags["center_writing_weights"] = False
    if getattr(cfg, "positional_embedding_type", "standard") == "rotary":
        flags["refactor_factored_attn_matrices"] = False
    return flags
