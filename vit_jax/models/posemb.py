"""Resampling position embeddings to another patch grid (224 px -> 384 px).

Three methods, by the name `config.posemb_resample` gives:

- ``zoom_linear`` (the default): vision_transformer's fine-tuning resample,
  ``scipy.ndimage.zoom(grid, (new_h / old_h, new_w / old_w, 1), order=1)``:
  linear, with the corner embeddings of the old and new grids aligned and no
  antialias, so published fine-tuning results start from the same table.
- ``bilinear`` and ``bicubic``: ``jax.image.resize``, half-pixel centres
  (the grid as an image), antialiased when shrinking.
"""
import jax
import jax.numpy as jnp
import numpy as np
import scipy.ndimage


def _zoom_linear(grid, new_grid):
  """vision_transformer's resample; scipy, as there, so the values match it."""
  zoom = (new_grid[0] / grid.shape[0], new_grid[1] / grid.shape[1], 1)
  return scipy.ndimage.zoom(np.asarray(grid), zoom, order=1)


def _jax_resize(method):
  """The grid resized as an image by ``jax.image.resize``'s ``method``."""
  return lambda grid, new_grid: jax.image.resize(grid, new_grid + grid.shape[-1:],
                                                 method)


# Name -> (the (h, w, D) float32 grid, the new (h, w)) -> the resized grid.
RESAMPLE_METHODS = {"zoom_linear": _zoom_linear, "bilinear": _jax_resize("linear"),
                    "bicubic": _jax_resize("cubic")}
# vision_transformer's, so a published checkpoint fine-tunes from the same start.
DEFAULT_METHOD = "zoom_linear"


def grid_size(num_tokens):
  """The side of a square patch grid of ``num_tokens`` tokens."""
  side = int(round(np.sqrt(num_tokens)))
  if side * side != num_tokens:
    raise ValueError(
        f"position embeddings of {num_tokens} patch tokens form no square "
        f"grid; pass the grid (rows, cols) explicitly")
  return side, side


def resample_posemb(posemb, new_grid, *, num_prefix_tokens, old_grid=None,
                    method=DEFAULT_METHOD):
  """Resamples (1, prefix + h*w, D) position embeddings to ``new_grid``.

  The prefix tokens (the class token's embedding) are kept as they are; the
  patch embeddings are viewed as an (h, w, D) image and resized, so a model
  pre-trained at 224 px (14x14 at /16) fine-tunes at 384 px (24x24).
  """
  if method not in RESAMPLE_METHODS:
    raise ValueError(f"config.posemb_resample={method!r}; valid: "
                     f"{', '.join(RESAMPLE_METHODS)}")
  prefix, patches = posemb[:, :num_prefix_tokens], posemb[:, num_prefix_tokens:]
  old_grid = tuple(old_grid or grid_size(patches.shape[1]))
  if old_grid[0] * old_grid[1] != patches.shape[1]:
    raise ValueError(f"position embeddings have {patches.shape[1]} patch "
                     f"tokens, not a {old_grid[0]}x{old_grid[1]} grid")
  new_grid = tuple(new_grid)
  if new_grid == old_grid:
    return posemb
  dim = patches.shape[-1]
  grid = patches.reshape(old_grid + (dim,)).astype(jnp.float32)
  resized = RESAMPLE_METHODS[method](grid, new_grid)
  resized = np.asarray(resized).reshape(1, new_grid[0] * new_grid[1], dim)
  return np.concatenate([np.asarray(prefix), resized.astype(posemb.dtype)], axis=1)
