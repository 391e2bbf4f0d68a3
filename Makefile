# The README's commands. Each works on a fresh machine with only Python 3 and make:
# it creates .venv once and reinstalls only when pyproject.toml changes.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed

.PHONY: demo test lint bench browser clean notebooks lab

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[sandbox,dev]'
	touch $(STAMP)

demo: $(STAMP)
	$(PY) -m viewerkit.demo

# JupyterLab (the [notebooks] extra) on notebooks/ at http://127.0.0.1:8888/lab (the next free
# port if taken; NOTEBOOKS_PORT=... to choose): open the URL it prints, token included.
# No browser is opened; Ctrl-C twice stops it. .ci/jupyterlab.sh is the command, shared
# with tests/test_notebooks_server.py.
NOTEBOOKS_PORT  ?= 8888
NOTEBOOKS_STAMP := $(VENV)/.installed-notebooks

$(NOTEBOOKS_STAMP): $(STAMP)
	$(PY) -m pip install --quiet -e '.[sandbox,notebooks]'
	touch $(NOTEBOOKS_STAMP)

notebooks: $(NOTEBOOKS_STAMP)
	sh .ci/jupyterlab.sh $(PY) $(NOTEBOOKS_PORT)

lab: notebooks

lint: $(STAMP)
	$(VENV)/bin/ruff check viewerkit tests bench
	$(VENV)/bin/mypy

# The HTML report test opens the report in Debian's chromium; install it when missing.
browser:
	@command -v chromium >/dev/null 2>&1 || { \
	  if [ "$$(id -u)" = 0 ]; then apt-get update -qq && apt-get install -y -qq chromium >/dev/null; \
	  else echo "chromium missing: run 'sudo apt-get install chromium' (browser test will be skipped)"; fi; }

test: $(STAMP) lint browser
	$(PY) -m pytest -q -p no:cacheprovider

bench: $(STAMP)
	$(PY) -m bench

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache
