"""The circuit grid's prefix sharing: rows that make the same edits below a layer are computed once up to it, and
every row's numbers are those of `run_rows` (each row from its first edited layer) and of one forward per row."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from conftest import save_tiny_gpt2
from planted_circuit import save_planted_gpt2

from analyses import engine as engine
from analyses.methods.circuit_search import circuit_rows, size_grid
from analyses.methods.mechanism import ablation_source, node_edit, node_hook, nodes

pytestmark = pytest.mark.tiny  # tests here build tiny or planted checkpoints in the session (no-model tier: not these)

TOL = 1e-4


def _load(folder):
    from report.run.model import load_model

    return load_model(str(folder), device="cpu").model


def _prompts(model, family="tomorrow"):
    from report.run.families import build_prompt_set
    from report.run.families_file import load_family_specs

    return build_prompt_set(load_family_specs()[family], model.tokenizer, model.cfg.default_prepend_bos)


@pytest.fixture(scope="module", params=["planted", "random-4-layers"])
def model_and_base(request, tmp_path_factory):
    folder = tmp_path_factory.mktemp(request.param)
    model = _load(save_planted_gpt2(folder) if request.param == "planted"
                  else save_tiny_gpt2(folder, n_layer=4, seed=1))
    prompts = _prompts(model)
    node_list = nodes(model.cfg.n_layers, model.cfg.n_heads)
    hooks = sorted({node_hook(n) for n in node_list})
    base = engine.collect_base(model, prompts.clean_tokens, hooks)
    return model, prompts, node_list, base


def grid_rows(node_list, base, seed=0):
    """The circuit's rows: top-n of a random ranking for every n on the grid, both ways round (two rankings)."""
    rng = np.random.default_rng(seed)
    orders = [rng.permutation(len(node_list)), rng.permutation(len(node_list))]
    keep_sets = [set(order[:n].tolist()) for order in orders for n in size_grid(len(node_list))]
    return circuit_rows(node_list, keep_sets, {h: v for h, v in base.cache.items() if "hook_resid" not in h})


def count_block_rows(model):
    seen = []
    handles = [block.register_forward_pre_hook(
        lambda module, args, kwargs: seen.append((args[0] if args else kwargs["hidden_states"]).shape[0]),
        with_kwargs=True) for block in model.blocks]
    return seen, handles


@pytest.mark.slow
def test_prefix_sharing_gives_run_rows_numbers_on_circuit_rows_with_fewer_block_rows(model_and_base):
    model, _, node_list, base = model_and_base
    rows = grid_rows(node_list, base)
    assert len(rows) > 2 * model.cfg.n_layers
    seen, handles = count_block_rows(model)
    try:
        fast = engine.run_rows_sharing_prefixes(model, base, rows)
        fast_rows = sum(seen)
        seen.clear()
        slow, _ = engine.run_rows(model, base, rows)
        slow_rows = sum(seen)
    finally:
        for handle in handles:
            handle.remove()
    torch.testing.assert_close(fast, slow, atol=TOL, rtol=TOL)
    assert fast_rows < slow_rows  # nested circuits share their early layers


@pytest.mark.slow
def test_prefix_sharing_equals_one_forward_per_row_and_keeps_rows_apart_that_differ_only_in_values(model_and_base):
    """Mean- and resample-ablating the same node write to the same place with different values: never merged.
    A row with no edit is the base run; a row editing only the last layer shares every earlier block."""
    model, prompts, node_list, base = model_and_base
    hooks = sorted({node_hook(n) for n in node_list})
    _, corrupted = model.run_with_cache(prompts.corrupted_tokens, names_filter=hooks)
    rows = []
    for node in (node_list[0], node_list[len(node_list) // 2], node_list[-1]):
        clean, twin = base.cache[node_hook(node)], corrupted[node_hook(node)]
        for kind in ("mean", "resample", "zero"):
            rows.append(engine.Row((node_edit(node, ablation_source(kind, clean, twin)),)))
    rows.append(engine.Row(()))
    fast = engine.run_rows_sharing_prefixes(model, base, rows, chunk_rows=2 * base.n_prompts)  # several chunks
    logits, _ = engine.looped_rows(model, prompts.clean_tokens, rows)
    torch.testing.assert_close(engine.final_logits(model, fast), logits, atol=TOL, rtol=TOL)
    kinds = engine.final_logits(model, fast)[:9].reshape(3, 3, *logits.shape[1:])
    assert (kinds[:, 0] - kinds[:, 1]).abs().amax() > 1e-3  # mean and resample really differ: not merged
