"""TFDS builders for datasets prepared from local files, never downloaded.

Importing this package registers every builder with tfds, so that
`tfds.builder(name)` and `tfds.load(name)` find them by name.
"""
from vit_jax.data.builders import fashion_mnist_local  # noqa: F401 (registers)
