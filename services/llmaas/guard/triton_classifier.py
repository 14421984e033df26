"""The learned layer served by Triton (production): a sequence-classification guard model behind the KServe v2
protocol, one BYTES input `TEXT` and one FP32 output `SCORE` (the attack probability), e.g. a guardian model
wrapped by a Triton python backend. Only the comparison forms travel, never the original bytes."""

from __future__ import annotations

import numpy as np
import tritonclient.grpc as triton

from llmaas.guard.classifier import calibrated

TIMEOUT_SECONDS = 2.0


class TritonClassifier:
    name = "triton"
    remote = True

    def __init__(self, address: str, model: str, threshold: float = 0.5) -> None:
        self._client = triton.InferenceServerClient(address)
        self._model = model
        self._threshold = threshold

    def score(self, forms: list[str], pieces: list[str] | None = None) -> float:
        texts = forms + (pieces or [])
        batch = np.array([t.encode() for t in texts], dtype=np.object_).reshape(len(texts), 1)
        inputs = [triton.InferInput("TEXT", list(batch.shape), "BYTES")]
        inputs[0].set_data_from_numpy(batch)
        result = self._client.infer(self._model, inputs, outputs=[triton.InferRequestedOutput("SCORE")],
                                    client_timeout=TIMEOUT_SECONDS)
        return calibrated(float(np.max(result.as_numpy("SCORE"))), self._threshold)
