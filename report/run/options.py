"""The options of `run`, and the checks that need no model: --exact, --steps and the analyses named.

On --resume, the options the user left out are taken from the resumed run's manifest (RESUMABLE_OPTIONS; see
report/run/pipeline.py).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from analyses import BY_NAME, REGISTRY
from analyses.common.types import Analysis
from analyses.methods import verified as exact_modes
from report.bundled_name import BUNDLED_MODEL_NAME
from report.errors import UserError
from report.run.shard import Shard

RESUMABLE_OPTIONS = ("models", "families", "families_file", "analyses", "dtype", "exact", "steps")


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


def select_analyses(wanted: str) -> list[Analysis]:
    """`all`, `auto` (the same list; the intervening ones are then skipped per family where the model is at
    chance, see report/run/pipeline.py `_run_model`), or names."""
    if wanted.strip() in ("all", AUTO):
        return list(REGISTRY)
    names = [n.strip() for n in wanted.split(",") if n.strip()]
    unknown = [n for n in names if n not in BY_NAME]
    if unknown or not names:
        raise UserError(f"unknown analysis {', '.join(map(repr, unknown)) or '(none given)'}; "
                        f"known: {', '.join(BY_NAME)}")
    return [a for a in REGISTRY if a.name in names]  # report order, whatever order they were named in
