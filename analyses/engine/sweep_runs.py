"""One call for an analysis: exact and attribution patching of some sweeps on one prompt family, as numpy."""

from __future__ import annotations

import numpy as np
import torch

from analyses.common.stats import SweepResults
from analyses.common.types import PromptSet
from analyses.engine.attribution_patching import attribution_sweeps
from analyses.engine.sweeps import Runs, collect_runs, exact_sweeps, hook_name, patch_everything, patched_logit_diffs


def run_sweeps(model, prompts: PromptSet, sweeps, chunk_rows: int | None = None) -> SweepResults:
    """Exact and attribution patching of `sweeps` for one prompt family."""
    runs = collect_runs(model, prompts, sweeps)
    exact = exact_sweeps(model, runs, sweeps, chunk_rows=chunk_rows)
    return sweep_results(model, runs, sweeps, exact, attribution_sweeps(model, runs, sweeps))


def sweep_results(model, runs: Runs, sweeps, exact: dict[str, torch.Tensor],
                  attribution: dict[str, torch.Tensor]) -> SweepResults:
    """The sweeps' numbers as numpy, with the checks that ride along (first prompt's patterns, patch-everything)."""
    corrupted = runs.corrupted_ld

    def numpy(t: torch.Tensor) -> np.ndarray:
        return t.detach().float().cpu().numpy()

    return SweepResults(
        exact={s: numpy(exact[s]) for s in sweeps},
        attribution={s: numpy(attribution[s] + corrupted) for s in sweeps},
        clean_ld=numpy(runs.clean_ld), corrupted_ld=numpy(corrupted),
        first_prompt_patterns=np.stack([numpy(runs.clean[hook_name("pattern", layer)][0])
                                        for layer in range(runs.n_layers)]) if "pattern" in sweeps else None,
        everything_ld=numpy(patched_logit_diffs(model, runs, [patch_everything(runs)])[0])
        if "resid_pre" in sweeps else None,
    )
