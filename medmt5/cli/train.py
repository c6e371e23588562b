"""`python -m medmt5.train`: pretraining / fine-tuning, T5X command-line conventions.

    python -m medmt5.train --gin_file=medmt5_tiny.gin --gin.MODEL_DIR="'/tmp/tiny'"

`train()` is the run driver (plain Python; the CLI binds its arguments with gin): it builds
the mesh, the model and optimizer, restores MODEL_DIR's latest checkpoint (or loads
INITIAL_CHECKPOINT_PATH), then loops `train_step` over numpy batches from `medmt5.data.pipeline`,
logging to a progress bar and TensorBoard (MODEL_DIR/train), evaluating every EVAL_PERIOD
steps (MODEL_DIR/eval/<task>, best checkpoint in MODEL_DIR/best), and saving checkpoints
with the data position so a restart resumes exactly. SIGTERM saves and exits.
"""
from __future__ import annotations

import dataclasses
import logging
import os
import sys
import time
from typing import Any, Callable, Mapping, Optional, Sequence

import flax.linen as nn
import jax
import numpy as np

log = logging.getLogger("medmt5")


@dataclasses.dataclass
class TrainResult:
    step: int
    metrics: dict  # last logged train metrics
    eval_metrics: dict  # last evaluation, {"task/metric": value}
    best: Optional[dict]  # {"step", "metric", "value"} of the kept best checkpoint


def _canonical_config(cfg):
    """gin hands back a subclass of T5Config; the library wants the plain dataclass."""
    from medmt5.model.config import T5Config

    if type(cfg) is T5Config:
        return cfg
    if not dataclasses.is_dataclass(cfg):
        raise ValueError(f"train.model_config must be a T5Config (MODEL_CONFIG = @T5Config() in "
                         f"a gin/models/*.gin file), got {type(cfg).__name__}")
    return T5Config(**{f.name: getattr(cfg, f.name) for f in dataclasses.fields(T5Config)})


def _example_batch(task_feature_lengths: Mapping[str, int], batch_size: int, pack: bool):
    s, t = task_feature_lengths["inputs"], task_feature_lengths["targets"]
    batch = {"encoder_input_tokens": np.ones((batch_size, s), np.int32),
             "decoder_input_tokens": np.ones((batch_size, t), np.int32),
             "decoder_target_tokens": np.ones((batch_size, t), np.int32),
             "decoder_loss_weights": np.ones((batch_size, t), np.int32)}
    if pack:
        for prefix, length in (("encoder", s), ("decoder", t)):
            batch[f"{prefix}_segment_ids"] = np.ones((batch_size, length), np.int32)
            batch[f"{prefix}_positions"] = np.tile(np.arange(length, dtype=np.int32),
                                                   (batch_size, 1))
    return batch


def train(*, model_dir: str, model_config, mixture_or_task_name: str,
          task_feature_lengths: Mapping[str, int], train_steps: int, batch_size: int,
          initial_checkpoint_path: Optional[str] = None, eval_period: int = 0,
          schedule: Optional[Callable] = None, optimizer_fn: Optional[Callable] = None,
          z_loss: float = 1e-4, label_smoothing: float = 0.0,
          loss_normalizer: Any = "num_tokens", num_microbatches: int = 1,
          vocab_chunk_size: Optional[int] = None, num_partitions: int = 1,
          mesh_shape: Optional[Sequence[int]] = None, pack: bool = True, seed: int = 0,
          use_cached: bool = False, save_period: Optional[int] = None,
          keep_checkpoints: Optional[int] = None, log_period: int = 10,
          trainable: Optional[Sequence[str]] = None, frozen: Sequence[str] = (),
          new_params: Sequence[str] = (), unused_params: Sequence[str] = (),
          eval_tasks: Optional[Sequence[str]] = None, eval_split: str = "validation",
          eval_max_examples: Optional[int] = None, eval_batch_size: Optional[int] = None,
          eval_beam_size: int = 1, best_metric: Optional[str] = None,
          model_factory: Optional[Callable] = None,
          checkpoint_hooks: Sequence[Callable] = (), nonfinite_policy: str = "raise",
          checkpoint_fallback: bool = False,
          step_timeout_s: Optional[float] = None,
          multitask_tasks: Sequence[str] = (), allow_vocabulary_change: bool = False,
          prompt_files: Sequence[str] = (),
          ready_hooks: Sequence[Callable[[], Any]] = ()) -> TrainResult:
    """Trains for `train_steps` steps (absolute: a restart continues to the same total).

    batch_size is global (all processes); schedule is an optax schedule (default: constant
    1e-3); optimizer_fn(schedule=, logical_axes=, mask=) -> medmt5.training.optimizers.Optimizer.
    trainable/frozen are regexes over "/"-joined parameter paths. best_metric names an eval
    metric (e.g. "f1": mean of "<task>/f1" over eval tasks) whose best step is kept in
    MODEL_DIR/best. model_factory(config) -> flax Module (default: medmt5.Transformer).
    checkpoint_hooks: callables hook(model_dir, step, params, best) run after each checkpoint
    save (best=False) and each new best (best=True); prompt tuning writes its .npy there.
    nonfinite_policy: "raise" (stop naming the step and term) or "skip" (medmt5.runtime.nonfinite).
    checkpoint_fallback: resume from the previous checkpoint when the latest is unreadable.
    step_timeout_s: end the process (exit 3) when no step completes for this long, e.g. a
    peer process died (medmt5.runtime.watchdog); default 1800 s with several processes, else off.
    Per-step metrics go to MODEL_DIR/train/metrics.jsonl (medmt5.run.metrics_history).
    multitask_tasks: the tasks of mixture `mixture_or_task_name` in task-id order; batches
    then carry task_ids [B] (medmt5.data.pipeline.task_id_mixture) for a model with a per-task prompt
    table (multi-task ProMoT, gin/promot/multitask_stage2.gin).
    Vocabulary identity (medmt5.checkpointing.vocab_record): MODEL_DIR (and MODEL_DIR/best) records the
    run's vocabulary in vocab.json with a copy of its spiece.model; a resumed MODEL_DIR, the
    initial checkpoint or a prompt in `prompt_files` trained with another vocabulary stops
    the run unless allow_vocabulary_change (gin: ALLOW_VOCABULARY_CHANGE).
    ready_hooks: callables run once the run is known to be valid (settings checked,
    checkpoint restored or loaded, first batch read, evaluation data loaded), right after
    MODEL_DIR/model_config.json and vocab.json are written (atomically); the CLI writes
    MODEL_DIR/config.gin there. A run that fails earlier leaves MODEL_DIR as it was.
    """
    from medmt5.checkpointing import checkpoints
    from medmt5.training import optimizers
    from medmt5.training import partitioning
    from medmt5.training import train_state
    from medmt5.training import trainer
    from medmt5.data import pipeline as data_lib
    from medmt5.run import evaluation
    from medmt5.run import progress
    from medmt5.checkpointing import checkpoint_recovery
    from medmt5.run import metrics_history
    from medmt5.runtime import nonfinite
    from medmt5.runtime import preemption
    from medmt5.runtime import preflight
    from medmt5.runtime import watchdog
    from medmt5.model.transformer import Transformer

    if train_steps < 0 or batch_size <= 0:
        raise ValueError(f"TRAIN_STEPS={train_steps} must be >= 0 and BATCH_SIZE={batch_size} > 0")
    nonfinite.check_policy(nonfinite_policy)
    preflight.check_run(model_dir, task_feature_lengths)
    cfg = _canonical_config(model_config)
    model = (model_factory or Transformer)(cfg)
    mesh = partitioning.create_mesh(num_partitions=num_partitions, mesh_shape=mesh_shape)
    shard = partitioning.data_shard_info(mesh)
    host_batch_size = partitioning.per_process_batch_size(batch_size, mesh)
    log.info("mesh %s over %d devices (%d processes); this process feeds input shard %d/%d, "
             "%d rows per step", dict(mesh.shape), mesh.size, jax.process_count(),
             shard.index, shard.num_shards, host_batch_size)

    data_lib.check_vocabulary(mixture_or_task_name, cfg.vocab_size)
    from medmt5.checkpointing import vocab_record
    vocab_identity = vocab_record.check_training_run(
        model_dir, mixture_or_task_name, initial_checkpoint_path, prompt_files,
        allow_vocabulary_change, write=False)  # written once the run is valid

    def record_best_vocabulary(model_dir_, step_, params_, best_):
        if best_ and jax.process_index() == 0:
            vocab_record.write_record(os.path.join(model_dir_, "best"), vocab_identity,
                                      vocab_record.run_vocabulary(mixture_or_task_name))
    checkpoint_hooks = (*checkpoint_hooks, record_best_vocabulary)
    multitask_tasks = tuple(multitask_tasks or ())
    if multitask_tasks:
        data_lib.mixture_rates(mixture_or_task_name, multitask_tasks)  # checks the task list
        if getattr(model, "num_prompts", 0) != len(multitask_tasks):
            raise ValueError(f"MULTITASK_TASKS has {len(multitask_tasks)} tasks but the model "
                             f"has num_prompts={getattr(model, 'num_prompts', 0)}: multi-task "
                             "training needs one prompt per task (PROMPT_FILES).")
        if eval_period:
            raise ValueError("EVAL_PERIOD must be 0 with MULTITASK_TASKS: the train-time "
                             "evaluator decodes with a single prompt; evaluate each task "
                             "afterwards with its row of the prompt table (docs/promot.md).")
    schedule = schedule or optimizers.make_schedule("constant", 1e-3)
    example = _example_batch(task_feature_lengths, host_batch_size, pack)
    init_rng = jax.random.PRNGKey(seed)
    boxed = jax.eval_shape(lambda r: train_state.init_boxed_params(model, example, r), init_rng)
    abstract_params = partitioning.unbox(boxed)
    mask = None
    if trainable is not None or frozen:
        mask = optimizers.trainable_mask(abstract_params, trainable, frozen)
    optimizer = (optimizer_fn or optimizers.create_optimizer)(
        schedule=schedule, logical_axes=nn.get_partition_spec(boxed), mask=mask)
    state_shardings = train_state.state_shardings(model, optimizer, example, mesh)
    manager = checkpoints.make_checkpoint_manager(  # model_config.json: once the run is valid
        model_dir, save_period=save_period or eval_period or 1000, keep=keep_checkpoints)
    restored = checkpoint_recovery.restore(
        manager, train_state.abstract_state(model, optimizer, example, mesh),
        fallback=checkpoint_fallback)
    if restored is not None:
        state, meta, _ = restored
        rng = checkpoints.rng_from_json(meta["rng"])
        data_position = int(meta.get("data_position", 0))
        log.info("resumed from %s at step %d (data position %d)", model_dir,
                 int(meta["step"]), data_position)
    else:
        params = None
        if initial_checkpoint_path:
            init_params = None
            if new_params:  # new parameters (e.g. a prompt) take their initial values
                init_params = partitioning.unbox(
                    train_state.init_boxed_params(model, example, init_rng))
            params = checkpoints.load_initial_params(
                initial_checkpoint_path, init_params if init_params is not None
                else abstract_params, new_params=new_params, unused_params=unused_params,
                scan_layers=cfg.scan_layers)
            log.info("initial parameters from %s", initial_checkpoint_path)
        state, _ = train_state.create_train_state(model, optimizer, mesh, example, init_rng,
                                                  params=params)
        rng, data_position = jax.random.PRNGKey(seed + 1), 0
    num_params = train_state.param_count(state.params)
    num_trainable = num_params if mask is None else int(sum(
        np.prod(x.shape) for x, m in zip(jax.tree.leaves(abstract_params),
                                         jax.tree.leaves(mask)) if m))
    log.info("model %s: %s parameters, %s trainable", type(model).__name__,
             f"{num_params:,}", f"{num_trainable:,}")

    step_config = trainer.StepConfig(model=model, optimizer=optimizer, z_loss=z_loss,
                                     label_smoothing=label_smoothing,
                                     loss_normalizer=loss_normalizer,
                                     num_microbatches=num_microbatches,
                                     vocab_chunk_size=vocab_chunk_size)
    step_fn = trainer.jit_train_step(step_config, mesh, state_shardings)
    data_config = data_lib.DataConfig(
        mixture_or_task_name=mixture_or_task_name, task_feature_lengths=task_feature_lengths,
        batch_size=host_batch_size, seed=seed, pack=pack, shard_index=shard.index,
        num_shards=shard.num_shards, use_cached=use_cached, task_id_tasks=multitask_tasks)
    batches = data_lib.get_batches(data_config, start_position=data_position)

    evaluator = None
    eval_tasks = list(eval_tasks or evaluation.default_eval_tasks(mixture_or_task_name,
                                                                   eval_split))
    if eval_period and not eval_tasks:
        log.warning("no task of %r has a %r split: evaluation skipped (set train.eval_tasks)",
                    mixture_or_task_name, eval_split)
    elif eval_period:
        evaluator = evaluation.Evaluator(
            eval_tasks, task_feature_lengths, split=eval_split, mesh=mesh,
            batch_size=eval_batch_size or batch_size, max_examples=eval_max_examples,
            beam_size=eval_beam_size, summary_dir=os.path.join(model_dir, "eval"))
    keeper = None
    if best_metric and evaluator is not None:
        keeper = evaluation.BestCheckpointKeeper(model_dir, best_metric)

    batches.peek()  # a data error (malformed corpus line, ...) surfaces before any write
    if jax.process_index() == 0:  # the run is valid: record its model and vocabulary
        from medmt5.checkpointing.atomic_dir import atomic_write_text
        atomic_write_text(os.path.join(model_dir, checkpoints.MODEL_CONFIG_FILE),
                          cfg.to_json() + "\n")
        vocab_record.write_record(model_dir, vocab_identity,
                                  vocab_record.run_vocabulary(mixture_or_task_name))
    for hook in ready_hooks:
        hook()
    summaries = progress.SummaryLogger(os.path.join(model_dir, "train"))
    start_step = int(jax.device_get(state.step))
    history = metrics_history.MetricsHistory(os.path.join(model_dir, "train"), start_step)
    bar = progress.ProgressBar(train_steps, start_step)
    meter = progress.ThroughputMeter()
    last_metrics, eval_metrics = {}, {}

    rng_json = checkpoints.rng_to_json(rng)

    def meta():  # host values only: called every step, must not sync with the device
        return {"step": step, "rng": rng_json, "data_position": batches.position}

    def run_hooks(step, best=False):
        for hook in checkpoint_hooks:
            hook(model_dir, step, state.params, best)

    def run_eval(step):
        nonlocal eval_metrics
        eval_metrics = evaluator.evaluate(model, state.params, step)
        if keeper is not None:
            if keeper.update(step, eval_metrics, cfg, state.params):
                run_hooks(step, best=True)
        bar.write(evaluation.format_metrics(step, eval_metrics))

    step = start_step
    if step_timeout_s is None and jax.process_count() > 1:
        step_timeout_s = 1800.0
    dog = watchdog.Watchdog(step_timeout_s,
                            f"process {jax.process_index()} of {jax.process_count()}")
    with preemption.PreemptionGuard() as stop, checkpoint_recovery.finishing_saves(manager), \
            dog:
        while step < train_steps:
            try:
                host_batch = next(batches)
            except StopIteration:
                log.warning("data %r ran out at step %d", mixture_or_task_name, step)
                break
            meter.add(progress.count_tokens(host_batch) * shard.num_shards)
            state, metrics = step_fn(state, partitioning.make_global_batch(host_batch, mesh), rng)
            step += 1
            history.record(step, metrics)
            stopping = stop.should_stop(step)
            if (step % log_period == 0 or stopping or manager.should_save(step)
                    or step == train_steps):  # before any save: a non-finite step stops here
                nonfinite.apply_policy(history.flush(), nonfinite_policy)
            if step % log_period == 0 or step == train_steps or step == start_step + 1:
                last_metrics = progress.to_float_dict(jax.device_get(metrics))
                last_metrics["tokens_per_sec"] = meter.rate()
                summaries.scalars(step, last_metrics)
                bar.update(step, last_metrics)
                if last_metrics.get("nonfinite", 0.0) > 0:
                    bar.write(f"step {step}: non-finite loss or gradient; update skipped")
            if checkpoint_recovery.save(manager, state, meta(), step):
                run_hooks(step)
            if evaluator is not None and (step % eval_period == 0 or step == train_steps):
                run_eval(step)
            dog.beat(step)
            if stopping:
                bar.write(f"signal {stop.signum}: saving step {step} and exiting")
                break
        nonfinite.apply_policy(history.flush(), nonfinite_policy)
        if manager.latest_step() != step:
            checkpoint_recovery.save(manager, state, meta(), step, force=True)
            run_hooks(step)
    bar.close()
    summaries.close()
    if evaluator is not None:
        evaluator.close()
    best = keeper.best if keeper is not None else None
    return TrainResult(step=step, metrics=last_metrics, eval_metrics=eval_metrics, best=best)


USAGE = __doc__


def main(argv: Sequence[str]) -> int:
    from medmt5.cli import gin_utils

    def run(flags):
        model_dir = gin_utils.query_macro("MODEL_DIR")
        hooks = []
        if model_dir:
            from medmt5.runtime import preflight
            preflight.check_model_dir(model_dir)  # before anything is written there
            hooks.append(lambda: gin_utils.write_config(model_dir))
        result = gin_utils.call("train", ready_hooks=hooks)
        log.info("finished at step %d; last metrics %s", result.step, result.metrics)

    return gin_utils.run_cli(run, argv, "medmt5.train", USAGE)


def console_main() -> None:
    from medmt5.runtime import failures
    failures.exit_process(main(sys.argv[1:]))


if __name__ == "__main__":
    console_main()
