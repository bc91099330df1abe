"""Benchmark: the edge-circuit grid (MIB's circuit sizes) through `run_edges`, against an earlier `run_edges`.

The grid is most of `edge_circuits`' time: every circuit runs the clean prompts with its removed edges carrying
the corrupted activations. This times the same circuits through the working tree's `analyses/engine/edge_runs.py`
and through that file as it was at --against (a git revision, loaded beside it as a module of its own), in one
process, one after the other, and checks that both give the same LD. Circuits: the greedy top-k by EAP (one IG
step: the scores only choose the edges; which scores does not change the work) and the random baseline, at each
of MIB's fractions, on the family's day corruption, every template x item. Wall and this process's CPU seconds.

    python benchmarks/edge_grid.py --against 9b26ee0            # bundled Gemma 3 270M, CPU, `tomorrow`
    python benchmarks/edge_grid.py --model path/to/checkpoint --device cuda --against 9b26ee0
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

import numpy as np  # noqa: E402
import torch  # noqa: E402
from patching import describe_machine, timed  # noqa: E402

from analyses import engine as ee  # noqa: E402
from analyses.common.metrics import answer_pair  # noqa: E402
from analyses.methods.edge_circuit_grid import greedy, sizes  # noqa: E402


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--model", default="gemma-3-270m")
    p.add_argument("--device", default="cpu")
    p.add_argument("--family", default="tomorrow")
    p.add_argument("--against", required=True, help="git revision whose analyses/engine/edge_runs.py is timed beside")
    p.add_argument("--out", type=Path, default=None, help="also write the numbers here as JSON")
    return p.parse_args()


def earlier_run_edges(revision: str):
    """`run_edges` of analyses/engine/edge_runs.py at `revision`, imported as a module of its own."""
    source = subprocess.run(["git", "-C", str(ROOT), "show", f"{revision}:analyses/engine/edge_runs.py"],
                            check=True, capture_output=True, text=True).stdout
    folder = Path(tempfile.mkdtemp(prefix="edge-runs-"))
    path = folder / "edge_runs_earlier.py"
    path.write_text(source, encoding="utf-8")
    spec = importlib.util.spec_from_file_location("edge_runs_earlier", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.run_edges


def main() -> None:
    args = parse_args()
    from report.run.families import build_prompt_set
    from report.run.families_file import load_family_specs
    from report.run.model import load_model

    model = load_model(args.model, device=args.device).model
    prompts = build_prompt_set(load_family_specs()[args.family], model.tokenizer, model.cfg.default_prepend_bos)
    pos, neg = answer_pair(prompts, "clean_vs_corrupted")
    es = ee.edge_set(model)
    scoring = ee.make_pair(model, prompts.corrupted_tokens, prompts.clean_tokens, pos, neg)
    eap, _ = ee.attribution_scores(model, scoring, es, 1)
    scores = eap.mean(-1).cpu().numpy()
    rng = np.random.default_rng(0)
    random_scores = np.where(es.valid, rng.random(es.valid.shape), 0.0)
    ks = sizes(es.n_edges)
    circuits = [greedy(es, scores, k) for k in ks] + [greedy(es, random_scores, k) for k in ks]
    removed = torch.as_tensor(np.stack([es.valid & ~c for c in circuits]))
    pair = ee.make_pair(model, prompts.clean_tokens, prompts.corrupted_tokens, pos, neg)  # X = clean, Y = corrupted
    before = earlier_run_edges(args.against)
    old, wall_old = timed(lambda: before(model, pair, es, removed), args.device)
    cpu_old = timed.last_cpu
    new, wall_new = timed(lambda: ee.run_edges(model, pair, es, removed), args.device)
    cpu_new = timed.last_cpu
    report = {
        "machine": describe_machine(args.device), "model": args.model, "family": args.family,
        "n_prompts": prompts.n_prompts, "tokens_per_prompt": int(prompts.clean_tokens.shape[1]),
        "n_edges": es.n_edges, "circuits": len(circuits), "against": args.against,
        "earlier": {"wall_s": round(wall_old, 2), "cpu_s": round(cpu_old, 2)},
        "now": {"wall_s": round(wall_new, 2), "cpu_s": round(cpu_new, 2)},
        "cpu_ratio_now_over_earlier": round(cpu_new / cpu_old, 3),
        "max_abs_ld_difference": float((new - old).abs().max()),
    }
    text = json.dumps(report, indent=2)
    print(text)
    if args.out:
        args.out.write_text(text + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
