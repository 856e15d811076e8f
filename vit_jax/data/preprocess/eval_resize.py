"""How an evaluation preprocessing string brings an image to the model's size,
in the terms the PyTorch libraries state it (timm's `crop_pct`, Hugging
Face's image processors).

Exports write it beside the weights, so a timm or transformers user who
evaluates the model resizes and crops as the run did: a pre-training run's
``resize_small(256)|central_crop(224)`` is timm's ``crop_pct=0.875``, not
the 1.0 of a fine-tuning run's ``resize(224)``.
"""
import dataclasses
import math

from vit_jax.data.preprocess import registry

SQUASH = "squash"  # `resize`: both sides to the size, the aspect ratio given up
SHORTER_SIDE = "shorter_side"  # `resize_small`: the shorter side, the aspect kept
_RESIZES = {"resize": SQUASH, "resize_small": SHORTER_SIDE}
# Ops that place the image otherwise than a resize and a central crop would.
_OTHER_GEOMETRY = ("random_crop", "inception_crop", "decode_jpeg_and_inception_crop",
                   "flip_lr", "randaug")


@dataclasses.dataclass(frozen=True)
class EvalResize:
  """A resize of ``mode`` (`SQUASH` or `SHORTER_SIDE`) to ``resize_to``
  pixels by ``method`` (TensorFlow's name), then a central ``crop``
  (``resize_to`` where there is none)."""
  mode: str
  resize_to: int
  crop: int
  method: str

  @property
  def crop_pct(self):
    """crop / resize_to, as timm and transformers state it: the largest
    float from which their floor(crop / crop_pct) gives back resize_to."""
    pct = self.crop / self.resize_to
    while math.floor(self.crop / pct) < self.resize_to:
      pct = math.nextafter(pct, 0)
    return pct


def _square(size):
  """An int of a square size (224, or (224, 224)), else None."""
  if isinstance(size, int):
    return size
  if isinstance(size, (tuple, list)) and len(size) == 2 and size[0] == size[1]:
    return int(size[0])
  return None


def of_preprocessing(pp_spec, image_size):
  """The `EvalResize` of ``pp_spec``, or None where it is no resize to a
  square (and central crop) that ends at ``image_size`` (no resize at all,
  a random crop, a crop without a resize)."""
  steps = []
  for piece in filter(str.strip, pp_spec.split("|")):
    name, bound = registry.bound_arguments(piece, pp_spec)
    if name in _OTHER_GEOMETRY:
      return None
    if name in _RESIZES or name == "central_crop":
      steps.append((name, bound.arguments))
  if not steps or steps[0][0] not in _RESIZES or len(steps) > 2:
    return None
  (name, resize), *crop = steps
  resize_to = _square(resize.get("size", resize.get("smaller_size")))
  if crop and crop[0][0] != "central_crop":
    return None
  side = _square(crop[0][1]["size"]) if crop else resize_to
  if resize_to is None or side != image_size or side > resize_to:
    return None
  return EvalResize(_RESIZES[name], resize_to, side, resize["method"])
