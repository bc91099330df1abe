"""Benchmark: EAP-IG over every edge of a model for one family, beside exact edge patching, in the same run.

Default: the bundled Gemma 3 270M (`--model gemma-3-270m`, offline), family `tomorrow` (every template x item),
day corruption. Timed, each with wall-clock and this process's CPU seconds (on a shared machine the wall clock also
measures the neighbours):
  eap_ig       `edge_engine.attribution_scores` with --steps steps: every edge's EAP and EAP-IG at once;
  exact        `edge_engine.run_edges` on the --exact edges with the largest |EAP-IG|, one edge removed per row
               (batched; the check the analysis runs), and the cost per edge;
  looped       `edge_engine.looped_edge_patching` (full forwards per edge, the straightforward method) on the first
               --looped of those edges, and the largest |difference| from the batched values.
Estimated cost of patching every edge exactly = per-edge cost x the number of edges (batched and looped).

    nice -n 10 python benchmarks/edges.py                       # bundled Gemma, CPU
    python benchmarks/edges.py --model path/to/checkpoint --device cuda
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

import torch  # noqa: E402
from patching import describe_machine, timed  # noqa: E402

from analyses import engine as ee  # noqa: E402
from analyses.common.metrics import answer_pair  # noqa: E402


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--model", default="gemma-3-270m")
    p.add_argument("--device", default="cpu")
    p.add_argument("--family", default="tomorrow")
    p.add_argument("--steps", type=int, default=5)
    p.add_argument("--exact", type=int, default=24)
    p.add_argument("--looped", type=int, default=3)
    p.add_argument("--out", type=Path, default=None, help="also write the numbers here as JSON")
    return p.parse_args()


def main() -> None:
    args = parse_args()
    from report.run.families import build_prompt_set
    from report.run.families_file import load_family_specs
    from report.run.model import load_model

    model = load_model(args.model, device=args.device).model
    prompts = build_prompt_set(load_family_specs()[args.family], model.tokenizer, model.cfg.default_prepend_bos)
    pos, neg = answer_pair(prompts, "clean_vs_corrupted")
    es = ee.edge_set(model)
    pair = ee.make_pair(model, prompts.corrupted_tokens, prompts.clean_tokens, pos, neg)
    (eap, eap_ig), wall_ig = timed(lambda: ee.attribution_scores(model, pair, es, args.steps), args.device)
    cpu_ig = timed.last_cpu
    mean = eap_ig.mean(-1)
    order = torch.argsort(mean.abs().flatten(), descending=True)[:args.exact]
    edges = [(int(i) // mean.shape[1], int(i) % mean.shape[1]) for i in order]
    batched, wall_exact = timed(lambda: ee.run_edges(model, pair, es, ee.single_edge_masks(es, edges)), args.device)
    cpu_exact = timed.last_cpu
    looped, wall_loop = timed(lambda: ee.looped_edge_patching(model, pair, es, edges[:args.looped]), args.device)
    cpu_loop = timed.last_cpu
    per_edge = wall_exact / len(edges)
    per_edge_loop = wall_loop / max(1, args.looped)
    report = {
        "machine": describe_machine(args.device), "model": args.model, "family": args.family,
        "n_prompts": prompts.n_prompts, "tokens_per_prompt": int(prompts.clean_tokens.shape[1]),
        "n_edges": es.n_edges, "n_senders": len(es.senders), "n_receivers": len(es.receivers),
        "steps": args.steps,
        "eap_ig_all_edges": {"wall_s": round(wall_ig, 2), "cpu_s": round(cpu_ig, 2)},
        "exact_batched": {"edges": len(edges), "wall_s": round(wall_exact, 2), "cpu_s": round(cpu_exact, 2),
                          "wall_s_per_edge": round(per_edge, 4),
                          "all_edges_estimated_wall_s": round(per_edge * es.n_edges, 1)},
        "exact_looped": {"edges": args.looped, "wall_s": round(wall_loop, 2), "cpu_s": round(cpu_loop, 2),
                         "wall_s_per_edge": round(per_edge_loop, 3),
                         "all_edges_estimated_wall_s": round(per_edge_loop * es.n_edges, 1)},
        "batched_vs_looped_speedup_per_edge": round(per_edge_loop / per_edge, 1),
        "batched_vs_looped_max_abs_diff_logits": float((batched[:args.looped] - looped).abs().max()),
    }
    print(json.dumps(report, indent=1))
    if args.out:
        args.out.write_text(json.dumps(report, indent=1) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
