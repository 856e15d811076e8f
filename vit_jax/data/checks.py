"""Checks of the data as it is read, inside tf.data, ending as one-line errors.

Settings are checked before a run starts (`vit_jax.train.config_checks`,
`sources.check_splits`); what the files hold can only be checked as they are
read. The checks here cost a comparison or two per record: labels within
``[0, config.data.num_classes)``, and a train stream that has met nothing but
corrupt images for `MAX_CORRUPT_IN_A_ROW` records (it would otherwise skip
them forever and never yield a batch). `sources` adds its own: a shard holding
another number of records than its manifest says.

A failed check is a `tf.debugging.Assert` whose message starts with a
marker; `user_errors` turns it into a ValueError of that message alone, so
the commands print it as one line (`vit_jax.runtime.cli`).
"""
import re

import tensorflow as tf

from vit_jax.data import tf_errors

# Records in a row that may all be corrupt before the train stream stops:
# far more than a few bad files shuffled together, few enough to read in seconds.
MAX_CORRUPT_IN_A_ROW = 1000
_MARK = "data check failed: "
_FAILED = re.compile(r"assertion failed: \[" + re.escape(_MARK) + r"(.*?)\]\s*(?:\n|$)",
                     flags=re.DOTALL)


def passed(ok, *message, value):
  """``value``, once ``ok`` holds; else the run stops with ``message``.

  ``message``'s parts (strings and string tensors) are joined into one line.
  """
  parts = [tf.strings.as_string(part) if tf.is_tensor(part) and part.dtype != tf.string
           else part for part in message]
  check = tf.debugging.Assert(ok, [tf.strings.join([_MARK, *parts])])
  with tf.control_dependencies([check]):
    return tf.nest.map_structure(tf.identity, value)


def labels_in_range(ds, num_classes):
  """``ds`` whose examples stop the run when a class id is outside [0, num_classes).

  Such a label would become an all-zero one-hot target (and a negative one
  too): the run would train on wrong targets without a word. The error
  names the file and record (``_id``) and the label.
  """
  spec = ds.element_spec.get("label")
  if spec is None or not spec.dtype.is_integer:
    return ds

  def check(features):
    label = tf.cast(features["label"], tf.int64)
    ok = tf.reduce_all((label >= 0) & (label < num_classes))
    shown = tf.strings.reduce_join(tf.strings.as_string(tf.reshape(label, [-1])),
                                   separator=",")
    return passed(ok, "label ", shown, " of ", features["_id"], " is outside [0, ",
                  str(num_classes), ") (config.data.num_classes); fix the data "
                  "or the class count", value=features)

  return ds.map(check, num_parallel_calls=tf.data.AUTOTUNE)


def not_only_corrupt(ds, is_corrupt):
  """``ds``, stopping once `MAX_CORRUPT_IN_A_ROW` examples in a row are corrupt.

  ``is_corrupt(features)`` says whether an example is to be skipped. The
  error names the last one: a dataset of raw pixels, or of another format,
  in ``image/encoded`` is the usual cause.
  """
  def count(in_a_row, features):
    in_a_row = tf.where(is_corrupt(features), in_a_row + 1, 0)
    features = passed(
        in_a_row < MAX_CORRUPT_IN_A_ROW, f"the last {MAX_CORRUPT_IN_A_ROW} images "
        "read were all corrupt or undecodable, the last of them ", features["_id"],
        "; the training stream would skip them forever. Are the images encoded "
        "JPEG, PNG, GIF or BMP files? (config.data.strict=True stops at the first)",
        value=features)
    return in_a_row, features

  return ds.scan(tf.constant(0, tf.int64), count)


def user_errors(batches):
  """Yields from ``batches``; a failed check becomes a ValueError of its message.

  A file that vanished while it was read becomes a FileNotFoundError. Any
  other TensorFlow error is raised as it is.
  """
  try:
    yield from batches
  except Exception as error:  # not GeneratorExit: closing the stream is no error
    mistake = _users_mistake(error)
    if mistake is None:
      raise
    raise mistake from None


def _users_mistake(error):
  """The one-line error a TensorFlow error of the data stands for, if any."""
  if isinstance(error, tf.errors.InvalidArgumentError):
    failed = _FAILED.search(error.message)
    return ValueError(failed[1]) if failed else None
  if isinstance(error, tf.errors.NotFoundError):
    return FileNotFoundError(f"a data file went missing while the run was reading "
                             f"it: {tf_errors.reason(error)}")
  return None
