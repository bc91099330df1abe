"""The models we document for `--model` (any hub id or local folder of a supported architecture works too),
with their size, the memory their weights need per dtype, and whether that fits this machine; and the parameter
count of any model before it loads (what `--dtype auto` decides by).

Parameter counts are those of the Hugging Face checkpoints, tied embeddings counted once. The memory estimate
is the weights (parameters x bytes per parameter) times RUN_OVERHEAD: the activations of seven prompts, the
clean and corrupted caches of the patching analyses and the chunks (sized to what is free) add about a third.
"""

from __future__ import annotations

from dataclasses import dataclass

from report.errors import UserError
from report.run.dtype import BYTES, resolve_dtype

RUN_OVERHEAD = 1.3
GIB = 1024**3


@dataclass(frozen=True)
class CatalogueEntry:
    name: str
    n_params: int
    needs_network: bool
    note: str

    @property
    def size(self) -> str:
        return f"{self.n_params / 1e9:.1f}B" if self.n_params >= 1e9 else f"{self.n_params / 1e6:.0f}M"

    def memory_gib(self, dtype: str) -> float:
        """Estimated memory of a run in this dtype, GiB."""
        return self.n_params * BYTES[dtype] * RUN_OVERHEAD / GIB


MODELS = (
    CatalogueEntry("gpt2", 124_439_808, True, "GPT-2 small (alias gpt2-small); the seed notebook's model"),
    CatalogueEntry("gpt2-medium", 354_823_168, True, "GPT-2 medium"),
    CatalogueEntry("gpt2-large", 774_030_080, True, "GPT-2 large"),
    CatalogueEntry("gpt2-xl", 1_557_611_200, True, "GPT-2 XL"),
    CatalogueEntry("EleutherAI/pythia-160m", 162_322_944, True, "Pythia 160M (GPT-NeoX, parallel attention)"),
    CatalogueEntry("EleutherAI/pythia-410m", 405_334_016, True, "Pythia 410M"),
    CatalogueEntry("EleutherAI/pythia-1b", 1_011_781_632, True, "Pythia 1B"),
    CatalogueEntry("meta-llama/Llama-3.2-1B", 1_235_814_400, True, "Llama 3.2 1B (gated: accept the licence on "
                                                                   "the hub and log in first)"),
    CatalogueEntry("Qwen/Qwen2.5-0.5B", 494_032_768, True, "Qwen2.5 0.5B"),
    CatalogueEntry("Qwen/Qwen2.5-1.5B", 1_543_714_304, True, "Qwen2.5 1.5B"),
    CatalogueEntry("google/gemma-2-2b", 2_614_341_888, True, "Gemma 2 2B (gated; logit soft-capping)"),
    CatalogueEntry("gemma-3-270m", 268_098_176, False, "Gemma 3 270M, bundled with the project; the default"),
)
BY_NAME = {entry.name: entry for entry in MODELS}


def describe(device: str) -> list[str]:
    """The lines of `list models`: size, memory per dtype, the `auto` dtype here and whether it fits."""
    from report.run.memory import device_memory

    budget, where = device_memory(device)
    lines = [f"device: {where}; memory = weights x {RUN_OVERHEAD} (GiB)",
             f"{'model':26} {'params':>6} {'float32':>8} {'bf16':>6}  {'auto dtype':10} {'fits':5} {'source':17} note"]
    for entry in MODELS:
        dtype = resolve_dtype("auto", device, entry.n_params)
        fits = "yes" if entry.memory_gib(dtype) <= budget else "no"
        source = "needs the network" if entry.needs_network else "offline"
        lines.append(f"{entry.name:26} {entry.size:>6} {entry.memory_gib('float32'):8.1f} "
                     f"{entry.memory_gib('bfloat16'):6.1f}  {dtype:10} {fits:5} {source:17} {entry.note}")
    return lines


def count_parameters(name: str) -> int | None:
    """Parameters of a model before loading it: the catalogue's count, else built from its config on the meta
    device (no memory, no weights read). None when the config cannot be read (loading will say why)."""
    import torch

    from report.run.model_source import resolve_name, resolve_source

    entry = BY_NAME.get(resolve_name(name))
    if entry is not None:
        return entry.n_params
    try:
        from transformers import AutoConfig, AutoModelForCausalLM

        config = AutoConfig.from_pretrained(resolve_source(name))
        with torch.device("meta"):
            model = AutoModelForCausalLM.from_config(config)
        return sum(p.numel() for p in model.parameters())
    except (OSError, ValueError, KeyError, UserError):
        return None
