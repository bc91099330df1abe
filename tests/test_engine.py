"""The one intervention engine (analyses/engine/): patching cells are rows of edits, and every batched sweep equals
one full forward per cell on a planted and a random tiny model; every sweep halves its chunk on out-of-memory and
gives the same numbers; an engine with an edit one layer late, or an interpolation ignored, fails these checks."""

from __future__ import annotations

import pytest
import torch
from conftest import save_tiny_gpt2
from planted_circuit import save_planted_gpt2

from analyses.common.metrics import answer_pair
from analyses.engine import attribution_patching as attribution
from analyses.engine import edge_runs, edges, readout, sweeps
from analyses.engine.chunks import Chunker
from analyses.engine.edge_reference import looped_edge_patching
from analyses.engine.prefixes import run_rows_sharing_prefixes
from analyses.engine.readout import final_log_partition, final_logit_diff, final_logits, final_logits_of
from analyses.engine.rows import Edit, Row, collect_base, looped_rows, run_rows

pytestmark = pytest.mark.tiny  # builds its own planted and random checkpoints
TOL = 1e-4  # fp32: batched and looped must agree to this (the suite's identity tolerance)
SAME = 1e-5  # the same engine under another chunking


def _load(folder):
    from report.run.model import load_model

    return load_model(str(folder), device="cpu").model


@pytest.fixture(scope="module", params=["planted", "random-3-layers"])
def setting(request, tmp_path_factory):
    from report.run.families import build_prompt_set
    from report.run.families_file import load_family_specs

    folder = tmp_path_factory.mktemp(request.param)
    model = _load(save_planted_gpt2(folder) if request.param == "planted"
                  else save_tiny_gpt2(folder, n_layer=3, seed=1))
    prompts = build_prompt_set(load_family_specs()["tomorrow"], model.tokenizer, model.cfg.default_prepend_bos)
    runs = sweeps.collect_runs(model, prompts)
    base = collect_base(model, prompts.corrupted_tokens, tuple(runs.corrupted))  # + the last resid_post
    return model, prompts, runs, base


# ---- fast equals slow: the batched engine against one forward per cell ----------------------------------------------


def assert_sweeps_match_loop(model, runs, names, scale=1.0):
    batched = sweeps.exact_sweeps(model, runs, names, scale=scale)
    assert names
    for name in names:
        looped = sweeps.looped_sweep(model, runs, name, scale=scale)
        assert batched[name].shape == looped.shape == (runs.n_layers, runs.n_units(name), runs.n_prompts)
        gap = (batched[name] - looped).abs().max().item()
        assert gap < TOL, f"{name} at scale {scale}: batched and looped differ by {gap}"


@pytest.mark.slow
def test_every_patching_sweep_equals_one_forward_per_cell(setting):
    model, _, runs, base = setting
    assert_sweeps_match_loop(model, runs, tuple(sweeps.SWEEPS))
    assert_sweeps_match_loop(model, runs, ("resid_pre", "z", "pattern"), scale=0.5)


def test_a_patch_is_a_row_starting_at_its_layer_with_one_edit_per_part(setting):
    _, _, runs, _ = setting
    row = sweeps.patch_row(runs, sweeps.Patch(1, (("z", 2), ("resid_pre", 0))), scale=1.0)
    assert row.layer == 1 and [e.hook for e in row.edits] == ["blocks.1.attn.hook_z", "blocks.1.hook_resid_pre"]
    assert row.edits[0].index == (slice(None), 2)
    torch.testing.assert_close(row.edits[0].value, runs.clean["blocks.1.attn.hook_z"][:, :, 2], rtol=0, atol=0)
    assert sweeps.patch_row(runs, sweeps.Patch(1, ())).layer == 1  # an empty patch still joins at its own layer
    with pytest.raises(ValueError, match="cannot edit an earlier block"):
        Row((Edit("blocks.0.hook_attn_out", (), runs.clean["blocks.0.hook_attn_out"]),), start=1)


def mixed_rows(runs):
    """Rows of every kind the analyses build: a patch, a mean ablation (one value for every prompt), an added
    direction, a row editing two layers, and a row with no edit (the base run)."""
    clean, corrupted = runs.clean, runs.corrupted
    z0, z1, mlp = "blocks.0.attn.hook_z", "blocks.1.attn.hook_z", "blocks.0.hook_mlp_out"
    d_model = clean[mlp].shape[-1]
    shift = torch.linspace(-1.0, 1.0, d_model, dtype=clean[mlp].dtype)  # not uniform: a norm would centre that away
    return [
        sweeps.patch_row(runs, sweeps.Patch(1, (("z", 1),))),
        Row((Edit(z0, (slice(None), 3), corrupted[z0][:, :, 3].mean(0)),)),
        Row((Edit(mlp, (-1,), shift, add=True),)),
        Row((Edit(z0, (slice(None), 0), clean[z0][:, :, 0]), Edit(z1, (slice(None), 2), clean[z1][:, :, 2]))),
        Row(()),
    ]


@pytest.mark.slow
def test_rows_and_prefix_shared_rows_equal_one_forward_per_row(setting):
    model, _, runs, base = setting
    rows = mixed_rows(runs)
    capture = (f"blocks.{runs.n_layers - 1}.hook_attn_out",)
    final, captured = run_rows(model, base, rows, capture=capture)
    looped, looped_captured = looped_rows(model, runs.corrupted_tokens, rows, capture=capture)
    torch.testing.assert_close(final_logits(model, final), looped, atol=TOL, rtol=TOL)
    torch.testing.assert_close(captured[capture[0]], looped_captured[capture[0]], atol=TOL, rtol=TOL)
    shared = run_rows_sharing_prefixes(model, base, rows)
    torch.testing.assert_close(final_logits(model, shared), looped, atol=TOL, rtol=TOL)
    torch.testing.assert_close(final_logits(model, final[-1]), looped[-1], atol=TOL, rtol=TOL)  # the base run
    assert (looped[2] - looped[-1]).abs().max() > 10 * TOL  # the added direction moves the logits: the check has teeth


# ---- deliberately broken maths fails ---------------------------------------------------------------------------------


@pytest.mark.slow
def test_an_edit_one_layer_late_fails_the_comparison(setting, monkeypatch):
    model, _, runs, base = setting
    real = sweeps.patch_row

    def one_layer_late(runs_, patch, scale=1.0):
        row = real(runs_, patch, scale)
        late = min(patch.layer + 1, runs_.n_layers - 1)
        moved = tuple(Edit(e.hook.replace(f"blocks.{patch.layer}.", f"blocks.{late}."), e.index, e.value, e.add)
                      for e in row.edits)
        return Row(moved, start=late)

    monkeypatch.setattr(sweeps, "patch_row", one_layer_late)
    with pytest.raises(AssertionError, match="batched and looped differ"):
        assert_sweeps_match_loop(model, runs, ("z", "attn_out"))


@pytest.mark.slow
def test_an_engine_that_ignores_the_interpolation_fails_the_comparison(setting, monkeypatch):
    model, _, runs, base = setting
    real = sweeps.patch_row
    monkeypatch.setattr(sweeps, "patch_row", lambda runs_, patch, scale=1.0: real(runs_, patch, 1.0))
    with pytest.raises(AssertionError, match="batched and looped differ"):
        assert_sweeps_match_loop(model, runs, ("z",), scale=0.5)


# ---- out-of-memory: every sweep halves its chunk and gives the same numbers ------------------------------------------


class FakeDevice:
    """Block-call pre-hooks that raise an out-of-memory error when a block sees more than `limit` rows."""

    def __init__(self, model, limit: int, error=lambda: torch.OutOfMemoryError("CUDA out of memory (fake)")):
        self.model, self.limit, self.error, self.refused = model, limit, error, []

    def __enter__(self):
        def check(module, args, kwargs):
            rows = (args[0] if args else kwargs["hidden_states"]).shape[0]
            if rows > self.limit:
                self.refused.append(rows)
                raise self.error()

        self.handles = [b.register_forward_pre_hook(check, with_kwargs=True) for b in self.model.blocks]
        return self

    def __exit__(self, *exc):
        for handle in self.handles:
            handle.remove()


@pytest.mark.slow
def test_patching_sweeps_rows_and_prefix_rows_halve_on_out_of_memory(setting):
    model, _, runs, base = setting
    B = runs.n_prompts
    names = ("resid_pre", "z")
    everything = 10**6
    reference = sweeps.exact_sweeps(model, runs, names, chunk_rows=everything)
    rows = mixed_rows(runs)
    ref_rows, _ = run_rows(model, base, rows, chunk_rows=everything)
    ref_shared = run_rows_sharing_prefixes(model, base, rows, chunk_rows=everything)
    with FakeDevice(model, limit=3 * B) as device:
        squeezed = sweeps.exact_sweeps(model, runs, names, chunk_rows=everything)
        squeezed_rows, _ = run_rows(model, base, rows, chunk_rows=everything)
        squeezed_shared = run_rows_sharing_prefixes(model, base, rows, chunk_rows=everything)
    assert device.refused, "the fake device refused nothing: the test would not see a halving"
    for name in names:
        torch.testing.assert_close(squeezed[name], reference[name], atol=SAME, rtol=SAME)
    torch.testing.assert_close(squeezed_rows, ref_rows, atol=SAME, rtol=SAME)
    torch.testing.assert_close(squeezed_shared, ref_shared, atol=SAME, rtol=SAME)


@pytest.mark.slow
def test_a_runtime_error_saying_out_of_memory_halves_and_any_other_error_is_raised(setting):
    model, _, runs, base = setting
    B = runs.n_prompts
    rows = mixed_rows(runs)
    reference, _ = run_rows(model, base, rows)
    with FakeDevice(model, 2 * B, lambda: RuntimeError("CUDA error: out of memory")) as device:
        squeezed, _ = run_rows(model, base, rows, chunk_rows=10**6)
    assert device.refused
    torch.testing.assert_close(squeezed, reference, atol=SAME, rtol=SAME)
    with FakeDevice(model, 2 * B, lambda: RuntimeError("shape mismatch")), pytest.raises(RuntimeError, match="shape"):
        run_rows(model, base, rows, chunk_rows=10**6)
    with FakeDevice(model, B - 1), pytest.raises(torch.OutOfMemoryError):  # one row that does not fit: re-raised
        run_rows(model, base, rows[:1])


@pytest.mark.slow
def test_attribution_sweeps_split_their_prompts_on_out_of_memory(setting):
    model, _, runs, base = setting
    reference = attribution.attribution_sweeps(model, runs, ("resid_pre", "z"))
    with FakeDevice(model, limit=max(1, runs.n_prompts // 2)) as device:
        squeezed = attribution.attribution_sweeps(model, runs, ("resid_pre", "z"))
    assert device.refused
    for name, value in reference.items():
        torch.testing.assert_close(squeezed[name], value, atol=SAME, rtol=SAME)


@pytest.mark.slow
def test_edge_batches_halve_on_out_of_memory_and_equal_one_edge_at_a_time(setting):
    model, prompts, _, _ = setting
    pos, neg = answer_pair(prompts, "clean_vs_corrupted")
    pair = edges.make_pair(model, prompts.corrupted_tokens, prompts.clean_tokens, pos, neg)
    es = edges.edge_set(model)
    valid = [(int(u), int(v)) for u, v in zip(*es.valid.nonzero())]
    chosen = valid[:: max(1, len(valid) // 12)]
    assert len(chosen) >= 8
    masks = edges.single_edge_masks(es, chosen)
    reference = edge_runs.run_edges(model, pair, es, masks, chunk_rows=10**6)
    # one circuit of one removed edge needs at most 2 x B rows in a block call (its real rows and one copy): more is
    # refused, so every group of several circuits is halved down to what fits
    with FakeDevice(model, limit=2 * pair.x.n_prompts) as device:
        squeezed = edge_runs.run_edges(model, pair, es, masks, chunk_rows=10**6)
    assert device.refused
    torch.testing.assert_close(squeezed, reference, atol=SAME, rtol=SAME)
    looped = looped_edge_patching(model, pair, es, chosen)
    torch.testing.assert_close(squeezed, looped.float(), atol=TOL, rtol=TOL)


def test_the_chunker_packs_by_cost_and_keeps_its_halved_size():
    chunker, attempts = Chunker(10), []

    def run(chunk):
        attempts.append(sum(chunk))
        if sum(chunk) > 4:
            raise torch.OutOfMemoryError("fake")
        return len(chunk)

    items = [3, 1, 2, 2, 1, 3]
    out = list(chunker.map(items, run, cost=lambda x: x))
    assert [x for chunk, _ in out for x in chunk] == items  # every item once, in order
    assert attempts[0] == 9 and chunker.size == 4  # 3+1+2+2+1 first (the next 3 passes 10), then 9 // 2
    assert all(sum(chunk) <= 4 for chunk, _ in out)
    later = list(chunker.map([2, 2, 2], run, cost=lambda x: x))  # a later call starts from the halved size
    assert all(sum(chunk) <= 4 for chunk, _ in later) and attempts[-len(later):] == [sum(c) for c, _ in later]


def test_final_logit_diff_is_the_difference_of_two_columns_of_the_full_logits(setting):
    model, _, runs, base = setting
    final = base.cache[f"blocks.{runs.n_layers - 1}.hook_resid_post"][:, -1]  # the corrupted run
    full = final_logits(model, final)
    rows = torch.arange(full.shape[0])
    expected = full[rows, runs.pos_ids] - full[rows, runs.neg_ids]
    torch.testing.assert_close(final_logit_diff(model, final, runs.pos_ids, runs.neg_ids), expected, atol=TOL,
                               rtol=TOL)
    torch.testing.assert_close(expected, runs.corrupted_ld, atol=TOL, rtol=TOL)


def test_item_columns_and_the_log_partition_are_read_off_the_full_logits(setting, monkeypatch):
    """The readouts that skip the whole vocabulary: K columns, and the log-sum-exp unembedded a few vectors at a time
    (chunks of 5 here, so the pieces are put back in order), against the full logits, on rows shaped [n, B, d]."""
    model, prompts, runs, base = setting
    final = torch.stack([base.cache[f"blocks.{runs.n_layers - 1}.hook_resid_post"][:, -1],
                         base.cache[f"blocks.{runs.n_layers - 1}.hook_resid_pre"][:, -1]])  # [2, B, d]
    full = final_logits(model, final)  # [2, B, V]
    ids = prompts.item_token_ids
    torch.testing.assert_close(final_logits_of(model, final, ids), full[..., ids], atol=TOL, rtol=TOL)
    monkeypatch.setattr(readout, "LOG_PARTITION_ROWS", 5)
    torch.testing.assert_close(final_log_partition(model, final), torch.logsumexp(full, -1), atol=TOL, rtol=TOL)
