# The two set-up commands README.md gives, plus helpers. Python 3.11 is all a fresh machine needs.
PYTHON ?= python3.11
VENV ?= .venv
BIN := $(VENV)/bin

.PHONY: setup test demo parity clean

setup:  ## create the virtual environment and install the project with every extra
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q torch==2.13.0
	$(BIN)/pip install -q -e '.[all]'
	# Test oracle only: timm's XCiT for parity tests. --no-deps keeps torchvision out (it breaks torch 2.13).
	$(BIN)/pip install -q --no-deps timm==1.0.31
	$(BIN)/pip install -q huggingface_hub pyyaml

test:  ## the test suite (what CI runs)
	$(BIN)/python -m pytest -q

demo:  ## the main job on random weights, offline
	$(BIN)/xcit-export --model xcit_nano_12_p16_224 --target onnxruntime-fp32 --weights random

clean:
	rm -rf out .pytest_cache
