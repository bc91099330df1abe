"""The analyses, in report order. An explicit list: nothing is discovered by import side effects."""

from analyses.ablations import ABLATIONS_ANALYSIS
from analyses.attention import ATTENTION
from analyses.behaviour import BEHAVIOUR
from analyses.circuit import CIRCUIT
from analyses.common.types import Analysis
from analyses.dla_heads import DLA_HEADS
from analyses.dla_layers import DLA_LAYERS
from analyses.edge_circuits import EDGE_CIRCUITS
from analyses.geometry import GEOMETRY
from analyses.logit_diff import LOGIT_DIFF
from analyses.logit_lens import LOGIT_LENS
from analyses.neurons import NEURONS
from analyses.patching_heads import PATCHING_HEADS
from analyses.patching_positions import PATCHING_POSITIONS
from analyses.path_patching import PATH_PATCHING
from analyses.periodic import PERIODIC
from analyses.successor_heads import SUCCESSOR_HEADS

REGISTRY: tuple[Analysis, ...] = (BEHAVIOUR, LOGIT_DIFF, LOGIT_LENS, DLA_LAYERS, DLA_HEADS, ATTENTION,
                                  PATCHING_POSITIONS, PATCHING_HEADS,
                                  SUCCESSOR_HEADS, ABLATIONS_ANALYSIS, PATH_PATCHING, CIRCUIT,  # the mechanism part
                                  NEURONS, EDGE_CIRCUITS,
                                  GEOMETRY, PERIODIC)  # the representation part
BY_NAME: dict[str, Analysis] = {analysis.name: analysis for analysis in REGISTRY}
