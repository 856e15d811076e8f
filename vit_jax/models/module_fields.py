"""A model module built from its defaults and a config's overrides, by name.

Every family's ``get_model`` takes ``config.model``'s fields as keyword
overrides; a name the module has no field for is an error listing the valid
ones, and dtypes may be strings ('bfloat16') because configs hold strings.
"""
import dataclasses

import jax.numpy as jnp

_DTYPE_FIELDS = ('dtype', 'param_dtype')


def field_names(module_cls):
  """The configurable fields of a flax module class (not flax's parent/name)."""
  return [f.name for f in dataclasses.fields(module_cls) if f.name not in ('parent', 'name')]


def build(module_cls, defaults, overrides):
  """``module_cls(**defaults)`` with ``overrides`` replacing fields by name."""
  fields = field_names(module_cls)
  unknown = sorted(set(overrides) - set(fields))
  if unknown:
    raise ValueError(
        f'unknown {module_cls.__name__} field(s) {", ".join(map(repr, unknown))}; '
        f'valid: {", ".join(fields)}')
  kwargs = {**defaults, **overrides}
  for key in _DTYPE_FIELDS:
    if key in kwargs:
      try:
        kwargs[key] = jnp.dtype(kwargs[key])
      except TypeError:
        # numpy's "data type 'bf16' not understood" names neither the field
        # nor what it takes.
        raise ValueError(f'{module_cls.__name__} field {key}={kwargs[key]!r} is no '
                         f"dtype; e.g. 'float32', 'bfloat16', 'float16'") from None
  return module_cls(**kwargs)
