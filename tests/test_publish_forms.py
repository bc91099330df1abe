"""The output forms of `build` on the golden run (tests/golden/; no model is loaded): shared assets, the single
file, the site's whole-folder swap and its guard, damaged results, awkward names, the comparison, names not paths."""

from __future__ import annotations

import json
import re
from pathlib import Path

import golden
import pytest
from conftest import invoke
from publish_util import assert_no_local_path, copy_run, edit_summary, fails, local_paths, restamp

from analyses import REGISTRY
from report.publish import render, sections
from report.publish.site import MARKER

SLUG = golden.MODEL


@pytest.fixture(scope="module")
def two_families(golden_run, tmp_path_factory) -> Path:
    return copy_run(golden_run, tmp_path_factory.mktemp("two") / "run", families=["tomorrow", "day_after"])


def html_files(site: Path) -> dict[str, str]:
    return {p.relative_to(site).as_posix(): p.read_text(encoding="utf-8") for p in sorted(site.rglob("*.html"))}


@pytest.mark.slow
def test_shared_assets_are_stored_once_and_pages_load_them_by_relative_path(golden_run, golden_site, tmp_path):
    run_dir, inline_site = golden_run, golden_site
    invoke("build", run_dir, "--site", tmp_path / "site", "--assets", "shared")
    site = tmp_path / "site"
    assets = sorted(p.name for p in (site / "assets").iterdir())
    assert len(assets) == 2 and any(a.startswith("plotly") for a in assets), assets
    pages = html_files(site)
    assert len(pages) == len(html_files(inline_site)) > 1
    for name, html in pages.items():
        for src in re.findall(r'<script src="([^"]+)"', html):
            assert not re.match(r"^[a-z]+:|^/", src), (name, src)  # relative, never a URL or an absolute path
            assert (site / name).parent.joinpath(src).resolve().is_file(), (name, src)
        if name != "index.html":  # far smaller than the plotly bundle it loads (3.5 MB): the bundle is not inlined
            plotly_size = next((site / "assets" / a).stat().st_size for a in assets if a.startswith("plotly"))
            assert len(html) < plotly_size / 4, (name, len(html), plotly_size)
            assert "window.Plotly = Plotly" not in html  # the bundle is not inlined as well


@pytest.mark.slow
def test_a_rebuild_leaves_no_page_of_an_earlier_build(golden_run, two_families, tmp_path):
    run_dir = golden_run
    site = tmp_path / "site"
    invoke("build", run_dir, "--site", site, "--assets", "shared")
    assert len(html_files(site)) == len(golden.FAMILIES) + 1 and (site / "assets").is_dir()
    invoke("build", two_families, "--site", site)
    assert sorted(html_files(site)) == ["index.html", f"{SLUG}/day_after.html", f"{SLUG}/tomorrow.html"]
    assert not (site / "assets").exists()
    assert not [p for p in site.parent.iterdir() if p.name.startswith(".")]  # no temporary folder left behind
    assert json.loads((site / MARKER).read_text())["files"] == sorted(html_files(site))


@pytest.mark.slow
def test_a_site_folder_holding_other_files_is_refused_unless_forced(two_families, tmp_path):
    site = tmp_path / "mine"
    site.mkdir()
    (site / "index.html").write_text("my own page")
    (site / "notes.txt").write_text("keep me")
    code, output = fails("build", two_families, "--site", site)
    assert output.count("\n") == 1 and "index.html" in output and "--force" in output, output
    assert (site / "index.html").read_text() == "my own page" and (site / "notes.txt").is_file()
    _, output = fails("build", two_families, "--site", site, "--force")  # no build wrote it: never replaced
    assert output.count("\n") == 1 and "no earlier build wrote it" in output, output
    assert (site / "index.html").read_text() == "my own page" and (site / "notes.txt").is_file()
    built = tmp_path / "built"
    invoke("build", two_families, "--site", built)
    (built / "notes.txt").write_text("added after the build")
    fails("build", two_families, "--site", built)
    invoke("build", two_families, "--site", built, "--force")  # a build's folder with files added: forced
    assert not (built / "notes.txt").exists() and "tomorrow" in (built / "index.html").read_text()
    (tmp_path / "a-file").write_text("x")
    _, output = fails("build", two_families, "--site", tmp_path / "a-file")
    assert "is a file" in output


@pytest.mark.slow
def test_a_fresh_clones_site_folder_with_its_placeholder_builds_without_force_and_keeps_it(two_families, tmp_path):
    """The repository tracks site/.gitkeep: README's default `--site site` must build there, twice, unforced."""
    site = tmp_path / "site"
    site.mkdir()
    (site / ".gitkeep").write_text("")
    invoke("build", two_families, "--site", site)
    invoke("build", two_families, "--site", site)
    assert (site / ".gitkeep").is_file() and "tomorrow" in (site / "index.html").read_text()
    assert ".gitkeep" not in json.loads((site / MARKER).read_text())["files"]


def test_a_site_folder_holding_the_run_is_refused_even_with_force(two_families):
    _, output = fails("build", two_families, "--site", two_families.parent, "--force")
    assert "run folder" in output and two_families.is_dir()


@pytest.mark.slow
def test_damaged_results_are_named_in_one_line_each_and_shown_as_missing_sections(two_families, tmp_path):
    run = copy_run(two_families, tmp_path / "run")
    family = run / SLUG / "tomorrow"
    (family / "behaviour" / "summary.json").unlink()
    (family / "logit_lens" / "arrays.safetensors").write_bytes(b"\x00garbage")
    (family / "dla_layers" / "arrays.safetensors").unlink()
    (family / "attention" / "extras.json").write_text("{not json")
    (family / "dla_heads" / "summary.json").write_text("[1, 2]")
    import shutil

    shutil.rmtree(family / "patching_positions-day")
    result = invoke("build", run, "--site", tmp_path / "site")
    warnings = [line for line in result.stderr.splitlines() if line.startswith("warning:")]
    damaged = {"behaviour/summary.json", "logit_lens/arrays.safetensors", "dla_layers/arrays.safetensors",
               "attention/extras.json", "dla_heads/summary.json", "patching_positions-day/summary.json"}
    assert len(warnings) == len(damaged), warnings
    for file in damaged:
        assert sum(file in line for line in warnings) == 1, (file, warnings)
    html = (tmp_path / "site" / SLUG / "tomorrow.html").read_text(encoding="utf-8")
    for file in damaged:
        analysis, name = file.split("/")
        section = html.split(f'<section id="{analysis}"', 1)[1].split("</section>", 1)[0]
        assert "This section is missing" in section and name in section, analysis
    for analysis in ("logit_diff", "patching_heads-day", "patching_positions-relation"):  # undamaged: still drawn
        section = html.split(f'<section id="{analysis}"', 1)[1].split("</section>", 1)[0]
        assert "missing" not in section and 'class="plotly-graph-div"' in section
    index = (tmp_path / "site" / "index.html").read_text(encoding="utf-8")
    assert "6 sections missing" in index
    assert "tomorrow" in index and str(tmp_path) not in html + index


def test_a_corrupt_manifest_is_one_line_naming_it(two_families, tmp_path):
    run = copy_run(two_families, tmp_path / "run")
    (run / "manifest.json").write_text('{"models": ')
    _, output = fails("build", run, "--site", tmp_path / "site")
    assert output.count("\n") == 1 and "manifest.json" in output and "corrupt" in output
    (run / "manifest.json").write_text('{"models": {"m": 3}}')
    _, output = fails("build", run, "--site", tmp_path / "site")
    assert "manifest.json" in output and "'m'" in output
    assert not (tmp_path / "site").exists()


@pytest.mark.slow
def test_a_model_named_index_html_and_a_long_family_name_build(two_families, tmp_path):
    long_name = "a_family_whose_name_is_long_" * 9  # 252 characters: too long for a file name with .html
    run = copy_run(two_families, tmp_path / "run", model_name="index.html", family_names={"tomorrow": long_name})
    invoke("build", run, "--site", tmp_path / "site")
    site = tmp_path / "site"
    index = (site / "index.html").read_text(encoding="utf-8")
    # each family is linked from the abstract and from the overview: the distinct targets are its pages
    links = [link for link in dict.fromkeys(re.findall(r'href="([^"#]+\.html)"', index)) if link != "index.html"]
    assert len(links) == 2 and all((site / link).is_file() for link in links), links
    assert all(len(part) <= 100 for link in links for part in link.split("/"))
    assert long_name in index and "index.html" in index


@pytest.mark.slow
def test_the_single_file_holds_every_page_and_the_bundles_once(golden_run, golden_site, tmp_path):
    run_dir, site = golden_run, golden_site
    invoke("build", run_dir, "--single-file", tmp_path / "report.html", "--title", "Weekday <circuits>")
    html = (tmp_path / "report.html").read_text(encoding="utf-8")
    assert not (tmp_path / "site").exists()  # --single-file alone writes no site
    assert html.count("window.Plotly = Plotly") == 1 and html.count("CircuitsVis=") <= 1
    pages = [p for p in html_files(site) if p != "index.html"]
    assert html.count('<details class="page"') == len(pages) == len(golden.FAMILIES)
    ids = re.findall(r'\sid="([^"]+)"', html)
    assert len(ids) == len(set(ids)), [i for i in ids if ids.count(i) > 1][:5]
    for href in re.findall(r'href="#([^"]+)"', html):
        assert href in ids, href
    assert html.count('class="plotly-graph-div"') == sum(p.count('class="plotly-graph-div"')
                                                          for p in html_files(site).values())
    assert "<title>Weekday &lt;circuits&gt;</title>" in html and "Weekday <circuits>" not in html


@pytest.mark.slow
def test_headline_of_an_at_chance_family_is_greyed_and_the_page_says_so(two_families, tmp_path):
    run = copy_run(two_families, tmp_path / "run")
    edit_summary(run / SLUG / "tomorrow" / "behaviour", items_above_chance=False)
    edit_summary(run / SLUG / "day_after" / "behaviour", items_above_chance=True)
    restamp(run)  # a run that computed these values (edits without it are refused: test_damaged_results.py)
    invoke("build", run, "--site", tmp_path / "site")
    chance = (tmp_path / "site" / SLUG / "tomorrow.html").read_text(encoding="utf-8")
    above = (tmp_path / "site" / SLUG / "day_after.html").read_text(encoding="utf-8")
    note = "does not do this task:</strong>"  # (the planted model's relation note shares the note's style)
    assert note in chance and note not in above
    assert 'class="analysis muted"' in chance and 'class="analysis muted"' not in above
    assert '<section id="behaviour" class="analysis">' in chance  # behaviour itself is not greyed
    index = (tmp_path / "site" / "index.html").read_text(encoding="utf-8")
    assert index.count('<tr class="at-chance">') == 1 and index.count(">at chance</span>") == 1


class Tagged:
    """An analysis with the attributes of the coming interface (part, per_corruption)."""

    def __init__(self, analysis, **extra):
        self._analysis, self._extra = analysis, extra

    def __getattr__(self, name):
        return self._extra[name] if name in self._extra else getattr(self._analysis, name)


@pytest.mark.slow
def test_parts_in_order_and_the_two_corruptions_side_by_side(two_families, tmp_path, monkeypatch):
    run = copy_run(two_families, tmp_path / "run", families=["tomorrow"])
    family = run / SLUG / "tomorrow"
    import shutil

    for corruption in ("relation", "day"):
        shutil.copytree(family / "logit_lens", family / f"logit_lens-{corruption}")
        edit_summary(family / f"logit_lens-{corruption}", corruption=corruption)
    shutil.rmtree(family / "logit_lens")
    manifest = json.loads((run / "manifest.json").read_text())
    analyses = manifest["models"][SLUG]["analyses"]
    for corruption in ("day", "relation"):
        analyses[f"tomorrow/logit_lens-{corruption}"] = analyses["tomorrow/logit_lens"]
    del analyses["tomorrow/logit_lens"]
    (run / "manifest.json").write_text(json.dumps(manifest))
    restamp(run)
    registry = tuple(Tagged(a, part="mechanism", per_corruption=True) if a.name == "logit_lens" else a
                     for a in REGISTRY)
    monkeypatch.setattr(render, "REGISTRY", registry)  # the index's list of analyses
    monkeypatch.setattr(sections, "REGISTRY", registry)  # the sections read from the run
    invoke("build", run, "--site", tmp_path / "site")
    html = (tmp_path / "site" / SLUG / "tomorrow.html").read_text(encoding="utf-8")
    headings = re.findall(r'<h2 class="part">([^<]+)</h2>', html)
    assert headings == ["Behaviour", "Evidence", "Mechanism", "Representation"], headings
    mechanism = html.split('<h2 class="part">Mechanism</h2>', 1)[1]
    pair = mechanism.split('<div class="pair">', 1)[1]
    assert pair.index('id="logit_lens-day"') < pair.index('id="logit_lens-relation"')
    assert ">day corruption<" in pair and ">relation corruption<" in pair
    assert "This section is missing" not in html and "logit_lens-day--" in html  # figure ids stay unique
    ids = re.findall(r'\sid="([^"]+)"', html)
    assert len(ids) == len(set(ids))


@pytest.mark.slow
def test_a_family_with_several_templates_lists_them_all(two_families, tmp_path):
    run = copy_run(two_families, tmp_path / "run")
    manifest = json.loads((run / "manifest.json").read_text())
    families = manifest["models"][SLUG]["families"]
    families["tomorrow"]["templates"] = ["Today it is {day} so tomorrow it is", "Now it is {day}, next it is"]
    families["day_after"]["template"] = families["day_after"].pop("templates")[0]  # an older manifest's key
    (run / "manifest.json").write_text(json.dumps(manifest))
    invoke("build", run, "--site", tmp_path / "site")
    html = (tmp_path / "site" / SLUG / "tomorrow.html").read_text(encoding="utf-8")
    assert "<code>Now it is {day}, next it is</code>" in html and "<code>Today it is {day} so tomorrow it is" in html
    index = (tmp_path / "site" / "index.html").read_text(encoding="utf-8")  # the overview: the first, and a count
    assert "<code>Today it is {day} so tomorrow it is</code> (+1)" in index
    old = (tmp_path / "site" / SLUG / "day_after.html").read_text(encoding="utf-8")
    assert f"Template <code>{families['day_after']['template']}</code>;" in old


@pytest.mark.slow
def test_two_models_are_compared_side_by_side_with_relative_depth(two_families, tmp_path):
    second = copy_run(two_families, tmp_path / "second", model_name="other-model", run_id="second")
    invoke("build", two_families, second, "--site", tmp_path / "site")
    index = (tmp_path / "site" / "index.html").read_text(encoding="utf-8")
    assert 'id="comparison"' in index
    table = index.split('id="comparison"', 1)[1].split("<h2>Overview", 1)[0]
    assert table.count('<table class="comparison">') == 2  # tomorrow and day_after, both models in each
    assert f'href="{SLUG}/tomorrow.html"' in table and 'href="other-model/tomorrow.html"' in table
    n_layers = json.loads((two_families / "manifest.json").read_text())["models"][SLUG]["n_layers"]
    top = json.loads((two_families / SLUG / "tomorrow" / "patching_heads-day" / "summary.json").read_text())
    head = top["top_heads"][0]["name"]
    layer = int(re.match(r"L(\d+)H", head).group(1))
    assert f'{head} <span class="depth">({layer / n_layers:.2f})</span>' in table
    alone = tmp_path / "alone"
    invoke("build", two_families, "--site", alone)
    assert 'id="comparison"' not in (alone / "index.html").read_text(encoding="utf-8")


@pytest.mark.slow
def test_no_output_form_holds_a_local_path(golden_run, tmp_path):
    run_dir = golden_run
    checkpoint = Path(json.loads((run_dir / "manifest.json").read_text())["models"][SLUG]["name"])
    assert checkpoint.is_absolute() and checkpoint.name == SLUG  # the run holds the path it loaded the model from
    # the command a user typed, with absolute paths in it, as the manifest records it
    command = (f"weekday-circuits report --model {checkpoint} --out={run_dir.parent.resolve()} "
               f"--families-file {Path.home() / 'my families.toml'} --site {Path.cwd() / 'site'}")
    run = copy_run(run_dir, tmp_path / "run", families=["tomorrow", "day_after"], command=command)
    invoke("build", run, "--site", tmp_path / "inline")
    invoke("build", run, "--site", tmp_path / "shared", "--assets", "shared", "--single-file", tmp_path / "one.html")
    paths = local_paths(checkpoint, run_dir.resolve(), tmp_path)
    outputs = {**{f"inline/{k}": v for k, v in html_files(tmp_path / "inline").items()},
               **{f"shared/{k}": v for k, v in html_files(tmp_path / "shared").items()},
               "single": (tmp_path / "one.html").read_text(encoding="utf-8"),
               "marker": (tmp_path / "shared" / MARKER).read_text()}
    for where, text in outputs.items():
        assert_no_local_path(text, where, paths)
    for name in (f"…/{SLUG}", f"…/{run_dir.parent.name}", "…/my families.toml", "…/site"):  # only the last part
        assert name in outputs["single"], name
    assert f"<td>{SLUG}</td>" in outputs["inline/index.html"]


def test_pdf_without_chromium_is_one_clear_line(two_families, tmp_path):
    _, output = fails("build", two_families, "--pdf", tmp_path / "r.pdf", "--chromium", tmp_path / "no-such")
    assert output.count("\n") == 1 and "--chromium" in output
    assert not (tmp_path / "r.pdf").exists() and not (tmp_path / "site").exists()


@pytest.mark.slow
def test_the_print_page_has_a_still_per_widget_section_open_sections_and_a_contents_list(two_families):
    """The PDF fits a family in a few pages: every section printed open with its narrative and first figure, the
    first attention widget of a section without figures as a still (the rest, and the headline tables, are in the
    HTML)."""
    from report.publish import assets, pdf
    build = render.collect([two_families], "Printed")
    html = pdf.render_print(build)
    sections = [s for p in build.pages for s in p.sections]
    with_widgets = [s for s in sections if s.widgets and not s.figures]  # where the widget is the figure
    assert with_widgets and 'class="cv-widget"' not in html
    assert assets.circuitsvis_bundle().source[:300] not in html  # a widget has nothing to print
    assert html.count('-still" class="plotly-graph-div"') == len(with_widgets)
    assert html.count('<details class="fold" open>') == len(sections)
    assert "Headline numbers" not in html
    assert html.count('<article class="page"') == len(build.pages) == 2
    contents = html[html.index('id="contents"'):html.index("</nav>", html.index('id="contents"'))]
    for page in build.pages:
        assert f'href="#{page.anchor}"' in contents
        for section in page.sections:
            assert f'href="#{page.anchor}--{section.key}"' in contents
