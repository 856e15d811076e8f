"""Classification losses on (batch, classes) logits and float targets.

Targets are one-hot or multi-hot rows (see the `onehot` preprocessing op), so
the same losses serve single-label and multi-label data.
"""
import jax
import jax.numpy as jnp
import optax


def smooth_labels(labels, smoothing):
  """Label smoothing: mixes the targets with the uniform distribution."""
  if not smoothing:
    return labels
  return labels * (1.0 - smoothing) + smoothing / labels.shape[-1]


def softmax_xent(logits, labels):
  """Per-example softmax cross-entropy against (possibly soft) targets."""
  return optax.softmax_cross_entropy(logits.astype(jnp.float32), labels)


def sigmoid_xent(logits, labels):
  """Per-example sigmoid cross-entropy, summed over classes.

  Summing (not averaging) over classes keeps the gradient of each class
  independent of the class count, as the ViT/BiT pre-training code does.
  """
  per_class = optax.sigmoid_binary_cross_entropy(logits.astype(jnp.float32), labels)
  return jnp.sum(per_class, axis=-1)


LOSSES = {"softmax_xent": softmax_xent, "sigmoid_xent": sigmoid_xent}
# The probabilities a model trained with each loss predicts from its logits.
PROBABILITIES = {"softmax_xent": jax.nn.softmax, "sigmoid_xent": jax.nn.sigmoid}


def get_loss(name):
  if name not in LOSSES:
    raise ValueError(f"config.loss={name!r} is not a loss; valid: "
                     f"{', '.join(sorted(LOSSES))}")
  return LOSSES[name]


def labelled(labels):
  """Whether each row of targets holds a label: a class above the row's others.

  A row without one is `off` everywhere (0, or the smoothed ``onehot(...,
  off=1e-4)``'s value), as ImageNet ReaL's images that no real label fits.
  A multi-hot row `on` everywhere holds every class, no class above another:
  its targets are at least one half, which no `off` value reaches. With a
  single class, whose row has no other, a label is a target above 0.
  """
  top = jnp.max(labels, axis=-1)
  if labels.shape[-1] == 1:
    return top > 0
  return (top > jnp.min(labels, axis=-1)) | (top >= 0.5)


def top1_hits(logits, labels):
  """1 where the top-scoring class is a true label, else 0.

  For one-hot targets this is top-1 accuracy; for multi-hot targets it is
  the precision@1 that big_vision reports for multi-label data. A true
  label is one of the row's largest targets in a row that has a label
  (`labelled`), not any target above zero, so that smoothed targets
  (`onehot(..., off=1e-4)` in an eval pipeline) do not count every
  prediction as a hit.
  """
  predicted = jnp.argmax(logits, axis=-1)
  at_prediction = jnp.take_along_axis(labels, predicted[:, None], axis=-1)[:, 0]
  return labelled(labels) & (at_prediction == jnp.max(labels, axis=-1))
