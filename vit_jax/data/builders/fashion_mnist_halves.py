"""Fashion-MNIST's two halves of five classes each, as TFDS datasets.

The demo pre-trains on one half and transfers to the other, so that the
transfer task's classes are ones the model never trained on:

  fashion_mnist_halves/first5  classes 0-4 (T-shirt/top ... Coat), labels 0-4
  fashion_mnist_halves/last5   classes 5-9 (Sandal ... Ankle boot), labels 0-4

Each half keeps its images in the order of the IDX files (30,000 train and
5,000 test: the release has 6,000 and 1,000 of each class), so slices such as
`train[90%:]` are the same images on every machine.

The builder is fashion_mnist_local's with a class filter: the same local
files, `manual_dir` default and missing-file check. It is a builder of its
own, not configs of fashion_mnist_local, whose prepared data would otherwise
move into a config's directory and have to be prepared again.
"""
import dataclasses

from etils import epath
import tensorflow_datasets as tfds

from vit_jax.data.builders import fashion_mnist_local
from vit_jax.data.builders.fashion_mnist_local import CLASS_NAMES, IMAGE_SIZE


@dataclasses.dataclass(eq=False)
class HalfConfig(tfds.core.BuilderConfig):
  """A half: the original classes it keeps, labelled 0.. in this order."""
  classes: tuple[int, ...] = ()


class FashionMnistHalves(fashion_mnist_local.FashionMnistLocal):
  """Five of Fashion-MNIST's classes: 30,000 train, 5,000 test 28x28 images."""

  VERSION = tfds.core.Version("1.0.0")
  RELEASE_NOTES = {"1.0.0": "Classes 0-4 and 5-9 of the upstream IDX files."}
  BUILDER_CONFIGS = [
      HalfConfig(name="first5", classes=(0, 1, 2, 3, 4),
                 description="Classes 0-4: " + ", ".join(CLASS_NAMES[:5])),
      HalfConfig(name="last5", classes=(5, 6, 7, 8, 9),
                 description="Classes 5-9, relabelled 0-4: "
                             + ", ".join(CLASS_NAMES[5:])),
  ]

  def _info(self) -> tfds.core.DatasetInfo:
    classes = self.builder_config.classes
    return tfds.core.DatasetInfo(
        builder=self,
        description="Zalando's Fashion-MNIST article images of five classes, "
                    "read from local IDX files, in file order.",
        features=tfds.features.FeaturesDict({
            "image": tfds.features.Image(shape=(IMAGE_SIZE, IMAGE_SIZE, 1)),
            "label": tfds.features.ClassLabel(
                names=[CLASS_NAMES[c] for c in classes]),
        }),
        supervised_keys=("image", "label"),
        homepage="https://github.com/zalandoresearch/fashion-mnist",
        # File order, not tfds' hash of the keys: slices of a split are then
        # the same images as slices of the IDX file's images of these classes.
        disable_shuffling=True,
    )

  def _generate_examples(self, images_path: epath.Path,
                         labels_path: epath.Path):
    images, labels = fashion_mnist_local.read_split(images_path, labels_path)
    new_label = {c: i for i, c in enumerate(self.builder_config.classes)}
    for index, (image, label) in enumerate(zip(images, labels)):
      if int(label) in new_label:
        # The key is the image's index in the IDX file.
        yield index, {"image": image[..., None], "label": new_label[int(label)]}
