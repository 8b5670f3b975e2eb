# The course's commands. Each one creates the environment (.venv) first if it is missing or stale.
#   make book      build the HTML book into _build/html from the notebooks' stored outputs
#   make test      lint, unit tests, every notebook end to end (nbval), then a strict book build
#   make quick     lint and the unit tests without the slow ones (the edit-test loop)
#   make browser   every page of the built book in headless Chromium (after make book)
#   make execute   re-run notebooks top to bottom in place (NB=notebooks/01_x.ipynb for one)
#   make results   rewrite book/results.md and the gallery (book/gallery.md) from benchmarks/results/
#   make lab       open the notebooks in JupyterLab

PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
NB     ?=

.PHONY: all venv book test quick lint unit notebooks check-notebooks strict-book browser browser-assets execute results lab clean

all: book

$(STAMP): requirements.txt pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	@$(BIN)/python -c 'import sys; v = sys.version_info[:2]; sys.exit(0) if v == (3, 11) else print(f"note: the pins are tested on Python 3.11; this is {v[0]}.{v[1]}")'
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -r requirements.txt
	@touch $(STAMP)

venv: $(STAMP)

book: venv
	$(BIN)/jupyter-book build .
	@echo "open _build/html/index.html"

test: lint unit notebooks strict-book browser

quick: lint
	$(BIN)/python -m pytest tests -m "not slow" --ignore=tests/browser

lint: venv
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

unit: venv
	$(BIN)/python -m pytest tests --ignore=tests/browser

check-notebooks: venv
	$(BIN)/python tools/notebooks.py check

notebooks: venv
	$(BIN)/python -m pytest --nbval-lax --nbval-current-env -p no:cacheprovider notebooks

strict-book: venv
	$(BIN)/jupyter-book build . --all -W -n --keep-going

# The pages load MathJax, require.js and the widget manager from CDNs; the browser tests serve
# them from the same npm packages, installed once into .browser-assets/ (needs npm).
browser-assets:
	@test -d .browser-assets/node_modules/mathjax || \
	  if command -v npm >/dev/null; then $(BIN)/python tools/browser.py --install-assets; \
	  else echo "npm not found: the browser tests will skip (install Node.js for them)"; fi

browser: venv browser-assets
	$(BIN)/python -m pytest tests/browser -p no:cacheprovider

execute: venv results
	$(BIN)/python tools/notebooks.py execute $(NB)

results: venv
	$(BIN)/python tools/results_page.py
	$(BIN)/python tools/gallery.py

lab: venv
	$(BIN)/jupyter lab notebooks

clean:
	rm -rf _build .pytest_cache
