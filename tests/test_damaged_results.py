"""Saved results that were edited, swapped, merged wrongly or damaged are never published as data: each ends as a
warning line and a section that says so (build), a problem (load_run), or one error line (a damaged manifest)."""

from __future__ import annotations

import json
import random
import shutil
from pathlib import Path

import golden
import pytest
from click.testing import CliRunner
from conftest import invoke, save_tiny_gpt2
from publish_util import copy_run, edit_summary, fails

from report.cli import main
from report.store import results
from report.store.loader import load_run

pytestmark = pytest.mark.tiny  # tests here build tiny or planted checkpoints in the session (no-model tier: not these)

SLUG = golden.MODEL  # the golden run's model folder


@pytest.fixture(scope="module")
def one_family(golden_run, tmp_path_factory) -> Path:
    return copy_run(golden_run, tmp_path_factory.mktemp("one") / "run", families=["tomorrow"])


@pytest.fixture(scope="module")
def other_checkpoint_run(tmp_path_factory) -> Path:
    """dla_layers and behaviour of a differently seeded tiny checkpoint on `tomorrow` (its arrays to swap in)."""
    root = tmp_path_factory.mktemp("other")
    model = save_tiny_gpt2(root / SLUG, seed=1)  # another checkpoint in a folder of the same name
    invoke("run", "--model", model, "--families", "tomorrow", "--analyses", "behaviour,dla_layers", "--out",
           root / "runs", "--device", "cpu", "--run-id", "other")
    return root / "runs" / "other"


def build(run: Path, site: Path):
    result = invoke("build", run, "--site", site)
    warnings = [line for line in result.stderr.splitlines() if line.startswith("warning:")]
    return warnings, (site / SLUG / "tomorrow.html").read_text(encoding="utf-8"), (site / "index.html").read_text(
        encoding="utf-8")


def section(html: str, key: str) -> str:
    return html.split(f'<section id="{key}"', 1)[1].split("</section>", 1)[0]


@pytest.mark.slow
def test_an_edited_summary_is_never_published_and_is_named(one_family, tmp_path):
    run = copy_run(one_family, tmp_path / "run")
    family = run / SLUG / "tomorrow"
    edit_summary(family / "dla_heads", top_heads=[{"name": "L2H3", "value": 99.0}])
    edit_summary(family / "behaviour", top1_acc=1.0, items_acc=1.0)
    warnings, html, index = build(run, tmp_path / "site")
    assert len(warnings) == 2, warnings
    for analysis in ("dla_heads", "behaviour"):
        assert sum(f"{analysis}/summary.json" in w and "checksum" in w for w in warnings) == 1, warnings
        assert "This section is missing" in section(html, analysis)
        assert "plotly-graph-div" not in section(html, analysis)
    assert "L2H3" not in html  # the forged top head is nowhere on the page
    assert "2 sections missing" in index
    assert "plotly-graph-div" in section(html, "logit_diff")  # the untouched results are still drawn
    loaded = load_run(run)
    assert (SLUG, "tomorrow", "dla_heads") not in loaded.summaries
    assert (SLUG, "tomorrow", "behaviour") not in loaded.summaries
    assert (SLUG, "tomorrow", "logit_diff") in loaded.summaries
    assert sorted(p.path.parent.name for p in loaded.problems) == ["behaviour", "dla_heads"]


@pytest.mark.slow
@pytest.mark.tiny  # builds its own tiny checkpoints
def test_arrays_swapped_in_from_another_checkpoint_are_never_published(one_family, other_checkpoint_run, tmp_path):
    run = copy_run(one_family, tmp_path / "run")
    ours = run / SLUG / "tomorrow" / "dla_layers" / "arrays.safetensors"
    theirs = other_checkpoint_run / SLUG / "tomorrow" / "dla_layers" / "arrays.safetensors"
    assert ours.read_bytes() != theirs.read_bytes()
    shutil.copyfile(theirs, ours)
    warnings, html, index = build(run, tmp_path / "site")
    assert len(warnings) == 1 and "dla_layers/arrays.safetensors" in warnings[0] and "checksum" in warnings[0]
    assert "This section is missing" in section(html, "dla_layers")
    assert "1 section missing" in index


@pytest.mark.tiny  # builds its own tiny checkpoints
def test_a_whole_result_copied_from_another_model_with_its_checksums_is_refused_by_identity(
        one_family, other_checkpoint_run, tmp_path):
    """A careful forger also copies the checksums into the manifest: the model identity the result carries
    (extras.json) still differs from the manifest's model."""
    run = copy_run(one_family, tmp_path / "run")
    folder = run / SLUG / "tomorrow" / "behaviour"
    shutil.rmtree(folder)
    shutil.copytree(other_checkpoint_run / SLUG / "tomorrow" / "behaviour", folder)
    manifest = json.loads((run / "manifest.json").read_text())
    other = json.loads((other_checkpoint_run / "manifest.json").read_text())
    manifest["models"][SLUG]["analyses"]["tomorrow/behaviour"] = other["models"][SLUG]["analyses"]["tomorrow/behaviour"]
    (run / "manifest.json").write_text(json.dumps(manifest))
    assert manifest["models"][SLUG]["fingerprint"] != other["models"][SLUG]["fingerprint"]
    warnings, html, _ = build(run, tmp_path / "site")
    assert len(warnings) == 1 and "behaviour/extras.json" in warnings[0] and "another model" in warnings[0]
    assert "This section is missing" in section(html, "behaviour")


def test_a_result_folder_the_manifest_does_not_record_is_not_published(one_family, tmp_path):
    """What a run killed between saving a result and recording it leaves: files on disk, no manifest entry."""
    run = copy_run(one_family, tmp_path / "run")
    manifest = json.loads((run / "manifest.json").read_text())
    del manifest["models"][SLUG]["analyses"]["tomorrow/logit_lens"]
    (run / "manifest.json").write_text(json.dumps(manifest))
    warnings, html, _ = build(run, tmp_path / "site")
    assert len(warnings) == 1 and "logit_lens/summary.json" in warnings[0] and "not recorded" in warnings[0]
    assert "This section is missing" in section(html, "logit_lens")


@pytest.fixture(scope="module")
def same_name_runs(tmp_path_factory) -> tuple[Path, Path, Path]:
    """One model folder `tiny` run on `tomorrow` (A), then retrained in place (other weights, same path, same
    size) and run on `day_after` (B) and `next_month` (C): A and B agree on name, revision and shape."""
    root = tmp_path_factory.mktemp("same-name")
    model = root / "tiny"

    def run(family: str, run_id: str) -> Path:
        invoke("run", "--model", model, "--families", family, "--analyses", "behaviour", "--out", root / "runs",
               "--device", "cpu", "--run-id", run_id)
        return root / "runs" / run_id

    save_tiny_gpt2(model, seed=0)
    first = run("tomorrow", "A")
    shutil.rmtree(model)
    save_tiny_gpt2(model, seed=1)
    return first, run("day_after", "B"), run("next_month", "C")


@pytest.mark.slow
@pytest.mark.tiny  # builds its own tiny checkpoints
def test_two_runs_of_one_folder_name_holding_different_weights_are_not_merged(same_name_runs, tmp_path):
    a, b, _ = same_name_runs
    _, output = fails("build", a, b, "--site", tmp_path / "site")
    assert output.count("\n") == 1 and "'tiny' differs between" in output and "fingerprint" in output, output
    assert not (tmp_path / "site").exists()


@pytest.mark.slow
@pytest.mark.tiny  # builds its own tiny checkpoints
def test_two_runs_of_the_same_weights_still_merge(same_name_runs, tmp_path):
    """The control: the same weights run twice on different families are one model in the report."""
    _, b, c = same_name_runs
    invoke("build", b, c, "--site", tmp_path / "site")
    assert sorted(p.name for p in (tmp_path / "site" / "tiny").glob("*.html")) == ["day_after.html", "next_month.html"]


def test_a_folder_given_twice_is_one_run(one_family, tmp_path):
    invoke("build", one_family, one_family / ".." / one_family.name, "--site", tmp_path / "site")
    index = (tmp_path / "site" / "index.html").read_text(encoding="utf-8")
    assert "runs merged" not in index


@pytest.mark.parametrize("key", ["../../x", "a/b", "..", ".hidden"])
def test_model_keys_that_are_not_plain_names_are_refused(one_family, tmp_path, key):
    run = copy_run(one_family, tmp_path / "run")
    manifest = json.loads((run / "manifest.json").read_text())
    manifest["models"] = {key: manifest["models"][SLUG]}
    (run / "manifest.json").write_text(json.dumps(manifest))
    _, output = fails("build", run, "--site", tmp_path / "site")
    assert output.count("\n") == 1 and "manifest.json is damaged" in output and "models" in output, output
    with pytest.raises(Exception, match="is damaged"):
        load_run(run)


def test_family_and_analysis_keys_that_are_paths_are_refused(one_family, tmp_path):
    run = copy_run(one_family, tmp_path / "run")
    manifest = json.loads((run / "manifest.json").read_text())
    model = manifest["models"][SLUG]
    model["analyses"]["../../../etc/behaviour"] = model["analyses"]["tomorrow/behaviour"]
    (run / "manifest.json").write_text(json.dumps(manifest))
    _, output = fails("build", run, "--site", tmp_path / "site")
    assert "is damaged" in output and "analyses" in output


def _paths(value, prefix=()):
    """Every (path, value) in a JSON document, depth first."""
    yield prefix, value
    if isinstance(value, dict):
        for key, child in value.items():
            yield from _paths(child, (*prefix, key))
    elif isinstance(value, list):
        for i, child in enumerate(value[:2]):
            yield from _paths(child, (*prefix, i))


@pytest.mark.parametrize("seed", [0, 1])
def test_wrong_types_anywhere_in_a_manifest_end_in_one_line_never_a_traceback(one_family, tmp_path, seed):
    """Property: replace one value of a valid manifest by a value of another JSON type; `build` either builds or
    says in one line that the manifest is damaged (exit 1), never a bug (exit 70)."""
    manifest = json.loads((one_family / "manifest.json").read_text())
    paths = [p for p, _ in _paths(manifest) if p]
    rng = random.Random(seed)
    chosen = rng.sample(paths, 8) + [("models",), ("models", SLUG, "families"), ("status",), ("created",)]
    damaged = 0
    for i, path in enumerate(chosen):
        run = copy_run(one_family, tmp_path / f"run{i}")
        edited = json.loads((run / "manifest.json").read_text())
        holder = edited
        for key in path[:-1]:
            holder = holder[key]
        old = holder[path[-1]]
        holder[path[-1]] = rng.choice([w for w in (7, "x", [], {}, None, True, 2.5) if type(w) is not type(old)])
        (run / "manifest.json").write_text(json.dumps(edited))
        result = CliRunner().invoke(main, ["build", str(run), "--site", str(tmp_path / f"site{i}")])
        assert result.exit_code in (0, 1), (path, holder[path[-1]], result.output)
        assert "Traceback" not in result.output, (path, result.output)
        if result.exit_code == 1:
            damaged += 1
            assert result.output.startswith("error: ") and result.output.count("\n") == 1, result.output
    assert damaged >= 4  # the top-level ones at least are refused


@pytest.mark.slow
def test_a_damaged_manifest_is_one_line_for_resume_too(one_family, tmp_path, tiny_checkpoint):
    out = tmp_path / "runs"
    run = copy_run(one_family, out / "R")
    manifest = json.loads((run / "manifest.json").read_text())
    manifest["models"][SLUG]["analyses"] = ["tomorrow/behaviour"]
    manifest["definition"] = "x"
    (run / "manifest.json").write_text(json.dumps(manifest))
    code, output = fails("run", "--model", tiny_checkpoint, "--out", out, "--resume", "--run-id", "R",
                         "--device", "cpu")
    assert code == 1 and "manifest.json is damaged" in output and output.count("\n") == 1, output


def test_a_deleted_manifest_gives_errors_that_say_so_and_do_not_point_at_each_other(one_family, tmp_path,
                                                                                    tiny_checkpoint):
    out = tmp_path / "runs"
    run = copy_run(one_family, out / "R")
    (run / "manifest.json").unlink()
    _, built = fails("build", run, "--site", tmp_path / "site")
    _, resumed = fails("run", "--model", tiny_checkpoint, "--out", out, "--resume", "--run-id", "R", "--device", "cpu")
    _, rerun = fails("run", "--model", tiny_checkpoint, "--out", out, "--run-id", "R", "--device", "cpu")
    for output in (built, resumed, rerun):
        assert output.count("\n") == 1, output
    assert "no manifest.json" in built and "--resume" not in built
    assert "no manifest.json" in resumed and "another --run-id" in resumed
    assert "not a run" in rerun and "--resume" not in rerun


def test_load_run_names_a_deleted_family_folder(one_family, tmp_path):
    run = copy_run(one_family, tmp_path / "run")
    shutil.rmtree(run / SLUG / "tomorrow")
    loaded = load_run(run)
    assert loaded.summaries == {}
    recorded = json.loads((run / "manifest.json").read_text())["models"][SLUG]["analyses"]
    assert len(loaded.problems) == len(recorded) > 0
    assert all("missing" in p.what for p in loaded.problems)


@pytest.mark.slow
@pytest.mark.parametrize("status", ["running", "interrupted"])
def test_partial_runs_build_with_the_unsaved_sections_marked(one_family, tmp_path, status):
    """A run still being written (or SIGKILLed, which leaves it 'running') and an interrupted one both build."""
    run = copy_run(one_family, tmp_path / "run")
    manifest = json.loads((run / "manifest.json").read_text())
    manifest["status"] = status
    del manifest["total_seconds"]
    for key in ("tomorrow/dla_heads", "tomorrow/patching_heads-relation"):
        del manifest["models"][SLUG]["analyses"][key]
        shutil.rmtree(run / SLUG / key)
    (run / "manifest.json").write_text(json.dumps(manifest))
    result = invoke("build", run, "--site", tmp_path / "site")
    assert "warning" not in result.stderr
    html = (tmp_path / "site" / SLUG / "tomorrow.html").read_text(encoding="utf-8")
    for key in ("dla_heads", "patching_heads-relation"):
        assert "the run has not saved it" in section(html, key) and status in section(html, key)
    assert "the run has not saved it" not in section(html, "dla_layers")
    index = (tmp_path / "site" / "index.html").read_text(encoding="utf-8")
    assert f"status: {status}" in index and "not recorded (the run has not finished)" in index


def test_is_complete_checks_every_recorded_file(one_family):
    folder = one_family / SLUG / "tomorrow" / "dla_layers"
    entry = json.loads((one_family / "manifest.json").read_text())["models"][SLUG]["analyses"]["tomorrow/dla_layers"]
    assert results.is_complete(folder, entry["files"])
    assert set(entry["files"]) == {"summary.json", "arrays.safetensors", "extras.json"}
