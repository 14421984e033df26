"""A reranker from all-MiniLM-L6-v2's similarity (llmaas.embedding.minilm): the score of a document is
(1 + cosine(query, document)) / 2, in 0..1. A bi-encoder, not a cross-encoder: no wheel ships a cross-encoder's
weights; its quality on the project's labelled set is in the README. Texts are scored and forgotten, never logged."""

from __future__ import annotations

import numpy as np
import triton_python_backend_utils as pb_utils
from llmaas.embedding.minilm import MiniLM, max_input_tokens


def _texts(request, name: str) -> list[str]:
    rows = pb_utils.get_input_tensor_by_name(request, name).as_numpy().reshape(-1)
    return [row.decode("utf-8", "replace") if isinstance(row, bytes) else str(row) for row in rows]


class TritonPythonModel:
    def initialize(self, args):
        self._max_tokens = max_input_tokens(args["model_config"])
        self._model = MiniLM()

    def execute(self, requests):
        responses = []
        for request in requests:
            query, documents = _texts(request, "query")[:1], _texts(request, "documents")
            query_tokens = self._model.count_tokens(query)[0] if query else 0
            if not query or query_tokens > self._max_tokens:
                responses.append(pb_utils.InferenceResponse(output_tensors=[], error=pb_utils.TritonError(
                    f"the query has {query_tokens} tokens, more than the model's maximum context length of "
                    f"{self._max_tokens}")))
                continue
            encoded = self._model.encode(query + documents, truncate_to=self._max_tokens)
            scores = (1.0 + encoded.vectors[1:] @ encoded.vectors[0]) / 2.0
            tokens = np.array([query_tokens + n for n in encoded.tokens[1:]], dtype=np.int32)
            responses.append(pb_utils.InferenceResponse(output_tensors=[
                pb_utils.Tensor("score", np.clip(scores, 0.0, 1.0).astype(np.float32)),
                pb_utils.Tensor("num_input_tokens", tokens)]))
        return responses
