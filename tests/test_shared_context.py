"""One family context: the analyses that share a family's runs, sweeps, chance flag, head ranking and path effects
compute the same numbers as each computing alone, and the shared work is done once per (family, corruption).
`--analyses auto` computes the interventions only where the model does the task, and the page says why and how."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import invoke, save_tiny_gpt2
from cut_families import cut_families_file
from planted_circuit import save_planted_gpt2

from analyses import REGISTRY
from analyses import engine as engine
from analyses.common.types import FamilyContext
from analyses.engine import sweep_runs
from analyses.methods import paths, shared
from report.store.results import units

pytestmark = pytest.mark.tiny  # tests here build tiny or planted checkpoints in the session (no-model tier: not these)

TOL = 1e-4  # float32, batched in different chunks: the engine's batched-vs-loop tolerance
SHARING = [a for a in REGISTRY if a.uses_context]


def _load(folder):
    from report.run.model import load_model

    return load_model(str(folder), device="cpu").model


TEMPLATES = 2  # the first two templates and their relation twins: the comparison needs prompts, not all 42


def _prompts(model, folder, family="tomorrow"):
    """`family` cut to TEMPLATES templates (tests/cut_families.py), tokenized for `model`."""
    from report.run.families import build_prompt_set
    from report.run.families_file import load_family_specs

    spec = load_family_specs(_cut_family(folder, family))[family]
    return build_prompt_set(spec, model.tokenizer, model.cfg.default_prepend_bos)


def _cut_family(folder, family="tomorrow"):
    return cut_families_file(folder / "families.toml", [family], TEMPLATES)


@pytest.fixture(scope="module")
def planted(tmp_path_factory):
    folder = tmp_path_factory.mktemp("planted-shared")
    model = _load(save_planted_gpt2(folder / "model"))
    return model, _prompts(model, folder)


def _all_units(analyses, prompts):
    return [(unit, analysis, unit_prompts) for analysis in analyses for unit, unit_prompts in units(analysis, prompts)]


def _compare(alone, together, path=""):
    if isinstance(alone, dict):
        assert alone.keys() == together.keys(), path
        for key in alone:
            _compare(alone[key], together[key], f"{path}.{key}")
    elif isinstance(alone, list):
        assert len(alone) == len(together), path
        for i, (a, b) in enumerate(zip(alone, together)):
            _compare(a, b, f"{path}[{i}]")
    elif isinstance(alone, (float, np.floating)):
        assert together == pytest.approx(alone, abs=TOL, rel=TOL, nan_ok=True), path
    elif isinstance(alone, np.ndarray):
        np.testing.assert_allclose(together, alone, atol=TOL, rtol=TOL, err_msg=path)
    else:
        assert alone == together, path


def test_the_analyses_that_share_are_the_interventions():
    assert {a.name for a in SHARING} == {"patching_positions", "patching_heads", "ablations", "path_patching",
                                         "circuit"}
    # neurons and edge circuits intervene too (so `auto` skips them at chance) but collect their own runs
    assert {a.name for a in REGISTRY if a.intervenes} == {a.name for a in SHARING} | {"neurons", "edge_circuits"}


@pytest.mark.slow
def test_shared_context_gives_each_analysis_its_own_numbers(planted):
    """Per-analysis path (a fresh context each) against one context for the family, every unit, both corruptions."""
    model, prompts = planted
    work = _all_units(SHARING, prompts)
    assert len(work) == 10 and {p.corruption for _, _, p in work} == {"day", "relation"}
    context = FamilyContext(model)
    named = []
    for unit, analysis, unit_prompts in work:
        alone = analysis.compute(model, unit_prompts)
        together = analysis.compute(model, unit_prompts, context=context)
        _compare(alone.summary, together.summary, unit)
        _compare(alone.arrays, together.arrays, unit)
        _compare(alone.labels, together.labels, unit)
        if analysis.name == "circuit" and together.summary["minimal_circuit"]:
            named.append(unit_prompts.corruption)
    assert named, "the comparison saw a real (named) circuit under at least one corruption"


@pytest.mark.slow
def test_shared_work_is_done_once_per_family_and_corruption(planted, monkeypatch):
    model, prompts = planted
    calls = {"runs": 0, "chance": 0, "path_setup": 0, "senders": 0}

    def counting(name, function, count=lambda *a, **k: 1):
        def wrapped(*args, **kwargs):
            calls[name] += count(*args, **kwargs)
            return function(*args, **kwargs)
        return wrapped

    monkeypatch.setattr(engine, "collect_runs", counting("runs", engine.collect_runs))  # the shared pair
    monkeypatch.setattr(sweep_runs, "collect_runs", counting("runs", sweep_runs.collect_runs))  # the swapped pair
    monkeypatch.setattr(shared, "does_the_task", counting("chance", shared.does_the_task))
    monkeypatch.setattr(paths, "setup", counting("path_setup", paths.setup))
    monkeypatch.setattr(paths, "path_effects", counting("senders", paths.path_effects,
                                                        lambda model, ps, senders, **k: len(senders)))
    context = FamilyContext(model)
    circuits = {}
    for _unit, analysis, unit_prompts in _all_units(SHARING, prompts):
        result = analysis.compute(model, unit_prompts, context=context)
        if analysis.name == "circuit":
            circuits[unit_prompts.corruption] = result.summary
    # path set-ups: the denoising one per corruption (shared with circuit) and path_patching's noising one
    # runs: the shared pair once per corruption, and the swapped pair patching_heads' noising denoises (once each)
    assert calls["runs"] == 4 and calls["chance"] == 1 and calls["path_setup"] <= 4
    # circuit's diagram follows only the circuit heads that path_patching's 3 senders did not cover
    ranking = {c: shared.head_ranking(context, prompts.with_corruption(c))[:3] for c in circuits}
    new = sum(len({h for h in _circuit_heads(circuits[c]) if h not in ranking[c]}) if circuits[c]["informative"]
              and circuits[c]["ranking_informative"] else 0 for c in circuits)
    assert calls["senders"] == 3 * len(circuits) + new


def _circuit_heads(summary) -> list[tuple[int, int]]:
    from analyses.methods.attribution import parse_head_name

    return [parse_head_name(n) for n in summary["minimal_circuit"] if not n.startswith("MLP")]


@pytest.mark.slow
def test_auto_skips_interventions_where_the_model_is_at_chance_and_says_how_to_ask(tmp_path):
    """A random model is at chance on `tomorrow`: behaviour and the descriptive analyses run, the interventions are
    recorded as skipped with the reason, and the page shows the reason and the option that computes them."""
    import json

    checkpoint = save_tiny_gpt2(tmp_path / "random")
    invoke("report", "--model", checkpoint, "--families", "tomorrow", "--out", tmp_path / "runs", "--site",
           tmp_path / "site", "--device", "cpu", "--run-id", "auto")
    manifest = json.loads((tmp_path / "runs" / "auto" / "manifest.json").read_text())
    (entry,) = manifest["models"].values()
    assert manifest["options"]["analyses"] == "auto"
    assert entry["families"]["tomorrow"]["auto_interventions"] is False
    recorded = entry["analyses"]
    for analysis in REGISTRY:
        keys = [k for k in recorded if k.split("/")[1].split("-")[0] == analysis.name]
        assert keys, analysis.name
        for key in keys:
            expected = "skipped" if analysis.intervenes else "complete"
            assert recorded[key]["status"] == expected, key
            if analysis.intervenes:
                assert "--analyses all" in recorded[key]["reason"]
    page = next((tmp_path / "site").rglob("tomorrow.html")).read_text(encoding="utf-8")
    assert page.count("no better than chance on this family") >= len(SHARING)
    assert "--analyses all" in page


@pytest.mark.slow
def test_auto_computes_everything_where_the_model_does_the_task(planted, tmp_path, monkeypatch):
    """The planted successor head does the task: under auto every analysis runs (the same list as `all`)."""
    from report.run.options import RunOptions
    from report.run.pipeline import run

    model, prompts = planted
    assert shared.above_chance(FamilyContext(model), prompts)
    folder = save_planted_gpt2(tmp_path / "planted")
    run_dir = run(RunOptions(models=[str(folder)], families="tomorrow", families_file=_cut_family(tmp_path),
                             analyses="auto", out=tmp_path / "runs", device="cpu", run_id="auto-planted"))
    import json

    manifest = json.loads((run_dir / "manifest.json").read_text())
    (entry,) = manifest["models"].values()
    assert entry["families"]["tomorrow"]["auto_interventions"] is True
    statuses = {k: v["status"] for k, v in entry["analyses"].items()}
    assert statuses and set(statuses.values()) == {"complete"}, statuses
    assert len(statuses) == sum(len(units(a, prompts)) for a in REGISTRY)
