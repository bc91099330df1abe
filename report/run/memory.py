"""Memory of the machine: what a run may use, and giving a model's memory back between models."""

from __future__ import annotations

import gc
import os

GIB = 1024**3


def available_ram() -> int:
    """Bytes of RAM available to a new allocation (psutil when installed, else POSIX sysconf)."""
    try:
        import psutil

        return int(psutil.virtual_memory().available)
    except ImportError:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")


def device_memory(device: str) -> tuple[float, str]:
    """(GiB a model may use on this device, a description): a CUDA device's total memory, else available RAM."""
    import torch

    if device == "cuda":
        props = torch.cuda.get_device_properties(0)
        return props.total_memory / GIB, f"{props.name}, {props.total_memory / GIB:.0f} GiB"
    ram = available_ram() / GIB
    return ram, f"{device}, {ram:.0f} GiB RAM available"


def release(device: str) -> None:
    """After the last reference to a model is dropped: collect it and hand CUDA's cached blocks back, so that the
    next model of a multi-model run starts with the whole device."""
    gc.collect()
    if device == "cuda":
        import torch

        torch.cuda.empty_cache()
