# The README's two commands: `make book` (main job) and `make test`.
# Both create/refresh .venv from pyproject.toml, so a fresh clone needs nothing preinstalled.
PY      ?= python3.11
VENV    := .venv
BIN     := $(VENV)/bin
STAMP   := $(VENV)/.installed
EXTRAS  ?= book,dev,captions,geo
SCALE   ?= default
TEST_WORKERS ?= 2

.PHONY: book test test-all results pages lint install wordnet browser check-book clean

$(STAMP): pyproject.toml
	@command -v $(PY) >/dev/null || { echo "error: $(PY) not found; urbanlib needs Python 3.11 (set PY=...)"; exit 1; }
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade "pip>=24"
	$(BIN)/python -m pip install --quiet -e ".[$(EXTRAS)]"
	$(BIN)/python -m ipykernel install --sys-prefix --name urbanlib --display-name "urbanlib (.venv)" >/dev/null
	$(BIN)/python -m urbanlib.captions.wordnet_setup
	$(BIN)/python -m urbanlib.book.browser install  # Debian's chromium + chromium-driver for the browser tests (apt, when missing)
	touch $(STAMP)

install: $(STAMP)

wordnet: $(STAMP)  # offline WordNet for CAPTURE (apt packages wordnet-base + wordnet-sense-index -> $$NLTK_DATA)
	$(BIN)/python -m urbanlib.captions.wordnet_setup

browser: $(STAMP)  # headless Chromium for the browser tests (apt packages chromium + chromium-driver)
	$(BIN)/python -m urbanlib.book.browser install

book: $(STAMP)
	$(BIN)/python -m urbanlib.book build --scale $(SCALE)

check-book: $(STAMP)  # every page of the built book (_build/html) in headless Chromium, offline: no external request, no NaN, traceback or absolute path, no missing or blank figure; screenshots in _build/check-book/ (make test runs the same check on a smoke-scale book)
	$(BIN)/python -m urbanlib.book.check _build/html --shots _build/check-book

test: $(STAMP)  # TEST_WORKERS processes (default 2, the CI cores) that steal tests from each other; TEST_WORKERS=0 runs serially
	$(BIN)/python -m pytest -q $(if $(filter 0,$(TEST_WORKERS)),,-n $(TEST_WORKERS) --dist worksteal)

test-all: $(STAMP)
	$(BIN)/python -m pytest -q -m "slow or not slow" $(if $(filter 0,$(TEST_WORKERS)),,-n $(TEST_WORKERS) --dist worksteal)

results: $(STAMP)  # the `full` tier CSVs, then the book's stored pages (results/pages/default/); both resumable
	$(BIN)/python -m urbanlib.results run --scale full
	$(BIN)/python -m urbanlib.book store --scale default

pages: $(STAMP)  # only the stored pages (34: 1 h 53 min beside two tier workers on 2026-12-07); pages stored for the same notebook and code are kept
	$(BIN)/python -m urbanlib.book store --scale default

lint: $(STAMP)
	$(BIN)/ruff check urbanlib tests notebooks

clean:
	rm -rf _build .cache/book

.PHONY: bench
bench: $(STAMP)  # urbanlib vs open_clip training speed at equal configs -> results/bench.csv (about 6 min, 1 thread)
	OMP_NUM_THREADS=1 $(BIN)/python benchmarks/bench.py
