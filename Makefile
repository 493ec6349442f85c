# One venv in the repository root; every target installs first.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
DEMO ?= demo

.PHONY: install test lint demo clean starter-model starter-select

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

# The starter model (docs/starter.md): real faces -> people (who is who; 30% held out) -> cross-identity
# face swaps of the held-out people, cut by person into a selection half and a test half -> self-blends
# of everyone else -> crops -> fit -> FP16 ONNX -> threshold and AUC on the selection half -> AUC on the
# test half, once. Every step is a file target: after an interruption `make starter-model` goes on from
# the last finished step, and fit resumes from its checkpoint. About 90 minutes on 2 cores; in the
# background: nohup make starter-model > starter.log 2>&1 &
# `make starter-select` stops before the test half. To compare recipes, give each its own STARTER folder
# and share the data: make starter-select STARTER=starter-96 STARTER_DATA=starter STARTER_SIZE=96
STARTER ?= starter
STARTER_DATA ?= $(STARTER)
FACES ?= ../shared/data/faces
STARTER_PRESET ?= paper
STARTER_SIZE ?= 96
STARTER_BATCH ?= 16
STARTER_STEPS ?= 1376
STARTER_VIDEOS ?= 480
STARTER_FRAMES ?= 8
STARTER_FAR ?= 0.05
STARTER_PAIRS ?= 12
# the swap clips are 16 frames (0.64 s): validate takes them all, as a 1 fps scan of a 16 s video would
STARTER_VAL_FRAMES ?= 16
STARTER_SEED ?= 0
STARTER_HOLDOUT ?= 0.3
STARTER_CROP ?= 192
# more options for the four validation scans, e.g. --workers 4 or --device cuda
STARTER_SCAN_ARGS ?=
STARTER_NOTE ?= acfd starter model: trained on self-blends of real people's photos and clips from public \
repositories (the training data lists them), validated on synthetic face swaps of other people only, never on \
real deepfakes; a starter, not an oracle. Terms: research and evaluation use, those of its training data \
(acfd/scanner/models/STARTER-NOTICE.md). For the paper's model, train on FaceForensics++ (acfd-train).
S := $(STARTER)
D := $(STARTER_DATA)
TRAIN := $(VENV)/bin/acfd-train
SCAN := $(VENV)/bin/acfd-scan
SWAPREAL = original_sequences/youtube
SWAPFAKE = manipulated_sequences/FaceSwapLandmarks

$(D)/people.json: | install
	$(TRAIN) people $(FACES) --holdout $(STARTER_HOLDOUT) --seed 0 --sheets $(D)/sheets --out $@ --quiet

$(D)/swaps-%/swaps.json: $(D)/people.json
	$(TRAIN) swaps $(D)/swaps-$* --people $< --half $* --pairs $(STARTER_PAIRS)

$(D)/synth/synth.json: $(D)/people.json
	$(TRAIN) synth $(D)/synth --source $(FACES) --exclude $< --videos $(STARTER_VIDEOS) --seed $(STARTER_SEED)

$(D)/cache/summary.json: $(D)/synth/synth.json
	$(TRAIN) prepare --ffpp $(D)/synth --out $(D)/cache --frames $(STARTER_FRAMES) --size $(STARTER_CROP) --workers 2 --quiet

# A run with a checkpoint continues under its saved recipe (only the step count may grow).
$(S)/run/done: $(D)/cache/summary.json
	$(TRAIN) fit --data $(D)/cache --out $(S)/run --max-steps $(STARTER_STEPS) --quiet \
		$$(if [ -f $(S)/run/checkpoint/state.json ]; then echo --resume; else echo --preset $(STARTER_PRESET) \
		--image-size $(STARTER_SIZE) --batch-size $(STARTER_BATCH) --seed $(STARTER_SEED) --pretrained none; fi)
	touch $@

$(S)/model.fp16.onnx: $(S)/run/done
	$(TRAIN) export --run $(S)/run --out $@ --fp16 --note "$(STARTER_NOTE)"

# Selection half: the threshold at STARTER_FAR on its c40 reals, and the AUC at c23 and c40.
$(S)/selected.onnx: $(S)/model.fp16.onnx $(D)/swaps-selection/swaps.json
	rm -f $(S)/selected-c23.onnx  # validate never overwrites: an interrupted step starts again
	$(SCAN) validate -q --model $< --real $(D)/swaps-selection/$(SWAPREAL)/c23 \
		--fake $(D)/swaps-selection/$(SWAPFAKE)/c23 --fakes synthetic --frames $(STARTER_VAL_FRAMES) $(STARTER_SCAN_ARGS) --out $(S)/selected-c23.onnx
	$(SCAN) validate -q --model $(S)/selected-c23.onnx --real $(D)/swaps-selection/$(SWAPREAL)/c40 \
		--fake $(D)/swaps-selection/$(SWAPFAKE)/c40 --fakes synthetic --frames $(STARTER_VAL_FRAMES) $(STARTER_SCAN_ARGS) --far $(STARTER_FAR) --set-threshold --out $@

# Test half, touched once per recipe: the figure reported.
$(S)/starter.onnx: $(S)/selected.onnx $(D)/swaps-test/swaps.json
	rm -f $(S)/test-c23.onnx
	$(SCAN) validate -q --model $< --real $(D)/swaps-test/$(SWAPREAL)/c23 \
		--fake $(D)/swaps-test/$(SWAPFAKE)/c23 --fakes synthetic --frames $(STARTER_VAL_FRAMES) $(STARTER_SCAN_ARGS) --out $(S)/test-c23.onnx
	$(SCAN) validate -q --model $(S)/test-c23.onnx --real $(D)/swaps-test/$(SWAPREAL)/c40 \
		--fake $(D)/swaps-test/$(SWAPFAKE)/c40 --fakes synthetic --frames $(STARTER_VAL_FRAMES) $(STARTER_SCAN_ARGS) --out $@

starter-select: $(S)/selected.onnx
starter-model: $(S)/starter.onnx
	@echo "starter model: $(S)/starter.onnx (docs/starter.md says how to ship it)"

clean:
	rm -rf $(VENV) $(DEMO)
