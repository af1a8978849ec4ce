# Two commands do all the set-up: `make run` (dashboard) and `make test` (whole suite).
PY ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
# Local copies of the pretrained encoders and MovieLens, where ../shared exists (CI, dev boxes).
SHARED ?= $(abspath ../shared)
export EM3_IMAGE_ENCODER ?= $(if $(wildcard $(SHARED)/models/mobilenet_v2_1.0_224_coral),$(SHARED)/models/mobilenet_v2_1.0_224_coral)
export EM3_TEXT_ENCODER ?= $(if $(wildcard $(SHARED)/models/all-MiniLM-L6-v2),$(SHARED)/models/all-MiniLM-L6-v2)
export EM3_MOVIELENS_DIR ?= $(if $(wildcard $(SHARED)/data/movielens-100k),$(SHARED)/data/movielens-100k)

.PHONY: run test venv clean

$(STAMP): requirements.txt
	test -x $(BIN)/python || $(PY) -m venv $(VENV) || python3 -m venv $(VENV)
	$(BIN)/pip install --disable-pip-version-check -q -r requirements.txt
	touch $(STAMP)

venv: $(STAMP)

# The default run's feature cache, built once per machine before the first server start (~10 s, with a
# progress bar), so a Start pressed the moment the page opens trains at once (docs/RESULTS.md).
DEMO_STAMP := .cache/demo-cache.stamp
$(DEMO_STAMP): $(STAMP)
	$(BIN)/python -m em3 data --source synthetic --preset demo --build-cache
	mkdir -p .cache && touch $(DEMO_STAMP)

run: $(STAMP) $(DEMO_STAMP)
	$(BIN)/python -m app.serve --server.address 127.0.0.1 --server.port 8501 --server.headless true --browser.gatherUsageStats false

# Two phases. Everything but the browser tests on two workers, one per core (each test runs torch on one
# thread; a test file stays on one worker, so its module fixtures are built once). Then the browser tests alone:
# beside a second worker their servers' training shared the cores and the demo run took 682 s instead of ~180 s.
# `make test TEST_WORKERS=0` runs the first phase in one process.
TEST_WORKERS ?= 2
test: $(STAMP)
	$(BIN)/python -m pytest -q -n $(TEST_WORKERS) --dist loadfile -m "not browser"
	$(BIN)/python -m pytest -q -m browser

clean:
	rm -rf $(VENV) .cache .pytest_cache
