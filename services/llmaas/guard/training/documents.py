"""Documents and tool results for the evaluation: the benign BIPIA contexts as they are, and each held-out injected
instruction inserted into one held-out context at the start, in the middle or at the end (as the BIPIA benchmark
does). Training needs no such documents: the document head learns from document pieces and instructions directly.
An instruction is only an attack inside third-party text, so injected instructions are never used as user prompts."""

from __future__ import annotations

import random

from llmaas.guard.training.corpus import Sample, relabel

SEED = 77


def inject(document: str, instruction: str, where: str) -> str:
    if where == "start":
        return f"{instruction}\n\n{document}"
    if where == "end":
        return f"{document}\n\n{instruction}"
    lines = document.split("\n")
    middle = len(lines) // 2
    return "\n".join([*lines[:middle], "", instruction, "", *lines[middle:]])


def samples(base: list[Sample]) -> list[Sample]:
    rng = random.Random(SEED)
    docs = [s for s in base if s.kind == "document"]
    out = list(docs)
    for instruction in (s for s in base if s.kind == "injected-instruction" and s.split == "test"):
        hosts = [d for d in docs if d.split == "test" and ("code" in d.source) == ("code" in instruction.source)]
        text = inject(rng.choice(hosts or docs).text, instruction.text, rng.choice(("start", "middle", "end")))
        out.append(relabel(instruction, text=text, kind="document"))
    return out
