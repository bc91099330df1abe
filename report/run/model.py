"""Load a model as a TransformerLens 4 `TransformerBridge` with the seed notebook's weight processing.

A name is a Hugging Face id (`gpt2`, `gpt2-medium`, ...; `gpt2-small` is an alias of `gpt2`), a local
checkpoint folder, or the bundled offline model (`gemma-3-270m`, the default, installed with the project). The seed
notebook is the SERI MATS exercise this project grew from (GPT-2 small on "Today it is Monday so tomorrow it is";
README, References).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import torch

from report.bundled_name import BUNDLED_MODEL_NAME
from report.errors import ModelUnavailable
from report.run.bundled import PROCESSING, bundled_model_info, load_bundled_model
from report.run.checkpoint import check_finite, fingerprint, load_error
from report.run.model_source import resolve_source
from report.run.processing import WEIGHT_PROCESSING, processing_for

__all__ = ["WEIGHT_PROCESSING", "LoadedModel", "load_model", "pick_device", "processing_for"]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class LoadedModel:
    name: str  # as the user wrote it
    resolved: str  # the hub id or absolute folder actually loaded
    model: object  # the TransformerBridge
    device: str
    revision: str  # commit / file hash where known, else "unknown"
    processing: dict  # the weight processing applied (recorded in the manifest)
    fingerprint: str = "unknown"  # what these weights are (report/run/checkpoint.py); every result carries it


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


def load_model(name: str, device: str = "cpu", dtype: str = "float32") -> LoadedModel:
    """Load and process one model in `dtype` (report/run/dtype.py; checked first by
    report.run.checkpoint.inspect_model);
    a UserError if it fails."""
    from report.run.dtype import torch_dtype

    if name == BUNDLED_MODEL_NAME:
        bridge = _frozen(load_bundled_model(device=device, dtype=torch_dtype(dtype)))
        check_finite(name, bridge)
        revision = bundled_model_info()["revision"]
        return LoadedModel(name, name, bridge, device, revision, PROCESSING, f"bundled:{revision}")
    resolved = resolve_source(name)
    bridge = _boot(name, resolved, device, torch_dtype(dtype))
    processing = processing_for(bridge.cfg)
    bridge.enable_compatibility_mode(**processing, disable_warnings=True)
    bridge.eval()
    check_finite(name, bridge)  # a NaN weight would make every number of the report NaN, or quietly wrong
    revision = _revision(bridge, resolved)
    return LoadedModel(name, resolved, _frozen(bridge), device, revision, processing, fingerprint(resolved, revision))


def _frozen(bridge):
    """Inference only: this model's parameters need no gradients. A property of the model, not of the process
    (autograd stays as the caller set it); the pipeline runs each analysis under no_grad, and attribution
    patching takes gradients with respect to activations, which it makes leaves itself."""
    bridge.requires_grad_(False)
    return bridge


def _boot(name: str, resolved: str, device: str, dtype: torch.dtype = torch.float32):
    from safetensors import SafetensorError
    from transformer_lens.model_bridge import TransformerBridge

    try:
        return TransformerBridge.boot_transformers(resolved, device=device, dtype=dtype)
    except (OSError, SafetensorError) as err:  # unreachable hub, unknown repo; a local folder's own problem
        raise load_error(name, err) from None


def _revision(bridge, resolved: str) -> str:
    config = getattr(getattr(bridge, "original_model", None), "config", None)
    commit = getattr(config, "_commit_hash", None)
    if commit is None and "/snapshots/" in Path(resolved).as_posix():  # a cached hub snapshot (report/run/hub.py)
        commit = Path(resolved).name
    return commit or ("local folder" if Path(resolved).exists() else "unknown")
