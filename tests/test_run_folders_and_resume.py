"""Runs: unique folders, resumes that refuse other definitions and repair damage, signals, kills, stale temps."""

from __future__ import annotations

import json
import os
import random
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from click.testing import CliRunner
from test_cli_errors import assert_user_error, run_cli

from report.cli import main
from report.store import files

ROOT = Path(__file__).resolve().parents[1]
FEW = "behaviour,logit_diff,dla_layers"  # fast analyses; dla_layers writes arrays.safetensors


def ok(result):
    assert result.exit_code == 0, result.output
    return Path(re.search(r"^.*results: (\S+)$", result.output, re.M).group(1))


def summaries(run_dir: Path) -> dict[str, bytes]:
    found = {str(p.relative_to(run_dir)): p.read_bytes() for p in sorted(run_dir.rglob("summary.json"))}
    assert found, f"no summary.json under {run_dir}"
    return found


def manifest(run_dir: Path) -> dict:
    return json.loads((run_dir / "manifest.json").read_text())


@pytest.fixture(scope="module")
def families_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("families") / "mine.toml"
    path.write_text('[mine]\ntemplate = "Today it is {day} so tomorrow it is"\nanswer_offset = 1\n')
    return path


@pytest.mark.slow
def test_two_runs_started_in_the_same_second_get_different_folders(tmp_path, tiny_checkpoint, monkeypatch):
    monkeypatch.setattr("report.run.runs.time.time", lambda: 1_800_000_000.25)  # the very same instant
    out = tmp_path / "runs"
    args = ["--model", str(tiny_checkpoint), "--families", "tomorrow", "--analyses", "behaviour"]
    first, second = ok(run_cli(args, out)), ok(run_cli(args, out))
    assert first != second and first.parent == second.parent == out
    assert first.name[:19] == second.name[:19]  # same second and millisecond; the random suffix differs
    for run_dir in (first, second):
        assert manifest(run_dir)["status"] == "complete"
        assert summaries(run_dir)


def test_an_existing_run_id_is_refused_atomically(tmp_path, tiny_checkpoint):
    out = tmp_path / "runs"
    (out / "taken").mkdir(parents=True)
    result = run_cli(["--model", str(tiny_checkpoint), "--run-id", "taken", "--analyses", "behaviour"], out)
    assert result.exit_code == 1 and "taken exists" in result.output and "not a run" in result.output
    assert list((out / "taken").iterdir()) == []


@pytest.mark.parametrize("run_id", ["../escape", "/tmp/absolute", "a/b", ".hidden", "x" * 101, ""])
def test_run_ids_that_leave_out_or_are_too_long_are_refused(tmp_path, tiny_checkpoint, run_id):
    out = tmp_path / "sub" / "runs"
    result = run_cli(["--model", str(tiny_checkpoint), "--run-id", run_id], out)
    assert_user_error(result, out, "--run-id")
    assert sorted(p.name for p in tmp_path.rglob("*")) == [], "nothing written anywhere"


@pytest.mark.slow
def test_resume_with_a_redefined_family_is_refused_and_forced_recomputes(tmp_path, tiny_checkpoint, families_file):
    mine = tmp_path / "mine.toml"
    mine.write_text(families_file.read_text())
    out = tmp_path / "runs"
    args = ["--model", str(tiny_checkpoint), "--families-file", str(mine), "--analyses", "behaviour"]
    run_dir = ok(run_cli(args, out))
    before = summaries(run_dir)
    mine.write_text(mine.read_text().replace("Today it is {day} so", "Today is {day}, so"))
    refused = run_cli([*args, "--resume"], out)
    assert refused.exit_code == 1 and "family definition changed: mine" in refused.output
    assert "--force-resume" in refused.output and summaries(run_dir) == before
    assert ok(run_cli([*args, "--resume", "--force-resume"], out)) == run_dir
    assert summaries(run_dir) != before, "results of the old definition must not survive under the new one"
    assert manifest(run_dir)["models"]["tiny-gpt20"]["families"]["mine"]["templates"][0].startswith("Today is")


@pytest.mark.slow
@pytest.mark.parametrize("changed", [["--analyses", "behaviour,logit_diff"], ["--families", "day_after"]])
def test_resume_with_other_analyses_or_families_is_refused(tmp_path, tiny_checkpoint, changed):
    out = tmp_path / "runs"
    run_dir = ok(run_cli(["--model", str(tiny_checkpoint), "--families", "tomorrow", "--analyses", "behaviour"], out))
    result = run_cli(["--model", str(tiny_checkpoint), "--resume", *changed], out)
    assert_user_error(CliRunner().invoke(main, ["run", "--out", str(out), "--resume", *changed]), tmp_path / "none",
                      "made with other options", "added")
    assert result.exit_code == 1 and manifest(run_dir)["status"] == "complete"


@pytest.mark.slow
def test_resume_picks_the_newest_run_by_its_manifest_and_keeps_its_options(tmp_path, tiny_checkpoint):
    out = tmp_path / "runs"
    base = ["--model", str(tiny_checkpoint), "--analyses", "behaviour"]
    older = ok(run_cli([*base, "--families", "tomorrow", "--run-id", "zzz-older"], out))
    newer = ok(run_cli([*base, "--families", "day_after", "--run-id", "aaa-newer"], out))
    (newer / "tiny-gpt20" / "day_after" / "behaviour" / "summary.json").unlink()
    command = manifest(newer)["command"]
    resumed = ok(CliRunner().invoke(main, ["run", "--out", str(out), "--resume", "--device", "cpu"]))
    assert resumed == newer != older
    assert (newer / "tiny-gpt20" / "day_after" / "behaviour" / "summary.json").is_file()
    assert not (newer / "tiny-gpt20" / "tomorrow").exists()
    assert len(manifest(newer)["resumes"]) == 1 and manifest(newer)["command"] == command


@pytest.mark.slow
def test_resume_repairs_damaged_results(tmp_path, tiny_checkpoint):
    """A deleted arrays file, a truncated summary and an edited extras file are each recomputed, byte for byte."""
    out = tmp_path / "runs"
    run_dir = ok(run_cli(["--model", str(tiny_checkpoint), "--families", "tomorrow", "--analyses", FEW], out))
    family = run_dir / "tiny-gpt20" / "tomorrow"
    good = {str(p.relative_to(family)): p.read_bytes() for p in sorted(family.rglob("*.*"))}
    assert "dla_layers/arrays.safetensors" in good and len(good) == 9
    (family / "dla_layers" / "arrays.safetensors").unlink()
    (family / "behaviour" / "summary.json").write_bytes(good["behaviour/summary.json"][:10])
    (family / "logit_diff" / "extras.json").write_bytes(good["logit_diff/extras.json"] + b" ")
    assert ok(CliRunner().invoke(main, ["run", "--out", str(out), "--resume"])) == run_dir
    assert {str(p.relative_to(family)): p.read_bytes() for p in sorted(family.rglob("*.*"))} == good


def _cli(*args) -> list[str]:
    return [sys.executable, "-m", "report.cli", "run", "--device", "cpu", *map(str, args)]


def _env() -> dict:
    return {**os.environ, "PYTHONPATH": str(ROOT)}


def _wait_for_manifest(proc, out: Path, timeout=120.0) -> None:
    deadline = time.monotonic() + timeout
    while not list(out.glob("*/manifest.json")):
        assert proc.poll() is None, proc.communicate()
        assert time.monotonic() < deadline
        time.sleep(0.05)


@pytest.mark.slow  # a run in a fresh process (docs/testing.md)
def test_sigterm_marks_the_manifest_interrupted(tmp_path, tiny_checkpoint):
    out = tmp_path / "runs"
    proc = subprocess.Popen(_cli("--model", tiny_checkpoint, "--families", "tomorrow,day_after", "--out", out),
                            cwd=ROOT, env=_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    _wait_for_manifest(proc, out)
    proc.send_signal(signal.SIGTERM)
    _, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 128 + signal.SIGTERM, stderr
    assert "error: interrupted by SIGTERM" in stderr and "Traceback" not in stderr
    (run_dir,) = out.iterdir()
    assert manifest(run_dir)["status"] == "interrupted"


@pytest.mark.slow
def test_stale_temporaries_of_killed_runs_are_cleaned_and_live_ones_kept(tmp_path, tiny_checkpoint):
    out = tmp_path / "runs"
    run_dir = ok(run_cli(["--model", str(tiny_checkpoint), "--families", "tomorrow", "--analyses", "behaviour"], out))
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    live = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        host = files._host()  # temporaries name their machine: only this machine's dead writers are known dead
        stale = run_dir / "tiny-gpt20" / "tomorrow" / f".logit_diff.{int(dead.stdout)}.{host}abcd1234.tmp"
        stale_file = run_dir / f".manifest.json.{int(dead.stdout)}.{host}00ff00ff.tmp"
        busy = run_dir / "tiny-gpt20" / "tomorrow" / f".dla_layers.{live.pid}.{host}abcd1234.tmp"
        for folder in (stale, busy):
            folder.mkdir()
            (folder / "summary.json").write_text("{")
        stale_file.write_text("{")
        ok(run_cli(["--model", str(tiny_checkpoint), "--families", "tomorrow", "--analyses", "behaviour"], out))
        assert not stale.exists() and not stale_file.exists()
        assert busy.is_dir()
    finally:
        live.kill()
        live.wait()


@pytest.mark.slow  # five runs, four in fresh processes
def test_runs_killed_at_random_points_resume_to_byte_identical_results(tmp_path, tiny_checkpoint):
    """Property: kill -9 anywhere while computing, then --resume, gives the uninterrupted run's summaries."""
    args = ("--model", tiny_checkpoint, "--families", "tomorrow,day_after", "--analyses", FEW)
    reference = ok(CliRunner().invoke(main, ["run", *map(str, args), "--out", str(tmp_path / "ref"),
                                            "--device", "cpu"]))
    out = tmp_path / "killed"
    rng = random.Random(9)
    for attempt in range(3):
        proc = subprocess.Popen(_cli(*args, "--out", out, *(["--resume"] if attempt else [])), cwd=ROOT, env=_env(),
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        _wait_for_manifest(proc, out)
        time.sleep(rng.uniform(0.0, 1.5))
        proc.kill()
        proc.wait()
    finished = subprocess.run(_cli("--out", out, "--resume"), cwd=ROOT, env=_env(), capture_output=True, text=True)
    assert finished.returncode == 0, finished.stderr
    (run_dir,) = out.iterdir()
    assert manifest(run_dir)["status"] == "complete"
    assert summaries(run_dir) == summaries(reference)
    assert not [p for p in run_dir.rglob(".*.tmp")], "no temporaries left"
