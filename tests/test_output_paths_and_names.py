"""Outputs never land on inputs: no site, single file or PDF on, inside or around a run folder, `--force` never
replaces a folder no build wrote nor follows a link out of the site, and every output check comes before a model
loads. Published names: user text is text in Plotly, same-named model folders are told apart, a path is cut to its
last component, page names are valid on Windows."""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

import golden
import pytest
from conftest import invoke, save_tiny_gpt2
from publish_util import copy_run, fails

from report.publish import names, render

pytestmark = pytest.mark.tiny  # tests here build tiny or planted checkpoints in the session (no-model tier: not these)

SLUG = golden.MODEL  # the golden run's model folder


@pytest.fixture(scope="module")
def one_family(golden_run, tmp_path_factory) -> Path:
    return copy_run(golden_run, tmp_path_factory.mktemp("one") / "run", families=["tomorrow"])


def snapshot(folder: Path) -> dict[str, bytes]:
    found = {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}
    assert found
    return found


@pytest.mark.parametrize("option", ["--single-file", "--pdf"])
def test_a_file_output_on_or_inside_the_run_folder_is_refused(one_family, tmp_path, option):
    run = copy_run(one_family, tmp_path / "run")
    before = snapshot(run)
    for target in (run / "manifest.json", run / "report.html", run / SLUG / "tomorrow" / "x.html", run):
        _, output = fails("build", run, option, target)
        assert output.count("\n") == 1 and "run folder" in output, output
    link = tmp_path / "innocent.html"
    link.symlink_to(run / "manifest.json")  # a link cannot smuggle the output in
    _, output = fails("build", run, option, link)
    assert "run folder" in output
    assert snapshot(run) == before


@pytest.mark.slow
def test_a_site_inside_a_run_folder_is_refused_even_with_force(one_family, tmp_path):
    run = copy_run(one_family, tmp_path / "run")
    before = snapshot(run)
    for site in (run / SLUG, run / SLUG / "tomorrow", run / "site"):
        _, output = fails("build", run, "--site", site, "--force")
        assert output.count("\n") == 1 and "run folder" in output, output
    assert snapshot(run) == before
    invoke("build", run, "--site", tmp_path / "site")  # the control: beside the run it builds


@pytest.mark.slow
def test_force_replaces_only_a_folder_a_build_wrote(one_family, tmp_path):
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "notes.txt").write_text("keep me")
    _, output = fails("build", one_family, "--site", mine, "--force")
    assert "no earlier build wrote it" in output and (mine / "notes.txt").read_text() == "keep me"
    empty = tmp_path / "empty"
    empty.mkdir()
    invoke("build", one_family, "--site", empty)
    (empty / "notes.txt").write_text("added later")
    _, output = fails("build", one_family, "--site", empty)
    assert "--force" in output
    invoke("build", one_family, "--site", empty, "--force")
    assert not (empty / "notes.txt").exists() and (empty / "index.html").is_file()


@pytest.mark.slow
def test_force_never_follows_a_link_out_of_the_site(one_family, tmp_path):
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "precious.txt").write_text("precious")
    secret = tmp_path / "secret.txt"
    secret.write_text("do not publish")
    site = tmp_path / "site"
    invoke("build", one_family, "--site", site)
    (site / "escape").symlink_to(outside, target_is_directory=True)
    _, output = fails("build", one_family, "--site", site)
    assert "escape" in output  # a link is an entry of the site, and not ours
    invoke("build", one_family, "--site", site, "--force")
    assert (outside / "precious.txt").read_text() == "precious" and not (site / "escape").exists()
    (site / ".gitkeep").symlink_to(secret)
    invoke("build", one_family, "--site", site, "--force")
    assert not (site / ".gitkeep").exists()  # the placeholder is carried over only as a file of the site
    assert all("do not publish" not in p.read_text(encoding="utf-8") for p in site.rglob("*") if p.is_file())


def test_site_dot_is_refused_before_anything_is_written(one_family, tmp_path, monkeypatch):
    work = tmp_path / "work"
    work.mkdir()
    (work / "site").mkdir()
    monkeypatch.chdir(work / "site")
    for site in (".", "..", str(work)):
        _, output = fails("build", one_family, "--site", site, "--force")
        assert output.count("\n") == 1 and "the folder you are working in" in output, output
    assert sorted(p.name for p in work.iterdir()) == ["site"]


def test_report_refuses_an_output_around_or_in_its_out_before_any_model_loads(tmp_path, tiny_checkpoint, monkeypatch):
    def no_model(*args, **kwargs):
        raise AssertionError("a model was inspected or loaded before the output check")

    monkeypatch.setattr("report.run.pipeline.inspect_model", no_model)
    monkeypatch.setattr("report.run.pipeline.load_model", no_model)
    site = tmp_path / "S"
    cases = [("--site", site, site / "runs"), ("--site", tmp_path / "runs", tmp_path / "runs"),
             ("--single-file", tmp_path / "runs" / "R" / "x.html", tmp_path / "runs")]
    (tmp_path / "runs" / "R").mkdir(parents=True)
    (tmp_path / "runs" / "R" / "manifest.json").write_text("{}")
    for option, target, out in cases:
        _, output = fails("report", "--model", tiny_checkpoint, "--out", out, option, target, "--device", "cpu",
                          "--analyses", "behaviour")
        assert output.count("\n") == 1 and ("--out" in output or "run folder" in output), output
    assert not site.exists()


def test_user_text_reaches_plotly_as_text_not_markup():
    spec = {"data": [{"x": ['<a href="https://example.com">Monday</a>', "<|endoftext|>"],
                      "text": ["L0H1<br>95% spread", '<span style="color:red">x</span>'],
                      "hovertemplate": "%{text}<br>%{y:.3f}<extra>a & b</extra>"}],
            "layout": {"title": {"text": "<b>Top</b> tokens for 'Tom & Jerry <i style=\"x\">'"}}}
    text = json.dumps(render.as_text(spec))
    for markup in ("<a ", "<span", "<|endoftext|>", '<i style'):
        assert markup not in text, markup
    for own in ("<br>", "<extra>", "</extra>", "<b>", "</b>"):  # our own formatting survives
        assert own in text, own
    assert "&lt;a href" in text and "Tom &amp; Jerry" in text and "&lt;|endoftext|>" in text


@pytest.fixture(scope="module")
def markup_run(tmp_path_factory, tiny_checkpoint) -> Path:
    root = tmp_path_factory.mktemp("markup")
    families = root / "markup.toml"
    families.write_text('[linked]\ntemplate = "<a href=\\"https://evil.example\\">Today</a> it is {day} so tomorrow '
                        'it is"\nanswer_offset = 1\ndescription = "<span style=\\"color:red\\">styled</span>"\n')
    invoke("run", "--model", tiny_checkpoint, "--families-file", families, "--analyses", "behaviour", "--out",
           root / "runs", "--device", "cpu", "--run-id", "m")
    return root / "runs" / "m"


def figure_strings(html: str) -> list[str]:
    found = []

    def walk(value):
        if isinstance(value, str):
            found.append(value)
        elif isinstance(value, list):
            for v in value:
                walk(v)
        elif isinstance(value, dict):
            for v in value.values():
                walk(v)

    for block in re.findall(r'<script type="application/json" id="[^"]*-spec">(.*?)</script>', html, re.S):
        walk(json.loads(block))
    return found


def test_a_template_holding_a_link_is_drawn_as_text_in_every_figure(markup_run, tmp_path):
    invoke("build", markup_run, "--site", tmp_path / "site")
    html = (tmp_path / "site" / "tiny-gpt20" / "linked.html").read_text(encoding="utf-8")
    strings = figure_strings(html)
    assert any("evil.example" in s for s in strings), "the template reaches the figures"
    for s in strings:
        assert "<a " not in s and "<span" not in s, s
    assert '<a href="https://evil.example"' not in html  # nor does the page itself hold a live link


@pytest.mark.slow
@pytest.mark.tiny  # builds its own tiny checkpoints
def test_distinct_models_with_the_same_folder_name_get_distinct_labels(tmp_path):
    first, second = save_tiny_gpt2(tmp_path / "a" / "tiny", seed=0), save_tiny_gpt2(tmp_path / "b" / "tiny", seed=1)
    invoke("report", "--model", first, "--model", second, "--families", "tomorrow", "--analyses", "behaviour",
           "--out", tmp_path / "runs", "--site", tmp_path / "site", "--device", "cpu")
    index = (tmp_path / "site" / "index.html").read_text(encoding="utf-8")
    assert "<td>tiny</td>" in index and "<td>tiny-2</td>" in index
    assert str(tmp_path) not in index


def test_display_names_differ_for_same_named_folders_and_hold_no_path():
    models = {"tiny": {"name": "/home/jane/a/tiny", "resolved": "/home/jane/a/tiny"},
              "tiny-2": {"name": "/home/jane/b/tiny", "resolved": "/home/jane/b/tiny"},
              "gpt2": {"name": "gpt2", "resolved": "gpt2"}}
    labels = names.display_names(models)
    assert labels == {"tiny": "tiny", "tiny-2": "tiny-2", "gpt2": "gpt2"}
    clash = {"tiny-2": {"name": "tiny-2"}, "tiny": {"name": "/x/tiny-2"}}  # a folder named like another model
    assert len(set(names.display_names(clash).values())) == 2


@pytest.mark.parametrize("command", [
    "weekday-circuits run --model '/home/jane doe/secret project/tiny' --out runs",
    "weekday-circuits run --model='/home/jane doe/secret project/tiny'",
    "weekday-circuits run --families-file '~/my files/secret project/tiny'",
])
def test_a_path_is_cut_to_its_last_component_whatever_it_contains(command):
    public = names.public_command(command)
    assert "tiny" in public and "jane" not in public and "secret" not in public and "doe" not in public, public


def test_model_names_with_spaces_are_cut_to_the_last_component():
    model = {"name": "/home/jane doe/secret project/tiny", "resolved": "/home/jane doe/secret project/tiny"}
    assert names.display_name(model, "tiny") == "tiny"


@pytest.mark.parametrize("family", ["con", "prn", "aux", "nul", "com1", "lpt9"])
def test_windows_reserved_names_get_portable_page_and_folder_names(family):
    page = names.page_file(family)
    assert page.split(".")[0].lower() not in names.WINDOWS_RESERVED and page.endswith(".html")
    assert names.page_file("tomorrow") == "tomorrow.html"
    (folder,) = names.site_folders([family]).values()
    assert folder.lower() not in names.WINDOWS_RESERVED


def test_a_windows_reserved_family_builds_a_portable_site(tmp_path, tiny_checkpoint):
    families = tmp_path / "con.toml"
    families.write_text('[con]\ntemplate = "Today it is {day} so tomorrow it is"\nanswer_offset = 1\n')
    invoke("report", "--model", tiny_checkpoint, "--families-file", families, "--analyses", "behaviour",
           "--out", tmp_path / "runs", "--site", tmp_path / "site", "--device", "cpu")
    pages = sorted(p.name for p in (tmp_path / "site").rglob("*.html"))
    assert pages == ["_con.html", "index.html"], pages
    assert all(os.path.splitext(p)[0].lower() not in names.WINDOWS_RESERVED for p in pages)
