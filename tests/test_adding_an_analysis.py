"""Adding an analysis is one module and one registry line: the worked example of docs/development.md ("Adding an
analysis"), executed as written, registered by one line, run on the tiny checkpoint and built into a page whose
overview shows its declared headline; and a summary that breaks its own type stops `run`, naming the analysis."""

from __future__ import annotations

import dataclasses
import json
import re
import sys
import types
from pathlib import Path

import pytest
from conftest import invoke

import analyses
from analyses.common.text import signed

pytestmark = pytest.mark.tiny

DOC = Path(__file__).parent.parent / "docs" / "development.md"


def example_module(monkeypatch) -> types.ModuleType:
    """The first python block under "## Adding an analysis", as the module `analyses.final_margin`."""
    section = DOC.read_text(encoding="utf-8").split("## Adding an analysis", 1)[1].split("\n## ", 1)[0]
    code = re.search(r"```python\n(.*?)```", section, re.DOTALL).group(1)
    module = types.ModuleType("analyses.final_margin")
    monkeypatch.setitem(sys.modules, module.__name__, module)  # its TypedDict's annotations resolve here
    exec(compile(code, str(DOC), "exec"), module.__dict__)
    return module


def register(monkeypatch, analysis) -> None:
    """The registry line: `analysis` appended to analyses.REGISTRY, seen by every module that imported it."""
    # Every module that binds REGISTRY or BY_NAME when first imported is imported before patching: one imported
    # inside the patch window would keep this test's registry after the undo, and a later test would run it.
    import report.cli
    import report.publish.headlines
    import report.publish.render
    import report.publish.sections
    import report.run.options
    import report.run.pipeline  # noqa: F401

    old_registry, old_by_name = analyses.REGISTRY, analyses.BY_NAME
    registry, by_name = (*old_registry, analysis), {**old_by_name, analysis.name: analysis}
    patched = 0
    for module in list(sys.modules.values()):
        if getattr(module, "REGISTRY", None) is old_registry:
            monkeypatch.setattr(module, "REGISTRY", registry)
            patched += 1
        if getattr(module, "BY_NAME", None) is old_by_name:
            monkeypatch.setattr(module, "BY_NAME", by_name)
    assert patched >= 4  # analyses itself, the pipeline, the renderer and its headline columns at least


def run_toy(tiny_checkpoint, out: Path) -> Path:
    invoke("run", "--model", tiny_checkpoint, "--families", "tomorrow", "--analyses", "behaviour,final_margin",
           "--out", out, "--device", "cpu", "--run-id", "toy")
    return out / "toy"


@pytest.mark.slow
def test_a_registered_analysis_shows_its_headline_in_the_overview(monkeypatch, tiny_checkpoint, tmp_path):
    toy = example_module(monkeypatch).FINAL_MARGIN
    register(monkeypatch, toy)
    run = run_toy(tiny_checkpoint, tmp_path / "runs")
    summary = json.loads((run / "tiny-gpt20" / "tomorrow" / "final_margin" / "summary.json").read_text())
    assert set(summary) == {"family", "n_prompts", "margin_mean", "margin_positive_frac"}
    invoke("build", run, "--site", tmp_path / "site")
    index = (tmp_path / "site" / "index.html").read_text(encoding="utf-8")
    overview = index.split('<table class="overview">', 1)[1].split("</table>", 1)[0]
    header, row = overview.split("</tr>", 2)[:2]
    assert '<th title="logits">mean margin over the other items</th>' in header
    assert f'<td class="num">{signed(summary["margin_mean"])}</td>' in row
    page = (tmp_path / "site" / "tiny-gpt20" / "tomorrow.html").read_text(encoding="utf-8")
    assert 'id="final_margin"' in page and "The correct item leads the other items by" in page


@pytest.mark.slow
def test_without_the_registry_line_the_overview_has_no_such_column(tiny_checkpoint, tmp_path):
    invoke("run", "--model", tiny_checkpoint, "--families", "tomorrow", "--analyses", "behaviour",
           "--out", tmp_path / "runs", "--device", "cpu", "--run-id", "plain")
    invoke("build", tmp_path / "runs" / "plain", "--site", tmp_path / "site")
    index = (tmp_path / "site" / "index.html").read_text(encoding="utf-8")
    assert "mean margin over the other items" not in index and "accuracy among the items</th>" in index


def test_a_summary_that_breaks_its_type_stops_run_naming_the_analysis(monkeypatch, tiny_checkpoint, tmp_path):
    toy = example_module(monkeypatch).FINAL_MARGIN

    def misspelt(model, prompts):
        result = toy.compute(model, prompts)
        result.summary["margin_means"] = result.summary.pop("margin_mean")  # the bug: a key its type lacks
        return result

    register(monkeypatch, dataclasses.replace(toy, compute=misspelt))
    from click.testing import CliRunner

    from report.cli import main

    out = tmp_path / "runs"
    result = CliRunner().invoke(main, ["run", "--model", str(tiny_checkpoint), "--families", "tomorrow",
                                       "--analyses", "behaviour,final_margin", "--out", str(out), "--device", "cpu",
                                       "--run-id", "toy"])
    assert result.exit_code == 70, result.output  # a bug, not bad input: the traceback and a request to report it
    message = result.output
    assert "analysis 'final_margin' computed a summary that its type FinalMarginSummary does not allow" in message
    assert "'margin_mean' is a required property" in message and "'margin_means' was unexpected" in message
    assert not (out / "toy" / "tiny-gpt20" / "tomorrow" / "final_margin").exists()
