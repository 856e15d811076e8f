r"""A train step's temporary bytes a device, for the proxy of docs/scaling.md.

  XLA_FLAGS=--xla_force_host_platform_device_count=64 python scripts/scan_fsdp_memory.py \
      --variant=G/14 --layers=4 --devices=64 --fsdp=32 --per_device=16 --remat --scan

The config is configs/pretrain.py's for ``--variant`` (ImageNet-21k), cut to
``--layers`` blocks, on a mesh of ``--devices`` emulated CPU devices with
``data = devices / fsdp``. Its train step is compiled as the plan compiles it
(`vit_jax.cost.estimate.device_plan`): the trainer's step, which traces the
model under its mesh so that the activations stay split over the batch axes
(`models.activation_sharding.constrain_batch`). Prints XLA's temporary bytes a device beside one
layer's weights and one block's input (float32), the terms they should be
made of: a few layers' gathered weights and every block's input, not every
layer's weights nor the whole batch.
"""
import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from absl import app, flags  # noqa: E402

from vit_jax.runtime import cli  # noqa: E402

FLAGS = cli.command_flags(__name__)
_VARIANT = flags.DEFINE_string("variant", "G/14", "configs/pretrain.py's variant.",
                               flag_values=FLAGS)
_LAYERS = flags.DEFINE_integer("layers", 4, "Encoder blocks.", lower_bound=1,
                               flag_values=FLAGS)
_DEVICES = flags.DEFINE_integer("devices", 8, "Emulated devices (set XLA_FLAGS to match).",
                                lower_bound=1, flag_values=FLAGS)
_FSDP = flags.DEFINE_integer("fsdp", 8, "config.mesh.fsdp, a divisor of --devices; data "
                             "takes the other devices.", lower_bound=1, flag_values=FLAGS)
_PER_DEVICE = flags.DEFINE_integer("per_device", 16, "Examples a device.", lower_bound=1,
                                   flag_values=FLAGS)
_DTYPE = flags.DEFINE_string("dtype", "float32", "config.model.dtype.", flag_values=FLAGS)
_REMAT = flags.DEFINE_bool("remat", True, "config.model.remat.", flag_values=FLAGS)
_SCAN = flags.DEFINE_bool("scan", True, "config.model.scan.", flag_values=FLAGS)


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  # The mesh is data x fsdp over every device; checked before JAX starts.
  if _DEVICES.value % _FSDP.value:
    divisors = [d for d in range(1, _DEVICES.value + 1) if _DEVICES.value % d == 0]
    raise ValueError(f"--fsdp={_FSDP.value} does not divide --devices={_DEVICES.value} "
                     f"(the mesh is data x fsdp over them); valid: "
                     f"{', '.join(map(str, divisors))}")

  import jax

  from configs import pretrain
  from vit_jax.cost import estimate
  from vit_jax.models import build, layer_stack

  config = pretrain.get_config(f"variant={_VARIANT.value},data=imagenet21k")
  with config.unlocked():
    config.model.update(num_layers=_LAYERS.value, remat=_REMAT.value, scan=_SCAN.value,
                        dtype=_DTYPE.value)
    config.mesh.update(data=_DEVICES.value // _FSDP.value, fsdp=_FSDP.value)
    config.global_batch = _PER_DEVICE.value * _DEVICES.value
  plan, _ = estimate.device_plan(config, estimate.DEVICE_KINDS["h200"], _DEVICES.value,
                                 total_steps=10, mfu=0.4)
  model = build.model_from_config(config)
  params = layer_stack.stack(build.abstract_params(model, config.image_size))
  layer_bytes = sum(leaf.size * 4 for leaf in jax.tree.leaves(
      params["Transformer"][layer_stack.STACKED_BLOCKS])) // _LAYERS.value
  tokens = (config.image_size // model.patch_size) ** 2 + 1
  print(f"{_VARIANT.value} {_LAYERS.value} layers, scan={_SCAN.value} remat={_REMAT.value}, "
        f"{plan['mesh']}, {_PER_DEVICE.value} examples a device, {_DTYPE.value}")
  print(f"  temporary bytes a device  {plan['activations_bytes']:,}")
  print(f"  parameters a device       {plan['parameters_bytes']:,}")
  print(f"  one layer's weights       {layer_bytes:,}")
  print(f"  one block's input         {_PER_DEVICE.value * tokens * model.hidden_size * 4:,}")
  print(f"  compile seconds           {plan['compile_seconds']:.0f}")


if __name__ == "__main__":
  cli.run(main)
