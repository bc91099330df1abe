"""Periodic structure: a 7-circle and base-10 periodic features are told apart, in closed form and through models."""

from __future__ import annotations

import numpy as np
import pytest

from analyses import periodic
from analyses.common import thresholds

pytestmark = pytest.mark.tiny  # tests here build tiny or planted checkpoints in the session (no-model tier: not these)

SEEDS = (0, 1)


def _circle(index, period=7):
    return np.stack([np.cos(2 * np.pi * index / period), np.sin(2 * np.pi * index / period)], axis=1)


def _base10(index):
    return np.hstack([_circle(index, 10), _circle(index, 5), ((-1.0) ** index)[:, None]])


def _embed(features, d, rng):
    """Features written along random orthonormal directions of a d-dimensional stream."""
    basis = np.linalg.qr(rng.normal(size=(d, features.shape[1])))[0].T
    return features @ basis


def test_fourier_shares_put_a_circle_at_period_n_and_spread_evenly_spaced_points():
    index = np.arange(7)
    np.testing.assert_allclose(periodic.fourier_shares(_circle(index)), [1, 0, 0], atol=1e-12)
    np.testing.assert_allclose(periodic.fourier_shares(np.eye(7)), [1 / 3] * 3, atol=1e-12)  # orthogonal items
    shares = periodic.fourier_shares(np.eye(12))
    assert len(shares) == 6 and shares[-1] == pytest.approx(1 / 11) and shares[0] == pytest.approx(2 / 11)
    # over 7 consecutive items, base-10 waves leave half their variance at period 7: this view cannot name base 10
    assert 0.4 < periodic.fourier_shares(_base10(index))[0] < thresholds.MIN_PERIOD_SHARE


@pytest.mark.parametrize("seed", SEEDS)
def test_sum_view_tells_a_seven_cycle_from_base_ten_features(seed):
    """States over the unreduced sum s = item + k (k = 1..6: s = 1..12), in a 64-dimensional stream, plus noise."""
    rng = np.random.default_rng(seed)
    items, steps = np.meshgrid(np.arange(7), np.arange(1, 7))
    sums = (items + steps).ravel()  # [42]
    noise = 0.05 * rng.normal(size=(2, len(sums), 64))
    cycle = _embed(_circle(sums.astype(float)), 64, rng) + noise[0]
    base10 = _embed(_base10(sums.astype(float)), 64, rng) + noise[1]
    states = np.stack([cycle, base10])  # two "points"
    shares, joint = periodic.sum_view(states, sums, 7)
    assert periodic.candidate_periods(7) == [7, 2, 5, 10]
    assert shares[0, 0] > 0.95 and max(shares[0, 1:]) < 0.45 and joint[0] < 0.75  # closed form: 0.65
    assert shares[1, 0] < 0.3 and min(shares[1, 1:]) > 0.3 and joint[1] > 0.95  # closed form: 0.19 and 1
    assert periodic.verdict(shares[0, 0], joint[0]) == "cycle"
    assert periodic.verdict(shares[1, 0], joint[1]) == "base10"
    noise_shares, noise_joint = periodic.sum_view(rng.normal(size=(1, len(sums), 64)), sums, 7)
    assert periodic.verdict(noise_shares[0, 0], noise_joint[0]) == "undecided"  # five waves fit ~0.45 of noise


@pytest.fixture(scope="module")
def planted(tmp_path_factory):
    from planted_features import save_planted_features

    from report.run.families import build_prompt_set
    from report.run.families_file import load_family_specs
    from report.run.model import load_model

    specs, built = load_family_specs(), {}

    def get(kind, seed):
        if (kind, seed) not in built:
            folder = save_planted_features(tmp_path_factory.mktemp(f"{kind}{seed}"), kind, seed=seed)
            model = load_model(str(folder), device="cpu").model
            built[kind, seed] = model, build_prompt_set(specs["tomorrow"], model.tokenizer,
                                                        model.cfg.default_prepend_bos)
        return built[kind, seed]

    return get


@pytest.mark.slow
@pytest.mark.parametrize("seed", SEEDS)
def test_a_planted_seven_circle_and_planted_base_ten_features_are_told_apart(planted, seed):
    circle = periodic.compute(*planted("circle", seed))
    base10 = periodic.compute(*planted("base10", seed))
    for result in (circle, base10):
        assert result.summary["periods"] == [7, 3.5, 7 / 3] and not result.summary["offset_family"]
    # circle: period 7 at every point, and in the answer logits (a rotation keeps the cycle)
    assert min(share[0] for share in circle.summary["item_period_share"]) > 0.95
    assert circle.summary["logit_period_share"][0] > 0.95
    assert periodic.narrative(circle)[0].startswith("At final period 7 (one cycle of the sequence) holds")
    # base-10 waves: period 7 never dominates the item means, nor the logits
    assert max(share[0] for share in base10.summary["item_period_share"]) < 0.65
    assert base10.summary["logit_period_share"][0] < thresholds.MIN_PERIOD_SHARE
    sentences = periodic.narrative(base10)
    assert "no single period dominates" in sentences[0] and "Nothing stands out" in sentences[0]
    assert "only an offset family" in sentences[-1]


def test_an_offset_family_gets_the_sum_view(planted):
    from report.run.families import build_prompt_set
    from report.run.families_file import load_family_specs

    model, _ = planted("circle", 0)
    prompts = build_prompt_set(load_family_specs()["days_after_k_words"], model.tokenizer,
                               model.cfg.default_prepend_bos)
    result = periodic.compute(model, prompts)
    s = result.summary
    assert s["offset_family"] and s["sum_values"] == list(range(1, 13)) and s["sum_periods"] == [7, 2, 5, 10]
    assert len(s["sum_period_share"]) == len(s["layer_labels"]) and s["sum_verdict"] in ("cycle", "base10",
                                                                                         "undecided")
    assert [f.id for f in periodic.figures(result)] == ["periodic-item", "periodic-sum"]
    assert "Grouped by the unreduced sum item + k (12 values)" in periodic.narrative(result)[-1]
