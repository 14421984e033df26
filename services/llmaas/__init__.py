"""llmaas: a self-hostable, sovereign LLM-as-a-Service platform (OpenAI-compatible)."""
