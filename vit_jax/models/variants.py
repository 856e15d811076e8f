"""A model by its variant name, whichever family it belongs to.

  'B/16'        a Vision Transformer (`vit`)
  'R50x1'       a BiT ResNet-v2 of depth 50 and width factor 1 (`bit`)
  'R50x1+B/16'  a hybrid: a ViT-B whose patches are the cells of a ResNet-50
                stem's feature map, 16 image pixels on a side (`vit` with
                `resnet_stem`)

Configs name a model only by ``config.variant``, so this is the one place
that tells the families apart.
"""
import re

from vit_jax.models import bit, vit

_HYBRID_RE = re.compile(r'^R(?P<depth>[0-9]+)x(?P<width>[0-9]+)\+(?P<vit>[A-Za-z0-9]+/[0-9]+)$')


# A hybrid's patch side in pixels -> the ResNet stages its stem keeps.
_STAGES_BY_PATCH = {4: 1, 8: 2, 16: 3, 32: 4}


def hybrid_stem_blocks(depth: int, patch: int) -> tuple[int, ...]:
  """The units per stage of a hybrid's stem, for a ViT patch of ``patch`` pixels.

  The paper's section 4.1: /32 takes the output of stage 4 of the ResNet;
  /16 removes stage 4 and puts its units into stage 3 (R50: 3, 4, 9), which
  keeps the depth and gives a 4x longer sequence. /8 and /4 (small images)
  fold the later stages into stage 2 or 1 alike; a larger multiple of 32
  groups 2x2 (or more) cells of stage 4's map into one patch.
  """
  units = bit.VARIANTS[depth]
  stages = 4 if patch % 32 == 0 else _STAGES_BY_PATCH.get(patch)
  if stages is None:
    raise ValueError(f'a hybrid patch of {patch} pixels is none of 4, 8, 16 '
                     f'(1-3 ResNet stages) nor a multiple of 32 (four stages)')
  return (*units[:stages - 1], sum(units[stages - 1:]))


def display_name(variant: str) -> str:
  """The model as the papers name it: ViT-B/16, BiT-R50x1, R50x1+ViT-B/16."""
  if bit.VARIANT_RE.match(variant):
    return f'BiT-{variant}'
  stem, plus, vit_variant = variant.rpartition('+')
  return f'{stem}{plus}ViT-{vit_variant}'


def get_model(variant: str, *, num_classes: int, **overrides):
  """The model that ``variant`` names; ``overrides`` replace its fields."""
  if isinstance(variant, str) and bit.VARIANT_RE.match(variant):
    return bit.get_model(variant, num_classes=num_classes, **overrides)
  hybrid = _HYBRID_RE.match(variant) if isinstance(variant, str) else None
  # The stem's widths are BiT's: a slip such as 'R50x11+B/16' would otherwise
  # build an 11x wider stem without a word.
  if (hybrid and int(hybrid['depth']) in bit.VARIANTS
      and int(hybrid['width']) in bit.WIDTH_FACTORS):
    patch = int(hybrid['vit'].split('/')[1])
    stem = dict(resnet_blocks=hybrid_stem_blocks(int(hybrid['depth']), patch),
                resnet_width=int(hybrid['width']))
    return vit.get_model(hybrid['vit'], num_classes=num_classes, **{**stem, **overrides})
  if hybrid:
    raise ValueError(
        f'unknown hybrid {variant!r}; valid: R{{depth}}x{{width}}+ViT with depth '
        f'one of {", ".join(map(str, bit.VARIANTS))} and width one of '
        f'{", ".join(map(str, bit.WIDTH_FACTORS))}, e.g. R50x1+B/16')
  return vit.get_model(variant, num_classes=num_classes, **overrides)
