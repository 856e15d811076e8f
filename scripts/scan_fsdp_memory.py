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

_VARIANT = flags.DEFINE_string("variant", "G/14", "configs/pretrain.py's variant.")
_LAYERS = flags.DEFINE_integer("layers", 4, "Encoder blocks.", lower_bound=1)
_DEVICES = flags.DEFINE_integer("devices", 8, "Emulated devices (set XLA_FLAGS to match).")
_FSDP = flags.DEFINE_integer("fsdp", 8, "config.mesh.fsdp; data takes the other devices.")
_PER_DEVICE = flags.DEFINE_integer("per_device", 16, "Examples a device.", lower_bound=1)
_DTYPE = flags.DEFINE_string("dtype", "float32", "config.model.dtype.")
_REMAT = flags.DEFINE_bool("remat", True, "config.model.remat.")
_SCAN = flags.DEFINE_bool("scan", True, "config.model.scan.")


def main(argv):
  del argv
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
  app.run(main)
