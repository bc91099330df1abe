"""Benchmark: analyses of one family as the working tree computes them, against the same at an earlier revision.

Both sides run `weekday-circuits run` (`python -m report.cli run`) in a subprocess of this script, one after the
other on the same machine: first the code of --against (a `git archive` of that revision, unpacked in a temporary
folder), then the working tree. Each side's manifest gives every unit's wall and CPU seconds (the process's user +
system time, all threads; on a shared machine the wall clock also measures the neighbours, the CPU time much
less). Then every array both sides saved is compared: the largest absolute difference per unit says whether the
numbers stayed the same (float32: up to ~1e-4 from batching in other chunks; a real change shows as more).

    python benchmarks/against_revision.py --against 282cfac --families tomorrow \
        --analyses ablations,circuit,edge_circuits --out against.json
(defaults: the bundled Gemma 3 270M on the CPU; --model and --device as for `run`; extra `run` options after --)
Writes a markdown table to stdout and the numbers as JSON to --out.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tarfile
import tempfile
from io import BytesIO
from pathlib import Path

import numpy as np
from safetensors.numpy import load_file

ROOT = Path(__file__).resolve().parents[1]


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--against", required=True, help="a git revision of this repository")
    p.add_argument("--families", default="tomorrow")
    p.add_argument("--analyses", required=True)
    p.add_argument("--model", default="gemma-3-270m")
    p.add_argument("--device", default="cpu")
    p.add_argument("--out", type=Path, default=None)
    p.add_argument("extra", nargs="*", help="more `run` options, after --")
    return p.parse_args()


def unpack(revision: str, folder: Path) -> Path:
    """The tracked files of `revision`, unpacked under `folder`."""
    archive = subprocess.run(["git", "-C", str(ROOT), "archive", "--format=tar", revision], check=True,
                             capture_output=True).stdout
    with tarfile.open(fileobj=BytesIO(archive)) as tar:
        tar.extractall(folder, filter="data")
    return folder


def run_side(code: Path, out: Path, args) -> dict:
    """Run the analyses with the code under `code` (its packages first on the path); unit -> seconds."""
    command = [sys.executable, "-m", "report.cli", "run", "--model", args.model, "--device", args.device,
               "--families", args.families, "--analyses", args.analyses, "--out", str(out), "--run-id", "side",
               *args.extra]
    env = {**os.environ, "PYTHONPATH": str(code), "TQDM_DISABLE": "1", "HF_HUB_OFFLINE": "1"}
    subprocess.run(command, cwd=code, env=env, check=True)
    manifest = json.loads((out / "side" / "manifest.json").read_text(encoding="utf-8"))
    units = {}
    for model, entry in manifest["models"].items():
        for unit, record in entry.get("analyses", {}).items():  # "family/analysis[-corruption]"
            units[f"{model}/{unit}"] = {"wall_s": record["seconds"], "cpu_s": record["cpu_seconds"]}
    return units


def largest_difference(before: Path, after: Path) -> float | None:
    """The largest |difference| over every array both result folders saved (None when they share none)."""
    if not (before / "arrays.safetensors").exists() or not (after / "arrays.safetensors").exists():
        return None
    a, b = load_file(before / "arrays.safetensors"), load_file(after / "arrays.safetensors")
    shared = [k for k in a if k in b and a[k].shape == b[k].shape and a[k].dtype.kind == "f"]
    if not shared:
        return None
    return max(float(np.nanmax(np.abs(a[k] - b[k]), initial=0.0)) for k in shared)


def main() -> None:
    args = parse_args()
    with tempfile.TemporaryDirectory(prefix="against-") as tmp:
        tmp = Path(tmp)
        earlier = run_side(unpack(args.against, tmp / "code"), tmp / "earlier", args)
        now = run_side(ROOT, tmp / "now", args)
        rows = []
        for unit in sorted(set(earlier) & set(now)):
            model, family, name = unit.split("/")
            diff = largest_difference(tmp / "earlier" / "side" / model / family / name,
                                      tmp / "now" / "side" / model / family / name)
            rows.append({"unit": unit, "earlier": earlier[unit], "now": now[unit],
                         "cpu_ratio": round(now[unit]["cpu_s"] / max(earlier[unit]["cpu_s"], 1e-9), 3),
                         "max_abs_difference": diff})
    report = {"machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, {args.device}",
              "against": args.against, "families": args.families, "analyses": args.analyses, "model": args.model,
              "units": rows,
              "total": {side: {k: round(sum(r[side][k] for r in rows), 1) for k in ("wall_s", "cpu_s")}
                        for side in ("earlier", "now")}}
    print(f"| unit | {args.against}: wall s / CPU s | now: wall s / CPU s | CPU ratio | largest difference |")
    print("|---|---|---|---|---|")
    for r in rows:
        diff = "—" if r["max_abs_difference"] is None else f"{r['max_abs_difference']:.1e}"
        print(f"| {r['unit']} | {r['earlier']['wall_s']:.1f} / {r['earlier']['cpu_s']:.1f} | "
              f"{r['now']['wall_s']:.1f} / {r['now']['cpu_s']:.1f} | {r['cpu_ratio']:.2f} | {diff} |")
    t = report["total"]
    print(f"| total | {t['earlier']['wall_s']} / {t['earlier']['cpu_s']} | {t['now']['wall_s']} / "
          f"{t['now']['cpu_s']} | {t['now']['cpu_s'] / max(t['earlier']['cpu_s'], 1e-9):.2f} | |")
    if args.out:
        args.out.write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
