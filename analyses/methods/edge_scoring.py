"""Edge scores on a family's prompts: EAP and EAP-IG over every edge, and exact patching of chosen edges alone.

EAP (Syed et al. 2023) and EAP-IG (Hanna et al. 2024) estimate, per edge, LD(edge carries its clean value on the
corrupted run) − LD_corrupted; exact patching measures it. The graph and the runs are `analyses.engine`'s. Not an
analysis: `analyses.edge_circuits` reports them.
"""

from __future__ import annotations

import numpy as np
import torch

from analyses import engine as ee
from analyses.methods.mechanism import numpy

STEPS = 5  # EAP-IG interpolation steps (MIB's default for EAP-IG is 5)


def edge_scores(model, es: ee.EdgeSet, clean: torch.Tensor, corrupted: torch.Tensor, pos, neg,
                steps: int = STEPS) -> dict:
    """Mean over prompts of EAP and EAP-IG [U, V] (LD change), EAP-IG per prompt [U, V, B] (a prompt's scores do not
    depend on the other prompts of the batch), the corrupted pair, clean and corrupted LD [B]."""
    pair = ee.make_pair(model, corrupted, clean, pos, neg)  # X = corrupted, Y = clean
    eap, eap_ig = ee.attribution_scores(model, pair, es, steps)
    return {"eap": numpy(eap.mean(-1)), "eap_ig": numpy(eap_ig.mean(-1)), "eap_ig_per_prompt": numpy(eap_ig),
            "pair": pair,
            "clean_ld": numpy(ee.pair_ld(model, pair, twin=True)), "corrupted_ld": numpy(ee.pair_ld(model, pair))}


def exact_edges(model, es: ee.EdgeSet, pair: ee.Pair, edges: list[tuple[int, int]]) -> np.ndarray:
    """[K] mean LD change of patching each edge alone (clean value on the corrupted run)."""
    ld = ee.run_edges(model, pair, es, ee.single_edge_masks(es, edges))
    return numpy(ld.mean(-1) - ee.pair_ld(model, pair).mean())
