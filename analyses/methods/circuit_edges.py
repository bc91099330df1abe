"""The circuit diagram's edges: path-patching weights from each circuit head to later circuit nodes and the logits.

Not an analysis: `analyses.circuit` draws them. Path patching is `analyses.methods.paths`; the effects are the
family's shared ones (`analyses.methods.shared.path_effects`), so a sender `path_patching` followed is not run again.
"""

from __future__ import annotations

from analyses.common import thresholds
from analyses.common.types import FamilyContext, PromptSet
from analyses.methods import paths, shared
from analyses.methods.mechanism import node_name, numpy


def circuit_edges(ctx: FamilyContext, prompts: PromptSet, circuit) -> tuple[list[float], list[str], list[str]]:
    """Path-patching weight of each edge from a circuit head to a later circuit node or the logits (fraction of the
    clean − corrupted gap; raw LD change when the gap is not informative). None on a model without resid_mid
    (parallel attention and MLP), where paths cannot be measured: the diagram then shows nodes only. A sender that
    `path_patching` already followed is not followed again (the family's shared path effects)."""
    model = ctx.model
    senders = [(layer, head) for kind, layer, head in circuit if kind == "head"]
    if not senders or paths.without_resid_mid(model):
        return [], [], []
    ps = shared.path_setup(ctx, prompts)
    effects = {k: numpy(v.mean(-1)) for k, v in shared.path_effects(ctx, prompts, senders).items()}
    ok = thresholds.informative_gap(numpy(ps.clean_ld), numpy(ps.corrupted_ld)).informative
    scale = float((ps.clean_ld - ps.corrupted_ld).mean()) if ok else 1.0
    kv = model.cfg.n_heads // effects["v"].shape[2]
    weights, out_s, out_r = [], [], []
    for k, (layer, head) in enumerate(senders):
        targets = [("logits", effects["logits"][k])]
        for kind, rl, rh in circuit:
            if kind == "head" and rl > layer:
                values = [effects["q"][k, rl, rh], effects["k"][k, rl, rh // kv], effects["v"][k, rl, rh // kv]]
                targets.append((node_name((kind, rl, rh)), max(values, key=abs)))
            elif kind == "mlp" and rl >= layer:
                targets.append((node_name((kind, rl, rh)), effects["mlp"][k, rl]))
        for name, value in targets:
            weights.append(float(value) / scale)
            out_s.append(node_name(("head", layer, head)))
            out_r.append(name)
    return weights, out_s, out_r
