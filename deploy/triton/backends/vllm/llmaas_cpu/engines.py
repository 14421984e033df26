"""The engine interface shared by the CPU engines, and the choice of engine from model.json."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from .sampling import SamplingParams

DETERMINISTIC_MODEL = "llmaas/deterministic"


@dataclass(frozen=True)
class TokenStep:
    """One generated token, as the engine saw it."""

    token_id: int
    # The token's bytes (not text: a UTF-8 character may span tokens). Empty for hidden special tokens.
    piece: bytes
    # True for an end-of-generation token (EOS/EOT); vLLM counts it as an output token but shows no text.
    is_eos: bool = False
    # {token_id: (logprob, rank, decoded_token)} incl. the sampled token; None unless asked for.
    logprobs: dict[int, tuple[float, int, str]] | None = None


class Engine(Protocol):
    name: str
    # Requests generated at the same time; the rest wait in FIFO order (vLLM's max_num_seqs).
    max_concurrency: int
    # Prompt plus output tokens (vLLM's max_model_len).
    max_model_len: int
    # Takes the contract's `image` input (a vision model), and how many prompt tokens each image counts.
    vision: bool
    tokens_per_image: int

    def tokenize(self, prompt: str) -> list[int]: ...

    def generate(self, prompt: str, prompt_ids: list[int], params: SamplingParams,
                 want_logprobs: bool, images: tuple[bytes, ...] = ()) -> Iterator[TokenStep]:
        """Yields tokens until the caller stops iterating (the caller applies stop rules and limits). `images`: the
        image files of a vision model's request (never given to an engine that is not one)."""
        ...

    def close(self) -> None: ...


class EngineConfigError(ValueError):
    """model.json asks for something the CPU backend cannot serve."""


def load_engine(config: dict, model_dir: Path, log) -> Engine:
    """Picks the engine from model.json: the deterministic test engine or llama.cpp for a GGUF file."""
    model = str(config.get("model", ""))
    if model == DETERMINISTIC_MODEL:
        from .deterministic import DeterministicEngine

        return DeterministicEngine.from_config(config)
    # Imported lazily: the deterministic engine must work where llama-cpp-python is not installed.
    from .llama_engine import LlamaEngine

    return LlamaEngine.from_config(config, model_dir, log)
