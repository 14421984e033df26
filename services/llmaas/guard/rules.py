"""The rule layers of the prompt guard over one piece of text: structure, patterns, encoded payloads.

Each rule yields a Finding with its layer, a stable reason code and a score. Patterns run on the comparison form
(normalize.py), so full-width, case, accent, homoglyph, leetspeak and zero-width tricks do not evade them; decoded
payloads are scanned with the same patterns.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from llmaas.guard import encoded, features, normalize, patterns, structure


@dataclass(frozen=True)
class Finding:
    layer: str
    reason: str
    score: float


@dataclass
class Analysis:
    findings: list[Finding] = field(default_factory=list)
    # Comparison forms of the text and of every decoded payload, for the learned layer.
    forms: list[str] = field(default_factory=list)
    # A document's paragraphs, in comparison form (an injected instruction is a paragraph among honest ones).
    pieces: list[str] = field(default_factory=list)


def _pattern_findings(form: str, document: bool, layer: str = "pattern", prefix: str = "") -> list[Finding]:
    return [Finding(layer, prefix + hit.reason, hit.score) for hit in patterns.scan(form, document=document)]


def analyse(text: str, *, document: bool = False, prepared: normalize.Prepared | None = None) -> Analysis:
    """`document`: the text comes from a third party (a tool result, a retrieved document), not the user. prepared:
    normalize.prepare(text), when the caller has it (the service's behavioural layer needs the form too)."""
    # The text's non-ASCII characters, listed once (when few) for every layer's questions about them.
    chars, form = prepared or normalize.prepare(text)
    findings = [Finding("structure", reason, score) for reason, score in structure.findings(text, chars=chars)]
    findings += _pattern_findings(form, document)
    forms = [form]
    hidden = normalize.hidden_tag_text(text) if normalize.has_droppable(text, chars) else ""
    payloads = ([("tag", hidden)] if hidden else []) + encoded.decoded_payloads(text, chars)
    for encoding, decoded in payloads:
        decoded_form = normalize.comparison_form(decoded)
        # Only what the plain text did not already show (rot13 keeps repetitions, for one).
        seen = {f.reason for f in findings}
        hits = [f for f in _pattern_findings(decoded_form, document, "encoding", f"{encoding}_")
                if f.reason.removeprefix(f"{encoding}_") not in seen]
        findings += hits
        if encoding != "rot13" or hits:  # rot13 of honest text is noise for the classifier
            forms.append(decoded_form)
    pieces = [normalize.comparison_form(p) for p in features.segments(text)] if document else []
    return Analysis(findings, forms, pieces)


def scan(text: str, *, document: bool = False) -> list[Finding]:
    return analyse(text, document=document).findings
