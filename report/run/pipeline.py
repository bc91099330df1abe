"""`run`: load each model, compute every analysis for every family, save as you go.

Everything that can be checked before computing is checked first (families file, family and analysis
names, the run id, each model's files, architecture and weights (report/run/checkpoint.py), every family
against every model's tokenizer and context length, and whether a resumed run was defined the same way),
so bad input fails before a run folder exists. A family that one model's tokenizer cannot use is skipped
for that model with a note; a family that no model can use is an error. The options and their own checks are
report/run/options.py's; what the manifest records, report/run/manifest.py's.

Each analysis computes under torch.no_grad() (scoped here, not switched off for the process); a SIGTERM
stops the run with its manifest marked 'interrupted'; temporaries of killed runs are removed by a later run once stale
(report/store/files.py).
"""

from __future__ import annotations

import dataclasses
import logging
import shutil
import signal
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import torch
from tqdm import tqdm

from analyses.common.types import Analysis, FamilyContext
from analyses.methods import shared
from analyses.methods import verified as exact_modes
from report.errors import Interrupted, UserError
from report.run import runs
from report.run.catalogue import count_parameters
from report.run.checkpoint import CheckedModel, inspect_model
from report.run.dtype import resolve_dtype
from report.run.families import FamilyError, FamilySpec, build_prompt_set
from report.run.families_file import load_family_specs, select_families
from report.run.manifest import model_info, prompt_info, saved_any, spec_info, start_manifest, unique_slug
from report.run.memory import release
from report.run.model import load_model, pick_device
from report.run.options import AUTO, RESUMABLE_OPTIONS, RunOptions, check_exact, check_steps, select_analyses
from report.run.shard import assign
from report.store import files, results, schema
from report.store.loader import load_manifest, verify

log = logging.getLogger(__name__)
# Why an intervening analysis is not computed under `auto` (the page shows it in the analysis's section).
AT_CHANCE_REASON = ("the model names the right item no better than chance on this family, so rerunning it with "
                    "activations replaced would explain noise; computed under --analyses all (or by naming it)")


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
    manifest = start_manifest(run_dir, options, device, current, manifest)
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
            if manifest["status"] == "failed" and resumed is None and not saved_any(manifest):
                shutil.rmtree(run_dir, ignore_errors=True)  # a model that failed to load: no run folder to mislead
            else:
                results.write_json_atomic(run_dir / results.MANIFEST, manifest)
    return run_dir


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


def _run_model(run_dir, manifest, name, device, families, analyses, skipped: dict[str, str],
               dtype: str = "float32", auto: bool = False, exact: str = "all", steps: int = 5) -> None:
    started, cpu_started = time.perf_counter(), time.process_time()
    log.info("loading %s on %s in %s", name, device, dtype)
    loaded = load_model(name, device, dtype)
    model = loaded.model
    slug = unique_slug(manifest, name)
    entry = manifest["models"].setdefault(slug, {"families": {}, "analyses": {}})
    entry.update(model_info(loaded, time.perf_counter() - started))
    entry["load_cpu_seconds"] = round(time.process_time() - cpu_started, 3)
    usable = [spec for spec in families if spec.name not in skipped]
    for spec in families:
        if spec.name in skipped:
            entry["families"][spec.name] = {"status": "skipped", "reason": skipped[spec.name], **spec_info(spec)}
    bar = tqdm(total=len(usable) * len(analyses), desc=slug, unit="analysis", disable=None, file=sys.stderr)
    done = 0
    with bar:
        for spec in usable:
            prompts = build_prompt_set(spec, model.tokenizer, model.cfg.default_prepend_bos)
            entry["families"][spec.name] = {"status": "ok", **spec_info(spec), **prompt_info(prompts)}
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
