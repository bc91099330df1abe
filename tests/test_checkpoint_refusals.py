"""Every damaged checkpoint ends in one line naming the problem, before a run folder exists."""

from __future__ import annotations

import json
import shutil

import pytest
import torch
from safetensors.torch import load_file, save_file
from test_cli_errors import assert_user_error, run_cli

from report.run.checkpoint import CheckpointError, check_finite

pytestmark = pytest.mark.tiny  # tests here build tiny or planted checkpoints in the session (no-model tier: not these)


@pytest.fixture
def damaged(tmp_path, tiny_checkpoint):
    folder = tmp_path / "model"
    shutil.copytree(tiny_checkpoint, folder)
    return folder


def edit_weight(folder, name, edit):
    weights = load_file(folder / "model.safetensors")
    edit(weights[name])
    save_file(weights, folder / "model.safetensors", {"format": "pt"})


def edit_json(path, **changes):
    path.write_text(json.dumps({**json.loads(path.read_text()), **changes}))


@pytest.mark.parametrize("value", [float("nan"), float("inf"), float("-inf")])
def test_non_finite_weights_are_refused_naming_the_tensor(tmp_path, damaged, value):
    edit_weight(damaged, "transformer.h.1.mlp.c_fc.weight", lambda w: w.view(-1)[7].fill_(value))
    out = tmp_path / "runs"
    assert_user_error(run_cli(["--model", str(damaged), "--analyses", "behaviour"], out), out,
                      "transformer.h.1.mlp.c_fc.weight", "NaN or infinite", code=2)


def test_a_finite_checkpoint_passes_the_weight_check(tiny_model):
    check_finite("tiny", tiny_model)  # the control: no false alarm on a real model (masks hold -inf in buffers)


def test_the_loaded_model_is_checked_too(tiny_model):
    """Weight processing (folding, centring) could turn a huge weight into an infinity: checked after loading."""
    name, param = next(iter(tiny_model.named_parameters()))
    saved = param.detach().clone()
    try:
        with torch.no_grad():
            param.view(-1)[0] = float("nan")
        with pytest.raises(CheckpointError, match=name.replace(".", r"\.")):
            check_finite("tiny", tiny_model)
    finally:
        with torch.no_grad():
            param.copy_(saved)


def test_a_vocabulary_smaller_than_the_tokenizer_is_refused(tmp_path, damaged):
    edit_json(damaged / "config.json", vocab_size=1000)
    out = tmp_path / "runs"
    assert_user_error(run_cli(["--model", str(damaged), "--analyses", "behaviour"], out), out,
                      "transformer.wte.weight", "wrong shape", code=2)


def test_a_tokenizer_larger_than_a_consistent_embedding_is_refused(tmp_path, damaged):
    """Weights and config agree on 50,000 rows, but the tokenizer makes ids up to 50,256: no embedding for them."""
    rows = 50000
    weights = load_file(damaged / "model.safetensors")
    weights = {k: (v[:rows].clone() if v.shape[0] == 50257 else v) for k, v in weights.items()}
    save_file(weights, damaged / "model.safetensors", {"format": "pt"})
    edit_json(damaged / "config.json", vocab_size=rows, bos_token_id=0, eos_token_id=0)
    out = tmp_path / "runs"
    assert_user_error(run_cli(["--model", str(damaged), "--analyses", "behaviour"], out), out,
                      "vocab_size 50000 is smaller than its tokenizer's 50257", code=2)


def test_a_tokenizer_without_bos_is_refused(tmp_path, damaged):
    edit_json(damaged / "tokenizer_config.json", bos_token=None)
    special = damaged / "special_tokens_map.json"
    if special.exists():
        mapping = json.loads(special.read_text())
        mapping.pop("bos_token", None)
        special.write_text(json.dumps(mapping))
    out = tmp_path / "runs"
    assert_user_error(run_cli(["--model", str(damaged), "--analyses", "behaviour"], out), out, "no BOS token",
                      code=2)


def test_positions_beyond_the_weights_are_refused_naming_the_tensor_and_shapes(tmp_path, damaged):
    edit_json(damaged / "config.json", n_positions=72)  # 8 more than the 64 rows of wpe
    out = tmp_path / "runs"
    assert_user_error(run_cli(["--model", str(damaged), "--analyses", "behaviour"], out), out,
                      "transformer.wpe.weight", "checkpoint [64, 64], config [72, 64]", code=2)


def test_a_model_that_fails_after_the_checks_leaves_no_run_folder(tmp_path, tiny_checkpoint, monkeypatch):
    """A failure while loading (after every check passed) ends in one line and leaves no 'failed' run folder."""
    def broken(name, *args, **kwargs):
        raise CheckpointError(f"model {name!r}: weight x holds NaN or infinite values")

    monkeypatch.setattr("report.run.pipeline.load_model", broken)
    out = tmp_path / "runs"
    result = run_cli(["--model", str(tiny_checkpoint), "--analyses", "behaviour"], out)
    assert result.exit_code == 2 and isinstance(result.exception, SystemExit), result.output
    assert result.output.splitlines()[-1].startswith("error: ") and "NaN or infinite" in result.output
    assert "Traceback" not in result.output
    assert list(out.iterdir()) == []  # no 'failed' run folder left to mislead
