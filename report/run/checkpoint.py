"""Whether a model can be analysed: checked before any run folder exists.

What a name points at (a hub id, a local checkpoint folder) is report/run/model_source.py's; the bundled offline
model is report/run/bundled.py's. `inspect_model` refuses, in one line naming the model and the file or tensors:
- a local folder's own problems, reported as what they are (no config.json, a config that is not JSON or
  names an unknown model_type, no weights, a missing shard, a corrupt, truncated or empty weights file, no
  tokenizer), never as a hub problem;
- an architecture that is not a causal language model the TransformerLens bridge supports (a BERT config);
- weights that do not cover the model: the loader's own loading info (missing, unexpected or mis-shaped
  tensors), read on the meta device, so nothing is loaded twice. A config over another architecture's
  weights, or a checkpoint with one layer's tensors deleted, would otherwise load with those tensors newly
  initialised and be analysed as if trained.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

from report.bundled_name import BUNDLED_MODEL_NAME
from report.errors import ModelUnavailable, UserError
from report.run.model_source import is_local, resolve_source, unavailable_message
from report.run.quiet import quiet_transformers

TOKENIZER_FILES = ("tokenizer.json", "vocab.json", "tokenizer.model", "spiece.model", "vocab.txt")
CONTEXT_FIELDS = ("n_positions", "max_position_embeddings", "n_ctx", "max_sequence_length", "seq_length")
_SHOWN = 6  # tensor names quoted in a message; the count says how many more


class CheckpointError(UserError):
    """A model that exists but cannot be analysed faithfully (its files, its architecture or its weights)."""

    exit_code = 2


@dataclass(frozen=True)
class CheckedModel:
    name: str  # as the user wrote it
    resolved: str  # the hub id or the absolute folder
    tokenizer: object
    n_ctx: int | None  # the longest sequence the model takes, where its config says


def load_error(name: str, err: Exception) -> UserError:
    """A loader's exception as one line: the local folder's problem, or the hub's for a hub id."""
    if not is_local(name):
        return ModelUnavailable(unavailable_message(name, err))
    text = " ".join(str(err).split())[:300] or type(err).__name__
    return CheckpointError(f"model folder {name!r} cannot be loaded: {text}")


def inspect_model(name: str) -> CheckedModel:
    """Every check that needs no model weights in memory; raises a UserError naming the problem."""
    if name == BUNDLED_MODEL_NAME:
        from report.run.bundled import load_bundled_tokenizer, prepared_folder

        return CheckedModel(name, name, load_bundled_tokenizer(), context_length(_config(name, prepared_folder())))
    resolved = resolve_source(name)
    config = _config(name, resolved)
    architecture = check_architecture(name, config)
    if is_local(name):
        check_weight_files(name, Path(resolved))
    check_coverage(name, resolved, config, architecture)
    tokenizer = _tokenizer(name, resolved)
    check_vocabulary(name, config, tokenizer)
    return CheckedModel(name, resolved, tokenizer, context_length(config))


def check_vocabulary(name: str, config, tokenizer) -> None:
    """The embedding has a row for every token the tokenizer can produce, and there is a BOS token: every family's
    prompts start with one (the analyses compare positions from it)."""
    vocab_size = getattr(config, "vocab_size", None)
    if isinstance(vocab_size, int) and vocab_size < len(tokenizer):
        raise CheckpointError(f"model {name!r}: its config's vocab_size {vocab_size} is smaller than its tokenizer's "
                              f"{len(tokenizer)} tokens (token ids past {vocab_size - 1} have no embedding row)")
    if tokenizer.bos_token_id is None:
        raise CheckpointError(f"model {name!r}: its tokenizer has no BOS token, and every family's prompts start "
                              "with one (set bos_token in its tokenizer_config.json)")


def context_length(config) -> int | None:
    for field in CONTEXT_FIELDS:
        value = getattr(config, field, None)
        if isinstance(value, int) and value > 0:
            return value
    return None


def _config(name: str, resolved: str | Path):
    from transformers import AutoConfig

    try:
        with quiet_transformers():  # its warnings about the config's own fields: the checks below say what matters
            return AutoConfig.from_pretrained(resolved)
    except OSError as err:
        if is_local(name) and "valid JSON" in str(err):
            raise CheckpointError(f"model folder {name!r}: config.json is not valid JSON") from None
        raise load_error(name, err) from None
    except (ValueError, KeyError) as err:  # transformers: an unknown model_type, a config it cannot read
        model_type = _raw_model_type(resolved)
        if model_type is not None:
            raise CheckpointError(f"model {name!r}: config.json names model_type {model_type!r}, which this "
                                  "transformers version does not know") from None
        raise load_error(name, err) from None


def _raw_model_type(resolved: str | Path) -> str | None:
    try:
        value = json.loads((Path(resolved) / "config.json").read_text(encoding="utf-8")).get("model_type")
    except (OSError, ValueError, AttributeError):
        return None
    return value if isinstance(value, str) else None


def check_architecture(name: str, config) -> str:
    """The architecture class the config names; only causal LMs that the bridge has an adapter for."""
    from transformer_lens.factories.architecture_adapter_factory import SUPPORTED_ARCHITECTURES
    from transformer_lens.model_bridge.sources._hf_format import determine_architecture_from_hf_config
    from transformer_lens.model_bridge.sources.transformers.helpers import get_hf_model_class_for_architecture
    from transformers import AutoModelForCausalLM

    try:
        architecture = determine_architecture_from_hf_config(config)
    except ValueError:
        architecture = None
    causal = architecture is not None and get_hf_model_class_for_architecture(architecture) is AutoModelForCausalLM
    if not causal or architecture not in SUPPORTED_ARCHITECTURES or not _is_lm_head(architecture):
        raise CheckpointError(f"model {name!r} is a {architecture or getattr(config, 'model_type', '?')}: only "
                              "causal language models that TransformerLens's bridge supports can be analysed "
                              "(GPT2LMHeadModel, GPTNeoXForCausalLM, LlamaForCausalLM, Gemma3ForCausalLM, ...)")
    return architecture


def _is_lm_head(architecture: str) -> bool:
    return architecture.endswith(("ForCausalLM", "LMHeadModel"))


def check_weight_files(name: str, folder: Path) -> None:
    """A local folder holds its weights: every shard its index lists, each a readable safetensors file."""
    index = folder / "model.safetensors.index.json"
    if index.is_file():
        try:
            shards = sorted(set(json.loads(index.read_text(encoding="utf-8"))["weight_map"].values()))
        except (ValueError, KeyError, TypeError, AttributeError):
            raise CheckpointError(f"model folder {name!r}: {index.name} is not a valid weights index") from None
        missing = [s for s in shards if not (folder / s).is_file()]
        if missing:
            raise CheckpointError(f"model folder {name!r} is missing weight shard(s) {', '.join(missing)} "
                                  f"listed in {index.name}")
        files = [folder / s for s in shards]
    elif (folder / "model.safetensors").is_file():
        files = [folder / "model.safetensors"]
    elif any((folder / f).is_file() for f in ("pytorch_model.bin", "pytorch_model.bin.index.json")):
        return  # the loader reads (and checks) pickled weights itself
    else:
        raise CheckpointError(f"model folder {name!r} has no weights (model.safetensors, "
                              "model.safetensors.index.json or pytorch_model.bin)")
    for path in files:
        _check_safetensors(name, path)
    for path in files:
        _check_finite_file(name, path)  # before a run folder exists; the loaded model is checked again


def _check_safetensors(name: str, path: Path) -> None:
    from safetensors import SafetensorError, safe_open

    if path.stat().st_size == 0:
        raise CheckpointError(f"model folder {name!r}: weights file {path.name} is empty")
    try:
        with safe_open(str(path), framework="pt"):
            pass  # opening parses the header and checks that the data it describes fits the file
    except (SafetensorError, OSError, ValueError) as err:
        raise CheckpointError(f"model folder {name!r}: weights file {path.name} is corrupt or truncated "
                              f"({' '.join(str(err).split())})") from None


def check_coverage(name: str, resolved: str, config, architecture: str) -> None:
    """The loader's own loading info, on the meta device: every tensor of the model comes from the checkpoint."""
    from safetensors import SafetensorError
    from transformer_lens.model_bridge.sources.transformers.helpers import get_hf_model_class_for_architecture

    model_class = get_hf_model_class_for_architecture(architecture)
    try:
        with quiet_transformers():  # its load report would say what the message below says, at length
            _, info = model_class.from_pretrained(resolved, config=config, device_map="meta",
                                                  output_loading_info=True, ignore_mismatched_sizes=True)
    except (OSError, SafetensorError, RuntimeError, ValueError) as err:
        raise load_error(name, err) from None
    problems = [f"{len(keys)} {what} ({_names(keys)})" for what, keys in (
        ("missing from the checkpoint (they would be newly initialised)", info.get("missing_keys")),
        ("in the checkpoint but not in the model", info.get("unexpected_keys")),
        ("of the wrong shape", [_shaped(k) for k in info.get("mismatched_keys") or ()]),
    ) if keys]
    if info.get("error_msgs"):
        problems.append("; ".join(map(str, info["error_msgs"]))[:300])
    if problems:
        raise CheckpointError(f"model {name!r}: its weights do not match its {architecture} config: "
                              + "; ".join(problems))


def _shaped(key) -> str:
    """A mis-shaped tensor as `name (checkpoint [a, b], config [c, d])`, where the loader says both shapes."""
    if isinstance(key, str):
        return key
    if len(key) == 3:
        return f"{key[0]} (checkpoint {list(key[1])}, config {list(key[2])})"
    return str(key[0])


def _names(keys) -> str:
    keys = sorted(map(str, keys))
    more = f", and {len(keys) - _SHOWN} more" if len(keys) > _SHOWN else ""
    return ", ".join(keys[:_SHOWN]) + more


def _tokenizer(name: str, resolved: str):
    from transformers import AutoTokenizer

    if is_local(name) and not any((Path(resolved) / f).is_file() for f in TOKENIZER_FILES):
        raise CheckpointError(f"model folder {name!r} has no tokenizer (none of {', '.join(TOKENIZER_FILES)})")
    try:
        tokenizer = AutoTokenizer.from_pretrained(resolved)
    except (OSError, ValueError, TypeError) as err:
        raise load_error(name, err) from None
    if len(tokenizer) < 2:
        raise CheckpointError(f"model {name!r}: its tokenizer has an empty vocabulary")
    return tokenizer


def fingerprint(resolved: str, revision: str) -> str:
    """What a model is, for telling two models apart: for a local folder the sha256 of every file in it (config,
    weights, tokenizer), so two folders of one name holding different weights differ; for a hub id its commit."""
    folder = Path(resolved)
    if not folder.is_dir():
        return f"hub:{resolved}@{revision}"
    digest = hashlib.sha256()
    for path in sorted(p for p in folder.iterdir() if p.is_file() and not p.name.startswith(".")):
        digest.update(path.name.encode("utf-8") + b"\0")
        with open(path, "rb") as handle:
            for block in iter(lambda: handle.read(1 << 20), b""):
                digest.update(block)
    return "sha256:" + digest.hexdigest()


def check_finite(name: str, model) -> None:
    """Every parameter finite, or a CheckpointError naming the first tensor with a NaN or infinity (buffers are
    left alone: a causal mask legitimately holds -inf)."""
    import torch

    for tensor_name, tensor in model.named_parameters():
        if tensor.is_floating_point() and not bool(torch.isfinite(tensor).all()):
            raise CheckpointError(f"model {name!r}: weight {tensor_name} holds NaN or infinite values")


def _check_finite_file(name: str, path: Path) -> None:
    """Read a safetensors file tensor by tensor (one in memory at a time): no NaN or infinity in any weight."""
    import torch
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as handle:
        for key in handle.keys():
            tensor = handle.get_tensor(key)
            if tensor.is_floating_point() and not bool(torch.isfinite(tensor).all()):
                raise CheckpointError(f"model folder {name!r}: weight {key} in {path.name} holds NaN or "
                                      "infinite values")
