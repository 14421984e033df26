"""llmaas's CPU stand-in for Triton's vLLM backend (a Python-based backend named `vllm`).

It declares the same inputs and outputs as triton-inference-server/vllm_backend, is decoupled like it, reads the
same `model.json`, and answers with the same response sequence, so a production model repository and this one are
interchangeable. Generation itself is done by a small CPU engine (llama.cpp, or the deterministic engine that the
tests select through their model.json).
Never log prompt or completion text here.
"""

from __future__ import annotations

import base64
import json
import os
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import triton_python_backend_utils as pb_utils

# The stub already puts the backend directory on sys.path; do not rely on it for our own package.
_BACKEND_DIR = os.path.dirname(os.path.abspath(__file__))
if _BACKEND_DIR not in sys.path:
    sys.path.insert(0, _BACKEND_DIR)

from llmaas_cpu.engines import load_engine  # noqa: E402
from llmaas_cpu.sampling import SamplingError, SamplingParams, parse_sampling_parameters  # noqa: E402
from llmaas_cpu.sequence import Sequence  # noqa: E402

_MODEL_JSON = "model.json"
_INPUTS = [
    {"name": "text_input", "data_type": "TYPE_STRING", "dims": [1]},
    {"name": "image", "data_type": "TYPE_STRING", "dims": [-1], "optional": True},
    {"name": "stream", "data_type": "TYPE_BOOL", "dims": [1], "optional": True},
    {"name": "sampling_parameters", "data_type": "TYPE_STRING", "dims": [1], "optional": True},
    {"name": "exclude_input_in_output", "data_type": "TYPE_BOOL", "dims": [1], "optional": True},
    {"name": "return_finish_reason", "data_type": "TYPE_BOOL", "dims": [1], "optional": True},
    {"name": "return_cumulative_logprob", "data_type": "TYPE_BOOL", "dims": [1], "optional": True},
    {"name": "return_logprobs", "data_type": "TYPE_BOOL", "dims": [1], "optional": True},
    {"name": "return_num_input_tokens", "data_type": "TYPE_BOOL", "dims": [1], "optional": True},
    {"name": "return_num_output_tokens", "data_type": "TYPE_BOOL", "dims": [1], "optional": True},
]
_OUTPUTS = [
    {"name": "text_output", "data_type": "TYPE_STRING", "dims": [-1]},
    {"name": "finish_reason", "data_type": "TYPE_STRING", "dims": [-1]},
    {"name": "cumulative_logprob", "data_type": "TYPE_FP32", "dims": [-1]},
    {"name": "logprobs", "data_type": "TYPE_STRING", "dims": [-1]},
    {"name": "num_input_tokens", "data_type": "TYPE_UINT32", "dims": [1]},
    {"name": "num_output_tokens", "data_type": "TYPE_UINT32", "dims": [-1]},
]
_RETURN_FLAGS = ("return_finish_reason", "return_cumulative_logprob", "return_logprobs",
                 "return_num_input_tokens", "return_num_output_tokens")
# Asking the parent process whether a request was cancelled is an IPC round trip: do it at most this often.
_CANCEL_POLL_S = 0.01
_FINAL = pb_utils.TRITONSERVER_RESPONSE_COMPLETE_FINAL


class _RequestError(Exception):
    """A problem with the request itself; reported in-band like the real backend's errors."""


@dataclass(eq=False)  # hashable by identity: jobs live in a set
class _Job:
    sender: object
    prompt: str
    stream: bool
    prepend_input: bool
    params: SamplingParams
    want: dict[str, bool]
    images: tuple[bytes, ...] = ()  # the image files of a vision model's request (the contract sends base64)
    cancel: threading.Event = field(default_factory=threading.Event)
    last_poll: float = 0.0


def _input(request, name):
    tensor = pb_utils.get_input_tensor_by_name(request, name)
    return None if tensor is None else tensor.as_numpy().reshape(-1)


def _first_bool(request, name) -> bool | None:
    values = _input(request, name)
    return None if values is None or values.size == 0 else bool(values[0])


def _decode(value) -> str:
    return value.decode("utf-8") if isinstance(value, bytes) else str(value)


class TritonPythonModel:
    @classmethod
    def auto_complete_config(cls, config):
        present = config.as_dict()
        have_in = {i["name"] for i in present.get("input", [])}
        have_out = {o["name"] for o in present.get("output", [])}
        for spec in _INPUTS:
            if spec["name"] not in have_in:
                config.add_input(spec)
        for spec in _OUTPUTS:
            if spec["name"] not in have_out:
                config.add_output(spec)
        # As in vLLM: decoupled so tokens can stream, and no Triton batching (the engine schedules).
        config.set_model_transaction_policy(dict(decoupled=True))
        config.set_max_batch_size(0)
        return config

    def initialize(self, args):
        self.log = pb_utils.Logger
        self.model_config = json.loads(args["model_config"])
        if not pb_utils.using_decoupled_model_transaction_policy(self.model_config):
            raise ValueError("the vllm backend must use the decoupled model transaction policy")
        out = pb_utils.get_output_config_by_name(self.model_config, "text_output")
        self.output_dtype = pb_utils.triton_string_to_numpy(out["data_type"])

        # vLLM reads model.json from the version directory; fall back to the model directory.
        version_dir = Path(args["model_repository"]) / args["model_version"]
        if hasattr(pb_utils, "get_model_dir"):
            version_dir = Path(pb_utils.get_model_dir())
        candidates = [version_dir / _MODEL_JSON, Path(args["model_repository"]) / _MODEL_JSON]
        path = next((p for p in candidates if p.is_file()), None)
        if path is None:
            raise FileNotFoundError(f"'{_MODEL_JSON}' with the engine settings must be in {version_dir}")
        engine_config = json.loads(path.read_text())

        self.engine = load_engine(engine_config, path.parent, self.log)
        self._pool = ThreadPoolExecutor(max_workers=self.engine.max_concurrency, thread_name_prefix="vllm-cpu")
        self._jobs: set[_Job] = set()
        self._lock = threading.Lock()
        self._closing = False
        self.log.log_info(f"[vllm-cpu] model '{args['model_name']}' ready: engine={self.engine.name}, "
                          f"max_model_len={self.engine.max_model_len}, concurrency={self.engine.max_concurrency}")

    def execute(self, requests):
        for request in requests:
            sender = request.get_response_sender()
            try:
                job = self._parse(request, sender)
            except (_RequestError, SamplingError) as e:
                self._send_error(sender, str(e), pb_utils.TritonError.INVALID_ARG)
                continue
            except Exception as e:  # noqa: BLE001 - e.g. undecodable text: still answer this request
                self._send_error(sender, f"{type(e).__name__}: {e}", pb_utils.TritonError.INVALID_ARG)
                continue
            with self._lock:
                self._jobs.add(job)
            self._pool.submit(self._run, job)
        return None

    def _parse(self, request, sender) -> _Job:
        prompt = _decode(_input(request, "text_input")[0])
        images = _input(request, "image")
        files: tuple[bytes, ...] = ()
        if images is not None and images.size > 0:
            if not self.engine.vision:
                raise _RequestError("image input is not supported: this CPU model is text-only")
            try:  # as vLLM's backend: each element is a base64-encoded image file
                files = tuple(base64.b64decode(_decode(x), validate=True) for x in images.reshape(-1))
            except ValueError:
                raise _RequestError("image input must be base64-encoded image files") from None
        stream = bool(_first_bool(request, "stream"))
        exclude = _first_bool(request, "exclude_input_in_output")
        # vLLM: the prompt is prepended unless excluded, and streaming never prepends it.
        prepend = (not exclude) if exclude is not None else not stream
        if prepend and stream:
            raise _RequestError("When streaming, `exclude_input_in_output` = False is not allowed.")
        raw = _input(request, "sampling_parameters")
        if raw is not None:
            params = parse_sampling_parameters(raw[0])
        else:
            # Like vLLM's backend: without the tensor, the request's own parameters are the sampling parameters
            # (minus the frontend's reserved triton_* ones).
            extra = {k: v for k, v in json.loads(request.parameters() or "{}").items() if not k.startswith("triton_")}
            params = parse_sampling_parameters(json.dumps(extra))
        want = {name: bool(_first_bool(request, name)) for name in _RETURN_FLAGS}
        return _Job(sender, prompt, stream, prepend, params, want, files)

    # --- generation, on the engine's worker threads ---

    def _run(self, job: _Job) -> None:
        steps = None
        try:
            if self._closing:
                self._send_error(job.sender, "model is shutting down", pb_utils.TritonError.UNAVAILABLE)
                return
            if self._is_cancelled(job, force=True):
                self._send_cancelled(job)
                return
            engine = self.engine
            prompt_ids = engine.tokenize(job.prompt)
            if job.params.truncate_prompt_tokens:
                prompt_ids = prompt_ids[-job.params.truncate_prompt_tokens:]
            if not prompt_ids:
                raise _RequestError("The decoder prompt cannot be empty")
            n_in = len(prompt_ids) + len(job.images) * engine.tokens_per_image
            room = engine.max_model_len - n_in
            if room < 1:
                raise _RequestError(f"Input prompt ({n_in} tokens) is too long and exceeds limit of "
                                    f"{engine.max_model_len - 1}")
            want_lp = job.params.logprobs is not None or job.want["return_cumulative_logprob"]
            seq = Sequence(job.params, min(job.params.max_tokens, room), keep_logprobs=not job.stream)
            steps = engine.generate(job.prompt, prompt_ids, job.params, want_lp, images=job.images)
            for step in steps:
                delta = seq.add(step)
                if job.stream:
                    logprobs = delta.logprobs if job.params.logprobs is not None else None
                    response = self._response(job, delta.text, delta.finish_reason, 1, logprobs,
                                              seq.cumulative_logprob, n_in)
                    if not self._send(job, response, _FINAL if seq.finished else 0):
                        return
                if seq.finished:
                    break
                if self._is_cancelled(job):
                    self._send_cancelled(job)
                    return
            if not job.stream:
                text = (job.prompt if job.prepend_input else "") + seq.text
                logprobs = seq.logprobs if job.params.logprobs is not None else None
                response = self._response(job, text, seq.finish_reason, len(seq.token_ids), logprobs,
                                          seq.cumulative_logprob, n_in)
                self._send(job, response, _FINAL)
        except (_RequestError, SamplingError) as e:
            self._send_error(job.sender, str(e), pb_utils.TritonError.INVALID_ARG)
        except Exception as e:  # noqa: BLE001 - the client must always get a final response
            self.log.log_error(f"[vllm-cpu] generation failed: {type(e).__name__}")
            self._send_error(job.sender, f"{type(e).__name__}: {e}", pb_utils.TritonError.INTERNAL)
        finally:
            if steps is not None:
                steps.close()
            with self._lock:
                self._jobs.discard(job)

    def _response(self, job: _Job, text: str, finish_reason, n_out: int, logprobs, cumulative: float, n_in: int):
        want = job.want
        tensors = [pb_utils.Tensor("text_output", np.asarray([text.encode("utf-8")], dtype=self.output_dtype))]
        if want["return_finish_reason"]:
            # vLLM reports str(None) == "None" until the last response.
            tensors.append(pb_utils.Tensor("finish_reason", np.asarray([str(finish_reason)], dtype=np.object_)))
        if want["return_cumulative_logprob"]:
            tensors.append(pb_utils.Tensor("cumulative_logprob", np.asarray([cumulative], dtype=np.float32)))
        if want["return_logprobs"]:
            value = "null" if logprobs is None else json.dumps(logprobs)
            tensors.append(pb_utils.Tensor("logprobs", np.asarray([value.encode("utf-8")], dtype=np.object_)))
        if want["return_num_input_tokens"]:
            # A 0-d array, exactly as the real backend sends it (the response shape is [], not [1]).
            tensors.append(pb_utils.Tensor("num_input_tokens", np.asarray(n_in, dtype=np.uint32)))
        if want["return_num_output_tokens"]:
            tensors.append(pb_utils.Tensor("num_output_tokens", np.asarray([n_out], dtype=np.uint32)))
        return pb_utils.InferenceResponse(output_tensors=tensors)

    def _send(self, job: _Job, response, flags: int) -> bool:
        try:
            job.sender.send(response, flags=flags)
            return True
        except Exception as e:  # noqa: BLE001 - typically the client went away
            self.log.log_warn(f"[vllm-cpu] could not send a response: {type(e).__name__}")
            return False

    def _is_cancelled(self, job: _Job, force: bool = False) -> bool:
        if job.cancel.is_set():
            return True
        now = time.monotonic()
        if not force and now - job.last_poll < _CANCEL_POLL_S:
            return False
        job.last_poll = now
        try:
            return bool(job.sender.is_cancelled())
        except Exception:  # noqa: BLE001
            return True

    def _send_cancelled(self, job: _Job) -> None:
        # Same final response as the real backend sends for a cancelled stream.
        error = pb_utils.TritonError("Request was cancelled", pb_utils.TritonError.CANCELLED)
        self._send(job, pb_utils.InferenceResponse(error=error), _FINAL)

    def _send_error(self, sender, message: str, code) -> None:
        # As the real backend: text_output carries a placeholder, the error carries the message.
        response = pb_utils.InferenceResponse(
            output_tensors=[pb_utils.Tensor("text_output", np.asarray(["N/A"], dtype=self.output_dtype))],
            error=pb_utils.TritonError(f"Error generating stream: {message}", code))
        try:
            sender.send(response, flags=_FINAL)
        except Exception as e:  # noqa: BLE001
            self.log.log_warn(f"[vllm-cpu] could not send an error response: {type(e).__name__}")

    def finalize(self):
        self._closing = True
        with self._lock:
            for job in self._jobs:
                job.cancel.set()
        self._pool.shutdown(wait=True)
        self.engine.close()
        self.log.log_info("[vllm-cpu] finalized")
