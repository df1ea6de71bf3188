# The README's two commands live here: `make serve` (once the service exists) and `make test`.
PYTHON ?= python3.11
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed

.PHONY: test install describe bench-render clean

$(PY):
	$(shell command -v $(PYTHON) || command -v python3) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip

# Reinstall only when the project's requirements change.
$(STAMP): pyproject.toml | $(PY)
	$(PY) -m pip install -q torch==2.13.0
	$(PY) -m pip install -q -e '.[train,serve,dev]'
	touch $(STAMP)

install: $(STAMP)

test: $(STAMP)
	$(PY) -m pytest -q

describe: $(STAMP)
	$(PY) -m training.facemodel describe --out docs/facemodel-sheet.png

bench-render: $(STAMP)
	$(PY) benchmarks/render.py --out benchmarks/results/render.md

clean:
	rm -rf $(VENV) .pytest_cache
