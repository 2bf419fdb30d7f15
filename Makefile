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

## make test: unit tests with coverage, every notebook under nbval (quick mode), strict book build.
test: unit notebooks book-strict

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
