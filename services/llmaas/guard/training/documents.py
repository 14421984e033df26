"""Documents and tool results: the benign BIPIA contexts as they are, and with an injected instruction inserted at
the start, in the middle or at the end (as the BIPIA benchmark does). An instruction is only an attack inside third
party text, so the injected instructions are never used as user prompts."""

from __future__ import annotations

import random

from llmaas.guard.training.corpus import Sample, relabel

SEED = 77
HOSTS_PER_TRAIN_INSTRUCTION = 3


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
    for instruction in (s for s in base if s.kind == "injected-instruction"):
        hosts = [d for d in docs if d.split == instruction.split and
                 ("code" in d.source) == ("code" in instruction.source)] or docs
        count = HOSTS_PER_TRAIN_INSTRUCTION if instruction.split == "train" else 1
        for host in rng.sample(hosts, k=min(count, len(hosts))):
            text = inject(host.text, instruction.text, rng.choice(("start", "middle", "end")))
            out.append(relabel(instruction, text=text, kind="document"))
    return out
