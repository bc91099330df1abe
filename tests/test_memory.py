"""Memory: a chunk that runs out of memory is halved and retried; a model's memory is freed before the next loads."""

from __future__ import annotations

import weakref

import pytest
import torch
from conftest import invoke, save_tiny_gpt2

from analyses import engine as core
from analyses.engine import rows as engine_rows
from analyses.engine.chunks import map_chunks

pytestmark = pytest.mark.tiny  # tests here build tiny or planted checkpoints in the session (no-model tier: not these)

OOM = torch.cuda.OutOfMemoryError


def test_map_chunks_halves_on_out_of_memory_and_covers_every_item_once():
    attempts = []

    def run(chunk):
        attempts.append(len(chunk))
        if len(chunk) > 3:
            raise OOM("forced")
        return [2 * x for x in chunk]

    out = list(map_chunks(list(range(10)), 16, run))
    assert [x for chunk, _ in out for x in chunk] == list(range(10))
    assert all(result == [2 * x for x in chunk] for chunk, result in out)
    assert attempts[:3] == [10, 5, 2]  # 16 -> the 10 items, halved twice
    assert all(len(chunk) <= 3 for chunk, _ in out)


def test_map_chunks_reraises_when_one_item_does_not_fit():
    def run(chunk):
        raise OOM("forced")

    with pytest.raises(OOM):
        list(map_chunks([1, 2, 3], 4, run))


@pytest.mark.slow
def test_patching_under_a_tiny_memory_budget_equals_the_unchunked_sweep(tiny_model, tiny_prompt_sets, monkeypatch):
    runs = core.collect_runs(tiny_model, tiny_prompt_sets["tomorrow"], ("resid_pre", "z"))
    patches = [p for s in ("resid_pre", "z") for p in core.sweep_patches(runs, s)]
    assert len(patches) > 8
    reference = core.patched_logit_diffs(tiny_model, runs, patches, chunk_rows=len(patches) * runs.n_prompts)
    budget = 3  # patches per block call the "device" can hold
    real_run_chunk, sizes = engine_rows._run_chunk, []  # one chunk of the engine's rows: a patch is one row

    def tight(model, base, chunk, capture, last):
        sizes.append(len(chunk))
        if len(chunk) > budget:
            raise OOM("forced by the test")
        return real_run_chunk(model, base, chunk, capture, last)

    monkeypatch.setattr(engine_rows, "_run_chunk", tight)
    squeezed = core.patched_logit_diffs(tiny_model, runs, patches, chunk_rows=10**6)
    assert sizes[0] == len(patches) and max(s for s in sizes if s <= budget) <= budget
    assert any(s > budget for s in sizes) and sum(s for s in sizes if s <= budget) == len(patches)
    assert torch.allclose(squeezed, reference, atol=1e-5)


@pytest.mark.slow
@pytest.mark.tiny  # builds a tiny checkpoint
def test_each_models_weights_are_freed_before_the_next_model_loads(tmp_path, monkeypatch):
    import report.run.pipeline as pipeline

    folders = [save_tiny_gpt2(tmp_path / name, seed=seed) for seed, name in enumerate(("first", "second"))]
    loaded, freed = [], []
    real_load, real_release = pipeline.load_model, pipeline.release

    def load(*args, **kwargs):
        result = real_load(*args, **kwargs)
        loaded.append(weakref.ref(result.model))
        return result

    def release(device):
        real_release(device)
        freed.append([ref() is None for ref in loaded])

    monkeypatch.setattr(pipeline, "load_model", load)
    monkeypatch.setattr(pipeline, "release", release)
    invoke("run", "--model", folders[0], "--model", folders[1], "--families", "tomorrow", "--analyses", "behaviour",
           "--out", tmp_path / "runs", "--device", "cpu")
    assert freed == [[True], [True, True]]
