"""Prompt families as data: parse and validate the TOML, expand over the seven days, tokenize.

Two stages, so that bad input fails before anything is computed:
  1. `load_family_specs(path)` checks the file itself (keys, types, template slots); no model needed.
  2. `build_prompt_set(spec, tokenizer, prepend_bos)` tokenizes for one model and checks that every
     answer is one token with its leading space and that all prompts have the same token length.
Every error names the family and, where there is one, the prompt.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

import tomllib
import torch

from analyses.types import DAYS, PromptSet
from report.errors import UserError
from report.files import read_user_text

SLOT = re.compile(r"\{day(?:([+-])(\d+))?\}")
NAME = re.compile(r"^[a-z0-9][a-z0-9_-]*$")
REQUIRED_KEYS = {"template", "answer_offset"}
OPTIONAL_KEYS = {"description": "", "copy_offset": 0, "corrupt_shift": 3}


class FamilyError(UserError):
    """A prompt family that cannot be used (the message names the family and the prompt)."""


@dataclass(frozen=True)
class FamilySpec:
    name: str
    template: str
    answer_offset: int
    copy_offset: int = 0
    corrupt_shift: int = 3
    description: str = ""

    def prompt(self, day: int) -> str:
        """The template with {day} = DAYS[day] and {day±N} = the day N later/earlier."""

        def fill(match: re.Match) -> str:
            sign, n = match.group(1), int(match.group(2) or 0)
            return DAYS[(day + (n if sign != "-" else -n)) % 7]

        return SLOT.sub(fill, self.template)


def default_families_path() -> Path:
    return Path(str(resources.files("report") / "families.toml"))


def load_family_specs(path: Path | None = None) -> dict[str, FamilySpec]:
    """Parse and check a families file (the shipped one when `path` is None); keeps file order."""
    path = Path(path) if path is not None else default_families_path()
    try:
        data = tomllib.loads(read_user_text(path, "families file"))
    except FileNotFoundError:
        raise FamilyError(f"families file not found: {path}") from None
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as err:
        raise FamilyError(f"families file {path} is not valid TOML: {err}") from None
    if not data:
        raise FamilyError(f"families file {path} defines no family")
    return {name: _check_spec(name, table, path) for name, table in data.items()}


def _check_spec(name: str, table: object, path: Path) -> FamilySpec:
    where = f"family '{name}' in {path}"
    if not isinstance(table, dict):
        raise FamilyError(f"{where}: expected a table [{name}] with keys {sorted(REQUIRED_KEYS)}")
    if not NAME.match(name):
        raise FamilyError(f"{where}: a family name may hold only a-z, 0-9, '_' and '-'")
    unknown = set(table) - REQUIRED_KEYS - set(OPTIONAL_KEYS)
    if unknown:
        allowed = sorted(REQUIRED_KEYS | set(OPTIONAL_KEYS))
        raise FamilyError(f"{where}: unknown key(s) {sorted(unknown)}; allowed: {allowed}")
    missing = REQUIRED_KEYS - set(table)
    if missing:
        raise FamilyError(f"{where}: missing key(s) {sorted(missing)}")
    values = {**OPTIONAL_KEYS, **table}
    for key in ("answer_offset", "copy_offset", "corrupt_shift"):
        if not isinstance(values[key], int) or isinstance(values[key], bool):
            raise FamilyError(f"{where}: '{key}' must be a whole number, got {values[key]!r}")
    for key in ("template", "description"):
        if not isinstance(values[key], str):
            raise FamilyError(f"{where}: '{key}' must be a string")
    template = values["template"]
    if "{day}" not in template:
        raise FamilyError(f"{where}: template {template!r} has no {{day}} slot")
    leftover = SLOT.sub("", template)
    if "{" in leftover or "}" in leftover:
        raise FamilyError(f"{where}: template {template!r} has a slot other than {{day}} / {{day+N}} / {{day-N}}")
    if values["corrupt_shift"] % 7 == 0:
        raise FamilyError(f"{where}: corrupt_shift {values['corrupt_shift']} is a multiple of 7, "
                          "so the corrupted answer would equal the clean one")
    return FamilySpec(name=name, **{k: values[k] for k in ("template", "answer_offset", "copy_offset",
                                                             "corrupt_shift", "description")})


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


def day_token_id(tokenizer, day: str, family: str, prompt: str) -> int:
    """The single token of ' <day>' (with its leading space), or a FamilyError naming family and prompt."""
    ids = tokenizer.encode(" " + day, add_special_tokens=False)
    if len(ids) != 1:
        raise FamilyError(f"family '{family}', prompt {prompt!r}: the answer ' {day}' is {len(ids)} tokens "
                          "for this model's tokenizer, not one")
    return ids[0]


def _tokenize(tokenizer, prompt: str, prepend_bos: bool) -> list[int]:
    ids = tokenizer.encode(prompt, add_special_tokens=False)
    return ([tokenizer.bos_token_id] if prepend_bos else []) + ids


def _str_tokens(tokenizer, ids: list[int]) -> list[str]:
    return [tokenizer.decode([i]) for i in ids]


def build_prompt_set(spec: FamilySpec, tokenizer, prepend_bos: bool = True) -> PromptSet:
    """Expand `spec` over the seven days and tokenize clean and corrupted prompts for one tokenizer."""
    days = list(range(7))
    clean = [spec.prompt(d) for d in days]
    corrupted = [spec.prompt(d + spec.corrupt_shift) for d in days]
    answer = [day_token_id(tokenizer, DAYS[(d + spec.answer_offset) % 7], spec.name, p)
              for d, p in zip(days, clean)]
    copy = [day_token_id(tokenizer, DAYS[(d + spec.copy_offset) % 7], spec.name, p) for d, p in zip(days, clean)]
    corrupted_answer = [day_token_id(tokenizer, DAYS[(d + spec.corrupt_shift + spec.answer_offset) % 7],
                                     spec.name, p) for d, p in zip(days, corrupted)]
    day_ids = [day_token_id(tokenizer, day, spec.name, clean[0]) for day in DAYS]
    clean_ids = [_tokenize(tokenizer, p, prepend_bos) for p in clean]
    corrupted_ids = [_tokenize(tokenizer, p, prepend_bos) for p in corrupted]
    _check_equal_lengths(spec.name, clean + corrupted, clean_ids + corrupted_ids)
    return PromptSet(
        family=spec.name, description=spec.description, template=spec.template,
        answer_offset=spec.answer_offset, corrupt_shift=spec.corrupt_shift, days=days,
        clean_prompts=clean, corrupted_prompts=corrupted,
        clean_tokens=torch.tensor(clean_ids), corrupted_tokens=torch.tensor(corrupted_ids),
        answer_ids=torch.tensor(answer), copy_ids=torch.tensor(copy),
        corrupted_answer_ids=torch.tensor(corrupted_answer), day_token_ids=torch.tensor(day_ids),
        str_tokens=[_str_tokens(tokenizer, ids) for ids in clean_ids],
        corrupted_str_tokens=[_str_tokens(tokenizer, ids) for ids in corrupted_ids],
    )


def _check_equal_lengths(family: str, prompts: list[str], ids: list[list[int]]) -> None:
    """Patching and batching need every clean and corrupted prompt to have the same token length."""
    for prompt, toks in zip(prompts, ids):
        if len(toks) != len(ids[0]):
            raise FamilyError(f"family '{family}', prompt {prompt!r}: {len(toks)} tokens, but prompt "
                              f"{prompts[0]!r} has {len(ids[0])}; every prompt of a family must have "
                              "the same token length")
