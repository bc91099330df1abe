"""The analyses, in report order. An explicit list: nothing is discovered by import side effects."""

from analyses.attention import ATTENTION
from analyses.behaviour import BEHAVIOUR
from analyses.dla_heads import DLA_HEADS
from analyses.dla_layers import DLA_LAYERS
from analyses.geometry import GEOMETRY
from analyses.logit_diff import LOGIT_DIFF
from analyses.logit_lens import LOGIT_LENS
from analyses.patching_heads import PATCHING_HEADS
from analyses.patching_positions import PATCHING_POSITIONS
from analyses.types import Analysis

REGISTRY: tuple[Analysis, ...] = (BEHAVIOUR, LOGIT_DIFF, LOGIT_LENS, DLA_LAYERS, DLA_HEADS, ATTENTION,
                                  PATCHING_POSITIONS, PATCHING_HEADS, GEOMETRY)
BY_NAME: dict[str, Analysis] = {analysis.name: analysis for analysis in REGISTRY}
