"""Model loading: the weight processing keeps the logits, and adapts to architectures it does not fit."""

from __future__ import annotations

import pytest
import torch

from report.run.model import WEIGHT_PROCESSING, load_model, processing_for

pytestmark = pytest.mark.tiny  # tests here build tiny or planted checkpoints in the session (no-model tier: not these)


def raw_logits(folder, tokens):
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(folder, attn_implementation="eager").eval()
    with torch.no_grad():
        return model(tokens).logits


def assert_same_up_to_a_constant(a, b, tol=1e-4):
    """center_unembed shifts each position's logits by one constant: compare log-probabilities."""
    assert torch.allclose(a.log_softmax(-1), b.log_softmax(-1), atol=tol)


def test_gpt2_gets_the_seed_notebooks_processing_and_keeps_its_logits(tiny_checkpoint, tiny_prompt_sets):
    loaded = load_model(str(tiny_checkpoint), device="cpu")
    assert loaded.processing == WEIGHT_PROCESSING
    tokens = tiny_prompt_sets["tomorrow"].clean_tokens
    assert_same_up_to_a_constant(loaded.model(tokens), raw_logits(tiny_checkpoint, tokens))


@pytest.mark.tiny  # builds a tiny checkpoint
def test_rotary_rms_checkpoint_loads_with_the_processing_that_applies(tmp_path, tokenizer):
    from transformers import Gemma3ForCausalLM, Gemma3TextConfig

    torch.manual_seed(0)
    config = Gemma3TextConfig(vocab_size=len(tokenizer), hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                              num_attention_heads=4, num_key_value_heads=2, head_dim=16, max_position_embeddings=64,
                              bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
                              pad_token_id=tokenizer.eos_token_id)
    Gemma3ForCausalLM(config).save_pretrained(tmp_path)
    tokenizer.save_pretrained(tmp_path)
    loaded = load_model(str(tmp_path), device="cpu")
    assert loaded.processing == processing_for(loaded.model.cfg)
    assert loaded.processing["refactor_factored_attn_matrices"] is False
    assert loaded.processing["center_writing_weights"] is False
    assert loaded.processing["fold_ln"] is True
    tokens = torch.tensor([tokenizer.encode("Today it is Monday so tomorrow it is")])
    assert_same_up_to_a_constant(loaded.model(tokens), raw_logits(tmp_path, tokens), tol=1e-3)
