"""`build RUN_DIR...`: merge several run folders (the shards of one run, or runs of different models) into one.

The merged manifest has the shape of one run's, so the pages are rendered the same way whichever folder a
result came from: models in the order they were requested, each model's families in the order requested, the
(model, family, analysis) results of all folders together. A model that appears in several folders (its
families computed on different shards) is merged when the folders agree on what it is (name, revision, dtype,
size); a result computed in two folders is refused (which one should the report show?). Run-level metadata is
combined: the earliest start, the sum of the computing time, every distinct command, device and git commit, and
per folder its run id, shard, device, status and duration (`runs`).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from report.errors import UserError
from report.store import results
from report.store.loader import load_manifest

# Must agree across folders. `fingerprint` (sha256 of a local folder's files, report/run/checkpoint.py) tells apart two
# folders of one name holding different weights, which agree on everything else.
IDENTITY = ("name", "fingerprint", "revision", "dtype", "n_layers", "n_heads", "d_model", "n_params")


@dataclass
class Merged:
    manifest: dict
    folders: dict[tuple[str, str, str], Path]  # (model slug, family, analysis) -> its result folder
    run_dirs: list[Path]  # the folders merged, in the order given

    def locate(self, model_slug: str, family: str, analysis: str) -> Path:
        """The result folder of one analysis (a path that does not exist when no folder computed it)."""
        return self.folders.get((model_slug, family, analysis), Path("/nonexistent") / model_slug / family / analysis)


def merge_runs(run_dirs: list[Path]) -> Merged:
    unique: dict[Path, Path] = {}
    for run_dir in map(Path, run_dirs):
        unique.setdefault(run_dir.resolve(), run_dir)  # a folder named twice (or by two paths) is one run
    loaded = [(d, load_manifest(d)) for d in unique.values()]
    manifest = loaded[0][1] if len(loaded) == 1 else _merge_metadata([m for _, m in loaded])
    if len(loaded) > 1:
        manifest["models"] = _merge_models(loaded, manifest)
    return Merged(manifest, _result_folders(loaded), [d for d, _ in loaded])


def _result_folders(loaded: list[tuple[Path, dict]]) -> dict[tuple[str, str, str], Path]:
    folders: dict[tuple[str, str, str], Path] = {}
    for run_dir, manifest in loaded:
        for model_slug, model in manifest["models"].items():
            for key in model.get("analyses", {}):
                family, analysis = key.split("/", 1)
                folder = results.analysis_dir(run_dir, model_slug, family, analysis)
                if not results.is_complete(folder):
                    continue
                if (model_slug, family, analysis) in folders:
                    raise UserError(f"{analysis} of {model_slug} / {family} is in two run folders "
                                    f"({folders[model_slug, family, analysis].parents[2]} and {run_dir}); "
                                    "build them into separate sites")
                folders[model_slug, family, analysis] = folder
    return folders


def _distinct(values) -> str:
    seen = []
    for value in values:
        if value not in seen:
            seen.append(value)
    return "; ".join(str(v) for v in seen)


def _merge_metadata(manifests: list[dict]) -> dict:
    def union(key: str) -> list:
        out = []
        for m in manifests:
            out += [item for item in m.get(key) or [] if item not in out]
        return out

    statuses = {m.get("status") for m in manifests}
    packages = {name: _distinct(m.get("packages", {}).get(name, "unknown") for m in manifests)
                for name in manifests[0].get("packages", {})}
    return {
        "run_id": _distinct(m["run_id"] for m in manifests),
        "created": min(m.get("created", "") for m in manifests),
        "status": statuses.pop() if len(statuses) == 1 else "mixed (" + ", ".join(sorted(map(str, statuses))) + ")",
        "command": _distinct(m.get("command", "") for m in manifests),
        "device": _distinct(m.get("device", "") for m in manifests),
        "git_commit": _distinct(m.get("git_commit", "unknown") for m in manifests),
        "python": _distinct(m.get("python", "") for m in manifests),
        "platform": _distinct(m.get("platform", "") for m in manifests),
        "packages": packages,
        "total_seconds": sum(m.get("total_seconds") or 0.0 for m in manifests),
        "families_requested": union("families_requested"), "analyses_requested": union("analyses_requested"),
        "models_requested": union("models_requested"),
        "runs": [{"run_id": m["run_id"], "shard": m.get("shard"), "device": m.get("device"),
                  "status": m.get("status"), "total_seconds": m.get("total_seconds")} for m in manifests],
    }


def _merge_models(loaded: list[tuple[Path, dict]], merged: dict) -> dict:
    models: dict[str, dict] = {}
    source: dict[str, Path] = {}
    for run_dir, manifest in loaded:
        for model_slug, model in manifest["models"].items():
            if model_slug not in models:
                models[model_slug] = {**model, "families": dict(model.get("families", {})),
                                      "analyses": dict(model.get("analyses", {})), "loads": 1}
                source[model_slug] = run_dir
                continue
            entry = models[model_slug]
            for key in IDENTITY:
                if entry.get(key) != model.get(key):
                    raise UserError(f"model {model_slug!r} differs between {source[model_slug]} and {run_dir} "
                                    f"({key}: {entry.get(key)!r} vs {model.get(key)!r}); "
                                    "build them into separate sites")
            entry["resolved"] = _distinct([entry.get("resolved"), model.get("resolved")])
            entry["load_seconds"] = (entry.get("load_seconds") or 0.0) + (model.get("load_seconds") or 0.0)
            entry["loads"] += 1
            for family, info in model.get("families", {}).items():
                if entry["families"].get(family, {}).get("status") != "ok":  # a computed family wins over a note
                    entry["families"][family] = info
            entry["analyses"].update(model.get("analyses", {}))
    return {slug: _ordered(models[slug], merged) for slug in _model_order(models, merged)}


def _model_order(models: dict, merged: dict) -> list[str]:
    requested = merged.get("models_requested") or []
    rank: Callable[[str], int] = lambda slug: (requested.index(models[slug].get("name"))  # noqa: E731
                                               if models[slug].get("name") in requested else len(requested))
    return sorted(models, key=rank)  # stable: folders' order among models not requested by name


def _ordered(model: dict, merged: dict) -> dict:
    requested = merged.get("families_requested") or []
    order = sorted(model["families"], key=lambda f: requested.index(f) if f in requested else len(requested))
    return {**model, "families": {family: model["families"][family] for family in order}}
