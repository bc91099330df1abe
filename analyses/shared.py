"""The work several analyses of one family share, each piece computed once per (model, family, corruption) and kept
in the family's `FamilyContext` (not an analysis).

Before, each patching and mechanism analysis collected its own clean and corrupted runs, `does_the_task` ran a forward
pass once per analysis, and `path_patching` and `circuit` recomputed the head patching that `patching_heads` had just
computed. Here:
  above_chance(ctx, prompts)            the chance flag, one forward pass per family (clean prompts only);
  runs(ctx, prompts)                    the clean and corrupted runs caching every hook any sweep patches;
  exact(ctx, prompts, sweeps)           exact patching per sweep [L, units, B]; sweeps not yet computed are computed
                                        together, in the order asked (so chunks, and numbers, are the ones each
                                        analysis computed alone);
  attribution(ctx, prompts, sweeps)     attribution patching per sweep [L, units, B], likewise;
  head_ranking(ctx, prompts)            heads by |mean z-patching change of LD|, largest first (the ranking
                                        `path_patching`'s senders and `circuit`'s head nodes come from);
  path_setup / path_effects             path patching's base runs, and each sender's path effects, computed once
                                        per sender whoever asks first (`path_patching` or `circuit`'s diagram).
Every key carries the corruption, so the day and relation twins never mix.
"""

from __future__ import annotations

import numpy as np
import torch

from analyses import intervention as engine
from analyses import paths
from analyses.metrics import does_the_task
from analyses.types import FamilyContext, PromptSet


def context_for(model, context: FamilyContext | None) -> FamilyContext:
    """The pipeline's context, or a fresh one for an analysis called on its own."""
    return context if context is not None else FamilyContext(model)


def above_chance(ctx: FamilyContext, prompts: PromptSet) -> bool:
    return ctx.get(("above_chance", prompts.family), lambda: does_the_task(ctx.model, prompts))


def runs(ctx: FamilyContext, prompts: PromptSet) -> engine.Runs:
    """Both runs, caching the activations of every sweep (the union costs little: one forward each)."""
    return ctx.get(("runs", prompts.family, prompts.corruption),
                   lambda: engine.collect_runs(ctx.model, prompts, tuple(engine.SWEEPS)))


def exact(ctx: FamilyContext, prompts: PromptSet, sweeps) -> dict[str, torch.Tensor]:
    return _memoised_sweeps(ctx, prompts, sweeps, "exact", engine.exact_sweeps)


def attribution(ctx: FamilyContext, prompts: PromptSet, sweeps) -> dict[str, torch.Tensor]:
    return _memoised_sweeps(ctx, prompts, sweeps, "attribution", engine.attribution_sweeps)


def _memoised_sweeps(ctx: FamilyContext, prompts: PromptSet, sweeps, kind: str, compute) -> dict[str, torch.Tensor]:
    """sweep -> `compute(model, runs, sweeps)`'s result, each sweep computed once per (family, corruption)."""
    key = lambda sweep: (kind, prompts.family, prompts.corruption, sweep)  # noqa: E731
    missing = tuple(s for s in sweeps if key(s) not in ctx.memo)
    if missing:
        computed = compute(ctx.model, runs(ctx, prompts), missing)
        for sweep in missing:
            ctx.memo[key(sweep)] = computed[sweep]
    return {s: ctx.memo[key(s)] for s in sweeps}


def sweep_results(ctx: FamilyContext, prompts: PromptSet, sweeps):
    """What `engine.run_sweeps` returns, from the shared runs and sweeps."""
    return engine.sweep_results(ctx.model, runs(ctx, prompts), sweeps, exact(ctx, prompts, sweeps),
                                attribution(ctx, prompts, sweeps))


def head_z_change(ctx: FamilyContext, prompts: PromptSet) -> np.ndarray:
    """[L, H] mean change of LD when each head's z is patched clean → corrupted (logits)."""
    z = exact(ctx, prompts, ("z",))["z"]
    return (z.mean(-1) - runs(ctx, prompts).corrupted_ld.mean()).detach().float().cpu().numpy()


def head_ranking(ctx: FamilyContext, prompts: PromptSet) -> list[tuple[int, int]]:
    """Every head (layer, head), largest |mean z-patching change| first (ties: layer-major order)."""
    change = head_z_change(ctx, prompts)
    order = np.argsort(-np.abs(change).ravel(), kind="stable")
    return [(int(i) // change.shape[1], int(i) % change.shape[1]) for i in order]


def path_setup(ctx: FamilyContext, prompts: PromptSet) -> paths.PathSetup:
    return ctx.get(("path_setup", prompts.family, prompts.corruption), lambda: paths.setup(ctx.model, prompts))


def remember_path_effects(ctx: FamilyContext, prompts: PromptSet, senders: list[tuple[int, int]],
                          effects: dict[str, torch.Tensor]) -> None:
    """Keep `paths.path_effects`-shaped effects that an analysis computed itself (path_patching reads them beside
    the answer's logit in one pass), so that circuit's diagram does not compute them again."""
    done: dict[tuple[int, int], dict[str, torch.Tensor]] = ctx.get(("path_effects", prompts.family,
                                                                     prompts.corruption), dict)
    for k, sender in enumerate(senders):
        done.setdefault(sender, {name: value[k] for name, value in effects.items()})


def path_effects(ctx: FamilyContext, prompts: PromptSet, senders: list[tuple[int, int]]) -> dict[str, torch.Tensor]:
    """`paths.path_effects` for `senders`, each sender's paths computed once whoever asks (batched when missing)."""
    key = ("path_effects", prompts.family, prompts.corruption)
    done: dict[tuple[int, int], dict[str, torch.Tensor]] = ctx.get(key, dict)
    missing = [s for s in senders if s not in done]
    if missing:
        computed = paths.path_effects(ctx.model, path_setup(ctx, prompts), missing)
        for k, sender in enumerate(missing):
            done[sender] = {name: value[k] for name, value in computed.items()}
    return {name: torch.stack([done[s][name] for s in senders]) for name in done[senders[0]]}
