r"""Exports a run's classifier for use outside this codebase.

  python scripts/export.py --workdir=runs/demo/finetune --format=npz --out=vit.npz
  python scripts/export.py --workdir=runs/demo/finetune --format=serving --out=vit_serving
  python scripts/export.py --workdir=runs/demo/finetune --format=saved_model --out=vit_tf

npz          the parameters (the EMA, when the run kept one) in the published ViT
             layout, for `npz.load_npz`, `config.init` and third-party
             loaders.
serving      a directory that `vit_jax/inference/serving.py` runs with jax and numpy
             alone: the `jax.export` function, its parameters and a
             contract.json (see that module).
saved_model  a TensorFlow SavedModel made with jax2tf: signature
             `serving_default` maps float32 `images` (batch, H, W, 3) to
             `logits`; the weights are variables; contract.json beside it.

Each export reads its result back and prints how far it is from the model:
bit-identical parameters for npz, the largest logit difference on a few
random images for the model formats.

Measured here (CPU, jax 0.10.2, a 100-step Fashion-MNIST run of a ViT-Ti/4
at width 128 and 16 px with ema_decay=0.9, logits up to 5.1; the demo config
of the time), on 256 Fashion-MNIST test images against the jitted model: the
.npz reads back bit for bit and gives identical logits; the serving
artefact, run in a fresh process that imports no vit_jax code, differs by 0
(by 1.5e-6 from the op-by-op `model.apply`); the SavedModel by 1.6e-6.
"""
import argparse
import json
import os

import jax
import jax.numpy as jnp
import numpy as np
import tensorflow as tf
from jax import export

from vit_jax import predict
from vit_jax.models import npz
from vit_jax.inference import restore
from vit_jax.train import workdir_files
from vit_jax.data import preprocess
from vit_jax.inference import serving
from vit_jax.models import attention
from vit_jax.train import losses

FORMATS = ("npz", "serving", "saved_model")
CHECK_BATCH = 3  # not 1, so a symbolic batch size is exercised


def logits_function(model):
  """(published-layout params by flat name, images) -> logits, the exported function.

  Taking the parameters by their '/'-joined names lets a loader pass the
  contents of the .npz as they are.
  """
  def logits(flat_params, images):
    return model.apply({"params": npz.unflatten(flat_params)}, images, train=False)
  return logits


def portable(model, platforms):
  """``model`` with an attention that every one of ``platforms`` can lower.

  On a GPU host `auto` traces cuDNN's fused attention, which only CUDA
  lowers; an export for other platforms too takes XLA's attention, which
  gives the same logits (tests/models/test_attention.py).
  """
  if (set(platforms) != {"cuda"}
      and attention.resolve(model.attention_implementation) == "cudnn"):
    return model.clone(attention_implementation="dot_product_attention")
  return model


def value_range(pp_spec, image_size):
  """The [min, max] that the eval preprocessing maps black and white pixels to."""
  pp = preprocess.parse(pp_spec)
  black, white = (predict.preprocess_image(pp, tf.fill([image_size, image_size, 3],
                                                       tf.constant(v, tf.uint8)))
                  for v in (0, 255))
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


def main(argv=None):
  parser = argparse.ArgumentParser(
      prog="python scripts/export.py", description=__doc__,
      formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("--workdir", required=True, help="the run to export")
  parser.add_argument("--step", type=int, help="a checkpoint step (default: the latest)")
  parser.add_argument("--format", required=True, choices=FORMATS)
  parser.add_argument("--out", required=True,
                      help="a .npz file for npz, a directory for the model formats")
  parser.add_argument("--platforms", default="cpu,cuda,tpu",
                      help="platforms the model formats are lowered for")
  args = parser.parse_args(argv)

  config = workdir_files.read_config(args.workdir)
  model, params = restore.restore_model(config, args.workdir, step=args.step)
  if args.format == "npz":
    npz.save_npz(params, args.out)
    written = npz.npz_arrays(params)
    loaded = npz.flatten(npz.load_npz(args.out))
    if written.keys() != loaded.keys() or any(
        written[n].dtype != loaded[n].dtype or written[n].tobytes() != loaded[n].tobytes()
        for n in written):
      raise RuntimeError(f"{args.out} does not read back as the parameters written")
    print(f"wrote {args.out}: {len(written)} arrays, read back bit for bit")
    return

  source = args.workdir if args.step is None else f"{args.workdir} step {args.step}"
  platforms = args.platforms.split(",")
  contract = make_contract(config, source, args.format, platforms)
  model = portable(model, platforms)
  os.makedirs(args.out, exist_ok=True)
  with open(os.path.join(args.out, serving.CONTRACT_FILE), "w") as f:
    json.dump(contract, f, indent=2)
  exported_logits = EXPORTERS[args.format](model, params, contract, args.out)

  low, high = contract["value_range"]
  size = config.image_size
  images = np.random.default_rng(0).uniform(
      low, high, (CHECK_BATCH, size, size, 3)).astype(np.float32)
  expected = jax.jit(model.apply, static_argnames="train")({"params": params}, images,
                                                          train=False)
  difference = float(np.max(np.abs(exported_logits(images) - np.asarray(expected))))
  print(f"wrote {args.out}: max |logit difference| to the model on "
        f"{CHECK_BATCH} random images: {difference:.3g}")


if __name__ == "__main__":
  main()
