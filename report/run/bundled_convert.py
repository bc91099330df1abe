"""The bundled GGUF as a processed Hugging Face model: dequantised with transformers (one GGUF parse shared by
every read), its weights processed through a bridge and saved under their Hugging Face names.

This is the slow part of the bundled model's first load (report/run/bundled.py builds its cache with it): about a
minute to dequantise on a laptop CPU and about 20 s to process.
"""

from __future__ import annotations

import copy
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch

from report.run.processing import GEMMA3_PROCESSING
from report.run.quiet import quiet_progress_bars


def dequantise(gguf: Path) -> tuple[Any, Any]:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    with _one_gguf_parse():
        model = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.float32,
                                                     attn_implementation="eager")  # the bridge runs eager too
        with quiet_progress_bars():
            tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    # transformers marks a GGUF model as quantized although its weights are now dense float32; drop the
    # marker so that its config saves and reloads as an ordinary checkpoint.
    model.hf_quantizer = None
    model.config.__dict__.pop("quantization_config", None)
    return model.eval(), tokenizer


@contextmanager
def _one_gguf_parse() -> Iterator[None]:
    """Within it, every gguf.GGUFReader of the same file is the first one.

    transformers reads the GGUF's metadata for the config, again for the weights and again for the tokenizer;
    each read builds Python objects for the 262,144 vocabulary entries (about 37 s on a 2-core CPU, most of the
    first load). The reader is a read-only memory map, so sharing it changes nothing but the time. transformers
    imports GGUFReader from the gguf module at each call, so replacing the module attribute for the duration of
    this block (and restoring it after) reaches every read.
    """
    import gguf

    original = gguf.GGUFReader
    readers: dict[tuple[str, str], Any] = {}

    def shared_reader(path, mode="r"):
        key = (str(Path(path).resolve()), mode)
        if key not in readers:
            readers[key] = original(path, mode)
        return readers[key]

    gguf.GGUFReader = shared_reader
    try:
        yield
    finally:
        gguf.GGUFReader = original
        readers.clear()


def save_processed(model: Any, tokenizer: Any, folder: Path) -> None:
    """Process the weights through a bridge and save them under the HF names, as a loadable HF folder."""
    from safetensors.torch import save_file
    from transformer_lens.model_bridge.sources._bridge_builder import build_bridge_from_module

    config = copy.deepcopy(model.config)
    config.tie_word_embeddings = False  # centring and folding give W_U its own values
    config.architectures = [type(model).__name__]  # model.save_pretrained() would add it; boot reads it
    hf_names = list(model.state_dict())
    bridge = build_bridge_from_module(model, type(model).__name__, hf_config=model.config)
    bridge.enable_compatibility_mode(disable_warnings=True, **GEMMA3_PROCESSING)
    # The bridge nests every HF submodule as `<name>._original_component`: dropping that gives the HF name.
    processed = {k.replace("_original_component.", ""): v for k, v in bridge.original_model.state_dict().items()}
    save_file({k: processed[k].contiguous() for k in hf_names}, folder / "model.safetensors", {"format": "pt"})
    config.save_pretrained(folder)
    model.generation_config.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
