"""The results format: which files and summary keys a run holds, as one number in its manifest.

`run` records CURRENT in manifest.json (`results_format`); `build`, `run --resume` and `report.loader` read a run
only if it records the format this version reads, so that a narrative can rely on the current keys instead of
absorbing older runs with `.get(key, default)`. A run written before the manifest recorded a format, or by
another format, is refused with one line that names the manifest and says what to do.

When the format changes (a summary key renamed, one removed, a file reshaped), bump CURRENT and choose: refuse the
older runs (nothing more to do), or upgrade them here, in this module only: a function from the older summary to
the current one, applied where report/loader.py reads a summary, so the rest of `build` sees current keys.
"""

from __future__ import annotations

from pathlib import Path

from report.errors import UserError

KEY = "results_format"
CURRENT = 1  # 1: the first recorded format (the summaries of report/schemas/ as of the day7_* keys)


def check(manifest: dict, path: Path) -> None:
    """Refuse, in one line naming `path` (the manifest), a run whose results are not in the CURRENT format."""
    recorded = manifest.get(KEY)
    command = manifest.get("command")
    again = f"compute it again ({command})" if isinstance(command, str) and command else "compute it again"
    if recorded is None:
        raise UserError(f"{path} records no results format: an older weekday-circuits wrote it, and this version "
                        f"reads format {CURRENT} only; {again}, or build it with the version that wrote it")
    if isinstance(recorded, bool) or not isinstance(recorded, int):
        raise UserError(f"{path} is corrupt ({KEY} is {recorded!r}, not a whole number)")
    if recorded < CURRENT:
        raise UserError(f"{path} holds results format {recorded}, older than the format {CURRENT} this version "
                        f"reads; {again}, or build it with the version that wrote it")
    if recorded > CURRENT:
        raise UserError(f"{path} holds results format {recorded}, newer than the format {CURRENT} this version "
                        "reads; upgrade weekday-circuits to build it")
