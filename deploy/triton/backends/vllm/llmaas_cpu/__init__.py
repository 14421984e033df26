"""CPU engines behind llmaas's `vllm` Triton backend: same tensor contract as Triton's vLLM backend, no GPU."""
