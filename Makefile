# deepseek-offline — developer and operator entry points.
SHELL := /bin/bash
PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
SPEC ?= bundle/bundle.toml
BUNDLE_OUT ?= dist/bundle
KEY_DIR ?= keys
KEY ?= $(KEY_DIR)/bundle-signing.pem
PYTEST_ARGS ?=
# e.g. make bundle MAX_PART_SIZE=3.9GiB also writes split volumes next to the bundle (FAT32 holds files under 4 GiB)
MAX_PART_SIZE ?=
# The demo's SFT base: tiny (the embedded model, built on the host) or smollm2: SmolLM2-135M-
# Instruct (scripts/fetch-smollm2.sh) crosses the gap as a [[model]] of the bundle, whose spec
# is then the default one plus that entry (generated beside it, ignored by git), and is
# fine-tuned with LoRA.
MODEL ?= tiny
DEMO_MODEL := tiny
ifeq ($(MODEL),smollm2)
SPEC := bundle/smollm2.generated.toml
DEMO_MODEL := smollm2-135m-instruct
else ifneq ($(MODEL),tiny)
$(error MODEL=$(MODEL): use tiny or smollm2)
endif

.PHONY: install test-deps ds-ops test test-unit lint bundle bench demo clean

install: $(STAMP)

$(STAMP): pyproject.toml scripts/install-venv.sh
	PYTHON=$(PYTHON) VENV=$(VENV) bash scripts/install-venv.sh
	@touch $@

test-deps: install
	bash scripts/install-test-deps.sh
	PYTHON=$(PYTHON) bash scripts/install-labelstudio-venv.sh
	PIP_PYTHON=$(BIN)/python bash scripts/install-edge-emulator.sh
	VENV=$(VENV) bash scripts/fetch-smollm2.sh

# DeepSpeed JIT-builds its CPU communication op on first use; build it once, outside the tests.
ds-ops: install
	$(BIN)/python -m offline.train.ops

# Exit code 5 (no tests collected) means the suite is misconfigured: fail loudly, never pass.
test: install test-deps ds-ops
	@$(BIN)/python -m pytest $(PYTEST_ARGS); rc=$$?; \
	if [ $$rc -eq 5 ]; then echo "error: pytest collected no tests" >&2; exit 1; fi; exit $$rc

# The fast loop while editing (under two minutes on 2 cores): no service, namespace, registry,
# end-to-end run or slow build; `make test` runs everything.
UNIT_MARKERS := not integration and not e2e and not network and not slow
test-unit: install
	@$(BIN)/python -m pytest -m "$(UNIT_MARKERS)" $(PYTEST_ARGS); rc=$$?; \
	if [ $$rc -eq 5 ]; then echo "error: pytest collected no tests" >&2; exit 1; fi; exit $$rc

lint: install
	$(BIN)/ruff check offline tests benchmarks
	$(BIN)/ruff format --check offline tests benchmarks
	$(BIN)/mypy

$(KEY):
	$(BIN)/offline bundle keygen --out $(KEY)

# Build the default bundle, then check it the way the isolated host will: coreutils + openssl.
bundle: install $(KEY) $(if $(filter smollm2,$(MODEL)),$(SPEC))
	$(BIN)/offline bundle build --spec $(SPEC) --out $(BUNDLE_OUT) --key $(KEY) \
	    $(if $(MAX_PART_SIZE),--max-part-size $(MAX_PART_SIZE))
	cd $(BUNDLE_OUT) && sha256sum --quiet -c SHA256SUMS
	openssl pkeyutl -verify -pubin -inkey $(KEY_DIR)/bundle-signing.pub.pem -rawin \
	    -in $(BUNDLE_OUT)/manifest.json -sigfile $(BUNDLE_OUT)/manifest.sig

# The default spec plus the converted SmolLM2 as a [[model]] (MODEL=smollm2).
bundle/smollm2.generated.toml: install bundle/bundle.toml scripts/fetch-smollm2.sh
	model=$$(VENV=$(VENV) bash scripts/fetch-smollm2.sh) && \
	{ cat bundle/bundle.toml; printf '\n[[model]]\nname = "$(DEMO_MODEL)"\npath = "%s"\n' "$$model"; } \
	    > $@.tmp && mv $@.tmp $@

bench: install
	$(BIN)/python benchmarks/bundle_bench.py
	bash scripts/install-bench-venv.sh
	$(BIN)/python benchmarks/clean_bench.py --rows 200000 --datatrove-rows 20000
	$(BIN)/python benchmarks/train_bench.py
	$(BIN)/python benchmarks/edge_bench.py
	$(BIN)/python benchmarks/serve_bench.py
	bash scripts/install-llamacpp-venv.sh
	$(BIN)/python benchmarks/generate_bench.py
	$(BIN)/python benchmarks/decoder_bench.py
	@if [ -f $(DEMO_PREFIX)/bundle/manifest.json ]; then $(BIN)/python benchmarks/doctor_bench.py \
	    --bundle $(DEMO_PREFIX)/bundle; else echo "doctor bench: run make demo first (it installs the host)"; fi

# The whole appliance, end to end: build and sign the default bundle (connected side), then
# `python -m offline.demo`: install it into a fresh prefix, check the host, run the pipeline and
# serve the result, all inside a network namespace where every packet that tries to leave is
# counted (root needed for that; otherwise it says so and runs in place). Prints a summary.
DEMO_PREFIX ?= dist/demo-host
demo: bundle
	$(BIN)/python -m offline.demo --bundle $(BUNDLE_OUT) --pubkey $(KEY_DIR)/bundle-signing.pub.pem \
	    --prefix $(DEMO_PREFIX) --python $(PYTHON) --json $(DEMO_PREFIX).json --model $(DEMO_MODEL)

clean:
	rm -rf dist build *.egg-info .pytest_cache .mypy_cache .ruff_cache
