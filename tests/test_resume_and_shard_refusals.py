"""Resume and shards refuse what would mislabel results; temporaries belong to their writer; inputs built as
resource bombs are refused with a stated limit; `behaviour` batches its prompts."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner
from test_cli_errors import assert_user_error, run_cli

from report.cli import main
from report.run import families, families_file
from report.store import files


def manifest(run_dir: Path) -> dict:
    return json.loads((run_dir / "manifest.json").read_text())


@pytest.mark.slow
def test_resume_in_another_dtype_is_refused_and_forced_recomputes_everything(tmp_path, tiny_checkpoint):
    out = tmp_path / "runs"
    args = ["--model", str(tiny_checkpoint), "--families", "tomorrow", "--analyses", "behaviour,logit_diff"]
    assert run_cli([*args, "--run-id", "R", "--dtype", "float32"], out).exit_code == 0
    before = manifest(out / "R")
    result = run_cli(["--resume", "--run-id", "R", "--dtype", "bfloat16"], out)
    assert result.exit_code == 1 and "--dtype float32 -> bfloat16" in result.output
    assert "--force-resume" in result.output
    assert manifest(out / "R") == before  # nothing changed, nothing mislabelled
    assert run_cli(["--resume", "--run-id", "R"], out).exit_code == 0  # no --dtype: the run's own
    assert manifest(out / "R")["models"]["tiny-gpt20"]["dtype"] == "float32"
    forced = run_cli(["--resume", "--run-id", "R", "--dtype", "bfloat16", "--force-resume"], out)
    assert forced.exit_code == 0, forced.output
    after = manifest(out / "R")
    model = after["models"]["tiny-gpt20"]
    assert model["dtype"] == "bfloat16" and after["dtype_requested"] == "bfloat16"
    old_files = before["models"]["tiny-gpt20"]["analyses"]
    assert sorted(model["analyses"]) == sorted(old_files)
    for key, entry in model["analyses"].items():  # every result recomputed in bfloat16, none kept from float32
        assert entry["files"]["summary.json"] != old_files[key]["files"]["summary.json"], key


def test_resume_of_a_shard_needs_the_run_id(tmp_path, tiny_checkpoint):
    out = tmp_path / "runs"
    result = run_cli(["--model", str(tiny_checkpoint), "--resume", "--shard", "1/2"], out)
    assert_user_error(result, out, "--resume --shard 1/2 needs --run-id", "-shard1of2")


def test_a_shard_with_no_work_is_refused_and_writes_nothing(tmp_path, tiny_checkpoint):
    out = tmp_path / "runs"
    result = run_cli(["--model", str(tiny_checkpoint), "--families", "tomorrow,day_after", "--shard", "1/3",
                      "--analyses", "behaviour"], out)  # 2 pairs cut into 3 blocks: the first is empty
    assert_user_error(result, out, "--shard 1/3", "no work", "at most 2 shards")


def _temp(folder: Path, final: str, pid: int, host: str) -> Path:
    path = folder / f".{final}.{pid}.{host}abcd1234.tmp"
    path.mkdir()
    (path / "summary.json").write_text("{")
    return path


def _age(path: Path, seconds: float) -> None:
    old = time.time() - seconds
    for p in [path, *path.rglob("*")]:
        os.utime(p, (old, old))


def test_temporaries_are_removed_only_when_unlocked_and_stale(tmp_path):
    dead = int(subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True,
                              text=True).stdout)
    here, elsewhere = files._host(), "0badc0de" if files._host() != "0badc0de" else "1badc0de"
    dead_here = _temp(tmp_path, "a", dead, here)  # a killed run of this machine: removed now
    young_elsewhere = _temp(tmp_path, "b", dead, elsewhere)  # a shard on another machine, pid invisible: kept
    old_elsewhere = _temp(tmp_path, "c", dead, elsewhere)
    _age(old_elsewhere, files.STALE_AFTER_S + 60)  # untouched for over an hour: a dead writer's
    locked_old = _temp(tmp_path, "d", dead, elsewhere)
    _age(locked_old, files.STALE_AFTER_S + 60)
    holder = subprocess.Popen([sys.executable, "-c", "import fcntl, os, sys, time; fd = os.open(sys.argv[1], "
                               "os.O_RDONLY); fcntl.flock(fd, fcntl.LOCK_EX); print('locked', flush=True); "
                               "time.sleep(60)", str(locked_old)], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        removed = files.clean_stale_temps(tmp_path)
        assert sorted(p.name for p in removed) == sorted([dead_here.name, old_elsewhere.name])
        assert young_elsewhere.is_dir() and locked_old.is_dir()
    finally:
        holder.kill()
        holder.wait()
    assert files.clean_stale_temps(tmp_path) == [locked_old]  # its writer gone and the lock released


def test_a_live_writers_temporary_holds_its_lock(tmp_path):
    with files.temp_dir(tmp_path, "result") as tmp:
        assert files._locked(tmp)
        _age(tmp, files.STALE_AFTER_S + 60)
        child = subprocess.run([sys.executable, "-c", "import sys; from pathlib import Path; from report.store import "
                                "files; print(files.clean_stale_temps(Path(sys.argv[1])))", str(tmp_path)],
                               capture_output=True, text=True, env={**os.environ, "PYTHONPATH": os.getcwd()})
        assert child.stdout.strip() == "[]", child.stderr
        assert tmp.is_dir()
    assert not tmp.exists()


@pytest.mark.parametrize("depth", [3000, 5000])
def test_deeply_nested_families_files_are_refused_with_the_limit(tmp_path, tiny_checkpoint, depth):
    path = tmp_path / "deep.toml"
    path.write_text("[a]\nx = " + "[" * depth + "]" * depth + "\n")
    out = tmp_path / "runs"
    assert_user_error(run_cli(["--model", str(tiny_checkpoint), "--families-file", str(path)], out), out,
                      "deep.toml", f"more than {families_file.MAX_DEPTH} levels")


def test_a_shallow_nesting_over_the_limit_is_refused_too(tmp_path):
    path = tmp_path / "nested.toml"
    path.write_text('[a]\ntemplate = "Today it is {day} so"\nanswer_offset = 1\nx = [[[[[[[[[1]]]]]]]]]\n')
    with pytest.raises(families.FamilyError, match="more than 8 levels"):
        families_file.load_family_specs(path)


@pytest.mark.parametrize("text, limit", [
    ("[big]\nanswer_offset = 1\ntemplates = [" + ",".join(f'"T{i} {{day}} so"' for i in range(10000)) + "]\n",
     "at most 64 per family"),
    ("[sequences]\nlong = [" + ",".join(f'"w{i}"' for i in range(101)) + ']\n[f]\ntemplate = "{item} x"\n'
     'answer_offset = 1\nsequence = "long"\n', "at most 100"),
    ("[sequences]\nlong = [" + ",".join(f'"w{i}"' for i in range(100)) + ']\n[f]\ntemplates = ['
     + ",".join(f'"T{i} {{item}} x"' for i in range(11)) + ']\nanswer_offset = 1\nsequence = "long"\n',
     "1100 prompts; at most 1024"),
    ("".join(f'[f{i}]\ntemplate = "{{day}} x"\nanswer_offset = 1\n' for i in range(201)), "at most 200"),
])
def test_resource_bombs_are_refused_with_a_stated_limit(tmp_path, tiny_checkpoint, text, limit):
    path = tmp_path / "bomb.toml"
    path.write_text(text)
    out = tmp_path / "runs"
    assert_user_error(run_cli(["--model", str(tiny_checkpoint), "--families-file", str(path)], out), out, limit)


def test_the_shipped_families_are_within_the_limits():
    specs = families_file.load_family_specs()
    assert 0 < len(specs) <= families_file.MAX_FAMILIES
    assert max(len(s.templates) * len(s.items) for s in specs.values()) <= families_file.MAX_PROMPTS


def test_behaviour_batched_equals_one_batch(tiny_model, tiny_prompt_sets, monkeypatch):
    from analyses import behaviour

    prompts = tiny_prompt_sets["tomorrow"]
    assert prompts.n_prompts > 3
    monkeypatch.setattr(behaviour, "BATCH", prompts.n_prompts)
    whole = behaviour.final_position_logits(tiny_model, prompts)
    monkeypatch.setattr(behaviour, "BATCH", 3)  # batches of 3, 3, ..., and a remainder
    batched = behaviour.final_position_logits(tiny_model, prompts)
    assert batched.shape == whole.shape == (prompts.n_prompts, tiny_model.cfg.d_vocab)
    torch.testing.assert_close(batched, whole, rtol=1e-5, atol=1e-5)
    calls = []
    monkeypatch.setattr(type(tiny_model), "forward", lambda self, tokens, *a, **k: calls.append(len(tokens))
                        or torch.zeros(len(tokens), tokens.shape[1], 5))
    behaviour.final_position_logits(tiny_model, prompts)
    assert max(calls) <= 3 and sum(calls) == prompts.n_prompts


def test_a_relation_twin_identical_to_its_template_is_refused(tmp_path):
    path = tmp_path / "twin.toml"
    path.write_text('[t]\ntemplate = "Today it is {day} so"\nanswer_offset = 1\n'
                    'relation_templates = ["Today it is {day+0} so"]\nrelation_answer_offset = 2\n')
    with pytest.raises(families.FamilyError, match="gives the same prompts as its template"):
        families_file.load_family_specs(path)


def test_terminal_escapes_never_reach_the_terminal(tmp_path):
    path = tmp_path / "ansi.toml"
    path.write_text('[t]\ntemplate = "Today it is {day} so"\nanswer_offset = 1\ndescription = "\\u001b[2J red"\n')
    result = CliRunner().invoke(main, ["list", "families", "--families-file", str(path)])
    assert result.exit_code == 1 and "\x1b" not in result.output and "control character" in result.output
    result = CliRunner().invoke(main, ["build", str(tmp_path / "no-such-\x1b[2Jrun"), "--site", str(tmp_path / "s")])
    assert result.exit_code == 1 and "\x1b" not in result.output and "no-such-?[2Jrun" in result.output
