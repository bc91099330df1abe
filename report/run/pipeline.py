"""`run`: load each model, compute every analysis for every family, save as you go.

Everything that can be checked before computing is checked first (families file, family and analysis
names, the run id, each model's files, architecture and weights (report/run/checkpoint.py), every family
against every model's tokenizer and context length, and whether a resumed run was defined the same way),
so bad input fails before a run folder exists. A family that one model's tokenizer cannot use is skipped
for that model with a note; a family that no model can use is an error.

Each analysis computes under torch.no_grad() (scoped here, not switched off for the process); a SIGTERM
stops the run with its manifest marked 'interrupted'; temporaries of killed runs are removed by a later run once stale
(report/store/files.py).
"""

from __future__ import annotations

import dataclasses
import logging
import platform
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path

import torch
from tqdm import tqdm

from analyses import BY_NAME, REGISTRY
from analyses.common.types import Analysis, FamilyContext
from analyses.methods import shared
from analyses.methods import verified as exact_modes
from report.bundled_name import BUNDLED_MODEL_NAME
from report.errors import Interrupted, UserError
from report.run import runs
from report.run.catalogue import count_parameters
from report.run.checkpoint import CheckedModel, inspect_model
from report.run.dtype import AUTO_RULE, resolve_dtype
from report.run.families import FamilyError, FamilySpec, build_prompt_set
from report.run.families_file import load_family_specs, select_families
from report.run.memory import release
from report.run.model import load_model, pick_device
from report.run.shard import Shard, assign
from report.store import files, results, results_format, schema
from report.store.loader import load_manifest, verify

log = logging.getLogger(__name__)
RESUMABLE_OPTIONS = ("models", "families", "families_file", "analyses", "dtype", "exact", "steps")
MAX_NAME = 100  # a family name is a folder and a page name: keep it well under the 255-byte limit
PACKAGES = ("weekday-circuits", "torch", "transformer-lens", "transformers", "plotly", "circuitsvis", "jinja2",
            "einops", "click", "numpy")


@dataclass
class RunOptions:
    models: list[str] = field(default_factory=lambda: [BUNDLED_MODEL_NAME])  # runs with no hub
    families: str = "all"
    families_file: Path | None = None
    analyses: str = "auto"  # every analysis where the model does the task; the readable ones elsewhere (AUTO)
    out: Path = Path("runs")
    device: str = "auto"
    resume: bool = False
    run_id: str | None = None
    command: str = ""
    force_resume: bool = False
    # The options the user set; on --resume the others are taken from the resumed run's manifest.
    given: frozenset[str] = frozenset(RESUMABLE_OPTIONS)
    dtype: str = "auto"  # report/run/dtype.py: auto, float32, bfloat16, float16
    shard: Shard | None = None  # report/run/shard.py: this machine's share of the (model, family) pairs
    # analyses/methods/verified.py: all, top:K[,sample:S], or auto (all on CUDA, CPU_DEFAULT on a CPU)
    exact: str = "auto"
    steps: int = 5  # EAP-IG's integration steps (analyses/edge_circuits.py); 1 = EAP


def check_exact(text: str) -> str:
    """The --exact value, normalised ('top:8' -> 'top:8,sample:8'); a bad one is a one-line UserError."""
    try:
        return str(exact_modes.parse_exact(text))
    except ValueError as err:
        raise UserError(str(err)) from None


def check_steps(steps: int) -> int:
    if int(steps) < 1:
        raise UserError(f"--steps {steps}: EAP-IG needs at least 1 integration step (1 is EAP)")
    return int(steps)


AUTO = "auto"
# Why an intervening analysis is not computed under `auto` (the page shows it in the analysis's section).
AT_CHANCE_REASON = ("the model names the right item no better than chance on this family, so rerunning it with "
                    "activations replaced would explain noise; computed under --analyses all (or by naming it)")


def select_analyses(wanted: str) -> list[Analysis]:
    """`all`, `auto` (the same list; the intervening ones are then skipped per family where the model is at
    chance, see `_run_model`), or names."""
    if wanted.strip() in ("all", AUTO):
        return list(REGISTRY)
    names = [n.strip() for n in wanted.split(",") if n.strip()]
    unknown = [n for n in names if n not in BY_NAME]
    if unknown or not names:
        raise UserError(f"unknown analysis {', '.join(map(repr, unknown)) or '(none given)'}; "
                        f"known: {', '.join(BY_NAME)}")
    return [a for a in REGISTRY if a.name in names]  # report order, whatever order they were named in


def check_families(models: list[CheckedModel], families: list[FamilySpec]) -> dict[str, dict[str, str]]:
    """{model: {family: reason}} for the families each model's tokenizer cannot use; error if none can, or if a
    family's prompts are longer than a model's context."""
    skipped: dict[str, dict[str, str]] = {}
    for checked in models:
        skipped[checked.name] = {}
        for spec in families:
            try:
                prompts = build_prompt_set(spec, checked.tokenizer, prepend_bos=True)
            except FamilyError as err:
                skipped[checked.name][spec.name] = str(err)
                continue
            longest = max(prompts.clean_tokens.shape[-1], prompts.corrupted_tokens.shape[-1])
            if checked.n_ctx is not None and longest > checked.n_ctx:
                raise FamilyError(f"family '{spec.name}', prompt {prompts.clean_prompts[0]!r}: {longest} tokens, "
                                  f"longer than the context of model {checked.name!r} ({checked.n_ctx} tokens)")
    for spec in families:
        if len(spec.name) > MAX_NAME:
            raise FamilyError(f"family '{spec.name[:40]}...': a family name may have at most {MAX_NAME} characters")
        reasons = [skipped[m.name][spec.name] for m in models if spec.name in skipped[m.name]]
        if len(reasons) == len(models):
            raise FamilyError(reasons[0] + (" (and for every other model of this run)" if len(models) > 1 else ""))
    return skipped


def run(options: RunOptions) -> Path:
    """Check everything, then compute and save; return the run folder."""
    if options.run_id is not None:
        runs.check_run_id(options.run_id)
    if options.shard is not None and options.resume and options.run_id is None:
        raise UserError(f"--resume --shard {options.shard} needs --run-id: the id the shards were started with "
                        f"(this shard's folder is <run-id>-{options.shard.suffix})")
    if options.shard is not None:  # each shard its own folder, so that shards can share --out
        options = dataclasses.replace(options, run_id=f"{options.run_id or runs.new_run_id()}-{options.shard.suffix}")
    resumed = _find_resumed(options) if options.resume else None
    if resumed is not None:
        options = _with_recorded_options(options, resumed[1])
    families = select_families(load_family_specs(options.families_file), options.families)
    analyses = select_analyses(options.analyses)
    check_exact(options.exact), check_steps(options.steps)  # recorded options of a resumed run, or a caller's own
    device = pick_device(options.device)
    checked = [inspect_model(name) for name in options.models]
    skipped = check_families(checked, families)
    work = assign(options.models, [f.name for f in families], options.shard)
    if not work:
        pairs = len(options.models) * len(families)
        raise UserError(f"--shard {options.shard}: this shard has no work ({pairs} (model, family) pair(s) for "
                        f"{options.shard.count} shards); use at most {pairs} shards")
    current = runs.definition(families, analyses, options.models, options.dtype)
    if resumed is not None:
        run_dir, manifest = resumed
        _check_resume(manifest, current, options.force_resume)
        _check_same_modes(manifest, options, device)
    else:
        run_dir, manifest = runs.create_run_dir(Path(options.out), options.run_id), None
    files.clean_stale_temps(Path(options.out))
    manifest = _start_manifest(run_dir, options, device, current, manifest)
    started = time.perf_counter()
    with _sigterm_interrupts():  # from the first manifest write on, so that the manifest can say 'interrupted'
        try:
            results.write_json_atomic(run_dir / results.MANIFEST, manifest)
            for name in work:
                dtype = resolve_dtype(options.dtype, device,
                                      count_parameters(name) if options.dtype == "auto" else None)
                _run_model(run_dir, manifest, name, device, [f for f in families if f.name in work[name]],
                           analyses, skipped[name], dtype, auto=options.analyses.strip() == AUTO,
                           exact=manifest["options"]["exact_resolved"], steps=options.steps)
                release(device)  # the model's weights go before the next model loads
        except (KeyboardInterrupt, Interrupted):
            manifest["status"] = "interrupted"
            raise
        except BaseException:
            manifest["status"] = "failed"
            raise
        finally:
            manifest["total_seconds"] = manifest.get("total_seconds", 0.0) + time.perf_counter() - started
            if manifest["status"] == "running":
                manifest["status"] = "complete"
            if manifest["status"] == "failed" and resumed is None and not _saved_any(manifest):
                shutil.rmtree(run_dir, ignore_errors=True)  # a model that failed to load: no run folder to mislead
            else:
                results.write_json_atomic(run_dir / results.MANIFEST, manifest)
    return run_dir


def _saved_any(manifest: dict) -> bool:
    return any(isinstance(e, dict) and e.get("status") == "complete"
               for model in manifest["models"].values() for e in model.get("analyses", {}).values())


@contextmanager
def _sigterm_interrupts() -> Iterator[None]:
    """While computing, SIGTERM raises Interrupted (so the manifest says so); the old handler comes back after."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def interrupt(signum, frame):
        raise Interrupted(signum)

    previous = signal.signal(signal.SIGTERM, interrupt)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def _find_resumed(options: RunOptions) -> tuple[Path, dict]:
    out = Path(options.out)
    run_dir = out / options.run_id if options.run_id else results.latest_run(out)
    if run_dir is not None and run_dir.is_dir() and not (run_dir / results.MANIFEST).is_file():
        raise UserError(f"--resume: {run_dir} holds no {results.MANIFEST} (deleted, or never a run), so what it holds "
                        "cannot be verified or continued: start a new run with another --run-id")
    if run_dir is None or not (run_dir / results.MANIFEST).is_file():
        raise UserError(f"--resume: no run to resume in {out}" + (f" named {options.run_id!r}"
                                                                  if options.run_id else ""))
    return run_dir, load_manifest(run_dir, resume=True)  # schema and format checked: one line


def _with_recorded_options(options: RunOptions, manifest: dict) -> RunOptions:
    """Options the user left out on --resume are the resumed run's own (so `run --resume` just continues)."""
    recorded = manifest.get("options") if isinstance(manifest.get("options"), dict) else {}
    values = {key: recorded[key] for key in RESUMABLE_OPTIONS if key not in options.given and key in recorded}
    if "models" in values:
        values["models"] = list(values["models"])
    if values.get("families_file") is not None:
        values["families_file"] = Path(values["families_file"])
    return dataclasses.replace(options, **values)


def _check_resume(manifest: dict, current: dict, force: bool) -> None:
    """Refuse to mix results of different definitions, unless forced; forced, redefined families are recomputed."""
    found = runs.differences(manifest.get("definition"), current)
    if found and not force:
        raise UserError(f"--resume: run {manifest.get('run_id')!r} was made with other options "
                        f"({'; '.join(found)}); start a new run, or pass --force-resume to continue it anyway")
    if runs.dtype_changed(manifest.get("definition"), current):
        for entry in manifest["models"].values():
            entry["analyses"] = {}  # computed in another precision: all recomputed, so no result is mislabelled
    for family in runs.changed_families(manifest.get("definition"), current):
        for entry in manifest["models"].values():
            for key in [k for k in entry.get("analyses", {}) if k.split("/")[0] == family]:
                del entry["analyses"][key]  # stale: recomputed under the new definition
    if found:
        manifest.setdefault("forced_resumes", []).append(found)


def _check_same_modes(manifest: dict, options: RunOptions, device: str) -> None:
    """Refuse to continue a run under another --exact (as resolved on this device) or --steps, unless forced: its
    saved analyses would mix modes."""
    recorded = manifest.get("options") if isinstance(manifest.get("options"), dict) else {}
    now = {"exact_resolved": str(exact_modes.resolve(options.exact, device)), "steps": options.steps}
    changed = [f"--{key.split('_')[0]} {recorded[key]} then, {value} now" for key, value in now.items()
               if recorded.get(key) is not None and str(recorded[key]) != str(value)]
    if changed and not options.force_resume:
        raise UserError(f"--resume: run {manifest.get('run_id')!r} was computed with other options "
                        f"({'; '.join(changed)}); start a new run, or pass --force-resume to continue it anyway")


def _start_manifest(run_dir: Path, options: RunOptions, device: str, current: dict, manifest: dict | None) -> dict:
    """The manifest for this start or resume (written by run(), under the SIGTERM handler)."""
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


def _run_model(run_dir, manifest, name, device, families, analyses, skipped: dict[str, str],
               dtype: str = "float32", auto: bool = False, exact: str = "all", steps: int = 5) -> None:
    started, cpu_started = time.perf_counter(), time.process_time()
    log.info("loading %s on %s in %s", name, device, dtype)
    loaded = load_model(name, device, dtype)
    model = loaded.model
    slug = _unique_slug(manifest, name)
    entry = manifest["models"].setdefault(slug, {"families": {}, "analyses": {}})
    entry.update(_model_info(loaded, time.perf_counter() - started))
    entry["load_cpu_seconds"] = round(time.process_time() - cpu_started, 3)
    usable = [spec for spec in families if spec.name not in skipped]
    for spec in families:
        if spec.name in skipped:
            entry["families"][spec.name] = {"status": "skipped", "reason": skipped[spec.name], **_spec_info(spec)}
    bar = tqdm(total=len(usable) * len(analyses), desc=slug, unit="analysis", disable=None, file=sys.stderr)
    done = 0
    with bar:
        for spec in usable:
            prompts = build_prompt_set(spec, model.tokenizer, model.cfg.default_prepend_bos)
            entry["families"][spec.name] = {"status": "ok", **_spec_info(spec), **_prompt_info(prompts)}
            # the family's shared work (analyses/methods/shared.py), dropped after it, and the options analyses read
            context = FamilyContext(model, exact=exact, ig_steps=steps)
            at_chance = auto and any(a.intervenes for a in analyses) and not _above_chance(context, prompts)
            if auto:
                entry["families"][spec.name]["auto_interventions"] = not at_chance
            for analysis in analyses:
                bar.set_postfix_str(f"{spec.name} / {analysis.name}")
                reason = analysis.cannot_run(model) if analysis.cannot_run else None
                if reason is None and at_chance and analysis.intervenes:
                    reason = AT_CHANCE_REASON
                for unit, unit_prompts in results.units(analysis, prompts):
                    if reason:  # the architecture lacks what the analysis reads: say so, never crash
                        entry["analyses"][f"{spec.name}/{unit}"] = {"status": "skipped", "reason": reason}
                        continue
                    _run_analysis(run_dir / slug / spec.name / unit, entry, spec.name, unit, analysis, model,
                                  unit_prompts, context)
                    results.write_json_atomic(run_dir / results.MANIFEST, manifest)
                bar.update()
                done += 1
                if bar.disable:  # no terminal (CI, a log file): one line per analysis instead of the bar
                    log.info("%s: %s / %s done (%d of %d)", slug, spec.name, analysis.name, done,
                             len(usable) * len(analyses))


def _above_chance(context: FamilyContext, prompts) -> bool:
    with torch.no_grad():
        return shared.above_chance(context, prompts)


def _run_analysis(folder: Path, entry: dict, family: str, unit: str, analysis: Analysis, model, prompts,
                  context: FamilyContext | None = None) -> None:
    """Compute unless `build` would publish the saved result: recorded complete, every file present and unchanged,
    computed for this model (report/store/loader.py `verify`)."""
    key = f"{family}/{unit}"
    if verify(folder, entry["analyses"].get(key), entry.get("fingerprint")) is None:
        return
    started, cpu_started = time.perf_counter(), time.process_time()
    with torch.no_grad():  # inference; attribution patching re-enables gradients for its own backward pass
        takes_context = (analysis.uses_context or analysis.reads_options) and context is not None
        result = (analysis.compute(model, prompts, context=context) if takes_context
                  else analysis.compute(model, prompts))
    schema.check_summary(analysis, result.summary)  # its own type (analyses/common/contract.py): a wrong key is a bug
    checksums = results.save_result(folder, result, entry.get("fingerprint"))
    entry["analyses"][key] = {"status": "complete", "seconds": round(time.perf_counter() - started, 3),
                              "cpu_seconds": round(time.process_time() - cpu_started, 3), "files": checksums}


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
            "n_params": n_params, "load_seconds": round(load_seconds, 3), "weight_processing": loaded.processing,
            "fingerprint": loaded.fingerprint}


def _spec_info(spec: FamilySpec) -> dict:
    return {"templates": list(spec.templates), "description": spec.description, "sequence": spec.sequence,
            "answer_offset": _jsonable(spec.answer_offset), "copy_offset": spec.copy_offset,
            "corrupt_shift": spec.corrupt_shift, "relation_templates": list(spec.relation_templates),
            "relation_answer_offset": _jsonable(spec.relation_answer_offset),
            "no_relation": spec.no_relation}


def _jsonable(offset):
    """An offset family's per-template offsets as a JSON list; a single offset as it is."""
    return list(offset) if isinstance(offset, tuple) else offset


def _prompt_info(prompts) -> dict:
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
