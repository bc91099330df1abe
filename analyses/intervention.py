"""Where the intervention engine used to live: now `analyses.engine` (one engine, one job per module).

Kept as a re-export so that callers written against it keep working; new code imports from `analyses.engine.*`.
"""

from analyses.engine.attribution_sweeps import attribution_sweeps
from analyses.engine.blocks import capture_block_args as _capture_block_args
from analyses.engine.blocks import run_block as _block
from analyses.engine.chunks import CPU_TOKENS_PER_CHUNK, MEMORY_FRACTION, map_chunks
from analyses.engine.chunks import rows_per_call as _chunk_rows
from analyses.engine.prefixes import run_rows_sharing_prefixes
from analyses.engine.readout import final_answer_logits, final_logit_diff, final_logits
from analyses.engine.rows import Base, Edit, Row, collect_base, looped_rows, map_rows, run_rows
from analyses.engine.sweep_runs import run_sweeps, sweep_results
from analyses.engine.sweeps import (
    HEAD_SWEEPS,
    POSITION_SWEEPS,
    SWEEPS,
    Patch,
    Runs,
    Sweep,
    auto_chunk_rows,
    collect_runs,
    exact_sweeps,
    hook_name,
    looped_sweep,
    patch_everything,
    patch_row,
    patched_logit_diffs,
    sweep_patches,
)

__all__ = [
    "CPU_TOKENS_PER_CHUNK", "HEAD_SWEEPS", "MEMORY_FRACTION", "POSITION_SWEEPS", "SWEEPS", "Base", "Edit", "Patch",
    "Row", "Runs", "Sweep", "_block", "_capture_block_args", "_chunk_rows", "attribution_sweeps", "auto_chunk_rows",
    "collect_base", "collect_runs", "exact_sweeps", "final_answer_logits", "final_logit_diff", "final_logits",
    "hook_name", "looped_rows", "looped_sweep", "map_chunks", "map_rows", "patch_everything", "patch_row",
    "patched_logit_diffs", "run_rows", "run_rows_sharing_prefixes", "run_sweeps", "sweep_patches", "sweep_results",
]
