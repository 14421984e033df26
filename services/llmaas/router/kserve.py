"""The vLLM backend's tensor contract on the KServe v2 wire, built and read straight from the protobuf messages.

tritonclient's generic path (InferInput and numpy arrays in, InferResult and numpy arrays out, a request iterator
task per stream) costs more CPU per request than the router's own work; the contract is a handful of scalar tensors,
so the router encodes them in `raw_input_contents` itself (KServe v2: BYTES elements are a 4-byte little-endian length
then the bytes; BOOL one byte) and reads the responses' raw outputs the same way.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

from tritonclient.grpc import service_pb2

_BOOL = (b"\x00", b"\x01")
_INTEGER = {"INT32": ("<i", 4), "UINT32": ("<I", 4), "INT64": ("<q", 8), "UINT64": ("<Q", 8)}


@dataclass(frozen=True)
class Delta:
    text: str
    finish_reason: str | None
    # Prompt tokens (reported on every response by the vLLM backend) and this response's new output tokens.
    input_tokens: int | None
    output_tokens: int | None
    final: bool
    # The vLLM backend's `logprobs` output (JSON), when asked for (llmaas.router.chat_output reads it).
    logprobs: bytes | None = None


def _bytes_element(value: bytes) -> bytes:
    return struct.pack("<I", len(value)) + value


def infer_request(model: str, request_id: str, *, strings: dict[str, bytes], flags: dict[str, bool],
                  outputs: tuple[str, ...], lists: dict[str, list[bytes]] | None = None
                  ) -> service_pb2.ModelInferRequest:
    """One request of scalar inputs (shape [1]): `strings` as BYTES, `flags` as BOOL; `lists`: BYTES inputs of
    several elements (shape [n]). Triton sends an empty final response when the backend ends a stream without a last
    output, so the end of every stream is seen."""
    request = service_pb2.ModelInferRequest(model_name=model, id=request_id)
    request.parameters["triton_enable_empty_final_response"].bool_param = True
    for name, value in strings.items():
        request.inputs.add(name=name, datatype="BYTES", shape=[1])
        request.raw_input_contents.append(_bytes_element(value))
    for name, values in (lists or {}).items():
        request.inputs.add(name=name, datatype="BYTES", shape=[len(values)])
        request.raw_input_contents.append(b"".join(_bytes_element(v) for v in values))
    for name, value in flags.items():
        request.inputs.add(name=name, datatype="BOOL", shape=[1])
        request.raw_input_contents.append(_BOOL[value])
    for name in outputs:
        request.outputs.add(name=name)
    return request


def _scalar(tensor, raw: bytes):
    """The first element of an output tensor (bytes for BYTES, int for integers), None when it has none."""
    if tensor.datatype == "BYTES":
        if len(raw) < 4:
            return None
        (length,) = struct.unpack_from("<I", raw)
        return raw[4:4 + length]
    fmt = _INTEGER.get(tensor.datatype)
    if fmt is None or len(raw) < fmt[1]:
        return None
    return struct.unpack_from(fmt[0], raw)[0]


def to_delta(response: service_pb2.ModelInferResponse) -> Delta:
    values = {}
    for index, tensor in enumerate(response.outputs):
        if index < len(response.raw_output_contents):
            values[tensor.name] = _scalar(tensor, response.raw_output_contents[index])
    params = response.parameters
    final = params["triton_final_response"].bool_param if "triton_final_response" in params else False
    text, reason = values.get("text_output"), values.get("finish_reason")
    reason_str = reason.decode() if isinstance(reason, bytes) else None
    if reason_str == "None":  # the vLLM backend sends str(None) until the last response
        reason_str = None
    n_in, n_out = values.get("num_input_tokens"), values.get("num_output_tokens")
    return Delta(
        text=text.decode("utf-8", errors="replace") if isinstance(text, bytes) else "",
        finish_reason=reason_str or None,
        input_tokens=n_in if isinstance(n_in, int) else None,
        output_tokens=n_out if isinstance(n_out, int) else None,
        final=final,
        logprobs=values.get("logprobs"),
    )
