"""The weight processing each architecture gets: one home for the flags that model.py and bundled.py apply.

The processing of the seed notebook (the SERI MATS exercise this project grew from: GPT-2 small on "Today it is
Monday so tomorrow it is"; README, References) folds LayerNorm into the next weights, centres what writes to the
residual stream and the unembedding, folds the value biases into the output bias (b_V W_O does not depend on where a
head looks, so per-head DLA leaves it in the layer's b_O; recorded so the report can say so); none of it changes the
logits.

The seed notebook also refactored W_Q W_K^T and W_V W_O by SVD (`refactor_factored_attn_matrices`). It is off: it
only re-chooses the basis of each head's query, key, value and z spaces (the products W_Q W_K^T and W_V W_O, the
attention patterns, every head's output and the logits are unchanged), and every number the report computes treats a
head whole (patching a head's whole z, v, pattern, q, k or v; its output; its OV and QK products), so none of them
depends on that basis (tests/test_load_time.py compares the analyses with and without it). It was 97% of loading a
GPT-2-small-shaped checkpoint on a 2-core CPU (72 batched SVDs, about 125 CPU seconds of 132; benchmarks/load.py).
"""

from __future__ import annotations

WEIGHT_PROCESSING = dict(fold_ln=True, center_writing_weights=True, center_unembed=True, fold_value_biases=True,
                         refactor_factored_attn_matrices=False)  # see above: a change of basis, 97% of the load

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
    """The seed notebook's processing, less the steps that do not apply to this architecture.

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
