"""Benchmark: one forward per patch (transformer_lens.patching) vs batched exact patching vs attribution patching.

Builds a randomly initialised GPT-2-small-shaped checkpoint (12 layers, 12 heads, d_model 768 by default) with
GPT-2's tokenizer (tests/fixtures/gpt2-tokenizer), takes one prompt family (7 prompts) and, in the same run,
times the six sweeps of the patching analyses three ways:
  (a) the loop: one full forward per patch, `transformer_lens.patching` (or `--loop reference`: this project's
      `looped_sweep`, the seed notebook's way);
  (b) `analyses.engine.exact_sweeps` (batched, later blocks only, two logits);
  (c) `analyses.engine.attribution_sweeps` (one forward + one backward for all six sweeps).
Prints seconds per sweep, speed-up ratios, the largest |difference| between (a) and (b), the arithmetic each
needs, and the achieved GFLOP/s against a float32 matmul peak measured here.

    python benchmarks/patching.py                      # CPU
    python benchmarks/patching.py --device cuda        # GPU: everything in one command
Targets: (b) >= 3x faster than (a) on a 2-core CPU, >= 30x on an H100/H200; (c) >= 50x.

The latest figures, with the machine that produced them, are in README.md (section Benchmarks).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from functools import partial
from pathlib import Path

os.environ.setdefault("TQDM_DISABLE", "1")  # transformer_lens.patching draws a progress bar per sweep

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402
import torch  # noqa: E402

from analyses import engine as core  # noqa: E402
from analyses.common import stats  # noqa: E402
from analyses.common.metrics import logit_diff  # noqa: E402

TOKENIZER_DIR = ROOT / "tests" / "fixtures" / "gpt2-tokenizer"
TL_SWEEPS = {  # sweep -> transformer_lens.patching function (one forward per patch)
    "resid_pre": "get_act_patch_resid_pre", "attn_out": "get_act_patch_attn_out",
    "mlp_out": "get_act_patch_mlp_out", "z": "get_act_patch_attn_head_out_all_pos",
    "v": "get_act_patch_attn_head_v_all_pos", "pattern": "get_act_patch_attn_head_pattern_all_pos",
}
TARGETS = {"cpu": 3.0, "cuda": 30.0}  # exact vs loop
ATTRIBUTION_TARGET = 50.0


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--device", default="auto", help="auto (cuda if available), cpu or cuda")
    p.add_argument("--family", default="tomorrow", help="prompt family of report/run/families.toml")
    p.add_argument("--layers", type=int, default=12)
    p.add_argument("--heads", type=int, default=12)
    p.add_argument("--d-model", type=int, default=768)
    p.add_argument("--loop", choices=("tl", "reference"), default="tl",
                   help="(a): transformer_lens.patching, or this project's looped_sweep")
    p.add_argument("--chunk-rows", type=int, default=None, help="rows per block call (default: from free memory)")
    p.add_argument("--repeats", type=int, default=1, help="repeat (b) and (c) and keep the fastest")
    p.add_argument("--json", type=Path, default=None, help="also write the numbers here")
    p.add_argument("--exact", action="append", default=[], metavar="top:K[,sample:S]",
                   help="also compare `--exact all` with this mode (AtP*, analyses/methods/verified.py) in the "
                        "same process: "
                        "CPU and wall seconds, ratio, top-10 agreement, estimated and true false-negative rates; "
                        "repeat for several modes")
    p.add_argument("--exact-only", action="store_true", help="skip the loop comparison: only the --exact modes")
    p.add_argument("--planted", type=int, nargs=2, default=None, metavar=("LAYER", "HEAD"),
                   help="a planted-circuit checkpoint (tests/planted_circuit.py) of this shape, its head at LAYER, "
                        "HEAD, instead of a random one")
    return p.parse_args()


def describe_machine(device: str) -> dict:
    info = {"platform": platform.platform(), "python": platform.python_version(), "torch": torch.__version__,
            "cpu": _cpu_model(), "cpu_count": os.cpu_count(), "torch_threads": torch.get_num_threads()}
    try:
        import psutil

        info["ram_gib"] = round(psutil.virtual_memory().total / 2**30, 1)
    except ImportError:
        pass
    from importlib.metadata import PackageNotFoundError, version

    for package in ("transformer-lens", "transformers"):
        try:
            info[package] = version(package)
        except PackageNotFoundError:
            info[package] = "unknown"
    if device == "cuda":
        props = torch.cuda.get_device_properties(0)
        info.update(gpu=props.name, gpu_memory_gib=round(props.total_memory / 2**30, 1), cuda=torch.version.cuda)
    return info


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def build_checkpoint(folder: Path, layers: int, heads: int, d_model: int) -> Path:
    """A randomly initialised GPT-2 of the given shape, with GPT-2's real tokenizer."""
    from transformers import GPT2Config, GPT2LMHeadModel, GPT2TokenizerFast

    torch.manual_seed(0)
    GPT2LMHeadModel(GPT2Config(n_layer=layers, n_head=heads, n_embd=d_model)).save_pretrained(folder)
    GPT2TokenizerFast.from_pretrained(TOKENIZER_DIR).save_pretrained(folder)
    return folder


def sync(device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()


def timed(fn, device: str, repeats: int = 1):
    """(result of the last call, fastest wall-clock seconds); its process CPU seconds go to `timed.last_cpu`.

    On a shared CPU, wall-clock time also measures the neighbours' load; this process's CPU time does not (much),
    so the report gives both.
    """
    best, out, cpu = float("inf"), None, float("inf")
    for _ in range(repeats):
        sync(device)
        start, start_cpu = time.perf_counter(), time.process_time()
        out = fn()
        sync(device)
        wall = time.perf_counter() - start
        if wall < best:
            best, cpu = wall, time.process_time() - start_cpu
    timed.last_cpu = cpu
    return out, best


def matmul_peak(device: str) -> float:
    """Best float32 GFLOP/s of a square matmul on this device (the yardstick for achieved GFLOP/s)."""
    n = 8192 if device == "cuda" else 2048
    a, b = torch.randn(n, n, device=device), torch.randn(n, n, device=device)
    (a @ b).sum().item()
    _, seconds = timed(lambda: a @ b, device, repeats=5)
    return 2 * n**3 / seconds / 1e9


def flops(cfg, runs: core.Runs) -> dict[str, float]:
    """Multiply-adds x 2 of one sweep, per method: what the arithmetic alone would cost."""
    B, S = runs.n_prompts, runs.corrupted_tokens.shape[1]
    d, d_mlp, L, V = cfg.d_model, cfg.d_mlp, cfg.n_layers, cfg.d_vocab
    per_token_layer = 8 * d * d + 4 * d * d_mlp + 4 * S * d  # QKVO, MLP, scores + weighted sum
    full_forward = B * S * (L * per_token_layer + 2 * d * V)
    out = {}
    for sweep in core.SWEEPS:
        units = runs.n_units(sweep)
        later_layers = sum(L - layer for layer in range(L))  # each patch runs blocks layer..L-1
        out[sweep] = {"loop": units * L * full_forward, "exact": units * B * S * later_layers * per_token_layer}
    out["attribution"] = 3 * full_forward  # one forward + a backward of about twice its cost
    return out


def loop_sweep(model, runs: core.Runs, sweep: str, kind: str) -> torch.Tensor:
    """(a): patched LD [layers, units, B] with one forward per patch."""
    if kind == "reference":
        return core.looped_sweep(model, runs, sweep)
    from transformer_lens import patching

    def metric(logits):
        return logit_diff(logits[:, -1], runs.pos_ids, runs.neg_ids)

    fn = getattr(patching, TL_SWEEPS[sweep])
    return fn(model, runs.corrupted_tokens, runs.clean, metric, reduce="none").values


def main() -> None:
    args = parse_args()
    device = ("cuda" if torch.cuda.is_available() else "cpu") if args.device == "auto" else args.device
    from report.run.families import build_prompt_set
    from report.run.families_file import load_family_specs
    from report.run.model import load_model

    machine = describe_machine(device)
    print("machine:", json.dumps(machine))
    peak = matmul_peak(device)
    print(f"float32 matmul peak measured here: {peak:.0f} GFLOP/s")
    with tempfile.TemporaryDirectory() as folder:
        if args.planted:
            sys.path.insert(0, str(ROOT / "tests"))
            from planted_circuit import save_planted_gpt2

            save_planted_gpt2(Path(folder), args.planted[0], args.planted[1], n_layer=args.layers, n_head=args.heads,
                              n_embd=args.d_model)
        else:
            build_checkpoint(Path(folder), args.layers, args.heads, args.d_model)
        model = load_model(folder, device=device).model
    prompts = build_prompt_set(load_family_specs()[args.family], model.tokenizer, model.cfg.default_prepend_bos)
    runs, setup = timed(lambda: core.collect_runs(model, prompts), device)
    chunk_rows = args.chunk_rows or core.auto_chunk_rows(model, runs)
    print(f"model: {args.layers} layers, {args.heads} heads, d_model {args.d_model}; family '{args.family}': "
          f"{runs.n_prompts} prompts x {runs.corrupted_tokens.shape[1]} tokens; chunk {chunk_rows} rows; "
          f"clean + corrupted caching {setup:.2f} s (shared by all methods)")
    warm_up(model, runs, chunk_rows)
    report = {}
    if not args.exact_only:
        report = benchmark(model, runs, args, device, chunk_rows)
        report.update(machine=machine, matmul_peak_gflops=peak, setup_s=setup, chunk_rows=chunk_rows)
        print_report(report, flops(model.cfg, runs), peak, device)
    if args.exact:
        report["exact_modes"] = compare_exact_modes(model, runs, args.exact, device, chunk_rows)
        report.update(machine=machine, planted=args.planted, shape=[args.layers, args.heads, args.d_model])
    if args.json:
        args.json.write_text(json.dumps(report, indent=1))


def warm_up(model, runs: core.Runs, chunk_rows: int) -> None:
    """Run each chunk shape once at the last layer (one block each): first calls of a shape pay one-off costs."""
    last = runs.n_layers - 1
    compositions = [(s,) for s in core.SWEEPS] + [tuple(core.SWEEPS)]
    for sweeps in compositions:
        patches = [p for s in sweeps for p in core.sweep_patches(runs, s) if p.layer == last]
        core.patched_logit_diffs(model, runs, patches, chunk_rows=chunk_rows)
    core.attribution_sweeps(model, runs)
    model(runs.corrupted_tokens)


def benchmark(model, runs: core.Runs, args, device: str, chunk_rows: int) -> dict:
    """Per sweep: (a) then (b), interleaved so that a drifting machine load hits both alike; then all at once."""
    per_sweep, diffs = {}, {}
    for sweep in core.SWEEPS:
        looped, t_loop = timed(partial(loop_sweep, model, runs, sweep, args.loop), device)
        cpu_loop = timed.last_cpu
        exact, t_exact = timed(partial(core.exact_sweeps, model, runs, (sweep,), chunk_rows=chunk_rows),
                               device, args.repeats)
        exact = exact[sweep]
        per_sweep[sweep] = {"loop_s": t_loop, "exact_s": t_exact, "loop_cpu_s": cpu_loop,
                            "exact_cpu_s": timed.last_cpu, "patches": looped[..., 0].numel()}
        k, c = runs.clean_ld.cpu().numpy(), runs.corrupted_ld.cpu().numpy()
        a, b = looped.float().cpu().numpy(), exact.float().cpu().numpy()
        normalised = np.abs(stats.normalise_mean(a, k, c) - stats.normalise_mean(b, k, c))
        diffs[sweep] = {"logit_diff": float(np.abs(a - b).max()), "normalised": float(normalised.max())}
        print(f"  {sweep:9s} loop {t_loop:8.2f} s   exact {t_exact:7.3f} s   x{t_loop / t_exact:6.1f}   "
              f"max|diff| {diffs[sweep]['logit_diff']:.1e}", flush=True)
    _, t_exact_all = timed(lambda: core.exact_sweeps(model, runs, chunk_rows=chunk_rows), device, args.repeats)
    cpu_exact_all = timed.last_cpu
    _, t_attr = timed(lambda: core.attribution_sweeps(model, runs), device, args.repeats)
    return {"per_sweep": per_sweep, "max_abs_diff": diffs, "exact_all_s": t_exact_all, "attribution_s": t_attr,
            "exact_all_cpu_s": cpu_exact_all, "attribution_cpu_s": timed.last_cpu, "loop_kind": args.loop}


def compare_exact_modes(model, runs: core.Runs, modes: list[str], device: str, chunk_rows: int) -> dict:
    """`--exact all` against each top:K mode, same process, same runs and attribution (computed once: every mode
    computes it anyway for the attribution panels). Per mode: CPU and wall seconds of the exact part, the ratio to
    all, per sweep the top-10 agreement (the top 10 by exact under all vs under the mode's ranking, verified cells
    by exact first), the estimated false-negative rate (from the sample) and the true one (over every unverified
    cell, from all's numbers)."""
    from analyses.methods import verified as verify
    sweeps = tuple(core.SWEEPS)
    attribution, t_attr = timed(lambda: core.attribution_sweeps(model, runs, sweeps), device)
    cpu_attr = timed.last_cpu
    full, t_all = timed(lambda: core.exact_sweeps(model, runs, sweeps, chunk_rows=chunk_rows), device)
    cpu_all = timed.last_cpu
    print(f"\n--exact all: {t_all:.2f} s wall, {cpu_all:.1f} CPU s (six sweeps; attribution {t_attr:.2f} s wall, "
          f"{cpu_attr:.1f} CPU s, computed in every mode)")
    out = {"all": {"wall_s": t_all, "cpu_s": cpu_all}, "attribution": {"wall_s": t_attr, "cpu_s": cpu_attr}}
    for text in modes:
        mode = verify.parse_exact(text)
        (values, infos), t = timed(lambda m=mode: verify.verified_sweeps(model, runs, sweeps, m.k, m.sample,
                                                                         attribution=attribution,
                                                                         chunk_rows=chunk_rows), device)
        row = {"wall_s": t, "cpu_s": timed.last_cpu, "cpu_ratio": timed.last_cpu / cpu_all, "wall_ratio": t / t_all,
               "sweeps": {}}
        for s in sweeps:
            exact_all = verify.cell_effect(full[s], runs).ravel()
            mine = verify.cell_effect(values[s], runs).ravel()
            attr = (attribution[s].mean(-1)).abs().double().cpu().numpy().ravel()
            info = infos[s]
            order = verify.ranking(np.where(info.verified.ravel(), mine, np.nan), attr)
            truth = np.argsort(-exact_all, kind="stable")[:10]
            top = info.top.ravel()
            threshold = exact_all[top].min() if top.any() else np.inf
            unverified = ~info.verified.ravel()
            row["sweeps"][s] = {
                "cells": int(exact_all.size), "verified": int(info.verified.sum()),
                "top10_agreement": len(set(truth.tolist()) & set(order[:10].tolist())) / min(10, exact_all.size),
                "fn_estimate": None if info.fn is None else info.fn.rate,
                "fn_sample": 0 if info.fn is None else info.fn.n,
                "fn_true": float((exact_all[unverified] >= threshold).mean()) if unverified.any() else None,
                "missed_top10": int(sum(1 for i in truth if unverified[i])),
                "max_abs_diff_verified": float((values[s] - full[s])[~torch.isnan(values[s])].abs().max()),
            }
        est_hits = sum(i.fn.hits for i in infos.values() if i.fn is not None)
        est_n = sum(i.fn.n for i in infos.values() if i.fn is not None)
        row["fn_estimate_pooled"] = est_hits / est_n if est_n else None
        row["fn_sample_pooled"] = est_n
        print(f"--exact {mode}: {t:.2f} s wall ({t / t_all:.2f} of all), {timed.last_cpu:.1f} CPU s "
              f"({timed.last_cpu / cpu_all:.2f} of all); estimated FN {est_hits}/{est_n}")
        for s, v in row["sweeps"].items():
            print(f"  {s:9s} {v['verified']:4d}/{v['cells']:4d} cells  top-10 agreement {v['top10_agreement']:.2f}  "
                  f"top-10 unverified {v['missed_top10']}  FN est {v['fn_estimate']} (n={v['fn_sample']})  "
                  f"true {v['fn_true']}  max|diff| {v['max_abs_diff_verified']:.1e}")
        out[str(mode)] = row
    return out


def print_report(report: dict, arithmetic: dict, peak: float, device: str) -> None:
    per = report["per_sweep"]
    loop_total = sum(v["loop_s"] for v in per.values())
    exact_sum = sum(v["exact_s"] for v in per.values())
    setup = report["setup_s"]
    flop_loop = sum(arithmetic[s]["loop"] for s in core.SWEEPS)
    flop_exact = sum(arithmetic[s]["exact"] for s in core.SWEEPS)
    print("\nseconds per sweep  (a) loop | (b) exact | speed-up | GFLOP/s (a) | GFLOP/s (b)")
    for s, v in per.items():
        rate_loop, rate_exact = arithmetic[s]["loop"] / v["loop_s"] / 1e9, arithmetic[s]["exact"] / v["exact_s"] / 1e9
        print(f"  {s:9s} {v['loop_s']:9.2f} | {v['exact_s']:8.3f} | {v['loop_s'] / v['exact_s']:7.1f}x | "
              f"{rate_loop:10.1f} | {rate_exact:10.1f}")
    exact_all, attr = report["exact_all_s"], report["attribution_s"]
    ratio_exact = loop_total / exact_all
    ratio_attr = loop_total / attr
    print(f"\nall six sweeps: (a) {loop_total:.2f} s | (b) {exact_all:.2f} s in one call ({exact_sum:.2f} s sweep by "
          f"sweep) | (c) attribution {attr:.3f} s (one forward + one backward, all six)")
    print(f"arithmetic needed: (a) {flop_loop / 1e12:.2f} TFLOP, (b) {flop_exact / 1e12:.2f} TFLOP "
          f"({flop_loop / flop_exact:.2f}x less)")
    print(f"achieved: (a) {flop_loop / loop_total / 1e9:.1f} GFLOP/s ({100 * flop_loop / loop_total / 1e9 / peak:.0f}% "
          f"of peak), (b) {flop_exact / exact_all / 1e9:.1f} GFLOP/s "
          f"({100 * flop_exact / exact_all / 1e9 / peak:.0f}% of peak), (c) "
          f"{arithmetic['attribution'] / attr / 1e9:.1f} GFLOP/s; peak {peak:.0f} GFLOP/s")
    worst = max(v["logit_diff"] for v in report["max_abs_diff"].values())
    worst_norm = max(v["normalised"] for v in report["max_abs_diff"].values())
    print(f"max |(a) - (b)|: {worst:.2e} logit diff, {worst_norm:.2e} normalised effect (must be < 1e-4 in fp32)")
    target = TARGETS.get(device, TARGETS["cpu"])
    with_setup = (loop_total + setup) / (exact_all + setup)
    print(f"speed-up (b) vs (a): {ratio_exact:.1f}x (target >= {target:.0f}x: "
          f"{'PASS' if ratio_exact >= target else 'FAIL'}); counting the shared caching run: {with_setup:.1f}x")
    print(f"speed-up (c) vs (a): {ratio_attr:.0f}x (target >= {ATTRIBUTION_TARGET:.0f}x: "
          f"{'PASS' if ratio_attr >= ATTRIBUTION_TARGET else 'FAIL'}); counting the caching run: "
          f"{(loop_total + setup) / (attr + setup):.0f}x")
    if device == "cpu":
        loop_cpu = sum(v["loop_cpu_s"] for v in per.values())
        print(f"process CPU seconds (insensitive to other processes' load): (a) {loop_cpu:.1f} | (b) "
              f"{report['exact_all_cpu_s']:.1f} -> {loop_cpu / report['exact_all_cpu_s']:.1f}x | (c) "
              f"{report['attribution_cpu_s']:.2f} -> {loop_cpu / report['attribution_cpu_s']:.0f}x")
    report.update(loop_total_s=loop_total, speedup_exact=ratio_exact, speedup_attribution=ratio_attr,
                  tflop_loop=flop_loop / 1e12, tflop_exact=flop_exact / 1e12, max_abs_diff_all=worst)


if __name__ == "__main__":
    main()
