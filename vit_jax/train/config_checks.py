"""Checks of a run's config that need neither data nor devices.

The trainer runs them before anything is compiled, and the cost estimator
(`vit_jax.cost.estimate`) before it prices a run, so both refuse the same
configs with the same message; this module imports no TensorFlow.
"""
from vit_jax import models
from vit_jax.train import losses


def resolve_total_steps(config, train_examples):
  """Steps of the run from `config.total_steps` or `config.total_epochs`."""
  if (config.total_steps is None) == (config.total_epochs is None):
    raise ValueError(
        f"set exactly one of config.total_steps={config.total_steps} and "
        f"config.total_epochs={config.total_epochs} (configs/pretrain.py "
        f"counts epochs=N, or steps=N instead)")
  if config.total_steps is not None:
    return int(config.total_steps)
  return max(1, int(config.total_epochs * train_examples // config.global_batch))


def check_config(config, *, num_devices, process_count):
  """Fails before any compilation on settings that cannot work together."""
  if config.accum_steps < 1:
    raise ValueError(f"config.accum_steps={config.accum_steps} must be >= 1")
  micro_batch, remainder = divmod(config.global_batch, config.accum_steps)
  if remainder or micro_batch % num_devices:
    raise ValueError(
        f"config.global_batch={config.global_batch} must be divisible by "
        f"config.accum_steps={config.accum_steps} x {num_devices} devices")
  for field in ("global_batch", "eval_batch"):
    if config[field] % num_devices or config[field] % process_count:
      raise ValueError(f"config.{field}={config[field]} must be divisible by "
                       f"the {num_devices} devices and the {process_count} "
                       f"processes")
  for field in ("log_every", "eval_every", "checkpoint_every"):
    if not config[field] >= 1:
      raise ValueError(f"config.{field}={config[field]} must be >= 1 (a number "
                       f"of steps; the last step always logs, evaluates and saves)")
  if config.keep_checkpoints is not None and not config.keep_checkpoints >= 1:
    raise ValueError(f"config.keep_checkpoints={config.keep_checkpoints} must be "
                     f">= 1, or None to keep every checkpoint")
  if not 0 <= config.ema_decay < 1:
    raise ValueError(f"config.ema_decay={config.ema_decay} must be in [0, 1) "
                     f"(0 turns the parameter average off)")
  patch = models.get_model(config.variant, num_classes=1).patch_size
  if config.image_size % patch:
    raise ValueError(f"config.image_size={config.image_size} is not divisible "
                     f"by the patch size {patch} of {config.variant}")
  losses.get_loss(config.loss)
  for field, valid in (("on_nonfinite", ("stop", "skip")),
                       ("on_save_error", ("stop", "continue"))):
    if config[field] not in valid:
      raise ValueError(f"config.{field}={config[field]!r}; valid: "
                       f"{', '.join(valid)}")
