"""Loading without the SVD refactoring of W_Q W_K^T / W_V W_O (97% of a GPT-2-small-sized load on the CPU) changes
no number the report computes: every analysis that reads heads treats each head whole, so the basis inside a head
does not matter. Checked on the planted model against a copy loaded with the refactoring, and the refactoring is
checked to have really changed the weights (else the comparison would prove nothing)."""

from __future__ import annotations

import pytest
import torch
from planted_circuit import save_planted_gpt2

from analyses import BY_NAME
from analyses.common.types import FamilyContext
from report.run.model import load_model
from report.run.processing import WEIGHT_PROCESSING
from report.store.results import units

pytestmark = pytest.mark.tiny  # tests here build tiny or planted checkpoints in the session (no-model tier: not these)

TOL = 1e-4
HEAD_READERS = ("attention", "dla_heads", "patching_heads", "successor_heads", "path_patching", "circuit")


@pytest.fixture(scope="module")
def both(tmp_path_factory):
    from transformer_lens.model_bridge import TransformerBridge

    folder = save_planted_gpt2(tmp_path_factory.mktemp("planted-refactor"))
    plain = load_model(str(folder), device="cpu").model
    refactored = TransformerBridge.boot_transformers(str(folder), device="cpu")
    refactored.enable_compatibility_mode(**{**WEIGHT_PROCESSING, "refactor_factored_attn_matrices": True},
                                         disable_warnings=True)
    refactored.eval().requires_grad_(False)
    from report.run.families import build_prompt_set
    from report.run.families_file import load_family_specs

    prompts = build_prompt_set(load_family_specs()["tomorrow"], plain.tokenizer, plain.cfg.default_prepend_bos)
    return plain, refactored, prompts


def test_the_default_processing_does_not_refactor():
    assert WEIGHT_PROCESSING["refactor_factored_attn_matrices"] is False
    assert WEIGHT_PROCESSING["fold_ln"] and WEIGHT_PROCESSING["center_writing_weights"]


def test_the_refactoring_changes_the_weights_but_not_the_products(both):
    plain, refactored, _ = both
    assert (plain.W_Q - refactored.W_Q).abs().max() > 1e-2  # the two models really differ inside the heads
    qk = [m.W_Q @ m.W_K.transpose(-1, -2) for m in (plain, refactored)]
    ov = [m.W_V @ m.W_O for m in (plain, refactored)]
    torch.testing.assert_close(qk[0], qk[1], atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(ov[0], ov[1], atol=1e-4, rtol=1e-4)


@pytest.mark.slow
@pytest.mark.parametrize("name", HEAD_READERS)
def test_no_reported_number_depends_on_the_refactoring(both, name):
    from test_shared_context import _compare

    plain, refactored, prompts = both
    analysis = BY_NAME[name]
    work = units(analysis, prompts)
    assert work
    with torch.no_grad():
        for _, unit_prompts in work:
            results = [analysis.compute(m, unit_prompts, context=FamilyContext(m)) if analysis.uses_context
                       else analysis.compute(m, unit_prompts) for m in (plain, refactored)]
            if name in CHOSEN_FROM_NOISE:  # only what does not depend on which near-zero node ranks next
                kept = [CHOSEN_FROM_NOISE[name](r) for r in results]
                assert kept[0]
                _compare(kept[0], kept[1], name)
                continue
            _compare(results[0].arrays, results[1].arrays, name)  # every number the figures and rankings read
            _compare(results[0].labels, results[1].labels, name)
            # a *_reason is prose that prints the gap's numbers (3 significant figures of a ~1e-5 noise gap here);
            # those numbers are compared through the arrays above, within the tolerance
            scalars = [{k: v for k, v in r.summary.items() if not isinstance(v, (list, dict))
                        and not _fitted_to_noise(k, r.arrays) and not k.endswith("_reason")} for r in results]
            assert scalars[0]
            _compare(scalars[0], scalars[1], name)


# On the planted model one head carries the task and the others' effects are float noise (~1e-6), so path patching's
# 2nd and 3rd senders and the circuit's later nodes are picked among ties that any float change reorders. For these
# two, the numbers compared are those of every node (circuit) and of the planted sender (path patching).
CHOSEN_FROM_NOISE = {
    "circuit": lambda r: {k: r.arrays[k] for k in ("exact_effect", "attribution_effect", "full_logit_diff",
                                                   "p_correct_full")},
    "path_patching": lambda r: {"sender": r.labels["senders"][0],
                                **{k: r.arrays[k][0] for k in ("logits", "q", "k", "v", "mlp", "sender_patching")}},
}


def _fitted_to_noise(key: str, arrays: dict) -> bool:
    """A slope or correlation of attribution against exact effects that are all float noise (the planted model's
    pattern patching moves the LD by ~1e-6) is a ratio of noise: not a number of the model, left out. Rankings of
    the summary are compared through the arrays they are read from (ties in noise may order differently)."""
    sweep = key.rsplit("_", 1)[-1]
    exact = arrays.get(f"{sweep}_exact")
    return key.startswith("attribution_") and exact is not None and float(abs(exact).max()) < TOL

