"""Data: where examples come from, how they are prepared, and how datasets are made.

- `sources`: tfds datasets, TFRecord shards and image folders, split per process;
- `splits`: split names and tfds-style slices, and the checks a run's splits get;
- `input_pipeline`: the tf.data train stream and exact eval data, fed to devices;
- `corrupt_images`: corrupt images found, then skipped, blanked or named;
- `checks`: labels, shard counts and corrupt streams, checked as they are read;
- `preprocess`: the ops of preprocessing strings (registry, image, general, RandAugment);
- `tfrecords`: the TFRecord writer; `builders`: tfds builders from local files;
- `config_fields`, `tf_errors`: small helpers (the first without TensorFlow).
"""
