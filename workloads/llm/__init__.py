"""The llm workload: each item a prompt to an OpenAI-compatible model, outputs merged in order.

`Llm` (`workload.py`) is its Workload, `LlmFields` (`fields.py`) its JobSpec fields: `prepare`
checks the input in constant time before a job is recorded (the location, the size, and the
lines of an input small enough to read at once); `plan`, in
the job's first durable unit, validates every line and indexes where each chunk's lines start
(`index`, resumable across budgets: a bad line fails the job with its number); a chunk reads
only its own bytes and answers them (`workload.run_llm_chunk`), leaves its output file behind,
and the job's finishing unit merges them (`outputs`).
"""
