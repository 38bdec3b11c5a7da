# The README's two commands (run, test), plus lint and the tools. Each sets up .venv itself.
.PHONY: run test lint aws-local dlq compare llm-example fake-model

ITEMS ?= 500
CHUNK_SIZE ?= 50

run:  ## install and run the app (+ the Inngest Dev Server where npx can start it)
	bash scripts/run.sh

test:  ## install the dev requirements and run the tests (pytest options in ARGS="...")
	bash scripts/test.sh $(ARGS)

lint:  ## ruff (lint + format check), mypy, and the import contracts (pyproject.toml)
	bash scripts/bootstrap.sh requirements-dev.txt
	.venv/bin/ruff check .
	.venv/bin/ruff format --check .
	.venv/bin/mypy .
	.venv/bin/lint-imports

aws-local:  ## the cloud path offline: SAM stack emulated on moto, API on :3000 (ARGS="--parameter K=V")
	bash scripts/bootstrap.sh requirements.txt
	.venv/bin/python -m aws.local.emulator $(ARGS)

dlq:  ## list or redrive dead-lettered chunks: make dlq ARGS="list" / ARGS="redrive"
	bash scripts/bootstrap.sh requirements.txt
	.venv/bin/python -m tools.dlq $(ARGS)

compare:  ## the same job through both paths, side by side: make compare ITEMS=500 CHUNK_SIZE=50
	bash scripts/bootstrap.sh requirements.txt
	.venv/bin/python -m tools.compare --items $(ITEMS) --chunk-size $(CHUNK_SIZE) $(ARGS)

llm-example:  ## examples/llm-job.json (10 reviews) through both paths, tokens and cost side by side
	bash scripts/bootstrap.sh requirements.txt
	mkdir -p data/inputs && { [ -f data/inputs/reviews.jsonl ] || cp examples/reviews.jsonl data/inputs/; }  # LLM_INPUT_ROOT
	.venv/bin/python -m tools.compare --spec "$$(cat examples/llm-job.json)" $(ARGS)

fake-model:  ## the tests' OpenAI-compatible server on :8001 (no real model): OPENAI_BASE_URL=http://127.0.0.1:8001/v1
	bash scripts/bootstrap.sh requirements.txt
	.venv/bin/python -m tests.llm_server --port 8001
