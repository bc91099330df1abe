"""What a run's manifest records: the options and environment of each start or resume (package versions, git
commit, platform), and each model's and family's entry.
"""

from __future__ import annotations

import platform
import subprocess
import sys
import time
from importlib import metadata
from pathlib import Path

from analyses.methods import verified as exact_modes
from report.run.dtype import AUTO_RULE
from report.run.families import FamilySpec
from report.run.options import RunOptions
from report.store import results, results_format

PACKAGES = ("weekday-circuits", "torch", "transformer-lens", "transformers", "plotly", "circuitsvis", "jinja2",
            "einops", "click", "numpy")


def start_manifest(run_dir: Path, options: RunOptions, device: str, current: dict, manifest: dict | None) -> dict:
    """The manifest for this start or resume (written by report/run/pipeline.py `run`, under the SIGTERM handler)."""
    command = options.command or " ".join(sys.argv)
    if manifest is None:
        manifest = {"run_id": run_dir.name, results_format.KEY: results_format.CURRENT,
                    "created": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
                    "created_unix": time.time(), "command": command, "models": {}}
    else:  # the command that started the run stays; each resume is recorded beside it
        manifest.setdefault("resumes", []).append({"command": command, "at": time.strftime("%Y-%m-%d %H:%M:%S %Z")})
    families_file = Path(options.families_file).resolve() if options.families_file is not None else None
    manifest.update({
        "status": "running", "device": device, "definition": current,
        "options": {"models": list(options.models), "families": options.families, "analyses": options.analyses,
                    "families_file": str(families_file) if families_file else None, "dtype": options.dtype,
                    # --exact as given and as resolved for this run's device (auto: analyses/methods/verified.py
                    # resolve)
                    "exact": options.exact, "exact_resolved": str(exact_modes.resolve(options.exact, device)),
                    "steps": options.steps},
        "families_requested": list(current["families"]), "analyses_requested": list(current["analyses"]),
        "packages": _versions(), "git_commit": _git_commit(), "python": sys.version.split()[0],
        "platform": platform.platform(), "models_requested": list(options.models),
        "dtype_requested": options.dtype, "dtype_rule": AUTO_RULE,
        "shard": None if options.shard is None else {"index": options.shard.index, "count": options.shard.count},
    })
    return manifest


def saved_any(manifest: dict) -> bool:
    return any(isinstance(e, dict) and e.get("status") == "complete"
               for model in manifest["models"].values() for e in model.get("analyses", {}).values())


def unique_slug(manifest: dict, name: str) -> str:
    """The model's folder name; a second, different model with the same folder name gets a suffix."""
    base = results.slug(name)
    candidate, n = base, 2
    while candidate in manifest["models"] and manifest["models"][candidate].get("name") != name:
        candidate, n = f"{base}-{n}", n + 1
    return candidate


def model_info(loaded, load_seconds: float) -> dict:
    cfg = loaded.model.cfg
    n_params = sum(p.numel() for p in loaded.model.parameters())
    dtype = str(next(loaded.model.parameters()).dtype).replace("torch.", "")
    return {"name": loaded.name, "resolved": loaded.resolved, "revision": loaded.revision, "device": loaded.device,
            "dtype": dtype, "n_layers": cfg.n_layers, "n_heads": cfg.n_heads, "d_model": cfg.d_model,
            "n_params": n_params, "load_seconds": round(load_seconds, 3), "weight_processing": loaded.processing,
            "fingerprint": loaded.fingerprint}


def spec_info(spec: FamilySpec) -> dict:
    return {"templates": list(spec.templates), "description": spec.description, "sequence": spec.sequence,
            "answer_offset": _jsonable(spec.answer_offset), "copy_offset": spec.copy_offset,
            "corrupt_shift": spec.corrupt_shift, "relation_templates": list(spec.relation_templates),
            "relation_answer_offset": _jsonable(spec.relation_answer_offset),
            "no_relation": spec.no_relation}


def _jsonable(offset):
    """An offset family's per-template offsets as a JSON list; a single offset as it is."""
    return list(offset) if isinstance(offset, tuple) else offset


def prompt_info(prompts) -> dict:
    return {"prompts": prompts.clean_prompts, "corrupted_prompts": prompts.corrupted_prompts,
            "relation_prompts": prompts.twins["relation"].prompts if "relation" in prompts.twins else [],
            "corruptions": list(prompts.corruptions), "n_tokens": int(prompts.clean_tokens.shape[1])}


def _versions() -> dict[str, str]:
    versions = {}
    for package in PACKAGES:
        try:
            versions[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            versions[package] = "not installed"
    return versions


def _git_commit() -> str:
    try:
        out = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=Path(__file__).parent,
                             capture_output=True, text=True, timeout=5)
    except (OSError, subprocess.TimeoutExpired):
        return "unknown"
    return out.stdout.strip() if out.returncode == 0 else "unknown"
