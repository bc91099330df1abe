"""The models we document for `--model` (any GPT-2-style hub id or local folder works too)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class CatalogueEntry:
    name: str
    size: str
    needs_network: bool
    note: str


MODELS = (
    CatalogueEntry("gpt2", "124M", True, "GPT-2 small (alias gpt2-small); the notebook's model"),
    CatalogueEntry("gpt2-medium", "355M", True, "GPT-2 medium"),
    CatalogueEntry("gpt2-large", "774M", True, "GPT-2 large"),
    CatalogueEntry("gpt2-xl", "1.5B", True, "GPT-2 XL"),
    CatalogueEntry("EleutherAI/pythia-160m", "160M", True, "Pythia 160M"),
    CatalogueEntry("EleutherAI/pythia-410m", "410M", True, "Pythia 410M"),
    CatalogueEntry("gemma-3-270m", "270M", False, "Gemma 3 270M, bundled (pip install -e \".[offline]\")"),
)
