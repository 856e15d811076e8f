"""Presets of the datasets a model transfers to: VTAB-1k's 19 tasks, ImageNet
ReaL, and big_vision's few-shot probes (`FEWSHOT_DATASETS`).

`configs.common` merges `DATASETS` into its own presets (its keys are the
same; see there). This module imports nothing of `configs.common`, so
either may be imported first.

Each VTAB-1k task reads its tfds dataset as google-research/task_adaptation
defines the benchmark (``task_adaptation/data/<dataset>.py``, commit
ed9b417; for dtd.py and dmlab.py, copies of that version in other
repositories): ``train800`` is ``train[:800]``; ``val200`` the first 200
examples of the validation split, or, where a dataset has none, the 200 that follow
task_adaptation's own train/validation cut of ``train`` (its first 90, 80 or
60 %, counted in whole examples); ``test`` the test split, or what
task_adaptation holds out as one. VTAB-1k's grid is the one rate 0.01, so
the suite runs no dev fine-tunes (``train800`` and ``val200`` stay
`transfer_splits`' dev_train and dev, for a grid of several rates): its
final runs train on ``train800val200`` directly and report ``test``.

Keys beyond `configs.common`'s: ``label`` (`config.data.label`: a feature,
or a label derived from others, `vit_jax.data.labels`), ``binary_images``
(dsprites stores pixels as 0 and 1), ``group`` (VTAB's natural, specialized
and structured tasks), ``train_augment`` (which of a random crop and a flip
fine-tuning may apply without changing the label; both where it is absent:
`configs.common.finetune_train_pp`). Published sizes are tfds's; the test
splits cut from them hold as many examples as the VTAB paper's test sets
(KITTI 711, dSprites 73,728, SmallNORB 12,150, ...).

The few-shot presets read their datasets as big_vision's few-shot evaluator
does (``big_vision/configs/common_fewshot.py``): shots drawn from the whole
training split, scored on the test split; UC Merced, which has one split,
draws from its first 1,000 images and is scored on the other 1,100.
`FEWSHOT_DATASETS` is big_vision's default set of them, `FEWSHOT_IMAGENET`
its ImageNet probe (10 shots, for runs that have ImageNet: a manual download).
"""

_TRAIN800 = "train[:800]"


def _after_cut(train_examples, percent):
  """The 200 examples after task_adaptation's cut at ``percent`` % of ``train``."""
  cut = percent * train_examples // 100
  return f"train[{cut}:{cut + 200}]"


def _held_out(train_examples, train_percent, validation_percent):
  """What follows task_adaptation's train and validation cuts of ``train``: its test."""
  cut = (train_percent * train_examples // 100
         + validation_percent * train_examples // 100)
  return f"train[{cut}:]"


def _fewshot(name, *, num_classes, sizes, train="train", test="test"):
  """A preset of big_vision's few-shot probes: ``train`` for the shots, ``test`` scored."""
  return dict(
      tfds_name=name, num_classes=num_classes, multi_label=False, train_split=train,
      eval_splits={"test": test}, published_sizes=sizes,
      prepare=f"tfds build {name.split(':')[0]} (on a machine with network access), "
              f"then copy the data_dir")


# BiT fine-tunes with a random crop and a flip, "omitting flipping or cropping
# when appropriate": where they would change the label (BiT paper, section
# 3.3). Which tasks: as scenic's ViT-G VTAB-1k sweep
# (scenic/projects/baselines/plainvit/configs/vtab_plainvit_config.py).
_ORIENTATION = ("crop",)  # a mirror image shows another orientation or azimuth
_CONTENTS = ("flip",)  # a crop may cut out what is counted or the nearest object
_POSITION = ()  # both move the object: its x position is the label


def _vtab(name, group, *, num_classes, val200, test, sizes, label="label", **extra):
  """A VTAB-1k preset: train800val200 to train on, its test split to evaluate."""
  train = f"{_TRAIN800}+{val200}"
  preset = dict(
      tfds_name=name, num_classes=num_classes, multi_label=False, label=label,
      group=group, train_split=train, eval_splits={"test": test},
      published_sizes=sizes,
      transfer_splits=dict(train=train, dev_train=_TRAIN800, dev=val200, test=test),
      prepare=f"tfds build {name.split(':')[0]} (on a machine with network "
              f"access), then copy the data_dir")
  preset.update(extra)
  return preset


_SIZES = dict(
    caltech101={"train": 3_060, "test": 6_084},
    cars196={"train": 8_144, "test": 8_041},
    cifar100={"train": 50_000, "test": 10_000},
    dtd={"train": 1_880, "validation": 1_880, "test": 1_880},
    oxford_flowers102={"train": 1_020, "validation": 1_020, "test": 6_149},
    oxford_iiit_pet={"train": 3_680, "test": 3_669},
    sun397={"train": 76_128, "validation": 10_875, "test": 21_750},
    svhn_cropped={"train": 73_257, "test": 26_032, "extra": 531_131},
    patch_camelyon={"train": 262_144, "validation": 32_768, "test": 32_768},
    eurosat={"train": 27_000},
    resisc45={"train": 31_500},
    diabetic_retinopathy_detection={"train": 35_126, "validation": 10_906,
                                    "test": 42_670, "sample": 10},
    clevr={"train": 70_000, "validation": 15_000, "test": 15_000},
    dmlab={"train": 65_550, "validation": 22_628, "test": 22_735},
    dsprites={"train": 737_280},
    kitti={"train": 6_347, "validation": 423, "test": 711},
    smallnorb={"train": 24_300, "test": 24_300},
    uc_merced={"train": 2_100},
)
# Datasets with one labelled split, cut by task_adaptation into train,
# validation and test (eurosat.py, resisc45.py: 60 %, 20 %, the rest;
# dsprites.py: 80 %, 10 %, the rest).
_DSPRITES = _SIZES["dsprites"]["train"]
_DSPRITES_TEST = _held_out(_DSPRITES, 80, 10)

DATASETS = {
    # Natural.
    "vtab_caltech101": _vtab(
        "caltech101:3.*.*", "natural", num_classes=102, sizes=_SIZES["caltech101"],
        val200=_after_cut(_SIZES["caltech101"]["train"], 90), test="test"),
    "vtab_cifar100": _vtab(
        "cifar100", "natural", num_classes=100, sizes=_SIZES["cifar100"], image_px=32,
        val200=_after_cut(_SIZES["cifar100"]["train"], 90), test="test"),
    "vtab_dtd": _vtab(
        "dtd", "natural", num_classes=47, sizes=_SIZES["dtd"],
        val200="validation[:200]", test="test"),
    "vtab_flowers102": _vtab(
        "oxford_flowers102", "natural", num_classes=102,
        sizes=_SIZES["oxford_flowers102"], val200="validation[:200]", test="test"),
    # task_adaptation reads oxford_iiit_pet:3.*.*; tfds now has 4.0.0 only,
    # with the same 3,680 / 3,669 split.
    "vtab_pets": _vtab(
        "oxford_iiit_pet", "natural", num_classes=37, sizes=_SIZES["oxford_iiit_pet"],
        val200=_after_cut(_SIZES["oxford_iiit_pet"]["train"], 80), test="test"),
    "vtab_sun397": _vtab(
        "sun397/tfds", "natural", num_classes=397, sizes=_SIZES["sun397"],
        val200="validation[:200]", test="test"),
    "vtab_svhn": _vtab(
        "svhn_cropped", "natural", num_classes=10, sizes=_SIZES["svhn_cropped"],
        image_px=32, val200=_after_cut(_SIZES["svhn_cropped"]["train"], 90), test="test"),
    # Specialized.
    "vtab_camelyon": _vtab(
        "patch_camelyon", "specialized", num_classes=2, sizes=_SIZES["patch_camelyon"],
        image_px=96, val200="validation[:200]", test="test"),
    "vtab_eurosat": _vtab(
        "eurosat/rgb", "specialized", num_classes=10, sizes=_SIZES["eurosat"],
        image_px=64, val200=_after_cut(_SIZES["eurosat"]["train"], 60),
        test=_held_out(_SIZES["eurosat"]["train"], 60, 20)),
    "vtab_resisc45": _vtab(
        "resisc45", "specialized", num_classes=45, sizes=_SIZES["resisc45"],
        image_px=256, val200=_after_cut(_SIZES["resisc45"]["train"], 60),
        test=_held_out(_SIZES["resisc45"]["train"], 60, 20),
        prepare="tfds build resisc45 --manual_dir=DIR (a manual download: "
                "NWPU-RESISC45.rar from the authors' OneDrive, extracted into DIR)"),
    "vtab_retinopathy": _vtab(
        "diabetic_retinopathy_detection/btgraham-300", "specialized", num_classes=5,
        sizes=_SIZES["diabetic_retinopathy_detection"],
        val200="validation[:200]", test="test",
        prepare="tfds build diabetic_retinopathy_detection/btgraham-300 "
                "--manual_dir=DIR (a manual download from Kaggle's "
                "diabetic-retinopathy-detection competition: train/, test/, "
                "sample/ and trainLabels.csv in DIR)"),
    # Structured. CLEVR's test split has no labels: its validation split is the test.
    "vtab_clevr_count": _vtab(
        "clevr", "structured", num_classes=8, label="clevr_count_all",
        sizes=_SIZES["clevr"], val200=_after_cut(_SIZES["clevr"]["train"], 90),
        test="validation", train_augment=_CONTENTS),
    "vtab_clevr_distance": _vtab(
        "clevr", "structured", num_classes=6, label="clevr_closest_object_distance",
        sizes=_SIZES["clevr"], val200=_after_cut(_SIZES["clevr"]["train"], 90),
        test="validation", train_augment=_CONTENTS),
    "vtab_dmlab": _vtab(
        "dmlab", "structured", num_classes=6, sizes=_SIZES["dmlab"],
        val200="validation[:200]", test="test", train_augment=_CONTENTS),
    "vtab_dsprites_location": _vtab(
        "dsprites", "structured", num_classes=16, label="dsprites_x_position_16",
        sizes=_SIZES["dsprites"], image_px=64, binary_images=True,
        val200=_after_cut(_DSPRITES, 80), test=_DSPRITES_TEST, train_augment=_POSITION),
    "vtab_dsprites_orientation": _vtab(
        "dsprites", "structured", num_classes=16, label="dsprites_orientation_16",
        sizes=_SIZES["dsprites"], image_px=64, binary_images=True,
        val200=_after_cut(_DSPRITES, 80), test=_DSPRITES_TEST,
        train_augment=_ORIENTATION),
    # task_adaptation pins kitti:3.1.0, made before tfds 3.2.0's "Devkit
    # updated"; today's tfds builds every version from the current devkit (whose
    # video mapping cuts the splits), so tfds's default, 3.3.0, is read here.
    "vtab_kitti_distance": _vtab(
        "kitti", "structured", num_classes=4, label="kitti_closest_vehicle_distance",
        sizes=_SIZES["kitti"], val200="validation[:200]", test="test",
        train_augment=_CONTENTS),
    # task_adaptation's SmallNORB validation is the first half of test.
    "vtab_smallnorb_azimuth": _vtab(
        "smallnorb", "structured", num_classes=18, label="label_azimuth",
        sizes=_SIZES["smallnorb"], image_px=96, val200="test[:200]", test="test[50%:]",
        train_augment=_ORIENTATION),
    "vtab_smallnorb_elevation": _vtab(
        "smallnorb", "structured", num_classes=9, label="label_elevation",
        sizes=_SIZES["smallnorb"], image_px=96, val200="test[:200]", test="test[50%:]"),
    # big_vision's few-shot probes; CIFAR-100, Pets and ImageNet are the
    # paper datasets' presets of configs/common.py, with their `fewshot_splits`.
    # Caltech101 and DTD are VTAB's tfds versions, so one prepared copy serves both.
    "caltech101": _fewshot("caltech101:3.*.*", num_classes=102,
                           sizes=_SIZES["caltech101"]),
    # 2.1.0 fixed the labels of the test split (tensorflow/datasets#3927).
    "cars196": _fewshot("cars196:2.1.0", num_classes=196, sizes=_SIZES["cars196"]),
    "dtd": _fewshot("dtd", num_classes=47, sizes=_SIZES["dtd"]),
    "uc_merced": _fewshot("uc_merced", num_classes=21, sizes=_SIZES["uc_merced"],
                          train="train[:1000]", test="train[1000:]"),
    # ImageNet ReaL: the "Are we done with ImageNet?" labels of ImageNet's 50,000
    # validation images, a list of classes per image (some lists empty). A model
    # fine-tuned on imagenet2012 is scored on it; precision@1 over the images with
    # a label is ReaL accuracy. Nothing trains on it: its one split is the
    # training split only because every preset names one, and a run that did
    # train would fail the check that evaluation shares no example with training.
    "imagenet2012_real": dict(
        tfds_name="imagenet2012_real", num_classes=1000, multi_label=True,
        label="real_label", train_split="validation",
        eval_splits={"real": "validation"},
        published_sizes={"validation": 50_000},
        prepare="tfds build imagenet2012_real --manual_dir=DIR_WITH_THE_TARS "
                "(ILSVRC2012_img_val.tar is a manual download from image-net.org; "
                "the ReaL labels come from GitHub, so on a machine with network "
                "access), then copy the data_dir"),
}

# big_vision's default few-shot probes, each at config.fewshot.shots
# (configs/pretrain.py probes them when config.fewshot.every is set).
FEWSHOT_DATASETS = ("caltech101", "cars196", "cifar100", "dtd", "oxford_iiit_pet",
                    "uc_merced")
# big_vision's ImageNet probe: 10 shots from its first 65,000 training images
# (each class has at least 30 there), scored on the validation split.
FEWSHOT_IMAGENET = "imagenet2012:10"
