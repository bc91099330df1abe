"""The types the maths consumes and returns: a tokenized prompt family and an analysis result.

`report/` builds `PromptSet`s and stores `Result`s; `analyses/` never imports `report/`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np
import torch

from analyses.common.contract import CORRUPTIONS, Headline

DAYS = ("Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday")
MONTHS = ("January", "February", "March", "April", "May", "June", "July", "August", "September", "October",
          "November", "December")
SEQUENCES = {"days": DAYS, "months": MONTHS}  # built in; a families file may add its own


@dataclass(frozen=True)
class Corrupted:
    """One corrupted twin of every clean prompt (same token length), and its answers."""

    prompts: list[str]
    tokens: torch.Tensor  # [batch, seq] int64
    answer_ids: torch.Tensor  # [batch] token of each corrupted prompt's correct answer
    str_tokens: list[list[str]]  # [batch][seq]


@dataclass(frozen=True)
class PromptSet:
    """One prompt family, expanded over its templates (paraphrases) and every item of its sequence, tokenized.

    Prompts are template-major: prompt i uses template `template_index[i]` with item `item_index[i]` in the slot.
    Every prompt has the same token length (BOS included), so the tensors stack. Item indices count from the
    sequence's first item (Monday = 0 for days). Shapes: batch = templates x items, seq = tokens per prompt.

    Two corruptions, each a twin of every clean prompt with a different correct answer:
      day       the same template with the item moved `corrupt_shift` steps: what changes is WHICH item is named,
                so patching finds where the named item's identity travels to the output;
      relation  the same item under the family's relation template (e.g. "tomorrow" -> "yesterday"): what changes
                is the STEP applied to the item, so patching finds where the step is computed.
    `corrupted_*` hold the twin named by `corruption`; `with_corruption(name)` gives the same set with the other.
    """

    family: str
    description: str
    sequence: str  # name of the sequence, e.g. "days"
    items: tuple[str, ...]  # the sequence, in order, without leading spaces
    templates: tuple[str, ...]
    # correct answer = item in the slot + answer_offset (mod n_items); None for an offset family, whose templates
    # ask different steps ("{k} days after {day} is"): then answer_offsets (one per template) holds them
    answer_offset: int | None
    corrupt_shift: int  # day corruption: item + corrupt_shift
    item_index: list[int]  # [batch] the item in the slot of each clean prompt
    template_index: list[int]  # [batch] the template of each clean prompt
    clean_prompts: list[str]
    clean_tokens: torch.Tensor  # [batch, seq] int64
    answer_ids: torch.Tensor  # [batch] token of the clean prompt's correct answer
    copy_ids: torch.Tensor  # [batch] token of the item named in the clean prompt (the copy distractor)
    item_token_ids: torch.Tensor  # [n_items] the token of " Monday" .. " Sunday" (leading space)
    str_tokens: list[list[str]]  # [batch][seq] clean prompt tokens as strings
    twins: dict[str, Corrupted]  # corruption name -> its twin; "day" always, "relation" where the family has one
    corruption: str = "day"  # which twin the corrupted_* properties hold
    relation_answer_offset: int | tuple[int, ...] | None = None  # relation twin's answer = item + this (per template)
    # [templates][seq] the role of each token of each template (equal token length is not equal roles: the item
    # sits at index 4 in one wording and 3 in another): "start" (BOS), "item" / "item+1" / "item-2" (the slot
    # {day} / {day+1} / {day-2}), "relation" (the token the relation twin changes), "final" (the query position),
    # "other". Empty when the builder did not derive them.
    roles: tuple[tuple[str, ...], ...] = ()
    answer_offsets: tuple[int, ...] = ()  # the answer's step per template; () = answer_offset for every template

    @property
    def n_prompts(self) -> int:
        return len(self.clean_prompts)

    @property
    def n_items(self) -> int:
        return len(self.items)

    @property
    def corruptions(self) -> tuple[str, ...]:
        return tuple(c for c in CORRUPTIONS if c in self.twins)

    def with_corruption(self, name: str) -> PromptSet:
        if name not in self.twins:
            raise ValueError(f"family {self.family!r} has no {name!r} corruption (it has {self.corruptions})")
        return replace(self, corruption=name)

    @property
    def corrupted_prompts(self) -> list[str]:
        return self.twins[self.corruption].prompts

    @property
    def corrupted_tokens(self) -> torch.Tensor:
        return self.twins[self.corruption].tokens

    @property
    def corrupted_answer_ids(self) -> torch.Tensor:
        return self.twins[self.corruption].answer_ids

    @property
    def corrupted_str_tokens(self) -> list[list[str]]:
        return self.twins[self.corruption].str_tokens

    def prompt_offsets(self) -> list[int]:
        """[batch] the answer's step from the slot item, per prompt (its template's)."""
        steps = self.answer_offsets or (self.answer_offset,) * len(self.templates)
        return [steps[t] for t in self.template_index]

    def answer_items(self) -> list[int]:
        return [(i + k) % self.n_items for i, k in zip(self.item_index, self.prompt_offsets())]

    def shared_roles(self) -> list[str]:
        """Roles held by exactly one position in every template, in the first template's order."""
        if not self.roles:
            return []
        return [r for r in dict.fromkeys(self.roles[0]) if r != "other"
                and all(list(template).count(r) == 1 for template in self.roles)]

    def role_positions(self, role: str) -> list[int]:
        """[batch] the position of `role` in each prompt (its template's)."""
        return [self.roles[t].index(role) for t in self.template_index]


@dataclass
class Result:
    """What an analysis computed: numbers only, no HTML and no figures.

    summary: flat JSON object of numbers, strings and lists (the unit in the key).
    arrays: named numpy arrays the figures need.
    labels: token strings / head names aligned with the arrays.
    widgets: attention-pattern data for circuitsvis (props, not HTML):
        {"title": str, "tokens": [str], "attention": [[[float]]] (heads, dest, src), "head_names": [str]}
    documents: extra JSON files ("name.json" -> document), written next to the summary and not read back by `build`.
    """

    summary: dict[str, Any]
    arrays: dict[str, np.ndarray] = field(default_factory=dict)
    labels: dict[str, list] = field(default_factory=dict)
    widgets: list[dict[str, Any]] = field(default_factory=list)
    # JSON documents saved as files beside summary.json, for other tools (file name -> document), e.g. MIB circuits
    documents: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Figure:
    """A Plotly figure with a stable id (so rebuilding gives identical bytes)."""

    id: str
    figure: Any  # plotly.graph_objects.Figure


@dataclass(eq=False)
class FamilyContext:
    """Work that several analyses of one (model, family) share, computed once, on first use (`analyses.methods.shared`).

    The pipeline makes one per (model, family) and hands it to every analysis with `uses_context`; an analysis
    called on its own makes a fresh one, and computes exactly what it computed before there was sharing (a test
    compares the two paths). Keys name what is held and for which corruption, e.g. ("runs", "day").
    """

    model: Any
    memo: dict[tuple, Any] = field(default_factory=dict)
    # The run's options that change what analyses compute (never read from the command line by an analysis):
    # exact: which patching cells exact patching verifies, "all" or "top:K,sample:S" (`analyses.methods.verified`; the
    # pipeline resolves "auto" per device); ig_steps: EAP-IG's interpolation steps (`analyses.edge_circuits`).
    exact: str = "all"
    ig_steps: int = 5

    def get(self, key: tuple, make: Callable[[], Any]) -> Any:
        if key not in self.memo:
            self.memo[key] = make()
        return self.memo[key]


@dataclass(frozen=True)
class Analysis:
    """One analysis: `compute` needs the model, `figures` and `narrative` need only the Result."""

    name: str
    title: str
    definition: str  # what the metric means, shown beside the figures
    compute: Callable[[Any, PromptSet], Result]
    figures: Callable[[Result], list[Figure]]
    narrative: Callable[[Result], list[str]]
    description: str = ""
    part: str = "evidence"  # report part: "behaviour", "evidence", "mechanism" or "representation"
    per_corruption: bool = False  # computed and saved once per corruption of the family (`<name>-<corruption>`)
    # Why this analysis cannot run on a model (its architecture lacks what it reads), or None when it can. The
    # pipeline then records the analysis as skipped with this reason, and the page says so; never a crash.
    cannot_run: Callable[[Any], str | None] | None = None
    # Reruns the model with activations replaced (patching, ablations, paths, circuit). Under `--analyses auto`
    # these are not computed on a family where the model is at chance: they would explain noise.
    intervenes: bool = False
    # compute(model, prompts, context=FamilyContext) takes the family's shared work from the pipeline.
    uses_context: bool = False
    # compute(model, prompts, context=FamilyContext) reads the run's options from the context (e.g. `ig_steps`),
    # sharing no work; `uses_context` analyses read them too.
    reads_options: bool = False
    # The TypedDict of its summary (analyses/common/contract.py): `run` validates every summary it writes against the
    # JSON Schema generated from it, and report/store/schemas/ ships that schema. Every registered analysis declares
    # one.
    summary_type: type | None = None
    # Summary keys the index shows for every family (overview) and model (comparison), in this order, after the
    # headlines of the analyses before it in the registry. The renderer reads these; it names no analysis key.
    headlines: tuple[Headline, ...] = ()
