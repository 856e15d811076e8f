"""TensorFlow's error messages, reduced to what a user needs to read."""
import re

# TF wraps the reason: "{{function_node ...}} REASON [Op:DecodeImage] name: ...".
_WRAPPING = re.compile(r"\{\{.*?\}\}\s*|\s*\[Op:.*", flags=re.DOTALL)


def reason(error) -> str:
  """The first line of a `tf.errors.OpError`'s reason, without op and function names."""
  return _WRAPPING.sub("", error.message).strip().split("\n")[0]
