"""Data: where examples come from, how they are prepared, and how datasets are made.

- `sources`: tfds datasets, TFRecord shards and image folders, split per process;
- `input_pipeline`: the tf.data train stream and exact eval data, fed to devices;
- `corrupt_images`: corrupt images found, then skipped, blanked or named;
- `preprocess`: the ops of preprocessing strings (registry, image, general, RandAugment);
- `tfrecords`: the TFRecord writer; `builders`: tfds builders from local files;
- `config_fields`, `tf_errors`: small helpers (the first without TensorFlow).
"""
