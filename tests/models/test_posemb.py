"""Position-embedding resampling: vision_transformer's zoom, and the choice of method."""
import numpy as np
import pytest
import scipy.ndimage

from configs import common
from vit_jax.models import posemb


def test_zoom_linear_is_the_default_of_the_configs_and_the_function():
  assert common.base_config().posemb_resample == "zoom_linear"
  table = np.random.RandomState(0).randn(1, 1 + 4, 3).astype(np.float32)
  np.testing.assert_array_equal(
      posemb.resample_posemb(table, (3, 3), num_prefix_tokens=1),
      posemb.resample_posemb(table, (3, 3), num_prefix_tokens=1, method="zoom_linear"))


@pytest.mark.parametrize("old, new", [(14, 24), (24, 14)])
def test_zoom_linear_equals_vision_transformers_scipy_zoom(old, new):
  """vision_transformer's checkpoint.py: zoom (new/old, new/old, 1), order 1."""
  table = np.random.RandomState(0).randn(1, 1 + old * old, 16).astype(np.float32)
  out = posemb.resample_posemb(table, (new, new), num_prefix_tokens=1)
  assert out.shape == (1, 1 + new * new, 16) and out.dtype == np.float32
  np.testing.assert_array_equal(out[:, :1], table[:, :1])
  expected = scipy.ndimage.zoom(table[0, 1:].reshape(old, old, 16),
                                (new / old, new / old, 1), order=1)
  np.testing.assert_allclose(out[0, 1:], expected.reshape(new * new, 16),
                             rtol=1e-6, atol=1e-6)


def test_zoom_linear_of_a_2x2_grid_aligns_the_corners():
  # a=0, b=1 (row 0), c=2, d=3 (row 1): the new samples sit at 0, 1/3, 2/3
  # and 1 of the old grid, so the corners are kept exactly.
  table = np.arange(4, dtype=np.float32).reshape(1, 4, 1)
  out = posemb.resample_posemb(table, (4, 4), num_prefix_tokens=0).reshape(4, 4)
  axis = np.array([0.0, 1 / 3, 2 / 3, 1.0])
  np.testing.assert_allclose(out, 2 * axis[:, None] + axis[None, :], atol=1e-6)
  assert (out[0, 0], out[0, -1], out[-1, 0], out[-1, -1]) == (0, 1, 2, 3)


def test_zoom_linear_of_a_non_square_grid():
  table = np.random.RandomState(1).randn(1, 1 + 6, 4).astype(np.float32)
  out = posemb.resample_posemb(table, (4, 6), num_prefix_tokens=1, old_grid=(2, 3))
  expected = scipy.ndimage.zoom(table[0, 1:].reshape(2, 3, 4), (2, 2, 1), order=1)
  np.testing.assert_allclose(out[0, 1:], expected.reshape(24, 4), atol=1e-6)


def test_zoom_linear_zooms_rows_and_columns_each_by_its_own_factor():
  """2x3 -> 4x3: the rows zoomed by 2, the columns by 1, so each column is
  its two rows interpolated at 0, 1/3, 2/3 and 1. A zoom that took one
  axis's factor for the other's would give a 2x6 grid, of the same count."""
  table = np.random.RandomState(3).randn(1, 1 + 6, 4).astype(np.float32)
  out = posemb.resample_posemb(table, (4, 3), num_prefix_tokens=1, old_grid=(2, 3))
  grid = table[0, 1:].reshape(2, 3, 4)
  at = np.array([0, 1 / 3, 2 / 3, 1])[:, None, None]
  np.testing.assert_allclose(out[0, 1:].reshape(4, 3, 4), (1 - at) * grid[0] + at * grid[1],
                             atol=1e-6)
  np.testing.assert_array_equal(out[:, :1], table[:, :1])


def test_an_unknown_method_names_the_valid_ones():
  table = np.zeros((1, 1 + 16, 4), np.float32)
  with pytest.raises(ValueError, match=r"^config.posemb_resample='linear'; valid: "
                     r"zoom_linear, bilinear, bicubic$"):
    posemb.resample_posemb(table, (8, 8), num_prefix_tokens=1, method="linear")
