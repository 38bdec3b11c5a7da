"""The llm workload: each item a prompt to an OpenAI-compatible model, outputs merged in order."""
