"""A regular (not editable) install can build the report: the templates ship inside the wheel.

The wheel is built from a copy of the source tree, installed with --no-deps into a fresh virtual environment
that sees this environment's site-packages for the heavy dependencies (torch is not installed twice), and
`weekday-circuits build` runs from another working directory with nothing of the source tree on the path.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SKIP = shutil.ignore_patterns(".git", ".venv", "build", "dist", "*.egg-info", "site", "runs", "test-output",
                              "__pycache__", ".pytest_cache", ".ruff_cache", "shared")


def run(*args, cwd: Path) -> subprocess.CompletedProcess:
    # nothing of the source tree on the path (the tests run with PYTHONPATH at the worktree; pip would take
    # what it finds there for an installed weekday-circuits and skip the wheel)
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    done = subprocess.run([str(a) for a in args], cwd=cwd, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, f"{args}\n{done.stdout}\n{done.stderr}"
    return done


@pytest.mark.slow
def test_a_wheel_installed_elsewhere_builds_the_report(golden_run, tmp_path):
    run_dir = golden_run
    source = tmp_path / "source"
    shutil.copytree(ROOT, source, ignore=SKIP)
    run(sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "--no-index", "-w",
        tmp_path / "dist", source, cwd=tmp_path)
    (wheel,) = (tmp_path / "dist").glob("weekday_circuits-*.whl")

    venv = tmp_path / "venv"
    run(sys.executable, "-m", "venv", "--without-pip", venv, cwd=tmp_path)
    python = venv / "bin" / "python"
    run(sys.executable, "-m", "pip", "--python", python, "install", "--no-deps", "--no-index", wheel, cwd=tmp_path)
    purelib = Path(run(python, "-c", "import sysconfig; print(sysconfig.get_path('purelib'))",
                       cwd=tmp_path).stdout.strip())
    # then the heavy dependencies from this environment (after the install, so that pip does not take this
    # environment's editable install for the wheel): a path in a .pth file comes after the venv's own
    # site-packages, and the .pth files in it are not read, so the editable install stays out of sight
    (purelib / "shared-deps.pth").write_text(sysconfig.get_path("purelib") + "\n")

    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    located = run(python, "-c", "import report, report.publish.render; print(report.__file__)", cwd=elsewhere)
    assert Path(located.stdout.strip()).is_relative_to(purelib), located.stdout
    run(venv / "bin" / "weekday-circuits", "build", run_dir, "--site", "published", cwd=elsewhere)
    site = elsewhere / "published"
    pages = sorted(p.relative_to(site).as_posix() for p in site.rglob("*.html"))
    assert "index.html" in pages and len(pages) > 1, pages
    html = (site / pages[-1]).read_text(encoding="utf-8")
    assert 'class="plotly-graph-div"' in html and "Plotly.newPlot" in html
