"""`train_and_evaluate(config, workdir)`: the story of one run, top to bottom.

Pre-training and fine-tuning are the same loop; fine-tuning is a run whose
`config.init` names pre-trained parameters. Every step is one `jax.jit`
program over a ('data', 'fsdp') mesh of all devices of all processes. The
details live beside this file: `steps` (the train step), `sharding` (mesh,
layouts), `optim` (optax), `checkpoints` and `resume` (orbax), `metrics`;
and in the packages beside this one: `data.input_pipeline` (tf.data to
global arrays), `models.pretrained` (fine-tuning's starting point),
`evaluators.classification` (exact eval), `cost.accounting` (what is logged).
"""
import contextlib
import json
import os
import time

import jax
import numpy as np
from absl import logging

from vit_jax import tree_util
from vit_jax.cost import accounting
from vit_jax.data import input_pipeline, sources
from vit_jax.evaluators import classification, fewshot
from vit_jax.models import npz, posemb, pretrained, vit
from vit_jax.train import (checkpoints, config_checks, metrics, preemption, resume,
                           sharding, steps, workdir_files)

# What a failed save of a preempted run's last step says: whatever
# config.on_save_error says, the run cannot stop without it.
_PREEMPTION_SAVE = "a preempted run must leave its last step saved"
# What it says where the run stops on another error: logged, so that the
# error reported is the one that stopped the run.
_STOPPING = "the error that stops the run follows"


def _commit_in_flight(manager, on_save_error):
  """An exit callback (`contextlib.ExitStack.push`) that waits for the save in
  flight to commit, however the run ends; where it ends on an error, a
  failure of that save is logged, so that the error reported is the one
  that stopped the run."""

  def commit(exc_type, exc, traceback):
    del exc_type, traceback
    if exc is None:
      checkpoints.wait(manager, on_error=on_save_error)
    else:
      checkpoints.wait(manager, on_error="continue", why=_STOPPING)

  return commit


def _nonfinite_message(state, skipped_before, window_start, step, manager):
  """Names the first step whose loss or gradient norm was NaN or Inf."""
  if skipped_before == 0:
    where = f"at step {int(state['first_skipped_step'])}"
  else:  # the counter holds an earlier skip of this run (config changed)
    where = f"in steps {window_start + 1}-{step}"
  last = manager.latest_step()
  saved = (f"the last good checkpoint is step {last} in {manager.directory}"
           if last is not None else "no checkpoint was saved before it, so a "
           "rerun starts from step 0")
  return (f"non-finite loss or gradient norm {where}: the run stops, its "
          f"update was not applied and nothing after it is saved; {saved} "
          f"(config.on_nonfinite='skip' skips such steps instead)")


def train_and_evaluate(config, workdir, *, devices=None):
  """Trains and evaluates as `config` says; everything goes into `workdir`.

  Re-running with the same workdir resumes from its latest checkpoint.
  Returns the summary that is also written to `workdir/summary.json`.
  ``devices`` restricts the mesh (tests compare 1 and 8 devices).
  """
  run_start = time.monotonic()
  is_main = jax.process_index() == 0

  # ------------------------------------------------------------------------
  # Set up the mesh.
  # ------------------------------------------------------------------------
  mesh = sharding.make_mesh(config.mesh, devices)
  num_devices = mesh.size
  config_checks.check_config(config, num_devices=num_devices,
                             process_count=jax.process_count())
  batch_sharding = sharding.batch_sharding(mesh)

  # ------------------------------------------------------------------------
  # Input pipeline (fails fast, before the model, if the data is missing).
  # ------------------------------------------------------------------------
  source = sources.get_source(config.data)  # one per run: a folder is listed once
  sources.check_splits(source)
  input_pipeline.check_fits_model(source, config)
  train_examples = source.num_examples(config.data.train_split)
  total_steps = config_checks.resolve_total_steps(config, train_examples)
  eval_sets = {
      name: input_pipeline.EvalData(source, config.pp.eval, split,
                                    global_batch=config.eval_batch,
                                    image_size=config.image_size)
      for name, split in config.data.eval_splits.items()}
  # Every few-shot dataset is found now: a missing one stops the run here.
  probe_config = config.get("fewshot", {})  # a run from before the probes has none
  probe_every = probe_config.get("every", 0)
  probe_sets = fewshot.probe_sets(config, source=source) if probe_every else {}

  # ------------------------------------------------------------------------
  # Model, optimizer and train state; the workdir.
  # ------------------------------------------------------------------------
  training = steps.training_parts(config, total_steps=total_steps)
  model = training.model
  # A ViT's (or hybrid's) patch grid, where fine-tuning resamples the
  # position embeddings to; a ResNet has neither.
  patch_size = getattr(model, "patch_size", None)
  grid = (config.image_size // patch_size,) * 2 if patch_size else None
  abstract_state = training.abstract_state()
  # What the run opens from here on is closed however it ends, also on an
  # error before the loop: `cleanup` runs its callbacks in reverse order.
  with contextlib.ExitStack() as cleanup:
    manager = checkpoints.make_manager(workdir, max_to_keep=config.keep_checkpoints)
    cleanup.callback(manager.close)  # orbax's threads
    cleanup.push(_commit_in_flight(manager, config.on_save_error))
    start_step = manager.latest_step() or 0
    # A finished run extended (see the loop), read before anything is written.
    finished = workdir_files.read_summary(workdir, ("step",)) if start_step else None
    if start_step:  # before anything is compiled or the run's config.json replaced
      resume.check_resumable(manager, start_step, abstract_state, workdir=workdir)
      resume.check_length(start_step, total_steps, workdir=workdir)
    elif config.init:  # fine-tuning's starting point, found (not read) now
      pretrained.locate(config.init)
    # The first batch, before the train state is built or anything written:
    # data that fails a check as it is read (`data.checks`) stops the run here.
    input_stats = input_pipeline.InputStats()  # corrupt images skipped
    host_batches = input_pipeline.train_batches(
        source, config.pp.train, global_batch=config.global_batch,
        seed=config.seed, start_step=start_step, stats=input_stats)
    batches = input_pipeline.prefetch_to_devices(host_batches, batch_sharding,
                                                 config.prefetch)
    # The input pipeline's threads stop with the run, not when the collector
    # finds the generators: that stalled the next run of a transfer suite.
    cleanup.callback(host_batches.close)
    cleanup.callback(batches.close)
    batch = next(batches)
    if is_main:
      os.makedirs(workdir, exist_ok=True)
      workdir_files.write_whole(os.path.join(workdir, workdir_files.CONFIG_FILE),
                                config.to_json_best_effort(indent=2, sort_keys=True))
      logging.info("Partition rules and layout:\n%s", sharding.describe(
          mesh, abstract_state["params"], config.mesh))
    state_shardings = sharding.state_shardings(mesh, abstract_state, config.mesh)
    if start_step:
      logging.info("Resuming from the checkpoint at step %d in %s", start_step, workdir)
      restored = checkpoints.restore(manager, start_step, jax.tree.map(
          lambda a, s: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=s),
          abstract_state, state_shardings))
      state, progress = restored["state"], restored["progress"]
    else:
      progress = {"examples_seen": 0, "train_seconds": 0.0}
      if config.init:
        # Of fresh parameters only the heads are kept, and only they are made:
        # no device holds the whole model before it is split. The seed is an
        # argument, not a constant of the program, so the runs of a transfer
        # suite share one compiled init (`vit_jax.transfer`).
        heads = jax.device_get(jax.jit(
            lambda seed: pretrained.fresh_heads(training.init_params(seed)),
            out_shardings=sharding.replicated(mesh))(config.seed))
        fresh = npz.unflatten({  # host zeros (untouched pages) for the rest
            **{name: np.zeros(leaf.shape, leaf.dtype)
               for name, leaf in tree_util.flatten_named(abstract_state["params"])},
            **heads})
        params = pretrained.load_pretrained(
            config.init, fresh, new_grid=grid,
            num_prefix_tokens=vit.num_prefix_tokens(model),
            # A ResNet's config has no posemb_resample, nor posemb to resample.
            posemb_method=config.get("posemb_resample", posemb.DEFAULT_METHOD),
            model=model)
        # The loaded parameters go to the devices split as they will lie.
        state = jax.jit(training.initial_state, in_shardings=(state_shardings["params"],),
                        out_shardings=state_shardings)(params)
      else:
        state = training.init_state(state_shardings)

    # ------------------------------------------------------------------------
    # Step functions, compiled once; the train step donates the old state.
    # ------------------------------------------------------------------------
    train_step = training.jit_train_step(mesh, state_shardings)
    eval_step = classification.make_eval_step(model, training.loss_fn, mesh)
    feature_step = fewshot.make_feature_step(model, mesh)

    compile_start = time.monotonic()
    compiled_step = train_step.lower(state, batch).compile()
    compile_seconds = time.monotonic() - compile_start
    accountant = accounting.Accountant(
        flops_per_example=accounting.analytic_flops_per_example(
            model, config.image_size, train=True),
        num_devices=num_devices,
        device_kind=accounting.device_kind_label(mesh.devices.flat[0]),
        peak_flops_per_device=accounting.peak_flops_per_device(
            mesh.devices.flat[0], config.model.dtype),
        examples_per_epoch=train_examples, **progress)

    writer = metrics.MetricWriter(workdir, total_steps=total_steps, start_step=start_step)
    cleanup.callback(writer.close)
    if is_main:
      logging.info("%s: %d parameters, %d steps, %d devices, compiled in %.1fs",
                   config.variant, sum(x.size for x in jax.tree.leaves(abstract_state["params"])),
                   total_steps, num_devices, compile_seconds)

    def run_evals(step):
      params = state.get("ema_params", state["params"])
      results = {}
      for name, data in eval_sets.items():
        results[name] = classification.evaluate(eval_step, params, data, batch_sharding,
                                          multi_label=config.data.multi_label)
        writer.write(step, {**results[name], **accountant.fields()}, split=name)
      return results

    def run_probes(step):
      params = state.get("ema_params", state["params"])
      results = {}
      for split, probe in probe_sets.items():  # one metrics split per dataset
        results[split] = fewshot.run_probes(
            feature_step, params, probe.data, batch_sharding, shots=probe.shots,
            seeds=config.fewshot.seeds, num_classes=probe.num_classes,
            regulariser=config.fewshot.regulariser)
        writer.write(step, {**results[split], **accountant.fields()}, split=split)
        if is_main:  # the console line of `writer` shows no probe metric
          accuracies = ", ".join(f"{k} {v:.2%}" for k, v in results[split].items()
                                 if k.endswith("shot"))
          logging.info("%s at step %d: %s in %.1fs", split, step, accuracies,
                       results[split]["seconds"])
      return results

    # ------------------------------------------------------------------------
    # Training loop. Metrics are fetched from the devices only every
    # `log_every` steps, so the host never waits on the step in between.
    # ------------------------------------------------------------------------
    eval_results, probe_results = {}, {}
    # A finished run extended: it evaluated (and probed) its last step there,
    # on or off the grid, and `metrics` dropped those records on resuming.
    extended = 0 < start_step and finished is not None and finished["step"] == start_step
    if 0 < start_step < total_steps and (start_step % config.eval_every == 0 or extended):
      # The run before stopped at this eval step, maybe before its eval ran
      # (a preempted run saves and stops without it); `metrics` dropped the
      # eval records of this step, so it is evaluated once, here.
      eval_results = run_evals(start_step)
    if probe_sets and (start_step == 0 and probe_config.get("at_start", False)
                       or 0 < start_step < total_steps
                       and (start_step % probe_every == 0 or extended)):
      # At the start when asked: the initial model's probes, at 0 core-days,
      # the baseline the training's gain is measured from. On resuming at a
      # probe step: as the evals above (their records, too, were dropped).
      probe_results = run_probes(start_step)
    step = start_step
    skipped_seen = int(state["skipped_steps"])
    timer_start, timer_step = time.monotonic(), step
    # SIGTERM from here on only asks the loop to checkpoint and stop.
    stop_request = preemption.StopRequest(manager)
    stop_request.install()
    cleanup.callback(stop_request.uninstall)
    while step < total_steps:
      state, step_metrics = compiled_step(state, batch)
      step += 1
      is_last = step == total_steps
      preempted = stop_request.reached(step)
      do_log = step % config.log_every == 0 or is_last or preempted
      do_save = step % config.checkpoint_every == 0 or is_last or preempted
      do_eval = (step % config.eval_every == 0 or is_last) and not preempted
      do_probe = bool(probe_sets) and (step % probe_every == 0 or is_last) and not preempted
      if not (do_log or do_save or do_eval or do_probe):
        batch = next(batches)  # read while the device runs the step
        continue
      # Close the timing window: what follows is not training time.
      fetched = jax.device_get(step_metrics)  # waits for this step to finish
      accountant.update(examples=(step - timer_step) * config.global_batch,
                        seconds=time.monotonic() - timer_start)
      if fetched["skipped_steps"] > skipped_seen:
        if config.on_nonfinite == "stop":  # before this state is saved
          checkpoints.wait(manager, on_error="continue", why=_STOPPING)
          raise FloatingPointError(_nonfinite_message(
              state, skipped_seen, timer_step, step, manager))
        logging.warning("skipped %d step(s) with a non-finite loss or gradient "
                        "norm up to step %d (config.on_nonfinite='skip')",
                        fetched["skipped_steps"] - skipped_seen, step)
        skipped_seen = int(fetched["skipped_steps"])
      if do_log:
        writer.write(step, {**fetched, **accountant.fields(),
                            "compile_seconds": compile_seconds,
                            "corrupt_images": input_stats.corrupt_images})
      if preempted:
        # An earlier save's failure is handled as the config says; this
        # step's save must succeed, or the run stops saying so.
        checkpoints.wait(manager, on_error=config.on_save_error)
        checkpoints.save(manager, step, state, accountant.state_dict(),
                         on_error="stop", why=_PREEMPTION_SAVE)
        checkpoints.wait(manager, on_error="stop", why=_PREEMPTION_SAVE)
        raise preemption.Preempted(step, manager.directory)
      if do_save:
        checkpoints.save(manager, step, state, accountant.state_dict(),
                         on_error=config.on_save_error)
      if do_eval:
        eval_results = run_evals(step)
      if do_probe:
        probe_results = run_probes(step)
      timer_start, timer_step = time.monotonic(), step
      if not is_last:  # after the step's checkpoint, which data that fails a check spares
        batch = next(batches)
    if not eval_results:  # resumed a run that had already finished
      eval_results = run_evals(step)
    if probe_sets and step == start_step == total_steps:  # the same, for its probes
      probe_results = run_probes(step)

  # ------------------------------------------------------------------------
  # Summary.
  # ------------------------------------------------------------------------
  summary = {"step": step, "wall_s": time.monotonic() - run_start,
             "variant": config.variant, "dataset": config.data.name,
             "image_size": config.image_size, "eval": eval_results,
             **probe_results,  # split -> metrics: "fewshot", "fewshot/<dataset>"
             "compile_seconds": compile_seconds, **accountant.fields()}
  if is_main:
    workdir_files.write_whole(os.path.join(workdir, workdir_files.SUMMARY_FILE),
                              json.dumps(summary, indent=2))
  return summary
