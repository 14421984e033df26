"""The project's guard classifier (`llmaas guard train`) served by Triton's Python backend, behind the learned
layer's Triton contract: each TEXT row (a comparison form) gets its SCORE from the prompt head. The guard service
uses it with LLMAAS_GUARD_CLASSIFIER=triton, so that the model runs beside the other models instead of in the guard's
own process; the texts are scored and forgotten, never logged."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import triton_python_backend_utils as pb_utils
from llmaas.guard.classifier import LocalClassifier
from llmaas.guard.training.train import DEFAULT_MODEL_DIR


class TritonPythonModel:
    def initialize(self, args):
        parameters = json.loads(args["model_config"]).get("parameters", {})
        directory = parameters.get("model_dir", {}).get("string_value") or DEFAULT_MODEL_DIR
        self._classifier = LocalClassifier.load(Path(directory))

    def execute(self, requests):
        responses = []
        for request in requests:
            rows = pb_utils.get_input_tensor_by_name(request, "TEXT").as_numpy().reshape(-1)
            texts = [row.decode("utf-8", "replace") if isinstance(row, bytes) else str(row) for row in rows]
            scores = np.array(self._classifier.scores(texts), dtype=np.float32).reshape(-1, 1)
            responses.append(pb_utils.InferenceResponse(output_tensors=[pb_utils.Tensor("SCORE", scores)]))
        return responses
