"""Picking one of an op's implementations by name, ``auto`` by backend.

The model's attention, LayerNorm and Dense matmuls each have a CPU-friendly
formulation and the one accelerators run best; a config field names one or
leaves it to ``auto``.
"""
import jax


def resolve(field: str, implementation: str, valid, *, on_cpu: str, elsewhere: str,
            on_gpu: str | None = None) -> str:
  """The concrete implementation that ``implementation`` stands for.

  ``auto`` is ``on_cpu`` when JAX's default backend is the CPU, ``on_gpu``
  (when given) on a GPU, and ``elsewhere`` otherwise; a name not in ``valid``
  is an error naming the config ``field`` and the valid names.
  """
  if implementation not in valid:
    raise ValueError(f'unknown {field} {implementation!r}; valid: {", ".join(valid)}')
  if implementation == 'auto':
    by_backend = {'cpu': on_cpu, 'gpu': on_gpu or elsewhere}
    return by_backend.get(jax.default_backend(), elsewhere)
  return implementation
