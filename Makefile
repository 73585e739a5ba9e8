# One-command setup for a fresh machine (Python 3.11, gcc, apt). Re-runs only redo what changed.
#   make demo   - set everything up, then upsample the bundled example with the shipped model
#   make test   - set everything up, then run the test suite
#   make export - export the shipped model to LiteRT (models/pretrained/model.tflite) after it changed
#   make wheel  - build dist/speechsr-VERSION-py3-none-any.whl (package, scripts, settings, shipped models)
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMPS := .make
SUDO   := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
OUT    ?= out

.PHONY: all setup sox op build export demo test benchmark wheel clean
all: setup

setup: $(STAMPS)/sox $(STAMPS)/requirements op

# the sox command line (with FLAC/SPHERE support) from Debian, only when missing
$(STAMPS)/sox:
	@mkdir -p $(STAMPS)
	@if command -v sox >/dev/null && sox -h | grep -q flac; then echo "sox present: $$(sox --version)"; \
	 else echo "installing Debian package sox"; $(SUDO) apt-get update -qq && \
	      $(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq sox libsox-fmt-all >/dev/null; fi
	@touch $@

$(PY):
	$(PYTHON) -m venv $(VENV)

# pinned requirements + this package (editable); redone only when the files change
$(STAMPS)/requirements: requirements.txt pyproject.toml | $(PY)
	@mkdir -p $(STAMPS)
	$(PY) -m pip install -q --disable-pip-version-check -r requirements.txt
	$(PY) -m pip install -q --disable-pip-version-check --no-deps -e .
	@touch $@

# the compiled subpixel-shuffle op (the script itself skips an up-to-date build)
build: op
op: $(STAMPS)/requirements
	@PYTHON=$(PY) bash src/build_ops.sh

# LiteRT export for the lean runtime, beside each model: NAME.tflite + NAME.tflite.json (which
# records the SHA-256 of NAME.keras). The script redoes only exports whose .keras changed.
EXPORT_MODELS ?= models/pretrained/model.keras $(wildcard models/pretrained-telephony/model.keras models/pretrained-fast/model.keras models/pretrained-8k/model.keras)
export: $(STAMPS)/requirements
	$(PY) export_model.py $(EXPORT_MODELS)

demo: setup export
	$(PY) upsample_audio_file.py --reference examples/arctic_a0007.wav \
	    -o $(OUT)/arctic_a0007_upsampled.wav --plot $(OUT)/arctic_a0007_comparison.png

test: setup
	$(PY) -m pytest -q -n auto

# a pure wheel with models/pretrained/* (export refreshed first; the compiled op ships as source:
# `speechsr build-op`); build/ is setuptools' scratch
wheel: export
	rm -rf build
	$(PY) -m pip wheel -q --disable-pip-version-check --no-deps --no-build-isolation --no-index . -w dist
	rm -rf build
	@ls -l dist/speechsr-*.whl

benchmark: setup export
	$(PY) benchmarks/bench_subpixel_op.py
	$(PY) benchmarks/bench_preprocessing.py
	$(PY) benchmarks/bench_training.py
	$(PY) benchmarks/bench_upsampling.py
	$(PY) benchmarks/bench_batch.py

clean:
	rm -rf $(STAMPS) $(OUT) build dist src/speechsr/ops/_subpixel_shuffle.so src/speechsr/ops/_subpixel_shuffle.stamp
