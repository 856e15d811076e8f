"""Preprocessing ops, registered by name and composed from a spec string.

Configs describe input processing as text, e.g.
``"decode|inception_crop(224)|flip_lr|value_range(-1,1)|onehot(10)"``, so an
experiment's augmentation can be changed from the command line without code.
`parse` turns such a spec into one function over a features dict of tf tensors;
it works eagerly and inside `tf.data.Dataset.map`.

The ops live by kind: `registry` (the registry, the parser and per-example
seeds), `image_ops` (decoding, crops, resizes, flips), `general_ops`
(value ranges, labels, feature selection) and `randaug` (RandAugment).
Importing this package registers all of them.
"""
from vit_jax.data.preprocess import general_ops, image_ops, randaug  # noqa: F401  (register)
from vit_jax.data.preprocess.registry import (  # noqa: F401  (the API)
    RNG_KEY, UnseededRandomOp, add_example_seeds, parse, register, registered_ops)
