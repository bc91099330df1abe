"""The causal test of a circle (Engels et al. 2025, "Not all language model features are one-dimensionally linear",
their intervention on the circle subspace): does the model USE the plane the items lie on?

At the item token of one layer L (resid_pre), for every clean prompt b with item i and every step k = 1 .. n - 1,
the item-token state x is edited so that it names item i + k instead, in one of these ways (each a row of the
intervention engine, analyses.engine.run_rows, starting at block L):

  plane-2     the projection of x - centre onto the fitted plane P (top 2 PCs of the item means, [2, d]) is replaced
              by item i + k's mean projection:     x' = x + (c_{i+k} - (x - centre) P^T) P
  rotate-2    x's own plane coordinates are rotated by k steps of 2 pi / n in the sequence's direction (its radius
              kept):                              x' = x + (R_k c_x - c_x) P
  plane-5     as plane-2 on the top min(5, n - 1) PCs
  random-2/5  as plane-2/5 on a random orthonormal subspace of the same size (fixed seed): the baseline a plane
              must beat (a subspace that holds no item structure should move nothing)
  whole       the whole item-token state replaced by that of the same template's prompt with item i + k: the
              ceiling (everything the model reads about the item at that token)
  none        no edit: how often the answer is already i + k + offset (the floor)

The answer moves to the intended item when the argmax of the final logits over the n items is the prompt's answer
plus k (its offset from the item is kept). `success[variant]` is that fraction over prompts x steps; chance 1/n.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from analyses.common.types import PromptSet
from analyses.engine.readout import final_logits_of
from analyses.engine.rows import Edit, Row, collect_base, run_rows
from analyses.engine.sweeps import hook_name

VARIANTS = ("plane-2", "rotate-2", "plane-5", "random-2", "random-5", "whole", "none")
MAX_PCS = 5
RANDOM_SEED = 0


@dataclass(frozen=True)
class CausalTest:
    layer: int  # resid_pre of this block
    success: dict[str, float]  # variant -> fraction of (prompt, step) whose answer moved to the intended item
    success_by_step: dict[str, list[float]]  # variant -> [n - 1] fraction per step k = 1 .. n - 1
    n_trials: int  # prompts x steps per variant


def plane_basis(means: np.ndarray, size: int) -> tuple[np.ndarray, np.ndarray]:
    """[n, d] item means -> (centre [d], top `size` principal directions [size, d])."""
    centre = means.mean(axis=0)
    _, _, vt = np.linalg.svd(means - centre, full_matrices=False)
    return centre, vt[:size]


def random_basis(d: int, size: int, seed: int = RANDOM_SEED) -> np.ndarray:
    """[size, d] a random orthonormal basis (fixed seed)."""
    q, _ = np.linalg.qr(np.random.default_rng(seed).normal(size=(d, size)))
    return q.T


def _rotation(steps: float) -> np.ndarray:
    c, s = np.cos(steps), np.sin(steps)
    return np.array([[c, -s], [s, c]])


def deltas(variant: str, states: np.ndarray, means: np.ndarray, items: np.ndarray, k: int,
           donors: np.ndarray, direction: float) -> np.ndarray:
    """[B, d] the change to each prompt's item-token state [B, d] that makes it name item + k (see the docstring).
    `donors` [B, d]: the item-token state of the same template's prompt with item + k; `direction`: +1 when the
    sequence runs counter-clockwise on the 2-D plane."""
    n, d = means.shape
    target = (items + k) % n
    if variant == "whole":
        return donors - states
    size = 2 if variant.endswith("-2") else min(MAX_PCS, n - 1)
    if variant.startswith("random"):
        centre, basis = means.mean(axis=0), random_basis(d, size)
    else:
        centre, basis = plane_basis(means, size)
    coords = (states - centre) @ basis.T  # [B, size]
    if variant == "rotate-2":
        wanted = coords @ _rotation(direction * 2 * np.pi * k / n).T
    else:
        wanted = (means[target] - centre) @ basis.T
    return (wanted - coords) @ basis


def direction_on_plane(means: np.ndarray) -> float:
    """+1 if the items run counter-clockwise on their top-2 plane (the mean step between consecutive items), else -1."""
    centre, basis = plane_basis(means, 2)
    xy = (means - centre) @ basis.T
    theta = np.arctan2(xy[:, 1], xy[:, 0])
    return 1.0 if np.sin(np.roll(theta, -1) - theta).sum() >= 0 else -1.0


def causal_test(model, prompts: PromptSet, layer: int, positions: np.ndarray, items: np.ndarray) -> CausalTest:
    """Run every variant at resid_pre of `layer` (see the module docstring); `items` [B]: the item at `positions`."""
    n, B = prompts.n_items, prompts.n_prompts
    base = collect_base(model, prompts.clean_tokens)
    resid = base.cache[hook_name("resid_pre", layer)]  # [B, S, d]
    rows_ix = torch.arange(B)
    states = resid[rows_ix, torch.as_tensor(positions)].double().cpu().numpy()  # [B, d]
    means = np.stack([states[items == i].mean(axis=0) for i in range(n)])
    direction = direction_on_plane(means)
    cell = {(t, i): b for b, (t, i) in enumerate(zip(prompts.template_index, prompts.item_index))}
    answers = np.array(prompts.answer_items())
    rows, keys = [], []
    for k in range(1, n):
        donors = states[[cell[(t, (i + k) % n)] for t, i in zip(prompts.template_index, prompts.item_index)]]
        for variant in VARIANTS[:-1]:
            change = torch.zeros_like(resid)
            change[rows_ix, torch.as_tensor(positions)] = torch.as_tensor(
                deltas(variant, states, means, items, k, donors, direction), dtype=resid.dtype, device=resid.device)
            rows.append(Row((Edit(hook_name("resid_pre", layer), (), change, add=True),)))
            keys.append((variant, k))
    rows.append(Row((Edit(hook_name("resid_pre", layer), (), torch.zeros_like(resid), add=True),)))
    keys.append(("none", 0))
    final, _ = run_rows(model, base, rows)  # [rows, B, d_model]
    ids = prompts.item_token_ids.to(final.device)
    choice = final_logits_of(model, final, ids).argmax(-1).cpu().numpy()  # [rows, B]: the items' columns only
    by_step = {variant: np.zeros(n - 1) for variant in VARIANTS}
    for (variant, k), picked in zip(keys, choice):
        if variant == "none":  # the unedited answer, scored against every step's intended item
            for step in range(1, n):
                by_step["none"][step - 1] = float((picked == (answers + step) % n).mean())
        else:
            by_step[variant][k - 1] = float((picked == (answers + k) % n).mean())
    return CausalTest(layer=layer, success={v: float(s.mean()) for v, s in by_step.items()},
                      success_by_step={v: s.tolist() for v, s in by_step.items()}, n_trials=B * (n - 1))
