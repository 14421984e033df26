"""The router's own KServe v2 encoding agrees with tritonclient's (the reference implementation of the wire format)."""

from __future__ import annotations

import numpy as np
from llmaas.router.kserve import infer_request, to_delta
from tritonclient.grpc import service_pb2
from tritonclient.utils import deserialize_bytes_tensor, serialize_byte_tensor


def test_request_inputs_decode_as_tritonclient_reads_them():
    request = infer_request("m", "req-1", strings={"text_input": "héllo <|im_end|>".encode(),
                                                   "sampling_parameters": b'{"max_tokens": 4}'},
                            flags={"stream": True, "exclude_input_in_output": False}, outputs=("text_output",))
    assert (request.model_name, request.id) == ("m", "req-1")
    assert request.parameters["triton_enable_empty_final_response"].bool_param
    decoded = {}
    for tensor, raw in zip(request.inputs, request.raw_input_contents, strict=True):
        assert list(tensor.shape) == [1]
        if tensor.datatype == "BYTES":
            decoded[tensor.name] = deserialize_bytes_tensor(raw)[0]
        else:
            assert tensor.datatype == "BOOL"
            decoded[tensor.name] = bool(np.frombuffer(raw, dtype=bool)[0])
    assert decoded == {"text_input": "héllo <|im_end|>".encode(), "sampling_parameters": b'{"max_tokens": 4}',
                       "stream": True, "exclude_input_in_output": False}
    assert [o.name for o in request.outputs] == ["text_output"]


def _response(final: bool | None, **outputs) -> service_pb2.ModelInferResponse:
    response = service_pb2.ModelInferResponse(model_name="m")
    for name, (datatype, array) in outputs.items():
        response.outputs.add(name=name, datatype=datatype, shape=list(array.shape))
        raw = serialize_byte_tensor(array).item() if datatype == "BYTES" else array.tobytes()
        response.raw_output_contents.append(raw)
    if final is not None:
        response.parameters["triton_final_response"].bool_param = final
    return response


def test_response_outputs_read_like_tritonclient():
    delta = to_delta(_response(
        False, text_output=("BYTES", np.array(["ça va".encode()], dtype=np.object_)),
        finish_reason=("BYTES", np.array([b"None"], dtype=np.object_)),
        # The vLLM backend sends the counts as 0-d arrays (shape []).
        num_input_tokens=("UINT32", np.asarray(20, dtype=np.uint32)),
        num_output_tokens=("UINT32", np.asarray(1, dtype=np.uint32))))
    assert (delta.text, delta.finish_reason, delta.input_tokens, delta.output_tokens, delta.final) == \
        ("ça va", None, 20, 1, False)


def test_final_response_and_absent_outputs():
    delta = to_delta(_response(True, finish_reason=("BYTES", np.array([b"length"], dtype=np.object_)),
                               num_output_tokens=("INT64", np.array([7], dtype=np.int64))))
    assert (delta.text, delta.finish_reason, delta.input_tokens, delta.output_tokens, delta.final) == \
        ("", "length", None, 7, True)
    empty = to_delta(_response(None))  # an empty final response carries no outputs
    assert (empty.text, empty.final, empty.output_tokens) == ("", False, None)
