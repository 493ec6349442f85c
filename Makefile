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

# The main job on built-in demo data: a small FF++-shaped set made from a photo a dependency ships,
# then train -> evaluate -> export -> scan -> report. A 64 px model keeps it to a few CPU minutes.
# acfd-scan exits 1 when something is flagged (expected on fakes): only >= 4 (failure) stops make.
demo: install
	rm -rf $(DEMO)
	$(VENV)/bin/acfd-train synth $(DEMO)/ffpp --videos 6 --frames 24 --seed 0
	$(VENV)/bin/acfd-train prepare --ffpp $(DEMO)/ffpp --out $(DEMO)/cache --frames 12
	$(VENV)/bin/acfd-train fit --data $(DEMO)/cache --out $(DEMO)/run --image-size 64 --batch-size 8 --max-steps 24 --precise-bn 4 --pretrained none
	$(VENV)/bin/acfd-train evaluate --run $(DEMO)/run --data $(DEMO)/cache
	$(VENV)/bin/acfd-train build --run $(DEMO)/run --out $(DEMO)/models
	$(VENV)/bin/acfd-scan $(DEMO)/ffpp/original_sequences/youtube/c40 $(DEMO)/ffpp/manipulated_sequences/SelfBlended/c40 \
		--recursive --model $(DEMO)/models/model.onnx --db $(DEMO)/acfd.sqlite --jsonl $(DEMO)/verdicts.jsonl --frames 8 \
		|| [ $$? -le 3 ]
	$(VENV)/bin/acfd-scan query "SELECT label, COUNT(*) AS videos FROM latest_verdicts GROUP BY label" --db $(DEMO)/acfd.sqlite
	$(VENV)/bin/acfd-scan report --db $(DEMO)/acfd.sqlite --out $(DEMO)/report --only all
	@echo "demo done: open $(DEMO)/report/index.html; query with: $(VENV)/bin/acfd-scan query 'SELECT * FROM latest_verdicts' --db $(DEMO)/acfd.sqlite"

clean:
	rm -rf $(VENV) $(DEMO)
