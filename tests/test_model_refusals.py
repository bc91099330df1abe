"""Models that must be refused before any run folder exists, through the CLI: one line naming the problem."""

from __future__ import annotations

import json
import shutil

import pytest
import torch
from conftest import TOKENIZER_DIR
from safetensors.torch import load_file, save_file
from test_cli_errors import assert_user_error, run_cli


@pytest.fixture
def damaged(tmp_path, tiny_checkpoint):
    """A copy of the tiny checkpoint to damage."""
    folder = tmp_path / "model"
    shutil.copytree(tiny_checkpoint, folder)
    return folder


def edit_config(folder, **changes):
    config = json.loads((folder / "config.json").read_text())
    (folder / "config.json").write_text(json.dumps({**config, **changes}))


def test_bert_config_over_gpt2_weights_is_refused_as_not_a_causal_lm(tmp_path, damaged):
    (damaged / "config.json").write_text(json.dumps({
        "architectures": ["BertForMaskedLM"], "model_type": "bert", "hidden_size": 64, "num_hidden_layers": 2,
        "num_attention_heads": 4, "intermediate_size": 256, "vocab_size": 50257}))
    out = tmp_path / "runs"
    assert_user_error(run_cli(["--model", str(damaged)], out), out, "BertForMaskedLM", "causal language models",
                      code=2)


def test_checkpoint_with_one_layers_tensors_deleted_is_refused_naming_them(tmp_path, damaged):
    weights = load_file(damaged / "model.safetensors")
    kept = {k: v for k, v in weights.items() if ".h.1." not in k}
    assert 0 < len(kept) < len(weights)
    save_file(kept, damaged / "model.safetensors", {"format": "pt"})
    out = tmp_path / "runs"
    result = run_cli(["--model", str(damaged)], out)
    assert_user_error(result, out, "12 missing from the checkpoint", "transformer.h.1.attn.c_attn.weight", code=2)


def test_config_over_other_shaped_weights_is_refused(tmp_path, damaged):
    edit_config(damaged, n_layer=3)  # a third layer the weights do not have
    out = tmp_path / "runs"
    assert_user_error(run_cli(["--model", str(damaged)], out), out, "transformer.h.2.", "missing", code=2)


def test_extra_tensors_in_the_checkpoint_are_refused(tmp_path, damaged):
    weights = load_file(damaged / "model.safetensors")
    save_file({**weights, "transformer.h.9.mlp.c_fc.weight": torch.zeros(2)}, damaged / "model.safetensors",
              {"format": "pt"})
    out = tmp_path / "runs"
    assert_user_error(run_cli(["--model", str(damaged)], out), out, "transformer.h.9.mlp.c_fc.weight",
                      "not in the model", code=2)


def _truncate(folder):
    data = (folder / "model.safetensors").read_bytes()
    (folder / "model.safetensors").write_bytes(data[: len(data) // 2])


def _shard(folder):
    """Save sharded, then delete one shard."""
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(folder)
    (folder / "model.safetensors").unlink()
    model.save_pretrained(folder, max_shard_size="4MB")
    index = json.loads((folder / "model.safetensors.index.json").read_text())
    shards = sorted(set(index["weight_map"].values()))
    assert len(shards) > 1
    (folder / shards[-1]).unlink()


LOCAL_PROBLEMS = {
    "truncated weights": (_truncate, "model.safetensors is corrupt or truncated"),
    "empty weights": (lambda f: (f / "model.safetensors").write_bytes(b""), "model.safetensors is empty"),
    "garbage weights": (lambda f: (f / "model.safetensors").write_bytes(b"\xff" * 4096), "corrupt or truncated"),
    "no weights": (lambda f: (f / "model.safetensors").unlink(), "has no weights"),
    "missing shard": (_shard, "missing weight shard(s) model-0000"),
    "config not JSON": (lambda f: (f / "config.json").write_text("{not json"), "config.json is not valid JSON"),
    "unknown model_type": (lambda f: edit_config(f, model_type="frobnicator"), "model_type 'frobnicator'"),
    "no tokenizer": (lambda f: [(f / n).unlink() for n in ("vocab.json", "merges.txt", "tokenizer.json")
                                if (f / n).exists()], "has no tokenizer"),
}


@pytest.mark.parametrize("problem", list(LOCAL_PROBLEMS))
def test_local_folder_problems_are_reported_as_what_they_are(tmp_path, damaged, problem):
    damage, message = LOCAL_PROBLEMS[problem]
    damage(damaged)
    out = tmp_path / "runs"
    result = run_cli(["--model", str(damaged)], out)
    assert_user_error(result, out, message, str(damaged), code=2)
    assert "hub" not in result.output


@pytest.mark.tiny  # builds a tiny checkpoint
def test_prompt_longer_than_the_context_is_refused_before_loading(tmp_path):
    from transformers import GPT2Config, GPT2LMHeadModel, GPT2TokenizerFast

    folder = tmp_path / "short-context"
    GPT2LMHeadModel(GPT2Config(n_layer=1, n_head=2, n_embd=16, n_positions=8)).save_pretrained(folder)
    GPT2TokenizerFast.from_pretrained(TOKENIZER_DIR).save_pretrained(folder)
    out = tmp_path / "runs"
    result = run_cli(["--model", str(folder), "--families", "tomorrow"], out)
    assert_user_error(result, out, "family 'tomorrow'", "Today it is Monday so tomorrow it is",
                      "context of model", "(8 tokens)")
