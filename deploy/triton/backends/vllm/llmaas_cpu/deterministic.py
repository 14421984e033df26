"""The deterministic engine the tests run behind the real tensor contract: instant, reproducible, and honest
about its own token counts.

Tokenizer: `TOKEN_RE` splits text into tokens that concatenate back to the text exactly: a run of word characters
or a single other non-space character, each with the whitespace before it; trailing whitespace is one more token.
Token ids are a CRC32 of the token text (ids 0..2 are reserved, 2 is EOS).

Reply: `reply_for(prompt)` = "Echo:" followed by the last `echo_words` words of the prompt, after chat-template
markers such as `<|im_start|>assistant` are removed (or "Echo: nothing" if there are none). The engine streams the
reply one token at a time, then an EOS token (no text, but counted, like vLLM counts EOS); with ignore_eos or
min_tokens it starts the reply again. Sampling parameters that add randomness are accepted and have no effect.

Reasoning mode (model.json `"reasoning": true`, a reasoning model's contract): the reply first thinks,
`<think>\n...\n</think>\n\n` (`reasoning_for(effort)`), then answers as above. The effort is what a reasoning model's
chat template writes at the top of the prompt, `Reasoning: low|medium|high` on the system message's first line (as
gpt-oss's template does with `reasoning_effort`), so it reaches the engine through `text_input` like any model's; it
sets how many steps the thinking takes (medium without one).

Vision mode (model.json `"vision": true`): takes the contract's `image` input, and the reply first says what it saw,
`Images: 1000x560; placeholders: 1. `, before answering as above; each image counts VISION_TOKENS_PER_IMAGE prompt
tokens.
"""

from __future__ import annotations

import re
import time
import zlib
from collections.abc import Iterator
from dataclasses import dataclass

from .engines import TokenStep
from .sampling import SamplingError, SamplingParams

TOKEN_RE = re.compile(r"\s*\w+|\s*[^\w\s]|\s+")
# Special markers of the common chat templates, with the role name that follows them.
MARKER_RE = re.compile(r"<\|[^|<>]*\|>(?:\s*(?:system|user|assistant|tool|developer|ipython)\b)?")
WORD_RE = re.compile(r"\w+")
# The effort line a reasoning template writes first (after the system message's chat marker): never a user's text.
EFFORT_RE = re.compile(r"\A\s*(?:<\|[^|<>]*\|>\s*(?:system|developer)\s*)?Reasoning:[ \t]*(\w+)")
REASONING_STEPS = {"low": 2, "medium": 6, "high": 18}
DEFAULT_EFFORT = "medium"
# Vision mode (model.json `"vision": true`): the placeholder its chat template writes for each image part, and the
# prompt tokens each image counts (a fixed number, as a vision encoder's patches are).
IMAGE_PLACEHOLDER = "<image>"
VISION_TOKENS_PER_IMAGE = 64
EOS_ID = 2
VOCAB_SIZE = 32000


def tokenize_text(text: str) -> list[str]:
    return TOKEN_RE.findall(text)


def token_id(token: str) -> int:
    return 3 + zlib.crc32(token.encode("utf-8")) % (VOCAB_SIZE - 3)


def reply_for(prompt: str, echo_words: int = 8) -> str:
    words = WORD_RE.findall(MARKER_RE.sub(" ", prompt))[-echo_words:] if echo_words > 0 else []
    return "Echo: " + (" ".join(words) if words else "nothing")


def images_seen(images: tuple[bytes, ...], prompt: str) -> str:
    """What vision mode says first: each image's size, and how many image placeholders the chat template wrote (the
    tests check that the images and the prompt agree)."""
    from io import BytesIO

    from PIL import Image

    sizes = []
    for data in images:
        with Image.open(BytesIO(data)) as image:
            sizes.append(f"{image.size[0]}x{image.size[1]}")
    return f"Images: {', '.join(sizes)}; placeholders: {prompt.count(IMAGE_PLACEHOLDER)}. "


def effort_of(prompt: str) -> str:
    match = EFFORT_RE.match(prompt)
    return match.group(1) if match else DEFAULT_EFFORT


def reasoning_for(effort: str = DEFAULT_EFFORT) -> str:
    """The thinking a reasoning-mode reply starts with (its end marker and the blank line after it included)."""
    steps = REASONING_STEPS.get(effort)
    if steps is None:
        raise SamplingError(f"reasoning effort {effort!r} is not one of {sorted(REASONING_STEPS)}")
    return "<think>\nThe user wants their last words echoed." + "".join(f" Step {i}." for i in range(1, steps + 1)) \
        + "\n</think>\n\n"


@dataclass
class DeterministicEngine:
    name: str = "deterministic"
    max_concurrency: int = 64
    max_model_len: int = 4096
    echo_words: int = 8
    token_delay_s: float = 0.0
    reasoning: bool = False
    vision: bool = False
    tokens_per_image: int = 0

    @classmethod
    def from_config(cls, config: dict) -> DeterministicEngine:
        return cls(
            max_concurrency=int(config.get("max_num_seqs", 64)),
            max_model_len=int(config.get("max_model_len", 4096)),
            echo_words=int(config.get("echo_words", 8)),
            token_delay_s=float(config.get("token_delay_ms", 0)) / 1000.0,
            reasoning=bool(config.get("reasoning", False)),
            vision=bool(config.get("vision", False)),
            tokens_per_image=VISION_TOKENS_PER_IMAGE if config.get("vision") else 0,
        )

    def tokenize(self, prompt: str) -> list[int]:
        return [token_id(t) for t in tokenize_text(prompt)]

    def generate(self, prompt: str, prompt_ids: list[int], params: SamplingParams,
                 want_logprobs: bool, images: tuple[bytes, ...] = ()) -> Iterator[TokenStep]:
        if params.guided:
            # Its canned reply cannot follow a schema: refused, never a silent free-text answer.
            raise SamplingError("guided_decoding is not supported by the deterministic test engine")
        if params.logit_bias:
            # Nor can it favour or ban tokens.
            raise SamplingError("sampling parameter 'logit_bias' cannot be applied by the deterministic test engine")
        reply = tokenize_text((reasoning_for(effort_of(prompt)) if self.reasoning else "")
                              + (images_seen(images, prompt) if images else "")
                              + reply_for(prompt, self.echo_words))
        produced = 0
        while True:
            for token in reply:
                yield self._step(token_id(token), token, False, want_logprobs)
                produced += 1
            # Like vLLM's min_tokens logits processor: EOS cannot be sampled before min_tokens are out.
            if produced >= params.min_tokens:
                yield self._step(EOS_ID, "", True, want_logprobs)
                produced += 1

    def _step(self, tid: int, text: str, eos: bool, want_logprobs: bool) -> TokenStep:
        if self.token_delay_s:
            time.sleep(self.token_delay_s)
        # Every token is certain: logprob 0, rank 1. vLLM shows special tokens as "" in logprobs too.
        logprobs = {tid: (0.0, 1, text)} if want_logprobs else None
        return TokenStep(tid, text.encode("utf-8"), eos, logprobs)

    def close(self) -> None:
        pass
