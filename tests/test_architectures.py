"""Every analysis on tiny random checkpoints of each documented architecture, through `run` and `build`.

GPT-2, GPT-NeoX (Pythia: parallel attention, partial rotary), Llama (RMSNorm, rotary, grouped-query attention),
Qwen2 (Llama with q/k/v biases), Gemma 2 (logit and attention soft-capping, norms after attention and MLP) and
Gemma 3 (q/k norms, sliding windows). Each is 2 layers, d_model 64, with GPT-2's tokenizer (vocab 50257), one
family, in one multi-model run. The identity checks must hold within the tolerance the summaries state.
"""

from __future__ import annotations

import json

import pytest
import torch
from conftest import invoke, one_template_families

from analyses import REGISTRY

pytestmark = pytest.mark.slow  # architecture_run: the whole pipeline on every architecture

FAMILY = "tomorrow"
SMALL = dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
             max_position_embeddings=64)
GEMMA = dict(SMALL, num_key_value_heads=2, head_dim=16)
ARCHITECTURES = {  # name -> (config class, its arguments beyond vocabulary and special tokens)
    "gpt2": ("GPT2Config", dict(n_layer=2, n_head=4, n_embd=64, n_positions=64)),
    "gpt_neox": ("GPTNeoXConfig", dict(SMALL, rotary_pct=0.25)),
    "llama": ("LlamaConfig", dict(SMALL, num_key_value_heads=2)),
    "qwen2": ("Qwen2Config", dict(SMALL, num_key_value_heads=2)),
    # a soft-cap of 1 logit bends random logits of ~0.2 visibly (tanh): the DLA check must read them uncapped
    "gemma2": ("Gemma2Config", dict(GEMMA, final_logit_softcapping=1.0)),
    "gemma3": ("Gemma3TextConfig", GEMMA),
}


def save_tiny(folder, architecture: str, tokenizer):
    import transformers

    config_class, arguments = ARCHITECTURES[architecture]
    torch.manual_seed(0)
    config = getattr(transformers, config_class)(
        vocab_size=len(tokenizer), bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.eos_token_id, **arguments)
    transformers.AutoModelForCausalLM.from_config(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


@pytest.fixture(scope="session")
def architecture_run(tmp_path_factory, tokenizer):
    """One `run` of every architecture (family `tomorrow`, every analysis), and its built site."""
    from report.run.families_file import load_family_specs

    root = tmp_path_factory.mktemp("architectures")
    folders = [save_tiny(root / name, name, tokenizer) for name in ARCHITECTURES]
    families = root / "families.toml"  # one template (7 prompts, both corruptions): six models in the suite's time
    families.write_text(one_template_families(load_family_specs(), (FAMILY,)), encoding="utf-8")
    invoke("run", *[arg for folder in folders for arg in ("--model", folder)], "--families-file", families,
           "--out", root / "runs", "--run-id", "arch", "--device", "cpu", "--analyses", "all")
    invoke("build", root / "runs" / "arch", "--site", root / "site")
    return root / "runs" / "arch", root / "site"


def summary(run_dir, architecture: str, analysis: str) -> dict:
    return json.loads((run_dir / architecture / FAMILY / analysis / "summary.json").read_text())


PARALLEL_ATTENTION = ("gpt_neox",)  # attention and MLP read the same stream: no resid_mid


@pytest.mark.parametrize("architecture", list(ARCHITECTURES))
def test_every_analysis_completes_and_renders(architecture_run, architecture):
    run_dir, site = architecture_run
    manifest = json.loads((run_dir / "manifest.json").read_text())
    entry = manifest["models"][architecture]
    assert entry["families"][FAMILY]["status"] == "ok"
    assert REGISTRY
    html = (site / architecture / f"{FAMILY}.html").read_text(encoding="utf-8")
    for analysis in REGISTRY:  # per-corruption analyses are stored as <name>-<corruption>
        units = [key for key in entry["analyses"] if key.split("/")[1].split("-")[0] == analysis.name]
        assert units, analysis.name
        statuses = {entry["analyses"][key]["status"] for key in units}
        if architecture in PARALLEL_ATTENTION and analysis.name == "path_patching":
            # no resid_mid to measure a path in: skipped with its reason, on the page too, never a crash
            assert statuses == {"skipped"}
            assert "Not computed for this model" in html and "in parallel" in html
        else:
            assert statuses == {"complete"}, analysis.name
    for analysis in REGISTRY:
        assert f'<section id="{analysis.name}' in html


@pytest.mark.parametrize("architecture", list(ARCHITECTURES))
def test_identity_checks_hold_within_the_stated_tolerance(architecture_run, architecture):
    run_dir, _ = architecture_run
    dla = summary(run_dir, architecture, "dla_layers")
    assert dla["dtype"] == "float32" and dla["identity_tolerance"] == 1e-4
    for metric in ("copy", "clean_vs_corrupted"):
        assert dla[f"{metric}_reconstruction_error_max"] <= dla["identity_tolerance"]
    lens = summary(run_dir, architecture, "logit_lens")  # the lens ends at the model's (uncapped) logit difference
    assert abs(lens["copy_final_mean"] - dla["copy_logit_diff_mean"]) <= dla["identity_tolerance"]
    units = sorted((run_dir / architecture / FAMILY).glob("patching_positions*"))
    assert units
    for unit in units:  # patching every position before layer 0 is the clean run: |LD - LD_clean| in logits
        patching = json.loads((unit / "summary.json").read_text())
        assert patching["resid_pre_all_positions_layer0_max_abs_error"] <= patching["identity_tolerance"]


@pytest.mark.parametrize("architecture", list(ARCHITECTURES))
def test_logit_lens_has_mid_layer_points_only_where_the_model_has_a_stream_between_attention_and_mlp(
        architecture_run, architecture):
    run_dir, _ = architecture_run
    points = summary(run_dir, architecture, "logit_lens")["points"]
    parallel = architecture == "gpt_neox"
    assert len(points) == (2 + 1 if parallel else 2 * 2 + 1)
    assert any("after attention" in p for p in points) is not parallel


def test_gemma2_soft_cap_is_stated(architecture_run):
    run_dir, _ = architecture_run
    assert summary(run_dir, "gemma2", "dla_layers")["logit_soft_cap"] == 1.0
    assert "logit_soft_cap" not in summary(run_dir, "llama", "dla_layers")
