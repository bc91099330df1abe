"""The results format: which files and summary keys a run holds, as one number in its manifest.

`run` records CURRENT in manifest.json (`results_format`). `build` and `report.store.loader` read the CURRENT format and
every older one listed in UPGRADES: `upgrade` turns an older summary into the current one where report/store/loader.py
reads it, so the rest of `build` (narratives, tables) sees current keys only and never needs `.get(key, default)`.
`run --resume` continues only a run in the CURRENT format (it would otherwise mix two formats in one run). Any
other run (no format recorded, a newer or unknown one) is refused with one line that names the manifest and says
what to do.

When the format changes (a summary key renamed, one removed, a file reshaped), bump CURRENT and choose: refuse
the older runs (leave them out of UPGRADES), or upgrade them here, in this module only: a function from the older
summary to the current one.

History:
  1  the first recorded format (2026-11).
  2  the item-accuracy keys of every summary lose their `day7_` prefix, which also named the 12-month families:
     day7_acc -> items_acc, day7_above_chance -> items_above_chance, day7_p_value -> items_p_value,
     day7_acc_by_{template,item,offset} -> items_acc_by_{template,item,offset}. Only renames; summaries are
     checked against types generated schemas since this format (analyses/common/contract.py).
  3  one ranking entry (analyses/common/contract.py `Ranked`): every entry of a list in a summary names what it is
     about in `name`, where it used `head`, `node`, `component` or `edge` (renamed in place), or, for a path,
     `sender` and `receiver` (which it keeps, after `name` = "sender → receiver"). The AND / OR entries' `node`
     (ablations, path_patching) became `name` too. Only renames and the path's name.
"""

from __future__ import annotations

from pathlib import Path

from report.errors import UserError

KEY = "results_format"
CURRENT = 3
OLD_PREFIX, NEW_PREFIX = "day7_", "items_"  # format 1 -> 2
OLD_NAME_FIELDS = ("head", "node", "component", "edge")  # format 2 -> 3: the keys an entry's name was held in


def _from_1(summary: dict) -> dict:
    """Format 1 -> 2: every `day7_*` key renamed `items_*`, in place in the key order."""
    return {(NEW_PREFIX + key[len(OLD_PREFIX):] if key.startswith(OLD_PREFIX) else key): value
            for key, value in summary.items()}


def _from_2(summary: dict) -> dict:
    """Format 2 -> 3: the entries of every list in the summary named in `name` (`_named`); other values unchanged."""
    return {key: [_named(entry) for entry in value] if isinstance(value, list) else value
            for key, value in summary.items()}


def _named(entry):
    """A format-2 entry as format 3 writes it: its name field renamed `name` in place, or a path's
    "sender → receiver" put first as `name`. Anything else (a number in a list, an entry that has `name` already, a
    record that names nothing, such as `verification`'s) is returned as it is."""
    if not isinstance(entry, dict) or "name" in entry:
        return entry
    field = next((f for f in OLD_NAME_FIELDS if f in entry), None)
    if field is not None:
        return {("name" if key == field else key): value for key, value in entry.items()}
    if "sender" in entry and "receiver" in entry:
        # written out here, not imported from the analysis: format 3's path name, whatever later formats do
        return {"name": f"{entry['sender']} → {entry['receiver']}", **entry}
    return entry


# format -> the function that takes its summaries one format on. Each leaves a summary of a later format unchanged
# (a format-2 or later summary holds no `day7_` key: its type forbids one; every list entry of a format-3 summary
# that names something holds `name`), so the loader applies them all to every summary it reads, without knowing
# which run of a merged build (report/store/merge.py) wrote it.
UPGRADES = {1: _from_1, 2: _from_2}


def upgrade(summary: dict) -> dict:
    """A summary of any format `check` lets through, as the CURRENT format holds it."""
    for version in sorted(UPGRADES):
        summary = UPGRADES[version](summary)
    return summary


def check(manifest: dict, path: Path, resume: bool = False) -> None:
    """Refuse, in one line naming `path` (the manifest), a run this version cannot read; with `resume`, also a run
    in an older format (only the CURRENT format is continued)."""
    value = manifest.get(KEY)
    command = manifest.get("command")
    again = f"compute it again ({command})" if isinstance(command, str) and command else "compute it again"
    if value is None:
        raise UserError(f"{path} records no results format: an older weekday-circuits wrote it, and this version "
                        f"reads formats {_readable()} only; {again}, or build it with the version that wrote it")
    if isinstance(value, bool) or not isinstance(value, int):
        raise UserError(f"{path} is corrupt ({KEY} is {value!r}, not a whole number)")
    if value > CURRENT:
        raise UserError(f"{path} holds results format {value}, newer than the format {CURRENT} this version "
                        "reads; upgrade weekday-circuits to build it")
    if value < CURRENT and value not in UPGRADES:
        raise UserError(f"{path} holds results format {value}, older than the formats {_readable()} this version "
                        f"reads; {again}, or build it with the version that wrote it")
    if value < CURRENT and resume:
        raise UserError(f"{path} holds results format {value}, older than the format {CURRENT} this version "
                        f"writes: `build` reads it, but `run --resume` cannot continue it; start a new run "
                        f"({command or 'weekday-circuits run'}) with another --run-id")


def _readable() -> str:
    versions = sorted({*UPGRADES, CURRENT})
    return ", ".join(map(str, versions[:-1])) + f" and {versions[-1]}" if len(versions) > 1 else str(versions[0])
