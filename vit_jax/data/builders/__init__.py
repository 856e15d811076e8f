"""TFDS builders for datasets prepared from local files, never downloaded.

Importing this package registers every builder with tfds, so that
`tfds.builder(name)` and `tfds.load(name)` find them by name:

  fashion_mnist_local          Fashion-MNIST, from Debian's IDX files
  fashion_mnist_halves/first5  its classes 0-4, from the same files
  fashion_mnist_halves/last5   its classes 5-9, relabelled 0-4
  sklearn_digits               scikit-learn's bundled 8x8 digits
"""
from vit_jax.data.builders import fashion_mnist_local  # noqa: F401 (registers)
from vit_jax.data.builders import fashion_mnist_halves  # noqa: F401 (registers)
from vit_jax.data.builders import sklearn_digits  # noqa: F401 (registers)
