r"""Prints the top-5 classes of image files, from a run or a checkpoint.

  python -m vit_jax.predict --workdir=runs/demo/transfer/fashion_mnist_last5/seed0 shirt.png boot.jpg
  python -m vit_jax.predict --checkpoint=ViT-B_16_cifar10.npz \
      --config=configs/finetune.py:variant=B/16,data=cifar10 cat.jpg

Flags only; `vit_jax/inference/predict.py` says how images are prepared and
classes named.
"""
import os

# TensorFlow only decodes images here; its C++ start-up chatter is noise.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from absl import app, flags  # noqa: E402

from vit_jax.runtime import cli  # noqa: E402

FLAGS = cli.command_flags(__name__)
_WORKDIR = flags.DEFINE_string(
    "workdir", None, "A run's workdir: its config and latest checkpoint.",
    flag_values=FLAGS)
_CHECKPOINT = flags.DEFINE_string(
    "checkpoint", None, "Parameters to use instead: a .npz, a workdir, a "
    "checkpoint step directory, or a timm or Hugging Face ViT (state dict file "
    "or directory).", flag_values=FLAGS)
_CONFIG = flags.DEFINE_string(
    "config", None, "Without --workdir: configs/X.py:args or a run's config.json.",
    flag_values=FLAGS)


def main(argv):
  images = argv[1:]
  if not images:
    raise app.UsageError("name image files (PNG, JPEG, GIF, BMP) to classify")
  if bool(_WORKDIR.value) == bool(_CONFIG.value):
    raise app.UsageError("give either --workdir, or --checkpoint with --config")
  if _CONFIG.value and not _CHECKPOINT.value:
    raise app.UsageError("--config needs --checkpoint")
  from vit_jax.inference import predict, restore  # after flag parsing: --help is fast
  from vit_jax.train import workdir_files

  if _WORKDIR.value:
    config = workdir_files.read_config(_WORKDIR.value)
  else:
    config = predict.config_from_file(_CONFIG.value)
  model, params = restore.restore_model(config, _CHECKPOINT.value or _WORKDIR.value)
  probabilities = predict.class_probabilities(config, model, params, images)
  names = predict.class_names(config.data)
  for path, image_probabilities in zip(images, probabilities):
    print(path)
    for name, probability in predict.top_classes(image_probabilities, names):
      print(f"  {100 * probability:6.2f}%  {name}")


if __name__ == "__main__":
  cli.run(main)
