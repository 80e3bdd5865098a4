# Glimpse Gym: every set-up step is here; a fresh machine needs Python 3.10+ and pip only.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
SHARED_DATA ?= ../shared/data
MNIST_ROOT ?= $(SHARED_DATA)
# the 60x60 cluttered-MNIST banks the env and PPO benchmarks read (written by results-cluttered-mnist)
BENCH_BANKS ?= runs/results/cluttered-mnist/banks-s0

define CORE_CHECK
import importlib.util, os, gymnasium as gym, glimpse_gym
missing = [m for m in ("stable_baselines3", "sb3_contrib", "tensorboard", "matplotlib")
           if importlib.util.find_spec(m) is not None]
assert not missing, f"installed without the rl extra, yet present: {missing}"
root = os.environ["DATA_ROOT"]
from glimpse_gym.registration import MULTISCALE_IDS
ids = {**glimpse_gym.ENV_IDS, **{i: d for i, d in MULTISCALE_IDS.items() if "task" in d}}
for env_id, defaults in ids.items():
    kwargs = {}
    if "checkpoint" in defaults or "task" in defaults:  # a task id: a few test images, if any
        if not os.path.isdir(root):
            print(f"{env_id}: skipped, no datasets under {root}")
            continue
        kwargs = {"root": root, "split": "test", "max_images": 32}
    env = gym.make(env_id, **kwargs)
    env.reset(seed=0)
    env.step(0)
    gym.make_vec(env_id, num_envs=8, **kwargs).reset(seed=0)
print("core install:", glimpse_gym.__file__, "- every id works without the rl extra")
endef
export CORE_CHECK

.PHONY: demo test test-core test-slow lint gpu-check bench bench-env bench-multiscale bench-ppo bench-bank-open bench-startup bench-bagnet-tta robustness default-weights mnist-bagnet mnist-rl mnist-saccader mnist-reinforce mnist-evaluate results clean \
	results-cluttered-mnist results-cluttered-mnist-100 results-cluttered-fashion \
	results-multiscale results-multiscale-shipped ablation

$(BIN)/glimpse: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[rl,dev]'
	touch $(BIN)/glimpse

## demo: the main job on the embedded default (offline)
demo: $(BIN)/glimpse
	$(BIN)/glimpse demo --overwrite

## test: the test suite that CI runs (slow tests excluded; see test-slow), then test-core
test: $(BIN)/glimpse
	$(BIN)/python -m pytest -m "not slow" -q
	$(MAKE) test-core

## test-core: install the package without the rl extra into .venv-core; Glimpse-v0 must work
## (the second torch install needs about 6 GB of disk; it is removed once the check passes)
test-core:
	rm -rf .venv-core
	$(PYTHON) -m venv .venv-core
	.venv-core/bin/pip install --quiet --upgrade pip
	.venv-core/bin/pip install --quiet .
	cd .venv-core && DATA_ROOT=$(abspath $(MNIST_ROOT)) GLIMPSE_GYM_CACHE=cache bin/python -c "$$CORE_CHECK"
	rm -rf .venv-core

## test-slow: only the slow tests
test-slow: $(BIN)/glimpse
	$(BIN)/python -m pytest -m slow -q

lint: $(BIN)/glimpse
	$(BIN)/ruff check glimpse_gym agents train tests benchmarks

## bench: throughput benchmarks (training and extraction), printed and saved to runs/bench
bench: $(BIN)/glimpse
	$(BIN)/python benchmarks/bagnet_throughput.py --out runs/bench/bagnet_throughput.json

## gpu-check: on a machine with CUDA: the CUDA tests, then the env benchmarks on cuda (the
## embedded default; JSON into GPU_OUT)
GPU_OUT ?= runs/gpu
gpu-check: $(BIN)/glimpse
	$(BIN)/python -m pytest -q -p no:cacheprovider -rs tests/test_cuda.py
	$(BIN)/python benchmarks/env_throughput.py --device cuda --rounds 3 \
		--out $(GPU_OUT)/env_throughput.json
	$(BIN)/python benchmarks/multiscale_throughput.py --device cuda --rounds 3 \
		--out $(GPU_OUT)/multiscale_throughput.json

## bench-multiscale: MultiScale-v0 against Glimpse-v0 on the same images (writes the 100x100
## multi-scale test bank first if it is missing)
MS_BANK ?= runs/bench/cluttered-mnist-100-ms
bench-multiscale: $(BIN)/glimpse
	test -f $(MS_BANK)/test/multiscale.json || $(BIN)/glimpse extract-features \
		--checkpoint cluttered-mnist-100 --root $(MNIST_ROOT) --split test \
		--scales 0.25,0.5,1 --out $(MS_BANK) --no-progress
	$(BIN)/python benchmarks/multiscale_throughput.py --bank $(MS_BANK)/test \
		--out runs/bench/multiscale_throughput.json

## bench-env / bench-ppo: environment and end-to-end PPO speed on the cluttered-MNIST bank
bench-env: $(BIN)/glimpse
	$(BIN)/python benchmarks/env_throughput.py --bank $(BENCH_BANKS)/train \
		--out runs/bench/env_throughput.json

bench-ppo: $(BIN)/glimpse
	$(BIN)/python benchmarks/ppo_throughput.py --bank $(BENCH_BANKS)/train --saccader \
		--out runs/bench/ppo_throughput.json

## bench-bagnet-tta: BagNet recipes on 60x60 cluttered MNIST, images and time to accuracy
bench-bagnet-tta: $(BIN)/glimpse
	$(BIN)/python benchmarks/bagnet_time_to_accuracy.py --task cluttered-mnist \
		--root $(MNIST_ROOT) --out runs/bench/bagnet-tta --recipe current:epochs=15 \
		--recipe half-b64:epochs=7,batch_size=64 --recipe half:epochs=7

## bench-startup: gym.make("Glimpse-v0") in a fresh process, empty and filled user cache
bench-startup: $(BIN)/glimpse
	$(BIN)/python benchmarks/startup.py --out runs/bench/startup.json

## bench-bank-scale: the vector env on a synthetic ImageNet-geometry bank larger than memory,
## read from disk, against a bank in memory (writes about 1.1x the machine's memory to disk,
## removed at the end)
bench-bank-scale: $(BIN)/glimpse
	$(BIN)/python benchmarks/bank_scale.py --remove --out runs/bench/bank_scale.json

## bench-bank-open: the cost of opening a feature bank (first open hashes it, later ones stat it)
bench-bank-open: $(BIN)/glimpse
	$(BIN)/python benchmarks/bank_open.py --out runs/bench/bank_open.json

## robustness: fuzz and damage trials (invalid input, bit flips, crafted files), counted
robustness: $(BIN)/glimpse
	$(BIN)/python benchmarks/robustness.py --out runs/bench/robustness.json

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

## mnist-rl: MaskablePPO and PPO on the cluttered-MNIST banks (after mnist-bagnet)
mnist-rl: $(BIN)/glimpse
	$(BIN)/glimpse train maskable-ppo --banks runs/banks/cluttered-mnist \
		--total-timesteps 600000 --eval-freq 150000 --out runs/rl/maskable-ppo-cell
	$(BIN)/glimpse train ppo --banks runs/banks/cluttered-mnist \
		--total-timesteps 600000 --eval-freq 150000 --out runs/rl/ppo-cell

## mnist-saccader: the Saccader's steps 2 and 3 on the cluttered-MNIST banks (after mnist-bagnet)
mnist-saccader: $(BIN)/glimpse
	$(BIN)/glimpse train saccader --banks runs/banks/cluttered-mnist --out runs/saccader/mnist \
		--threads 2

## mnist-reinforce: the RAM-style REINFORCE baseline on the cluttered-MNIST banks
mnist-reinforce: $(BIN)/glimpse
	$(BIN)/glimpse train reinforce --banks runs/banks/cluttered-mnist --iterations 3000 \
		--eval-every 500 --out runs/rl/reinforce --threads 2

## mnist-evaluate: every policy on the cluttered-MNIST test split (after the trainings)
mnist-evaluate: $(BIN)/glimpse
	$(BIN)/glimpse evaluate --bank runs/banks/cluttered-mnist/test \
		--checkpoint runs/mnist60/bagnet.pt --out runs/eval/mnist \
		--policy saccader=runs/saccader/mnist/policy.pt \
		--policy maskable-ppo=runs/rl/maskable-ppo-cell/last.zip \
		--policy ppo=runs/rl/ppo-cell/last.zip --policy reinforce=runs/rl/reinforce/best.pt \
		--policy ordered-logits --policy random --policy centre

## results-TASK: a standard task's table over 3 seeds (BagNet, banks, agents, evaluation,
## combination) into runs/results/TASK; a step already done is skipped
results-cluttered-mnist: $(BIN)/glimpse
	$(BIN)/glimpse results --task cluttered-mnist --root $(MNIST_ROOT)

results-cluttered-fashion: $(BIN)/glimpse
	$(BIN)/glimpse results --task cluttered-fashion --root $(MNIST_ROOT)

results-cluttered-mnist-100: $(BIN)/glimpse
	$(BIN)/glimpse results --task cluttered-mnist-100 --root $(MNIST_ROOT)

## results-multiscale: the tables across scales (60x60 and 100x100 cluttered MNIST, 3 seeds)
results-multiscale: $(BIN)/glimpse
	$(BIN)/glimpse results --task cluttered-mnist --multiscale --root $(MNIST_ROOT)
	$(BIN)/glimpse results --task cluttered-mnist-100 --multiscale --root $(MNIST_ROOT)

## results-multiscale-shipped: the same across scales on the shipped BagNets (no BagNet
## training: the half size from the BagNet across scales, the full size from the full-size one)
results-multiscale-shipped: $(BIN)/glimpse
	$(BIN)/glimpse results --task cluttered-mnist --multiscale --bagnet shipped --root $(MNIST_ROOT)
	$(BIN)/glimpse results --task cluttered-mnist-100 --multiscale --bagnet shipped --root $(MNIST_ROOT)

## ablation: soft-attention BagNets (NAM, NAM+spatial, ADCM) against plain ones, 3 seeds, on
## 60x60 cluttered MNIST and Fashion-MNIST, with the short recipe of docs/results.md
ABLATION_RECIPE = --bagnet-epochs 3 --interpretability-images 1000 \
	--agent-option saccader=--location-epochs=1 --agent-option saccader=--policy-epochs=2
ablation: $(BIN)/glimpse
	$(BIN)/glimpse ablation --task cluttered-mnist --root $(MNIST_ROOT) $(ABLATION_RECIPE)
	$(BIN)/glimpse ablation --task cluttered-fashion --root $(MNIST_ROOT) $(ABLATION_RECIPE)

## results: every task's table, then the benchmarks of docs/performance.md
results: results-cluttered-mnist results-cluttered-fashion results-cluttered-mnist-100 bench \
		bench-env bench-ppo

clean:
	rm -rf $(VENV) .venv-core runs
