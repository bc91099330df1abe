"""`--shard K/N`: split a run's (model, family) work across N machines, deterministically.

The pairs are listed model-major, in the order given (`--model a --model b`, then the families in the order
selected), and cut into N contiguous blocks whose sizes differ by at most one; shard K (1-based) computes block
K. Contiguous blocks keep a model's families together, so most shards load one model (a model whose families
straddle two blocks is loaded by both). Every shard checks the whole request (names, families against every
tokenizer) before computing, so all shards fail alike on bad input; each writes its own run folder
(`<run-id>-shardKofN`), and `build` merges the folders into one report (`report/store/merge.py`).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from report.errors import UserError


@dataclass(frozen=True)
class Shard:
    index: int  # 1-based
    count: int

    def __str__(self) -> str:
        return f"{self.index}/{self.count}"

    @property
    def suffix(self) -> str:
        """Appended to the run id, so that shards sharing an --out folder never collide."""
        return f"shard{self.index}of{self.count}"


def parse_shard(text: str | None) -> Shard | None:
    """'2/4' -> Shard(2, 4); None -> None (no sharding)."""
    if text is None:
        return None
    match = re.fullmatch(r"\s*(\d+)\s*/\s*(\d+)\s*", text)
    if not match or not 1 <= int(match[1]) <= int(match[2]):
        raise UserError(f"--shard {text!r}: expected K/N with 1 <= K <= N, e.g. --shard 2/4")
    return Shard(int(match[1]), int(match[2]))


def assign(models: list[str], families: list[str], shard: Shard | None) -> dict[str, list[str]]:
    """{model: [family, ...]} this shard computes (every model and family without sharding); models in order."""
    pairs = [(model, family) for model in models for family in families]
    if shard is not None:
        pairs = pairs[(shard.index - 1) * len(pairs) // shard.count: shard.index * len(pairs) // shard.count]
    work: dict[str, list[str]] = {}
    for model, family in pairs:
        work.setdefault(model, []).append(family)
    return work
