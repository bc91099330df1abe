"""Benchmark: the family context and the circuit grid's prefix sharing, against the straightforward way, in one run.

    python benchmarks/shared_work.py PATH/TO/CHECKPOINT [--family tomorrow] [--skip-analyses]

1. The five intervening analyses of one family (both corruptions): each with a fresh context (what every analysis
   computed alone before) against one shared `FamilyContext` (the pipeline's way now).
2. The circuit grid's rows (top-n of a ranking for every n of the grid, two rankings): `run_rows` (each row from
   its first edited layer) against `run_rows_sharing_prefixes`.
For each: wall seconds, CPU seconds (process, all threads) and the rows that went through a block (batch rows summed
over every block call: a count of the work that does not depend on how busy the machine is).
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402
import torch  # noqa: E402

from analyses import REGISTRY  # noqa: E402
from analyses import engine as engine  # noqa: E402
from analyses.common.types import FamilyContext  # noqa: E402
from analyses.methods.circuit_search import circuit_rows, size_grid  # noqa: E402
from analyses.methods.mechanism import node_hook, nodes  # noqa: E402
from report.store.results import units  # noqa: E402


class BlockRows:
    """Adds up the batch rows of every block call while active."""

    def __init__(self, model):
        self.model, self.rows, self.handles = model, 0, []

    def __enter__(self):
        def count(module, args, kwargs):
            self.rows += (args[0] if args else kwargs["hidden_states"]).shape[0]

        self.handles = [b.register_forward_pre_hook(count, with_kwargs=True) for b in self.model.blocks]
        return self

    def __exit__(self, *exc):
        for handle in self.handles:
            handle.remove()


def timed(model, function):
    wall, cpu = time.perf_counter(), time.process_time()
    with BlockRows(model) as rows, torch.no_grad():
        function()
    return time.perf_counter() - wall, time.process_time() - cpu, rows.rows


def analyses_both_ways(model, prompts):
    work = [(a, p) for a in REGISTRY if a.uses_context for _, p in units(a, prompts)]

    def alone():
        for analysis, unit_prompts in work:
            analysis.compute(model, unit_prompts)

    def shared():
        context = FamilyContext(model)
        for analysis, unit_prompts in work:
            analysis.compute(model, unit_prompts, context=context)

    return timed(model, alone), timed(model, shared)


def grid_both_ways(model, prompts):
    node_list = nodes(model.cfg.n_layers, model.cfg.n_heads)
    hooks = sorted({node_hook(n) for n in node_list})
    base = engine.collect_base(model, prompts.clean_tokens, hooks)
    rng = np.random.default_rng(0)
    keep_sets = [set(rng.permutation(len(node_list))[:n].tolist()) for _ in range(2) for n in size_grid(len(node_list))]
    rows = circuit_rows(node_list, keep_sets, {h: base.cache[h] for h in hooks})
    return (timed(model, lambda: engine.run_rows(model, base, rows)),
            timed(model, lambda: engine.run_rows_sharing_prefixes(model, base, rows)), len(rows))


def row(what: str, slow, fast) -> str:
    return (f"| {what} | {slow[0]:.1f} / {slow[1]:.1f} / {slow[2]} | {fast[0]:.1f} / {fast[1]:.1f} / {fast[2]} | "
            f"{slow[1] / fast[1]:.2f}× | {slow[2] / fast[2]:.2f}× |")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("path")
    parser.add_argument("--family", default="tomorrow")
    parser.add_argument("--skip-analyses", action="store_true")
    args = parser.parse_args()
    from report.run.families import build_prompt_set
    from report.run.families_file import load_family_specs
    from report.run.model import load_model

    model = load_model(args.path, device="cpu").model
    prompts = build_prompt_set(load_family_specs()[args.family], model.tokenizer, model.cfg.default_prepend_bos)
    print(f"model {Path(args.path).name}: {model.cfg.n_layers} layers, {model.cfg.n_heads} heads, d_model "
          f"{model.cfg.d_model}; family {args.family}, {prompts.n_prompts} prompts; torch threads "
          f"{torch.get_num_threads()}\n")
    print("| what | straightforward (wall s / CPU s / block rows) | shared (wall s / CPU s / block rows) | "
          "CPU ratio | block-row ratio |\n|---|---|---|---|---|")
    slow, fast, n_rows = grid_both_ways(model, prompts)
    print(row(f"circuit grid, {n_rows} rows", slow, fast))
    if not args.skip_analyses:
        slow, fast = analyses_both_ways(model, prompts)
        print(row("5 intervening analyses, both corruptions", slow, fast))


if __name__ == "__main__":
    main()
