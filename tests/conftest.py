"""Shared fixtures: tiny GPT-2-architecture checkpoints built in the session with GPT-2's real tokenizer."""

from __future__ import annotations

import gc
import os
import shutil
from contextlib import contextmanager
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

TOKENIZER_DIR = Path(__file__).parent / "fixtures" / "gpt2-tokenizer"


def pytest_configure(config):
    # Under pytest-xdist (`-n 2`) each worker is one process per core: torch's default of one thread per core in
    # every worker would put two threads on each core, which only adds switching. A serial run keeps the default.
    if os.environ.get("PYTEST_XDIST_WORKER"):
        torch.set_num_threads(1)

# Test tiers by cost (docs/testing.md). A test that uses one of these fixtures, directly or through another
# fixture, is marked here, so that a new test lands in the right tier without remembering to mark it; a test whose
# cost comes from its own file's fixture or its own pipeline run carries the mark itself.
WHOLE_PIPELINE_FIXTURES = {"tiny_report", "gemma_first_load", "gemma_report"}  # -> slow
TINY_MODEL_FIXTURES = {"tiny_checkpoint", "tiny_model", "tiny_prompt_sets", "small_run"}  # -> tiny


def pytest_collection_modifyitems(config, items):
    for item in items:
        used = set(getattr(item, "fixturenames", ()))
        if used & WHOLE_PIPELINE_FIXTURES or item.get_closest_marker("browser"):  # a browser test is slow too
            item.add_marker(pytest.mark.slow)
        if used & TINY_MODEL_FIXTURES and not item.get_closest_marker("slow"):
            item.add_marker(pytest.mark.tiny)


def save_tiny_gpt2(folder: Path, n_layer: int = 2, n_head: int = 4, n_embd: int = 64, seed: int = 0,
                   split_words: tuple[str, ...] = ()) -> Path:
    """A randomly initialised GPT-2-architecture checkpoint that tokenizes exactly like GPT-2 small.

    `split_words` (e.g. (" Wednesday",)) removes the BPE merge that makes each of them one token, so that a
    test has a tokenizer for which a family's answer is not a single token.
    """
    from transformers import GPT2Config, GPT2LMHeadModel, GPT2TokenizerFast

    torch.manual_seed(seed)
    config = GPT2Config(n_layer=n_layer, n_head=n_head, n_embd=n_embd, n_positions=64)
    model = GPT2LMHeadModel(config)
    with torch.no_grad():  # non-zero biases and LayerNorm gains, so that every bias term is tested
        for name, param in model.named_parameters():
            if name.endswith(".bias") or ".ln_" in name:
                param.add_(0.05 * torch.randn_like(param))
    model.save_pretrained(folder)
    GPT2TokenizerFast.from_pretrained(_tokenizer_dir(folder, split_words)).save_pretrained(folder)
    return folder


def _tokenizer_dir(folder: Path, split_words: tuple[str, ...]) -> Path:
    if not split_words:
        return TOKENIZER_DIR
    merged = {word.replace(" ", "\u0120") for word in split_words}  # GPT-2 spells a leading space as U+0120
    edited = folder / "edited-tokenizer"
    edited.mkdir()
    shutil.copy(TOKENIZER_DIR / "vocab.json", edited / "vocab.json")
    lines = (TOKENIZER_DIR / "merges.txt").read_text(encoding="utf-8").splitlines()
    kept = [line for line in lines if line.replace(" ", "") not in merged]
    assert len(kept) == len(lines) - len(split_words), "each split word must be made by exactly one merge"
    (edited / "merges.txt").write_text("\n".join(kept) + "\n", encoding="utf-8")
    return edited


@pytest.fixture(scope="session")
def tokenizer():
    from transformers import GPT2TokenizerFast

    return GPT2TokenizerFast.from_pretrained(TOKENIZER_DIR)


@pytest.fixture(scope="session")
def tiny_checkpoint(tmp_path_factory) -> Path:
    return save_tiny_gpt2(tmp_path_factory.mktemp("tiny-gpt2"))


@pytest.fixture(scope="session")
def tiny_model(tiny_checkpoint):
    from report.run.model import load_model

    return load_model(str(tiny_checkpoint), device="cpu").model


@pytest.fixture(scope="session")
def tiny_prompt_sets(tiny_model):
    """Every shipped family, tokenized for the tiny model."""
    from report.run.families import build_prompt_set
    from report.run.families_file import load_family_specs

    specs = load_family_specs()
    return {name: build_prompt_set(spec, tiny_model.tokenizer, tiny_model.cfg.default_prepend_bos)
            for name, spec in specs.items()}


def invoke(*args):
    """Run the CLI in-process; fail the test with its output unless it exits 0."""
    from click.testing import CliRunner

    from report.cli import main

    result = CliRunner().invoke(main, [str(a) for a in args], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return result


@pytest.fixture(scope="session")
def tiny_report(tiny_checkpoint, tmp_path_factory) -> tuple[Path, Path]:
    """`report` on the tiny checkpoint, every family and analysis: (run folder, site folder)."""
    root = tmp_path_factory.mktemp("report")
    invoke("report", "--model", tiny_checkpoint, "--families", ",".join(TINY_FAMILIES), "--out", root / "runs",
           "--site", root / "site", "--device", "cpu", "--run-id", "tiny", "--analyses", "all")  # at chance: not auto
    return root / "runs" / "tiny", root / "site"


@pytest.fixture(scope="session")
def small_run(tiny_checkpoint, tmp_path_factory) -> Path:
    """`run` on the tiny checkpoint: one family, three quick analyses (one with arrays). For tests of `build` that
    need a real run folder but not the whole pipeline (seconds, not minutes); copy it before changing it."""
    out = tmp_path_factory.mktemp("small-run")
    invoke("run", "--model", tiny_checkpoint, "--families", "tomorrow", "--analyses", "behaviour,logit_diff,dla_layers",
           "--out", out, "--device", "cpu", "--run-id", "small")
    return out / "small"


@pytest.fixture(scope="session")
def golden_run(tmp_path_factory) -> Path:
    """The committed golden run (tests/golden/: every analysis on a planted checkpoint, three families), copied into
    the session's temporary folder, for tests of `build` and of the pages: no model, no pipeline run. Fails, with the
    command that writes it again, when it no longer matches this version (results format, checksums, schemas)."""
    import golden

    found = golden.problems()
    if found:
        pytest.fail(golden.stale_message(found), pytrace=False)
    return Path(shutil.copytree(golden.RUN, tmp_path_factory.mktemp("golden") / "run"))


@pytest.fixture(scope="session")
def golden_site(golden_run, tmp_path_factory) -> Path:
    """`build` of the golden run (inline assets, the default form), once per session."""
    site = tmp_path_factory.mktemp("golden-site") / "site"
    invoke("build", golden_run, "--site", site)
    return site


GEMMA_PROBE = "Today it is Monday so tomorrow it is"


@pytest.fixture(scope="session")
def gemma_first_load(tmp_path_factory) -> SimpleNamespace:
    """The bundled Gemma's first load (GGUF -> processed safetensors, about 2 minutes on 2 cores), once per session.

    It builds the cache in a session folder, and every test that needs the bundled model points
    $WEEKDAY_CIRCUITS_CACHE there (`gemma_cache`), so a fresh machine dequantises the GGUF once, not once for the
    first-load test and again for the report, and the tests never write into the user's own cache.
    Holds the first load's final-position logits on GEMMA_PROBE and the cache folder's entries after it.
    """
    import report.run.bundled as bundled

    folder = tmp_path_factory.mktemp("weekday-circuits-cache")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("WEEKDAY_CIRCUITS_CACHE", str(folder))
        first = bundled.load_bundled_model()
        with torch.no_grad():
            logits = first(GEMMA_PROBE)[0, -1]
    entries = sorted(path.name for path in folder.iterdir())
    del first
    gc.collect()
    return SimpleNamespace(folder=folder, first_logits=logits, entries=entries)


@contextmanager
def gemma_cache(first_load: SimpleNamespace):
    """Within it, the bundled model loads from the session's cache (`gemma_first_load`)."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("WEEKDAY_CIRCUITS_CACHE", str(first_load.folder))
        yield


@pytest.fixture(scope="session")
def gemma_report(tmp_path_factory, gemma_first_load) -> tuple[Path, Path]:
    """`report` on the bundled Gemma 3 270M (the `offline` extra), two families, every analysis.

    To keep the suite within its time on a 2-core CPU, each family keeps its first template (7 prompts, both
    corruptions), and the three mechanism analyses that re-run the 18-layer model hundreds of times (ablations,
    path patching, circuit) are left to the tiny and planted models, where batched equals the loop within 1e-4 on a
    Gemma-3-style checkpoint too; `weekday-circuits report --model gemma-3-270m` runs them all.
    """
    from report.run.families_file import load_family_specs

    root = tmp_path_factory.mktemp("gemma-report")
    families = root / "gemma-families.toml"
    families.write_text(one_template_families(load_family_specs(), GEMMA_FAMILIES), encoding="utf-8")
    with gemma_cache(gemma_first_load):
        invoke("report", "--model", "gemma-3-270m", "--families-file", families, "--analyses",
               ",".join(GEMMA_ANALYSES), "--out", root / "runs", "--site", root / "site", "--device", "cpu",
               "--run-id", "gemma")
    return root / "runs" / "gemma", root / "site"


def one_template_families(specs: dict, names) -> str:
    """A families file of `names`, each cut down to its first template (and relation twin)."""
    lines = []
    for name in names:
        spec = specs[name]
        lines += [f"[{name}]", f"template = {spec.templates[0]!r}".replace("'", '"'),
                  f"answer_offset = {spec.answer_offset}", f"copy_offset = {spec.copy_offset}",
                  f"relation_templates = [{spec.relation_templates[0]!r}]".replace("'", '"'),
                  f"relation_answer_offset = {spec.relation_answer_offset}", ""]
    return "\n".join(lines)


GEMMA_FAMILIES = ("tomorrow", "day_after")
GEMMA_ANALYSES = ("behaviour", "logit_diff", "logit_lens", "dla_layers", "dla_heads", "attention", "patching_positions",
                  "patching_heads", "successor_heads", "geometry")
# The families of the shared tiny report: two day families and a month family cover every code path of the
# report (days and months, both corruptions, transfer across sequences); every shipped family is validated in
# test_families.py, and all of them run in `weekday-circuits report`.
TINY_FAMILIES = ("tomorrow", "day_after", "next_month")
