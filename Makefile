# The README's two commands live here: `make serve` (once the service exists) and `make test`.
PYTHON ?= python3.11
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed
# Serving needs only the `serve` extra (onnxruntime, no torch); `make test` adds training and tests.
SERVE_STAMP := $(VENV)/.installed-serve
VIEWER := service/viewer
# npm ci writes this hidden lockfile last: newer than package-lock.json once the install is complete.
VIEWER_STAMP := $(VIEWER)/node_modules/.package-lock.json

.PHONY: serve test install viewer describe bench-render bench-synth prometheusrule clean

$(PY):
	$(shell command -v $(PYTHON) || command -v python3) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip

# Reinstall only when the project's requirements change.
$(STAMP): pyproject.toml | $(PY)
	$(PY) -m pip install -q torch==2.13.0
	$(PY) -m pip install -q -e '.[train,serve,dev]'
	touch $(STAMP)

$(SERVE_STAMP): pyproject.toml | $(PY)
	$(PY) -m pip install -q -e '.[serve]'
	touch $(SERVE_STAMP)

install: $(STAMP)

# three.js for the viewer page at GET /, exactly as service/viewer/package-lock.json pins it.
$(VIEWER_STAMP): $(VIEWER)/package.json $(VIEWER)/package-lock.json
	cd $(VIEWER) && npm ci --no-audit --no-fund

viewer: $(VIEWER_STAMP)

# Serves the newest model under model_store/ on :8000 (FACERECON_* settings apply).
serve: $(SERVE_STAMP) $(VIEWER_STAMP)
	$(PY) -m service --model-store model_store --host 0.0.0.0 --port 8000

test: $(STAMP)
	$(PY) -m pytest -q

describe: $(STAMP)
	$(PY) -m training.facemodel describe --out docs/facemodel-sheet.png

bench-render: $(STAMP)
	$(PY) benchmarks/render.py --out benchmarks/results/render.md

bench-synth: $(STAMP)
	$(PY) benchmarks/synth.py --out benchmarks/results/synth.md

# k8s/prometheusrule.yaml from deploy/prometheus/rules.yml (the Prometheus operator's copy of the rules).
prometheusrule: $(STAMP)
	$(PY) deploy/prometheus/prometheusrule.py

clean:
	rm -rf $(VENV) .pytest_cache $(VIEWER)/node_modules
