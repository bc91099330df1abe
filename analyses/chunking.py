"""Run a batched computation in chunks, halving the chunk and retrying when the device runs out of memory.

Chunk sizes start from an estimate of free memory (`intervention.auto_chunk_rows`); the estimate is rough
(allocator fragmentation, other processes on the GPU), so an out-of-memory error in one chunk is not the end
of the run: the cached blocks are released, the chunk is halved and the same items are tried again. Only a
chunk of one item that still does not fit re-raises.
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


def release_cached_memory() -> None:
    """Give the blocks PyTorch's caching allocator holds back to the device (after an OOM, between models)."""
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def map_chunks(items: Sequence[T], per_chunk: int, run: Callable[[list[T]], R]) -> Iterator[tuple[list[T], R]]:
    """Yield (chunk, run(chunk)) over consecutive chunks of at most per_chunk items, halving on out-of-memory."""
    per_chunk = max(1, int(per_chunk))
    start = 0
    while start < len(items):
        chunk = list(items[start:start + per_chunk])
        try:
            result = run(chunk)
        except OUT_OF_MEMORY:
            if len(chunk) == 1:
                raise
            per_chunk = max(1, len(chunk) // 2)
            log.info("out of memory in a chunk of %d; retrying in chunks of %d", len(chunk), per_chunk)
            release_cached_memory()
            continue
        yield chunk, result
        start += len(chunk)
