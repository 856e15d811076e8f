# `make demo` and `make test` do all the set-up on a fresh machine: a virtual
# environment in .venv, the package and its dependencies, and the demo data.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
DATA_DIR ?= data/tfds
DEMO_DIR ?= runs/demo
FASHION_MNIST := /usr/share/datasets/fashion-mnist
# XLA:CPU asks for gigabytes of fresh scratch memory every step; these glibc
# settings keep freed memory mapped instead of faulting it in again, which
# makes train steps on CPU hosts much faster (docs/cpu_hosts.md; the figures
# are in docs/benchmarks.md). Harmless on accelerators.
export GLIBC_TUNABLES ?= glibc.malloc.hugetlb=1:glibc.malloc.mmap_threshold=33554432:glibc.malloc.trim_threshold=17179869184:glibc.malloc.top_pad=1073741824
export TF_CPP_MIN_LOG_LEVEL ?= 2
# Where the environment forbids bytecode files (PYTHONDONTWRITEBYTECODE), pip
# installs none and every fresh interpreter compiles TensorFlow's modules
# again; the tests and the commands start many, so the venv keeps its bytecode.
unexport PYTHONDONTWRITEBYTECODE

.PHONY: demo test install data clean

$(VENV)/.installed: setup.py
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[test]'
	touch $@

install: $(VENV)/.installed

# Fashion-MNIST's IDX files come from Debian's dataset-fashion-mnist; they are
# turned into a tfds dataset once, offline.
$(FASHION_MNIST)/train-images-idx3-ubyte.gz:
	@if command -v apt-get >/dev/null && [ "$$(id -u)" = 0 ]; then \
	  (apt-get install -y -qq dataset-fashion-mnist || \
	   (apt-get update -qq && apt-get install -y -qq dataset-fashion-mnist)); \
	else \
	  echo "Fashion-MNIST is missing from $(FASHION_MNIST): run 'sudo apt-get install dataset-fashion-mnist'," \
	       "or copy the four *-ubyte.gz files there"; exit 1; \
	fi

data: install $(FASHION_MNIST)/train-images-idx3-ubyte.gz
	$(PY) scripts/prepare_data.py --dataset=fashion_mnist_local --data_dir=$(DATA_DIR) \
	    --manual_dir=$(FASHION_MNIST)

demo: data
	$(PY) -m vit_jax.main --config=configs/demo.py:stage=pretrain,data_dir=$(DATA_DIR) \
	    --workdir=$(DEMO_DIR)/pretrain
	$(PY) -m vit_jax.main \
	    --config=configs/demo.py:stage=finetune,data_dir=$(DATA_DIR),init=$(DEMO_DIR)/pretrain \
	    --workdir=$(DEMO_DIR)/finetune
	$(PY) scripts/summarize.py $(DEMO_DIR)/pretrain $(DEMO_DIR)/finetune

test: data
	$(PY) -m pytest -q -n 2 --durations=15

clean:
	rm -rf $(VENV) $(DEMO_DIR)
