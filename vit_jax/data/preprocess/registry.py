"""The op registry, the spec parser and the per-example seeds random ops draw from.

Random ops are stateless: each one draws its seed from the per-example key
``features['_rng']`` (attached by `add_example_seeds`), so an input pipeline
yields the same augmented examples every time it is replayed from the same
position, which makes training reproducible and resumable.
"""
import ast
import inspect
from collections.abc import Callable

import tensorflow as tf

Features = dict[str, tf.Tensor]
Op = Callable[[Features], Features]

RNG_KEY = "_rng"

_REGISTRY: dict[str, Callable[..., Op]] = {}


def register(name: str) -> Callable[[Callable[..., Op]], Callable[..., Op]]:
  """Makes an op factory usable by `name` in spec strings."""

  def decorator(factory: Callable[..., Op]) -> Callable[..., Op]:
    if name in _REGISTRY:
      raise ValueError(f"Preprocessing op {name!r} is already registered.")
    _REGISTRY[name] = factory
    return factory

  return decorator


def registered_ops() -> list[str]:
  """Names usable in spec strings, sorted, for error messages and docs."""
  return sorted(_REGISTRY)


def parse(spec: str) -> Op:
  """Builds the function that applies the '|'-separated ops of `spec` in order.

  Each piece is an op name, bare (``flip_lr``) or called with literal
  arguments (``resize(224, method='bicubic')``). The returned function drops
  '_rng' from its result, so seeds never leak into batches.

  Raises:
    ValueError: if a piece is not an op call, names an unknown op, or its
      arguments do not fit the op.
  """
  ops = [] if not spec.strip() else [
      _parse_op(piece, spec) for piece in spec.split("|")]

  def apply_all(features: Features) -> Features:
    for op in ops:
      features = op(features)
    return {k: v for k, v in features.items() if k != RNG_KEY}

  return apply_all


def _parse_op(piece: str, spec: str) -> Op:
  """Turns one piece of `spec`, e.g. ``resize(224)``, into a ready op."""
  name, bound = bound_arguments(piece, spec)
  try:
    return _REGISTRY[name](*bound.args, **bound.kwargs)
  except TypeError as e:
    raise ValueError(f"Bad arguments in preprocessing op {piece.strip()!r}: {e}") from e


def bound_arguments(piece: str, spec: str) -> tuple[str, inspect.BoundArguments]:
  """(op name, its arguments with the op's defaults) of one piece of `spec`.

  Raises ValueError where the piece is no call of a registered op with
  literal arguments it takes, naming the arguments it does take.
  """
  piece = piece.strip()
  if not piece:
    raise ValueError(f"Malformed preprocessing spec {spec!r}: empty op "
                     "between '|' separators.")
  try:
    node = ast.parse(piece, mode="eval").body
  except SyntaxError:
    raise ValueError(f"Malformed preprocessing op {piece!r}: not a call "
                     "like name(arg, key=value).") from None
  if isinstance(node, ast.Name):
    name, args, kwargs = node.id, [], {}
  elif isinstance(node, ast.Call) and isinstance(node.func, ast.Name):
    name = node.func.id
    try:
      args = [ast.literal_eval(a) for a in node.args]
      kwargs = {k.arg: ast.literal_eval(k.value) for k in node.keywords}
    except ValueError:
      raise ValueError(f"Malformed preprocessing op {piece!r}: arguments must "
                       "be Python literals.") from None
    if None in kwargs:
      raise ValueError(f"Malformed preprocessing op {piece!r}: '**' is not "
                       "supported.")
  else:
    raise ValueError(f"Malformed preprocessing op {piece!r}: expected a name "
                     "or a call like name(arg, key=value).")
  if name not in _REGISTRY:
    raise ValueError(f"Unknown preprocessing op {name!r} in {piece!r}; "
                     f"registered ops: {', '.join(registered_ops())}.")
  signature = inspect.signature(_REGISTRY[name])
  try:
    bound = signature.bind(*args, **kwargs)
  except TypeError as e:  # big_vision's ops take some arguments these do not
    accepted = ", ".join(
        p.name if p.default is p.empty else f"{p.name}={p.default!r}"
        for p in signature.parameters.values())
    raise ValueError(f"Bad arguments in preprocessing op {piece!r}: {e}; it takes "
                     f"{name}({accepted})") from None
  bound.apply_defaults()
  return name, bound


def add_example_seeds(ds: tf.data.Dataset, seed: int) -> tf.data.Dataset:
  """Attaches to element i of `ds` the random key fold_in([0, seed], i).

  The key depends only on `seed` and the element's position, so replaying
  the dataset (or skipping to a position on resume) gives identical
  augmentations. Apply it after `repeat()` so that each epoch's pass over an
  example draws fresh randomness.
  """
  base = tf.constant([0, seed], tf.int64)

  def attach(index, features):
    rng = tf.random.experimental.stateless_fold_in(base, index)
    return {**features, RNG_KEY: rng}

  return ds.enumerate().map(attach, num_parallel_calls=tf.data.AUTOTUNE,
                            deterministic=True)


class UnseededRandomOp(ValueError):
  """A random op applied to examples without seeds (an eval pipeline's)."""

  def __init__(self, op_name):
    super().__init__(
        f"Preprocessing op {op_name!r} is random and needs a per-example seed "
        f"in features[{RNG_KEY!r}]; attach one with "
        "preprocess.add_example_seeds(ds, seed) before mapping.")
    self.op_name = op_name


def take_seed(features: Features, op_name: str) -> tuple[Features, tf.Tensor]:
  """Splits '_rng' into a seed for this op and a fresh key for later ops.

  Consuming the key this way gives every random op in a spec (even the same
  op twice) its own independent seed.
  """
  if RNG_KEY not in features:
    raise UnseededRandomOp(op_name)
  next_rng, op_seed = tf.unstack(
      tf.random.experimental.stateless_split(features[RNG_KEY], num=2))
  return {**features, RNG_KEY: next_rng}, op_seed


def on_image(fn: Callable[[tf.Tensor], tf.Tensor]) -> Op:
  """Lifts an image -> image function to an op over features['image']."""

  def op(features: Features) -> Features:
    return {**features, "image": fn(features["image"])}

  return op
