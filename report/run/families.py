"""A prompt family: its spec, expanded over templates x items and tokenized for one model.

A family is one or more templates (paraphrases with the same answer rule) over every item of a sequence (the
days by default), with two corrupted twins per prompt (see analyses.common.types.PromptSet): `day` (another item) and,
where the file gives one, `relation` (another step, e.g. " tomorrow" -> " yesterday").

Two stages, so that bad input fails before anything is computed:
  1. `load_family_specs(path)` (report/run/families_file.py) checks the file itself (keys, types, template slots);
     no model needed.
  2. `build_prompt_set(spec, tokenizer, prepend_bos)` tokenizes for one model and checks that every
     answer is one token with its leading space and that all prompts (both twins) have the same token length.
Every error names the family and, where there is one, the prompt.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import torch

from analyses.common.types import DAYS, Corrupted, PromptSet
from report.errors import UserError

SLOT = re.compile(r"\{(?:day|month|item)(?:([+-])(\d+))?\}")


class FamilyError(UserError):
    """A prompt family that cannot be used (the message names the family and the prompt)."""


@dataclass(frozen=True)
class FamilySpec:
    name: str
    templates: tuple[str, ...]
    answer_offset: int | tuple[int, ...]  # one step for every template, or one per template (offset families)
    copy_offset: int = 0
    corrupt_shift: int = 3
    description: str = ""
    sequence: str = "days"
    items: tuple[str, ...] = DAYS
    relation_templates: tuple[str, ...] = ()  # aligned with templates; empty = no relation corruption
    relation_answer_offset: int | tuple[int, ...] | None = None  # like answer_offset
    no_relation: str = ""  # why the family has no relation twin (shown in the report)
    relation_items_differ: str = ""  # why the relation twins name other items than the clean templates

    @property
    def answer_offsets(self) -> tuple[int, ...]:
        """The answer's step from the slot item, one per template."""
        return per_template(self.answer_offset, len(self.templates))

    @property
    def relation_answer_offsets(self) -> tuple[int, ...]:
        return per_template(self.relation_answer_offset, len(self.templates)) if self.has_relation else ()

    @property
    def offset_words(self) -> str:
        """'+1', or '+1, +2, ... (per template)' for a family whose templates ask different steps."""
        if isinstance(self.answer_offset, int):
            return f"{self.answer_offset:+d}"
        return ", ".join(f"{k:+d}" for k in self.answer_offset) + " (per template)"

    def prompt(self, template: str, item: int) -> str:
        """The template with {day} = items[item] and {day±N} = the item N later/earlier (mod the sequence)."""

        def fill(match: re.Match) -> str:
            sign, n = match.group(1), int(match.group(2) or 0)
            return self.items[(item + (n if sign != "-" else -n)) % len(self.items)]

        return SLOT.sub(fill, template)

    @property
    def has_relation(self) -> bool:
        return bool(self.relation_templates)


def per_template(offset: int | tuple[int, ...], n_templates: int) -> tuple[int, ...]:
    return tuple(offset) if isinstance(offset, tuple) else (offset,) * n_templates


def item_token_id(tokenizer, item: str, family: str, prompt: str) -> int:
    """The single token of ' <item>' (with its leading space), or a FamilyError naming family and prompt."""
    ids = tokenizer.encode(" " + item, add_special_tokens=False)
    if len(ids) != 1:
        raise FamilyError(f"family '{family}', prompt {prompt!r}: the answer ' {item}' is {len(ids)} tokens "
                          "for this model's tokenizer, not one")
    return ids[0]


def _tokenize(tokenizer, prompt: str, prepend_bos: bool) -> list[int]:
    ids = tokenizer.encode(prompt, add_special_tokens=False)
    return ([tokenizer.bos_token_id] if prepend_bos else []) + ids


def _str_tokens(tokenizer, ids: list[int]) -> list[str]:
    return [tokenizer.decode([i]) for i in ids]


def build_prompt_set(spec: FamilySpec, tokenizer, prepend_bos: bool = True) -> PromptSet:
    """Expand `spec` over its templates x items and tokenize the clean prompts and both corrupted twins."""
    n = len(spec.items)
    cells = [(t, i) for t in range(len(spec.templates)) for i in range(n)]  # template-major
    clean = [spec.prompt(spec.templates[t], i) for t, i in cells]

    def token(offset_items: list[int], prompts: list[str]) -> torch.Tensor:
        return torch.tensor([item_token_id(tokenizer, spec.items[k % n], spec.name, p)
                             for k, p in zip(offset_items, prompts)])

    steps, relation_steps = spec.answer_offsets, spec.relation_answer_offsets
    twin_specs = {"day": ([spec.prompt(spec.templates[t], i + spec.corrupt_shift) for t, i in cells],
                          [i + spec.corrupt_shift + steps[t] for t, i in cells])}
    if spec.has_relation:
        twin_specs["relation"] = ([spec.prompt(spec.relation_templates[t], i) for t, i in cells],
                                  [i + relation_steps[t] for t, i in cells])
    # Answers first: an answer that is not one token explains an unequal length better than the length does.
    item_ids = [item_token_id(tokenizer, item, spec.name, clean[0]) for item in spec.items]
    twin_answers = {name: token(answers, prompts) for name, (prompts, answers) in twin_specs.items()}
    clean_ids = [_tokenize(tokenizer, p, prepend_bos) for p in clean]
    twin_ids = {name: [_tokenize(tokenizer, p, prepend_bos) for p in prompts] for name, (prompts, _) in
                twin_specs.items()}
    _check_equal_lengths(spec.name, clean + [p for prompts, _ in twin_specs.values() for p in prompts],
                         clean_ids + [r for ids in twin_ids.values() for r in ids])
    twins = {name: Corrupted(prompts, torch.tensor(twin_ids[name]), twin_answers[name],
                             [_str_tokens(tokenizer, r) for r in twin_ids[name]])
             for name, (prompts, _) in twin_specs.items()}
    return PromptSet(
        family=spec.name, description=spec.description, sequence=spec.sequence, items=spec.items,
        templates=spec.templates, corrupt_shift=spec.corrupt_shift,
        answer_offset=spec.answer_offset if isinstance(spec.answer_offset, int) else None, answer_offsets=steps,
        item_index=[i for _, i in cells], template_index=[t for t, _ in cells],
        clean_prompts=clean, clean_tokens=torch.tensor(clean_ids),
        answer_ids=token([i + steps[t] for t, i in cells], clean),
        copy_ids=token([i + spec.copy_offset for _, i in cells], clean),
        item_token_ids=torch.tensor(item_ids), str_tokens=[_str_tokens(tokenizer, ids) for ids in clean_ids],
        twins=twins, relation_answer_offset=spec.relation_answer_offset,
        roles=token_roles(spec, clean_ids, twin_ids.get("relation"), prepend_bos),
    )


def token_roles(spec: FamilySpec, clean_ids: list[list[int]], relation_ids: list[list[int]] | None,
                prepend_bos: bool) -> tuple[tuple[str, ...], ...]:
    """Each template's token roles, read from its tokens: a slot is a position whose token changes with the item
    (the k-th such position is the template's k-th slot, left to right); the relation word is a position the
    relation twin changes that is not a slot; BOS is the start and the last position the final one."""
    n = len(spec.items)
    roles = []
    for t, template in enumerate(spec.templates):
        rows = clean_ids[t * n:(t + 1) * n]
        seq = len(rows[0])
        slots = [p for p in range(seq) if len({r[p] for r in rows}) > 1]
        offsets = [(-1 if sign == "-" else 1) * int(k or 0) for sign, k in SLOT.findall(template)]
        names = ([f"item{o:+d}" if o else "item" for o in offsets] if len(offsets) == len(slots)
                 else ["item"] * len(slots))
        role = ["other"] * seq
        if relation_ids is not None:
            for p in range(seq):
                if any(a[p] != b[p] for a, b in zip(rows, relation_ids[t * n:(t + 1) * n])):
                    role[p] = "relation"
        for p, name in zip(slots, names):
            role[p] = name
        role[-1] = "final"
        if prepend_bos:
            role[0] = "start"
        roles.append(tuple(role))
    return tuple(roles)


def _check_equal_lengths(family: str, prompts: list[str], ids: list[list[int]]) -> None:
    """Patching and batching need every clean and corrupted prompt of a family (all templates) to have the same
    token length; paraphrases must therefore be chosen to tokenize to equal lengths."""
    for prompt, toks in zip(prompts, ids):
        if len(toks) != len(ids[0]):
            raise FamilyError(f"family '{family}', prompt {prompt!r}: {len(toks)} tokens, but prompt "
                              f"{prompts[0]!r} has {len(ids[0])}; every prompt of a family (all templates and "
                              "both corruptions) must have the same token length")
