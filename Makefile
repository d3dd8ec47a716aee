# Two commands do everything on a fresh machine: `make demo` and `make test`.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed
DEMO   := runs/demo

.PHONY: setup demo test clean

setup: $(STAMP)

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip 'setuptools>=77' wheel
	$(PY) -m pip install --quiet -e '.[test]'
	touch $@

demo: setup
	$(VENV)/bin/qute train --dataset digits --method qute -K 3 -o $(DEMO) --force
	$(VENV)/bin/qute eval $(DEMO)

test: setup
	$(PY) -m pytest -q

clean:
	rm -rf $(VENV) runs build dist *.egg-info
