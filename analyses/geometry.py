"""Geometry: is the sequence a circle in the residual stream that the model uses, and is "one step on" a rotation?

Engels et al. (2025, "Not all language model features are one-dimensionally linear") find the days of the week on a
circle in a 2-D plane of the residual stream, and show by intervention on that plane that the model uses it. A PCA
of item means alone is not enough: any neighbour-similar representation draws a polygon (analyses.common.circle_stats).
So this analysis draws the plane, tests it against the nulls, then intervenes on it:

  1. Read the residual stream [points, batch, d_model] at two positions of every clean prompt (templates x items):
     the item token and the final position. points = n_layers + 1: resid_pre of every block, then the stream
     after the last block (the final stream, before the final norm).
     The item token is the LAST token of the prompt that is an item of the sequence, with or without its leading
     space: the slot's item in one-item families ("Today it is {day} ..."), the last listed item in list families
     ("{day}, {day+1}, {day+2}," -> {day+2}). Its item is read from the token, so the circle is drawn over the item
     actually there.
  2. Per point, PCA to 2D fit on the n per-item means at the item token (the means over templates), centred on
     their mean. `variance_top2` = (s1^2 + s2^2) / sum s^2 of the centred means; its floor for n evenly spread
     centred points is 2 / (n - 1) (`plane_floor`).
  3. Circle-order score: sort the items by their angle on that plane; the score is the fraction of the n
     consecutive pairs (i, i+1 mod n) of the sequence that are neighbours in that circular order. 1 = the items
     sit on the plane in sequence order (either direction). Chance for random angles: 2 / (n - 1).
     `circle_p_value` is its chance probability under random angles (Monte Carlo, fixed seed) for the best point,
     Bonferroni-corrected for the points scanned (`circle_p_value_uncorrected` beside it).
     A point holds a circle geometrically (`circle_geometry`) when the order is >= MIN_CIRCLE_ORDER, the plane holds
     >= PLANE_DOMINANCE x the floor, and the corrected p of the plane share under the circulant null
     (neighbour-similar features, no circle; analyses.common.circle_stats) is < ALPHA. The random-angle probability is
     reported but does not gate: the circulant null is the stronger null, and for 7 items the random-angle floor
     (2/720) could not survive the correction for 19 points even for a perfect heptagon.
  4. Causal test (analyses.methods.circle_intervention) at the item token of one resid_pre point: the first point that
     holds a circle geometrically, else the resid_pre point with the best circle order. The item's plane
     projection is replaced by another item's (2 PCs and 5 PCs) or rotated by k steps, beside a random plane of
     the same size, the whole state, and no edit. A circle is NAMED (`circle_named`) only where it holds
     geometrically there and plane-2 moves the answer to the intended item for at least MIN_CAUSAL_MARGIN more of
     the (prompt, step) trials than both the random plane and no edit, above chance 1/n (binomial, p < ALPHA).
  5. Rotation, read against a FIXED reference: the reference point is the first point that holds a circle
     geometrically (else the embedding, point 0); its plane and its item-mean angles are the reference. At every
     point the final-position states are projected onto the reference plane (centred on their own mean; the final
     token is not an item token, so only angles are compared). Offset of a prompt = angle of its final state minus
     the reference angle of its item, in steps of 2 pi / n, forward = positive; per point the circular mean over
     prompts (`rotation_offset_steps_by_layer`), None where the final position does not vary with the item there
     (its per-item means spread less than MIN_FINAL_SPREAD of the reference items'). The headline
     (`rotation_offset_steps`, `rotation_match_frac`: nearest reference item = the answer, chance 1/n, exact
     binomial test) is read at the last point, the stream the model unembeds. Reading the offset against the item
     token's own angle at the same layer would cancel a rotation a head has already written at the item token too.

Finding rule (narrative): see `circle_named` above; the rotation is called consistent with the answer's step when
the mean offset is within MAX_ROTATION_ERROR_STEPS of the expected one and the match fraction is above chance.
"""

from __future__ import annotations

from typing import Annotated

import numpy as np

from analyses.common import circle_stats, thresholds
from analyses.common.circle_geometry import (
    angles,
    circle_chance,
    circle_p_value,
    circular_mean_steps,
    nearest_items,
    signed_step,
)
from analyses.common.circle_scan import MIN_FINAL_SPREAD, rotation_on_reference, scan_planes
from analyses.common.contract import Count, Fraction, PValue, SequenceHeader
from analyses.common.geometry_figures import by_layer_figures, causal_figure, plane_figure
from analyses.common.thresholds import MAX_ROTATION_ERROR_STEPS, MIN_CAUSAL_MARGIN, MIN_CIRCLE_ORDER, PLANE_DOMINANCE
from analyses.common.types import Analysis, Figure, PromptSet, Result
from analyses.methods.circle_intervention import CausalTest, causal_test
from analyses.methods.item_states import ItemNote, item_positions, residual_streams

NAME = "geometry"


# --- reading the model: analyses.methods.item_states (shared with analyses.periodic) ----------------------------------


def compute(model, prompts: PromptSet) -> Result:
    try:
        positions, position_items = item_positions(prompts)
    except ValueError as err:  # a user's family whose item is glued to other text: say so, compute nothing
        return Result(summary={"family": prompts.family, "sequence": prompts.sequence, "note": str(err)})
    streams, layer_labels = residual_streams(model, prompts)
    rows = np.arange(prompts.n_prompts)
    at_item, at_final = streams[:, rows, positions], streams[:, :, -1]  # [points, batch, d_model] each
    result = geometry_result(at_item, at_final, position_items, np.array(prompts.answer_items()), prompts,
                             layer_labels)
    test = causal_test(model, prompts, result.summary["causal_layer"], positions, position_items)
    add_causal_test(result, test)
    return result


def geometry_result(at_item: np.ndarray, at_final: np.ndarray, position_items: np.ndarray, answers: np.ndarray,
                    prompts: PromptSet, layer_labels: list[str]) -> Result:
    """The numbers from residual states at the item token and the final position, [points, batch, d_model].
    The last point is the final stream (not a resid_pre), so it is never the causal test's layer."""
    n = prompts.n_items
    n_points = at_item.shape[0]
    scan = scan_planes(at_item, at_final, position_items, n)
    item_xy, prompt_xy, final_xy, explained = scan.item_xy, scan.prompt_xy, scan.final_xy, scan.explained
    scores, circulant_p, null_share = scan.scores, scan.circulant_p, scan.null_share
    top2 = explained.sum(axis=1)
    looks = n_points  # points scanned: every layer, at the one position read (the item token)
    order_p = np.array([circle_p_value(float(s), n) for s in scores])
    # the random-angle probability is reported (corrected), not a gate: for 7 items its floor is 2/720, so after
    # correcting for 19 points even a perfect heptagon could not pass; the circulant null is the stronger test
    geometric = [bool(scores[p] >= MIN_CIRCLE_ORDER
                      and top2[p] >= PLANE_DOMINANCE * circle_stats.plane_floor(n)
                      and circle_stats.corrected(circulant_p[p], looks) < thresholds.ALPHA) for p in range(n_points)]
    best = max(range(n_points), key=lambda p: (scores[p], top2[p], -p))
    reference = geometric.index(True) if any(geometric) else 0
    resid_pre = range(max(1, n_points - 1))  # the last point is the final stream; a 1-point test reads it alone
    causal_point = next((p for p in resid_pre if geometric[p]), max(resid_pre, key=lambda p: (scores[p], top2[p], -p)))
    # rotation against the fixed reference: every point's final states on the reference plane, the reference angles
    rotation = rotation_on_reference(at_item[reference], at_final, scan.planes[reference], position_items, answers, n)
    ref_angles, on_ref, spread = rotation.reference_angles, rotation.on_reference, rotation.spread
    offset_by_point, match_by_point = rotation.offsets, rotation.match
    last = n_points - 1
    offsets = offset_by_point[last]
    expected = [signed_step(int(a - i), n) for a, i in zip(answers, position_items)]
    matches = nearest_items(ref_angles, angles(on_ref[last])) == answers
    above, match_p = thresholds.above_chance(int(matches.sum()), len(matches), n)
    carries = spread >= MIN_FINAL_SPREAD
    summary = {
        "family": prompts.family, "sequence": prompts.sequence, "n_items": n, "n_points": n_points,
        "layer_labels": layer_labels,
        "circle_order": scores.tolist(),
        "variance_top2": top2.tolist(),
        "plane_floor": circle_stats.plane_floor(n), "plane_dominance": PLANE_DOMINANCE,
        "circulant_p_value": [circle_stats.corrected(p, looks) for p in circulant_p],
        "circulant_null_share": null_share.tolist(),
        "circle_geometry": geometric, "points_scanned": looks,
        "best_layer": int(best), "best_layer_label": layer_labels[best],
        "best_circle_order": float(scores[best]), "best_variance_top2": float(top2[best]),
        "circle_chance": circle_chance(n),
        "circle_p_value": circle_stats.corrected(order_p[best], looks),
        "circle_p_value_uncorrected": float(order_p[best]),
        "reference_layer": int(reference), "reference_layer_label": layer_labels[reference],
        "causal_layer": int(causal_point), "causal_layer_label": layer_labels[causal_point],
        "rotation_offset_steps": circular_mean_steps(offsets, n),
        "expected_offset_steps": float(np.mean(expected)),
        "rotation_match_frac": float(matches.mean()), "rotation_match_p_value": match_p,
        "rotation_match_above_chance": bool(above),
        # None where the final position does not vary with the item: its angle there means nothing
        "rotation_offset_steps_by_layer": [circular_mean_steps(o, n) if c else None
                                           for o, c in zip(offset_by_point, carries)],
        "rotation_match_frac_by_layer": [float(m) if c else None for m, c in zip(match_by_point, carries)],
        "final_spread_ratio_by_layer": spread.tolist(),
        "final_spread_ratio": float(spread[last]),
        "circle_named": False,  # set by add_causal_test: geometry alone never names a circle
    }
    answer_labels = [prompts.items[a] for a in answers]
    return Result(
        summary=summary,
        arrays={"item_xy": item_xy, "prompt_xy": prompt_xy, "final_xy": final_xy, "explained": explained,
                "rotation_offsets": offsets},
        labels={"items": list(prompts.items), "layers": layer_labels, "prompts": prompts.clean_prompts,
                "position_items": [prompts.items[i] for i in position_items], "answer_items": answer_labels},
    )


def add_causal_test(result: Result, test: CausalTest) -> None:
    """The causal test's numbers into the summary, and the rule that names a circle (module docstring, step 4)."""
    s = result.summary
    n = s["n_items"]
    success = test.success
    baseline = max(success["random-2"], success["none"])
    above, p_value = thresholds.above_chance(round(success["plane-2"] * test.n_trials), test.n_trials, n)
    s.update({  # summaries are flat: the variants' numbers are lists aligned with causal_variants
        "causal_variants": list(success), "causal_success": list(success.values()),
        "causal_success_by_step": [test.success_by_step[v] for v in success], "causal_trials": test.n_trials,
        "causal_chance": 1.0 / n, "causal_margin": MIN_CAUSAL_MARGIN, "causal_p_value": p_value,
        "causal_above_baseline": bool(above and success["plane-2"] - baseline >= MIN_CAUSAL_MARGIN),
    })
    s["circle_named"] = bool(s["circle_geometry"][test.layer] and s["causal_above_baseline"])


def causal_success(summary: dict) -> dict[str, float]:
    """variant -> fraction of trials whose answer moved to the intended item (analyses.methods.circle_intervention)."""
    return dict(zip(summary["causal_variants"], summary["causal_success"]))


def circle_found(summary: dict) -> bool:
    """A circle geometrically (plane, order and both nulls) at some point: drawn, not yet shown to be used."""
    return any(summary["circle_geometry"])


# --- figures and narrative (no model) --------------------------------------------------------------------------

def figures(result: Result) -> list[Figure]:
    if "note" in result.summary:
        return []
    by_layer, rotation = by_layer_figures(result)
    figures = [Figure("geometry-plane", plane_figure(result)), Figure("geometry-by-layer", by_layer),
               Figure("geometry-rotation-by-layer", rotation)]
    if "causal_success" in result.summary:
        figures.append(Figure("geometry-causal", causal_figure(result.summary)))
    return figures


def _share_words(s: dict, point: int) -> str:
    return (f"the top-2 plane holds {100 * s['variance_top2'][point]:.0f}% of the item means' variance (floor "
            f"{100 * s['plane_floor']:.0f}% for evenly spread points; a circle needs ≥ {s['plane_dominance']:g}× "
            f"that), against {100 * s['circulant_null_share'][point]:.0f}% for neighbour-similar features without a "
            f"circle (circulant null, p = {s['circulant_p_value'][point]:.2g} corrected for "
            f"{s['points_scanned']} points scanned)")


def _causal_words(s: dict) -> str:
    c = causal_success(s)
    return (f"replacing the item's projection on the plane by another item's at the item token of "
            f"{s['causal_layer_label']} moves the answer to the intended item for {c['plane-2']:.0%} of "
            f"{s['causal_trials']} trials (rotating it by k steps {c['rotate-2']:.0%}, 5 PCs {c['plane-5']:.0%}; "
            f"a random plane {c['random-2']:.0%}, no edit {c['none']:.0%}, the whole state {c['whole']:.0%}; chance "
            f"{s['causal_chance']:.0%}; binomial p = {s['causal_p_value']:.2g})")


def narrative(result: Result) -> list[str]:
    s = result.summary
    if "note" in s:
        return [f"No geometry for this family: {s['note']}."]
    n, best = s["n_items"], s["best_layer_label"]
    pairs = round(s["best_circle_order"] * n)
    rule = (f"a circle is named when at least {MIN_CIRCLE_ORDER:.0%} of consecutive items are angular neighbours, "
            f"the plane holds ≥ {s['plane_dominance']:g}× its floor and beats the circulant null (p < "
            f"{thresholds.ALPHA} corrected), and editing the plane moves the answer for ≥ {MIN_CAUSAL_MARGIN:.0%} more "
            "trials than a random plane and no edit")
    order = (f"{pairs} of {n} consecutive items are neighbours in angle (circle order {s['best_circle_order']:.2f}, "
             f"chance {s['circle_chance']:.2f}, chance probability {s['circle_p_value']:.2g} corrected for "
             f"{s['points_scanned']} points)")
    has_causal = "causal_success" in s
    if s["circle_named"]:
        ref = s["causal_layer"]
        sentences = [f"At {s['causal_layer_label']} the {n} items lie around a circle in sequence order that the "
                     f"model uses: its circle order is {s['circle_order'][ref]:.2f} (chance {s['circle_chance']:.2f}); "
                     f"{_share_words(s, ref)}; and {_causal_words(s)}."]
    elif circle_found(s):
        ref = s["reference_layer"]
        sentences = [f"At {s['reference_layer_label']} the mean residual streams of the {n} items lie around a circle "
                     f"in the top-2 plane ({_share_words(s, ref)}), but the model is not shown to use it: "
                     + (f"{_causal_words(s)}" if has_causal else "no causal test was run")
                     + f"; so no circle is named ({rule})."]
    elif s["best_circle_order"] >= MIN_CIRCLE_ORDER:
        sentences = [f"Neighbouring items are more alike, but no circle is named: at {best} {order}, yet "
                     f"{_share_words(s, s['best_layer'])}; a polygon under PCA is what any neighbour-similar "
                     f"representation draws ({rule})."]
    else:
        sentences = [f"No layer places the {n} items on a circle in sequence order: the best circle order is "
                     f"{s['best_circle_order']:.2f} ({pairs} of {n} consecutive pairs are neighbours) at {best}, "
                     f"against {s['circle_chance']:.2f} for random angles (chance probability "
                     f"{s['circle_p_value']:.2g} corrected for {s['points_scanned']} points; {rule})."]
    if not s["circle_named"] and not circle_found(s) and has_causal:
        sentences.append(f"Causal test: {_causal_words(s)}.")
    last = s["layer_labels"][-1]
    if s["final_spread_ratio"] < MIN_FINAL_SPREAD:
        sentences.append(f"At {last} the final position does not vary with the item (its spread on the reference "
                         f"plane is {s['final_spread_ratio']:.2g} of the items'; at least {MIN_FINAL_SPREAD} is "
                         "needed), so there is no rotation to measure there.")
        return sentences
    if not circle_found(s):
        sentences.append("With no circle at any layer there is no rotation of one to read.")
        return sentences
    error = abs(s["rotation_offset_steps"] - s["expected_offset_steps"])
    consistent = error <= MAX_ROTATION_ERROR_STEPS and s["rotation_match_above_chance"]
    sentences.append(
        f"Against the fixed reference {s['reference_layer_label']} (the item angles there), the final position at "
        f"{last} sits on average {s['rotation_offset_steps']:+.2f} steps from the item's angle, where the answer is "
        f"{s['expected_offset_steps']:+.0f} steps on; its nearest reference item is the answer for "
        f"{s['rotation_match_frac']:.0%} of prompts (chance {1 / n:.0%}, binomial p = "
        f"{s['rotation_match_p_value']:.2g}). "
        + ("This is consistent with the next item being a rotation of the circle by the answer's step."
           if consistent else
           f"This does not show a rotation by the answer's step (consistent would need the offset within "
           f"{MAX_ROTATION_ERROR_STEPS} step of it and the match above chance)."))
    return sentences


class GeometrySummary(SequenceHeader):
    """Is there a circle of the items in the residual stream, and does editing its plane move the answer?"""

    n_items: Annotated[Count, "items in the sequence"]
    n_points: Annotated[Count, "points of the stream read (resid_pre of each block, then the final stream)"]
    layer_labels: Annotated[list[str], "the points' names"]
    circle_order: Annotated[list[float], "per point, how well the item means' angles in their top plane follow "
                                         "the sequence's order"]
    variance_top2: Annotated[list[float], "per point, the item means' variance share of their top two components"]
    plane_floor: Annotated[float, "2/(n-1): the plane share of n evenly spread centred points"]
    plane_dominance: Annotated[float, "the plane share, over the floor, a circle needs"]
    circulant_p_value: Annotated[list[float], "per point, the plane share's p under the circulant null, "
                                              "Bonferroni-corrected"]
    circulant_null_share: Annotated[list[float], "per point, the plane share the circulant null reaches"]
    circle_geometry: Annotated[list[bool], "per point: order, plane share and circulant null all pass"]
    points_scanned: Annotated[Count, "points looked at (the correction's count)"]
    best_layer: Annotated[int, "the point with the highest circle order"]
    best_layer_label: Annotated[str, "its name"]
    best_circle_order: Annotated[float, "its circle order"]
    best_variance_top2: Annotated[float, "its top-two variance share"]
    circle_chance: Annotated[float, "circle order of items in random order"]
    circle_p_value: Annotated[PValue, "the best point's order p, corrected for the points scanned"]
    circle_p_value_uncorrected: Annotated[PValue, "the same, uncorrected"]
    reference_layer: Annotated[int, "the point the rotation is read against"]
    reference_layer_label: Annotated[str, "its name"]
    causal_layer: Annotated[int, "the point the plane edit is made at"]
    causal_layer_label: Annotated[str, "its name"]
    rotation_offset_steps: Annotated[float, "mean angle from the item to the final position, in item steps"]
    expected_offset_steps: Annotated[float, "the family's answer step"]
    rotation_match_frac: Annotated[Fraction, "prompts whose rotation lands on the answer's step"]
    rotation_match_p_value: Annotated[PValue, "binomial p of that fraction against chance"]
    rotation_match_above_chance: Annotated[bool, "it passes at p < 0.05"]
    rotation_offset_steps_by_layer: Annotated[list[float | None], "per point; null where the final position "
                                                                  "carries no item"]
    rotation_match_frac_by_layer: Annotated[list[float | None], "per point; null likewise"]
    final_spread_ratio_by_layer: Annotated[list[float], "per point, spread of the final position over the items, "
                                                        "relative to the item position's"]
    final_spread_ratio: Annotated[float, "the same at the last point"]
    circle_named: Annotated[bool, "a circle geometrically at the causal layer and the plane edit moves the answer "
                                  "above the baselines"]
    causal_variants: Annotated[list[str], "the edits tried (plane-2, random-2, none, ...)"]
    causal_success: Annotated[list[float], "aligned with causal_variants: fraction of (prompt, k) trials whose "
                                           "answer moved to the intended item"]
    causal_success_by_step: Annotated[list[list[float]], "the same per step k"]
    causal_trials: Annotated[Count, "trials per variant"]
    causal_chance: Annotated[Fraction, "1 / n_items"]
    causal_margin: Annotated[float, "how far the plane edit must beat the best baseline"]
    causal_p_value: Annotated[PValue, "binomial p of the plane edit's success against chance"]
    causal_above_baseline: Annotated[bool, "above chance and beating the baselines by the margin"]


GEOMETRY = Analysis(
    summary_type=GeometrySummary | ItemNote,
    name=NAME,
    title="Geometry",
    definition="Residual stream at the item token (the last token of the prompt that names an item of the "
               "sequence) and at the final position, before every block and after the last. Per layer, PCA to 2D "
               "fit on the per-item means; its share of variance beside the floor 2/(n−1) and beside a circulant "
               "null (neighbour-similar features without a circle). Circle order: the fraction of consecutive items "
               "(i, i+1 mod n) that are neighbours in angle on that plane (chance 2/(n−1) for random angles; "
               "p-values corrected for the layers scanned). Causal test (Engels et al.): the item's projection on the "
               "plane replaced by another item's at the item token, beside a random plane, the whole state and no "
               "edit. Rotation: the final-position states projected on the plane of a fixed reference layer and "
               "their angle compared with the item's angle there, in steps of 360°/n.",
    compute=compute, figures=figures, narrative=narrative, part="representation",
)
