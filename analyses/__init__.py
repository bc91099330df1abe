"""The analyses, in report order. An explicit list: nothing is discovered by import side effects."""

from analyses.attention import ATTENTION
from analyses.behaviour import BEHAVIOUR
from analyses.dla_heads import DLA_HEADS
from analyses.dla_layers import DLA_LAYERS
from analyses.logit_diff import LOGIT_DIFF
from analyses.logit_lens import LOGIT_LENS
from analyses.types import Analysis

REGISTRY: tuple[Analysis, ...] = (BEHAVIOUR, LOGIT_DIFF, LOGIT_LENS, DLA_LAYERS, DLA_HEADS, ATTENTION)
BY_NAME: dict[str, Analysis] = {analysis.name: analysis for analysis in REGISTRY}
