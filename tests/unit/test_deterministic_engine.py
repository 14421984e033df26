"""The deterministic engine, the vLLM stop/delta logic and sampling-parameter parsing, without Triton."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "deploy" / "triton" / "backends" / "vllm"))

from llmaas_cpu.deterministic import EOS_ID, DeterministicEngine, reply_for, tokenize_text  # noqa: E402
from llmaas_cpu.engines import TokenStep  # noqa: E402
from llmaas_cpu.sampling import SamplingError, SamplingParams, parse_sampling_parameters  # noqa: E402
from llmaas_cpu.sequence import Sequence  # noqa: E402

CHAT = "<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nTell me about the blue sea!<|im_end|>\n" \
       "<|im_start|>assistant\n"


def run(prompt: str, params: SamplingParams, engine: DeterministicEngine | None = None):
    """Drives the engine like model.py does; returns (deltas, sequence)."""
    engine = engine or DeterministicEngine()
    ids = engine.tokenize(prompt)
    seq = Sequence(params, min(params.max_tokens, engine.max_model_len - len(ids)), keep_logprobs=True)
    deltas = []
    for step in engine.generate(prompt, ids, params, want_logprobs=params.logprobs is not None):
        deltas.append(seq.add(step))
        if seq.finished:
            break
    return deltas, seq


def test_tokenizer_is_lossless_and_counts_words_and_punctuation():
    text = "Hello,  world! It's 42 °C\n\tok  "
    tokens = tokenize_text(text)
    assert "".join(tokens) == text
    assert tokens == ["Hello", ",", "  world", "!", " It", "'", "s", " 42", " °", "C", "\n\tok", "  "]
    assert len(DeterministicEngine().tokenize(text)) == len(tokens)


def test_reply_echoes_last_words_without_chat_markers():
    assert reply_for(CHAT) == "Echo: Be brief Tell me about the blue sea"
    assert reply_for(CHAT, echo_words=3) == "Echo: the blue sea"
    assert reply_for("<|im_start|>assistant\n") == "Echo: nothing"


def test_streams_one_token_per_delta_then_eos():
    deltas, seq = run(CHAT, SamplingParams(max_tokens=100))
    reply = reply_for(CHAT)
    assert "".join(d.text for d in deltas) == reply == seq.text
    assert [d.text for d in deltas[:-1]] == tokenize_text(reply)
    # vLLM counts the EOS token: one more output token than visible text tokens, with empty text.
    assert len(deltas) == len(tokenize_text(reply)) + 1
    assert deltas[-1].text == "" and deltas[-1].finish_reason == "stop"
    assert all(d.finish_reason is None for d in deltas[:-1])
    assert all(d.num_tokens == 1 for d in deltas) and seq.token_ids[-1] == EOS_ID


def test_max_tokens_finishes_with_length():
    deltas, seq = run(CHAT, SamplingParams(max_tokens=3))
    assert len(deltas) == 3 and deltas[-1].finish_reason == "length"
    assert seq.text == "".join(tokenize_text(reply_for(CHAT))[:3]) == "Echo: Be"


def test_default_max_tokens_is_vllms_16():
    deltas, _ = run("one two three four five six seven eight nine ten", SamplingParams(max_tokens=16, ignore_eos=True))
    assert SamplingParams().max_tokens == 16 and len(deltas) == 16


def test_stop_string_is_cut_and_never_half_streamed():
    params = parse_sampling_parameters('{"stop": ["blue s", "zzz"], "max_tokens": 50}')
    deltas, seq = run(CHAT, params)
    assert seq.finish_reason == "stop" and deltas[-1].finish_reason == "stop"
    assert seq.text == "Echo: Be brief Tell me about the "
    assert "".join(d.text for d in deltas) == seq.text
    # Holdback: nothing sent may end inside a (possible) stop string.
    sent = ""
    for d in deltas[:-1]:
        sent += d.text
        assert "blue" not in sent


def test_stop_string_included_when_asked():
    params = parse_sampling_parameters('{"stop": "blue", "include_stop_str_in_output": true, "max_tokens": 50}')
    _, seq = run(CHAT, params)
    assert seq.text.endswith("the blue") and seq.finish_reason == "stop"


def test_stop_token_ids_and_ignore_eos_and_min_tokens():
    engine = DeterministicEngine()
    reply_len = len(tokenize_text(reply_for(CHAT)))
    first_id = engine.tokenize(reply_for(CHAT))[2]
    _, seq = run(CHAT, SamplingParams(max_tokens=50, stop_token_ids=(first_id,)))
    assert seq.finish_reason == "stop" and len(seq.token_ids) == 3 and seq.text == "Echo:"
    # ignore_eos: the reply repeats, EOS tokens are counted but invisible.
    _, seq = run(CHAT, SamplingParams(max_tokens=2 * reply_len + 2, ignore_eos=True))
    assert seq.finish_reason == "length" and seq.text == reply_for(CHAT) * 2 and seq.token_ids.count(EOS_ID) == 2
    # min_tokens: EOS is suppressed until min_tokens are out, then the reply ends normally.
    _, seq = run(CHAT, SamplingParams(max_tokens=100, min_tokens=reply_len + 3))
    assert seq.finish_reason == "stop" and seq.text == reply_for(CHAT) * 2 and EOS_ID not in seq.token_ids[:-1]


def test_context_window_caps_output():
    engine = DeterministicEngine(max_model_len=12)
    prompt = "a b c d e f g h i j"  # 10 tokens: room for 2
    deltas, seq = run(prompt, SamplingParams(max_tokens=100, ignore_eos=True), engine)
    assert len(deltas) == 2 and seq.finish_reason == "length"


def test_logprobs_are_certain():
    deltas, seq = run(CHAT, SamplingParams(max_tokens=4, logprobs=1))
    assert len(seq.logprobs) == 4 and seq.cumulative_logprob == 0.0
    first = deltas[0].logprobs[0]
    (tid, entry), = first.items()
    assert entry == {"logprob": 0.0, "rank": 1, "decoded_token": "Echo"} and tid == seq.token_ids[0]


def test_utf8_split_across_tokens_is_reassembled():
    euro = "€".encode()
    steps = [TokenStep(10, euro[:1]), TokenStep(11, euro[1:]), TokenStep(12, b"!"), TokenStep(2, b"", True)]
    seq = Sequence(SamplingParams(max_tokens=10), 10)
    deltas = [seq.add(s) for s in steps]
    assert [d.text for d in deltas] == ["", "€", "!", ""] and seq.finish_reason == "stop"


def test_token_delay_knob():
    engine = DeterministicEngine.from_config({"model": "llmaas/deterministic", "token_delay_ms": 5, "echo_words": 2,
                                              "max_num_seqs": 3})
    assert engine.token_delay_s == 0.005 and engine.echo_words == 2 and engine.max_concurrency == 3


@pytest.mark.parametrize("raw, fragment", [
    ('{"max_tokens": 5, "foo": 1}', "'foo'"),
    ("{not json", "not valid JSON"),
    ("[1, 2]", "JSON object"),
    ('{"max_tokens": 0}', "max_tokens"),
    ('{"temperature": -1}', "temperature"),
    ('{"top_p": 0}', "top_p"),
    ('{"n": 2}', "n > 1"),
    ('{"stop": ["ok", ""]}', "empty string"),
    ('{"max_tokens": "many"}', "integer"),
    ('{"guided_decoding": {"regex": "a+"}}', "not supported"),
    ('{"lora_name": "x"}', "LoRA"),
    ('{"logit_bias": [1, 2]}', "logit_bias"),
    ('{"logit_bias": {"x": 1}}', "logit_bias"),
    ('{"logit_bias": {"-3": 1}}', "logit_bias"),
    ('{"logit_bias": {"3": "a"}}', "logit_bias"),
    ('{"logit_bias": {"3": true}}', "logit_bias"),
])
def test_invalid_sampling_parameters(raw, fragment):
    with pytest.raises(SamplingError) as info:
        parse_sampling_parameters(raw)
    assert fragment in str(info.value)


def test_sampling_parameters_coercion_and_defaults():
    p = parse_sampling_parameters('{"temperature": "0.5", "top_p": 0.9, "max_tokens": "7", "top_k": null, '
                                  '"stop": "END", "seed": 3, "ignore_eos": "true", "logit_bias": {"1": 2}}')
    assert (p.temperature, p.top_p, p.max_tokens, p.top_k, p.stop, p.seed, p.ignore_eos) == \
           (0.5, 0.9, 7, -1, ("END",), 3, True)
    assert p.logit_bias == ((1, 2.0),) and p.ignored == ()
    # vLLM's clamp to [-100, 100]; integer keys as well as JSON's string keys.
    assert parse_sampling_parameters('{"logit_bias": {"7": -500, "3": 1e9}}').logit_bias == ((3, 100.0), (7, -100.0))
    assert parse_sampling_parameters(None) == parse_sampling_parameters("{}") == SamplingParams()
    assert parse_sampling_parameters('{"temperature": 0}').greedy
