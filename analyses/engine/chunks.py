"""Chunks of a batched computation: how many rows one block call may take, and halving on out-of-memory.

Chunk sizes start from an estimate of free memory (`rows_per_call`); the estimate is rough (allocator
fragmentation, other processes on the GPU), so an out-of-memory error in one chunk is not the end of the run: the
cached blocks are released, the chunk is halved and the same items are tried again. Only a chunk of one item that
still does not fit re-raises. Every batched sweep of the engine goes through `Chunker.map`: patching sweeps, rows,
prefix-shared rows, edge batches and the attribution sweeps' prompts.
"""

from __future__ import annotations

import gc
import logging
from collections.abc import Callable, Iterator, Sequence
from typing import TypeVar

import torch

log = logging.getLogger(__name__)
T = TypeVar("T")
R = TypeVar("R")
# torch.cuda.OutOfMemoryError is torch.OutOfMemoryError in torch >= 2.5 (also raised by other accelerators there)
OUT_OF_MEMORY: tuple[type[BaseException], ...] = (getattr(torch, "OutOfMemoryError", torch.cuda.OutOfMemoryError),)
CPU_TOKENS_PER_CHUNK = 4096  # rows x positions per block call on CPU: larger stops paying off (cache misses)
MEMORY_FRACTION = {"cuda": 0.5, "cpu": 0.25}  # share of free memory one chunk's working set may take


def release_cached_memory() -> None:
    """Give the blocks PyTorch's caching allocator holds back to the device (after an OOM, between models)."""
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def is_out_of_memory(error: BaseException) -> bool:
    """torch's OutOfMemoryError, or a RuntimeError that says so (older torch, some CPU and MPS allocators)."""
    if isinstance(error, OUT_OF_MEMORY):
        return True
    return isinstance(error, RuntimeError) and "out of memory" in str(error).lower()


class Chunker:
    """Cuts items into consecutive chunks of at most `size` (the sum of the items' costs), halving on OOM.

    The size it has halved to is kept for later calls of `map`, so a sweep that runs one chunked pass per layer
    (prefix-shared rows) does not run out of memory again at every layer.
    """

    def __init__(self, size: int):
        self.size = max(1, int(size))

    def map(self, items: Sequence[T], run: Callable[[list[T]], R],
            cost: Callable[[T], int] | None = None) -> Iterator[tuple[list[T], R]]:
        """Yield (chunk, run(chunk)) over consecutive chunks covering every item once, in order."""
        start = 0
        while start < len(items):
            chunk = self._next_chunk(items, start, cost)
            try:
                result = run(chunk)
            except (RuntimeError, *OUT_OF_MEMORY) as error:
                if not is_out_of_memory(error) or len(chunk) == 1:
                    raise
                used = len(chunk) if cost is None else sum(cost(item) for item in chunk)
                self.size = max(1, used // 2)
                log.info("out of memory in a chunk of %d items; retrying with chunks of at most %d", len(chunk),
                         self.size)
                release_cached_memory()
                continue
            yield chunk, result
            start += len(chunk)

    def _next_chunk(self, items: Sequence[T], start: int, cost) -> list[T]:
        """Greedy: the next items while their costs fit in `size`; at least one item."""
        if cost is None:
            return list(items[start:start + self.size])
        chunk, used = [], 0
        for item in items[start:]:
            need = cost(item)
            if chunk and used + need > self.size:
                break
            chunk.append(item)
            used += need
        return chunk


def map_chunks(items: Sequence[T], per_chunk: int, run: Callable[[list[T]], R]) -> Iterator[tuple[list[T], R]]:
    """Yield (chunk, run(chunk)) over consecutive chunks of at most per_chunk items, halving on out-of-memory."""
    return Chunker(per_chunk).map(items, run)


def rows_per_call(model, resid: torch.Tensor, n_prompts: int) -> int:
    """Rows (sequences) per block call for sequences shaped like `resid` [B, S, d_model], from free memory and a
    rough per-row working set; at least one row per prompt."""
    cfg, S = model.cfg, resid.shape[1]
    d_mlp = getattr(cfg, "d_mlp", None) or 4 * cfg.d_model
    elem = resid.element_size()
    # residual copies, q/k/v/z, MLP hidden (x3 for gated MLPs), scores + pattern + tiled mask
    per_row = S * (10 * cfg.d_model + 4 * d_mlp + 3 * cfg.n_heads * S + S) * elem
    device = resid.device
    if device.type == "cuda":
        free = torch.cuda.mem_get_info(device)[0]
        rows = int(MEMORY_FRACTION["cuda"] * free) // per_row
    else:
        rows = min(int(MEMORY_FRACTION["cpu"] * _available_ram()) // per_row, CPU_TOKENS_PER_CHUNK // S)
    return max(n_prompts, rows)


def _available_ram() -> int:
    try:
        import psutil

        return int(psutil.virtual_memory().available)
    except ImportError:  # POSIX fallback
        import os

        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
