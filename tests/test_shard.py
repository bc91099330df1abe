"""`--shard K/N` splits the work deterministically; `build` of the shards' folders equals the unsharded report."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from click.testing import CliRunner
from conftest import invoke, save_tiny_gpt2

from report.cli import main
from report.errors import UserError
from report.run.shard import Shard, assign, parse_shard

pytestmark = pytest.mark.tiny  # tests here build tiny or planted checkpoints in the session (no-model tier: not these)

FAMILIES = ("tomorrow", "day_after", "if_today")
ANALYSES = "behaviour,logit_diff,dla_heads"


@pytest.mark.parametrize("n_pairs,count", [(6, 2), (6, 4), (7, 3), (2, 5), (14, 14)])
def test_shards_partition_the_pairs_into_contiguous_near_equal_blocks(n_pairs, count):
    models = [f"m{i}" for i in range(n_pairs // 2 or 1)]
    families = [f"f{i}" for i in range(n_pairs // len(models))]
    everything = [(m, f) for m, fs in assign(models, families, None).items() for f in fs]
    blocks = [[(m, f) for m, fs in assign(models, families, Shard(k, count)).items() for f in fs]
              for k in range(1, count + 1)]
    assert everything and [pair for block in blocks for pair in block] == everything  # in order, each once
    assert max(map(len, blocks)) - min(map(len, blocks)) <= 1
    assert blocks == [[(m, f) for m, fs in assign(models, families, Shard(k, count)).items() for f in fs]
                      for k in range(1, count + 1)]  # deterministic


@pytest.mark.parametrize("text", ["0/2", "3/2", "2", "a/b", "1/0", "-1/2"])
def test_a_bad_shard_is_refused(text):
    with pytest.raises(UserError, match="--shard"):
        parse_shard(text)


def test_a_bad_shard_is_one_line_through_the_cli(tiny_checkpoint, tmp_path):
    result = CliRunner().invoke(main, ["run", "--model", str(tiny_checkpoint), "--shard", "3/2", "--out",
                                       str(tmp_path)])
    assert result.exit_code != 0 and "--shard '3/2'" in result.output and "Traceback" not in result.output
    assert not any(tmp_path.iterdir())


TIMING = [r"<tr><th>run</th><td>[^<]*</td></tr>", r"<tr><th>date</th><td>[^<]*</td></tr>",
          r"<tr><th>command</th><td><code>[^<]*</code></td></tr>", r"<tr><th>total time</th><td>[^<]*</td></tr>",
          r"<tr><th>load time</th><td>[^<]*</td></tr>", r"<tr><th>runs merged</th><td>[^<]*</td></tr>",
          r" \(computed in [^)]* s\)"]


def normalised(html: str) -> str:
    """A page without what differs between two runs of the same work: run ids, dates, commands and timings."""
    for pattern in TIMING:
        html = re.sub(pattern, "", html)
    return html


def pages(site: Path) -> dict[str, str]:
    return {str(p.relative_to(site)): normalised(p.read_text(encoding="utf-8")) for p in sorted(site.rglob("*.html"))}


def summaries(*run_dirs: Path) -> dict[str, dict]:
    out = {}
    for run_dir in run_dirs:
        for path in run_dir.rglob("summary.json"):
            key = str(path.relative_to(run_dir))
            assert key not in out, key  # no result computed twice
            out[key] = json.loads(path.read_text())
    return out


@pytest.fixture(scope="module")
def two_models(tmp_path_factory) -> list[Path]:
    root = tmp_path_factory.mktemp("shard-models")
    return [save_tiny_gpt2(root / name, seed=seed) for seed, name in enumerate(("alpha", "beta"))]


def run_args(models, out: Path, *extra) -> list:
    return ["run", *[a for m in models for a in ("--model", m)], "--families", ",".join(FAMILIES), "--analyses",
            ANALYSES, "--out", out, "--device", "cpu", "--run-id", "r", *extra]


@pytest.mark.slow  # five runs and four builds
def test_sharded_and_merged_equals_one_unsharded_run(two_models, tmp_path):
    invoke(*run_args(two_models, tmp_path / "whole"))
    invoke("build", tmp_path / "whole" / "r", "--site", tmp_path / "site-whole")
    count = 3  # 6 (model, family) pairs: alpha's families straddle shards 1 and 2, beta's shards 2 and 3
    for k in range(1, count + 1):
        invoke(*run_args(two_models, tmp_path / "shards", "--shard", f"{k}/{count}"))
    shard_dirs = [tmp_path / "shards" / f"r-shard{k}of{count}" for k in range(1, count + 1)]
    manifests = [json.loads((d / "manifest.json").read_text()) for d in shard_dirs]
    assert [sorted(m["models"]) for m in manifests] == [["alpha"], ["alpha", "beta"], ["beta"]]
    assert [m["shard"] for m in manifests] == [{"index": k, "count": count} for k in range(1, count + 1)]
    invoke("build", *reversed(shard_dirs), "--site", tmp_path / "site-shards")  # the folders' order does not matter

    assert summaries(tmp_path / "whole" / "r") == summaries(*shard_dirs)
    whole, merged = pages(tmp_path / "site-whole"), pages(tmp_path / "site-shards")
    assert len(whole) == 1 + len(two_models) * len(FAMILIES)
    assert merged == whole
    index = (tmp_path / "site-shards" / "index.html").read_text(encoding="utf-8")
    assert all(f"r-shard{k}of{count} (shard {k}/{count})" in index for k in range(1, count + 1))


@pytest.mark.slow
def test_a_result_in_two_folders_is_refused(tiny_checkpoint, tmp_path):
    for run_id in ("a", "b"):
        invoke("run", "--model", tiny_checkpoint, "--families", "tomorrow", "--analyses", "behaviour", "--out",
               tmp_path, "--device", "cpu", "--run-id", run_id)
    result = CliRunner().invoke(main, ["build", str(tmp_path / "a"), str(tmp_path / "b"), "--site",
                                       str(tmp_path / "site")])
    assert result.exit_code != 0 and "is in two run folders" in result.output and "Traceback" not in result.output
