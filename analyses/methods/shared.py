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
  verified(ctx, prompts, sweeps)        exact patching under the run's `--exact` mode (`analyses.methods.verified`):
  every
                                        cell, or the top K by attribution plus a random sample (NaN elsewhere);
  head_ranking(ctx, prompts)            heads by |mean z-patching change of LD|, largest first (the ranking
                                        `path_patching`'s senders and `circuit`'s head nodes come from);
  path_setup / path_effects             path patching's base runs, and each sender's path effects, computed once
                                        per sender whoever asks first (`path_patching` or `circuit`'s diagram).
Every key carries the corruption, so the day and relation twins never mix.
"""

from __future__ import annotations

import numpy as np
import torch

from analyses import engine as engine
from analyses.common.metrics import does_the_task
from analyses.common.types import FamilyContext, PromptSet
from analyses.methods import paths
from analyses.methods import verified as verify


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
    """Every cell exact (what `circuit` ranks its nodes by), whatever `--exact` says: a sweep already verified in
    part is completed (only its unverified cells are patched), any other is computed in full."""
    for sweep in sweeps:
        part = ctx.memo.get(_verified_key(ctx, prompts, sweep))
        if part is not None and _key("exact", prompts, sweep) not in ctx.memo:
            ctx.memo[_key("exact", prompts, sweep)] = verify.complete(ctx.model, runs(ctx, prompts), sweep, part[0])
    return _memoised_sweeps(ctx, prompts, sweeps, "exact", engine.exact_sweeps)


def exact_mode(ctx: FamilyContext) -> verify.ExactMode:
    return verify.parse_exact(ctx.exact)


def verified(ctx: FamilyContext, prompts: PromptSet, sweeps) -> tuple[dict[str, torch.Tensor],
                                                                      dict[str, verify.Verification]]:
    """Exact patching per sweep [L, units, B] under the context's `--exact` mode, and what was verified: every cell
    under "all" (the same tensors as `exact`); under "top:K,sample:S" the verified cells, NaN elsewhere
    (`analyses.methods.verified`). A sweep that is already exact in full (another analysis asked first) is used
    whole."""
    mode = exact_mode(ctx)
    if not mode.partial:
        values = exact(ctx, prompts, sweeps)
        return values, {s: verify.everything(str(mode), tuple(values[s].shape[:2])) for s in sweeps}
    whole = [s for s in sweeps if _key("exact", prompts, s) in ctx.memo]
    missing = tuple(s for s in sweeps if s not in whole and _verified_key(ctx, prompts, s) not in ctx.memo)
    if missing:
        values, info = verify.verified_sweeps(ctx.model, runs(ctx, prompts), missing, mode.k, mode.sample, mode.seed,
                                              attribution=attribution(ctx, prompts, missing))
        for sweep in missing:
            ctx.memo[_verified_key(ctx, prompts, sweep)] = (values[sweep], info[sweep])
    out = {}
    for sweep in sweeps:
        if sweep in whole:
            value = ctx.memo[_key("exact", prompts, sweep)]
            out[sweep] = (value, verify.everything(str(mode), tuple(value.shape[:2])))
        else:
            out[sweep] = ctx.memo[_verified_key(ctx, prompts, sweep)]
    return {s: v for s, (v, _) in out.items()}, {s: i for s, (_, i) in out.items()}


def _key(kind: str, prompts: PromptSet, sweep: str) -> tuple:
    return (kind, prompts.family, prompts.corruption, sweep)


def _verified_key(ctx: FamilyContext, prompts: PromptSet, sweep: str) -> tuple:
    return ("verified", prompts.family, prompts.corruption, sweep, str(exact_mode(ctx)))


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
    """What `engine.run_sweeps` returns, from the shared runs and sweeps, exact where `--exact` verified (NaN
    elsewhere; `verification` says which cells)."""
    values, _ = verified(ctx, prompts, sweeps)
    return engine.sweep_results(ctx.model, runs(ctx, prompts), sweeps, values, attribution(ctx, prompts, sweeps))


def verification(ctx: FamilyContext, prompts: PromptSet, sweeps) -> dict[str, verify.Verification]:
    return verified(ctx, prompts, sweeps)[1]


def head_z_change(ctx: FamilyContext, prompts: PromptSet) -> np.ndarray:
    """[L, H] mean change of LD when each head's z is patched clean → corrupted (logits); NaN for heads that
    `--exact top:K` left unverified (their z sweep not exact in full)."""
    z = verified(ctx, prompts, ("z",))[0]["z"]
    return (z.mean(-1) - runs(ctx, prompts).corrupted_ld.mean()).detach().float().cpu().numpy()


def head_ranking(ctx: FamilyContext, prompts: PromptSet) -> list[tuple[int, int]]:
    """Every head (layer, head), largest |mean z-patching change| first (ties: layer-major order). Under
    `--exact top:K` the verified heads come first by their exact change, then the others by |attribution|: an
    unverified head is never ranked above a verified one."""
    change = head_z_change(ctx, prompts)
    estimate = (attribution(ctx, prompts, ("z",))["z"].mean(-1).detach().float().cpu().numpy()
                if np.isnan(change).any() else change)  # the estimate is read only where a head is unverified
    order = verify.ranking(change, estimate)
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
