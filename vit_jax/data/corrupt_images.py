"""Corrupt images: found cheaply, then skipped, blanked or named, behind one call.

Real datasets hold a few truncated, empty or foreign files. The pipeline
finds them in two steps, both in `prepared`: a cheap check of the encoded
bytes (`is_decodable`: a few byte comparisons, no decoding), run on every
record before anything else, also on those a resumed run skips; and, for
the rare file with intact markers and a damaged body, the decoding itself.
What becomes of such an image is the caller's choice: training skips it
(and counts it), evaluation scores a blank stand-in (every process must
yield the same number of examples), and ``config.data.strict`` stops the
run naming the file and record.
"""
import tensorflow as tf

from vit_jax.data import checks
from vit_jax.data.preprocess.image_ops import JPEG_START

# Examples per small dataset that contains decode errors (`_decoded`).
_DECODE_WINDOW = 16
_DECODABLE = "_decodable"  # whether an encoded image passed `is_decodable`
_CORRUPT = "_corrupt"  # 'blank': whether an image was replaced by the blank one

_SIGNATURES = {  # format: (leading bytes, trailing marker, bytes it may sit from the end)
    "jpeg": (JPEG_START, b"\xff\xd9", 32),  # some writers pad after EOI
    "png": (b"\x89PNG\r\n\x1a\n", b"IEND", 8),  # IEND, then its 4-byte CRC
    "gif": (b"GIF8", b";", 0),
    "bmp": (b"BM", b"", 0),
}
# Formats whose files may carry data after the end marker that decoders
# ignore: phones append their own trailers to JPEGs (Samsung's SEFH, a
# Motion Photo's whole video). Their marker may sit anywhere.
_TRAILERS_ALLOWED = ("jpeg", "png")
_CHECK_PAD = b"\0" * 64


def is_decodable(data: tf.Tensor) -> tf.Tensor:
  """Whether encoded bytes look like a whole JPEG, PNG, GIF or BMP image.

  Checks the format's leading signature and its end marker (JPEG EOI, PNG
  IEND, GIF trailer), which catches truncated, empty and foreign files. A
  JPEG or PNG whose marker is not at its end is searched for it (the rare
  file with a trailer, `_TRAILERS_ALLOWED`). A file with intact markers and a
  damaged body can still fail to decode, as can a truncated JPEG whose
  embedded thumbnail ends in an EOI; `prepared` handles those at decode time.
  """
  head = tf.strings.join([data, _CHECK_PAD])
  tail = tf.strings.join([_CHECK_PAD, data])
  valid = tf.constant(False)
  for name, (leading, marker, slack) in _SIGNATURES.items():
    ok = tf.strings.substr(head, 0, len(leading)) == leading
    if marker:
      ends = [tf.strings.substr(tail, -(len(marker) + offset), len(marker)) == marker
              for offset in range(slack + 1)]
      at_end = tf.reduce_any(tf.stack(ends))
      if name in _TRAILERS_ALLOWED:
        ok = tf.cond(ok & tf.logical_not(at_end),
                     lambda: tf.size(tf.strings.split(data, sep=marker)) > 1,
                     lambda: ok & at_end)
      else:
        ok = ok & at_end
    valid = valid | ok
  return valid


def blank_jpeg(size: int) -> tf.Tensor:
  """A mid-grey JPEG of ``size`` x ``size``, the stand-in for a corrupt image at
  eval time.

  At the model's input size, the eval preprocessing brings it there as any
  image: a resize from any size, a crop to the model's size from it, and
  preprocessing without either (images already at the model's size) keeps it.
  """
  return tf.io.encode_jpeg(tf.fill([size, size, 3], tf.constant(128, tf.uint8)))


@tf.autograph.experimental.do_not_convert
def prepared(ds, prepare, *, on_corrupt, cores, before_decoding=lambda ds: ds,
             blank_size=None):
  """``before_decoding(ds).map(prepare)``, with corrupt images handled.

  ``ds`` yields a source's examples (`vit_jax.data.sources`), ``prepare``
  decodes and preprocesses one. ``on_corrupt`` says what becomes of a
  corrupt image: ``'skip'`` drops it, ``'blank'`` prepares the blank
  stand-in (`blank_jpeg` of ``blank_size``, the model's input size) instead
  and keeps ``_corrupt`` and ``_id`` in the result (see `pop_blanked`), ``'fail'`` stops naming its file and record. Skipping
  stops the run too once `checks.MAX_CORRUPT_IN_A_ROW` images in a row were
  corrupt: an endless stream of them would never yield an example.
  ``before_decoding`` runs between the cheap check and the decoding: the
  train stream attaches its seeds and skips a resumed run's examples there,
  counting valid examples only, as the uninterrupted run did. ``cores``
  windows of examples are decoded at once. Already decoded images (tfds
  with decoding on) are prepared as they are.

  Autograph is off for all it maps (nested datasets too): these functions
  and the preprocessing ops are graph code as written (``tf.cond``,
  ``tf.where``), and converting them cost seconds at every pipeline's start
  (docs/benchmarks.md, "Input pipeline").
  """
  if ds.element_spec["image"].dtype != tf.string:
    return before_decoding(ds).map(prepare, num_parallel_calls=tf.data.AUTOTUNE)
  if on_corrupt == "skip":
    check = _mark_decodable(checks.CorruptInARow())
  elif on_corrupt == "blank":
    def check(features):
      return _blanked(features, tf.logical_not(is_decodable(features["image"])), blank_size)
  else:
    check = _strict_check
  ds = ds.map(check, num_parallel_calls=tf.data.AUTOTUNE)
  if on_corrupt == "skip":
    ds = ds.filter(lambda features: features[_DECODABLE])
  if on_corrupt == "blank":
    prepare = _keeping_corrupt_fields(prepare)
  return _decoded(before_decoding(ds), prepare, on_corrupt=on_corrupt, cores=cores,
                  blank_size=blank_size)


def pop_blanked(batch):
  """Removes the fields `prepared` kept for 'blank'; the ids of the blanked images."""
  if _CORRUPT not in batch:
    return []
  corrupt, ids = batch.pop(_CORRUPT), batch.pop("_id")
  return [name.decode() for name in ids[corrupt]]


def _mark_decodable(in_a_row):
  """A map marking whether each image passed `is_decodable`, counted in ``in_a_row``."""
  return lambda features: {**features, _DECODABLE: in_a_row.keeps(
      is_decodable(features["image"]), features["_id"])}


def _strict_check(features):
  """Fails on an image that `is_decodable` rejects, naming it."""
  return _image_or_fail(is_decodable(features["image"]), features,
                        "corrupt or undecodable image")


def _image_or_fail(ok, features, problem):
  """``features``, once ``ok`` holds; else an error naming the file and record."""
  return checks.passed(
      ok, lambda: [f"{problem} ", features["_id"], " (config.data.strict=True)"], features)


def _blanked(features, corrupt, size):
  """``features`` with the blank stand-in image of ``size`` where ``corrupt``.

  ``_corrupt`` records it, for the eval count and warning.
  """
  image = tf.where(corrupt, blank_jpeg(size), features["image"])
  return {**features, "image": image, _CORRUPT: corrupt}


def _keeping_corrupt_fields(prepare):
  return lambda features: {**prepare(features), _CORRUPT: features[_CORRUPT],
                           "_id": features["_id"]}


def _decoded(ds, prepare, *, on_corrupt, cores, blank_size):
  """``ds.map(prepare)`` where an image that fails to decode is handled.

  Such an image passed `is_decodable` (intact markers, damaged body).
  ``on_corrupt`` says what becomes of it, as in `prepared`.

  tf.data's ``ignore_errors`` swallows every error upstream of it, read
  errors included: a training file deleted mid-run would be skipped
  silently, and with every file gone the endless stream would spin without
  yielding or failing. So it guards only windows of examples already read,
  each its own small dataset, prepared in parallel and kept in order. A
  window that lost an example is prepared again an example at a time: an
  image that `tf.io.decode_image` cannot decode is corrupt, and any other
  error (a preprocessing string that cannot work on this data) is raised.
  """
  # 'skip': counts the images of windows that decode nothing.
  in_a_row = checks.CorruptInARow() if on_corrupt == "skip" else None

  def prepare_window(window):
    """The window's prepared examples as one batch."""
    examples = tf.data.Dataset.zip(window)
    size = tf.cast(examples.cardinality(), tf.int32)
    whole = (examples.map(prepare).ignore_errors(log_warning=True)
             .batch(_DECODE_WINDOW)
             .filter(lambda batch: tf.shape(batch["image"])[0] == size))
    one_by_one = examples.flat_map(_with_decodability)
    if on_corrupt == "skip":
      whole = whole.map(in_a_row.restarted)
      one_by_one = one_by_one.filter(
          lambda decodes, example: in_a_row.keeps(decodes, example["_id"]))
    one_by_one = one_by_one.map(lambda *args: prepare(settle(*args)))
    return whole.concatenate(one_by_one.batch(_DECODE_WINDOW)).take(1)

  def settle(decodes, example):
    """The example to prepare, its blank stand-in, or the strict-mode error."""
    if on_corrupt == "blank":  # corrupt already where the cheap check failed
      return _blanked(example, example[_CORRUPT] | tf.logical_not(decodes), blank_size)
    if on_corrupt == "fail":
      return _image_or_fail(decodes, example, "image that does not decode")
    return example  # 'skip': the undecodable ones are filtered out already

  return ds.window(_DECODE_WINDOW).interleave(
      prepare_window, cycle_length=cores,
      num_parallel_calls=tf.data.AUTOTUNE, deterministic=True).unbatch()


def _with_decodability(example):
  """A one-element dataset: (whether its image decodes, the example)."""
  decodes = (tf.data.Dataset.from_tensors(example["image"])
             .map(lambda image: tf.io.decode_image(image, expand_animations=False))
             .ignore_errors().map(lambda _: True)
             .concatenate(tf.data.Dataset.from_tensors(False)).take(1))
  return decodes.map(lambda ok: (ok, example))
