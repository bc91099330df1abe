"""`--exact top:K[,sample:S]` (AtP*, analyses/methods/verified.py): attribution ranks every cell, exact patching
verifies the top K and a seeded random sample, the false-negative rate is estimated from the sample; `--steps N` for
EAP-IG.

Properties: every-cell mode is reproduced bit for bit when K covers the sweep; the verified cells are the top K by
|attribution| and a sample of exactly S others; a cell that attribution misses is counted by the estimator; on a
planted model a small K finds the planted head with its exact value; unverified cells are never ranked above
verified ones; the statistics leave NaN cells out without changing the others; the page marks the estimates; bad
option values are one line."""

from __future__ import annotations

import json
from typing import Annotated, TypedDict

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from conftest import invoke
from planted_circuit import save_planted_gpt2

from analyses import engine as engine
from analyses.common import stats as st
from analyses.common.bootstrap import bootstrap_ci
from analyses.common.types import FamilyContext
from analyses.methods import shared
from analyses.methods import verified as verify
from report.cli import main

pytestmark = pytest.mark.tiny  # tests here build tiny or planted checkpoints in the session (no-model tier: not these)

PLANTED = (1, 2)  # the planted head L1H2 (tests/planted_circuit.py's default)


def _load(folder):
    from report.run.model import load_model

    return load_model(str(folder), device="cpu").model


def _prompts(model, family="tomorrow"):
    from report.run.families import build_prompt_set
    from report.run.families_file import load_family_specs

    return build_prompt_set(load_family_specs()[family], model.tokenizer, model.cfg.default_prepend_bos)


@pytest.fixture(scope="module")
def planted(tmp_path_factory):
    """The planted next-day head in a 3-layer, 4-head model: 12 head cells, more than a small K + S."""
    model = _load(save_planted_gpt2(tmp_path_factory.mktemp("planted-exact"), *PLANTED, n_layer=3, n_head=4))
    prompts = _prompts(model)
    return model, prompts, engine.collect_runs(model, prompts)


# ---- parsing and the command line (no model) --------------------------------------------------------------------


@pytest.mark.parametrize("text, expected", [
    ("all", "all"), ("auto", "auto"), ("top:8", "top:8,sample:8"), ("top:3,sample:0", "top:3,sample:0"),
    (" top:12,sample:5 ", "top:12,sample:5")])
def test_parse_exact_accepts_the_documented_forms(text, expected):
    assert str(verify.parse_exact(text)) == expected


@pytest.mark.parametrize("text", ["top:0", "top:x", "foo", "top:", "top:3,sample:-1", "top:3,sample:", "TOP:3"])
def test_parse_exact_refuses_anything_else(text):
    with pytest.raises(ValueError, match="--exact"):
        verify.parse_exact(text)


def test_auto_is_exact_everywhere_on_cuda_and_the_measured_default_on_cpu():
    assert str(verify.resolve("auto", "cuda")) == "all"
    assert str(verify.resolve("auto", "cuda:1")) == "all"
    assert str(verify.resolve("auto", "cpu")) == str(verify.parse_exact(verify.CPU_DEFAULT))
    assert verify.resolve("auto", "cpu").partial
    assert str(verify.resolve("top:4", "cuda")) == "top:4,sample:4"  # a mode given is kept on any device


@pytest.mark.parametrize("command", ["run", "report"])
@pytest.mark.parametrize("args, fragment", [(["--exact", "top:0"], "--exact 'top:0'"),
                                            (["--exact", "top:x"], "--exact 'top:x'"),
                                            (["--exact", "foo"], "--exact 'foo'"),
                                            (["--steps", "0"], "--steps 0")])
def test_cli_refuses_bad_exact_and_steps_in_one_line(tmp_path, command, args, fragment):
    out = tmp_path / "runs"
    site = ["--site", str(tmp_path / "site")] if command == "report" else []
    result = CliRunner().invoke(main, [command, "--out", str(out), "--device", "cpu", "--model", "gpt2", *site,
                                       *args])
    assert result.exit_code == 1 and isinstance(result.exception, SystemExit), result.output
    assert result.output.startswith("error: ") and result.output.count("\n") == 1, result.output
    assert fragment in result.output and "Traceback" not in result.output
    assert not out.exists() or not any(out.iterdir())


# ---- the estimator and the choice of cells (no model) ------------------------------------------------------------


def test_false_negatives_count_the_sampled_cells_that_reach_the_top_ks_least():
    top = np.array([5.0, -3.0, 2.0])  # smallest |exact| among the top K: 2
    sample = np.array([0.1, -2.5, 1.0, 2.0, 0.0])  # -2.5 and 2.0 reach it: two cells attribution ranked too low
    fn = verify.false_negatives(top, sample)
    assert (fn.hits, fn.n, fn.threshold, fn.rate) == (2, 5, 2.0, 0.4)
    low, high = fn.interval()
    assert 0 < low < 0.4 < high < 1
    none = verify.false_negatives(top, np.array([0.5, -1.9]))
    assert none.rate == 0 and none.interval()[0] == 0 and 0 < none.interval()[1] < 1  # 0 of 2: wide, not zero
    assert np.isnan(verify.false_negatives(top, np.array([])).rate)


def test_the_verified_cells_are_the_top_k_by_attribution_and_exactly_s_others():
    rng = np.random.default_rng(1)
    score = rng.random(50)
    top, sampled = verify.choose_cells(score, 7, 9, seed=0, salt="z")
    assert set(top.tolist()) == set(np.argsort(-score)[:7].tolist())  # the largest, never the smallest
    assert len(sampled) == 9 and len(set(sampled.tolist())) == 9 and not set(sampled.tolist()) & set(top.tolist())
    again = verify.choose_cells(score, 7, 9, seed=0, salt="z")[1]
    other = verify.choose_cells(score, 7, 9, seed=1, salt="z")[1]
    assert np.array_equal(sampled, again) and not np.array_equal(sampled, other)  # seeded, and the seed matters
    assert len(verify.choose_cells(score, 45, 9, seed=0)[1]) == 5  # no more than the rest holds


def test_ranking_never_puts_an_unverified_cell_above_a_verified_one():
    exact = np.array([0.1, np.nan, -0.3, np.nan, 0.0])
    attribution = np.array([0.0, 9.0, 0.0, -5.0, 0.0])  # huge estimates on the unverified cells
    assert verify.ranking(exact, attribution).tolist() == [2, 0, 4, 1, 3]
    assert verify.ranking(np.array([0.2, -0.5, 0.1]), np.zeros(3)).tolist() == [1, 0, 2]  # all verified: by |exact|


def test_statistics_leave_unverified_cells_out_and_keep_the_others():
    rng = np.random.default_rng(0)
    ld = rng.normal(size=(6, 8)) + 1
    clean, corrupted = np.full(8, 2.0) + rng.normal(size=8) * 0.1, np.zeros(8)
    holes = ld.copy()
    holes[[1, 4]] = np.nan
    low, high = bootstrap_ci(ld, clean, corrupted)
    hlow, hhigh = bootstrap_ci(holes, clean, corrupted)
    assert np.isnan(hlow[[1, 4]]).all() and np.isnan(hhigh[[1, 4]]).all()
    keep = [0, 2, 3, 5]
    np.testing.assert_array_equal(hlow[keep], low[keep])
    np.testing.assert_array_equal(hhigh[keep], high[keep])
    stats = st.SweepStats(exact=np.array([[0.1, np.nan], [np.nan, -0.2]]),
                          attribution=np.array([[0.0, 3.0], [4.0, 0.0]]),
                          ci_low=np.zeros((2, 2)), ci_high=np.zeros((2, 2)), exact_per_prompt=np.zeros((2, 2, 1)),
                          attribution_per_prompt=np.zeros((2, 2, 1)), normalised=True)
    entries = st.ranked(stats, np.array([["a", "b"], ["c", "d"]]), 4)
    assert [e["name"] for e in entries] == ["d", "a"]  # verified only, by |exact|; never a null value
    assert all(e["value"] is not None for e in entries)


def test_summary_pools_the_sweeps_and_states_the_estimate():
    checked = {"z": verify.Verification("top:2,sample:3", np.eye(3, dtype=bool)[:2], np.zeros((2, 3), bool),
                                        verify.FalseNegatives(1, 3, 0.5)),
               "v": verify.everything("top:2,sample:3", (2, 1))}
    s = verify.summarise(checked)
    assert (s["exact_mode"], s["verified_cells"], s["cells"], s["fn_sample"], s["fn_hits"]) == (
        "top:2,sample:3", 4, 8, 3, 1)
    assert s["false_negative_rate"] == pytest.approx(1 / 3) and [v["fn_sample"] for v in s["verification"]] == [3, 0]
    sentence = verify.sentence(s)
    assert "verified 4 of 8 cells" in sentence and "1 of 3 randomly sampled" in sentence and "33%" in sentence
    assert verify.sentence(verify.summarise({"z": verify.everything("all", (2, 2))})) is None


# ---- the engine on models -----------------------------------------------------------------------------------------


@pytest.mark.slow
@pytest.mark.tiny
def test_top_k_covering_every_cell_equals_all_bit_for_bit(planted):
    model, _, runs = planted
    sweeps = tuple(engine.SWEEPS)
    largest = max(runs.n_layers * runs.n_units(s) for s in sweeps)
    values, infos = verify.verified_sweeps(model, runs, sweeps, largest, 0)
    full = engine.exact_sweeps(model, runs, sweeps)
    for s in sweeps:
        assert torch.equal(values[s], full[s]), s
        assert infos[s].complete and infos[s].fn is None


@pytest.mark.slow
@pytest.mark.tiny
def test_small_k_finds_the_planted_head_with_its_exact_value(planted):
    model, prompts, runs = planted
    values, infos = verify.verified_sweeps(model, runs, ("z",), 2, 2)
    full = engine.exact_sweeps(model, runs, ("z",))["z"]
    z, info = values["z"], infos["z"]
    assert info.verified.sum() == 4 and info.top.sum() == 2 and info.sampled.sum() == 2
    assert torch.isnan(z[~torch.as_tensor(info.verified)]).all()
    assert not torch.isnan(z[torch.as_tensor(info.verified)]).any()
    assert info.top[PLANTED]
    torch.testing.assert_close(z[PLANTED], full[PLANTED], atol=1e-5, rtol=1e-5)
    effect = verify.cell_effect(z, runs)
    assert int(np.nanargmax(effect)) == np.ravel_multi_index(PLANTED, effect.shape)
    assert info.fn.n == 2 and info.fn.hits == 0  # nothing else comes near the planted head


@pytest.mark.tiny
def test_a_cell_that_attribution_misses_is_counted(planted):
    """Attribution that ranks the planted head last: it is not in the top K, the sample (every other cell) holds it,
    and the estimator counts it (a mutant that skips the sample or verifies the bottom K fails here)."""
    model, _, runs = planted
    real = engine.attribution_sweeps(model, runs, ("z",))["z"]
    wrong = torch.rand_like(real) + 1.0
    wrong[PLANTED] = 0.0  # attribution misses the planted head
    cells = runs.n_layers * runs.n_units("z")
    k, sample = 1, cells - 3  # K + S < cells: verified in part; the sample is two cells short of the rest
    flat = np.ravel_multi_index(PLANTED, (runs.n_layers, runs.n_units("z")))
    seed = next(seed for seed in range(100) if flat in verify.choose_cells(
        wrong.mean(-1).abs().numpy().ravel(), k, sample, seed, "z")[1])  # a draw that holds the planted head
    values, infos = verify.verified_sweeps(model, runs, ("z",), k, sample, seed, attribution={"z": wrong})
    info = infos["z"]
    assert not info.top[PLANTED] and info.sampled[PLANTED]
    assert info.fn.n == sample and info.fn.hits >= 1
    assert info.fn.rate > 0
    assert not torch.isnan(values["z"][PLANTED]).any()


@pytest.mark.slow
@pytest.mark.tiny
def test_patching_heads_under_top_k_marks_its_estimates_and_ranks_verified_heads(planted):
    from analyses.patching_heads import PATCHING_HEADS

    model, prompts, _ = planted
    every = PATCHING_HEADS.compute(model, prompts, context=FamilyContext(model))
    some = PATCHING_HEADS.compute(model, prompts, context=FamilyContext(model, exact="top:2,sample:2"))
    s = some.summary
    assert s["exact_mode"] == "top:2,sample:2" and s["fn_sample"] == 8  # z, v, pattern and the noising z
    assert s["verified_cells"] < s["cells"] and 0 <= s["false_negative_rate"] <= 1
    assert every.summary["exact_mode"] == "all" and every.summary["verified_cells"] == every.summary["cells"]
    assert s["top_heads"][0]["name"] == "L1H2"
    assert s["top_heads"][0]["value"] == pytest.approx(every.summary["top_heads"][0]["value"], abs=1e-5)
    verified = some.arrays["z_verified"] > 0.5
    assert np.isnan(some.arrays["z_exact"][~verified]).all() and np.isfinite(some.arrays["z_exact"][verified]).all()
    assert len(s["top_heads"]) == int(verified.sum())  # unverified heads are never listed
    assert "z_verified" not in every.arrays
    assert any("verified" in sentence and "false-negative" in sentence for sentence in PATCHING_HEADS.narrative(some))
    figure = PATCHING_HEADS.figures(some)[0].figure
    assert len(figure.data) == 3 and figure.data[2].opacity < 1 and "≈" in figure.data[2].text.ravel().tolist()
    assert "not verified" in figure.layout.annotations[0].text
    json.dumps(s, allow_nan=False)  # the store refuses NaN


@pytest.mark.slow
@pytest.mark.tiny
def test_head_ranking_under_top_k_puts_verified_heads_first(planted):
    model, prompts, _ = planted
    ctx = FamilyContext(model, exact="top:1,sample:0")
    ranking = shared.head_ranking(ctx, prompts)
    change = shared.head_z_change(ctx, prompts)
    assert ranking[0] == PLANTED and np.isfinite(change[PLANTED])
    assert all(np.isnan(change[h]) for h in ranking[1:])
    full = shared.exact(ctx, prompts, ("z",))["z"]  # circuit's every-cell sweep completes the verified one
    assert not torch.isnan(full).any()
    torch.testing.assert_close(full, engine.exact_sweeps(model, runs_of(ctx, prompts), ("z",))["z"], atol=1e-5,
                               rtol=1e-5)


def runs_of(ctx, prompts):
    return shared.runs(ctx, prompts)


@pytest.mark.slow
@pytest.mark.tiny
def test_run_records_the_modes_in_the_manifest_and_the_summaries(tmp_path, tiny_checkpoint):
    out = tmp_path / "runs"
    invoke("run", "--model", tiny_checkpoint, "--families", "tomorrow", "--analyses", "patching_heads", "--out", out,
           "--device", "cpu", "--run-id", "x", "--exact", "top:2,sample:1", "--steps", "3")
    manifest = json.loads((out / "x" / "manifest.json").read_text())
    assert manifest["options"]["exact"] == manifest["options"]["exact_resolved"] == "top:2,sample:1"
    assert manifest["options"]["steps"] == 3
    summaries = list((out / "x").glob("*/tomorrow/patching_heads-*/summary.json"))
    assert summaries
    for path in summaries:
        summary = json.loads(path.read_text())
        assert summary["exact_mode"] == "top:2,sample:1" and summary["verified_cells"] < summary["cells"]
        assert summary["fn_sample"] == 4


@pytest.mark.slow
@pytest.mark.tiny
def test_auto_on_cpu_leaves_a_tiny_model_exact_everywhere(tmp_path, tiny_checkpoint):
    out = tmp_path / "runs"
    invoke("run", "--model", tiny_checkpoint, "--families", "tomorrow", "--analyses", "patching_positions", "--out",
           out, "--device", "cpu", "--run-id", "x")
    manifest = json.loads((out / "x" / "manifest.json").read_text())
    assert manifest["options"]["exact"] == "auto" and manifest["options"]["exact_resolved"] == verify.CPU_DEFAULT
    summaries = list((out / "x").glob("*/tomorrow/patching_positions-*/summary.json"))
    assert summaries
    for path in summaries:
        summary = json.loads(path.read_text())
        assert summary["verified_cells"] == summary["cells"] and summary["fn_sample"] == 0


@pytest.mark.tiny
@pytest.mark.slow
def test_one_step_of_eap_ig_is_eap_and_the_steps_are_recorded(tmp_path):
    from analyses.edge_circuits import EDGE_CIRCUITS

    model = _load(save_planted_gpt2(tmp_path / "m"))
    prompts = _prompts(model)
    result = EDGE_CIRCUITS.compute(model, prompts, context=FamilyContext(model, ig_steps=1))
    assert result.summary["ig_steps"] == 1
    np.testing.assert_allclose(result.arrays["eap_ig"], result.arrays["eap"], rtol=1e-5, atol=1e-7)


@pytest.mark.tiny
def test_patching_positions_under_top_k_states_its_estimates_on_every_map(planted):
    from analyses.patching_positions import PATCHING_POSITIONS

    model, prompts, _ = planted
    result = PATCHING_POSITIONS.compute(model, prompts, context=FamilyContext(model, exact="top:3,sample:2"))
    s = result.summary
    assert s["exact_mode"] == "top:3,sample:2" and s["fn_sample"] == 6 and s["verified_cells"] == 15
    for sweep in engine.POSITION_SWEEPS:
        verified = result.arrays[f"{sweep}_verified"] > 0.5
        assert verified.sum() == 5 and np.isnan(result.arrays[f"{sweep}_exact"][~verified]).all()
        assert 1 <= len(s[f"{sweep}_top"]) <= 3 + 2 and all(e["value"] is not None for e in s[f"{sweep}_top"])
    json.dumps(s, allow_nan=False)
    sentences = PATCHING_POSITIONS.narrative(result)
    assert any("verified 15 of" in sentence for sentence in sentences)
    marked = [f for f in PATCHING_POSITIONS.figures(result) if any(getattr(t, "opacity", None) == 0.35
                                                                    for t in f.figure.data)]
    assert len(marked) >= 3  # the three position maps at least (and the role maps where a role is unverified)


class _ProbeSummary(TypedDict):
    n: Annotated[int, "a count"]


def test_the_pipeline_hands_the_options_to_an_analysis_that_reads_them(tmp_path):
    """`--steps` reaches edge_circuits through the context (`Analysis.reads_options`), never the command line."""

    from analyses.common.types import Analysis, Result
    from analyses.edge_circuits import EDGE_CIRCUITS
    from report.run import pipeline
    assert EDGE_CIRCUITS.reads_options and not EDGE_CIRCUITS.uses_context
    seen = []

    def compute(model, prompts, context=None):
        seen.append(None if context is None else (context.ig_steps, context.exact))
        return Result(summary={"n": 1})

    probe = Analysis(name="probe", title="t", definition="d", compute=compute, figures=lambda r: [],
                     narrative=lambda r: [], reads_options=True, summary_type=_ProbeSummary)
    context = FamilyContext(model=None, exact="top:4,sample:4", ig_steps=7)
    pipeline._run_analysis(tmp_path / "probe", {"analyses": {}}, "f", "probe", probe, None, None, context)
    assert seen == [(7, "top:4,sample:4")]
