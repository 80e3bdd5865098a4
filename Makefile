# Glimpse Gym: every set-up step is here; a fresh machine needs Python 3.10+ and pip only.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
SHARED_DATA ?= ../shared/data
MNIST_ROOT ?= $(SHARED_DATA)

.PHONY: demo test test-slow lint bench default-weights mnist-bagnet clean

$(BIN)/glimpse: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $(BIN)/glimpse

## demo: the main job on the embedded default (offline)
demo: $(BIN)/glimpse
	$(BIN)/glimpse demo

## test: the test suite that CI runs (slow tests excluded; see test-slow)
test: $(BIN)/glimpse
	$(BIN)/python -m pytest -m "not slow" -q

## test-slow: only the slow tests
test-slow: $(BIN)/glimpse
	$(BIN)/python -m pytest -m slow -q

lint: $(BIN)/glimpse
	$(BIN)/ruff check glimpse_gym agents train tests benchmarks

## bench: throughput benchmarks (training and extraction), printed and saved to runs/bench
bench: $(BIN)/glimpse
	$(BIN)/python benchmarks/bagnet_throughput.py --out runs/bench/bagnet_throughput.json

## default-weights: retrain and export the embedded digits BagNet
default-weights: $(BIN)/glimpse
	$(BIN)/glimpse pretrain-bagnet --dataset digits --epochs 60 --out runs/digits/bagnet.pt
	$(BIN)/glimpse export-bagnet --checkpoint runs/digits/bagnet.pt \
		--out glimpse_gym/weights/digits_bagnet.pt

## mnist-bagnet: the 60x60 cluttered MNIST BagNet of README, and its feature banks
mnist-bagnet: $(BIN)/glimpse
	$(BIN)/glimpse pretrain-bagnet --dataset cluttered-mnist --root $(MNIST_ROOT) \
		--epochs 15 --image-loss 1 --out runs/mnist60/bagnet.pt
	$(BIN)/glimpse extract-features --checkpoint runs/mnist60/bagnet.pt --root $(MNIST_ROOT) \
		--out runs/banks/cluttered-mnist

clean:
	rm -rf $(VENV) runs
