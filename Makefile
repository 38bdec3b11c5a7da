# The two commands of the README, plus lint. Each sets up .venv itself on first use.
.PHONY: run test lint

run:  ## install and run the app (+ the Inngest Dev Server where npx can start it)
	bash scripts/run.sh

test:  ## install the dev requirements and run the tests (pytest options in ARGS="...")
	bash scripts/test.sh $(ARGS)

lint:  ## ruff (lint + format check) and mypy
	bash scripts/bootstrap.sh requirements-dev.txt
	.venv/bin/ruff check .
	.venv/bin/ruff format --check .
	.venv/bin/mypy .
