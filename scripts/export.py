r"""Exports a run's classifier for use outside this codebase.

  python scripts/export.py --workdir=runs/demo/transfer/fashion_mnist_last5/seed0 --format=npz --out=vit.npz
  python scripts/export.py --workdir=runs/demo/transfer/fashion_mnist_last5/seed0 --format=serving --out=vit_serving
  python scripts/export.py --workdir=runs/demo/transfer/fashion_mnist_last5/seed0 --format=saved_model --out=vit_tf
  python scripts/export.py --workdir=runs/demo/transfer/fashion_mnist_last5/seed0 --format=timm --out=vit_timm
  python scripts/export.py --workdir=runs/demo/transfer/fashion_mnist_last5/seed0 --format=hf --out=vit_hf

Flags only; `vit_jax/inference/export.py` says what each format holds. Each
export reads its result back and prints how far it is from the model:
bit-identical parameters for npz (and for the weights of timm and hf), the
largest logit difference on a few random images for the model formats and,
where timm or transformers is installed, for timm and hf.
"""
import os

# TensorFlow only writes the SavedModel here; its C++ start-up chatter is noise.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from absl import app, flags  # noqa: E402

from vit_jax.runtime import cli  # noqa: E402

FORMATS = ("npz", "serving", "saved_model", "timm", "hf")

FLAGS = cli.command_flags(__name__)
_WORKDIR = flags.DEFINE_string("workdir", None, "The run to export.",
                               flag_values=FLAGS, required=True)
_STEP = flags.DEFINE_integer("step", None, "A checkpoint step (default: the latest).",
                             flag_values=FLAGS)
_FORMAT = flags.DEFINE_enum("format", None, FORMATS, "What to write.",
                            flag_values=FLAGS, required=True)
_OUT = flags.DEFINE_string(
    "out", None, "A .npz file for npz (replaced where it exists), a directory for "
    "the other formats: a new one, or an earlier export of the format, whose files "
    "it replaces; a run's workdir, or a directory whose files of those names are "
    "not such an export's, is refused.",
    flag_values=FLAGS, required=True)
_PLATFORMS = flags.DEFINE_list(
    "platforms", ["cpu", "cuda", "tpu"], "Platforms the model formats are lowered for.",
    flag_values=FLAGS)


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  from vit_jax.inference import export, restore  # after flag parsing: --help is fast
  from vit_jax.models import timm_format
  from vit_jax.train import workdir_files

  config = workdir_files.read_config(_WORKDIR.value)
  export.check_out(_OUT.value, _FORMAT.value)  # before the restore, which takes a while
  model, params = restore.restore_model(config, _WORKDIR.value, step=_STEP.value)
  if _FORMAT.value == "npz":
    count = export.export_npz(params, _OUT.value)
    print(f"wrote {_OUT.value}: {count} arrays, read back bit for bit")
    return
  if _FORMAT.value in export.TORCH_FORMATS:
    difference = export.export_torch_format(config, model, params,
                                            export_format=_FORMAT.value, out=_OUT.value)
    library = export.TORCH_FORMATS[_FORMAT.value][2]
    checked = (f"{library} is not installed, so its logits are not checked "
               f"({timm_format.INSTALL_INTEROP})" if difference is None else
               f"max |logit difference| under {library} to the model on "
               f"{export.CHECK_BATCH} random images: {difference:.3g}")
    print(f"wrote {_OUT.value}: weights read back bit for bit; {checked}")
    return
  source = _WORKDIR.value if _STEP.value is None else f"{_WORKDIR.value} step {_STEP.value}"
  difference = export.export_model(config, model, params, export_format=_FORMAT.value,
                                   platforms=_PLATFORMS.value, source=source,
                                   out=_OUT.value)
  checked = (f"max |logit difference| to the model on {export.CHECK_BATCH} random "
             f"images: {difference:.3g}" if difference is not None else
             f"its logits are not checked: this host's platform is none of "
             f"{','.join(_PLATFORMS.value)}")
  print(f"wrote {_OUT.value}: {checked}")


if __name__ == "__main__":
  cli.run(main)
