"""`longjobs`, the command line for people who run batches: submit a JSONL file to either path,
watch it with a progress bar, get the answers back. A client of the two HTTP APIs only: it
imports nothing of the service (no store, no core), so it runs wherever the APIs answer."""
