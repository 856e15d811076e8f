# `make demo` and `make test` do all the set-up on a fresh machine: a virtual
# environment in .venv, the package and its dependencies, and the demo data.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
DATA_DIR ?= data/tfds
DEMO_DIR ?= runs/demo
FASHION_MNIST := /usr/share/datasets/fashion-mnist
# What `make data` prepares: tfds names, a builder config after a slash.
DATASETS := fashion_mnist_local,fashion_mnist_halves/first5,fashion_mnist_halves/last5,sklearn_digits
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
# turned into tfds datasets once, offline: the whole of it, and its two halves
# of five classes (the demo pre-trains on one and transfers to the other).
# scikit-learn's 8x8 digits, the demo's other transfer task, come inside its
# wheel. Datasets already in $(DATA_DIR) are left as they are.
$(FASHION_MNIST)/train-images-idx3-ubyte.gz:
	@if command -v apt-get >/dev/null && [ "$$(id -u)" = 0 ]; then \
	  (apt-get install -y -qq dataset-fashion-mnist || \
	   (apt-get update -qq && apt-get install -y -qq dataset-fashion-mnist)); \
	else \
	  echo "Fashion-MNIST is missing from $(FASHION_MNIST): run 'sudo apt-get install dataset-fashion-mnist'," \
	       "or copy the four *-ubyte.gz files there"; exit 1; \
	fi

data: install $(FASHION_MNIST)/train-images-idx3-ubyte.gz
	$(PY) scripts/prepare_data.py --data_dir=$(DATA_DIR) --manual_dir=$(FASHION_MNIST) \
	    --dataset=$(DATASETS)

# Pre-train on five Fashion-MNIST classes, then the transfer suite on tasks the
# pre-training never saw; the last lines are its table (configs/transfer.py).
demo: data
	$(PY) -m vit_jax.main --workdir=$(DEMO_DIR)/pretrain \
	    --config=configs/demo.py:stage=pretrain,data=fashion_mnist_first5,data_dir=$(DATA_DIR)
	$(PY) -m vit_jax.transfer --workdir=$(DEMO_DIR)/transfer \
	    --config=configs/transfer.py:suite=demo,data_dir=$(DATA_DIR),init=$(DEMO_DIR)/pretrain

test: data
	$(PY) -m pytest -q -n 2 --durations=15

clean:
	rm -rf $(VENV) $(DEMO_DIR)
