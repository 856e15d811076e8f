"""Resampling position embeddings to another patch grid (224 px -> 384 px)."""
import jax
import jax.numpy as jnp
import numpy as np

RESAMPLE_METHODS = {"bilinear": "linear", "bicubic": "cubic"}


def grid_size(num_tokens):
  """The side of a square patch grid of ``num_tokens`` tokens."""
  side = int(round(np.sqrt(num_tokens)))
  if side * side != num_tokens:
    raise ValueError(
        f"position embeddings of {num_tokens} patch tokens form no square "
        f"grid; pass the grid (rows, cols) explicitly")
  return side, side


def resample_posemb(posemb, new_grid, *, num_prefix_tokens, old_grid=None,
                    method="bilinear"):
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
  image = patches.reshape(old_grid + (dim,)).astype(jnp.float32)
  resized = jax.image.resize(image, new_grid + (dim,), RESAMPLE_METHODS[method])
  resized = resized.reshape(1, new_grid[0] * new_grid[1], dim).astype(posemb.dtype)
  return np.concatenate([np.asarray(prefix), np.asarray(resized)], axis=1)
