"""Geometry: is the sequence a circle in the residual stream, and is "one step on" a rotation of it?

Engels et al. (2024, "Not all language model features are linear") find the days of the week on a circle in a 2D
plane of GPT-2's residual stream. This analysis asks the same of every family, at every layer:

  1. Read the residual stream [points, batch, d_model] at two positions of every clean prompt (templates x items):
     the item token and the final position. points = n_layers + 1: resid_pre of every block, then the stream
     after the last block (the final stream, before the final norm).
     The item token is the LAST token of the prompt that is an item of the sequence, with or without its leading
     space: the slot's item in one-item families ("Today it is {day} ..."), the last listed item in list families
     ("{day}, {day+1}, {day+2}," -> {day+2}). Its item is read from the token, so the circle is drawn over the item
     actually there.
  2. Per point, PCA to 2D fit on the n per-item means at the item token (the means over templates), centred on
     their mean. Variance explained by the top two components = (s1^2 + s2^2) / sum s^2 of the centred means.
  3. Circle-order score: sort the items by their angle on that plane; the score is the fraction of the n
     consecutive pairs (i, i+1 mod n) of the sequence that are neighbours in that circular order. 1 = the items
     sit on the plane in sequence order (either direction).
     Chance: for n items at independent uniformly random angles, a given pair is adjacent in the circular order
     with probability 2 / (n - 1) (each item has 2 of the other n - 1 as neighbours): 1/3 for the 7 days, 2/11 =
     0.18 for the 12 months (1 for n = 3, where the score cannot tell anything). `circle_p_value` is the chance
     probability of a score at least the best one, by Monte Carlo over random orders (fixed seed).
  4. Rotation check, at the best point (highest circle order; ties: larger top-2 variance, then the earlier
     point): project the final-position states onto the same plane, centred on their own mean (the final token
     is not an item token, so its states sit elsewhere in the stream; only their angles are compared). The
     offset of a prompt is the angle of its final state minus the angle of its item's mean, in steps of 2 pi / n,
     signed so that the sequence's forward direction on the circle is positive; `rotation_offset_steps` is the
     circular mean over prompts. If "one step on" is a rotation of the circle, it equals `expected_offset_steps`
     (the answer's step from the item at the item token: +1 for "tomorrow", +1 for a list's next item, -1 for
     "the day before"). `rotation_match_frac` is the fraction of prompts whose final state is nearest in angle
     to the answer's item (chance 1/n; the exact binomial test of analyses.thresholds). `final_spread_ratio` is
     the spread of the final states' per-item means on the plane relative to the items' (below MIN_FINAL_SPREAD
     the final position does not vary with the item there, and no rotation is read).

Finding rule (narrative): a circle is reported when the best score is >= MIN_CIRCLE_ORDER and its chance
probability is < thresholds.ALPHA; the rotation is called consistent with the answer's step when the mean offset
is within MAX_ROTATION_ERROR_STEPS of the expected one and the match fraction is above chance.
"""

from __future__ import annotations

import numpy as np
import plotly.graph_objects as go

from analyses import plots, thresholds
from analyses.metrics import model_device
from analyses.types import Analysis, Figure, PromptSet, Result

NAME = "geometry"
MIN_CIRCLE_ORDER = 0.8  # at least 80% of consecutive items are angular neighbours
MAX_ROTATION_ERROR_STEPS = 0.5  # half a step: the final state is nearer the answer than its neighbours
MIN_FINAL_SPREAD = 1e-3  # final states spread less than this (relative to the items) carry no angle
CHANCE_DRAWS = 20000  # Monte Carlo draws for the circle order's chance probability
CHANCE_SEED = 0


# --- the maths (numpy only) -------------------------------------------------------------------------------------

def pca_2d(means: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """[n, d] item means -> (centre [d], basis [2, d] (rows = top two components), explained [2] fractions)."""
    centre = means.mean(axis=0)
    _, s, vt = np.linalg.svd(means - centre, full_matrices=False)
    total = float((s ** 2).sum())
    explained = (s[:2] ** 2) / total if total > 0 else np.zeros(2)
    basis = vt[:2]
    if basis.shape[0] < 2:  # fewer than 2 informative directions (d = 1): pad so the plane is defined
        basis = np.vstack([basis, np.zeros((2 - basis.shape[0], means.shape[1]))])
        explained = np.pad(explained, (0, 2 - explained.shape[0]))
    return centre, basis, explained


def angles(xy: np.ndarray) -> np.ndarray:
    """[..., 2] plane coordinates -> [...] angles in radians."""
    return np.arctan2(xy[..., 1], xy[..., 0])


def circle_order(item_angles: np.ndarray) -> float:
    """Fraction of consecutive pairs (i, i+1 mod n) that are neighbours in the circular order of the angles."""
    n = len(item_angles)
    rank = np.empty(n, dtype=int)
    rank[np.argsort(item_angles, kind="stable")] = np.arange(n)
    gap = (rank[(np.arange(n) + 1) % n] - rank) % n
    return float(((gap == 1) | (gap == n - 1)).mean())


def circle_chance(n: int) -> float:
    """Expected circle order for random angles: a pair is adjacent with probability 2 / (n - 1)."""
    return min(1.0, 2.0 / (n - 1))


def circle_p_value(score: float, n: int, draws: int = CHANCE_DRAWS, seed: int = CHANCE_SEED) -> float:
    """P(circle order >= score) for n items at random angles (Monte Carlo, fixed seed, so reruns agree); at least
    1 / (draws + 1), the resolution of the estimate."""
    rng = np.random.default_rng(seed)
    order = np.argsort(rng.random((draws, n)), axis=1)
    rank = np.argsort(order, axis=1)
    gap = (rank[:, (np.arange(n) + 1) % n] - rank) % n
    scores = ((gap == 1) | (gap == n - 1)).mean(axis=1)
    return float(((scores >= score - 1e-9).sum() + 1) / (draws + 1))  # (k + 1) / (N + 1): never 0


def wrap(angle: np.ndarray) -> np.ndarray:
    """Angles to (-pi, pi]."""
    return -(((-np.asarray(angle)) + np.pi) % (2 * np.pi) - np.pi)


def orientation(item_angles: np.ndarray) -> float:
    """+1 if the sequence runs counter-clockwise on the plane (mean step between consecutive items > 0), else -1."""
    steps = wrap(np.roll(item_angles, -1) - item_angles)
    return 1.0 if np.sin(steps).sum() >= 0 else -1.0


def rotation_offsets(item_angles: np.ndarray, final_angles: np.ndarray, position_items: np.ndarray) -> np.ndarray:
    """[batch] offset of each final state from its item's angle, in steps of 2 pi / n, forward = positive."""
    n = len(item_angles)
    delta = wrap(final_angles - item_angles[position_items])
    return orientation(item_angles) * delta / (2 * np.pi / n)


def circular_mean_steps(offsets: np.ndarray, n: int) -> float:
    """Circular mean of offsets given in steps (so that +n/2 and -n/2 do not cancel to 0)."""
    radians = np.asarray(offsets) * 2 * np.pi / n
    return float(np.arctan2(np.sin(radians).mean(), np.cos(radians).mean()) / (2 * np.pi / n))


def nearest_items(item_angles: np.ndarray, final_angles: np.ndarray) -> np.ndarray:
    """[batch] index of the item whose angle is nearest each final state's angle."""
    return np.abs(wrap(final_angles[:, None] - item_angles[None, :])).argmin(axis=1)


def signed_step(step: int, n: int) -> int:
    """A step modulo n, as the signed value in (-n/2, n/2]."""
    step %= n
    return step - n if step > n // 2 else step


# --- reading the model -----------------------------------------------------------------------------------------

def item_positions(prompts: PromptSet) -> tuple[np.ndarray, np.ndarray]:
    """[batch] position of the last item token of each prompt and [batch] the item it names.

    Raises ValueError naming the family and prompt when a prompt holds no item as a whole token.
    """
    lookup = {item: i for i, item in enumerate(prompts.items)}
    positions, items = [], []
    for prompt, tokens in zip(prompts.clean_prompts, prompts.str_tokens):
        found = [(p, lookup[t.strip()]) for p, t in enumerate(tokens) if t.strip() in lookup]
        if not found:
            raise ValueError(f"family '{prompts.family}', prompt {prompt!r}: no token is an item of sequence "
                             f"'{prompts.sequence}', so there is no item position to read")
        positions.append(found[-1][0])
        items.append(found[-1][1])
    return np.array(positions), np.array(items)


def residual_streams(model, prompts: PromptSet) -> tuple[np.ndarray, list[str]]:
    """[points, batch, seq, d_model] residual stream: resid_pre of every block, then the final stream."""
    n_layers = model.cfg.n_layers
    final = f"blocks.{n_layers - 1}.hook_resid_post"

    def wanted(name: str) -> bool:
        return name.endswith("hook_resid_pre") or name == final

    _, cache = model.run_with_cache(prompts.clean_tokens.to(model_device(model)), names_filter=wanted)
    stack = [cache[f"blocks.{layer}.hook_resid_pre"] for layer in range(n_layers)] + [cache[final]]
    labels = [f"L{layer} resid_pre" for layer in range(n_layers)] + ["final"]
    return np.stack([s.detach().float().cpu().numpy() for s in stack]), labels


def compute(model, prompts: PromptSet) -> Result:
    try:
        positions, position_items = item_positions(prompts)
    except ValueError as err:  # a user's family whose item is glued to other text: say so, compute nothing
        return Result(summary={"family": prompts.family, "sequence": prompts.sequence, "note": str(err)})
    streams, layer_labels = residual_streams(model, prompts)
    rows = np.arange(prompts.n_prompts)
    at_item, at_final = streams[:, rows, positions], streams[:, :, -1]  # [points, batch, d_model] each
    return geometry_result(at_item, at_final, position_items, np.array(prompts.answer_items()), prompts,
                           layer_labels)


def geometry_result(at_item: np.ndarray, at_final: np.ndarray, position_items: np.ndarray, answers: np.ndarray,
                    prompts: PromptSet, layer_labels: list[str]) -> Result:
    """The numbers from residual states at the item token and the final position, [points, batch, d_model]."""
    n = prompts.n_items
    n_points = at_item.shape[0]
    item_xy = np.zeros((n_points, n, 2))
    prompt_xy = np.zeros((n_points, len(position_items), 2))
    final_xy = np.zeros_like(prompt_xy)
    explained = np.zeros((n_points, 2))
    scores = np.zeros(n_points)
    for point in range(n_points):
        means = _item_means(at_item[point], position_items, n)
        centre, basis, explained[point] = pca_2d(means)
        item_xy[point] = (means - centre) @ basis.T
        prompt_xy[point] = (at_item[point] - centre) @ basis.T
        final_xy[point] = (at_final[point] - at_final[point].mean(axis=0)) @ basis.T
        scores[point] = circle_order(angles(item_xy[point]))
    top2 = explained.sum(axis=1)
    best = max(range(n_points), key=lambda p: (scores[p], top2[p], -p))
    # the rotation check at every point (the headline keys are the best point's; the lists show where it holds)
    offset_by_point = np.stack([rotation_offsets(angles(item_xy[p]), angles(final_xy[p]), position_items)
                                for p in range(n_points)])  # [points, batch]
    match_by_point = np.array([(nearest_items(angles(item_xy[p]), angles(final_xy[p])) == answers).mean()
                               for p in range(n_points)])
    offsets = offset_by_point[best]
    expected = [signed_step(int(a - i), n) for a, i in zip(answers, position_items)]
    matches = nearest_items(angles(item_xy[best]), angles(final_xy[best])) == answers
    above, match_p = thresholds.above_chance(int(matches.sum()), len(matches), n)
    summary = {
        "family": prompts.family, "sequence": prompts.sequence, "n_items": n, "n_points": n_points,
        "layer_labels": layer_labels,
        "circle_order": scores.tolist(),
        "variance_top2": top2.tolist(),
        "best_layer": int(best), "best_layer_label": layer_labels[best],
        "best_circle_order": float(scores[best]), "best_variance_top2": float(top2[best]),
        "circle_chance": circle_chance(n), "circle_p_value": circle_p_value(float(scores[best]), n),
        "rotation_offset_steps": circular_mean_steps(offsets, n),
        "expected_offset_steps": float(np.mean(expected)),
        "rotation_match_frac": float(matches.mean()), "rotation_match_p_value": match_p,
        "rotation_match_above_chance": bool(above),
        "rotation_offset_steps_by_layer": [circular_mean_steps(o, n) for o in offset_by_point],
        "rotation_match_frac_by_layer": match_by_point.tolist(),
        # spread of the final states' per-item means on the plane, relative to the items': ~0 where the final
        # position does not vary with the item (e.g. before any attention layer), so that its angles mean nothing
        "final_spread_ratio": _spread(_item_means(final_xy[best], position_items, n))
        / max(_spread(item_xy[best]), 1e-30),
    }
    answer_labels = [prompts.items[a] for a in answers]
    return Result(
        summary=summary,
        arrays={"item_xy": item_xy, "prompt_xy": prompt_xy, "final_xy": final_xy, "explained": explained,
                "rotation_offsets": offsets},
        labels={"items": list(prompts.items), "layers": layer_labels, "prompts": prompts.clean_prompts,
                "position_items": [prompts.items[i] for i in position_items], "answer_items": answer_labels},
    )


def _item_means(xy: np.ndarray, position_items: np.ndarray, n: int) -> np.ndarray:
    """[n, ...] mean over the prompts of each item."""
    return np.stack([xy[position_items == i].mean(axis=0) for i in range(n)])


def _spread(xy: np.ndarray) -> float:
    """Root mean square distance of the points from their mean."""
    return float(np.sqrt(((xy - xy.mean(axis=0)) ** 2).sum(axis=1).mean()))


def circle_found(summary: dict) -> bool:
    return (summary["best_circle_order"] >= MIN_CIRCLE_ORDER
            and summary["circle_p_value"] < thresholds.ALPHA)


# --- figures and narrative (no model) --------------------------------------------------------------------------

TRACES_PER_POINT = 3


def figures(result: Result) -> list[Figure]:
    if "note" in result.summary:
        return []
    by_layer, rotation = _by_layer_figures(result)
    return [Figure("geometry-plane", _plane_figure(result)), Figure("geometry-by-layer", by_layer),
            Figure("geometry-rotation-by-layer", rotation)]


def _plane_figure(result: Result):
    """One figure, every point's plane; a slider shows one point at a time (visibility only: works offline)."""
    s, a, lab = result.summary, result.arrays, result.labels
    items, layers, best = lab["items"], lab["layers"], s["best_layer"]
    fig = go.Figure()
    for point, label in enumerate(layers):
        # closed: the last item joins the first, whose second point is left unlabelled
        loop = np.vstack([a["item_xy"][point], a["item_xy"][point][:1]])
        visible = point == best
        fig.add_trace(go.Scatter(x=loop[:, 0], y=loop[:, 1], mode="lines+markers+text", text=items + [""],
                                 textposition="top center", name="item means (sequence order)", visible=visible,
                                 hovertemplate="%{text}<extra>" + label + "</extra>"))
        fig.add_trace(go.Scatter(x=a["prompt_xy"][point][:, 0], y=a["prompt_xy"][point][:, 1], mode="markers",
                                 marker=dict(size=5, opacity=0.5), name="item token, per prompt", visible=visible,
                                 text=lab["prompts"], hovertemplate="%{text}<extra>item token</extra>"))
        fig.add_trace(go.Scatter(x=a["final_xy"][point][:, 0], y=a["final_xy"][point][:, 1], mode="markers",
                                 marker=dict(size=6, symbol="x"), name="final position (own centre)",
                                 visible=visible, text=[f"{p} → {ans}" for p, ans in zip(lab["prompts"],
                                                                                        lab["answer_items"])],
                                 hovertemplate="%{text}<extra>final position</extra>"))
    steps = []
    for point, label in enumerate(layers):
        visible = [trace // TRACES_PER_POINT == point for trace in range(TRACES_PER_POINT * len(layers))]
        steps.append(dict(method="update", label=label,
                          args=[{"visible": visible},
                                {"title.text": _plane_title(s, point)}]))
    fig.update_layout(sliders=[dict(active=best, steps=steps, currentvalue=dict(prefix="layer: "), pad=dict(t=40))])
    fig.update_xaxes(title="PC 1", zeroline=True)
    fig.update_yaxes(title="PC 2", zeroline=True, scaleanchor="x", scaleratio=1)
    fig.update_layout(title=dict(text=_plane_title(s, best), x=0.01), height=560, **plots.LAYOUT)
    return fig


def _plane_title(s: dict, point: int) -> str:
    return (f"{s['layer_labels'][point]}: items on the top-2 PCA plane (circle order "
            f"{s['circle_order'][point]:.2f}, top-2 variance {100 * s['variance_top2'][point]:.0f}%)")


def _by_layer_figures(result: Result) -> list:
    s = result.summary
    fig = plots.lines(s["layer_labels"], {"circle order": np.asarray(s["circle_order"]),
                                          "variance explained by the top 2 PCs": np.asarray(s["variance_top2"])},
                      "Circle order and top-2 variance per layer", "residual stream", "fraction", height=360)
    fig.add_hline(y=s["circle_chance"], line_dash="dot",
                  annotation_text=f"circle order chance {s['circle_chance']:.2f}")
    rotation = plots.lines(s["layer_labels"], {"final position − item (steps)":
                                               np.asarray(s["rotation_offset_steps_by_layer"])},
                           f"Rotation per layer: mean angular offset of the final position from the item "
                           f"(the answer is {s['expected_offset_steps']:+.0f} steps on)", "residual stream",
                           "steps", height=340)
    rotation.add_hline(y=s["expected_offset_steps"], line_dash="dot", annotation_text="answer's step")
    return [fig, rotation]


def narrative(result: Result) -> list[str]:
    s = result.summary
    if "note" in s:
        return [f"No geometry for this family: {s['note']}."]
    n, best = s["n_items"], s["best_layer_label"]
    pairs = round(s["best_circle_order"] * n)
    rule = (f"a circle is reported when at least {MIN_CIRCLE_ORDER:.0%} of consecutive items are angular "
            f"neighbours and that score has chance probability < {thresholds.ALPHA}")
    if not circle_found(s):
        return [f"No layer places the {n} items on a circle in sequence order: the best circle order is "
                f"{s['best_circle_order']:.2f} ({pairs} of {n} consecutive pairs are neighbours) at {best}, against "
                f"{s['circle_chance']:.2f} for random angles (chance probability {s['circle_p_value']:.2g}; {rule})."]
    sentences = [f"At {best} the mean residual streams of the {n} items lie around a circle in sequence order: "
                 f"{pairs} of {n} consecutive items are neighbours in angle (circle order "
                 f"{s['best_circle_order']:.2f}, chance {s['circle_chance']:.2f}, chance probability "
                 f"{s['circle_p_value']:.2g}), and the top two principal components hold "
                 f"{100 * s['best_variance_top2']:.0f}% of the variance of the item means."]
    if s["final_spread_ratio"] < MIN_FINAL_SPREAD:
        sentences.append(f"At {best} the final position does not vary with the item (its spread on the plane is "
                         f"{s['final_spread_ratio']:.2g} of the items'; at least {MIN_FINAL_SPREAD} is needed), so "
                         "there is no rotation to measure there.")
        return sentences
    error = abs(s["rotation_offset_steps"] - s["expected_offset_steps"])
    consistent = error <= MAX_ROTATION_ERROR_STEPS and s["rotation_match_above_chance"]
    sentences.append(
        f"On that plane the final position sits on average {s['rotation_offset_steps']:+.2f} steps from the item's "
        f"angle, where the answer is {s['expected_offset_steps']:+.0f} steps on; its nearest item is the answer for "
        f"{s['rotation_match_frac']:.0%} of prompts (chance {1 / n:.0%}, binomial p = "
        f"{s['rotation_match_p_value']:.2g}). "
        + ("This is consistent with the next item being a rotation of the circle by the answer's step."
           if consistent else
           f"This does not show a rotation by the answer's step (consistent would need the offset within "
           f"{MAX_ROTATION_ERROR_STEPS} step of it and the match above chance)."))
    return sentences


GEOMETRY = Analysis(
    name=NAME,
    title="Geometry",
    definition="Residual stream at the item token (the last token of the prompt that names an item of the "
               "sequence) and at the final position, before every block and after the last. Per layer, PCA to 2D "
               "fit on the per-item means. Circle order: the fraction of consecutive items (i, i+1 mod n) that are "
               "neighbours in angle on that plane (1 = a clean circle in sequence order; chance 2/(n−1) for random "
               "angles). Rotation: at the best layer, the final-position states are projected on the same plane "
               "(centred on their own mean) and their angle compared with the item's, in steps of 360°/n.",
    compute=compute, figures=figures, narrative=narrative, part="representation",
)
