# Two entry points for a fresh machine: `make test` (the whole suite) and `make demo`.
PYTHON ?= python3.11
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
RUN_DIR ?= runs/demo

.PHONY: test lint typecheck unit demo clean

$(PY):
	$(PYTHON) -m venv $(VENV)

# Re-install only when the dependency list changes.
$(STAMP): pyproject.toml | $(PY)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

lint: $(STAMP)
	$(VENV)/bin/ruff check inspector tests bench
	$(VENV)/bin/ruff format --check inspector tests bench

typecheck: $(STAMP)
	$(VENV)/bin/mypy

unit: $(STAMP)
	$(VENV)/bin/pytest tests/unit -q

test: lint typecheck $(STAMP)
	$(VENV)/bin/pytest -q

# Synthetic line -> small model (cached) -> evaluation -> offline predictions.
demo: $(STAMP)
	$(VENV)/bin/inspector synth --out $(RUN_DIR)/data --image-size 128 --seed 0
	test -f $(RUN_DIR)/model.safetensors || $(VENV)/bin/inspector train --data $(RUN_DIR)/data \
		--out $(RUN_DIR)/model.safetensors --backbone resnet18 --weights none --image-size 128 \
		--epochs 8 --batch-size 8 --patience 0 --device cpu
	$(VENV)/bin/inspector eval --checkpoint $(RUN_DIR)/model.safetensors --data $(RUN_DIR)/data \
		--json $(RUN_DIR)/eval.json --plots $(RUN_DIR)/plots --device cpu
	$(VENV)/bin/inspector predict --checkpoint $(RUN_DIR)/model.safetensors \
		--out $(RUN_DIR)/predictions --device cpu $(RUN_DIR)/data/test

clean:
	rm -rf $(VENV) runs .pytest_cache .mypy_cache .ruff_cache
