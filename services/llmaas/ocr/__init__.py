"""The OCR model's own code, run inside Triton (deploy/triton/model_repository/ppocr-v4)."""
