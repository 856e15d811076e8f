"""Runs an exported ViT classifier with nothing but jax and numpy.

``scripts/export.py --format=serving --out=DIR`` writes three files to DIR:

  function.jaxexport  the inference function (params, images) -> logits as
                      serialized StableHLO (`jax.export`), batch size symbolic;
  params.npz          its parameters, in the published ViT layout;
  contract.json       what goes in and comes out: input shape and value range,
                      the run's eval preprocessing (config.pp.eval),
                      number and names of the classes, and how logits become
                      probabilities.

The weights travel beside the function rather than inside it, so the
artefact has no 2 GB limit and the .npz is the one that `--format=npz` writes.
This file imports neither the model code nor the configs: a serving process
depends on the artefact alone, and may load this module by its path.

  classifier = serving.load("exported/")
  logits = classifier(images)  # float32 (batch, H, W, 3), see the contract
"""
import json
import os

import jax
import numpy as np
from jax import export

FUNCTION_FILE = "function.jaxexport"
PARAMS_FILE = "params.npz"
CONTRACT_FILE = "contract.json"


class Classifier:
  """An exported classifier: call it on preprocessed images to get logits."""

  def __init__(self, directory):
    with open(os.path.join(directory, CONTRACT_FILE)) as f:
      self.contract = json.load(f)
    with open(os.path.join(directory, FUNCTION_FILE), "rb") as f:
      exported = export.deserialize(bytearray(f.read()))
    with np.load(os.path.join(directory, PARAMS_FILE), allow_pickle=False) as data:
      params = {name: data[name] for name in data.files}
    # On the device once, not with every call.
    self._params = jax.device_put(params)
    self._logits = jax.jit(exported.call)

  @property
  def class_names(self):
    """Class names by class index, or None when the dataset had none."""
    return self.contract["class_names"]

  def __call__(self, images):
    """Logits (batch, num_classes) of images preprocessed as the contract says."""
    images = np.asarray(images, np.float32)
    size, channels = self.contract["image_size"], self.contract["channels"]
    if images.ndim != 4 or images.shape[1:] != (size, size, channels):
      raise ValueError(f"expected images of shape (batch, {size}, {size}, {channels}) "
                       f"in {self.contract['value_range']}, got {images.shape}")
    return np.asarray(self._logits(self._params, images))


def load(directory):
  """The classifier that `scripts/export.py --format=serving` wrote to ``directory``."""
  return Classifier(directory)
