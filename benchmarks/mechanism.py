"""Benchmark: the mechanism sweeps, batched (`analyses.engine.run_rows`) vs one forward per intervention.

Same randomly initialised GPT-2-shaped checkpoint and tokenizer as benchmarks/patching.py (default: GPT-2 small's
shape), one prompt family (templates x items), and in the same run:
  ablations    every head and MLP x (zero, mean, resample): batched rows vs `looped_rows` (one full forward each);
  circuit      the faithfulness grid (top-n kept, the rest mean-ablated): batched vs looped;
  path patching from SENDERS heads to every later q/k/v/MLP input and the logits: `analyses.methods.paths.path_effects`
               (three batched passes) vs the reference of the tests (per path, a forward with every other component
               frozen, then a forward with the receiver's input replaced: two full forwards per path).
The loop is timed on a random sample of --loop-rows interventions (seed 0) and scaled to all of them; the report
prints both, and the largest |difference| of the logit difference on the sampled rows.

    python benchmarks/mechanism.py                     # CPU, GPT-2-small shape
    python benchmarks/mechanism.py --layers 4 --d-model 256 --heads 8      # quick
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))
sys.path.insert(0, str(ROOT / "tests"))

import torch  # noqa: E402
from patching import build_checkpoint, describe_machine, timed  # noqa: E402

from analyses import engine as engine  # noqa: E402
from analyses.methods import paths  # noqa: E402
from analyses.methods.circuit_search import circuit_rows, size_grid  # noqa: E402
from analyses.methods.mechanism import node_hook, nodes  # noqa: E402
from analyses.methods.node_ablations import ablation_rows  # noqa: E402

SENDERS = [(0, 0), (1, 1), (2, 2)]


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--device", default="auto")
    p.add_argument("--family", default="tomorrow")
    p.add_argument("--layers", type=int, default=12)
    p.add_argument("--heads", type=int, default=12)
    p.add_argument("--d-model", type=int, default=768)
    p.add_argument("--loop-rows", type=int, default=24, help="interventions timed in the loop (scaled to all)")
    p.add_argument("--json", type=Path, default=None)
    return p.parse_args()


def ld(logits: torch.Tensor, prompts) -> torch.Tensor:
    rows = torch.arange(logits.shape[-2])
    return logits[..., rows, prompts.answer_ids] - logits[..., rows, prompts.corrupted_answer_ids]


def compare_rows(name, model, base, rows, prompts, device, n_loop) -> dict:
    final, t_batched = timed(lambda: engine.run_rows(model, base, rows)[0], device)
    sample = sorted(random.Random(0).sample(range(len(rows)), min(n_loop, len(rows))))
    looped, t_sample = timed(lambda: engine.looped_rows(model, base.tokens, [rows[i] for i in sample])[0], device)
    batched = engine.final_logits(model, final[sample])
    diff = float((ld(batched, prompts) - ld(looped, prompts)).abs().max())
    t_loop = t_sample * len(rows) / len(sample)
    print(f"  {name:13s} {len(rows):5d} interventions  batched {t_batched:8.2f} s   loop {t_loop:8.2f} s "
          f"(timed on {len(sample)})   x{t_loop / t_batched:6.1f}   max|diff LD| {diff:.1e}", flush=True)
    return {"interventions": len(rows), "batched_s": t_batched, "loop_s": t_loop, "loop_sampled": len(sample),
            "speedup": t_loop / t_batched, "max_abs_diff": diff}


def compare_paths(model, prompts, device, n_loop) -> dict:
    from test_mechanism_analyses import _batched_effect, _reference_path, reference_caches

    ps = paths.setup(model, prompts)
    effects, t_batched = timed(lambda: paths.path_effects(model, ps, SENDERS), device)
    L, H, n_kv = model.cfg.n_layers, model.cfg.n_heads, effects["v"].shape[2]
    every = [(k, ("logits",)) for k in range(len(SENDERS))]
    for k, (ls, _) in enumerate(SENDERS):
        every += [(k, ("mlp", lr, None)) for lr in range(ls, L)]
        every += [(k, (kind, lr, u)) for lr in range(ls + 1, L) for kind, n in (("q", H), ("k", n_kv), ("v", n_kv))
                  for u in range(n)]
    sample = random.Random(0).sample(every, min(n_loop, len(every)))
    caches = reference_caches(model, prompts)  # shared by every path: the loop pays only its two forwards per path
    refs, t_sample = timed(lambda: [_reference_path(model, prompts, SENDERS[k], r, caches) for k, r in sample],
                           device)
    diff = max(float((_batched_effect(effects, k, r) - ref).abs().max()) for (k, r), ref in zip(sample, refs))
    t_loop = t_sample * len(every) / len(sample)
    print(f"  {'path patching':13s} {len(every):5d} paths          batched {t_batched:8.2f} s   loop {t_loop:8.2f} s "
          f"(timed on {len(sample)})   x{t_loop / t_batched:6.1f}   max|diff LD| {diff:.1e}", flush=True)
    return {"paths": len(every), "batched_s": t_batched, "loop_s": t_loop, "loop_sampled": len(sample),
            "speedup": t_loop / t_batched, "max_abs_diff": diff}


def main() -> None:
    args = parse_args()
    device = ("cuda" if torch.cuda.is_available() else "cpu") if args.device == "auto" else args.device
    from report.run.families import build_prompt_set
    from report.run.families_file import load_family_specs
    from report.run.model import load_model

    machine = describe_machine(device)
    print("machine:", json.dumps(machine))
    with tempfile.TemporaryDirectory() as folder:
        build_checkpoint(Path(folder), args.layers, args.heads, args.d_model)
        model = load_model(folder, device=device).model
    prompts = build_prompt_set(load_family_specs()[args.family], model.tokenizer, model.cfg.default_prepend_bos)
    print(f"model: {args.layers} layers, {args.heads} heads, d_model {args.d_model}; family '{args.family}': "
          f"{prompts.n_prompts} prompts x {prompts.clean_tokens.shape[1]} tokens")
    node_list = nodes(model.cfg.n_layers, model.cfg.n_heads)
    hooks = sorted({node_hook(n) for n in node_list})
    base = engine.collect_base(model, prompts.clean_tokens, hooks)
    _, corrupted = model.run_with_cache(prompts.corrupted_tokens.to(base.tokens.device), names_filter=hooks)
    engine.run_rows(model, base, ablation_rows(node_list[-2:], base.cache, corrupted))  # warm-up
    report = {"machine": machine, "shape": vars(args) | {"json": None}}
    report["ablations"] = compare_rows("ablations", model, base, ablation_rows(node_list, base.cache, corrupted),
                                       prompts, device, args.loop_rows)
    order = list(range(len(node_list)))
    keep = [set(order[:n]) for n in size_grid(len(node_list))]
    report["circuit"] = compare_rows("circuit", model, base, circuit_rows(node_list, keep,
                                     {h: base.cache[h].mean(0) for h in hooks}), prompts, device, args.loop_rows)
    report["path_patching"] = compare_paths(model, prompts, device, args.loop_rows)
    if args.json:
        args.json.write_text(json.dumps(report, indent=1, default=str))


if __name__ == "__main__":
    main()
