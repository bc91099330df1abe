"""Write report/store/schemas/<analysis>.summary.schema.json from each registered analysis's summary type.

    python -m report.store.schema_gen          # rewrite the shipped schemas
    python -m report.store.schema_gen --check  # exit 1, naming them, when a shipped schema differs from its type

The schemas are generated, never edited by hand: change the TypedDict beside the analysis and run this.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from analyses import REGISTRY
from analyses.common.contract import summary_schema

SCHEMAS = Path(__file__).parent / "schemas"


def generated() -> dict[str, str]:
    """File name -> text of every registered analysis's summary schema."""
    return {f"{a.name}.summary.schema.json": json.dumps(summary_schema(a.summary_type, a.name), indent=1,
                                                        ensure_ascii=False) + "\n"
            for a in REGISTRY}


def stale(folder: Path = SCHEMAS) -> list[str]:
    """The shipped schemas that differ from their types (or are missing), and summary schemas of no analysis."""
    wanted = generated()
    differ = [name for name, text in wanted.items()
              if not (folder / name).is_file() or (folder / name).read_text(encoding="utf-8") != text]
    orphans = [p.name for p in folder.glob("*.summary.schema.json") if p.name not in wanted]
    return sorted(differ + orphans)


def main(argv: list[str]) -> int:
    if argv == ["--check"]:
        names = stale()
        if names:
            print(f"out of date (run python -m report.store.schema_gen): {', '.join(names)}", file=sys.stderr)
        return 1 if names else 0
    for name, text in generated().items():
        (SCHEMAS / name).write_text(text, encoding="utf-8")
    for name in stale():  # what is left: schemas of analyses no longer registered
        (SCHEMAS / name).unlink()
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
