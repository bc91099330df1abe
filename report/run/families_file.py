"""The families file: its TOML parsed and checked into FamilySpecs, before any model is loaded.

`load_family_specs(path)` checks the file itself (keys, types, template slots, sequences, and limits that refuse a
resource bomb); no model needed. Tokenizing for a model is the second stage (report/run/families.py). Every error
names the file and the family or sequence.
"""

from __future__ import annotations

import re
from importlib import resources
from pathlib import Path

import tomllib

from analyses.common.types import SEQUENCES
from report.run.families import SLOT, FamilyError, FamilySpec, per_template
from report.store.files import read_user_text

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
