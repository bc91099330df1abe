"""Shared fixtures: tiny GPT-2-architecture checkpoints built in the session with GPT-2's real tokenizer."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

TOKENIZER_DIR = Path(__file__).parent / "fixtures" / "gpt2-tokenizer"


def save_tiny_gpt2(folder: Path, n_layer: int = 2, n_head: int = 4, n_embd: int = 64, seed: int = 0) -> Path:
    """A randomly initialised GPT-2-architecture checkpoint that tokenizes exactly like GPT-2 small."""
    from transformers import GPT2Config, GPT2LMHeadModel, GPT2TokenizerFast

    torch.manual_seed(seed)
    config = GPT2Config(n_layer=n_layer, n_head=n_head, n_embd=n_embd, n_positions=64)
    model = GPT2LMHeadModel(config)
    with torch.no_grad():  # non-zero biases and LayerNorm gains, so that every bias term is tested
        for name, param in model.named_parameters():
            if name.endswith(".bias") or ".ln_" in name:
                param.add_(0.05 * torch.randn_like(param))
    model.save_pretrained(folder)
    GPT2TokenizerFast.from_pretrained(TOKENIZER_DIR).save_pretrained(folder)
    return folder


@pytest.fixture(scope="session")
def tokenizer():
    from transformers import GPT2TokenizerFast

    return GPT2TokenizerFast.from_pretrained(TOKENIZER_DIR)


@pytest.fixture(scope="session")
def tiny_checkpoint(tmp_path_factory) -> Path:
    return save_tiny_gpt2(tmp_path_factory.mktemp("tiny-gpt2"))


@pytest.fixture(scope="session")
def tiny_model(tiny_checkpoint):
    from report.model import load_model

    return load_model(str(tiny_checkpoint), device="cpu").model


@pytest.fixture(scope="session")
def tiny_prompt_sets(tiny_model):
    """Every shipped family, tokenized for the tiny model."""
    from report.families import build_prompt_set, load_family_specs

    specs = load_family_specs()
    return {name: build_prompt_set(spec, tiny_model.tokenizer, tiny_model.cfg.default_prepend_bos)
            for name, spec in specs.items()}
