"""Where loading a local checkpoint goes: the checks before the run (report/run/checkpoint.py) and the load itself
(reading the weights into the Hugging Face model, building the TransformerLens bridge, the weight processing).

    python benchmarks/load.py PATH/TO/CHECKPOINT [--profile N]

Wall and CPU seconds per stage, in one process (the first stage pays the imports, stated separately). A
GPT-2-small-shaped checkpoint for this: tests/conftest.py's save_tiny_gpt2(folder, n_layer=12, n_head=12,
n_embd=768). --profile N prints the N costliest functions of the whole load (cumulative time).
"""

from __future__ import annotations

import argparse
import cProfile
import pstats
import time
from contextlib import contextmanager


@contextmanager
def stage(table: list, name: str):
    wall, cpu = time.perf_counter(), time.process_time()
    yield
    table.append((name, time.perf_counter() - wall, time.process_time() - cpu))


def measure(path: str) -> list[tuple[str, float, float]]:
    table: list = []
    with stage(table, "imports (torch, transformers, transformer_lens)"):
        import transformer_lens  # noqa: F401
        import transformers  # noqa: F401

        from report.run import checkpoint, model, model_source
        from report.run.processing import processing_for
    with stage(table, "checks: config, architecture, weight files"):
        resolved = model_source.resolve_source(path)
        config = checkpoint._config(path, resolved)
        architecture = checkpoint.check_architecture(path, config)
        checkpoint.check_weight_files(path, __import__("pathlib").Path(resolved))
    with stage(table, "checks: weight coverage (meta device)"):
        checkpoint.check_coverage(path, resolved, config, architecture)
    with stage(table, "checks: tokenizer"):
        checkpoint._tokenizer(path, resolved)
    with stage(table, "boot: HF weights + bridge"):
        bridge = model._boot(path, resolved, "cpu")
    with stage(table, "weight processing (compatibility mode)"):
        bridge.enable_compatibility_mode(**processing_for(bridge.cfg), disable_warnings=True)
    return table


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("path")
    parser.add_argument("--profile", type=int, default=0)
    args = parser.parse_args()
    profiler = cProfile.Profile() if args.profile else None
    if profiler:
        profiler.enable()
    table = measure(args.path)
    if profiler:
        profiler.disable()
    print(f"{'stage':50} {'wall s':>8} {'cpu s':>8}")
    for name, wall, cpu in table:
        print(f"{name:50} {wall:8.2f} {cpu:8.2f}")
    after_imports = table[1:]
    print(f"{'total after imports':50} {sum(w for _, w, _ in after_imports):8.2f} "
          f"{sum(c for _, _, c in after_imports):8.2f}")
    if profiler:
        pstats.Stats(profiler).sort_stats("cumulative").print_stats(args.profile)


if __name__ == "__main__":
    main()
