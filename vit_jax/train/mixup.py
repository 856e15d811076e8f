"""Mixup (Zhang et al. 2018) on a batch that is already on the devices.

Each image is blended with its neighbour in the batch (a roll by one, which
under data-parallel sharding moves one row between neighbouring devices
rather than gathering the batch), and the targets with the same weight.
One weight per batch, drawn from Beta(alpha, alpha) and folded to at least
one half, as big_vision does: each row stays mostly its own example (the
pairs and their targets are the same either way).
Doing it in the jitted train step keeps the host pipeline per-example.
"""
import jax
import jax.numpy as jnp


def mixup(key, images, labels, *, alpha):
  """Returns (mixed images, mixed targets); ``alpha <= 0`` leaves them as is."""
  if alpha <= 0:
    return images, labels
  weight = jax.random.beta(key, alpha, alpha)
  weight = jnp.maximum(weight, 1.0 - weight)
  mix = lambda x: (weight * x + (1.0 - weight) * jnp.roll(x, 1, axis=0)).astype(x.dtype)
  return mix(images), mix(labels)
