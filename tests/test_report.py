"""End to end: the pages of the golden run (tests/golden/, no model) have every section, self-contained; on a tiny
checkpoint, `report` writes what `build` reproduces exactly from the saved run, with a manifest a reviewer can use."""

from __future__ import annotations

import json
import re
from html.parser import HTMLParser
from pathlib import Path

import golden
import pytest
from click.testing import CliRunner
from conftest import TINY_FAMILIES, invoke

from analyses import REGISTRY
from analyses.common.types import CORRUPTIONS
from report.cli import main

pytestmark = pytest.mark.tiny  # tests here build tiny or planted checkpoints in the session (no-model tier: not these)

REMOTE = re.compile(r"^\s*(?:[a-z][a-z0-9+.-]*:)?//", re.IGNORECASE)  # http://, https://, //host (not file: here)
HOSTILE = "<script>alert(1)</script>"


def pages(site: Path) -> dict[str, bytes]:
    return {str(p.relative_to(site)): p.read_bytes() for p in sorted(site.rglob("*.html"))}


@pytest.mark.slow
def test_build_writes_a_page_per_family_with_every_section(golden_site):
    site = golden_site
    families = list(golden.FAMILIES)
    assert families and REGISTRY
    for family in families:
        html = (site / golden.MODEL / f"{family}.html").read_text(encoding="utf-8")
        for analysis in REGISTRY:
            ids = [f"{analysis.name}-{c}" for c in CORRUPTIONS] if analysis.per_corruption else [analysis.name]
            assert any(re.search(f'<section id="{i}" class="analysis[ "]', html) for i in ids), (family, analysis.name)
        assert "This section is missing" not in html
        assert html.count('class="plotly-graph-div"') >= len([a for a in REGISTRY if a.name != "attention"])
        assert 'class="cv-widget"' in html


@pytest.mark.slow
def test_index_links_resolve_and_overview_lists_every_family(golden_site):
    site = golden_site
    index = (site / "index.html").read_text(encoding="utf-8")
    # each family is linked from the abstract and from the overview: the distinct targets are its pages
    links = [link for link in dict.fromkeys(re.findall(r'href="([^"#]+\.html)"', index)) if link != "index.html"]
    assert len(links) == len(golden.FAMILIES)  # one page per family
    for link in links:
        assert (site / link).is_file(), link


class TagCollector(HTMLParser):
    """Every start tag with its attributes; script bodies are not parsed as markup, as in a browser."""

    def __init__(self):
        super().__init__()
        self.tags: list[tuple[str, dict]] = []

    def handle_starttag(self, tag, attrs):
        self.tags.append((tag, dict(attrs)))


def test_pages_make_no_network_request(golden_site):
    site = golden_site
    assert pages(site)
    for name, html in pages(site).items():
        collector = TagCollector()
        collector.feed(html.decode("utf-8"))
        tags = collector.tags
        assert name == "index.html" or any(tag == "script" for tag, _ in tags), name  # bundles are inlined
        for tag, attrs in tags:
            assert not (tag == "script" and "src" in attrs), (name, attrs)
            assert not (tag == "link" and "stylesheet" in (attrs.get("rel") or "")), (name, attrs)
            for key in ("src", "href", "srcset", "data", "poster"):
                assert not REMOTE.match(attrs.get(key) or ""), (name, tag, attrs)


def test_build_from_the_saved_run_alone_gives_the_same_bytes(tiny_report, tmp_path, monkeypatch):
    run_dir, site = tiny_report
    import report.run.model

    def no_model(*args, **kwargs):
        raise AssertionError("build must not load a model")

    monkeypatch.setattr(report.run.model, "load_model", no_model)
    invoke("build", run_dir, "--site", tmp_path / "rebuilt")
    assert pages(tmp_path / "rebuilt") == pages(site)


def test_every_summary_is_a_flat_json_object(tiny_report):
    run_dir, _ = tiny_report
    summaries = list(run_dir.rglob("summary.json"))
    manifest = json.loads((run_dir / "manifest.json").read_text())
    (model,) = manifest["models"].values()
    assert len(summaries) == len(model["analyses"]) >= len(TINY_FAMILIES) * len(REGISTRY)
    for path in summaries:
        summary = json.loads(path.read_text())
        assert isinstance(summary, dict)
        for key, value in summary.items():
            assert isinstance(value, (int, float, str, list)), (path, key)


def test_manifest_records_what_a_reviewer_needs(tiny_report):
    run_dir, _ = tiny_report
    manifest = json.loads((run_dir / "manifest.json").read_text())
    assert manifest["status"] == "complete"
    for key in ("command", "device", "git_commit", "packages", "created", "total_seconds"):
        assert manifest[key] not in (None, "")
    (model,) = manifest["models"].values()
    assert model["n_layers"] == 2 and model["revision"]
    assert all(entry["status"] == "complete" for entry in model["analyses"].values())
    tomorrow = model["families"]["tomorrow"]
    assert len(tomorrow["prompts"]) == 7 * len(tomorrow["templates"])


@pytest.mark.slow
def test_hostile_family_text_is_escaped(tiny_checkpoint, tmp_path):
    families = tmp_path / "hostile.toml"
    families.write_text(f'[hostile]\ndescription = "{HOSTILE}"\n'
                        f'template = "{HOSTILE} Today it is {{day}} so tomorrow it is"\nanswer_offset = 1\n')
    invoke("report", "--model", tiny_checkpoint, "--families-file", families, "--out", tmp_path / "runs",
           "--site", tmp_path / "site", "--device", "cpu", "--analyses", "behaviour,attention")
    html = (tmp_path / "site" / Path(tiny_checkpoint).name / "hostile.html").read_text(encoding="utf-8")
    assert HOSTILE not in html
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html
    index = (tmp_path / "site" / "index.html").read_text(encoding="utf-8")
    assert HOSTILE not in index and "&lt;script&gt;" in index


@pytest.mark.slow
def test_resume_recomputes_only_what_is_missing(tiny_checkpoint, tmp_path):
    args = ["run", "--model", tiny_checkpoint, "--families", "tomorrow,day_after", "--analyses",
            "behaviour,logit_diff", "--out", tmp_path, "--device", "cpu", "--run-id", "r"]
    invoke(*args)
    model_dir = tmp_path / "r" / Path(tiny_checkpoint).name
    kept = model_dir / "tomorrow" / "behaviour" / "summary.json"
    before = kept.stat().st_mtime_ns
    import shutil

    shutil.rmtree(model_dir / "day_after" / "logit_diff")
    invoke(*args, "--resume")
    assert (model_dir / "day_after" / "logit_diff" / "summary.json").is_file()
    assert kept.stat().st_mtime_ns == before


@pytest.mark.slow
def test_an_interrupted_run_leaves_only_complete_results(tiny_checkpoint, tmp_path, monkeypatch):
    import analyses.logit_diff as logit_diff

    calls = []

    def crash_on_second_family(model, prompts):
        calls.append(prompts.family)
        if len(calls) == 2:
            raise RuntimeError("simulated crash")
        return logit_diff.compute(model, prompts)

    import dataclasses

    import report.run.options

    crashing = tuple(dataclasses.replace(a, compute=crash_on_second_family) if a.name == "logit_diff" else a
                     for a in REGISTRY)
    monkeypatch.setattr(report.run.options, "REGISTRY", crashing)
    monkeypatch.setattr(report.run.options, "BY_NAME", {a.name: a for a in crashing})
    result = CliRunner().invoke(main, ["run", "--model", str(tiny_checkpoint), "--families", "tomorrow,day_after",
                                       "--analyses", "behaviour,logit_diff", "--out", str(tmp_path),
                                       "--device", "cpu", "--run-id", "r"])
    assert result.exit_code == 70 and "RuntimeError: simulated crash" in result.output  # a bug: traceback kept
    run_dir = tmp_path / "r"
    assert not [p for p in run_dir.rglob("*") if ".tmp" in p.name]
    for folder in run_dir.rglob("*"):
        if folder.is_dir() and folder.parent.parent.parent == run_dir:  # <run>/<model>/<family>/<analysis>
            assert (folder / "summary.json").is_file(), folder
    assert json.loads((run_dir / "manifest.json").read_text())["status"] == "failed"
    assert (run_dir / Path(tiny_checkpoint).name / "tomorrow" / "logit_diff" / "summary.json").is_file()
    assert not (run_dir / Path(tiny_checkpoint).name / "day_after" / "logit_diff").exists()


@pytest.mark.slow
def test_a_family_one_model_cannot_use_is_skipped_with_a_visible_note(tiny_checkpoint, tmp_path):
    from conftest import save_tiny_gpt2

    split = save_tiny_gpt2(tmp_path / "split-wednesday", split_words=(" Wednesday",))
    invoke("report", "--model", tiny_checkpoint, "--model", split, "--families", "tomorrow",
           "--analyses", "behaviour", "--out", tmp_path / "runs", "--site", tmp_path / "site", "--device", "cpu")
    index = (tmp_path / "site" / "index.html").read_text(encoding="utf-8")
    assert "skipped for this model" in index and "Wednesday" in index.split("skipped for this model", 1)[1]
    assert (tmp_path / "site" / Path(tiny_checkpoint).name / "tomorrow.html").is_file()
    assert not (tmp_path / "site" / "split-wednesday" / "tomorrow.html").exists()
    (run_dir,) = (tmp_path / "runs").iterdir()
    manifest = json.loads((run_dir / "manifest.json").read_text())
    assert manifest["models"]["split-wednesday"]["families"]["tomorrow"]["status"] == "skipped"
