r"""Evaluates a checkpoint without training; flags only, the work is in `evaluators`.

It runs on the mesh, batches and preprocessing of the run's config, so the
numbers are those the run itself reports (one JSON line per split):

  python -m vit_jax.evaluate --workdir=runs/demo/finetune \
      [--checkpoint=PATH] [--split=NAME]
"""
import argparse
import json

import jax

from vit_jax.inference import restore
from vit_jax.train import workdir_files
from vit_jax.data import input_pipeline
from vit_jax.evaluators import classification
from vit_jax.runtime import cpu_devices
from vit_jax.train import losses, sharding


def main(argv=None):
  parser = argparse.ArgumentParser(
      prog="python -m vit_jax.evaluate", description=__doc__,
      formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("--workdir", required=True,
                      help="the run: its config.json, and its latest checkpoint")
  parser.add_argument("--checkpoint", help="parameters to evaluate instead: a "
                      ".npz, another workdir or a checkpoint step directory")
  parser.add_argument("--split", help="one split: a name of config.data.eval_splits "
                      "or a tfds split such as 'test[:1000]' (default: all eval splits)")
  args = parser.parse_args(argv)

  config = workdir_files.read_config(args.workdir)
  cpu_devices.use_one_device_per_core((config.eval_batch,))
  path = args.checkpoint or args.workdir
  model, params = restore.restore_model(config, path)
  splits = dict(config.data.eval_splits)
  if args.split:
    splits = {args.split: splits.get(args.split, args.split)}
  mesh = sharding.make_mesh(config.mesh)
  params = jax.device_put(params, sharding.param_shardings(mesh, params, config.mesh))
  eval_step = classification.make_eval_step(model, losses.get_loss(config.loss))
  results = {}
  for name, split in splits.items():
    data = input_pipeline.EvalData(config.data, config.pp.eval, split,
                                   global_batch=config.eval_batch)
    results[name] = classification.evaluate(eval_step, params, data, sharding.batch_sharding(mesh),
                             multi_label=config.data.multi_label)
    print(json.dumps({"checkpoint": path, "split": name, **results[name]}))
  return results


if __name__ == "__main__":
  main()
