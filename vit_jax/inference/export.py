"""A run's classifier in formats used outside this codebase, each read back and checked.

npz          the parameters (the EMA, when the run kept one) in the published ViT
             layout, for `npz.load_npz`, `config.init` and third-party
             loaders.
serving      a directory that `vit_jax/inference/serving.py` runs with jax and numpy
             alone: the `jax.export` function, its parameters and a
             contract.json (see that module).
saved_model  a TensorFlow SavedModel made with jax2tf: signature
             `serving_default` maps float32 `images` (batch, H, W, 3) to
             `logits`; the weights are variables; contract.json beside it.
timm         a directory in timm's hub layout (model.safetensors, config.json)
             that `timm.create_model` loads (`vit_jax.models.timm_format`).
hf           a Hugging Face model directory (config.json, model.safetensors,
             preprocessor_config.json) that transformers'
             `AutoModelForImageClassification.from_pretrained` loads as the
             ViT, DeiT or DINOv2 class its config names
             (`vit_jax.models.hf_format`).

Each export reads its result back and compares it with the model: the
parameters bit for bit for npz, the logits on a few random images for the
model formats. timm and hf are read back both ways: the weights through our
importer, bit for bit, and, where timm or transformers is installed, the
library's model, whose logits are compared. `scripts/export.py` is the
command line.

An export is written aside (`staged`) and moved into place only once it has
read back: a failed one (a full disk, a platform that cannot lower) leaves
an earlier export at ``out`` whole, not a new contract beside old weights.
A directory export replaces only an earlier export of its format: an
``out`` that holds a run (`run_file`), or a file of another kind where the
export would write (`check_output_directory`), is refused before anything
is written. An npz export replaces the one file ``out`` names.
"""
import contextlib
import json
import os
import shutil
import tempfile

import jax
import jax.numpy as jnp
import numpy as np
import tensorflow as tf
from jax import export

from vit_jax.data.preprocess import eval_resize
from vit_jax.inference import normalisation, predict, serving
from vit_jax.models import attention, hf_format, npz, timm_format
from vit_jax.runtime import cli
from vit_jax.train import losses, workdir_files

CHECK_BATCH = 3  # not 1, so a symbolic batch size is exercised
# What jax.export lowers for (`export.export`'s platform names).
PLATFORMS = ("cpu", "cuda", "rocm", "tpu")


def logits_function(model):
  """(published-layout params by flat name, images) -> logits, the exported function.

  Taking the parameters by their '/'-joined names lets a loader pass the
  contents of the .npz as they are. Those name one block each, so a scanned
  model is exported unrolled (the same logits), rather than stacking every
  block's weights again on each call.
  """
  if getattr(model, "scan", False):
    model = model.clone(scan=False)

  def logits(flat_params, images):
    return model.apply({"params": npz.unflatten(flat_params)}, images, train=False)
  return logits


def portable(model):
  """``model`` with an attention that an exported function can hold.

  On a GPU host `auto` traces cuDNN's fused attention, a custom call
  (``__cudnn$fmha...``) that only CUDA lowers and that jax.export refuses
  to serialise for any platform, as its target has no compatibility
  guarantee; XLA's attention gives the same logits
  (tests/models/test_attention.py).
  """
  implementation = getattr(model, "attention_implementation", None)  # ResNets: none
  if implementation and attention.resolve(implementation) == "cudnn":
    return model.clone(attention_implementation="dot_product_attention")
  return model


def value_range(pp_spec, image_size):
  """The [min, max] that the eval preprocessing maps black and white pixels to."""
  black, white = normalisation.channel_ranges(pp_spec, image_size)
  return [float(black.min()), float(white.max())]


def make_contract(config, source, export_format, platforms):
  """What a user of the exported function needs to know to feed it and read it."""
  return {
      "format": export_format,
      "variant": config.variant,
      "checkpoint": source,
      "image_size": config.image_size,
      "channels": 3,
      "input_dtype": "float32",
      "value_range": value_range(config.pp.eval, config.image_size),
      "preprocessing": config.pp.eval,
      "num_classes": config.data.num_classes,
      "class_names": predict.class_names(config.data),
      "probabilities": losses.PROBABILITIES[config.loss].__name__,
      "platforms": list(platforms),
      "jax_version": jax.__version__,
  }


def export_serving(model, params, contract, out):
  """Writes the `jax.export` function and its .npz beside the contract in ``out``.

  Returns the exported classifier, loaded back as a server would load it.
  """
  flat = npz.npz_arrays(params)  # what the server loads
  batch, = export.symbolic_shape("batch")
  size = contract["image_size"]
  exported = export.export(jax.jit(logits_function(model)),
                           platforms=contract["platforms"])(
      jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype), flat),
      jax.ShapeDtypeStruct((batch, size, size, contract["channels"]), jnp.float32))
  with open(os.path.join(out, serving.FUNCTION_FILE), "wb") as f:
    f.write(exported.serialize())
  npz.save_npz(params, os.path.join(out, serving.PARAMS_FILE))
  return serving.load(out)


def export_saved_model(model, params, contract, out):
  """Writes a jax2tf SavedModel, whose weights are variables, to ``out``.

  Returns its `serving_default` signature, loaded back, as images -> logits.
  """
  from jax.experimental import jax2tf  # only this format needs it

  flat = npz.flatten(params)
  size, channels = contract["image_size"], contract["channels"]
  variables = {name: tf.Variable(value, trainable=False) for name, value in flat.items()}
  tf_logits = jax2tf.convert(
      logits_function(model), with_gradient=False,
      polymorphic_shapes=[None, f"(batch, {size}, {size}, {channels})"],
      native_serialization_platforms=contract["platforms"])

  @tf.function(autograph=False, input_signature=[
      tf.TensorSpec([None, size, size, channels], tf.float32, name="images")])
  def serve(images):
    return {"logits": tf_logits(variables, images)}

  module = tf.Module()
  module.weights = list(variables.values())  # tracked, so saved as variables
  module.serve = serve
  tf.saved_model.save(module, out, signatures={"serving_default": serve})
  signature = tf.saved_model.load(out).signatures["serving_default"]
  return lambda images: signature(images=tf.constant(images))["logits"].numpy()


EXPORTERS = {"serving": export_serving, "saved_model": export_saved_model}


def _check_reads_back(params, loaded, out):
  """Raises RuntimeError unless ``loaded`` is ``params`` as written, bit for bit."""
  written = npz.npz_arrays(params)
  loaded = npz.flatten(loaded)
  if written.keys() != loaded.keys() or any(
      written[n].dtype != loaded[n].dtype or written[n].tobytes() != loaded[n].tobytes()
      for n in written):
    raise RuntimeError(f"{out} does not read back as the parameters written")
  return len(written)


@contextlib.contextmanager
def staged(out, export_format):
  """A fresh hidden directory inside ``out`` to write an export into; once the
  block succeeds, each of its entries replaces ``out``'s of that name (other
  files there stay), contract.json last, and it is removed either way.

  Before anything is replaced, the names written are checked as
  `check_output_directory` checks those it expects (a SavedModel's are
  TensorFlow's to choose). Inside ``out``, not beside it, so that each move
  is a rename on one filesystem whatever ``out`` is (a mount point, a link
  to another disk). A failed export into a directory it made leaves none.
  """
  made = not os.path.exists(out)
  os.makedirs(out, exist_ok=True)
  staging = tempfile.mkdtemp(prefix=".export-", dir=out)
  try:
    yield staging
    check_replaced(out, export_format, os.listdir(staging))
    for name in sorted(os.listdir(staging), key=lambda n: n == serving.CONTRACT_FILE):
      target = os.path.join(out, name)
      if os.path.isdir(target) and not os.path.islink(target):
        shutil.rmtree(target)  # a SavedModel's variables/: a directory replaces one
      os.replace(os.path.join(staging, name), target)
  except BaseException:
    shutil.rmtree(staging, ignore_errors=True)
    if made and not os.listdir(out):
      os.rmdir(out)
    raise
  shutil.rmtree(staging, ignore_errors=True)


def export_npz(params, out):
  """Writes ``params`` to the .npz ``out``; returns how many arrays it holds.

  ``out`` must end in .npz: that suffix is how `config.init`, predict and
  evaluate recognise the file, so a file without it could not be read back
  where it is meant to go. Its directory is made, as the other formats make
  theirs. Written to a partial file beside it (beside a link's target, so
  the link stays) and renamed once it reads back bit for bit; else a
  RuntimeError, and ``out`` as it was.
  """
  check_out(out, "npz")
  target = os.path.realpath(out)
  directory, name = os.path.split(target)
  os.makedirs(directory, exist_ok=True)
  partial = os.path.join(directory, f".{name}.{os.getpid()}.partial.npz")
  try:
    npz.save_npz(params, partial)  # opened as any file, so the umask's mode
    count = _check_reads_back(params, npz.load_npz(partial), out)
    os.replace(partial, target)
  finally:
    if os.path.exists(partial):
      os.remove(partial)
  return count


def check_platforms(platforms, export_format):
  """Refuses platforms that jax.export does not lower for, naming --platforms."""
  unknown = [p for p in platforms if p not in PLATFORMS]
  if unknown or not platforms:
    raise ValueError(f"--platforms={','.join(platforms)}: the {export_format} format is "
                     f"lowered for one or more of {', '.join(PLATFORMS)}"
                     + (f", not {', '.join(unknown)}" if unknown else ""))


# The entries each directory format writes in --out. A SavedModel's are
# TensorFlow's choice: `staged` checks the ones it wrote, too.
WRITTEN = {
    "serving": (serving.CONTRACT_FILE, serving.FUNCTION_FILE, serving.PARAMS_FILE),
    "saved_model": (serving.CONTRACT_FILE, tf.saved_model.SAVED_MODEL_FILENAME_PB,
                    tf.saved_model.VARIABLES_DIRECTORY, tf.saved_model.ASSETS_DIRECTORY,
                    "fingerprint.pb"),
    "timm": (timm_format.CONFIG_FILE, timm_format.WEIGHTS_FILES[0]),
    "hf": (hf_format.CONFIG_FILE, hf_format.WEIGHTS_FILES[0], hf_format.PREPROCESSOR_FILE),
}
# A run's files in its workdir (vit_jax/train/workdir_files.py, metrics.py).
RUN_FILES = (workdir_files.CONFIG_FILE, workdir_files.CHECKPOINT_SUBDIR,
             workdir_files.SUMMARY_FILE, "metrics.jsonl")
# The file that makes a directory an earlier export of a format, and what it
# says there: an export replaces the files of an earlier one of its format only.
EARLIER_EXPORT = {
    "serving": (serving.CONTRACT_FILE, "with format 'serving'",
                lambda c: c.get("format") == "serving"),
    "saved_model": (serving.CONTRACT_FILE, "with format 'saved_model'",
                    lambda c: c.get("format") == "saved_model"),
    "timm": (timm_format.CONFIG_FILE, "of timm's, with 'architecture'",
             timm_format.is_timm_config),
    "hf": (hf_format.CONFIG_FILE, "of Hugging Face's, with 'model_type'",
           hf_format.is_hf_config),
}


def _json_object(path):
  """The JSON object in ``path``; None where there is none (no file, another kind)."""
  try:
    with open(path) as f:
      value = json.load(f)
  except (OSError, ValueError):
    return None
  return value if isinstance(value, dict) else None


def run_file(directory):
  """The path of the first of `RUN_FILES` in ``directory`` that says it holds a
  vit_jax run (a config.json only where it is a run's or a suite's), or None."""
  for name in RUN_FILES:
    path = os.path.join(directory, name)
    if name == workdir_files.CONFIG_FILE:
      config = _json_object(path) or {}
      # A run's (workdir_files.read_config's fields) or a transfer suite's.
      if workdir_files.RUN_CONFIG_FIELDS[0] in config or workdir_files.SUITE_FIELD in config:
        return path
    elif os.path.exists(path):
      return path
  return None


def is_earlier_export(directory, export_format):
  """Whether ``directory`` holds an export of ``export_format`` (`EARLIER_EXPORT`)."""
  name, _, is_format = EARLIER_EXPORT[export_format]
  marker = _json_object(os.path.join(directory, name))
  return marker is not None and bool(is_format(marker))


def check_replaced(out, export_format, names):
  """Refuses, naming --out and the file, to replace any of ``names`` in ``out``
  unless ``out`` holds an earlier export of ``export_format``."""
  existing = [name for name in sorted(names) if os.path.lexists(os.path.join(out, name))]
  if existing and not is_earlier_export(out, export_format):
    marker, says, _ = EARLIER_EXPORT[export_format]
    raise ValueError(
        f"--out={out}: the {export_format} export would replace "
        f"{os.path.join(out, existing[0])}, and {out} holds no earlier {export_format} "
        f"export (its {marker} {says}), so that file is not the export's to replace: "
        f"name a new directory, or an earlier {export_format} export's")


def check_parent_directories(out):
  """Raises ValueError where a directory that ``out`` would be written in is a file.

  Without this, os.makedirs fails with a FileExistsError (or
  NotADirectoryError) traceback.
  """
  parent = cli.file_in_the_way(os.path.dirname(os.path.abspath(out)))
  if parent:
    raise ValueError(f"--out={out}: {parent} is a file, so nothing can be written "
                     f"inside it; name a path in a directory, new or existing")


def check_out(out, export_format):
  """Raises ValueError where --out cannot take ``export_format``, before anything
  is written: an npz export's name must end in .npz, in a directory (new or
  existing); a directory format's, `check_output_directory`."""
  if export_format != "npz":
    check_output_directory(out, export_format)
    return
  if not out.endswith(".npz") or os.path.isdir(out):
    raise ValueError(f"--out={out}: an npz export is a file whose name ends in .npz "
                     f"(e.g. vit.npz), the suffix by which config.init and "
                     f"--checkpoint recognise it")
  check_parent_directories(out)


def check_output_directory(out, export_format):
  """Raises ValueError where ``out``, the directory of a format, cannot take it.

  That is where ``out`` (or a directory above it) is a file, where it holds
  a vit_jax run, and where it holds a file the export writes but no earlier
  export of its format (`check_replaced`): all before anything is written.
  Without the first, the path of an existing file (say the .npz of an
  earlier export) fails deep inside os.makedirs with a traceback; without
  the others, --out=WORKDIR replaced the run's config.json.
  """
  if os.path.exists(out) and not os.path.isdir(out):
    raise ValueError(f"--out={out} is an existing file; the {export_format} format "
                     f"writes a directory: name a new or existing directory")
  check_parent_directories(out)
  if not os.path.isdir(out):
    return
  found = run_file(out)
  if found:
    raise ValueError(f"--out={out} holds a vit_jax run ({found}), whose files an "
                     f"export must neither replace nor mix with: name a new directory, "
                     f"or an earlier {export_format} export's")
  check_replaced(out, export_format, WRITTEN[export_format])


def check_images(input_range, image_size):
  """`CHECK_BATCH` random images in the model's input range, NHWC float32."""
  low, high = input_range
  return np.random.default_rng(0).uniform(
      low, high, (CHECK_BATCH, image_size, image_size, 3)).astype(np.float32)


def model_logits(model, params, images):
  return np.asarray(jax.jit(model.apply, static_argnames="train")(
      {"params": params}, images, train=False))


def export_model(config, model, params, *, export_format, platforms, source, out):
  """Writes the model format ``export_format`` and its contract.json to ``out``.

  ``source`` names the checkpoint in the contract. Returns the largest
  difference between the exported function's logits and the model's on
  `CHECK_BATCH` random images in the contract's value range, or None where
  this host's platform is none of ``platforms``, so it cannot run them.
  """
  check_platforms(platforms, export_format)
  contract = make_contract(config, source, export_format, platforms)
  model = portable(model)
  check_output_directory(out, export_format)
  with staged(out, export_format) as staging:
    with open(os.path.join(staging, serving.CONTRACT_FILE), "w") as f:
      json.dump(contract, f, indent=2)
    exported_logits = EXPORTERS[export_format](model, params, contract, staging)
    if runs_here(platforms):
      images = check_images(contract["value_range"], config.image_size)
      return float(np.max(np.abs(exported_logits(images)
                                 - model_logits(model, params, images))))
  return None


def runs_here(platforms):
  """Whether this host's default platform is one of ``platforms``."""
  return export.default_export_platform() in platforms


# The directories PyTorch libraries load: the module that writes and reads
# each, the function building the library's model of it, and the library.
TORCH_FORMATS = {
    "timm": (timm_format, timm_format.timm_model, "timm"),
    "hf": (hf_format, hf_format.hf_model, "transformers"),
}


def export_torch_format(config, model, params, *, export_format, out):
  """Writes the timm or Hugging Face directory ``out`` (`TORCH_FORMATS`).

  Raises RuntimeError unless its weights read back, through our importer, as
  the parameters bit for bit. Returns the largest difference between the
  library's logits and the model's on `CHECK_BATCH` random images, or None
  where the library is not installed.
  """
  module, library_model, _ = TORCH_FORMATS[export_format]
  black, white = normalisation.channel_ranges(config.pp.eval, config.image_size)
  mean, std = normalisation.mean_and_std(black, white)
  check_output_directory(out, export_format)
  with staged(out, export_format) as staging:
    module.save(params, staging, image_size=config.image_size, mean=mean, std=std,
                class_names=predict.class_names(config.data),
                # A ResNet has neither, and is refused by name.
                gelu=getattr(model, "gelu", "tanh"),
                layer_norm_epsilon=getattr(model, "layer_norm_epsilon", 1e-6),
                eval_resize=eval_resize.of_preprocessing(config.pp.eval, config.image_size))
    _check_reads_back(module.exported_params(params), module.load(staging), out)
    try:
      torch_model = library_model(staging)
    except timm_format.MissingPackageError:
      return None
    images = check_images([black.min(), white.max()], config.image_size)
    return float(np.max(np.abs(timm_format.torch_logits(torch_model, images)
                               - model_logits(model, params, images))))
