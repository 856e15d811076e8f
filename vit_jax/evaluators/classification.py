"""Exact classification evaluation: every example of a split counts once.

Eval batches arrive padded with ``mask == False`` rows (see
`input_pipeline.EvalData`); sums are taken over the masked rows on the
devices and fetched once at the end of the split. Single-label data reports
top-1 accuracy; multi-label data the precision@1 that big_vision reports
(the top-scoring class is one of the image's labels). Both are the same
computation on one-hot or multi-hot targets.

An example without any label (ImageNet ReaL's images that none of the real
labels fits) has no right answer: as in big_vision, it is left out of the
precision@1 and the loss, and counted as ``unlabelled``. One-hot targets
always hold a label, so top-1 counts every example.
"""
import jax
import jax.numpy as jnp

from vit_jax.data import input_pipeline, sources
from vit_jax.inference import restore
from vit_jax.models import activation_sharding
from vit_jax.train import losses, sharding


def make_eval_step(model, loss_fn, mesh=None):
  """A jitted function (params, batch) -> sums of hits, loss and examples.

  With the run's ``mesh`` the model is traced under it, as the train step
  traces it, so its activations stay split over the batch under FSDP.

  ``count`` is the examples that count (those with a label); ``seen`` every
  real (unpadded) row, so that `evaluate` can check each example came once.
  """

  @jax.jit
  def eval_step(params, batch):
    with activation_sharding.under(mesh):
      logits = model.apply({"params": params}, batch["image"], train=False)
    labels, mask = batch["labels"], batch["mask"]
    counted = mask & losses.labelled(labels)
    hits = losses.top1_hits(logits, labels) & counted
    loss = jnp.where(counted, loss_fn(logits, labels), 0.0)
    return {"hits": jnp.sum(hits), "loss_sum": jnp.sum(loss),
            "count": jnp.sum(counted), "seen": jnp.sum(mask)}

  return eval_step


def evaluate(eval_step, params, eval_data, batch_sharding, *, multi_label):
  """Metrics of ``params`` on all of ``eval_data``: top1 or prec@1, loss.

  ``num_examples`` is the examples the metrics average over; multi-label
  data adds ``unlabelled``, those left out for having no label.
  """
  totals = None
  for host_batch in eval_data:
    sums = eval_step(params, input_pipeline.to_global(host_batch, batch_sharding))
    totals = sums if totals is None else jax.tree.map(jnp.add, totals, sums)
  totals = jax.device_get(totals)
  seen, count = int(totals["seen"]), int(totals["count"])
  if seen != eval_data.num_examples:
    raise RuntimeError(f"evaluation saw {seen} examples, but the split "
                       f"has {eval_data.num_examples}")
  if not count:
    raise ValueError(f"none of the {seen} examples of split {eval_data.split!r} "
                     f"has a label: precision@1 has nothing to average over")
  metric = "prec@1" if multi_label else "top1"
  results = {metric: float(totals["hits"]) / count,
             "loss": float(totals["loss_sum"]) / count,
             "num_examples": count}
  if multi_label:
    results["unlabelled"] = seen - count
  return results


def evaluate_checkpoint(config, path, splits):
  """{name: metrics} of the parameters at ``path`` on each of ``splits``.

  ``splits`` maps names to tfds splits, as ``config.data.eval_splits`` does.
  The mesh, batches and preprocessing are the run's (``config``), so the
  numbers are those the run itself reports.
  """
  source = sources.get_source(config.data)
  for split in splits.values():  # a split that is not there fails before the restore
    source.regions(split)
  model, params = restore.restore_model(config, path)
  mesh = sharding.make_mesh(config.mesh)
  params = jax.device_put(params, sharding.param_shardings(mesh, params, config.mesh))
  eval_step = make_eval_step(model, losses.get_loss(config.loss), mesh)
  results = {}
  for name, split in splits.items():
    data = input_pipeline.EvalData(source, config.pp.eval, split,
                                   global_batch=config.eval_batch,
                                   image_size=config.image_size)
    results[name] = evaluate(eval_step, params, data, sharding.batch_sharding(mesh),
                             multi_label=config.data.multi_label)
  return results
