# Two commands are all the set-up there is: `make demo` and `make test`.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
PORT ?= 8000
STAMP := $(VENV)/.installed-$(shell sha1sum pyproject.toml | cut -c1-12)
DEMO_DIR := var/demo

.PHONY: venv test test-core demo lint bench clean

venv: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[test]'
	rm -f $(VENV)/.installed-*
	touch $@

test: $(STAMP)
	$(PY) -m pytest $(PYTEST_ARGS)

# The engine's tests with the Django plugin off: proves that tests/core needs no Django settings.
test-core: $(STAMP)
	$(PY) -m pytest -p no:django -W ignore::pytest.PytestConfigWarning tests/core $(PYTEST_ARGS)

lint: $(STAMP)
	$(VENV)/bin/ruff check course_plugins tests example_project plugin_dirs bench
	$(VENV)/bin/mypy

bench: $(STAMP)
	$(PY) bench/run.py

demo: $(STAMP)
	PORT=$(PORT) $(PY) example_project/demo.py

clean:
	rm -rf $(VENV) .nox var db.sqlite3
