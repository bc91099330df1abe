"""`run`: load each model, compute every analysis for every family, save as you go.

Everything that can be checked before computing is checked first (families file, family and analysis
names, model folders, every family against every model's tokenizer), so bad input fails before a run
folder exists. A family that one model's tokenizer cannot use is skipped for that model with a note;
a family that no model can use is an error.
"""

from __future__ import annotations

import logging
import platform
import subprocess
import sys
import time
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path

from tqdm import tqdm

from analyses import BY_NAME, REGISTRY
from analyses.types import Analysis
from report import results
from report.dtype import AUTO_RULE, count_parameters, resolve_dtype
from report.errors import UserError
from report.families import FamilyError, FamilySpec, build_prompt_set, load_family_specs, select_families
from report.memory import release
from report.model import check_model_name, load_model, load_tokenizer, pick_device
from report.shard import Shard, assign

log = logging.getLogger(__name__)
PACKAGES = ("weekday-circuits", "torch", "transformer-lens", "transformers", "plotly", "circuitsvis", "jinja2",
            "einops", "click", "numpy")


@dataclass
class RunOptions:
    models: list[str] = field(default_factory=lambda: ["gpt2"])
    families: str = "all"
    families_file: Path | None = None
    analyses: str = "all"
    out: Path = Path("runs")
    device: str = "auto"
    resume: bool = False
    run_id: str | None = None
    command: str = ""
    dtype: str = "auto"  # report/dtype.py: auto, float32, bfloat16, float16
    shard: Shard | None = None  # report/shard.py: this machine's share of the (model, family) pairs


def select_analyses(wanted: str) -> list[Analysis]:
    if wanted.strip() == "all":
        return list(REGISTRY)
    names = [n.strip() for n in wanted.split(",") if n.strip()]
    unknown = [n for n in names if n not in BY_NAME]
    if unknown or not names:
        raise UserError(f"unknown analysis {', '.join(map(repr, unknown)) or '(none given)'}; "
                        f"known: {', '.join(BY_NAME)}")
    return [a for a in REGISTRY if a.name in names]  # report order, whatever order they were named in


def check_families(models: list[str], families: list[FamilySpec]) -> dict[str, dict[str, str]]:
    """{model: {family: reason}} for the families each model's tokenizer cannot use; error if none can."""
    skipped: dict[str, dict[str, str]] = {}
    for name in models:
        tokenizer = load_tokenizer(name)
        skipped[name] = {}
        for spec in families:
            try:
                build_prompt_set(spec, tokenizer, prepend_bos=True)
            except FamilyError as err:
                skipped[name][spec.name] = str(err)
    for spec in families:
        reasons = [skipped[m][spec.name] for m in models if spec.name in skipped[m]]
        if len(reasons) == len(models):
            raise FamilyError(reasons[0] + (" (and for every other model of this run)" if len(models) > 1 else ""))
    return skipped


def run(options: RunOptions) -> Path:
    """Compute and save; return the run folder."""
    families = select_families(load_family_specs(options.families_file), options.families)
    analyses = select_analyses(options.analyses)
    for name in options.models:
        check_model_name(name)
    device = pick_device(options.device)
    run_dir = _run_dir(options)
    skipped = check_families(options.models, families)
    work = assign(options.models, [f.name for f in families], options.shard)
    manifest = _start_manifest(run_dir, options, device, families, analyses)
    started = time.perf_counter()
    try:
        for name in work:
            dtype = resolve_dtype(options.dtype, device, count_parameters(name) if options.dtype == "auto" else None)
            _run_model(run_dir, manifest, name, device, [f for f in families if f.name in work[name]], analyses,
                       skipped[name], dtype)
            release(device)  # the model's weights go before the next model loads
    except BaseException:
        manifest["status"] = "failed"
        raise
    finally:
        manifest["total_seconds"] = manifest.get("total_seconds", 0.0) + time.perf_counter() - started
        if manifest["status"] == "running":
            manifest["status"] = "complete"
        results.write_json_atomic(run_dir / results.MANIFEST, manifest)
    return run_dir


def _run_dir(options: RunOptions) -> Path:
    out = Path(options.out)
    if options.resume:
        run_dir = out / options.run_id if options.run_id else results.latest_run(out)
        if run_dir is None or not (run_dir / results.MANIFEST).is_file():
            raise UserError(f"--resume: no run to resume in {out}" + (f" named {options.run_id!r}"
                                                                      if options.run_id else ""))
        return run_dir
    run_id = options.run_id or time.strftime("%Y%m%d-%H%M%S")
    if options.shard is not None:
        run_id = f"{run_id}-{options.shard.suffix}"
    if (out / run_id).exists():
        raise UserError(f"run folder {out / run_id} exists already; pass --resume to continue it")
    return out / run_id


def _start_manifest(run_dir: Path, options: RunOptions, device: str, families, analyses) -> dict:
    if options.resume:
        manifest = results.load_manifest(run_dir)
    else:
        manifest = {"run_id": run_dir.name, "created": time.strftime("%Y-%m-%d %H:%M:%S %Z"), "models": {}}
    manifest.update({
        "status": "running", "command": options.command or " ".join(sys.argv), "device": device,
        "families_requested": [f.name for f in families], "analyses_requested": [a.name for a in analyses],
        "packages": _versions(), "git_commit": _git_commit(), "python": sys.version.split()[0],
        "platform": platform.platform(), "models_requested": list(options.models),
        "dtype_requested": options.dtype, "dtype_rule": AUTO_RULE,
        "shard": None if options.shard is None else {"index": options.shard.index, "count": options.shard.count},
    })
    results.write_json_atomic(run_dir / results.MANIFEST, manifest)
    return manifest


def _run_model(run_dir, manifest, name, device, families, analyses, skipped: dict[str, str],
               dtype: str = "float32") -> None:
    started = time.perf_counter()
    log.info("loading %s on %s in %s", name, device, dtype)
    loaded = load_model(name, device, dtype)
    model = loaded.model
    slug = _unique_slug(manifest, name)
    entry = manifest["models"].setdefault(slug, {"families": {}, "analyses": {}})
    entry.update(_model_info(loaded, time.perf_counter() - started))
    usable = [spec for spec in families if spec.name not in skipped]
    for spec in families:
        if spec.name in skipped:
            entry["families"][spec.name] = {"status": "skipped", "reason": skipped[spec.name], **_spec_info(spec)}
    bar = tqdm(total=len(usable) * len(analyses), desc=slug, unit="analysis", disable=None, file=sys.stderr)
    with bar:
        for spec in usable:
            prompts = build_prompt_set(spec, model.tokenizer, model.cfg.default_prepend_bos)
            entry["families"][spec.name] = {"status": "ok", **_spec_info(spec), **_prompt_info(prompts)}
            for analysis in analyses:
                bar.set_postfix_str(f"{spec.name} / {analysis.name}")
                _run_analysis(run_dir / slug / spec.name / analysis.name, entry, spec.name, analysis, model, prompts)
                results.write_json_atomic(run_dir / results.MANIFEST, manifest)
                bar.update()


def _run_analysis(folder: Path, entry: dict, family: str, analysis: Analysis, model, prompts) -> None:
    key = f"{family}/{analysis.name}"
    if results.is_complete(folder):
        entry["analyses"].setdefault(key, {"status": "complete", "seconds": None})
        return
    started = time.perf_counter()
    result = analysis.compute(model, prompts)
    results.save_result(folder, result)
    entry["analyses"][key] = {"status": "complete", "seconds": round(time.perf_counter() - started, 3)}


def _unique_slug(manifest: dict, name: str) -> str:
    """The model's folder name; a second, different model with the same folder name gets a suffix."""
    base = results.slug(name)
    candidate, n = base, 2
    while candidate in manifest["models"] and manifest["models"][candidate].get("name") != name:
        candidate, n = f"{base}-{n}", n + 1
    return candidate


def _model_info(loaded, load_seconds: float) -> dict:
    cfg = loaded.model.cfg
    n_params = sum(p.numel() for p in loaded.model.parameters())
    dtype = str(next(loaded.model.parameters()).dtype).replace("torch.", "")
    return {"name": loaded.name, "resolved": loaded.resolved, "revision": loaded.revision, "device": loaded.device,
            "dtype": dtype, "n_layers": cfg.n_layers, "n_heads": cfg.n_heads, "d_model": cfg.d_model,
            "n_params": n_params, "load_seconds": round(load_seconds, 3), "weight_processing": loaded.processing}


def _spec_info(spec: FamilySpec) -> dict:
    return {"template": spec.template, "description": spec.description, "answer_offset": spec.answer_offset,
            "copy_offset": spec.copy_offset, "corrupt_shift": spec.corrupt_shift}


def _prompt_info(prompts) -> dict:
    return {"prompts": prompts.clean_prompts, "corrupted_prompts": prompts.corrupted_prompts,
            "n_tokens": int(prompts.clean_tokens.shape[1])}


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
