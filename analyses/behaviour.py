"""Behaviour: does the model name the right item at all, and if not, what does it do instead?

For each clean prompt (templates x items), read the final-position logits [batch, vocab]:
  - the top-k tokens of the family's first prompt (token, logit, probability), as in the seed notebook;
  - per prompt: the rank of the correct answer in the whole vocabulary (1 = top), P(correct),
    and the argmax among the sequence's n items (7 days, 12 months, ...);
  - per family: top-1 accuracy over the vocabulary, accuracy of the argmax over the n items (`items_acc`,
    over the family's own sequence), mean P(correct), an n x n confusion matrix (item in the
    prompt -> predicted item), the fraction of prompts choosing the copy distractor (the item named in the
    prompt), and the same accuracies per template and per item;
  - `items_above_chance`: an exact one-sided binomial test of the n-item accuracy against chance 1/n at
    p < 0.05 over all the family's prompts (`analyses.common.thresholds`). Where it is false the report says that the
    model does not do this task, and reads every other section as "what the model does instead".
  - the kind of error: among the prompts whose n-item argmax is wrong, how many pick an item one step from the
    answer (answer +- 1: a counting slip, `error_off_by_one_frac`; the copy is not counted here) and how many
    pick the copy distractor (`error_copy_frac`), both as fractions of all prompts; and, for an offset family
    (templates asking different steps k, "{k} days after {day} is"), the accuracy per step k (`items_acc_by_offset`,
    over `offsets`).

Relation behaviour (families with a relation twin: the same item under another relation word, e.g. " yesterday"):
  - `relation_acc`: on the twins, the argmax among the n items is the twin's own answer; `relation_above_chance`
    by the same binomial test; `relation_follows_clean_rule_frac`: the twin's argmax is the CLEAN rule's answer;
  - relation-discrimination score: per prompt D = LD(clean) − LD(twin), LD = logit(clean answer) − logit(twin
    answer); its mean (`relation_discrimination_mean`, logits), the number of prompts with D > 0 and an exact
    two-sided sign test (`relation_discrimination_p_value`), and the state of that gap (`analyses.common.thresholds`);
  - `ignores_relation`: the model does the clean task above chance but not the twin's. The page then opens with
    "answers <the clean rule>, whatever the relation word says" (`relation_lead`), and the overview and the
    models-side-by-side table mark it.
"""

from __future__ import annotations

from typing import Annotated, NotRequired

import numpy as np
import torch

from analyses.common import plots, thresholds
from analyses.common.contract import Count, Fraction, Headline, PValue, SequenceHeader
from analyses.common.metrics import model_device
from analyses.common.text import num
from analyses.common.types import Analysis, Figure, PromptSet, Result

TOP_K = 10


BATCH = 64  # prompts per forward pass: memory stays [64, seq, vocab] however many prompts a family has


def final_position_logits(model, prompts: PromptSet) -> torch.Tensor:
    """[batch, vocab] final-position logits of the clean prompts, computed BATCH prompts at a time (no cache)."""
    tokens = prompts.clean_tokens.to(model_device(model))
    return torch.cat([model(tokens[i: i + BATCH])[:, -1, :].float().cpu() for i in range(0, len(tokens), BATCH)])


def compute(model, prompts: PromptSet) -> Result:
    final_logits = final_position_logits(model, prompts)  # [batch, vocab]
    probs = final_logits.softmax(dim=-1)
    rows = torch.arange(prompts.n_prompts)
    correct_logit = final_logits[rows, prompts.answer_ids]
    ranks = 1 + (final_logits > correct_logit[:, None]).sum(dim=-1)  # [batch]
    choice = final_logits[:, prompts.item_token_ids].argmax(dim=-1).numpy()  # [batch] index into items
    answers = np.array(prompts.answer_items())
    copies = np.array(_copy_items(prompts))
    correct = choice == answers
    n, n_items = prompts.n_prompts, prompts.n_items
    confusion = np.zeros((n_items, n_items))
    for item, predicted in zip(prompts.item_index, choice):
        confusion[item, predicted] += 1
    above, p_value = thresholds.above_chance(int(correct.sum()), n, n_items)
    template, item = np.array(prompts.template_index), np.array(prompts.item_index)
    steps = np.array(prompts.prompt_offsets())
    offsets = sorted(set(steps.tolist()))
    copied = ~correct & (choice == copies)
    # one step from the answer and not the copy (for k = 1 the copy is also k - 1: it counts as the copy)
    one_off = ~correct & ~copied & (((choice - answers) % n_items == 1) | ((answers - choice) % n_items == 1))
    p_correct = probs[rows, prompts.answer_ids].numpy()
    top = probs[0].topk(TOP_K)
    tokenizer = model.tokenizer
    summary = {
        "family": prompts.family, "sequence": prompts.sequence, "n_items": n_items, "n_prompts": n,
        "n_templates": len(prompts.templates),
        "top1_acc": float((ranks == 1).float().mean()),
        "items_acc": float(correct.mean()),
        "chance_acc": 1.0 / n_items,
        "items_above_chance": bool(above),
        "items_p_value": p_value,
        "p_correct_mean": float(p_correct.mean()),
        "copy_choice_frac": float((choice == copies).mean()),
        "items_acc_by_template": [float(correct[template == t].mean()) for t in range(len(prompts.templates))],
        "p_correct_by_template": [float(p_correct[template == t].mean()) for t in range(len(prompts.templates))],
        "items_acc_by_item": [float(correct[item == i].mean()) for i in range(n_items)],
        "offsets": offsets,
        "items_acc_by_offset": [float(correct[steps == k].mean()) for k in offsets],
        "n_errors": int((~correct).sum()),
        "error_off_by_one_frac": float(one_off.mean()),
        "error_copy_frac": float(copied.mean()),
        "n_prompts_by_offset": [int((steps == k).sum()) for k in offsets],
        "first_prompt": prompts.clean_prompts[0],
        "first_top_token": tokenizer.decode([int(top.indices[0])]),
        "first_top_prob": float(top.values[0]),
        "first_correct": " " + prompts.items[answers[0]],
        "rank_correct": ranks.tolist(),
        "p_correct": p_correct.tolist(),
        "predicted_item": [prompts.items[i] for i in choice],
        "correct_item": [prompts.items[i] for i in answers],
    }
    if "relation" in prompts.twins:
        summary.update(relation_behaviour(model, prompts, final_logits, above))
    return Result(
        summary=summary,
        arrays={"topk_logits": final_logits[0, top.indices].numpy(), "topk_probs": top.values.numpy(),
                "confusion": confusion},
        labels={"topk_tokens": [tokenizer.decode([int(i)]) for i in top.indices], "prompts": prompts.clean_prompts,
                "items": list(prompts.items), "templates": list(prompts.templates)},
    )


def offset_phrase(offset: int, sequence: str) -> str:
    """'the day after the one named', 'the month before the one named', '3 days after the one named'."""
    unit = {"days": "day", "months": "month"}.get(sequence, "item")
    if offset in (1, -1):
        return f"the {unit} {'after' if offset > 0 else 'before'} the one named"
    return f"the {unit} {abs(offset)} {unit}s {'after' if offset > 0 else 'before'} the one named"


def relation_behaviour(model, prompts: PromptSet, clean_logits: torch.Tensor, clean_above: bool) -> dict:
    """Does the model follow the relation word? Accuracy on the relation twins, and the discrimination score."""
    twin = prompts.with_corruption("relation")
    twin_logits = model(twin.corrupted_tokens.to(clean_logits.device))[:, -1, :].float().cpu()
    clean_logits = clean_logits.cpu()
    n, n_items = prompts.n_prompts, prompts.n_items
    choice = twin_logits[:, prompts.item_token_ids].argmax(dim=-1).numpy()
    steps = prompts.relation_answer_offset  # one step for every template, or one per template (offset families)
    steps = steps if isinstance(steps, tuple) else (steps,) * len(prompts.templates)
    twin_answers = np.array([(i + steps[t]) % n_items for i, t in zip(prompts.item_index, prompts.template_index)])
    correct = choice == twin_answers
    follows_clean = choice == np.array(prompts.answer_items())
    above, p_value = thresholds.above_chance(int(correct.sum()), n, n_items)
    rows = torch.arange(n)
    pos, neg = prompts.answer_ids, twin.corrupted_answer_ids
    ld_clean = (clean_logits[rows, pos] - clean_logits[rows, neg]).numpy()
    ld_twin = (twin_logits[rows, pos] - twin_logits[rows, neg]).numpy()
    d = ld_clean - ld_twin
    positive = int((d > 0).sum())
    gap = thresholds.informative_gap(ld_clean, ld_twin)
    ignores = bool(clean_above and not above)
    template = np.array(prompts.template_index)
    out = {
        "relation_acc": float(correct.mean()), "relation_above_chance": bool(above), "relation_p_value": p_value,
        "relation_follows_clean_rule_frac": float(follows_clean.mean()),
        "relation_acc_by_template": [float(correct[template == t].mean()) for t in range(len(prompts.templates))],
        "relation_discrimination_mean": float(d.mean()), "relation_discrimination_positive": positive,
        "relation_discrimination_p_value": thresholds.sign_test(positive, int((d != 0).sum())),
        "relation_discrimination_state": gap.state, "ignores_relation": ignores,
        "relation_first_twin": twin.corrupted_prompts[0],
    }
    if ignores and follows_clean.mean() >= thresholds.FOLLOWS_RULE_FRACTION and isinstance(prompts.answer_offset, int):
        out["relation_lead"] = (f"The model answers {offset_phrase(prompts.answer_offset, prompts.sequence)}, "
                                f"whatever the relation word says")
    elif ignores:
        out["relation_lead"] = "The model does the clean task but not its relation twin's"
    return out


def _copy_items(prompts: PromptSet) -> list[int]:
    """The item index of each prompt's copy distractor (the item named in the prompt that is scored against)."""
    lookup = {int(t): i for i, t in enumerate(prompts.item_token_ids)}
    return [lookup[int(t)] for t in prompts.copy_ids]


def figures(result: Result) -> list[Figure]:
    s, a, lab = result.summary, result.arrays, result.labels
    items = lab["items"]
    topk = plots.table(
        ["rank", "token", "logit", "probability"],
        [list(range(1, len(lab["topk_tokens"]) + 1)), [repr(t) for t in lab["topk_tokens"]],
         [f"{num(v)}" for v in a["topk_logits"]], [f"{num(100 * v)}%" for v in a["topk_probs"]]],
        f"Top {len(lab['topk_tokens'])} next tokens for {s['first_prompt']!r}",
    )
    per_prompt = plots.bars(lab["prompts"], {"P(correct)": np.asarray(s["p_correct"])},
                            "Probability of the correct answer, per prompt", "P(correct)", height=460)
    templates = [f"T{t}: {text}" for t, text in enumerate(lab["templates"])]
    by_template = plots.bars(templates, {"accuracy among the items": np.asarray(s["items_acc_by_template"]),
                                         "mean P(correct)": np.asarray(s["p_correct_by_template"])},
                             f"Per template (chance accuracy {s['chance_acc']:.2f})", "fraction", height=380)
    by_item = plots.bars(items, {"accuracy among the items": np.asarray(s["items_acc_by_item"])},
                         "Per item in the prompt (over the templates)", "fraction", height=360)
    confusion = plots.heatmap(a["confusion"], [f"→ {d}" for d in items], list(items),
                              "Item in the prompt (rows) → item the model prefers among the sequence (columns)",
                              "prompts", floor=1.0, height=420)
    # counts of prompts: sequential from 0, up to the prompts per item (every template) so a full row is dark
    confusion.update_traces(colorscale="Blues", reversescale=False, zmid=None, zmin=0,
                            zmax=max(1.0, float(a["confusion"].sum(axis=1).max())),
                            colorbar=dict(title=dict(text="prompts")))
    return [Figure("behaviour-topk", topk), Figure("behaviour-p-correct", per_prompt),
            Figure("behaviour-by-template", by_template), Figure("behaviour-by-item", by_item),
            Figure("behaviour-confusion", confusion)]


def narrative(result: Result) -> list[str]:
    s = result.summary
    n, n_items = s["n_prompts"], s["n_items"]
    top1, acc, copies = round(s["top1_acc"] * n), round(s["items_acc"] * n), round(s["copy_choice_frac"] * n)
    sentences = []
    if s.get("ignores_relation"):
        sentences.append(
            f"{s['relation_lead']}: on the relation twins (e.g. {s['relation_first_twin']!r}) it picks the twin's "
            f"answer for {round(s['relation_acc'] * n)} of {n} prompts (not above chance, p = "
            f"{s['relation_p_value']:.2g}) and the clean wording's answer for "
            f"{round(s['relation_follows_clean_rule_frac'] * n)} of {n}; its relation-discrimination score, mean "
            f"LD(clean) − LD(twin), is {s['relation_discrimination_mean']:+.3g} logits" + (
                f" (positive for {s['relation_discrimination_positive']} of {n} prompts, sign test p = "
                f"{s['relation_discrimination_p_value']:.2g}): the relation word moves the logits towards the "
                "twin's answer, but not far enough to change the answer."
                if s["relation_discrimination_state"] == "informative" else
                ", which is not a consistent shift: the relation word does not move the answer's logits."))
    if not s["items_above_chance"]:
        sentences.append(
            f"The model does not do this task: it picks the correct item among the {n_items} for {acc} of {n} "
            f"prompts, which is not above chance (chance is {1 / n_items:.2f} of the prompts; one-sided "
            f"binomial p = {s['items_p_value']:.2g}). The sections below describe what it does instead, not how "
            "it computes the answer.")
        if copies >= max(1, n // 2):
            sentences.append(f"Instead it mostly names the item already in the prompt (the copy distractor): "
                             f"{copies} of {n} prompts.")
    else:
        sentences.append(f"The model does the task above chance: the correct item is the most likely of the "
                         f"{n_items} for {acc} of {n} prompts (chance {1 / n_items:.2f}; one-sided binomial "
                         f"p = {s['items_p_value']:.2g}).")
    sentences.append(f"The correct item is the single most likely next token for {top1} of {n} prompts; its mean "
                     f"probability is {100 * s['p_correct_mean']:.1f}%.")
    by_template = s["items_acc_by_template"]
    if len(s["offsets"]) > 1:  # an offset family: one template per step k, so read it by k
        sentences.append("Accuracy by step k: " + ", ".join(
            f"k = {k:+d} {round(v * m)}/{m}" for k, v, m in zip(s["offsets"], s["items_acc_by_offset"],
                                                                 s["n_prompts_by_offset"])) + ".")
    elif len(by_template) > 1:
        sentences.append("Accuracy per template: " + ", ".join(f"T{t} {round(v * n_items)}/{n_items}"
                                                                for t, v in enumerate(by_template)) + ".")
    sentences.append(f"For {s['first_prompt']!r} the top token is {s['first_top_token']!r} "
                     f"({100 * s['first_top_prob']:.1f}%); the correct answer is {s['first_correct']!r}, "
                     f"ranked {s['rank_correct'][0]} in the vocabulary.")
    if "relation_acc" in s and not s.get("ignores_relation"):
        follows = "follows" if s["relation_above_chance"] else "does not follow"
        sentences.append(
            f"The model {follows} the relation word above chance: on the relation twins it picks the twin's answer "
            f"for {round(s['relation_acc'] * n)} of {n} prompts (p = {s['relation_p_value']:.2g}); "
            f"relation-discrimination score, mean LD(clean) − LD(twin): {s['relation_discrimination_mean']:+.3g} "
            f"logits, positive for {s['relation_discrimination_positive']} of {n} prompts (two-sided sign test p = "
            f"{s['relation_discrimination_p_value']:.2g}).")
    if s["n_errors"]:
        slips, copied = round(s["error_off_by_one_frac"] * n), round(s["error_copy_frac"] * n)
        sentences.append(f"Of the {s['n_errors']} prompts whose most likely item is wrong, {slips} pick an item one "
                         f"step from the answer (a counting slip) and {copied} the item named in the prompt (the "
                         f"copy); {s['n_errors'] - slips - copied} another item.")
    if copies and s["items_above_chance"]:
        sentences.append(f"The model picks the item named in the prompt (the copy distractor) for {copies} of {n} "
                         "prompts.")
    return sentences


class BehaviourSummary(SequenceHeader):
    """What the model answers: accuracies over the prompts, the chance test, the kind of error, the relation twins."""

    n_items: Annotated[Count, "items in the sequence (7 days, 12 months)"]
    n_prompts: Annotated[Count, "clean prompts: templates x items"]
    n_templates: Annotated[Count, "templates (paraphrases) of the family"]
    top1_acc: Annotated[Fraction, "prompts whose correct item is the argmax over the whole vocabulary"]
    items_acc: Annotated[Fraction, "prompts whose correct item is the argmax among the sequence's items"]
    chance_acc: Annotated[Fraction, "1 / n_items: items_acc of a model that picks an item at random"]
    items_above_chance: Annotated[bool, "items_acc passes the one-sided binomial test at p < 0.05; false: the "
                                        "model does not do the task on this family"]
    items_p_value: Annotated[PValue, "one-sided binomial p of items_acc against chance_acc"]
    p_correct_mean: Annotated[Fraction, "mean softmax probability of the correct item over the vocabulary"]
    copy_choice_frac: Annotated[Fraction, "prompts whose item argmax is the item named in the prompt (the copy)"]
    items_acc_by_template: Annotated[list[float], "items_acc per template, in template order"]
    p_correct_by_template: Annotated[list[float], "p_correct_mean per template"]
    items_acc_by_item: Annotated[list[float], "items_acc per item in the prompt's slot, in sequence order"]
    offsets: Annotated[list[int], "the family's distinct answer steps k (one for most families)"]
    items_acc_by_offset: Annotated[list[float], "items_acc per step k, aligned with offsets"]
    n_errors: Annotated[Count, "prompts whose item argmax is wrong"]
    error_off_by_one_frac: Annotated[Fraction, "prompts whose wrong item argmax is one step from the answer "
                                               "(not the copy), of all prompts"]
    error_copy_frac: Annotated[Fraction, "prompts whose wrong item argmax is the copy distractor, of all prompts"]
    n_prompts_by_offset: Annotated[list[int], "prompts per step k, aligned with offsets"]
    first_prompt: Annotated[str, "the family's first clean prompt (the top-k table's)"]
    first_top_token: Annotated[str, "its most likely next token"]
    first_top_prob: Annotated[Fraction, "that token's probability"]
    first_correct: Annotated[str, "its correct answer, with the leading space"]
    rank_correct: Annotated[list[int], "per prompt, the correct answer's rank in the vocabulary (1 = top)"]
    p_correct: Annotated[list[float], "per prompt, P(correct answer)"]
    predicted_item: Annotated[list[str], "per prompt, the argmax among the items"]
    correct_item: Annotated[list[str], "per prompt, the correct item"]
    # the relation twins: only for a family with a relation corruption
    relation_acc: NotRequired[Annotated[Fraction, "relation twins whose item argmax is the twin's own answer"]]
    relation_above_chance: NotRequired[Annotated[bool, "relation_acc passes the binomial test at p < 0.05"]]
    relation_p_value: NotRequired[Annotated[PValue, "one-sided binomial p of relation_acc"]]
    relation_follows_clean_rule_frac: NotRequired[Annotated[Fraction, "relation twins answered by the clean "
                                                                      "wording's rule"]]
    relation_acc_by_template: NotRequired[Annotated[list[float], "relation_acc per template"]]
    relation_discrimination_mean: NotRequired[Annotated[float, "mean over prompts of LD(clean) − LD(twin), LD = "
                                                               "logit(clean answer) − logit(twin answer), logits"]]
    relation_discrimination_positive: NotRequired[Annotated[Count, "prompts with LD(clean) − LD(twin) > 0"]]
    relation_discrimination_p_value: NotRequired[Annotated[PValue, "exact two-sided sign test of those signs"]]
    relation_discrimination_state: NotRequired[Annotated[str, "state of that gap (analyses/common/thresholds.py)"]]
    ignores_relation: NotRequired[Annotated[bool, "does the clean task above chance but not the twin's"]]
    relation_first_twin: NotRequired[Annotated[str, "the first relation twin prompt"]]
    relation_lead: NotRequired[Annotated[str, "where ignores_relation: the page's opening sentence"]]


BEHAVIOUR = Analysis(
    name="behaviour",
    title="Behaviour",
    definition="Top-1 accuracy: the correct item (with its leading space) is the argmax over the whole vocabulary "
               "at the final position. Item accuracy (items_acc): it is the argmax among the sequence's items (the "
               "seven weekdays, the twelve months). Above chance: exact one-sided binomial test of that accuracy "
               "against 1/n at p < 0.05 over all prompts (templates × items; prompts share templates, so this is a "
               "floor, not proof of a mechanism). P(correct): softmax probability over the vocabulary. Relation "
               "twins: the same accuracy against the twin's answer, and the relation-discrimination score "
               "mean LD(clean) − LD(twin) with an exact sign test.",
    compute=compute, figures=figures, narrative=narrative, part="behaviour", summary_type=BehaviourSummary,
    headlines=(Headline("items_acc", "accuracy among the items", format="pct"),
               Headline("top1_acc", "top-1 accuracy", format="pct", places=("overview",)),
               Headline("p_correct_mean", "mean P(correct)", format="pct", places=("overview",)),
               Headline("relation_acc", "relation twins: accuracy", format="pct", places=("comparison",)),
               Headline("relation_discrimination_mean", "relation twins: discrimination", "logits", "signed",
                        places=("comparison",))),
)
