"""Installs vit_jax: Vision Transformers pre-trained and fine-tuned with JAX."""
import setuptools

# scripts/benchmark.py --compare-timm. On a CPU-only box install torch's CPU
# build first, or pip pulls the CUDA one. timm 1.0.16 is the first whose
# attention pooling leaves register tokens out, as ours does.
TIMM = ["timm>=1.0.16", "torch>=2.4", "torchvision"]

setuptools.setup(
    name="vit_jax",
    version="0.1.0",
    description="Pre-train and fine-tune Vision Transformers in JAX/Flax, "
                "sharded over every device of one or many hosts.",
    python_requires=">=3.11",
    packages=setuptools.find_packages(include=["vit_jax", "vit_jax.*", "configs"]),
    install_requires=[
        "jax>=0.10",
        "flax>=0.12",
        "optax>=0.2.8",
        "orbax-checkpoint>=0.12",
        "tensorflow-cpu>=2.21",  # tf.data input pipelines and tf.summary events
        "tensorflow-datasets>=4.9.10",
        "importlib_resources",  # tfds 4.9.10 imports it without declaring it
        "tensorboard>=2.21",  # the TensorBoard event writer behind tf.summary
        "ml-collections>=1.1",
        "absl-py>=2.0",
        "numpy>=2.0",
        "matplotlib>=3.8",  # scripts/plot_metrics.py
        "safetensors>=0.4",  # timm and Hugging Face checkpoints, read with numpy
        # The demo's second transfer task: load_digits' 8x8 digits, inside the
        # wheel, so the sklearn_digits tfds dataset is prepared offline.
        "scikit-learn>=1.3",
    ],
    extras_require={
        "test": ["pytest>=8", "pytest-xdist>=3", "pillow"],
        "cuda12": ["jax[cuda12]>=0.10"],
        "tpu": ["jax[tpu]>=0.10"],
        "timm": TIMM,
        # .pth state dicts in, and the checks that timm and transformers load
        # our exports with the same logits (tests skip them without these).
        "interop": TIMM + ["transformers>=4.40"],
    },
)
