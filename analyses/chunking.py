"""Where chunking used to live: now `analyses.engine.chunks` (kept as a re-export for callers written against it)."""

from analyses.engine.chunks import OUT_OF_MEMORY, Chunker, map_chunks, release_cached_memory

__all__ = ["OUT_OF_MEMORY", "Chunker", "map_chunks", "release_cached_memory"]
