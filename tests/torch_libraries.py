"""torch, timm and transformers for the tests that compare against them."""
import pytest

from vit_jax.models import timm_format


def library(name):
  """``name`` imported as the code under test imports it, or the test skipped.

  Through `timm_format.require`, which keeps torch's triton from loading
  after TensorFlow (that crashes the process): the tests of one pytest
  worker have imported TensorFlow before.
  """
  try:
    return timm_format.require(name, purpose="this test")
  except timm_format.MissingPackageError:
    pytest.skip(f"{name} is not installed")
