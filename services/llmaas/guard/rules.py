"""Rule layers of the prompt guard: structure (hidden characters) and multilingual attack patterns.

Each rule yields a Finding with a stable reason code and a score; the verdict is the highest score. Patterns run on
the comparison form (normalize.py), so full-width, case and zero-width tricks do not evade them.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from llmaas.guard import normalize


@dataclass(frozen=True)
class Finding:
    layer: str
    reason: str
    score: float


_PATTERNS: list[tuple[str, float, re.Pattern[str]]] = [
    ("instruction_override", 0.95, re.compile(
        r"\b(ignore|disregard|forget|override|bypass)\b.{0,40}\b(previous|prior|above|earlier|all|your|the)\b.{0,30}"
        r"\b(instructions?|prompts?|rules|directives|guidelines)\b"
        r"|\b(ignore[sz]?|oublie[sz]?)\b.{0,40}\b(les|tes|vos|toutes)\b.{0,30}\b(instructions?|consignes|règles)\b"
        r"|\bignoriere\b.{0,40}\b(anweisungen|instruktionen|regeln)\b"
        r"|\bignora\b.{0,40}\b(instrucciones|reglas)\b"
        r"|忽略.{0,12}(指令|指示|规则|说明)|无视.{0,12}(指令|规则)"
        r"|(指示|命令|ルール).{0,12}(を)?無視")),
    ("system_prompt_extraction", 0.9, re.compile(
        r"\b(reveal|print|show|repeat|output|leak)\b.{0,30}\b(your|the)\b.{0,20}\b(system prompt|initial prompt|"
        r"hidden instructions|instructions above)\b"
        r"|\b(révèle|affiche|montre|répète)\b.{0,30}\b(ton|votre|le)\b.{0,20}\b(prompt système|prompt systeme|"
        r"instructions initiales)\b"
        r"|(显示|输出|泄露|告诉我).{0,12}(系统提示|系统指令)|システムプロンプト.{0,12}(表示|教えて|出力)")),
    ("role_marker", 0.85, re.compile(r"<\|im_start\|>\s*system|\[/?inst\]|<<sys>>|^\s*###\s*system\s*:", re.M)),
    ("markdown_exfiltration", 0.9, re.compile(r"!?\[[^\]]*\]\(\s*(javascript|data|vbscript):", re.I)),
    ("hidden_html", 0.8, re.compile(r"<(div|span|p)[^>]*(hidden|display\s*:\s*none|caché)[^>]*>", re.I)),
]

_REPEATED_WORD = re.compile(r"\b(\w{3,})(?:\W+\1\b){7,}")


def scan(text: str) -> list[Finding]:
    findings: list[Finding] = []
    if normalize.has_bidi_override(text):
        findings.append(Finding("structure", "bidi_override", 0.8))
    if normalize.has_tag_characters(text):
        findings.append(Finding("structure", "tag_characters", 0.9))
    if normalize.has_invisible_inside_word(text):
        findings.append(Finding("structure", "invisible_in_word", 0.6))
    form = normalize.comparison_form(text)
    for reason, score, pattern in _PATTERNS:
        if pattern.search(form):
            findings.append(Finding("pattern", reason, score))
    if _REPEATED_WORD.search(form):
        findings.append(Finding("pattern", "excessive_repetition", 0.5))
    return findings
