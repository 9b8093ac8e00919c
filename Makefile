# Every routine job has a name here; the README uses these names.
SHELL := /bin/bash
VENV ?= .venv
PY := $(VENV)/bin/python
STAMPS := .stamps
# uv from PATH, else the pinned binary infra/bootstrap_uv.py puts in .stamps/bin (no pip needed: a Debian
# system Python refuses `pip install` under PEP 668, and may have no pip at all)
UV := $(shell command -v uv 2>/dev/null || echo "$(CURDIR)/$(STAMPS)/bin/uv")
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
DEBIAN_PACKAGES := libreoffice-writer-nogui libreoffice-calc-nogui libreoffice-impress-nogui poppler-utils fonts-dejavu-core fonts-liberation fonts-noto-cjk bubblewrap tesseract-ocr tesseract-ocr-eng tesseract-ocr-deu tesseract-ocr-fra tesseract-ocr-nld tesseract-ocr-spa tesseract-ocr-ita tesseract-ocr-por
# only for tests on a development machine (the review page in headless Chromium), never in the image
DEBIAN_TEST_PACKAGES := chromium chromium-driver
PYTEST_ARGS ?=

.PHONY: setup demo test test-fast test-compute lint typecheck bench clean docker image image-test image-gpu

## setup: Debian packages (LibreOffice, poppler, fonts, Tesseract + 7 language packs; Chromium for tests), uv, the Python env, generated BAML client, tiny model
setup: $(STAMPS)/system $(STAMPS)/python models/tiny-colqwen2-baked/manifest.json

# Installs whichever of DEBIAN_PACKAGES is missing (a package added later reaches machines set up earlier).
$(STAMPS)/system: Makefile
	@mkdir -p $(STAMPS)
	@missing=$$(for p in $(DEBIAN_PACKAGES) $(DEBIAN_TEST_PACKAGES); do dpkg-query -W -f='$${Status}' $$p 2>/dev/null | grep -q 'ok installed' || echo $$p; done); \
	if [ -n "$$missing" ]; then \
	  echo "installing Debian packages:" $$missing; \
	  $(SUDO) apt-get update -q && $(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends $$missing; \
	fi
	@touch $@

$(STAMPS)/python: pyproject.toml baml_src/*.baml
	@mkdir -p $(STAMPS)
	@[ -x "$(UV)" ] || command -v uv >/dev/null || python3 infra/bootstrap_uv.py $(STAMPS)/bin
	@# uv installs torch 2.13.0 + torchvision 0.28.0 together from PyPI (pip's local torch wheel breaks torchvision).
	@[ -x $(PY) ] || $(UV) venv --quiet --python 3.11 $(VENV)
	@# --python names the venv explicitly (never the interpreter that happens to run uv)
	$(UV) pip install --quiet --python $(PY) -e ".[dev]"
	@# re-link the editable install (packages added after the first install are then importable everywhere)
	$(UV) pip install --quiet --python $(PY) --no-deps --reinstall-package docvision -e .
	@# the generated BAML client (never edited by hand, never committed)
	$(VENV)/bin/baml-cli generate --from baml_src > /dev/null
	@touch $@

# The tiny random-weight ColQwen2 (built offline) and its baked int8 form: what tests and the demo run on.
models/tiny-colqwen2/config.json: models/tiny.py
	$(PY) -m models.tiny models/tiny-colqwen2

models/tiny-colqwen2-baked/manifest.json: models/tiny-colqwen2/config.json models/bake.py engine/embedding/baked.py
	$(PY) -m models.bake models/tiny-colqwen2 models/tiny-colqwen2-baked > /dev/null

DEMO_ENV := DOCVISION_MODEL=$${DOCVISION_MODEL:-models/tiny-colqwen2-baked} DOCVISION_INDEX_PATH=.demo/qdrant DOCVISION_STORE=.demo/store

## demo: generate the sample documents, render them, ingest them (embedded Qdrant, local store), search
demo: setup
	$(PY) -m tests.fixtures.samples .demo/samples
	$(PY) -m engine render .demo/samples/* --out .demo/rendered
	$(DEMO_ENV) $(PY) -m engine ingest .demo/samples
	$(DEMO_ENV) $(PY) -m engine search "total weight of the containers" --top-k 5
	$(PY) -m engine schema show schemas/shipping_manifest.json
	@if [ -n "$$DOCVISION_LLM_MODEL" ]; then \
	  $(DEMO_ENV) $(PY) -m engine extract .demo/samples/shipping_manifest.pdf --schema schemas/shipping_manifest.json --format csv; \
	else \
	  echo "extraction skipped: set DOCVISION_LLM_MODEL and DOCVISION_LLM_BASE_URL (any OpenAI-compatible endpoint) to run it"; \
	fi

## test: the whole test suite (unit + integration); what CI runs
test: setup
	PATH=$(CURDIR)/$(VENV)/bin:$$PATH $(PY) -m pytest -q $(PYTEST_ARGS)

# The embedding tests: what a compute path (engine/embedding/compute.py) changes. CI runs them a second time with
# the plan forced, so the suite is proven on the path this CPU does not pick (tests/conftest.py simulates it).
EMBEDDING_TESTS := tests/integration/test_embedding.py tests/integration/test_speedups.py tests/integration/test_small_family.py tests/integration/test_qwen3_families.py tests/integration/test_cold_start.py tests/integration/test_token_budget.py tests/integration/test_model_identity.py tests/integration/test_gpu_preprocess.py
COMPUTE ?= int8

## test-fast: the unit tests without the slow ones (pure logic and fakes, tests/fakes.py; no model, no services)
test-fast: setup
	PATH=$(CURDIR)/$(VENV)/bin:$$PATH $(PY) -m pytest -q -m "not slow" tests/unit $(PYTEST_ARGS)

## test-compute: the embedding tests with DOCVISION_COMPUTE=$(COMPUTE) (int8: an AVX2 CPU's plan; bf16: an AMX CPU's)
test-compute: setup
	PATH=$(CURDIR)/$(VENV)/bin:$$PATH DOCVISION_COMPUTE=$(COMPUTE) $(PY) -m pytest -q $(EMBEDDING_TESTS) $(PYTEST_ARGS)

## lint: ruff, the template linters (cfn-lint, sam validate --lint) and hadolint; CI runs it after the tests
lint: setup
	$(PY) -m ruff check .
	$(PY) -m ruff format --check .
	$(VENV)/bin/cfn-lint template.yaml
	AWS_DEFAULT_REGION=$${AWS_DEFAULT_REGION:-us-east-1} SAM_CLI_TELEMETRY=0 $(UV) tool run --quiet --from aws-sam-cli==1.170.0 sam validate --lint --template template.yaml
	@# the other auth mode (ApiAuth=api-key: usage plan + key); the linters take no parameter values
	@mkdir -p $(STAMPS) && $(PY) infra/template_variant.py ApiAuth=api-key > $(STAMPS)/template-api-key.yaml
	$(VENV)/bin/cfn-lint $(STAMPS)/template-api-key.yaml
	AWS_DEFAULT_REGION=$${AWS_DEFAULT_REGION:-us-east-1} SAM_CLI_TELEMETRY=0 $(UV) tool run --quiet --from aws-sam-cli==1.170.0 sam validate --lint --template $(STAMPS)/template-api-key.yaml
	$(VENV)/bin/hadolint Dockerfile.lambda
	@# the image's dependency set must install on its platform (Debian 12 bookworm: Python 3.11, glibc 2.36)
	UV="$(UV)" infra/check_image_deps.sh
	$(VENV)/bin/hadolint Dockerfile.gpu
	$(PY) -m mypy

## image: the Lambda image (Dockerfile.lambda) from a local Debian bookworm stand-in base (infra/make_base.sh), tiny model unless MODEL_SOURCE=<hub id or models/ dir>
IMAGE ?= docvision:local
MODEL_SOURCE ?= tiny
docker:
	infra/docker_daemon.sh

image: docker
	infra/make_base.sh
	IMAGE=$(IMAGE) MODEL_SOURCE=$(MODEL_SOURCE) infra/build_image.sh

## image-gpu: Dockerfile.gpu (Batch backfill) from the same stand-in base and build args as `make image` (its shared stages are cache hits)
image-gpu: image
	set -a && . .build/image.env && set +a && DOCKER_BUILDKIT=0 docker build --network host -f Dockerfile.gpu -t docvision-gpu:local \
	  --build-arg LAMBDA_BASE="$$LAMBDA_BASE" --build-arg TORCH_INDEX_URL="$$TORCH_INDEX_URL" \
	  --build-arg ALLOW_CUDA_TORCH="$$ALLOW_CUDA_TORCH" --build-arg MODEL_SOURCE="$$MODEL_SOURCE" \
	  --build-arg MODEL_REVISION="$$MODEL_REVISION" . > .build/image-gpu.log

## image-test: run the image as Lambda does (read-only, tmpfs /tmp, uid 993, emulator), then sam build + sam local invoke, and backfill --shard 0 in the GPU image on the CPU; writes bench/results/image.json
image-test: setup image image-gpu
	PATH=$(CURDIR)/$(VENV)/bin:$$PATH $(PY) infra/image_test.py --gpu-image docvision-gpu:local

typecheck: setup
	$(PY) -m mypy

## bench: every CPU benchmark → bench/results/*.json (GPU ones: bench/embed_gpu.py, bench/embed_variants.py on a GPU host)
bench: setup
	$(PY) bench/render.py
	$(PY) bench/search.py
	$(PY) bench/extract.py
	$(PY) bench/ingest_memory.py
	$(PY) bench/embed.py --label cpu-$$(uname -m)
	$(PY) bench/coldstart.py
	$(PY) bench/embed_ab.py --label cpu-$$(uname -m)
	$(PY) bench/embed_profile.py

clean:
	rm -rf .demo $(STAMPS) .pytest_cache
