"""Training: the loop and what it is built from (step, optimizer, losses,
mixup, sharding, preemption, metrics, config checks).

`train_and_evaluate` (in `loop`) is imported on first use, so the step,
optimizer and sharding modules stay importable without TensorFlow, which only
the loop's input pipeline and metric writer need.
"""


def __getattr__(name):
  if name == "train_and_evaluate":
    from vit_jax.train.loop import train_and_evaluate
    return train_and_evaluate
  raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
