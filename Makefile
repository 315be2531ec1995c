# The two commands of the README: `make run` (the app on the bundled demo) and `make test`.
# Each creates .venv when missing and installs the project into it.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
# A CPU build of this torch lies on the development machines' disk; override on a GPU box.
TORCH_SPEC ?= torch==2.13.0
PORT ?= 8501

.PHONY: run test e2e e2e-scale bench demo clean-venv

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -c "import torch" 2>/dev/null || $(PY) -m pip install -q "$(TORCH_SPEC)"
	$(PY) -m pip install -q -e ".[app,test]"
	touch $(STAMP)

run: $(STAMP)
	$(VENV)/bin/clusterucb app --address 127.0.0.1 --port $(PORT)

test: $(STAMP)
	$(PY) -m ruff check .
	$(PY) -m pytest -q

e2e: $(STAMP)
	$(PY) -m pytest -q -m e2e tests/e2e

e2e-scale: $(STAMP)
	CLUSTERUCB_SCALE_E2E=1 $(PY) -m pytest -q -s tests/e2e/test_map_scale.py tests/e2e/test_app_scale.py

bench: $(STAMP)
	for b in bench/bench_*.py; do echo "== $$b"; $(PY) $$b --quick || exit 1; done

demo: $(STAMP)
	$(VENV)/bin/clusterucb demo

clean-venv:
	rm -rf $(VENV)
