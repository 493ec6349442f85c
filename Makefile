# One venv in the repository root; every target installs first.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
DEMO ?= demo

.PHONY: install test lint demo clean

install: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[dev]'
	touch $@

test: install
	$(VENV)/bin/ruff check .
	$(PY) -m pytest -q

lint: install
	$(VENV)/bin/ruff check .

# The main job on built-in demo data: a small FF++-shaped set made from a photo a dependency ships.
demo: install
	$(VENV)/bin/acfd-train synth $(DEMO)/ffpp --videos 6 --frames 24 --seed 0
	$(VENV)/bin/acfd-train prepare --ffpp $(DEMO)/ffpp --out $(DEMO)/cache --frames 12

clean:
	rm -rf $(VENV) $(DEMO)
