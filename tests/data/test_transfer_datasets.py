"""The transfer suite's datasets: presets, derived labels, and ImageNet ReaL.

No dataset is downloaded. Each preset's builder is tfds's own, with its
real features; what stands in for the data is one of two things:

- metadata only (`dataset_info.json` with the published split sizes, written
  here) and `tfds.testing.mock_data` producing examples from the builder's
  features, so that every split of every preset is resolved against the
  true sizes and read through `sources.TfdsSource` (labels derived included);
- tiny real tfds datasets written with `tfds.core.SequentialWriter` where
  the values matter: ReaL's label lists, dsprites' 0/1 pixels.
"""
import functools

import jax
import ml_collections
import numpy as np
import pytest
import tensorflow as tf
import tensorflow_datasets as tfds
from tensorflow_datasets.testing import mocking

from configs import bit, common, finetune, transfer_datasets
from preprocess_cases import example
from vit_jax.data import input_pipeline, labels, preprocess, sources, splits
from vit_jax.evaluators import classification
from vit_jax.train import losses, sharding

PAPER = ("imagenet2012", "cifar10", "cifar100", "oxford_iiit_pet", "oxford_flowers102")
VTAB = {
    "natural": ("vtab_caltech101", "vtab_cifar100", "vtab_dtd", "vtab_flowers102",
                "vtab_pets", "vtab_sun397", "vtab_svhn"),
    "specialized": ("vtab_camelyon", "vtab_eurosat", "vtab_resisc45", "vtab_retinopathy"),
    "structured": ("vtab_clevr_count", "vtab_clevr_distance", "vtab_dmlab",
                   "vtab_dsprites_location", "vtab_dsprites_orientation",
                   "vtab_kitti_distance", "vtab_smallnorb_azimuth",
                   "vtab_smallnorb_elevation"),
}
ALL_VTAB = [name for names in VTAB.values() for name in names]
TRANSFER = [*PAPER, *ALL_VTAB]
# Examples the mocked builders yield for any split.
NUM_FAKE = 6
# The VTAB paper's test-set sizes (Table 5 of Zhai et al., 2019).
VTAB_TEST_SIZES = {
    "vtab_caltech101": 6_084, "vtab_cifar100": 10_000, "vtab_dtd": 1_880,
    "vtab_flowers102": 6_149, "vtab_pets": 3_669, "vtab_sun397": 21_750,
    "vtab_svhn": 26_032, "vtab_camelyon": 32_768, "vtab_eurosat": 5_400,
    "vtab_resisc45": 6_300, "vtab_retinopathy": 42_670, "vtab_clevr_count": 15_000,
    "vtab_clevr_distance": 15_000, "vtab_dmlab": 22_735,
    "vtab_dsprites_location": 73_728, "vtab_dsprites_orientation": 73_728,
    "vtab_kitti_distance": 711, "vtab_smallnorb_azimuth": 12_150,
    "vtab_smallnorb_elevation": 12_150,
}


def _prepared_dir(builder):
  """Creates ``builder``'s data_dir (tfds writes its metadata into an existing one)."""
  tf.io.gfile.makedirs(builder.data_dir)
  return builder.data_dir


def write_metadata(root, tfds_name, sizes):
  """Metadata of ``tfds_name`` with splits of ``sizes`` under ``root``, no data."""
  builder = tfds.builder(tfds_name, data_dir=root)
  builder.info.set_splits(tfds.core.SplitDict([
      tfds.core.SplitInfo(name=split, shard_lengths=[count], num_bytes=0)
      for split, count in sizes.items()]))
  builder.info.write_to_directory(_prepared_dir(builder))


def fake_examples(self, split, decoders=None, read_config=None, **kwargs):
  """`mock_data`'s examples, with 10 objects a scene rather than 5 to 50.

  Random scene sizes would put CLEVR's object count outside its 8 classes;
  real scenes hold 3 to 10 objects. Examples are encoded and decoded by the
  builder's own features, with the source's decoders.
  """
  del split, kwargs
  features = self.info.features
  if isinstance(decoders, tfds.decode.PartialDecoding):
    features, decoders = decoders.extract_features(features), decoders.decoders
  encoded = [features.encode_example(example) for example in mocking.RandomFakeGenerator(
      features, NUM_FAKE, constant_dynamic_shape=True)]
  specs = features.get_serialized_info()
  ds = tf.data.Dataset.from_generator(
      lambda: iter(encoded),
      output_signature=tf.nest.map_structure(
          lambda spec: tf.TensorSpec(spec.shape, spec.dtype), specs))
  ds = ds.map(functools.partial(features.decode_example, decoders=decoders))
  if read_config and read_config.add_tfds_id:
    ids = tf.data.Dataset.range(NUM_FAKE).map(
        lambda i: tf.strings.join([f"{self.name}-fake__", tf.strings.as_string(i)]))
    ds = tf.data.Dataset.zip(ds, ids).map(lambda ex, i: {**ex, "tfds_id": i})
  return ds


@pytest.fixture(scope="module")
def metadata_root(tmp_path_factory):
  """A data_dir with every transfer dataset's metadata at its published sizes."""
  root = str(tmp_path_factory.mktemp("tfds_metadata"))
  written = set()
  for name in [*TRANSFER, "imagenet2012_real"]:
    preset = common.DATASETS[name]
    if preset["tfds_name"] not in written:
      write_metadata(root, preset["tfds_name"], preset["published_sizes"])
      written.add(preset["tfds_name"])
  return root


@pytest.fixture
def mocked(metadata_root):
  with tfds.testing.mock_data(policy=tfds.testing.MockPolicy.USE_FILES,
                              data_dir=metadata_root, as_dataset_fn=fake_examples):
    yield metadata_root


def test_the_suite_has_vtabs_19_tasks_in_its_three_groups():
  vtab = {name: preset for name, preset in common.DATASETS.items()
          if name.startswith("vtab_")}
  assert sorted(vtab) == sorted(ALL_VTAB)
  for group, names in VTAB.items():
    assert {vtab[name]["group"] for name in names} == {group}
  assert not set(transfer_datasets.DATASETS) & {"imagenet2012", "cifar10", "jft"}


@pytest.mark.parametrize("name", TRANSFER)
def test_every_transfer_split_resolves_reads_and_labels_in_range(mocked, name):
  preset = common.DATASETS[name]
  config = common.dataset_config(name, data_dir=mocked)
  source = sources.get_source(config)
  sources.check_splits(source)  # the preset's own train and eval splits
  named = preset["transfer_splits"]
  assert sorted(named) == ["dev", "dev_train", "test", "train"]
  for field, split in named.items():
    expected = splits.examples_in_split(split, preset["published_sizes"])
    assert source.num_examples(split) == expected, field
    examples = list(source.read(split, 0, 1).as_numpy_iterator())
    assert len(examples) == NUM_FAKE, field
    for example in examples:
      assert sorted(example) == ["_id", "image", "label"], field
      assert isinstance(example["image"], bytes)  # decoded after shuffling
      assert 0 <= example["label"] < config.num_classes, (field, example["label"])
  # What trains never scores: dev_train against dev, train against test.
  for train, scored in (("dev_train", "dev"), ("train", "test")):
    splits.check_disjoint(train, source.regions(named[train]), scored,
                          source.regions(named[scored]))


@pytest.mark.parametrize("name", ALL_VTAB)
def test_vtab_1k_trains_on_800_chooses_on_200_and_tests_on_the_papers_test_set(name):
  preset = common.DATASETS[name]
  sizes = {field: splits.examples_in_split(split, preset["published_sizes"])
           for field, split in preset["transfer_splits"].items()}
  assert sizes == dict(train=1000, dev_train=800, dev=200, test=VTAB_TEST_SIZES[name])
  assert preset["train_split"] == preset["transfer_splits"]["train"]
  assert preset["eval_splits"] == {"test": preset["transfer_splits"]["test"]}


def test_paper_datasets_hold_out_the_papers_share_of_train_to_choose_the_rate():
  held_out = {"imagenet2012": 0.01, "cifar10": 0.02, "cifar100": 0.02,
              "oxford_iiit_pet": 0.10, "oxford_flowers102": 0.10}
  for name, share in held_out.items():
    preset = common.DATASETS[name]
    named, sizes = preset["transfer_splits"], preset["published_sizes"]
    train = splits.examples_in_split(named["train"], sizes)
    dev = splits.examples_in_split(named["dev"], sizes)
    assert dev + splits.examples_in_split(named["dev_train"], sizes) == train
    assert dev / train == pytest.approx(share, abs=0.001), name
  assert common.DATASETS["imagenet2012"]["transfer_splits"]["test"] == "validation"
  assert common.DATASETS["oxford_flowers102"]["transfer_splits"]["train"] == "train+validation"


def test_imagenet_real_reads_the_lists_of_real_labels(mocked):
  source = sources.get_source(common.dataset_config("imagenet2012_real", data_dir=mocked))
  assert source.num_examples("validation") == 50_000
  examples = list(source.read("validation", 0, 1).as_numpy_iterator())
  assert len(examples) == NUM_FAKE  # `all` of nothing would pass
  for example in examples:
    assert example["label"].ndim == 1 and example["label"].dtype.kind == "i"
    assert all(0 <= label < 1000 for label in example["label"]), example["label"]


@pytest.mark.parametrize("name", [*TRANSFER, "imagenet2012_real"])
def test_a_missing_dataset_names_itself_and_its_prepare_command(tmp_path, name):
  preset = common.DATASETS[name]
  with pytest.raises(sources.DatasetNotPreparedError) as error:
    sources.get_source(common.dataset_config(name, data_dir=str(tmp_path)))
  message = str(error.value)
  assert repr(preset["tfds_name"]) in message and str(tmp_path) in message
  assert preset["prepare"] in message


def test_a_label_the_dataset_lacks_lists_its_features_and_the_derived_labels(mocked):
  config = common.dataset_config("vtab_smallnorb_azimuth", data_dir=mocked)
  config.label = "label_azimut"
  with pytest.raises(ValueError, match=r"config.data.label='label_azimut': dataset "
                     r"'smallnorb' has no such feature; its features: .*label_azimuth.*"
                     r"derived labels: clevr_closest_object_distance"):
    sources.get_source(config)
  config.label = "clevr_count_all"
  with pytest.raises(ValueError, match=r"'clevr_count_all' is derived from \['objects'\], "
                     r"which dataset 'smallnorb' does not have"):
    sources.get_source(config)


def test_the_class_count_check_follows_the_chosen_label(mocked):
  config = common.dataset_config("vtab_smallnorb_elevation", data_dir=mocked)
  config.label = "label_azimuth"  # 18 classes, config.data.num_classes=9
  with pytest.raises(ValueError, match=r"'smallnorb' has 18 classes \(its "
                     r"'label_azimuth' feature\), more than config.data.num_classes=9"):
    sources.get_source(config)
  config = common.dataset_config("vtab_clevr_count", data_dir=mocked)
  config.num_classes = 4
  with pytest.raises(ValueError, match=r"'clevr' has 8 classes \(its derived label "
                     r"'clevr_count_all'\), more than config.data.num_classes=4"):
    sources.get_source(config)


def test_a_config_without_a_label_field_reads_the_label_feature(mocked):
  config = common.dataset_config("cifar10", data_dir=mocked).to_dict()
  del config["label"], config["binary_images"]  # a config written before they existed
  source = sources.get_source(ml_collections.ConfigDict(config))
  example = next(source.read("test", 0, 1).as_numpy_iterator())
  assert sorted(example) == ["_id", "image", "label"] and 0 <= example["label"] < 10


# Derived labels on hand-made features.

def derived(name, **features):
  return int(labels.DERIVED[name].compute(
      tf.nest.map_structure(tf.constant, features)))


def clevr_scene(depths):
  return {"size": np.zeros(len(depths), np.int64),
          "pixel_coords": np.array([[10.0, 20.0, depth] for depth in depths], np.float32)}


@pytest.mark.parametrize("objects, count", [(3, 0), (4, 1), (10, 7)])
def test_clevr_count_is_objects_minus_3(objects, count):
  assert derived("clevr_count_all", objects=clevr_scene([9.0] * objects)) == count


@pytest.mark.parametrize("depths, distance", [
    ([7.9, 12.0], 0), ([8.2, 9.0], 1), ([8.5, 11.0], 1), ([8.7], 2), ([9.2], 3),
    ([9.7, 30.0], 4), ([12.0, 10.5], 5)])
def test_clevr_distance_bins_the_nearest_objects_depth(depths, distance):
  assert derived("clevr_closest_object_distance", objects=clevr_scene(depths)) == distance


CAR, VAN, TRUCK, PEDESTRIAN, CYCLIST = 0, 1, 2, 3, 5


def kitti_scene(*objects):
  """(type, depth in metres) of each object."""
  return {"type": np.array([t for t, _ in objects], np.int64),
          "location": np.array([[1.0, 1.5, z] for _, z in objects], np.float32).reshape(-1, 3)}


@pytest.mark.parametrize("objects, distance", [
    ([(CAR, 5.0)], 0),
    ([(VAN, 10.0), (CAR, 25.0)], 1),
    ([(TRUCK, 30.0)], 2),
    ([(PEDESTRIAN, 2.0), (CAR, 15.0)], 1),  # a pedestrian is no vehicle
    ([(PEDESTRIAN, 4.0), (CYCLIST, 6.0)], 3),  # no vehicle
    ([], 3),
])
def test_kitti_distance_bins_the_nearest_vehicles_depth(objects, distance):
  assert derived("kitti_closest_vehicle_distance", objects=kitti_scene(*objects)) == distance


def test_kittis_first_three_object_types_are_the_vehicles():
  types = tfds.builder("kitti").info.features["objects"]["type"].names
  assert types[:labels.KITTI_VEHICLE_TYPES] == ["Car", "Van", "Truck"]


@pytest.mark.parametrize("position, grouped", [(0, 0), (1, 0), (2, 1), (17, 8), (31, 15)])
def test_dsprites_location_groups_32_positions_into_16(position, grouped):
  assert derived("dsprites_x_position_16", label_x_position=np.int64(position)) == grouped


@pytest.mark.parametrize("orientation, grouped", [(0, 0), (2, 0), (3, 1), (5, 2), (39, 15)])
def test_dsprites_orientation_groups_40_orientations_into_16(orientation, grouped):
  assert derived("dsprites_orientation_16", label_orientation=np.int64(orientation)) == grouped


@pytest.mark.parametrize("name, feature, classes", [
    ("vtab_smallnorb_azimuth", "label_azimuth", 18),
    ("vtab_smallnorb_elevation", "label_elevation", 9)])
def test_smallnorbs_tasks_read_their_own_features(name, feature, classes):
  features = tfds.builder("smallnorb").info.features
  assert common.DATASETS[name]["label"] == feature
  assert features[feature].num_classes == classes == common.DATASETS[name]["num_classes"]


# BiT's crop and flip, each left out where it would change the label.
@pytest.mark.parametrize("name, crops, flips", [
    ("vtab_dsprites_location", False, False),  # both move the object
    ("vtab_dsprites_orientation", True, False),  # a mirror is another orientation
    ("vtab_smallnorb_azimuth", True, False),
    ("vtab_clevr_count", False, True),  # a crop may cut out what counts
    ("vtab_clevr_distance", False, True), ("vtab_dmlab", False, True),
    ("vtab_kitti_distance", False, True),
    ("vtab_smallnorb_elevation", True, True), ("vtab_dtd", True, True)])
def test_fine_tuning_crops_and_flips_only_where_the_label_survives(name, crops, flips):
  for config in (finetune.get_config(f"variant=B/16,data={name}"),
                 bit.get_config(f"stage=hyperrule,variant=R50x1,data={name}")):
    ops = [op.split("(")[0] for op in config.pp.train.split("|")]
    assert ("random_crop" in ops, "flip_lr" in ops) == (crops, flips), config.pp.train
    assert "inception_crop" not in ops
    assert ops[1] == "resize"  # to the crop's precrop, or to the model's size


def test_dsprites_location_training_views_keep_the_objects_column():
  config = finetune.get_config("variant=B/16,data=vtab_dsprites_location,res=32")
  image = np.zeros((64, 64, 3), np.uint8)
  image[30:34, 8:12] = 255  # columns 8-11 of 64: x class 2 of 16
  train_view = preprocess.parse(config.pp.train)
  for seed in range(8):
    view = train_view(example(tf.io.encode_png(image), seed=(seed, 1)))["image"].numpy()
    columns = np.nonzero(view.max(axis=(0, 2)) > 0)[0]
    assert columns.mean() * 64 / 32 == pytest.approx(9.5, abs=0.5), seed


def test_every_derived_label_has_its_presets_class_count():
  for name in ALL_VTAB:
    preset = common.DATASETS[name]
    if preset["label"] in labels.DERIVED:
      assert labels.DERIVED[preset["label"]].num_classes == preset["num_classes"], name


# Tiny real datasets.

def write_dataset(root, tfds_name, examples_by_split):
  """A real tfds dataset of ``tfds_name``'s features holding the given examples."""
  builder = tfds.builder(tfds_name, data_dir=root)
  _prepared_dir(builder)
  writer = tfds.core.SequentialWriter(builder.info, max_examples_per_shard=100)
  writer.initialize_splits(list(examples_by_split))
  writer.add_examples(examples_by_split)
  writer.close_all()


def test_dsprites_binary_pixels_become_a_three_channel_0_to_255_image(tmp_path):
  shape = np.zeros((64, 64, 1), np.uint8)
  shape[20:40, 10:30] = 1
  examples = [dict(image=shape, label_shape=0, label_scale=0, label_orientation=7,
                   label_x_position=x, label_y_position=0, value_shape=0.0,
                   value_scale=0.5, value_orientation=0.0, value_x_position=0.0,
                   value_y_position=0.0) for x in (4, 31)]
  write_dataset(str(tmp_path), "dsprites", {"train": examples})
  config = common.dataset_config("vtab_dsprites_location", data_dir=str(tmp_path))
  read = list(sources.get_source(config).read("train", 0, 1).as_numpy_iterator())
  assert [example["label"] for example in read] == [2, 15]
  image = preprocess.parse("decode")({"image": tf.constant(read[0]["image"])})["image"]
  image = image.numpy()
  assert image.shape == (64, 64, 3) and image.dtype == np.uint8
  np.testing.assert_array_equal(image, np.repeat(shape * 255, 3, axis=-1))


class ClassOfTheColour:
  """A model whose top class is chosen by hand per image, told apart by colour.

  Image i is a flat grey of 30 * i (the pipeline maps it to 30 * i / 255 * 2 - 1).
  """

  def __init__(self, predicted, num_classes):
    self.logits = jax.nn.one_hot(np.asarray(predicted), num_classes) * 10.0

  def apply(self, variables, images, *, train):
    del variables, train
    grey = (images.mean(axis=(1, 2, 3)) + 1) / 2 * 255
    return self.logits[jax.numpy.round(grey / 30).astype(int)]


def test_real_accuracy_is_precision_at_1_over_the_images_with_a_real_label(tmp_path):
  # (real labels, the model's top class) of each validation image.
  images = [([], 3),         # no real label: left out, whatever the model says
            ([3], 3),        # hit
            ([1, 2, 5], 2),  # hit: any of the real labels
            ([], 9),         # left out
            ([7], 6),        # miss
            ([4, 8], 8),     # hit
            ([0], 0)]        # hit
  write_dataset(str(tmp_path), "imagenet2012_real", {"validation": [
      dict(image=np.full((16, 16, 3), 30 * i, np.uint8), original_label=0,
           real_label=real, file_name=f"ILSVRC2012_val_{i:08d}.JPEG")
      for i, (real, _) in enumerate(images)]})
  labelled = [(real, top) for real, top in images if real]
  real_accuracy = sum(top in real for real, top in labelled) / len(labelled)
  assert real_accuracy == 4 / 5

  config = common.dataset_config("imagenet2012_real", data_dir=str(tmp_path))
  source = sources.get_source(config)
  data = input_pipeline.EvalData(source, "decode|value_range(-1,1)|onehot(1000)",
                                 "validation", image_size=16, global_batch=4)
  model = ClassOfTheColour([top for _, top in images], config.num_classes)
  mesh = sharding.make_mesh(ml_collections.ConfigDict({"data": 1, "fsdp": 1}),
                            jax.devices()[:1])
  result = classification.evaluate(
      classification.make_eval_step(model, losses.get_loss("sigmoid_xent")), {}, data,
      sharding.batch_sharding(mesh), multi_label=config.multi_label)
  assert result["prec@1"] == real_accuracy
  assert result["num_examples"] == 5 and result["unlabelled"] == 2
