"""Findings first, honest figures: the abstract and each page's box say what the numbers show, and colour scales
are anchored to a meaningful size so that noise is drawn pale.

A random model (the shared tiny report) does not do the task: the abstract must say that nothing was found and
every heatmap must stay pale. A planted model (tests/planted_circuit.py: one head, L1H2, reads the named day and
writes the next) must have that head named in the abstract with the methods that agree, and drawn dark.
"""

from __future__ import annotations

import base64
import re

import numpy as np
import pytest
from conftest import invoke
from planted_circuit import save_planted_gpt2

from report.publish import render

pytestmark = pytest.mark.tiny  # tests here build tiny or planted checkpoints in the session (no-model tier: not these)

PALE = 0.25  # no cell of a random model's heatmap beyond a quarter of its colour scale
EXEMPT = {"behaviour-confusion"}  # counts of the model's choices, a record of behaviour, not an effect size


def heatmaps(build: render.Build):
    """(figure id, z, how far each cell is along its colour scale in [0, 1]) for every heatmap of every page."""
    for page in build.pages:
        for section in page.sections:
            for figure in section.figures:
                spec = figure["spec"]
                axis = spec.get("layout", {}).get("coloraxis", {})
                for trace in spec["data"]:
                    if trace.get("type") != "heatmap":
                        continue
                    z = array(trace["z"])
                    yield figure["id"], z, intensity(z, trace, axis)


def array(value) -> np.ndarray:
    """A figure's array as Plotly's JSON holds it: a list, or a typed array {"dtype", "bdata" (base64), "shape"}."""
    if isinstance(value, dict):
        flat = np.frombuffer(base64.b64decode(value["bdata"]), dtype=np.dtype(value["dtype"]))
        shape = value.get("shape")
        if isinstance(shape, str):
            shape = [int(n) for n in shape.split(",")]
        return flat.reshape(shape).astype(float) if shape else flat.astype(float)
    return np.asarray(value, dtype=float)


def intensity(z: np.ndarray, trace: dict, axis: dict) -> np.ndarray:
    if trace.get("coloraxis"):  # the paired patching maps share one diverging axis
        return np.abs(z) / axis["cmax"]
    scale = trace.get("colorscale")
    if isinstance(scale, list) and len(scale) == 4 and trace.get("zmin") == 0:  # a score: pale up to its naming bar
        named_at = scale[2][0]
        return np.clip((z - named_at) / (trace["zmax"] - named_at), 0, None)
    if isinstance(scale, list) and len(scale) == 3 and trace.get("zmin") == 0:  # a score: pale up to chance
        chance = scale[1][0]
        return np.clip((z - chance) / (trace["zmax"] - chance), 0, None)
    return np.abs(z) / trace["zmax"]


def test_random_model_heatmaps_are_pale_and_the_abstract_says_nothing_was_found(tiny_report):
    run_dir, site = tiny_report
    build = render.collect([run_dir])
    maps = [(fid, z, level) for fid, z, level in heatmaps(build) if fid.split("--")[-1] not in EXEMPT]
    assert len(maps) > 20, "the tiny report should draw every analysis's heatmaps"
    loud = {fid: float(np.nanmax(level)) for fid, z, level in maps if np.nanmax(level) > PALE}
    assert not loud, f"noise drawn as signal (fraction of the colour scale): {loud}"
    verdicts = [m["verdict"] for m in build.abstract()["models"]]
    assert verdicts and all(v.startswith("Nothing was found") for v in verdicts), verdicts
    for page in build.pages:
        assert not page.findings.components, (page.family, page.findings.components)
    index = (site / "index.html").read_text(encoding="utf-8")
    assert "Nothing was found" in index


@pytest.fixture(scope="module")
def planted_report(tmp_path_factory):
    root = tmp_path_factory.mktemp("planted-report")
    checkpoint = save_planted_gpt2(root / "planted", layer=1, head=2)
    invoke("report", "--model", checkpoint, "--families", "tomorrow", "--analyses",
           "behaviour,logit_diff,dla_heads,patching_heads,successor_heads", "--out", root / "runs", "--site",
           root / "site", "--device", "cpu", "--run-id", "planted")
    return root / "runs" / "planted", root / "site"


@pytest.mark.slow
def test_planted_head_is_named_first_with_the_methods_that_agree(planted_report):
    run_dir, site = planted_report
    build = render.collect([run_dir])
    (page,) = build.pages
    findings = page.findings
    assert findings.does_task
    first, evidence = next(iter(findings.components.items()))
    assert first == "L1H2", findings.components
    methods = {e.method for e in evidence}
    assert {"activation patching (day corruption)", "direct logit attribution"} <= methods, methods
    index = (site / "index.html").read_text(encoding="utf-8")
    abstract = index[index.index('id="abstract"'):index.index("</section>", index.index('id="abstract"'))]
    assert re.search(r"L1H2 \(named by \d methods: activation patching \(day corruption\)", abstract), abstract
    assert "Nothing was found" not in abstract


@pytest.mark.slow
def test_planted_head_is_drawn_dark_and_the_box_links_to_its_evidence(planted_report):
    run_dir, site = planted_report
    build = render.collect([run_dir])
    # the exact patching panel (the first trace; attribution patching's estimate beside it is smaller by design)
    exact = next((level for fid, _, level in heatmaps(build) if fid == "patching_heads-day--patching_heads-z"), None)
    assert exact is not None, "no head-patching map was drawn"
    assert exact[1, 2] > 0.5, f"the planted head is drawn at {exact[1, 2]:.2f} of the scale"
    page_html = (site / build.pages[0].href).read_text(encoding="utf-8")
    box = page_html[page_html.index('id="found"'):page_html.index("</aside>")]
    links = re.findall(r'href="#([^"]+)"', box)
    assert 1 <= len(links) <= 5 and all(f'id="{key}"' in page_html for key in links), links
    assert box.count("<li>") <= 5


@pytest.mark.slow
def test_readme_findings_table_is_printed_from_the_run(planted_report):
    from report.publish import findings_table
    run_dir, _ = planted_report
    table = findings_table.markdown(render.collect([run_dir]))
    header, rule, *rows = table.splitlines()
    assert header.count("|") == rule.count("|") == len(findings_table.HEADER) + 1
    (row,) = rows
    cells = [c.strip() for c in row.strip("|").split("|")]
    from report.run.families_file import load_family_specs

    n = 7 * len(load_family_specs()["tomorrow"].templates)  # every prompt right: 7 days x the family's templates
    assert cells[0] == "tomorrow" and cells[1] == f"{n}/{n}" and cells[2].startswith("yes (")
    assert re.fullmatch(r"L1H2 \(\d\.\d\d\)", cells[6]), cells
    assert cells[7] == "— (gap not informative)"  # the planted head ignores the relation word


def test_ov_text_names_every_copy_head_and_shows_ties_as_ties():
    from analyses.common.types import Result
    from analyses.successor_heads import SUCCESSOR_HEADS

    heads = [[f"L{layer}H{h}" for h in range(4)] for layer in range(2)]
    copy = np.array([[0.9, 0.8, 0.1, 0.86], [0.0, 0.72, 0.0, 0.0]])  # four copy heads (threshold 5/7)
    successor = np.array([[0.3, 0.0, 0.3, 0.0], [0.3, 0.0, 0.1, 0.0]])  # a three-way tie at the top, below it
    summary = {"n_items": 7, "chance_score": 1 / 7, "name_threshold": 5 / 7}
    sentences = SUCCESSOR_HEADS.narrative(Result(summary=summary, arrays={"successor_score": successor,
                                                                         "copy_score": copy},
                                                 labels={"heads": heads}))
    text = " ".join(sentences)
    assert "L0H0 (90%), L0H3 (86%), L0H1 (80%) and 1 more" in text, text
    assert "30%, is shared by 3 tied heads (L0H0, L0H2, L1H0)" in text, text
