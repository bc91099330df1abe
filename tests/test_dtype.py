"""`--dtype`: the auto rule, bfloat16 end to end on the CPU, float32 accumulation, the stated tolerances."""

from __future__ import annotations

import json

import pytest
from conftest import invoke

from analyses import REGISTRY
from analyses.common.precision import IDENTITY_TOLERANCE
from report.run.catalogue import MODELS, count_parameters, describe
from report.run.dtype import HALF_PRECISION_ABOVE, resolve_dtype


@pytest.mark.parametrize("device,n_params,expected", [
    ("cpu", 7 * 10**9, "float32"), ("mps", 7 * 10**9, "float32"), ("cuda", 124 * 10**6, "float32"),
    ("cuda", HALF_PRECISION_ABOVE, "float32"), ("cuda", HALF_PRECISION_ABOVE + 1, "bfloat16"),
    ("cuda", None, "float32")])
def test_auto_rule(device, n_params, expected):
    assert resolve_dtype("auto", device, n_params) == expected
    assert resolve_dtype("float16", device, n_params) == "float16"  # an explicit dtype is kept


def test_parameters_are_counted_from_the_config_without_loading(tiny_checkpoint):
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(tiny_checkpoint)
    assert count_parameters(str(tiny_checkpoint)) == sum(p.numel() for p in model.parameters())
    assert count_parameters("gpt2-xl") == 1_557_611_200  # the catalogue's count


def test_list_models_gives_size_memory_and_fit(tmp_path):
    lines = describe("cpu")
    assert MODELS and len(lines) == 2 + len(MODELS)
    xl = next(line for line in lines if line.startswith("gpt2-xl "))
    # 1.56B parameters x 4 bytes x 1.3 = 7.5 GiB in float32, half that in bfloat16
    assert " 1.6B " in xl and " 7.5 " in xl and " 3.8 " in xl and "float32" in xl
    assert invoke("list", "models").output.count("\n") == len(lines)


@pytest.fixture(scope="module")
def bf16_run(tiny_checkpoint, tmp_path_factory):
    root = tmp_path_factory.mktemp("bf16")
    invoke("report", "--model", tiny_checkpoint, "--families", "tomorrow", "--dtype", "bfloat16", "--out",
           root / "runs", "--run-id", "bf16", "--site", root / "site", "--device", "cpu", "--analyses", "all")
    return root / "runs" / "bf16", root / "site"


@pytest.mark.slow  # the whole pipeline, on a tiny model
def test_bfloat16_runs_every_analysis_on_a_gemma_3_shaped_model(tmp_path, tokenizer):
    """The bundled model's architecture (a norm after attention, grouped key/value heads) in bfloat16: every analysis
    completes. Successor heads' OV grids once multiplied the post-attention norm's float32 gain into bfloat16
    unembedding columns and stopped the run, and so did the items a named neuron promotes (the norm after the MLP);
    GPT-2, which has neither norm, never showed it."""
    from test_architectures import save_tiny

    folder = save_tiny(tmp_path / "gemma3", "gemma3", tokenizer)
    invoke("run", "--model", folder, "--families", "tomorrow", "--dtype", "bfloat16", "--analyses", "all",
           "--out", tmp_path / "runs", "--run-id", "bf16", "--device", "cpu")
    (model,) = json.loads((tmp_path / "runs" / "bf16" / "manifest.json").read_text())["models"].values()
    assert model["dtype"] == "bfloat16"
    done = {key.split("/")[1].split("-")[0] for key, unit in model["analyses"].items() if unit["status"] == "complete"}
    assert done == {a.name for a in REGISTRY}
    # what a random model never reaches (nothing is named there): the items a named neuron promotes, read off its
    # output weights through the norm after the MLP
    import numpy as np

    from analyses.neurons import promoted_items
    from report.run.families import build_prompt_set
    from report.run.families_file import load_family_specs
    from report.run.model import load_model

    loaded = load_model(str(folder), device="cpu", dtype="bfloat16").model
    prompts = build_prompt_set(load_family_specs()["tomorrow"], loaded.tokenizer, loaded.cfg.default_prepend_bos)
    promoted = promoted_items(loaded, prompts, 1, np.array([0, 3]))
    assert promoted.shape == (2, prompts.n_items) and np.isfinite(promoted).all()


@pytest.mark.slow  # the whole pipeline
def test_bfloat16_runs_every_analysis_end_to_end_on_the_cpu(bf16_run, tiny_checkpoint):
    run_dir, site = bf16_run
    manifest = json.loads((run_dir / "manifest.json").read_text())
    (model,) = manifest["models"].values()
    assert manifest["dtype_requested"] == "bfloat16" and model["dtype"] == "bfloat16"
    assert REGISTRY and model["analyses"]
    assert all(entry["status"] == "complete" for entry in model["analyses"].values())
    assert {key.split("/")[1].split("-")[0] for key in model["analyses"]} == {a.name for a in REGISTRY}
    html = (site / tiny_checkpoint.name / "tomorrow.html").read_text(encoding="utf-8")
    assert all(f'<section id="{a.name}' in html for a in REGISTRY)


@pytest.mark.slow  # the whole pipeline
def test_bfloat16_summaries_state_their_tolerance_and_meet_it(bf16_run):
    run_dir, _ = bf16_run
    folder = next(p for p in run_dir.iterdir() if p.is_dir()) / "tomorrow"
    dla = json.loads((folder / "dla_layers" / "summary.json").read_text())
    assert dla["dtype"] == "bfloat16" and dla["identity_tolerance"] == IDENTITY_TOLERANCE["bfloat16"]
    assert IDENTITY_TOLERANCE["bfloat16"] > IDENTITY_TOLERANCE["float32"]
    for metric in ("copy", "clean_vs_corrupted"):
        assert dla[f"{metric}_reconstruction_error_max"] <= dla["identity_tolerance"]
    units = sorted(folder.glob("patching_positions*"))
    assert units
    patching = json.loads((units[0] / "summary.json").read_text())
    assert patching["dtype"] == "bfloat16"
    assert patching["resid_pre_all_positions_layer0_max_abs_error"] <= patching["identity_tolerance"]
    for key in ("clean_logit_diff_mean", "corrupted_logit_diff_mean"):  # float32 accumulation: finite floats
        assert isinstance(patching[key], float)
