"""The types the maths consumes and returns: a tokenized prompt family and an analysis result.

`report/` builds `PromptSet`s and stores `Result`s; `analyses/` never imports `report/`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

DAYS = ("Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday")


@dataclass(frozen=True)
class PromptSet:
    """One prompt family, expanded over the seven days and tokenized for one model.

    Every prompt has the same token length (BOS included), so the tensors stack.
    Day indices count from Monday = 0. Shapes: batch = number of prompts (7), seq = tokens per prompt.
    """

    family: str
    description: str
    template: str
    answer_offset: int  # correct answer = day in {day} slot + answer_offset (mod 7)
    corrupt_shift: int  # corrupted prompt = same template with day + corrupt_shift
    days: list[int]  # [batch] the {day} of each clean prompt
    clean_prompts: list[str]
    corrupted_prompts: list[str]
    clean_tokens: torch.Tensor  # [batch, seq] int64
    corrupted_tokens: torch.Tensor  # [batch, seq] int64
    answer_ids: torch.Tensor  # [batch] token of the clean prompt's correct answer
    copy_ids: torch.Tensor  # [batch] token of the day named in the clean prompt (the copy distractor)
    corrupted_answer_ids: torch.Tensor  # [batch] token of the corrupted prompt's correct answer
    day_token_ids: torch.Tensor  # [7] the token of " Monday" .. " Sunday"
    str_tokens: list[list[str]]  # [batch][seq] clean prompt tokens as strings
    corrupted_str_tokens: list[list[str]]  # [batch][seq]

    @property
    def n_prompts(self) -> int:
        return len(self.clean_prompts)

    def answer_days(self) -> list[int]:
        return [(d + self.answer_offset) % 7 for d in self.days]


@dataclass
class Result:
    """What an analysis computed: numbers only, no HTML and no figures.

    summary: flat JSON object of numbers, strings and lists (the unit in the key).
    arrays: named numpy arrays the figures need.
    labels: token strings / head names aligned with the arrays.
    widgets: attention-pattern data for circuitsvis (props, not HTML):
        {"title": str, "tokens": [str], "attention": [[[float]]] (heads, dest, src), "head_names": [str]}
    """

    summary: dict[str, Any]
    arrays: dict[str, np.ndarray] = field(default_factory=dict)
    labels: dict[str, list] = field(default_factory=dict)
    widgets: list[dict[str, Any]] = field(default_factory=list)


@dataclass(frozen=True)
class Figure:
    """A Plotly figure with a stable id (so rebuilding gives identical bytes)."""

    id: str
    figure: Any  # plotly.graph_objects.Figure


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
