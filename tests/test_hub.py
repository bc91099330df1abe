"""A hub id when the hub cannot be reached: one clear line at once if the model is not cached (no retry loop), the
cached snapshot if it is. The hub is made unreachable by pointing HF_ENDPOINT at a closed loopback port, or at a
server that hangs up on every connection and counts them; HF_HUB_OFFLINE is unset."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import threading
from pathlib import Path

import pytest
from conftest import invoke, save_tiny_gpt2

pytestmark = pytest.mark.tiny  # tests here build tiny or planted checkpoints in the session (no-model tier: not these)

ROOT = Path(__file__).resolve().parents[1]
COMMIT = "0123456789abcdef0123456789abcdef01234567"


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]  # closed when the block ends: connecting to it is refused


def hub_env(tmp_path: Path, endpoint: str) -> dict:
    env = {k: v for k, v in os.environ.items() if k not in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE")}
    env.update(HF_ENDPOINT=endpoint, HF_HOME=str(tmp_path / "hf-home"), PYTHONPATH=str(ROOT))  # an empty cache
    return env


def run_gpt2(tmp_path: Path, endpoint: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "report.cli", "run", "--model", "gpt2", "--families", "tomorrow",
                           "--out", str(tmp_path / "runs"), "--device", "cpu"], env=hub_env(tmp_path, endpoint),
                          cwd=ROOT, capture_output=True, text=True, timeout=300)


def assert_one_clear_line(done: subprocess.CompletedProcess, tmp_path: Path) -> None:
    assert done.returncode == 2, done.stderr
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    assert lines == [lines[-1]] and lines[0].startswith("error: cannot load model 'gpt2'"), done.stderr
    assert "cannot be reached and it is not in the local cache" in lines[0] and "gemma-3-270m" in lines[0]
    assert "Retry" not in done.stderr and "Traceback" not in done.stderr
    assert not (tmp_path / "runs").exists() or not any((tmp_path / "runs").iterdir())


def test_uncached_hub_model_with_the_hub_refusing_fails_with_one_line(tmp_path):
    assert_one_clear_line(run_gpt2(tmp_path, f"http://127.0.0.1:{closed_port()}"), tmp_path)


class HangUp(threading.Thread):
    """A loopback server that accepts each connection and closes it at once, counting them."""

    def __init__(self):
        super().__init__(daemon=True)
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(16)
        self.sock.settimeout(0.2)
        self.connections = 0
        self.stopped = threading.Event()

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.sock.getsockname()[1]}"

    def run(self):
        while not self.stopped.is_set():
            try:
                conn, _ = self.sock.accept()
            except TimeoutError:
                continue
            self.connections += 1
            conn.close()


def test_unreachable_hub_is_asked_once_not_in_a_retry_loop(tmp_path):
    """huggingface_hub alone retries a failed request 5 times with back-off (about 25 s); the probe asks once."""
    server = HangUp()
    server.start()
    try:
        done = run_gpt2(tmp_path, server.endpoint)
    finally:
        server.stopped.set()
        server.join()
        server.sock.close()
    assert_one_clear_line(done, tmp_path)
    assert 1 <= server.connections <= 2, server.connections  # the probe (checking, then at most loading)


def fake_hub_cache(cache: Path, repo_id: str, checkpoint: Path) -> Path:
    """The layout huggingface_hub keeps: models--org--name/{refs/main, snapshots/<commit>/<files>}."""
    repo = cache / ("models--" + repo_id.replace("/", "--"))
    snapshot = repo / "snapshots" / COMMIT
    shutil.copytree(checkpoint, snapshot)
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text(COMMIT)
    return snapshot


def test_cached_hub_model_loads_from_its_snapshot_when_the_hub_is_unreachable(tmp_path, monkeypatch):
    from huggingface_hub import constants

    checkpoint = save_tiny_gpt2(tmp_path / "tiny")
    fake_hub_cache(tmp_path / "hub", "tiny-gpt2-cached", checkpoint)
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(constants, "ENDPOINT", f"http://127.0.0.1:{closed_port()}")
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    invoke("run", "--model", "tiny-gpt2-cached", "--families", "tomorrow", "--analyses", "behaviour",
           "--out", tmp_path / "runs", "--device", "cpu", "--run-id", "cached")
    manifest = json.loads((tmp_path / "runs" / "cached" / "manifest.json").read_text())
    (entry,) = manifest["models"].values()
    assert entry["name"] == "tiny-gpt2-cached" and entry["revision"] == COMMIT
    assert manifest["models_requested"] == ["tiny-gpt2-cached"]
    assert entry["analyses"]["tomorrow/behaviour"]["status"] == "complete"


@pytest.mark.parametrize("model", ["gpt2"])
def test_default_model_is_the_bundled_one(model):
    from click.testing import CliRunner

    from report.cli import main
    from report.run.options import RunOptions

    assert RunOptions().models == ["gemma-3-270m"]
    help_text = CliRunner().invoke(main, ["run", "--help"]).output
    assert "default: gemma-3-270m" in help_text and model in help_text
