"""Bad input through the CLI: one clear line naming the culprit, a non-zero exit, no traceback, no results."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner
from conftest import save_tiny_gpt2

from report.cli import main

pytestmark = pytest.mark.tiny  # tests here build tiny or planted checkpoints in the session (no-model tier: not these)


@pytest.fixture(scope="module")
def wednesday_split_checkpoint(tmp_path_factory):
    """A tiny model whose tokenizer spells ' Wednesday' in two tokens."""
    return save_tiny_gpt2(tmp_path_factory.mktemp("split-wednesday"), split_words=(" Wednesday",))


def run_cli(args, out):
    result = CliRunner().invoke(main, ["run", "--out", str(out), "--device", "cpu", *args])
    return result


def assert_user_error(result, out, *fragments, code=None):
    assert result.exit_code != 0
    if code is not None:
        assert result.exit_code == code
    assert isinstance(result.exception, SystemExit)  # handled: no traceback
    assert "Traceback" not in result.output
    assert result.output.startswith("error: ") and result.output.count("\n") == 1
    for fragment in fragments:
        assert fragment in result.output
    assert not out.exists() or not any(out.iterdir()), "a failed run must leave no results"


def test_unknown_family(tmp_path, tiny_checkpoint):
    out = tmp_path / "runs"
    result = run_cli(["--model", str(tiny_checkpoint), "--families", "tomorrow,fortnight"], out)
    assert_user_error(result, out, "unknown family 'fortnight'")


def test_unknown_analysis(tmp_path, tiny_checkpoint):
    out = tmp_path / "runs"
    result = run_cli(["--model", str(tiny_checkpoint), "--analyses", "behaviour,astrology"], out)
    assert_user_error(result, out, "unknown analysis 'astrology'")


@pytest.mark.tiny  # builds a tiny checkpoint
def test_answer_that_is_not_one_token(tmp_path, wednesday_split_checkpoint):
    out = tmp_path / "runs"
    result = run_cli(["--model", str(wednesday_split_checkpoint), "--families", "tomorrow"], out)
    assert_user_error(result, out, "family 'tomorrow'", "' Wednesday' is 2 tokens")


def test_prompts_of_unequal_token_length(tmp_path, tiny_checkpoint):
    families = tmp_path / "mine.toml"
    families.write_text('[plural]\ntemplate = "Today it is {day}s so tomorrow it is"\nanswer_offset = 1\n')
    out = tmp_path / "runs"
    result = run_cli(["--model", str(tiny_checkpoint), "--families-file", str(families)], out)
    assert_user_error(result, out, "family 'plural'", "same token length")


def test_malformed_toml(tmp_path, tiny_checkpoint):
    families = tmp_path / "broken.toml"
    families.write_text("[plural\ntemplate = ")
    out = tmp_path / "runs"
    result = run_cli(["--model", str(tiny_checkpoint), "--families-file", str(families)], out)
    assert_user_error(result, out, "broken.toml", "not valid TOML")


def test_missing_model_folder(tmp_path):
    out = tmp_path / "runs"
    result = run_cli(["--model", str(tmp_path / "no-such-model")], out)
    assert_user_error(result, out, "no-such-model", "not found", code=2)


def test_unreachable_hub_says_how_to_run_offline(tmp_path, monkeypatch):
    # What a machine without network sees, without waiting for the hub client's retries.
    monkeypatch.setattr("huggingface_hub.constants.HF_HUB_OFFLINE", True)
    monkeypatch.setenv("HF_HOME", str(tmp_path / "empty-hf-cache"))
    out = tmp_path / "runs"
    result = run_cli(["--model", "gpt2-small"], out)
    assert_user_error(result, out, "'gpt2-small'", "hub cannot be reached", "local checkpoint folder",
                      "gemma-3-270m", code=2)


def test_resume_without_a_run(tmp_path, tiny_checkpoint):
    out = tmp_path / "runs"
    result = run_cli(["--model", str(tiny_checkpoint), "--resume"], out)
    assert_user_error(result, out, "no run to resume")


def test_build_of_a_folder_that_is_not_a_run(tmp_path):
    site = tmp_path / "site"
    result = CliRunner().invoke(main, ["build", str(tmp_path), "--site", str(site)])
    assert_user_error(result, site, "not a run folder")


def test_every_option_has_help():
    for command in ("run", "build", "report", "list"):
        result = CliRunner().invoke(main, [command, "--help"])
        assert result.exit_code == 0
    assert "--families-file" in CliRunner().invoke(main, ["run", "--help"]).output


def test_list_shows_families_analyses_and_models_with_size_and_network():
    from analyses import REGISTRY

    families = CliRunner().invoke(main, ["list", "families"]).output
    assert "yesterday_tomorrow" in families and "day+2" in families
    analyses = CliRunner().invoke(main, ["list", "analyses"]).output
    assert all(a.name in analyses for a in REGISTRY)
    models = CliRunner().invoke(main, ["list", "models"]).output.splitlines()
    gpt2 = next(line for line in models if line.startswith("gpt2 "))
    gemma = next(line for line in models if line.startswith("gemma-3-270m"))
    assert "124M" in gpt2 and "needs the network" in gpt2
    assert "270M" in gemma and "offline" in gemma


# --- the error boundary: OS and library errors, bugs, unwritable folders, odd families files ------------------


def test_out_under_a_regular_file_is_refused_before_computing(tmp_path, tiny_checkpoint):
    (tmp_path / "plain-file").write_text("not a folder")
    out = tmp_path / "plain-file" / "runs"
    result = run_cli(["--model", str(tiny_checkpoint)], out)
    assert_user_error(result, tmp_path / "nowhere", "--out", "plain-file is a file, not a folder")
    assert "loading" not in result.output


def test_overlong_site_name_is_refused_before_computing(tmp_path, tiny_checkpoint):
    out, site = tmp_path / "runs", tmp_path / ("s" * 300)
    result = CliRunner().invoke(main, ["report", "--model", str(tiny_checkpoint), "--out", str(out),
                                       "--site", str(site), "--device", "cpu"])
    assert_user_error(result, out, "--site", "longer than 255 bytes")


@pytest.fixture
def tmpfs(tmp_path):
    """A small file system mounted for the test (root with mount rights only; skipped elsewhere)."""
    import subprocess

    mounted = []

    def mount(options: str):
        folder = tmp_path / f"mnt{len(mounted)}"
        folder.mkdir()
        if subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(folder)],
                          capture_output=True).returncode != 0:
            pytest.skip("cannot mount a tmpfs here (needs root with mount rights)")
        mounted.append(folder)
        return folder

    yield mount
    for folder in mounted:
        subprocess.run(["umount", str(folder)], check=False)


def test_read_only_out_is_refused_before_computing(tmp_path, tiny_checkpoint, tmpfs):
    out = tmpfs("size=1m,ro") / "runs"
    result = run_cli(["--model", str(tiny_checkpoint)], out)
    assert_user_error(result, tmp_path / "nowhere", "--out", "cannot write in", "Read-only file system")


def test_disk_full_while_saving_is_one_line_and_leaves_no_partial_result(tmp_path, tiny_checkpoint, tmpfs):
    out = tmpfs("size=24k") / "runs"
    result = run_cli(["--model", str(tiny_checkpoint), "--families", "tomorrow,day_after",
                      "--analyses", "behaviour,dla_layers,dla_heads"], out)
    assert result.exit_code == 1 and isinstance(result.exception, SystemExit), result.output
    last = result.output.strip().splitlines()[-1]
    assert last.startswith("error: no space left on the device") and "Traceback" not in result.output
    assert not list(out.rglob(".*.tmp")), "no partial temporary left behind"
    for summary in out.rglob("summary.json"):  # whatever was published is whole
        json.loads(summary.read_text())


def test_a_bug_keeps_its_traceback_and_asks_for_a_report(tmp_path, tiny_checkpoint, monkeypatch):
    def broken(folder, result, *args):
        raise ZeroDivisionError("planted bug")

    monkeypatch.setattr("report.store.results.save_result", broken)
    result = run_cli(["--model", str(tiny_checkpoint), "--families", "tomorrow", "--analyses", "behaviour"],
                     tmp_path / "runs")
    assert result.exit_code == 70
    assert "Traceback" in result.output and "ZeroDivisionError: planted bug" in result.output
    assert result.output.strip().splitlines()[-1].startswith("error: this is a bug") and "report" in result.output


def test_a_library_that_cannot_be_imported_is_one_line(tmp_path, tiny_checkpoint, monkeypatch):
    monkeypatch.setitem(sys.modules, "transformers", None)  # what a broken install looks like to `import`
    out = tmp_path / "runs"
    assert_user_error(run_cli(["--model", str(tiny_checkpoint)], out), out, "a library cannot be loaded",
                      "transformers")


def test_families_file_with_a_bom_is_read(tmp_path):
    families = tmp_path / "bom.toml"
    text = '[bom]\ntemplate = "Today it is {day} so tomorrow it is"\nanswer_offset = 1\n'
    families.write_bytes(b"\xef\xbb\xbf" + text.encode())
    result = CliRunner().invoke(main, ["list", "families", "--families-file", str(families)])
    assert result.exit_code == 0 and result.output.startswith("bom "), result.output


@pytest.mark.parametrize("kind", ["folder", "/dev/zero"])
def test_families_file_that_is_not_a_regular_file_is_refused(tmp_path, kind):
    path = tmp_path if kind == "folder" else Path(kind)
    result = CliRunner().invoke(main, ["list", "families", "--families-file", str(path)])
    assert_user_error(result, tmp_path / "nowhere", str(path), "is a folder" if kind == "folder" else "not a regular")
