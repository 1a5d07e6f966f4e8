# Lockgate: the two commands a newcomer needs are `make demo` and `make test`.
SHELL := /bin/bash
PY := .venv/bin/python
export PYTHONPATH := $(CURDIR)
# No telemetry, no hub look-ups: everything the demo needs is local.
export DO_NOT_TRACK := 1
export PREFECT_SERVER_ANALYTICS_ENABLED := false
export RAGAS_DO_NOT_TRACK := true
export HF_HUB_OFFLINE := 1
export TRANSFORMERS_OFFLINE := 1
export TOKENIZERS_PARALLELISM := false
export WANDB_MODE := offline
# pytest-xdist workers for make test: the suite waits on servers, workers and engines about half the
# time, so two processes fill both cores (tests/conftest.py keeps what must not overlap together).
# Two trainings at once each start a thread per core: OpenMP threads that spin while they wait took
# the cores from each other (a 67 s training test took 385 s beside another), so they sleep instead.
TEST_WORKERS ?= 2
TEST_ENV := OMP_WAIT_POLICY=PASSIVE

.PHONY: images help setup demo demo-real demo-reject test test-real test-fast lint server server-pg serve monitor status lock clean bench bench-prep

help:  ## list the targets
	@grep -E '^[a-z-]+:.*##' $(MAKEFILE_LIST) | sed -E 's/:.*## /\t/' | expand -t 14

setup:  ## build (or reuse) the app, trainer and serving environments, and the artifact signing key pair
	@scripts/setup.sh

images:  ## build the app, trainer and serving images (Docker; tagged by the lock files' hash, built once per change)
	@scripts/images.sh

demo: setup  ## run the release pipeline end to end on the sample data, then ask the served model one question
	$(PY) -m flows release
	$(PY) -m flows ask

demo-real: setup  ## the same release on a real pretrained LLM (SmolLM2-135M-Instruct, profile smollm2): about 7 minutes
	$(PY) -m flows --profile smollm2 release
	$(PY) -m flows --profile smollm2 ask

demo-reject: setup  ## run it with a sabotaged candidate: the gate rejects, production stays
	$(PY) -m flows release --scenario no-training; code=$$?; \
	if [ $$code -eq 3 ]; then echo "gate rejected the candidate, as intended (exit 3)"; else exit $$code; fi

test: setup  ## run the whole test suite (unit, stage and end-to-end) on two worker processes (TEST_WORKERS=2)
	$(TEST_ENV) $(PY) -m pytest -n $(TEST_WORKERS) --dist loadfile --no-loadscope-reorder

test-real: setup  ## the real-model profile end to end (SmolLM2: fine-tune, gate, serve, ask), about 5 minutes; not in `make test`
	LOCKGATE_REAL=1 $(PY) -m pytest tests/flows/test_release_real.py

test-fast: setup  ## only the tests not marked slow
	$(TEST_ENV) $(PY) -m pytest -n $(TEST_WORKERS) --dist loadfile --no-loadscope-reorder -m "not slow"

lint: setup  ## ruff and mypy
	$(PY) -m ruff check lockgate tasks flows tests benchmarks
	$(PY) -m mypy lockgate

serve: setup  ## deploy the production model on vLLM (if needed) and run the gateway on http://127.0.0.1:8300/v1
	$(PY) -m flows deploy && $(PY) -m flows serve

monitor: setup  ## Prometheus on http://127.0.0.1:9090 over the gateway and its engines, and the Evidently UI dashboard on :8000 (after make serve)
	$(PY) -m flows monitor

server: setup  ## start a local Prefect server with the UI on http://127.0.0.1:4200
	PREFECT_HOME=$(CURDIR)/.lockgate/prefect $(PY) -m prefect server start --host 127.0.0.1 --port 4200

server-pg: setup  ## the same server on PostgreSQL, as in production (cluster in .lockgate/postgres)
	@scripts/server-pg.sh

status: setup  ## registry aliases and history
	$(PY) -m flows status

lock:  ## re-resolve requirements/*.in into the lock files
	scripts/lock.sh

clean:  ## forget all demo state (artifacts, registry, index, Prefect DB)
	rm -rf .lockgate

bench: setup  ## benchmarks, printed as ratios against a baseline measured in the same run
	$(PY) -m benchmarks.bench_refresh
	$(PY) -m benchmarks.bench_gate
	$(PY) -m benchmarks.bench_eval
	$(PY) -m benchmarks.bench_drift
	$(PY) -m benchmarks.bench_quantize

bench-prep: setup  ## prep of 50k and 200k generated rows: rows/s and peak RSS (about 5 minutes)
	$(PY) -m benchmarks.bench_prep
