"""Necessity beside sufficiency: an AND circuit and an OR (backup) circuit, planted, told apart by noising against
denoising; a random model says nothing; the ablation text splits self-repair from indirect effects by side."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import save_tiny_gpt2
from planted_mlp import HEAD_A, HEAD_B, save_and_or_gpt2

from analyses.ablations import ABLATIONS_ANALYSIS, _summary
from analyses.common.types import Result

pytestmark = pytest.mark.tiny  # tests here build tiny or planted checkpoints in the session (no-model tier: not these)

SEEDS = (0, 1)
A, B = (f"L{layer}H{head}" for layer, head in (HEAD_A, HEAD_B))
NEW_SENTENCES = ("AND structure", "OR structure", "is needed but", "suffices alone but", "Needed and sufficient",
                 "Self-repair", "Indirect effect", "Necessity beside sufficiency")


def _load(folder):
    from report.run.model import load_model

    return load_model(str(folder), device="cpu").model


def _prompts(model, family="tomorrow"):
    from report.run.families import build_prompt_set
    from report.run.families_file import load_family_specs

    return build_prompt_set(load_family_specs()[family], model.tokenizer, model.cfg.default_prepend_bos)


@pytest.fixture(scope="module", params=[(kind, seed) for kind in ("and", "or") for seed in SEEDS],
                ids=lambda p: f"{p[0]}-seed{p[1]}")
def and_or(request, tmp_path_factory):
    kind, seed = request.param
    model = _load(save_and_or_gpt2(tmp_path_factory.mktemp(kind), kind, seed=seed))
    return kind, ABLATIONS_ANALYSIS.compute(model, _prompts(model))


@pytest.mark.slow
def test_an_and_circuit_and_an_or_circuit_are_told_apart_by_noising_against_denoising(and_or):
    kind, result = and_or
    s, a = result.summary, result.arrays
    nodes = result.labels["nodes"]
    i, j = nodes.index(A), nodes.index(B)
    assert s["answer_informative"]
    noising, denoising = a["noising_share_answer"][[i, j]], a["denoising_share_answer"][[i, j]]
    if kind == "and":  # each head needed, neither enough alone
        assert (noising > 0.9).all() and (np.abs(denoising) < 0.1).all()
    else:  # each head enough alone, neither needed
        assert (denoising > 0.8).all() and (np.abs(noising) < 0.2).all()
    other = "or" if kind == "and" else "and"
    assert {e["name"] for e in s[f"{kind}_nodes"]} == {A, B}
    assert s[f"{other}_nodes"] == []
    assert [e["name"] for e in s["both_nodes"]] == ["MLP0"]  # the MLP is the one route to the answer
    text = " ".join(ABLATIONS_ANALYSIS.narrative(result))
    assert f"{kind.upper()} structure" in text and f"{other.upper()} structure" not in text, text
    assert A in text.split(f"{kind.upper()} structure")[1] and B in text.split(f"{kind.upper()} structure")[1]


@pytest.mark.slow
@pytest.mark.parametrize("seed", SEEDS)
def test_head_noising_in_patching_heads_equals_the_ablations_noising(tmp_path, seed):
    """patching_heads noises by denoising the swapped pair (`necessity.swapped`): it must give the same share of the
    gap as running the clean prompts with one head's output from the corrupted twin (ablations)."""
    from analyses.patching_heads import PATCHING_HEADS

    model = _load(save_and_or_gpt2(tmp_path, "and", seed=seed))
    prompts = _prompts(model)
    heads = PATCHING_HEADS.compute(model, prompts)
    ablations = ABLATIONS_ANALYSIS.compute(model, prompts)
    nodes = ablations.labels["nodes"]
    for layer, head in (HEAD_A, HEAD_B, (0, 0)):
        expected = ablations.arrays["noising_share"][nodes.index(f"L{layer}H{head}")]
        assert heads.arrays["z_noising"][layer, head] == pytest.approx(expected, abs=1e-4)
    assert heads.arrays["z_noising"][HEAD_A] == pytest.approx(0.5, abs=0.05)
    best = heads.summary["top_heads"][0]
    text = " ".join(PATCHING_HEADS.narrative(heads))
    assert f"Noising {best['name']} (the clean run" in text and "removes 50%" in text, text


@pytest.mark.slow
def test_the_logit_difference_alone_cannot_tell_and_from_or(and_or):
    """Why the structure is read on the clean answer's logit: on the LD both circuits give 50% / 50% (a state with
    neither answer promoted and one with both promoted have the same LD)."""
    _, result = and_or
    nodes = result.labels["nodes"]
    for name in (A, B):
        i = nodes.index(name)
        assert result.arrays["noising_share"][i] == pytest.approx(0.5, abs=0.05)
        assert result.arrays["denoising_share"][i] == pytest.approx(0.5, abs=0.05)


@pytest.mark.slow
@pytest.mark.parametrize("seed", SEEDS)
def test_a_random_model_names_no_structure_and_no_off_diagonal_node(tmp_path, seed):
    model = _load(save_tiny_gpt2(tmp_path, n_layer=2, n_head=4, seed=seed))
    result = ABLATIONS_ANALYSIS.compute(model, _prompts(model))
    s = result.summary
    assert not s["informative"] and not s["answer_informative"]
    assert s["and_nodes"] == s["or_nodes"] == s["both_nodes"] == []
    assert s["self_repair"] == [] and s["indirect"] == [] and s["noising_top"] == []
    text = " ".join(ABLATIONS_ANALYSIS.narrative(result))
    assert not any(phrase in text for phrase in NEW_SENTENCES), text


def test_self_repair_and_indirect_effects_are_split_by_which_is_larger():
    """Three nodes off the diagonal: |total| < |direct| (compensated), |total| > |direct| (acts through later
    components, also with the opposite sign), and one near it."""
    names = ["L0H0", "L0H1", "L1H0"]
    B = 4
    clean = np.full(B, 4.0)
    total, direct = np.array([-0.5, -3.0, 1.0]), np.array([-3.0, -0.5, 0.95])
    arrays = {"clean_logit_diff": clean, "corrupted_logit_diff": np.zeros(B), "direct_mean": direct,
              "clean_p_correct": np.full(B, 0.5), "clean_copy_logit_diff": clean,
              **{f"{k}_logit_diff": (clean + total[:, None]) * np.ones((3, B)) for k in ("zero", "mean", "resample")},
              **{f"{k}_p_correct": np.full((3, B), 0.5) for k in ("zero", "mean", "resample")}}

    class Cfg:
        n_layers, n_heads = 2, 1

    class Prompts:
        family, corruption, n_prompts = "tomorrow", "day", B

    s = _summary(arrays, names, Prompts, Cfg, True, "")
    assert [e["name"] for e in s["self_repair"]] == ["L0H0"]
    assert [e["name"] for e in s["indirect"]] == ["L0H1"]
    text = " ".join(ABLATIONS_ANALYSIS.narrative(Result(summary={**s, "items_above_chance": True})))
    assert "Self-repair" in text.split("Indirect")[0] and "L0H0 (total -0.50, direct -3.00)" in text, text
    assert "L0H1 (total -3.00, direct -0.50)" in text.split("Indirect effect")[1], text
