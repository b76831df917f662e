# Two commands do everything on a fresh machine with Python 3.11:
#   make demo   creates .venv, installs the pinned frameworks and xconv, runs the main job
#   make test   same environment: lint and types, the documentation build (strict), the whole test suite
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
# torch==2.13.0 is the CPU wheel; an unpinned torch pulls a multi-GB CUDA build.
PINS := torch==2.13.0 tensorflow-cpu==2.21.0
# keras-hub's backbones, for the tests that port them. keras-hub requires tensorflow-text, which requires the full
# tensorflow package (a second copy beside tensorflow-cpu); only its tokenizers use it, so keras-hub and the
# packages it imports are installed without their requirements.
KERAS_HUB := keras-hub==0.32.0 kagglehub==1.0.0 kagglesdk==0.1.28 sentencepiece==0.2.3
STAMP := $(VENV)/.installed

.PHONY: demo test bench bench-peers docs lint clean

$(STAMP): pyproject.toml Makefile
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet $(PINS) -e ".[test,demo,zoo,docs,lint]"
	$(BIN)/python -m pip install --quiet --no-deps $(KERAS_HUB)
	touch $(STAMP)

demo: $(STAMP)
	TF_CPP_MIN_LOG_LEVEL=2 $(BIN)/xconv demo

test: lint docs
	TF_CPP_MIN_LOG_LEVEL=2 $(BIN)/python -m pytest -n auto --durations=15

# the documentation site into site/: broken links, missing pages or API references fail
docs: $(STAMP)
	NO_MKDOCS_2_WARNING=1 $(BIN)/mkdocs build --strict --quiet

lint: $(STAMP)
	$(BIN)/ruff check xconv tests benchmarks
	$(BIN)/ruff format --check xconv tests benchmarks
	$(BIN)/mypy xconv

bench: $(STAMP)
	$(BIN)/python -m pip install --quiet -e ".[bench]"
	TF_CPP_MIN_LOG_LEVEL=2 $(BIN)/python benchmarks/startup.py
	TF_CPP_MIN_LOG_LEVEL=2 $(BIN)/python benchmarks/overhead.py
	TF_CPP_MIN_LOG_LEVEL=2 $(BIN)/python benchmarks/port_speed.py
	TF_CPP_MIN_LOG_LEVEL=2 $(BIN)/python benchmarks/onnx_route.py
	TF_CPP_MIN_LOG_LEVEL=2 $(BIN)/python benchmarks/suite_throughput.py
	TF_CPP_MIN_LOG_LEVEL=2 $(BIN)/python benchmarks/zoo.py
	TF_CPP_MIN_LOG_LEVEL=2 $(BIN)/python benchmarks/real_models.py
	TF_CPP_MIN_LOG_LEVEL=2 HF_HUB_OFFLINE=1 $(BIN)/python benchmarks/transformer_models.py --float64
	TF_CPP_MIN_LOG_LEVEL=2 $(BIN)/python benchmarks/port_time.py
	TF_CPP_MIN_LOG_LEVEL=2 $(BIN)/python benchmarks/memory.py
	TF_CPP_MIN_LOG_LEVEL=2 $(BIN)/python benchmarks/build_time.py
	TF_CPP_MIN_LOG_LEVEL=2 $(BIN)/python benchmarks/onnx_peers.py

# The ONNX route as its users run it, in an environment of its own: onnx2tf with the versions it pins (its own
# TensorFlow), torch and torchvision as the project pins them; xconv runs there from the source tree, so that
# both converted models run side by side in one process. The project's .venv is not touched. --full also times
# onnx2tf's default run (SavedModel and TFLite files written: minutes).
PEERS := .venv-peers
$(PEERS)/.installed: Makefile
	test -x $(PEERS)/bin/python || $(PYTHON) -m venv $(PEERS)
	echo '*' > $(PEERS)/.gitignore
	$(PEERS)/bin/python -m pip install --quiet --upgrade pip
	$(PEERS)/bin/python -m pip install --quiet torch==2.13.0 torchvision==0.28.0 onnx2tf onnxscript
	touch $@

bench-peers: $(STAMP) $(PEERS)/.installed
	TF_CPP_MIN_LOG_LEVEL=2 $(BIN)/python benchmarks/onnx_peers.py --peers $(PEERS)/bin/python --full

clean:
	rm -rf $(VENV) demo-out site .pytest_cache .hypothesis
