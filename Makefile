# The two set-up commands README.md gives, plus helpers. Python 3.11 is all a fresh machine needs.
PYTHON ?= python3.11
VENV ?= .venv
BIN := $(VENV)/bin

.PHONY: setup test demo parity clean constraints

# pyproject.toml holds ranges; constraints.txt the exact versions CI installs (regenerate: make constraints).
setup:  ## create the virtual environment and install the project with every extra, at CI's versions
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -c constraints.txt torch
	$(BIN)/pip install -q -c constraints.txt -e '.[all]'
	# Test oracle only: timm's XCiT for parity tests. --no-deps keeps torchvision out (it breaks torch 2.13);
	# what timm imports besides (huggingface_hub, safetensors) is already installed as ours.
	$(BIN)/pip install -q -c constraints.txt --no-deps timm

constraints:  ## write constraints.txt from the current .venv (after a deliberate upgrade there)
	( echo "# Exact versions CI installs (make setup: pip install -c constraints.txt). Ranges: pyproject.toml."; \
	  echo "# Regenerate with 'make constraints' from a working .venv; local labels (+cpu) are dropped."; \
	  $(BIN)/pip freeze --exclude-editable | grep -v '^xcit-export' | sed 's/+[A-Za-z0-9.]*$$//' ) > constraints.txt

test:  ## the test suite (what CI runs)
	$(BIN)/python -m pytest -q

demo:  ## the main job on random weights, offline
	$(BIN)/xcit-export --model xcit_nano_12_p16_224 --target onnxruntime-fp32 --weights random

clean:
	rm -rf out .pytest_cache
