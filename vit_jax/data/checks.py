"""Checks of the data as it is read, inside tf.data, ending as one-line errors.

Settings are checked before a run starts (`vit_jax.train.config_checks`,
`sources.check_splits`); what the files hold can only be checked as they are
read. The checks here add no stage to the pipeline, only a few ops to
functions it runs anyway (each stage costs tens of microseconds an example
on a slow core): labels within ``[0, config.data.num_classes)``
(`label_checked`, in the sources' parsing), and a skipping stream that has
met `MAX_CORRUPT_IN_A_ROW` corrupt images in a row (`CorruptInARow`; it
would otherwise skip them forever and never yield). A
TFRecord shard holding another number of records than its manifest lists
fails tf.data's own cardinality assertion; `user_errors` then has the
source recount its files to name the shard.

A failed check is a `tf.debugging.Assert` whose message starts with a
marker; `user_errors` turns it into a ValueError of that message alone, so
the commands print it as one line (`vit_jax.runtime.cli`).
"""
import re

import tensorflow as tf

from vit_jax.data import tf_errors

# Images in a row that may all be corrupt before a skipping stream stops:
# far more than a few bad files shuffled together, few enough to read in seconds.
MAX_CORRUPT_IN_A_ROW = 1000
_MARK = "data check failed: "
_FAILED = re.compile(r"assertion failed: \[" + re.escape(_MARK) + r"(.*?)\]\s*(?:\n|$)",
                     flags=re.DOTALL)
# What `tf.data.experimental.assert_cardinality` says of a miscounted dataset.
_MISCOUNTED = "Input dataset was expected to contain"


def passed(ok, message, value):
  """``value``, once ``ok`` holds; else the run stops with ``message()``.

  ``message`` returns the parts (strings and tensors) of a one-line message;
  it runs only where ``ok`` fails: string work on every example would cost
  more than the check.
  """
  def stop():
    parts = [tf.strings.as_string(part) if tf.is_tensor(part) and part.dtype != tf.string
             else part for part in message()]
    check = tf.debugging.Assert(False, [tf.strings.join([_MARK, *parts])])
    with tf.control_dependencies([check]):
      return tf.nest.map_structure(tf.identity, value)

  return tf.cond(ok, lambda: tf.nest.map_structure(tf.identity, value), stop)


def label_checked(features, num_classes, *, one_label=False):
  """``features``, stopping the run where a class id is outside [0, num_classes),
  or, with ``one_label`` (a single-label dataset's list of labels), where
  there is not exactly one.

  Such a label would become an all-zero one-hot target (a negative one
  too), and no label or two an all-zero or two-hot one: the run would train
  on wrong targets without a word. The error names the file and record
  (``_id``) and the label.
  """
  label = tf.cast(features["label"], tf.int64)
  ok = tf.reduce_all((label >= 0) & (label < num_classes))

  def described():  # only where a check fails: string work costs more than it
    return tf.strings.reduce_join(tf.strings.as_string(tf.reshape(label, [-1])),
                                  separator=",")

  features = passed(ok, lambda: [
      "label ", described(), " of ", features["_id"], f" is outside [0, {num_classes}) "
      "(config.data.num_classes); fix the data or the class count"], features)
  if not one_label:
    return features
  return passed(tf.size(label) == 1, lambda: [
      features["_id"], " has ", tf.size(label), " labels [", described(), "], and a "
      "single-label dataset one each; fix the data, or set config.data.multi_label=True "
      "for labels of several classes"], features)


class CorruptInARow:
  """Counts the corrupt images a skipping stream met in a row; stops it at too many.

  Its state is a variable, updated in the functions that judge each image
  anyway, so the count costs no stage of its own. Those run in parallel, so
  the count is approximate where good and corrupt images mix, which a bound
  of a thousand does not mind; a stream of nothing but corrupt ones counts
  up without fail.
  """

  def __init__(self):
    self._count = tf.Variable(0, dtype=tf.int64, trainable=False)

  def keeps(self, ok, example_id):
    """``ok`` (whether an image is good) after counting it; too many in a row stop the run.

    The error names the last one: raw pixels, or another format, in
    ``image/encoded`` are the usual cause.
    """
    in_a_row = self._count.assign(tf.where(ok, tf.constant(0, tf.int64), self._count + 1))
    return passed(in_a_row < MAX_CORRUPT_IN_A_ROW, lambda: [
        f"the last {MAX_CORRUPT_IN_A_ROW} images read were all corrupt or "
        "undecodable, the last of them ", example_id, "; the training stream "
        "would skip them forever. Are the images encoded JPEG, PNG, GIF or BMP "
        "files? (config.data.strict=True stops at the first)"], ok)

  def restarted(self, value):
    """``value``, once the count starts again (good images came through)."""
    with tf.control_dependencies([self._count.assign(0)]):
      return tf.nest.map_structure(tf.identity, value)


def user_errors(batches, *, recount=lambda: None):
  """Yields from ``batches``; a failed check becomes a ValueError of its message.

  A dataset of another size than its manifest says calls ``recount()``,
  which raises the error naming the file (`sources.TFRecordSource.check_counts`).
  A file that vanished while it was read becomes a FileNotFoundError. Any
  other TensorFlow error is raised as it is.
  """
  try:
    yield from batches
  except Exception as error:  # not GeneratorExit: closing the stream is no error
    mistake = _users_mistake(error, recount)
    if mistake is None:
      raise
    raise mistake from None


def _users_mistake(error, recount):
  """The one-line error a TensorFlow error of the data stands for, if any."""
  if isinstance(error, tf.errors.InvalidArgumentError):
    failed = _FAILED.search(error.message)
    return ValueError(failed[1]) if failed else None
  if isinstance(error, tf.errors.FailedPreconditionError) and _MISCOUNTED in error.message:
    recount()  # raises, naming the file, unless the files changed since
    return ValueError(f"a data file holds another number of records than its "
                      f"manifest lists: {tf_errors.reason(error)}")
  if isinstance(error, tf.errors.NotFoundError):
    return FileNotFoundError(f"a data file went missing while the run was reading "
                             f"it: {tf_errors.reason(error)}")
  return None
