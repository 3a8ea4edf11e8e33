# Two doors: `make demo` (the main job on the built-in corpus) and `make test`.
# Both create .venv and install the pinned set (constraints.txt) on first use.
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-stamp
# Compiled DeepSpeed ops and Triton caches stay inside the checkout.
export TORCH_EXTENSIONS_DIR ?= $(CURDIR)/.cache/torch_extensions
export TRITON_CACHE_DIR ?= $(CURDIR)/.cache/triton
export HF_HUB_OFFLINE := 1
export WANDB_MODE ?= offline

.PHONY: install demo test test-slow test-slurm test-cpu-kernels lint bench-data peers-env bench-quant

$(STAMP): pyproject.toml constraints.txt
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -c constraints.txt torch
	$(PY) -m pip install -q -c constraints.txt -e '.[dev]'
	touch $(STAMP)

install: $(STAMP)

demo: install
	$(PY) -m seed_asr.demo

test: install
	$(PY) -m pytest -m "not slow" -q

# The tests that measure a training or quantization effect, again with torch's AVX2 and its plain
# (non-vectorised) CPU kernels forced: a verdict must not depend on which CPU runs it.
KERNEL_SENSITIVE := tests/unit/test_rl_step.py tests/integration/test_stage_overfit.py \
	tests/unit/test_ssl_step.py tests/decoupleq/test_dq_solver.py tests/decoupleq/test_dq_driver.py \
	tests/decoupleq/test_dq_gptq_reference.py
test-cpu-kernels: install
	for kernels in avx2 default; do \
		ATEN_CPU_CAPABILITY=$$kernels $(PY) -m pytest -m "not slow" -q $(KERNEL_SENSITIVE) || exit 1; \
	done

test-slow: install
	$(PY) -m pytest -m slow -q

lint: install
	$(PY) -m ruff check seed_asr decoupleq scripts tests

bench-data: install
	$(PY) scripts/bench_data.py

# Other projects' quantizers for scripts/bench_quant.py: HQQ in .venv, llmcompressor (which pins its
# own transformers) in .venv-peers.
PEERS_VENV ?= .venv-peers
peers-env: install
	$(PY) -m pip install -q -c constraints.txt -e '.[peers]'
	test -x $(PEERS_VENV)/bin/python || python3 -m venv $(PEERS_VENV)
	$(PEERS_VENV)/bin/python -m pip install -q -c constraints.txt torch
	$(PEERS_VENV)/bin/python -m pip install -q llmcompressor==0.14.0.1

# decoupleQ against RTN, GPTQ, HQQ and llmcompressor's GPTQ on a 21.5 M-parameter Llama trained on the
# Python standard library's sources (BENCHMARKS.md).
bench-quant: peers-env
	PYTHONPATH=. $(PY) scripts/bench_quant.py --threads 2 --hidden 512 --layers 8 --steps 600 \
		--text stdlib --eval-windows 512 \
		--cache .cache/bench_quant --llmcompressor-python $(PEERS_VENV)/bin/python \
		--work-dir .cache/bench_quant/work --json bench_quant.json

test-slurm: install
	$(PY) -m pytest -m slurm -q
