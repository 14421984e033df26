"""The installed llama.cpp: built for the portable baseline by deploy/llama-cpp.sh, honestly keyed, and able to run
the default model on a chat-length prompt in a plain Python process (no Triton).

What this guards against: llama-cpp-python's default `-march=native` build (GGML_NATIVE) crashed with a general
protection fault on an AVX-512/AMX Xeon on every chat-length prompt.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from llmaas.stack.paths import REPO_ROOT

from tests.e2e.test_default_model import default_gguf, render_default_prompt, support_messages

pytestmark = [pytest.mark.integration, pytest.mark.timeout(300)]

llama_cpp = pytest.importorskip("llama_cpp")

VENV = Path(sys.prefix)
SCRIPT = REPO_ROOT / "deploy" / "llama-cpp.sh"
# Features the baseline never compiles in (ggml's names in llama_print_system_info).
FORBIDDEN = re.compile(r"^(AVX512.*|AVX_VNNI|AMX.*)$")
# ggml feature name -> /proc/cpuinfo flag: compiled in whenever this CPU has the whole x86-64-v3 set.
V3 = {"AVX": "avx", "AVX2": "avx2", "FMA": "fma", "F16C": "f16c", "BMI2": "bmi2", "SSE42": "sse4_2"}


def _system_features() -> dict[str, str]:
    """`CPU : SSE3 = 1 | AVX = 1 | ... |` (one section per backend) -> {"SSE3": "1", "AVX": "1", ...}."""
    info = llama_cpp.llama_print_system_info().decode()
    features = dict(re.findall(r"([A-Z][A-Z0-9_]*) = (\w+)", info))
    assert features, f"unexpected system info format: {info!r}"
    return features


def _cpu_flags() -> set[str]:
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("flags"):
            return set(line.partition(":")[2].split())
    return set()


@pytest.mark.skipif(os.uname().machine != "x86_64", reason="the baseline's feature set is x86-64's")
def test_built_for_the_portable_baseline():
    features = _system_features()
    info = llama_cpp.llama_print_system_info().decode()
    compiled = {name for name, value in features.items() if value == "1"}
    assert not {name for name in compiled if FORBIDDEN.match(name)}, info
    flags = _cpu_flags()
    if all(flag in flags for flag in V3.values()):
        for name in ("AVX", "AVX2", "FMA", "F16C"):
            assert name in compiled, f"{name} should be compiled in on this CPU: {info}"
        # BMI2 and SSE4.2 are listed only by ggml versions that report them; when listed they must be on.
        for name in ("BMI2", "SSE42"):
            assert features.get(name, "1") == "1", info


def _print_key(**env: str) -> str:
    out = subprocess.run(["bash", str(SCRIPT), "--print-key", str(VENV)], capture_output=True, text=True,
                         timeout=60, check=True, env={**os.environ, **env})
    key = out.stdout.strip()
    assert re.fullmatch(r"[0-9a-f]{16}", key), out.stdout + out.stderr
    return key


def test_installed_build_key_matches_the_script():
    marker = VENV / ".llama-cpp-build"
    assert marker.is_file(), "llama-cpp-python was not installed by deploy/llama-cpp.sh"
    assert _print_key() == marker.read_text().strip()


def test_a_changed_build_setting_changes_the_key():
    """pip's wheel cache keys on the version only; ours must change with the flags, so that they really rebuild."""
    baseline = _print_key(LLMAAS_LLAMA_CMAKE_ARGS="")
    native = _print_key(LLMAAS_LLAMA_CMAKE_ARGS="-DGGML_NATIVE=ON")
    assert native != baseline
    assert _print_key(LLMAAS_LLAMA_CMAKE_ARGS="-DGGML_NATIVE=ON") == native  # and it is stable


# Loads the default model as the CPU backend does (llama_engine.py) and runs one request after another on the same
# context, as Triton's model instance does: the first evaluates the whole prompt, the next ones reuse the system
# prompt's KV cache and evaluate the rest. Arguments as JSON on stdin; prints JSON.
_GENERATE = """
import json, sys
import llama_cpp

args = json.loads(sys.stdin.read())
llm = llama_cpp.Llama(model_path=args["gguf"], n_ctx=4096, n_threads=2, n_threads_batch=2, verbose=False)
results = []
for prompt in args["prompts"]:
    ids = llm.tokenize(prompt.encode(), add_bos=True, special=True)
    out = []
    for tid in llm.generate(ids, temp=0.0, top_k=0, top_p=1.0, min_p=0.0, typical_p=1.0, repeat_penalty=1.0):
        if llama_cpp.llama_vocab_is_eog(llm._model.vocab, tid) or len(out) == args["max_tokens"]:
            break
        out.append(int(tid))
    results.append({"prompt_tokens": len(ids), "tokens": len(out),
                    "text": llm.detokenize(out).decode("utf-8", errors="replace")})
print(json.dumps(results))
"""


def test_default_model_generates_on_a_chat_length_prompt():
    questions = ["Could you summarise this for me? What do I need to do?",
                 "How long do I have to report damage that I only find after unpacking?",
                 "Is the refund paid in cash?"]
    prompts = [render_default_prompt(support_messages(q)) for q in questions]
    args = {"gguf": str(default_gguf()), "prompts": prompts, "max_tokens": 48}
    # In a child process: a crash (SIGSEGV, SIGILL) fails this test with the signal instead of killing pytest.
    proc = subprocess.run([sys.executable, "-X", "faulthandler", "-c", _GENERATE], input=json.dumps(args),
                          capture_output=True, text=True, timeout=240, cwd=REPO_ROOT)
    if proc.returncode < 0:
        pytest.fail(f"llama.cpp died with {signal.Signals(-proc.returncode).name} on a chat prompt of "
                    f"{len(prompts[0])} characters:\n{proc.stderr[-3000:]}")
    assert proc.returncode == 0, proc.stderr[-3000:]
    results = json.loads(proc.stdout.strip().splitlines()[-1])
    assert len(results) == len(prompts)
    for result in results:
        assert result["prompt_tokens"] >= 250, result
        assert result["tokens"] >= 3 and result["text"].strip(), result


def _until_end(engine, prompt: str, sampling: str, limit: int = 64) -> list:
    """The CPU backend's engine (llama_engine.py) on the default model: its steps up to the first end of generation."""
    sys.path.insert(0, str(REPO_ROOT / "deploy" / "triton" / "backends" / "vllm"))
    from llmaas_cpu.sampling import parse_sampling_parameters  # noqa: PLC0415

    steps = []
    for step in engine.generate(prompt, engine.tokenize(prompt), parse_sampling_parameters(sampling), False):
        steps.append(step)
        if step.is_eos or len(steps) == limit:
            return steps
    return steps


def test_the_engine_honours_min_tokens():
    """vLLM's min_tokens: no end of generation before min_tokens are out (a logits processor on llama.cpp)."""
    sys.path.insert(0, str(REPO_ROOT / "deploy" / "triton" / "backends" / "vllm"))
    from llmaas_cpu.llama_engine import LlamaEngine  # noqa: PLC0415

    engine = LlamaEngine(default_gguf(), 1024, 2, None)
    try:
        prompt = render_default_prompt([{"role": "user", "content": "Reply with just the word OK."}])
        short = _until_end(engine, prompt, '{"temperature": 0, "seed": 1}')
        assert short[-1].is_eos and len(short) < 40, [s.piece for s in short]
        wanted = len(short) + 10  # the greedy answer's end, ten tokens too early
        sampling = f'{{"temperature": 0, "seed": 1, "min_tokens": {wanted}, "max_tokens": 96}}'
        longer = _until_end(engine, prompt, sampling, limit=96)
        assert not any(s.is_eos for s in longer[:wanted]) and len(longer) > wanted
        assert [s.token_id for s in longer[:len(short) - 1]] == [s.token_id for s in short[:-1]]  # same start
    finally:
        engine.close()
