"""PP-OCRv4 (rapidocr-onnxruntime: the ONNX models ship inside its wheel, nothing is downloaded) behind the OCR
contract of config.pbtxt. The recognised lines are laid out as Markdown by llmaas.ocr.layout."""

import io
import json
import os

import numpy as np
import triton_python_backend_utils as pb_utils
from llmaas.ocr.layout import to_markdown

FORMATS = ("PNG", "JPEG", "WEBP", "BMP", "TIFF")


class TritonPythonModel:
    def initialize(self, args):
        from rapidocr_onnxruntime import RapidOCR

        threads = int(os.environ.get("LLMAAS_OCR_THREADS", "2"))
        self.engine = RapidOCR(intra_op_num_threads=threads, inter_op_num_threads=1)

    def execute(self, requests):
        responses = []
        for request in requests:
            try:
                responses.append(self._read(request))
            except Exception as err:  # noqa: BLE001 - one bad image must not fail the others
                responses.append(pb_utils.InferenceResponse(error=pb_utils.TritonError(f"ocr: {err}")))
        return responses

    def _read(self, request):
        from PIL import Image

        data = pb_utils.get_input_tensor_by_name(request, "IMAGE").as_numpy().reshape(-1)[0]
        with Image.open(io.BytesIO(data), formats=FORMATS) as image:  # the router checked it was one of them
            rgb = np.asarray(image.convert("RGB"))[:, :, ::-1]  # OpenCV's channel order
        found, _ = self.engine(rgb)
        lines = [{"text": text, "score": round(float(score), 4), "box": [[float(x), float(y)] for x, y in box]}
                 for box, text, score in (found or [])]
        result = {"width": int(rgb.shape[1]), "height": int(rgb.shape[0]), "lines": lines,
                  "markdown": to_markdown(lines)}
        tensor = pb_utils.Tensor("RESULT", np.array([json.dumps(result, ensure_ascii=False).encode()],
                                                    dtype=np.object_))
        return pb_utils.InferenceResponse(output_tensors=[tensor])
