# Flywheel: `make help` lists the targets. Everything runs from the repository's own
# environments (.venv/ml, .venv/flink, .venv/airflow), created by `make setup`.
SHELL := /bin/bash
.DEFAULT_GOAL := help
FLYWHEEL := .venv/ml/bin/flywheel
PYTEST := .venv/ml/bin/python -m pytest
UV := .venv/bootstrap/bin/uv

.PHONY: help setup lock up down status logs demo smoke test test-unit test-integration fuzz chaos clean bench \
	joiner-start joiner-stop joiner-resume joiner-status import retrain

# DATA: a history folder (docs/data.md); empty: data.path, else the default data (MovieLens 100K
# fetched into .flywheel-data/ with pinned checksums; offline, a seeded synthetic world)
DATA ?=
DATA_ARG = $(if $(DATA),--data $(DATA))

help: ## Show this help
	@awk 'BEGIN {FS = ":.*## "} /^[a-zA-Z_-]+:.*## / {printf "  \033[1m%-18s\033[0m %s\n", $$1, $$2}' $(MAKEFILE_LIST)

setup: ## Install everything: Debian packages, Python envs, JVM jars (idempotent, fast when unchanged)
	@./scripts/setup.sh

lock: ## Re-compile requirements*.txt from requirements*.in (exact pins)
	$(UV) pip compile -q --python-version 3.11 requirements.in -o requirements.txt
	$(UV) pip compile -q --python-version 3.11 requirements/flink.in -o requirements/flink.txt
	$(UV) pip compile -q --python-version 3.11 requirements/airflow.in -o requirements/airflow.txt

up: setup ## Start the local stack (Kafka, HDFS, Flink, MLflow, Airflow) and wait until healthy
	@$(FLYWHEEL) up

down: ## Stop the local stack (data stays in .flywheel/)
	@if [ -x $(FLYWHEEL) ]; then $(FLYWHEEL) down; fi

status: ## Each service: health, URL, memory; the Airflow admin login
	@$(FLYWHEEL) status

logs: ## Tail every service log (make logs P=kafka for one program)
	@$(FLYWHEEL) logs $(P)

smoke: ## Run the smoke job against the running stack
	@$(FLYWHEEL) smoke

joiner-start: ## Submit the streaming joiner to the running stack's Flink (config section `joiner`)
	@$(FLYWHEEL) joiner start

joiner-stop: ## Stop the joiner with a savepoint (remembered for joiner-resume)
	@$(FLYWHEEL) joiner stop

joiner-resume: ## Resume the joiner from its last savepoint (SAVEPOINT=hdfs://... for another)
	@$(FLYWHEEL) joiner resume $(if $(SAVEPOINT),--savepoint $(SAVEPOINT))

joiner-status: ## Running joiner job, last savepoint
	@$(FLYWHEEL) joiner status

import: ## Check a history against the data contract and land it on HDFS (DATA=folder, DAYS=14), ending yesterday
	@$(FLYWHEEL) import $(DATA) --days $(or $(DAYS),14)

retrain: ## The daily retrain in one process: DATE=YYYY-MM-DD (default yesterday), MODE=warm|scratch, EPOCHS=n
	@$(FLYWHEEL) retrain --date $(or $(DATE),$$(date -u -d yesterday +%F)) --mode $(or $(MODE),warm) \
		$(if $(EPOCHS),--epochs $(EPOCHS))

demo: up ## Set up, start the stack and run the closed loop on DATA (default data if empty): champion, joiner, server, trainer, simulator
	@$(FLYWHEEL) smoke
	@$(FLYWHEEL) demo $(DATA_ARG) --watch-s $(or $(WATCH),60)

test: setup ## Set up, then run every test (unit + integration; integration starts its own stack on test ports)
	@$(PYTEST) tests

test-unit: setup ## Unit tests only (no services)
	@$(PYTEST) tests -m "not integration"

test-integration: setup ## Integration tests only (starts and stops a stack on the test ports)
	@$(PYTEST) tests -m integration

chaos: up ## Kill each component once under traffic (DATA: history for the loop; ROUNDS=n), then reconcile: lost, doubled, recovery times
	@$(FLYWHEEL) demo $(DATA_ARG) --watch-s 0
	@$(FLYWHEEL) chaos --rounds $(or $(ROUNDS),1) $(DATA_ARG)

fuzz: setup ## The fuzz tests with many more examples (FUZZ=n per boundary, default 500): the model server's API (OpenAPI), Kafka topics, PS deltas
	@FLYWHEEL_FUZZ_EXAMPLES=$(or $(FUZZ),500) $(PYTEST) tests -m fuzz

clean: down ## Stop the stack and delete its data and logs (.flywheel/, .flywheel-test/, .flywheel-bench/)
	rm -rf .flywheel .flywheel-test .flywheel-bench

bench: setup ## Benchmarks: tables of figures with same-run baselines; JSON in bench/results/
	@.venv/ml/bin/python bench/cuckoo_table.py
	@.venv/ml/bin/python bench/paramserver.py
	@.venv/ml/bin/python bench/joiner.py
	@.venv/ml/bin/python bench/loop.py
	@.venv/ml/bin/python bench/demo_page.py
	@.venv/ml/bin/python bench/hdfs_door.py
	@.venv/ml/bin/python bench/kafka_door.py
