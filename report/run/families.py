"""Prompt families as data: parse and validate the TOML, expand over templates x items, tokenize.

A family is one or more templates (paraphrases with the same answer rule) over every item of a sequence (the
days by default), with two corrupted twins per prompt (see analyses.common.types.PromptSet): `day` (another item) and,
where the file gives one, `relation` (another step, e.g. " tomorrow" -> " yesterday").

Two stages, so that bad input fails before anything is computed:
  1. `load_family_specs(path)` checks the file itself (keys, types, template slots); no model needed.
  2. `build_prompt_set(spec, tokenizer, prepend_bos)` tokenizes for one model and checks that every
     answer is one token with its leading space and that all prompts (both twins) have the same token length.
Every error names the family and, where there is one, the prompt.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

import tomllib
import torch

from analyses.common.types import DAYS, SEQUENCES, Corrupted, PromptSet
from report.errors import UserError
from report.store.files import read_user_text

SLOT = re.compile(r"\{(?:day|month|item)(?:([+-])(\d+))?\}")
NAME = re.compile(r"^[a-z0-9][a-z0-9_-]*$")
MAX_NAME = 64  # family and sequence names become file and folder names
SEQUENCES_TABLE = "sequences"  # reserved top-level table: sequences a families file adds to the built-in ones
REQUIRED_KEYS = {"answer_offset"}
TEMPLATE_KEYS = ("template", "templates")  # exactly one of them
OPTIONAL_KEYS = {"description": "", "copy_offset": 0, "corrupt_shift": 3, "sequence": "days",
                 "relation_templates": None, "relation_answer_offset": None, "no_relation": "",
                 "relation_items_differ": ""}
# Limits that refuse a resource bomb in one line, before anything is tokenized or computed. The shipped file uses
# 11 families of at most 3 templates over at most 12 items; these leave room for a hundredfold more.
MAX_DEPTH = 8  # tables and arrays nested in the file (a family needs 3: file, family, templates list)
MAX_FAMILIES = 200
MAX_TEMPLATES = 64  # per family
MAX_ITEMS = 100  # per sequence
MAX_PROMPTS = 1024  # per family: templates x items (each analysis holds them, and their twins, in one batch)
_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f]")  # terminal escapes and the like (tab, newline allowed)


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


def default_families_path() -> Path:
    return Path(str(resources.files("report.run") / "families.toml"))


def load_family_specs(path: Path | None = None) -> dict[str, FamilySpec]:
    """Parse and check a families file (the shipped one when `path` is None); keeps file order."""
    path = Path(path) if path is not None else default_families_path()
    try:
        data = tomllib.loads(read_user_text(path, "families file"))
    except FileNotFoundError:
        raise FamilyError(f"families file not found: {path}") from None
    except IsADirectoryError:
        raise FamilyError(f"families file {path} is a directory, not a TOML file") from None
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as err:
        raise FamilyError(f"families file {path} is not valid TOML: {err}") from None
    except RecursionError:
        raise FamilyError(f"families file {path} nests tables or arrays more than {MAX_DEPTH} levels deep "
                          "(so deep that the TOML parser gave up)") from None
    if _depth(data) > MAX_DEPTH:
        raise FamilyError(f"families file {path} nests tables or arrays more than {MAX_DEPTH} levels deep")
    sequences = _check_sequences(data.pop(SEQUENCES_TABLE, {}), path)
    if not data:
        raise FamilyError(f"families file {path} defines no family")
    if len(data) > MAX_FAMILIES:
        raise FamilyError(f"families file {path} defines {len(data)} families; at most {MAX_FAMILIES}")
    return {name: _check_spec(name, table, path, sequences) for name, table in data.items()}


def _depth(value: object) -> int:
    """How deeply tables and arrays nest in a parsed TOML value (walked without recursion)."""
    deepest, stack = 0, [(value, 1)]
    while stack:
        item, level = stack.pop()
        children = item.values() if isinstance(item, dict) else item if isinstance(item, list) else None
        if children is None:
            continue
        deepest = max(deepest, level)
        if level <= MAX_DEPTH:  # deeper is refused anyway; no need to walk all of it
            stack += [(child, level + 1) for child in children]
    return deepest


def _check_sequences(table: object, path: Path) -> dict[str, tuple[str, ...]]:
    """The built-in sequences plus the file's [sequences] table: name = [item, item, ...] (at least 3 items)."""
    where = f"[{SEQUENCES_TABLE}] in {path}"
    if not isinstance(table, dict):
        raise FamilyError(f"{where}: expected a table of name = [items]")
    sequences = dict(SEQUENCES)
    for name, items in table.items():
        if not NAME.match(name) or len(name) > MAX_NAME:
            raise FamilyError(f"{where}: sequence name {name!r} may hold only a-z, 0-9, '_' and '-' "
                              f"(at most {MAX_NAME} characters)")
        if (not isinstance(items, list) or len(items) < 3 or not all(isinstance(i, str) and i.strip() == i and i
                                                                      for i in items)):
            raise FamilyError(f"{where}: sequence {name!r} must be a list of at least 3 non-empty words "
                              "without surrounding spaces (the leading space is added for the answer token)")
        if len(set(items)) != len(items):
            raise FamilyError(f"{where}: sequence {name!r} repeats an item")
        if len(items) > MAX_ITEMS:
            raise FamilyError(f"{where}: sequence {name!r} has {len(items)} items; at most {MAX_ITEMS}")
        if any(_CONTROL.search(i) for i in items):
            raise FamilyError(f"{where}: sequence {name!r} holds a control character (a terminal escape?)")
        sequences[name] = tuple(items)
    return sequences


def _check_spec(name: str, table: object, path: Path, sequences: dict[str, tuple[str, ...]]) -> FamilySpec:
    where = f"family '{name}' in {path}"
    if not isinstance(table, dict):
        raise FamilyError(f"{where}: expected a table [{name}] with keys {sorted(REQUIRED_KEYS)} and templates")
    if not NAME.match(name) or len(name) > MAX_NAME:
        raise FamilyError(f"{where}: a family name may hold only a-z, 0-9, '_' and '-' "
                          f"(at most {MAX_NAME} characters)")
    allowed = REQUIRED_KEYS | set(TEMPLATE_KEYS) | set(OPTIONAL_KEYS)
    unknown = set(table) - allowed
    if unknown:
        raise FamilyError(f"{where}: unknown key(s) {sorted(unknown)}; allowed: {sorted(allowed)}")
    missing = REQUIRED_KEYS - set(table)
    if missing:
        raise FamilyError(f"{where}: missing key(s) {sorted(missing)}")
    values = {**OPTIONAL_KEYS, **table}
    for key in ("copy_offset", "corrupt_shift"):
        if not _whole(values[key]):
            raise FamilyError(f"{where}: '{key}' must be a whole number, got {values[key]!r}")
    for key in ("description", "sequence", "no_relation", "relation_items_differ"):
        if not isinstance(values[key], str):
            raise FamilyError(f"{where}: '{key}' must be a string")
        if _CONTROL.search(values[key]):
            raise FamilyError(f"{where}: '{key}' holds a control character (a terminal escape?)")
    if values["sequence"] not in sequences:
        raise FamilyError(f"{where}: unknown sequence {values['sequence']!r}; known: {', '.join(sequences)} "
                          f"(add one under [{SEQUENCES_TABLE}])")
    items = sequences[values["sequence"]]
    templates = _templates(table, where)
    if len(templates) * len(items) > MAX_PROMPTS:
        raise FamilyError(f"{where}: {len(templates)} templates x {len(items)} items = "
                          f"{len(templates) * len(items)} prompts; at most {MAX_PROMPTS} per family")
    for key in ("answer_offset", "relation_answer_offset"):
        if key != "relation_answer_offset" or values[key] is not None:
            values[key] = _offset(values[key], key, len(templates), where)
    relation = _relation(values, templates, where, len(items))
    if values["corrupt_shift"] % len(items) == 0:
        raise FamilyError(f"{where}: corrupt_shift {values['corrupt_shift']} is a multiple of {len(items)} "
                          f"(the length of sequence {values['sequence']!r}), so the corrupted answer would equal "
                          "the clean one")
    return FamilySpec(name=name, templates=templates, items=items, relation_templates=relation,
                      **{k: values[k] for k in ("answer_offset", "copy_offset", "corrupt_shift", "description",
                                                "sequence", "relation_answer_offset", "no_relation",
                                                "relation_items_differ")})


def _whole(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _offset(value: object, key: str, n_templates: int, where: str) -> int | tuple[int, ...]:
    """A whole number, or a list of one whole number per template (an offset family: "{k} days after {day} is")."""
    if _whole(value):
        return value
    if isinstance(value, list) and value and all(_whole(v) for v in value):
        if len(value) != n_templates:
            raise FamilyError(f"{where}: '{key}' lists {len(value)} offsets for {n_templates} template(s); give one "
                              "per template, in the same order, or one whole number for all")
        return tuple(value)
    raise FamilyError(f"{where}: '{key}' must be a whole number or a list of them (one per template), got {value!r}")


def _templates(table: dict, where: str) -> tuple[str, ...]:
    given = [key for key in TEMPLATE_KEYS if key in table]
    if len(given) != 1:
        raise FamilyError(f"{where}: give exactly one of 'template' (a string) or 'templates' (a list of strings)")
    raw = table[given[0]]
    templates = [raw] if given[0] == "template" else raw
    if not isinstance(templates, list) or not templates or not all(isinstance(t, str) for t in templates):
        raise FamilyError(f"{where}: '{given[0]}' must be a string" + ("" if given[0] == "template" else
                                                                         " list, not empty"))
    if len(templates) > MAX_TEMPLATES:
        raise FamilyError(f"{where}: {len(templates)} templates; at most {MAX_TEMPLATES} per family")
    for template in templates:
        _check_template(template, where)
    if len(set(templates)) != len(templates):
        raise FamilyError(f"{where}: a template is listed twice")
    return tuple(templates)


def _check_template(template: str, where: str) -> None:
    if not SLOT.search(template):
        raise FamilyError(f"{where}: template {template!r} has no {{day}} slot")
    leftover = SLOT.sub("", template)
    if "{" in leftover or "}" in leftover:
        raise FamilyError(f"{where}: template {template!r} has a slot other than {{day}} / {{day+N}} / {{day-N}}")


def _relation(values: dict, templates: tuple[str, ...], where: str, n_items: int) -> tuple[str, ...]:
    """The relation twins, one per template (same item, another step), or () when the family has none."""
    relation, offset = values["relation_templates"], values["relation_answer_offset"]
    if relation is None and offset is None:
        return ()
    if values["no_relation"]:
        raise FamilyError(f"{where}: 'no_relation' says there is no relation twin, but relation keys are given")
    if relation is None or offset is None:
        raise FamilyError(f"{where}: 'relation_templates' and 'relation_answer_offset' go together")
    if not isinstance(relation, list) or len(relation) != len(templates) or not all(isinstance(t, str)
                                                                                     for t in relation):
        raise FamilyError(f"{where}: 'relation_templates' must list one template per entry of 'templates' "
                          f"({len(templates)}), in the same order")
    for template in relation:
        _check_template(template, where)
    for clean, twin in zip(templates, relation):
        if slot_offsets(clean) != slot_offsets(twin) and not values["relation_items_differ"]:
            raise FamilyError(f"{where}: relation template {twin!r} names other items than {clean!r} (slots "
                              f"{_slots_text(twin)} against {_slots_text(clean)}), so the relation contrast would "
                              "vary which items are named as well as the step; name the same items (any order), or "
                              "say why in 'relation_items_differ'")
    for template, twin in zip(templates, relation):
        if _same_prompts(template, twin, n_items):
            raise FamilyError(f"{where}: relation template {twin!r} gives the same prompts as its template "
                              f"{template!r}, so the twin could not change the answer")
    for template, step, relation_step in zip(templates, per_template(values["answer_offset"], len(templates)),
                                             per_template(offset, len(templates))):
        if (relation_step - step) % n_items == 0:
            raise FamilyError(f"{where}: relation_answer_offset {relation_step} gives the same answer as "
                              f"answer_offset {step} (template {template!r}), so the relation twin would not change "
                              "the answer")
    return tuple(relation)


def _same_prompts(template: str, twin: str, n_items: int) -> bool:
    """Whether two templates fill to the same prompt for every item ("{day}" and "{day+0}" do)."""
    placeholder = FamilySpec("check", (template,), 0, items=tuple(f"\0{i}\0" for i in range(n_items)))
    return all(placeholder.prompt(template, i) == placeholder.prompt(twin, i) for i in range(n_items))


def slot_offsets(template: str) -> list[int]:
    """The item offsets a template names, sorted: "{day+2}, {day+1}, {day}," -> [0, 1, 2]."""
    return sorted((-1 if sign == "-" else 1) * int(n or 0) for sign, n in SLOT.findall(template))


def _slots_text(template: str) -> str:
    return "{" + ", ".join(f"{o:+d}" for o in slot_offsets(template)) + "}"


def select_families(specs: dict[str, FamilySpec], wanted: str) -> list[FamilySpec]:
    """`wanted` is 'all' or a comma-separated list of family names."""
    if wanted.strip() == "all":
        return list(specs.values())
    names = [n.strip() for n in wanted.split(",") if n.strip()]
    if not names:
        raise FamilyError("no family named: pass --families all or a comma-separated list")
    unknown = [n for n in names if n not in specs]
    if unknown:
        raise FamilyError(f"unknown family {', '.join(map(repr, unknown))}; known: {', '.join(specs)}")
    return [specs[n] for n in dict.fromkeys(names)]


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
