"""Transfer across sequences: overlap maths in closed form, and the index table built from saved results."""

from __future__ import annotations

import numpy as np
import pytest

from analyses.common.types import Result
from analyses.methods import transfer
from report.publish import transfer_page

pytestmark = pytest.mark.tiny  # tests here build tiny or planted checkpoints in the session (no-model tier: not these)

NAMES = [f"L{layer}H{head}" for layer in range(3) for head in range(4)]


def test_identical_rankings_overlap_one_and_disjoint_rankings_overlap_zero():
    scores = np.arange(12, dtype=float).reshape(3, 4)
    same = transfer.compare(scores, 5 * scores + 1, NAMES, k=4)  # a monotone rescale ranks the same
    assert same.top_a == same.top_b == ["L2H3", "L2H2", "L2H1", "L2H0"]
    assert same.jaccard == 1.0 and same.spearman == pytest.approx(1.0)
    assert same.verdict == "same"
    disjoint = transfer.compare(scores, -scores, NAMES, k=4)  # B's top 4 are A's bottom 4
    assert disjoint.shared == [] and disjoint.jaccard == 0.0
    assert disjoint.spearman == pytest.approx(-1.0)
    assert disjoint.verdict == "different"


def test_jaccard_counts_the_intersection_over_the_union():
    assert transfer.jaccard(["a", "b", "c"], ["b", "c", "d"]) == pytest.approx(2 / 4)
    assert transfer.jaccard(["a"], ["a"]) == 1.0
    assert np.isnan(transfer.jaccard([], []))


def test_spearman_averages_tied_ranks():
    # ranks (1, 2.5, 2.5, 4) and (1, 3, 2, 4): centred products 4.5 over sqrt(4.5 * 5)
    assert transfer.spearman(np.array([1, 2, 2, 3]), np.array([1, 3, 2, 4])) == pytest.approx(4.5 / np.sqrt(22.5))
    assert np.isnan(transfer.spearman(np.ones(5), np.arange(5)))
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=30), rng.normal(size=30)
    assert transfer.spearman(x, y) == pytest.approx(transfer.spearman(np.exp(x), y ** 3))  # ranks only


def test_family_scores_in_different_units_are_scaled_before_they_are_averaged():
    a = np.array([[1.0, 0.5], [0.0, -0.25]])
    combined = transfer.sequence_scores([a, 1000 * a])  # a raw-logit family beside a normalised one
    np.testing.assert_allclose(combined, np.abs(a))
    np.testing.assert_allclose(transfer.sequence_scores([a, 3 * a], scale_each=False), 2 * np.abs(a))


def test_verdict_thresholds():
    partial = transfer.Overlap(["a", "b"], ["b", "c"], ["b"], 1 / 3, 0.9)
    assert partial.verdict == "partial"
    assert transfer.Overlap(["a"], ["a"], ["a"], 1.0, float("nan")).verdict == "partial"  # no correlation: no claim
    assert transfer.Overlap(["a"], ["b"], [], 0.0, 0.1).verdict == "different"


def _result(summary=None, arrays=None):
    heads = np.array(NAMES).reshape(3, 4).tolist()
    return Result(summary=summary or {}, arrays=arrays or {}, labels={"heads": heads})


def _behaviour(acc, n, above):
    return _result({"items_acc": acc, "chance_acc": 1 / n, "items_above_chance": above})


def _family(sequence, patching=None, successor=None, behaviour=None, geometry=None, informative=True):
    units = {}
    if patching is not None:
        units["patching_heads-day"] = _result({"normalised": informative}, arrays={"z_exact": patching})
    if successor is not None:
        units["successor_heads"] = _result(arrays={"successor_score": successor})
    if behaviour is not None:
        units["behaviour"] = behaviour
    if geometry is not None:
        units["geometry"] = _result(geometry)
    return sequence, units


def test_table_names_the_same_heads_when_days_and_months_share_them():
    z = np.zeros((3, 4))
    z[1, 2], z[2, 0], z[0, 3] = 0.9, -0.6, 0.3
    families = {
        "tomorrow": _family("days", patching=z, behaviour=_behaviour(6 / 7, 7, True),
                            geometry={"best_circle_order": 1.0, "best_layer_label": "L1 resid_pre",
                                      "circle_named": False}),
        "day_after": _family("days", patching=2 * z, behaviour=_behaviour(1 / 7, 7, False)),
        "next_month": _family("months", patching=40 * z + 0.01, behaviour=_behaviour(10 / 12, 12, True)),
    }
    table = transfer_page.transfer_table(families, k=3)
    days, months = table.sequences
    assert (days.sequence, days.families, days.n_above_chance, days.n_with_behaviour) == ("days", ["tomorrow",
                                                                                                    "day_after"], 1, 2)
    assert days.accuracy_above_chance == pytest.approx(np.mean([6 / 7 - 1 / 7, 0.0]))
    assert days.best_circle == "1.00 at L1 resid_pre (tomorrow); no circle named" and months.best_circle is None
    assert days.top_heads == {"patching": ["L1H2", "L2H0", "L0H3"]}  # no successor results: no successor column
    (comparison,) = table.comparisons
    assert comparison.kind == "patching" and comparison.overlap.jaccard == 1.0
    assert comparison.overlap.chance == pytest.approx(transfer.chance_jaccard(12, 3, 3))
    assert comparison.sentence.startswith("By head patching") and "the same heads carry days and months" in \
        comparison.sentence


def test_table_skips_a_missing_score_and_a_single_sequence():
    z = np.arange(12, dtype=float).reshape(3, 4)
    only_days = {"tomorrow": _family("days", patching=z), "day_after": _family("days", patching=z)}
    assert transfer_page.transfer_table(only_days) is None
    mixed = {"tomorrow": _family("days", successor=z / 12), "next_month": _family("months", patching=z,
                                                                                   successor=(11 - z) / 12)}
    table = transfer_page.transfer_table(mixed, k=2)
    (comparison,) = table.comparisons  # patching only for months: nothing to compare
    assert comparison.kind == "successor" and comparison.overlap.verdict == "different"
    assert "does not do both tasks above chance" in comparison.sentence  # no behaviour results: no claim of a circuit


def test_index_shows_the_transfer_section_for_the_golden_run(golden_site):
    index = (golden_site / "index.html").read_text(encoding="utf-8")
    assert "Transfer across sequences" in index
    assert "days vs months" in index and "By head patching" in index


# --- issue 18: notable heads only, beside the chance level -------------------------------------------------------

def test_chance_jaccard_is_the_mean_over_random_sets_of_the_same_sizes():
    assert transfer.chance_jaccard(12, 5, 5) == pytest.approx(0.2794, abs=1e-4)  # issue 18's "0.28"
    rng = np.random.default_rng(0)
    draws = [transfer.jaccard(rng.choice(12, 5, replace=False), rng.choice(12, 3, replace=False))
             for _ in range(20000)]
    assert transfer.chance_jaccard(12, 5, 3) == pytest.approx(np.mean(draws), abs=4 * np.std(draws) / np.sqrt(20000))
    assert transfer.overlap_p_value(12, 3, 3, 3) == pytest.approx(1 / 220)  # one of C(12, 3) sets
    assert transfer.overlap_p_value(12, 5, 5, 0) == 1.0


@pytest.mark.parametrize("seed", [0, 1])
def test_a_real_head_against_noise_heads_reports_no_sharing(seed):
    """Days: one real head (0.95 of the gap) over noise; months: an informative gap but only noise heads. The old
    top-5 overlap named shared noise heads; over notable heads there is nothing on the months side to share."""
    rng = np.random.default_rng(seed)
    days, months = rng.normal(0, 0.02, (3, 4)), rng.normal(0, 0.03, (3, 4))
    days[1, 2] = 0.95
    assert transfer.compare(days, months, NAMES).jaccard > 0  # top 5 of 12 always overlap: the trap
    families = {"tomorrow": _family("days", patching=days, behaviour=_behaviour(1.0, 7, True)),
                "next_month": _family("months", patching=months, behaviour=_behaviour(1 / 12, 12, False))}
    table = transfer_page.transfer_table(families)
    assert table.sequences[0].top_heads["patching"] == ["L1H2"] and table.sequences[1].top_heads["patching"] == []
    (comparison,) = table.comparisons
    assert comparison.overlap is None and "months: no head reaches the naming threshold" in comparison.skipped
    assert "share" not in comparison.sentence and "not compared" in comparison.sentence


@pytest.mark.slow
@pytest.mark.parametrize("seed", [0, 1])
def test_a_planted_day_head_shares_nothing_with_a_sequence_it_does_not_do(tmp_path, seed):
    """Through the model: the planted next-day head (L1H2) patched on a day family and on a month family, which it
    does not do (no day token to read: the months' gap is not informative)."""
    from planted_circuit import save_planted_gpt2

    from analyses import patching_heads
    from report.run.families import build_prompt_set
    from report.run.families_file import load_family_specs
    from report.run.model import load_model

    model = load_model(str(save_planted_gpt2(tmp_path / "planted", seed=seed)), device="cpu").model
    specs = load_family_specs()
    families = {}
    for family, sequence in (("tomorrow", "days"), ("next_month", "months")):
        prompts = build_prompt_set(specs[family], model.tokenizer, model.cfg.default_prepend_bos)
        families[family] = (sequence, {"patching_heads-day": patching_heads.PATCHING_HEADS.compute(model, prompts)})
    assert families["tomorrow"][1]["patching_heads-day"].summary["normalised"]
    assert not families["next_month"][1]["patching_heads-day"].summary["normalised"]
    table = transfer_page.transfer_table(families)
    assert table.sequences[0].top_heads["patching"] == ["L1H2"]
    (comparison,) = table.comparisons
    assert comparison.overlap is None and comparison.skipped.startswith("months: no family has an informative")
