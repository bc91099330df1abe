"""Run folders: unique ids created atomically, `--run-id` checked, and what a resume must agree on.

A run id is the start time to the millisecond plus a random suffix, and the folder is made with one mkdir
(which fails if the name exists), so two runs started together never share a folder. `--resume` continues a
run only if the options that define its results are the same: the families and each family's definition
(a hash of the whole spec, so any field counts), the analyses, the models and the package version.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import re
import secrets
import time
from importlib import metadata
from pathlib import Path

from report.errors import UserError

RUN_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")
MAX_RUN_ID = 100  # a path component; well under any file system's 255 bytes


def check_run_id(run_id: str) -> str:
    """A plain folder name inside --out: no separators, no '..', not hidden, not too long."""
    if len(run_id) > MAX_RUN_ID:
        raise UserError(f"--run-id {run_id[:40]!r}... is {len(run_id)} characters; at most {MAX_RUN_ID}")
    if not RUN_ID.match(run_id) or ".." in run_id:
        raise UserError(f"--run-id {run_id!r}: a run id may hold only letters, digits, '.', '_' and '-', and "
                        "starts with a letter or digit (it names a folder inside --out)")
    return run_id


def new_run_id(now: float | None = None) -> str:
    """Start time (local, to the millisecond) and 4 random hex digits: unique even for runs in the same ms."""
    now = time.time() if now is None else now
    return f"{time.strftime('%Y%m%d-%H%M%S', time.localtime(now))}-{int(now * 1000) % 1000:03d}-{secrets.token_hex(2)}"


def create_run_dir(out: Path, run_id: str | None) -> Path:
    """Make the run folder with one mkdir: it fails rather than share a folder with another run."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    if run_id is not None:
        try:
            (out / run_id).mkdir()
        except FileExistsError:
            if not (out / run_id / "manifest.json").is_file():
                raise UserError(f"{out / run_id} exists and is not a run (no manifest.json): choose another "
                                "--run-id, or remove that folder") from None
            raise UserError(f"run folder {out / run_id} exists already; pass --resume to continue it") from None
        return out / run_id
    for _ in range(100):
        path = out / new_run_id()
        try:
            path.mkdir()
        except FileExistsError:
            continue
        return path
    raise UserError(f"cannot find a free run id in {out}")


def family_hash(spec) -> str:
    """sha256 of every field of a family's spec: a redefined family (any field) hashes differently."""
    text = json.dumps(dataclasses.asdict(spec), sort_keys=True, ensure_ascii=False, default=str)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def package_version() -> str:
    try:
        return metadata.version("weekday-circuits")
    except metadata.PackageNotFoundError:
        return "unknown"


def definition(families, analyses, models, dtype: str = "auto") -> dict:
    """What defines a run's results (recorded in its manifest; a resume must match it)."""
    return {"families": {spec.name: family_hash(spec) for spec in families},
            "analyses": [a.name for a in analyses], "models": list(models), "version": package_version(),
            "dtype": dtype}


def dtype_changed(recorded: dict | None, current: dict) -> bool:
    """The run was computed in another --dtype (runs made before dtype was recorded cannot tell: False)."""
    before = (recorded or {}).get("dtype")
    return before is not None and before != current["dtype"]


def differences(recorded: dict | None, current: dict) -> list[str]:
    """What differs between a run's recorded definition and this command's, in words (empty if nothing)."""
    if not isinstance(recorded, dict):
        return ["the run records no definition (an older version made it)"]
    found = []
    old, new = recorded.get("families") or {}, current["families"]
    changed = [n for n in new if n in old and old[n] != new[n]]
    if changed:
        found.append(f"family definition changed: {', '.join(changed)}")
    for key, what in (("families", "families"), ("analyses", "analyses"), ("models", "models")):
        before, after = list(recorded.get(key) or []), list(current[key])
        added, dropped = [x for x in after if x not in before], [x for x in before if x not in after]
        parts = [f"{verb} {', '.join(map(str, items))}" for verb, items in (("added", added), ("dropped", dropped))
                 if items]
        if parts:
            found.append(f"{what}: " + "; ".join(parts))
    if dtype_changed(recorded, current):
        found.append(f"--dtype {recorded['dtype']} -> {current['dtype']} (every result would be recomputed)")
    if recorded.get("version") != current["version"]:
        found.append(f"weekday-circuits version {recorded.get('version')} -> {current['version']}")
    return found


def changed_families(recorded: dict | None, current: dict) -> list[str]:
    """Families whose definition differs from the recorded one (their results must be recomputed)."""
    old = (recorded or {}).get("families") or {}
    return [name for name, digest in current["families"].items() if name in old and old[name] != digest]
