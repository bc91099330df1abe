"""Benchmark: a whole `report` (run + build) on randomly initialised checkpoints of three sizes, stage by stage.

Shapes (configs only, random weights, GPT-2's tokenizer from tests/fixtures/gpt2-tokenizer, vocabulary 50257):
  gpt2-small    GPT-2, 12 layers, 12 heads, d_model 768                        (124M parameters)
  gpt2-xl       GPT-2, 48 layers, 25 heads, d_model 1600                       (1.56B)
  llama-3.2-1b  Llama, 16 layers, 32 heads (8 key-value), d_model 2048, d_mlp 8192, tied embeddings
                (1.08B with this vocabulary; the real model's 128k vocabulary makes it 1.24B)
Each shape runs every family and every analysis (unless --families / --analyses narrow it) through
`report.run.pipeline.run` and `report.publish.outputs.build` (the default --site form), exactly what
`weekday-circuits report` calls, and reports
the seconds of: loading the model; each analysis (summed over families, writing excluded); writing results
(summary, arrays, manifest); rendering the pages; the wall time of the whole report; with the device, dtype
(`--dtype auto` applies the project's rule: bfloat16 on CUDA above 1B parameters) and peak memory
(torch.cuda.max_memory_allocated on a GPU, the process's maximum resident set on the CPU). Building the
checkpoint is not timed. Offline: no network is needed or tried.

    python benchmarks/report_e2e.py --device cpu --shapes gpt2-small --out e2e-cpu.json
    python benchmarks/report_e2e.py --device cuda --shapes gpt2-small,gpt2-xl,llama-3.2-1b --out e2e-gpu.json
    python benchmarks/report_e2e.py --device cpu --model gemma-3-270m --analyses auto --out e2e-gemma.json
(--model: a model by name, e.g. the bundled default, instead of built shapes; its load is what the user's cache
gives: warm after the first load. --analyses auto is the command's default; `all` computes every analysis.)
Besides wall seconds, the process's CPU seconds (user + system, all threads) of the whole report: on a shared
machine the wall time includes waiting for the cores, the CPU time does not.
Targets on an H100/H200: gpt2-small <= 20 s wall including the build, gpt2-xl <= 180 s, rendering <= 20% of wall.
Writes the numbers as JSON to --out and a markdown table to stdout. Figures are in README.md (Benchmarks).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import shutil
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path

os.environ.setdefault("TQDM_DISABLE", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import torch  # noqa: E402

from analyses import REGISTRY  # noqa: E402
from report.run.catalogue import count_parameters  # noqa: E402
from report.run.dtype import resolve_dtype  # noqa: E402
from report.run.model import pick_device  # noqa: E402
from report.store import results  # noqa: E402

TOKENIZER_DIR = ROOT / "tests" / "fixtures" / "gpt2-tokenizer"
SHAPES = {
    "gpt2-small": ("GPT2Config", dict(n_layer=12, n_head=12, n_embd=768, n_positions=1024)),
    "gpt2-xl": ("GPT2Config", dict(n_layer=48, n_head=25, n_embd=1600, n_positions=1024)),
    "llama-3.2-1b": ("LlamaConfig", dict(num_hidden_layers=16, num_attention_heads=32, num_key_value_heads=8,
                                         hidden_size=2048, intermediate_size=8192, head_dim=64,
                                         max_position_embeddings=2048, rope_theta=500000.0,
                                         tie_word_embeddings=True, rms_norm_eps=1e-5)),
}
TARGETS_GPU = {"gpt2-small": 20.0, "gpt2-xl": 180.0}  # seconds of wall time, whole report
RENDER_SHARE_TARGET = 0.20


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"))
    p.add_argument("--shapes", default="gpt2-small", help=f"comma-separated, of {', '.join(SHAPES)}")
    p.add_argument("--dtype", default="auto", choices=("auto", "float32", "bfloat16", "float16"))
    p.add_argument("--model", default=None, help="a model name or folder instead of --shapes (gemma-3-270m)")
    p.add_argument("--families", default="all")
    p.add_argument("--analyses", default="all")
    p.add_argument("--out", type=Path, default=None, help="JSON file for the numbers")
    p.add_argument("--workdir", type=Path, default=None, help="where checkpoints, runs and sites go (default: tmp)")
    p.add_argument("--keep", action="store_true", help="keep the work folder")
    return p.parse_args()


def build_checkpoint(shape: str, folder: Path, device: str, save_dtype: torch.dtype) -> None:
    """A randomly initialised checkpoint of the shape, saved with GPT-2's tokenizer (initialised on the device)."""
    import transformers

    config_class, arguments = SHAPES[shape]
    tokenizer = transformers.GPT2TokenizerFast.from_pretrained(TOKENIZER_DIR)
    config = getattr(transformers, config_class)(
        vocab_size=len(tokenizer), bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
        **arguments)
    torch.manual_seed(0)
    with torch.device(device):
        model = transformers.AutoModelForCausalLM.from_config(config, dtype=save_dtype)
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    del model


class WriteTimer:
    """Wraps results.save_result and results.write_json_atomic (manifest) to add up the time spent writing."""

    def __init__(self):
        self.by_analysis: dict[str, float] = defaultdict(float)
        self.manifest = 0.0
        self._save, self._json = results.save_result, results.write_json_atomic

    def __enter__(self):
        def save(folder, result, *args):
            started = time.perf_counter()
            checksums = self._save(folder, result, *args)
            self.by_analysis[analysis_of(Path(folder).name)] += time.perf_counter() - started
            return checksums

        def write_json(path, data):
            started = time.perf_counter()
            self._json(path, data)
            if Path(path).name == results.MANIFEST:
                self.manifest += time.perf_counter() - started

        results.save_result, results.write_json_atomic = save, write_json
        return self

    def __exit__(self, *exc):
        results.save_result, results.write_json_atomic = self._save, self._json


def analysis_of(unit: str) -> str:
    """'patching_positions-day' -> 'patching_positions': per-corruption results add up under their analysis."""
    return unit.split("-", 1)[0]


def peak_memory_gib(device: str) -> float:
    if device == "cuda":
        return torch.cuda.max_memory_allocated() / 1024**3
    rss_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux
    return rss_kib / 1024**2


def run_shape(shape: str, args, device: str, work: Path) -> dict:
    from report.publish.outputs import OutputOptions, build
    from report.run.options import RunOptions
    from report.run.pipeline import run as run_pipeline

    folder = work / shape
    n_params_guess = None
    if args.model:
        folder = args.model
    elif not folder.is_dir():
        started = time.perf_counter()
        auto = resolve_dtype(args.dtype, device, 2 * 10**9 if shape != "gpt2-small" else 10**8)
        build_checkpoint(shape, folder, device, torch.bfloat16 if auto != "float32" else torch.float32)
        print(f"[{shape}] checkpoint built in {time.perf_counter() - started:.1f} s (not timed)", file=sys.stderr)
    n_params_guess = count_parameters(str(folder)) if not args.model else None
    if device == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()
    options = RunOptions(models=[str(folder)], families=args.families, analyses=args.analyses, out=work / "runs",
                         device=device, run_id=f"{shape}-{int(time.time())}", dtype=args.dtype,
                         command=f"benchmarks/report_e2e.py {shape}")
    started, cpu_started = time.perf_counter(), time.process_time()
    with WriteTimer() as writes:
        run_dir = run_pipeline(options)
        run_seconds = time.perf_counter() - started
        render_started = time.perf_counter()
        build([run_dir], OutputOptions(site=work / "sites" / shape))
        render_seconds = time.perf_counter() - render_started
    wall, cpu = time.perf_counter() - started, time.process_time() - cpu_started
    manifest = json.loads((run_dir / results.MANIFEST).read_text())
    (model,) = manifest["models"].values()
    analyses: dict[str, float] = defaultdict(float)
    analyses_cpu: dict[str, float] = defaultdict(float)
    for key, entry in model["analyses"].items():
        if entry.get("status") != "complete":
            continue  # skipped (architecture, or at chance under auto): no time
        analyses[analysis_of(key.split("/", 1)[1])] += entry["seconds"] or 0.0
        analyses_cpu[analysis_of(key.split("/", 1)[1])] += entry.get("cpu_seconds") or 0.0
    compute = {name: analyses[name] - writes.by_analysis.get(name, 0.0) for name in analyses}
    writing = sum(writes.by_analysis.values()) + writes.manifest
    pages = list((work / "sites" / shape).rglob("*.html"))
    return {
        "shape": shape, "device": device, "dtype": model["dtype"], "n_params": n_params_guess,
        "n_families": sum(1 for f in model["families"].values() if f["status"] == "ok"),
        "load_seconds": model["load_seconds"], "load_cpu_seconds": model.get("load_cpu_seconds"),
        "analysis_cpu_seconds": {a.name: round(analyses_cpu[a.name], 3) for a in REGISTRY if a.name in analyses_cpu},
        "analysis_seconds": {a.name: round(compute[a.name], 3) for a in REGISTRY if a.name in compute},
        "writing_seconds": round(writing, 3), "run_seconds": round(run_seconds, 3),
        "rendering_seconds": round(render_seconds, 3), "wall_seconds": round(wall, 3), "cpu_seconds": round(cpu, 3),
        "n_families_intervened": sum(1 for f in model["families"].values() if f.get("auto_interventions", True)
                                     and f["status"] == "ok"),
        "rendering_share": round(render_seconds / wall, 3), "peak_memory_gib": round(peak_memory_gib(device), 2),
        "peak_memory_kind": "torch.cuda.max_memory_allocated" if device == "cuda" else "process max RSS",
        "pages_mib": round(sum(p.stat().st_size for p in pages) / 1024**2, 1), "n_pages": len(pages),
    }


def machine(device: str) -> str:
    if device == "cuda":
        return f"{torch.cuda.get_device_name(0)}, torch {torch.__version__}, CUDA {torch.version.cuda}"
    return f"{platform.processor() or platform.machine()} ({os.cpu_count()} cores), torch {torch.__version__}"


def table(rows: list[dict]) -> str:
    names = [a.name for a in REGISTRY if any(a.name in r["analysis_seconds"] for r in rows)]
    head = "| stage | " + " | ".join(r["shape"] for r in rows) + " |\n|---|" + "---|" * len(rows) + "\n"
    lines = [("device, dtype", [f"{r['device']}, {r['dtype']}" for r in rows]),
             ("parameters", [f"{r['n_params'] / 1e6:.0f}M" if r["n_params"] else "?" for r in rows]),
             ("families (with interventions)", [f"{r['n_families']} ({r.get('n_families_intervened', '?')})"
                                                for r in rows]),
             ("load (s wall / CPU)", [f"{r['load_seconds']:.1f} / {r.get('load_cpu_seconds') or float('nan'):.1f}"
                                      for r in rows])]
    lines += [(f"{name} (s wall / CPU)", [f"{r['analysis_seconds'].get(name, float('nan')):.1f} / "
                                          f"{r.get('analysis_cpu_seconds', {}).get(name, float('nan')):.1f}"
                                          for r in rows]) for name in names]
    lines += [("writing results (s)", [f"{r['writing_seconds']:.1f}" for r in rows]),
              ("rendering (s)", [f"{r['rendering_seconds']:.1f} ({100 * r['rendering_share']:.0f}%)" for r in rows]),
              ("**wall, whole report (s)**", [f"**{r['wall_seconds']:.1f}**" for r in rows]),
              ("CPU, whole report (s)", [f"{r.get('cpu_seconds', float('nan')):.1f}" for r in rows]),
              ("peak memory (GiB)", [f"{r['peak_memory_gib']:.1f}" for r in rows]),
              ("pages (MiB)", [f"{r['pages_mib']:.0f} in {r['n_pages']}" for r in rows])]
    return head + "\n".join(f"| {label} | " + " | ".join(cells) + " |" for label, cells in lines)


def target_lines(rows: list[dict]) -> list[str]:
    out = []
    for r in rows:
        if r["device"] != "cuda":
            continue
        if r["shape"] in TARGETS_GPU:
            ok = r["wall_seconds"] <= TARGETS_GPU[r["shape"]]
            out.append(f"{r['shape']}: wall {r['wall_seconds']:.1f} s, target <= {TARGETS_GPU[r['shape']]:.0f} s: "
                       + ("met" if ok else "MISSED"))
        out.append(f"{r['shape']}: rendering {100 * r['rendering_share']:.0f}% of wall, target <= 20%: "
                   + ("met" if r["rendering_share"] <= RENDER_SHARE_TARGET else "MISSED"))
    return out


def main() -> None:
    args = parse_args()
    device = pick_device(args.device)
    shapes = [s.strip() for s in args.shapes.split(",") if s.strip()] if not args.model else [args.model]
    unknown = [s for s in shapes if s not in SHAPES and not args.model]
    if unknown:
        sys.exit(f"unknown shape(s) {unknown}; known: {', '.join(SHAPES)}")
    work = args.workdir or Path(tempfile.mkdtemp(prefix="report-e2e-"))
    rows = []
    try:
        for shape in shapes:
            rows.append(run_shape(shape, args, device, work))
            print(f"[{shape}] wall {rows[-1]['wall_seconds']:.1f} s", file=sys.stderr)
            if args.out:  # after every shape, so a time-out still leaves the finished ones
                args.out.write_text(json.dumps({"machine": machine(device), "rows": rows}, indent=1) + "\n")
            if not args.model:
                shutil.rmtree(work / shape, ignore_errors=True)  # the checkpoint: GBs for the large shapes
    finally:
        if not args.keep and args.workdir is None:
            shutil.rmtree(work, ignore_errors=True)
    print(f"machine: {machine(device)}; families: {args.families}; analyses: {args.analyses}\n")
    print(table(rows))
    for line in target_lines(rows):
        print(line)


if __name__ == "__main__":
    main()
