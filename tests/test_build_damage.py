"""`build` tells damaged results from bugs: a file that cannot be read, or an array the analysis draws that is not
in the arrays file, is a missing section and one warning line; an exception raised by a figure or a narrative on
a result that loaded is a bug, with its traceback, never reported as a damaged file."""

from __future__ import annotations

import dataclasses
import shutil

import pytest
from click.testing import CliRunner
from publish_util import restamp
from safetensors.numpy import load_file, save_file

from analyses import REGISTRY
from report.cli import main
from report.publish import sections


def build(run, site):
    return CliRunner().invoke(main, ["build", str(run), "--site", str(site)])


@pytest.mark.parametrize("error", [KeyError("top_component_of_an_older_format"), ValueError("planted bug")],
                         ids=["KeyError", "ValueError"])
@pytest.mark.slow
def test_a_narrative_that_raises_is_a_bug_with_its_traceback_not_a_damaged_file(small_run, tmp_path, monkeypatch,
                                                                                  error):
    def broken(result):
        raise error

    position = next(i for i, a in enumerate(REGISTRY) if a.name == "dla_layers")
    registry = list(REGISTRY)
    registry[position] = dataclasses.replace(REGISTRY[position], narrative=broken)
    monkeypatch.setattr(sections, "REGISTRY", tuple(registry))
    run = shutil.copytree(small_run, tmp_path / "run")
    result = build(run, tmp_path / "site")
    assert result.exit_code == 70, result.output
    assert "Traceback" in result.output and f"{type(error).__name__}: {error}" in result.output
    assert "while drawing the figures and narrative of analysis 'dla_layers'" in result.output  # names the culprit
    assert result.output.strip().splitlines()[-1].startswith("error: this is a bug")
    assert "warning:" not in result.output and "arrays.safetensors" not in result.output


def test_an_array_missing_from_the_arrays_file_is_damage_named_in_one_line(small_run, tmp_path):
    run = shutil.copytree(small_run, tmp_path / "run")
    arrays_file = run / "tiny-gpt20" / "tomorrow" / "dla_layers" / "arrays.safetensors"
    arrays = load_file(str(arrays_file))
    dropped = sorted(arrays)[0]
    save_file({k: v for k, v in arrays.items() if k != dropped}, str(arrays_file))
    restamp(run)  # a file the run wrote so (checksums recorded): the missing array itself is the damage tested
    result = build(run, tmp_path / "site")
    assert result.exit_code == 0, result.output
    warnings = [line for line in result.output.splitlines() if line.startswith("warning:")]
    assert len(warnings) == 1 and "dla_layers/arrays.safetensors" in warnings[0] and repr(dropped) in warnings[0]
    html = (tmp_path / "site" / "tiny-gpt20" / "tomorrow.html").read_text(encoding="utf-8")
    section = html.split('<section id="dla_layers"', 1)[1].split("</section>", 1)[0]
    assert "This section is missing" in section and "arrays.safetensors" in section
    drawn = html.split('<section id="logit_diff"', 1)[1].split("</section>", 1)[0]
    assert "missing" not in drawn and 'class="plotly-graph-div"' in drawn  # the undamaged neighbour is drawn
