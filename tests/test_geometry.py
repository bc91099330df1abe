"""Geometry: the circle maths in closed form, a planted circle found at every layer, a random model at chance.

Chance level of the circle-order score: for n items at independent uniform random angles, a given consecutive pair
is adjacent in the circular order with probability 2 / (n - 1): 1/3 for the 7 days, 2/11 for the 12 months.
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
import torch

from analyses import geometry
from analyses.common import circle_geometry, geometry_figures
from tests.conftest import save_tiny_gpt2

pytestmark = pytest.mark.tiny  # tests here build tiny or planted checkpoints in the session (no-model tier: not these)

RANDOM_SEEDS = (0, 1)


# --- the maths, on angles whose answer is known -------------------------------------------------------------------

@pytest.mark.parametrize("n", [4, 7, 12])
def test_items_in_sequence_order_on_a_circle_score_one_in_either_direction(n):
    theta = 2 * np.pi * np.arange(n) / n
    assert circle_geometry.circle_order(theta) == 1.0
    assert circle_geometry.circle_order(-theta + 0.3) == 1.0


def test_items_placed_two_steps_apart_score_zero():
    # circular order 0 2 4 6 1 3 5: no item sits beside its successor
    order = [0, 2, 4, 6, 1, 3, 5]
    theta = np.empty(7)
    theta[order] = 2 * np.pi * np.arange(7) / 7
    assert circle_geometry.circle_order(theta) == 0.0


def test_one_swap_breaks_exactly_the_pairs_it_touches():
    theta = 2 * np.pi * np.arange(7) / 7
    theta[[2, 4]] = theta[[4, 2]]  # circular order 0 1 4 3 2 5 6: pairs (1,2), (4,5) broken; (2,3), (3,4) kept
    assert circle_geometry.circle_order(theta) == pytest.approx(5 / 7)


@pytest.mark.parametrize("n", [7, 12])
def test_random_angles_score_the_stated_chance_level(n):
    rng = np.random.default_rng(1)
    scores = np.array([circle_geometry.circle_order(rng.uniform(-np.pi, np.pi, n)) for _ in range(4000)])
    standard_error = scores.std() / np.sqrt(len(scores))
    assert circle_geometry.circle_chance(n) == pytest.approx(2 / (n - 1))
    assert abs(scores.mean() - 2 / (n - 1)) < 4 * standard_error


def test_chance_probability_of_a_clean_circle_is_two_over_n_minus_one_factorial():
    # a clean circle is 2 of the (n - 1)! circular orders (two directions): 2 / 720 for the days
    p = circle_geometry.circle_p_value(1.0, 7)
    exact = 2 / 720
    assert abs(p - exact) < 4 * np.sqrt(exact * (1 - exact) / circle_geometry.CHANCE_DRAWS)
    assert circle_geometry.circle_p_value(0.0, 7) == 1.0


def test_pca_of_a_shifted_circle_gives_half_the_variance_to_each_component():
    theta = 2 * np.pi * np.arange(12) / 12
    rng = np.random.default_rng(0)
    basis = np.linalg.qr(rng.normal(size=(16, 2)))[0].T  # an arbitrary plane in 16 dimensions
    points = 3 * np.cos(theta)[:, None] * basis[0] + 3 * np.sin(theta)[:, None] * basis[1] + rng.normal(size=16)
    centre, plane, explained = circle_geometry.pca_2d(points)
    np.testing.assert_allclose(explained, [0.5, 0.5], atol=1e-9)
    assert circle_geometry.circle_order(circle_geometry.angles((points - centre) @ plane.T)) == 1.0


@pytest.mark.parametrize("direction", [1, -1])
@pytest.mark.parametrize("step", [1, -1, 3])
def test_a_final_state_rotated_by_k_items_is_k_steps_on_whichever_way_the_circle_runs(direction, step):
    n = 12
    item_angles = direction * 2 * np.pi * np.arange(n) / n + 0.2
    items = np.arange(n).repeat(2)
    final = item_angles[(items + step) % n] + 0.01 * np.tile([1, -1], n)  # small jitter either side
    offsets = circle_geometry.rotation_offsets(item_angles, final, items)
    np.testing.assert_allclose(offsets, step + direction * 0.01 * np.tile([1, -1], n) / (2 * np.pi / n), atol=1e-9)
    assert circle_geometry.circular_mean_steps(offsets, n) == pytest.approx(step, abs=1e-9)
    assert (circle_geometry.nearest_items(item_angles, final) == (items + step) % n).all()


def test_circular_mean_does_not_cancel_offsets_either_side_of_half_a_turn():
    assert abs(circle_geometry.circular_mean_steps(np.array([5.9, -5.9]), 12)) == pytest.approx(6.0, abs=0.11)


# --- through the model --------------------------------------------------------------------------------------------

def save_planted_circles(folder, tokenizer, sequences):
    """A 2-layer GPT-2 whose blocks write nothing, so every residual stream is embed + pos_embed. The items of each
    (items, identity_scale) in `sequences` embed on their own circle of radius R = 1 in directions u, v, plus
    identity_scale along one direction w_i per item; no direction is shared between sequences. Every direction is
    (e_a - e_b)/sqrt(2), so each row has zero mean and centring the writing weights (done at load) leaves it as is."""
    from transformers import GPT2LMHeadModel

    save_tiny_gpt2(folder)
    model = GPT2LMHeadModel.from_pretrained(folder)

    def direction(k):
        vector = torch.zeros(model.config.n_embd)
        vector[2 * k], vector[2 * k + 1] = 2 ** -0.5, -(2 ** -0.5)
        return vector

    with torch.no_grad():
        for block in model.transformer.h:
            for proj in (block.attn.c_proj, block.mlp.c_proj):
                proj.weight.zero_()
                proj.bias.zero_()
        first = 0  # the next unused direction
        for items, identity_scale in sequences:
            n = len(items)
            for i, item in enumerate(items):
                (token,) = tokenizer.encode(" " + item)
                theta = 2 * np.pi * i / n
                circle = np.cos(theta) * direction(first) + np.sin(theta) * direction(first + 1)
                model.transformer.wte.weight[token] = circle + identity_scale * direction(first + 2 + i)
            first += 2 + n
    assert 2 * first <= model.config.n_embd
    model.save_pretrained(folder)
    return folder


def expected_top_fraction(n, identity_scale):
    """Closed form for the construction above (radius R = 1, identity scale s).

    The centred item means are M_i = cos(t_i) u + sin(t_i) v + s (w_i - mean w); their Gram matrix over items is
    (cos cos^T + sin sin^T) + s^2 (I - J/n). cos and sin are orthogonal to the all-ones vector and to each other,
    with squared norm n/2, so the eigenvalues are n/2 + s^2 (twice), s^2 (n - 3 times) and 0: each top component
    holds (n/2 + s^2) / (n + s^2 (n - 1)) of the variance. s = 0 gives 1/2; s^2 = n / (2 (n - 4)) gives exactly 1/3.
    """
    s2 = identity_scale ** 2
    return (n / 2 + s2) / (n + s2 * (n - 1))


def one_third_scale(n):
    return np.sqrt(n / (2 * (n - 4)))


PLANTED = {"tomorrow": 7, "day_after": 7, "next_month": 12, "month_list_continuation": 12}  # family -> n items


@pytest.fixture(scope="module")
def planted(tmp_path_factory, tokenizer):
    """(model, {family: prompt set}, {n items: identity scale}): days on a circle plus an identity part sized for
    1/3 of the variance per top component, months on a pure circle (1/2 per component)."""
    from analyses.common.types import DAYS, MONTHS
    from report.run.families import build_prompt_set
    from report.run.families_file import load_family_specs
    from report.run.model import load_model

    scales = {7: one_third_scale(7), 12: 0.0}
    folder = save_planted_circles(tmp_path_factory.mktemp("circles"), tokenizer, [(DAYS, scales[7]),
                                                                                  (MONTHS, scales[12])])
    model = load_model(str(folder), device="cpu").model
    specs = load_family_specs()
    prompts = {family: build_prompt_set(specs[family], model.tokenizer, model.cfg.default_prepend_bos)
               for family in PLANTED}
    return model, prompts, scales


@pytest.mark.tiny  # builds a tiny checkpoint
@pytest.mark.parametrize("family", list(PLANTED))
def test_planted_circle_scores_one_at_every_layer_with_the_closed_form_variance(planted, family):
    model, all_prompts, scales = planted
    prompts = all_prompts[family]
    assert prompts.n_items == PLANTED[family]
    scale = scales[prompts.n_items]
    result = geometry.compute(model, prompts)
    s = result.summary
    assert s["n_points"] == model.cfg.n_layers + 1 == len(s["circle_order"])
    assert s["circle_order"] == [1.0] * s["n_points"]
    # fp32 residuals carry ~1e-7 relative error; a variance measured against the wrong total is off by >= 1e-2
    per_component = expected_top_fraction(prompts.n_items, scale)
    assert per_component == pytest.approx(1 / 3 if scale else 1 / 2)
    np.testing.assert_allclose(result.arrays["explained"], per_component, atol=1e-4)
    np.testing.assert_allclose(s["variance_top2"], 2 * per_component, atol=2e-4)
    narrative = geometry.narrative(result)
    if scale == 0:  # a pure circle: every plane test passes, at every point
        assert s["circle_geometry"] == [True] * s["n_points"] and geometry.circle_found(s)
        assert "lie around a circle in the top-2 plane" in narrative[0]
    else:  # circle + an equal identity part: 2/3 in the plane, which neighbour-similar features reach too
        assert s["circle_geometry"] == [False] * s["n_points"]
        assert all(p > 0.05 for p in s["circulant_p_value"])
        assert narrative[0].startswith("Neighbouring items are more alike")
    # control: the blocks write nothing, so no edit at the item token moves the answer and no circle is named
    # (its one fixed pick is "answer + k" for one k in n - 1: every variant scores what no edit scores)
    success = geometry.causal_success(s)
    assert success["plane-2"] == success["whole"] == success["none"] and not s["causal_above_baseline"]
    assert not s["circle_named"]
    assert "no circle is named" in narrative[0]
    # and the final position never sees the item, so no rotation is claimed
    assert s["final_spread_ratio"] < 1e-5
    assert "does not vary with the item" in narrative[-1]
    assert s["rotation_offset_steps_by_layer"] == [None] * s["n_points"]


@pytest.fixture(scope="module")
def random_models(tiny_model, tmp_path_factory):
    from report.run.model import load_model

    folder = save_tiny_gpt2(tmp_path_factory.mktemp("random-seed-1"), seed=1)
    return {0: tiny_model, 1: load_model(str(folder), device="cpu").model}


@pytest.mark.parametrize("seed", RANDOM_SEEDS)
@pytest.mark.parametrize("family", ["next_month", "tomorrow"])
def test_random_model_reports_no_circle(random_models, family, seed):
    from report.run.families import build_prompt_set
    from report.run.families_file import load_family_specs

    model = random_models[seed]
    prompts = build_prompt_set(load_family_specs()[family], model.tokenizer, model.cfg.default_prepend_bos)
    result = geometry.compute(model, prompts)
    s = result.summary
    assert s["circle_chance"] == pytest.approx(2 / (prompts.n_items - 1))
    assert not geometry.circle_found(s)
    assert result.summary["best_circle_order"] < 1.0
    if prompts.n_items == 12:
        # chance 2/11 = 0.18; a layer above 6/12 has chance probability 0.002 under random angles
        assert max(s["circle_order"]) <= 0.5
    assert geometry.narrative(result)[0].startswith("No layer places the")


def test_item_token_is_the_slot_item_or_the_last_listed_item(tiny_prompt_sets):
    one = tiny_prompt_sets["next_month"]
    positions, items = geometry.item_positions(one)
    assert items.tolist() == one.item_index
    assert all(one.str_tokens[b][p].strip() == one.items[i] for b, (p, i) in enumerate(zip(positions, items)))
    listed = tiny_prompt_sets["month_list_continuation"]
    positions, items = geometry.item_positions(listed)
    assert items.tolist() == [(i + 2) % 12 for i in listed.item_index]  # {month+2}, the last month listed
    assert (positions == len(listed.str_tokens[0]) - 2).all()  # "..., March," : the item before the final comma


def test_family_without_an_item_token_gives_a_note_not_a_traceback(tiny_model, tiny_prompt_sets):
    prompts = tiny_prompt_sets["tomorrow"]
    glued = replace(prompts, str_tokens=[[t.replace("day", "dai") for t in row] for row in prompts.str_tokens])
    result = geometry.compute(tiny_model, glued)
    assert "family 'tomorrow'" in result.summary["note"] and "no token is an item" in result.summary["note"]
    assert geometry.figures(result) == []
    assert geometry.narrative(result)[0].startswith("No geometry for this family")


@pytest.mark.tiny  # builds a tiny checkpoint
def test_layer_selector_is_one_figure_showing_one_layer_at_a_time(planted):
    model, all_prompts, _ = planted
    prompts = all_prompts["tomorrow"]
    result = geometry.compute(model, prompts)
    figures = geometry.figures(result)
    assert [f.id for f in figures] == ["geometry-plane", "geometry-by-layer", "geometry-rotation-by-layer",
                                       "geometry-causal"]
    plane = figures[0].figure
    n_points = result.summary["n_points"]
    assert len(result.summary["rotation_offset_steps_by_layer"]) == n_points
    # the blocks write nothing: the final position carries no item at any point, so every per-layer offset is hidden
    assert result.summary["rotation_offset_steps_by_layer"] == [None] * n_points
    assert len(plane.data) == geometry_figures.TRACES_PER_POINT * n_points
    (slider,) = plane.layout.sliders
    assert slider.active == result.summary["best_layer"]
    assert [step.label for step in slider.steps] == result.summary["layer_labels"]
    for point, step in enumerate(slider.steps):
        visible = step.args[0]["visible"]
        assert sum(visible) == geometry_figures.TRACES_PER_POINT
        assert all(visible[point * geometry_figures.TRACES_PER_POINT:(point + 1) * geometry_figures.TRACES_PER_POINT])
    assert [trace.visible for trace in plane.data] == slider.steps[slider.active].args[0]["visible"]
    assert list(plane.data[geometry_figures.TRACES_PER_POINT * slider.active].text) == list(prompts.items) + [""]


@pytest.mark.parametrize("step, consistent", [(1, True), (-1, False), (0, False)])
def test_final_states_rotated_one_step_on_are_read_as_the_answers_rotation(tiny_prompt_sets, step, consistent):
    """Residual states built by hand: items on a circle at the item token; the final position at the item's angle
    plus `step` steps (the answer of `tomorrow` is +1), in a plane of its own radius and centre."""
    prompts = tiny_prompt_sets["tomorrow"]
    n, items = prompts.n_items, np.array(prompts.item_index)
    rng = np.random.default_rng(0)
    plane = np.linalg.qr(rng.normal(size=(32, 2)))[0].T  # [2, 32]

    def on_circle(angle, radius, centre):
        return radius * (np.cos(angle)[:, None] * plane[0] + np.sin(angle)[:, None] * plane[1]) + centre

    theta = 2 * np.pi * items / n
    at_item = on_circle(theta, 1.0, rng.normal(size=32))[None]  # [1 point, batch, d]
    at_final = on_circle(theta + 2 * np.pi * step / n, 0.3, rng.normal(size=32))[None]
    result = geometry.geometry_result(at_item, at_final, items, np.array(prompts.answer_items()), prompts, ["final"])
    s = result.summary
    assert s["best_circle_order"] == 1.0 and s["expected_offset_steps"] == 1.0
    assert s["rotation_offset_steps"] == pytest.approx(step, abs=1e-9)
    assert s["rotation_match_frac"] == (1.0 if step == 1 else 0.0)
    assert s["final_spread_ratio"] == pytest.approx(0.3)
    sentence = geometry.narrative(result)[1]
    assert ("consistent with the next item being a rotation" in sentence) is consistent


# --- issue 18: a circle is tested, not drawn (planted models of tests/planted_features.py) ------------------------

PLANTED_SEEDS = (0, 1)


@pytest.fixture(scope="module")
def feature_models(tmp_path_factory):
    """(kind, shift, seed, output_scale) -> (model, tomorrow-style prompt set whose answer is day + shift)."""
    from planted_features import save_planted_features

    from report.run.families import build_prompt_set
    from report.run.families_file import load_family_specs
    from report.run.model import load_model

    specs, built = load_family_specs(), {}

    def get(kind, shift=1, seed=0, output_scale=4.0):
        key = (kind, shift, seed, output_scale)
        if key not in built:
            folder = save_planted_features(tmp_path_factory.mktemp(f"{kind}{shift}s{seed}"), kind, shift, seed,
                                           output_scale)
            model = load_model(str(folder), device="cpu").model
            family = {1: "tomorrow", 2: "yesterday_tomorrow"}[shift]
            built[key] = model, build_prompt_set(specs[family], model.tokenizer, model.cfg.default_prepend_bos)
        return built[key]

    return get


@pytest.mark.slow
@pytest.mark.parametrize("seed", PLANTED_SEEDS)
def test_orthogonal_day_features_draw_a_polygon_but_no_circle_is_named(feature_models, seed):
    """Seven mutually orthogonal day features; the head adds ~1 x day + 1 at the day token, so neighbours are alike.
    The old rule (order >= 0.8 at p < 0.05 on random angles) fires on the last point; the circulant null must not."""
    model, prompts = feature_models("orthogonal", seed=seed, output_scale=0.18)
    result = geometry.compute(model, prompts)
    s = result.summary
    assert s["circle_order"][-1] == 1.0 and s["circle_p_value_uncorrected"] < 0.05  # the false circle of issue 18
    assert s["variance_top2"][-1] >= s["plane_dominance"] * s["plane_floor"]  # the floor alone would not stop it
    assert s["circulant_p_value"][-1] > 0.5  # ... but it is what neighbour-similar features give
    assert s["circle_geometry"] == [False] * s["n_points"] and not s["circle_named"]
    narrative = geometry.narrative(result)
    assert narrative[0].startswith("Neighbouring items are more alike") and "no circle is named" in narrative[0]
    assert not any("lie around a circle" in sentence for sentence in narrative)
    assert narrative[-1] == "With no circle at any layer there is no rotation of one to read."


@pytest.mark.parametrize("seed", PLANTED_SEEDS)
@pytest.mark.parametrize("shift", [1, 2])
def test_a_planted_rotation_reads_its_step_against_the_fixed_reference(feature_models, seed, shift):
    """Days on a circle, a head that rotates them by `shift` steps into the same plane (at the day token too)."""
    model, prompts = feature_models("circle", shift=shift, seed=seed)
    result = geometry.compute(model, prompts)
    s = result.summary
    assert s["circle_geometry"][0] and s["reference_layer"] == 0  # the embedding holds the circle
    assert s["expected_offset_steps"] == shift
    assert s["rotation_offset_steps"] == pytest.approx(shift, abs=0.1)
    assert s["rotation_match_frac"] == 1.0
    by_layer = s["rotation_offset_steps_by_layer"]
    assert by_layer[:-1] == [None] * (s["n_points"] - 1)  # before the head the final position carries no item
    assert by_layer[-1] == pytest.approx(s["rotation_offset_steps"])
    # the trap the fixed reference avoids: against the item token's own angle at the same layer (already rotated
    # there by the head) the same data read almost no rotation
    last, items = s["n_points"] - 1, np.array(prompts.item_index)
    same_layer = circle_geometry.rotation_offsets(circle_geometry.angles(result.arrays["item_xy"][last]),
                                           circle_geometry.angles(result.arrays["final_xy"][last]), items)
    assert abs(circle_geometry.circular_mean_steps(same_layer, 7)) < 0.5
    assert "consistent with the next item being a rotation" in geometry.narrative(result)[-1]


@pytest.mark.slow
@pytest.mark.parametrize("seed", PLANTED_SEEDS)
def test_editing_the_circle_plane_moves_the_answer_and_a_random_plane_does_not(feature_models, seed):
    model, prompts = feature_models("circle", seed=seed)
    result = geometry.compute(model, prompts)
    s = result.summary
    success = geometry.causal_success(s)
    assert s["causal_layer"] == 0 and s["causal_trials"] == prompts.n_prompts * 6
    assert success["plane-2"] >= 0.95 and success["rotate-2"] >= 0.95 and success["whole"] >= 0.95
    assert success["random-2"] <= 0.05 and success["random-5"] <= 0.05 and success["none"] == 0.0
    by_step = dict(zip(s["causal_variants"], s["causal_success_by_step"]))
    assert len(by_step["plane-2"]) == 6 and all(v >= 0.95 for v in by_step["plane-2"])  # every step k, not only k = 1
    assert s["causal_above_baseline"] and s["circle_named"]
    assert "that the model uses" in geometry.narrative(result)[0]


# --- the nulls, in closed form ------------------------------------------------------------------------------------

def test_plane_floor_is_two_over_n_minus_one_and_evenly_spread_points_sit_on_it():
    from analyses.common import circle_stats
    assert circle_stats.plane_floor(7) == pytest.approx(1 / 3) and circle_stats.plane_floor(12) == pytest.approx(2 / 11)
    simplex = np.eye(7) - 1 / 7  # 7 centred orthonormal items: variance spread evenly over 6 dimensions
    assert circle_stats.plane_share(simplex) == pytest.approx(1 / 3)


def test_neighbour_mixed_orthogonal_features_match_the_circulant_null_and_a_circle_beats_it():
    from analyses.common import circle_stats
    eye = np.eye(7)
    mixed = eye + np.roll(eye, -1, axis=0)  # e_i + e_{i+1}: spectrum 2 + 2 cos(2 pi f / 7)
    mixed -= mixed.mean(axis=0)
    top = 2 + 2 * np.cos(2 * np.pi / 7)
    assert circle_stats.plane_share(mixed) == pytest.approx(2 * top / 10)  # eigenvalues over f = 1..6 sum to 10
    assert circle_stats.neighbour_cosine(mixed) == pytest.approx(0.3)
    assert circle_stats.expected_neighbour_cosine("one-sided", 1.0, 7) == pytest.approx(0.3)
    p, _ = circle_stats.circulant_p_value(mixed)
    assert p > 0.5
    theta = 2 * np.pi * np.arange(7) / 7
    circle = np.stack([np.cos(theta), np.sin(theta)], 1)
    p, _ = circle_stats.circulant_p_value(circle)
    assert p == pytest.approx(1 / (circle_stats.NULL_DRAWS + 1))
    assert circle_stats.corrected(0.01, 19) == pytest.approx(0.19) and circle_stats.corrected(0.2, 19) == 1.0
