"""The run driver: `train()` builds the state, builds the evaluator, then loops the step.

    from medmt5.run.configs import DataConfig, EvalConfig
    from medmt5.run.loop import train

    train(model_dir="/tmp/run", model_config=cfg, train_steps=1000,
          data=DataConfig("medmt5_pretrain", {"inputs": 512, "targets": 114}, batch_size=64),
          eval=EvalConfig(eval_period=200))

`build_state` makes the mesh, the model and optimizer, and restores MODEL_DIR's latest
checkpoint (or loads the initial checkpoint); `build_evaluator` the evaluator and best-
checkpoint keeper; `run_loop` feeds numpy batches from `medmt5.data.pipeline` to the jitted
`train_step`, logs to a progress bar and TensorBoard (MODEL_DIR/train), evaluates every
eval_period steps (MODEL_DIR/eval/<task>, best checkpoint in MODEL_DIR/best), and saves
checkpoints with the data position so a restart resumes exactly. SIGTERM saves and exits.
The command line (`python -m medmt5.train`) binds the arguments with gin (medmt5/cli/train.py).
"""
from __future__ import annotations

import dataclasses
import logging
import os
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import flax.linen as nn
import jax
import numpy as np

from medmt5.checkpointing import checkpoint_recovery, checkpoints
from medmt5.checkpointing.atomic_dir import atomic_write_text
from medmt5.data import pipeline as data_lib
from medmt5.data import vocab_record
from medmt5.model import protocols
from medmt5.model.transformer import Transformer
from medmt5.run import evaluation, metrics_history, progress
from medmt5.run.configs import (
    CheckpointConfig,
    DataConfig,
    EvalConfig,
    FreezeConfig,
    StepSettings,
    canonical_model_config,
)
from medmt5.runtime import nonfinite, preemption, preflight, watchdog
from medmt5.training import optimizers, partitioning, train_state, trainer

log = logging.getLogger(__name__)


@dataclasses.dataclass
class TrainResult:
    step: int
    metrics: dict  # last logged train metrics
    eval_metrics: dict  # last evaluation, {"task/metric": value}
    best: dict | None  # {"step", "metric", "value"} of the kept best checkpoint


@dataclasses.dataclass
class RunState:
    """What build_state hands the loop: the model, where it runs, and where it starts."""
    config: Any  # the plain T5Config
    model: nn.Module
    mesh: Any
    shard: Any  # partitioning.data_shard_info: the input shard this process feeds
    host_batch_size: int
    optimizer: Any
    state_shardings: Any
    manager: Any  # the orbax checkpoint manager of MODEL_DIR
    state: Any  # the TrainState (restored or fresh)
    rng: Any
    data_position: int
    trainable: Any = None  # the optimizer's mask (None: all trained): prompt-only grads


def example_batch(task_feature_lengths: Mapping[str, int], batch_size: int, pack: bool):
    """An all-ones batch of the run's shapes (for shapes only: init and sharding)."""
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


def _check_parts(data: DataConfig, eval: EvalConfig, model: nn.Module) -> None:
    """The checks that span parts: multi-task ProMoT needs one prompt per task, no eval."""
    tasks = tuple(data.multitask_tasks)
    if not tasks:
        return
    data_lib.mixture_rates(data.mixture_or_task_name, tasks)  # checks the task list
    if protocols.num_prompts(model) != len(tasks):
        raise ValueError(f"MULTITASK_TASKS has {len(tasks)} tasks but the model "
                         f"has num_prompts={protocols.num_prompts(model)}: multi-task "
                         "training needs one prompt per task (PROMPT_FILES).")
    if eval.eval_period:
        raise ValueError("EVAL_PERIOD must be 0 with MULTITASK_TASKS: the train-time "
                         "evaluator decodes with a single prompt; evaluate each task "
                         "afterwards with its row of the prompt table (docs/promot.md).")


def build_state(model_dir: str, model_config, data: DataConfig, checkpoint: CheckpointConfig,
                eval: EvalConfig, freeze: FreezeConfig, *, schedule: Callable | None,
                optimizer_fn: Callable | None, model_factory: Callable | None,
                num_partitions: int, mesh_shape: Sequence[int] | None) -> RunState:
    """The mesh, model and optimizer; MODEL_DIR's latest checkpoint restored, else the
    initial checkpoint loaded (or a fresh initialisation). Nothing is written."""
    cfg = canonical_model_config(model_config)
    model = (model_factory or Transformer)(cfg)
    mesh = partitioning.create_mesh(num_partitions=num_partitions, mesh_shape=mesh_shape)
    shard = partitioning.data_shard_info(mesh)
    host_batch_size = partitioning.per_process_batch_size(data.batch_size, mesh)
    log.info("mesh %s over %d devices (%d processes); this process feeds input shard %d/%d, "
             "%d rows per step", dict(mesh.shape), mesh.size, jax.process_count(),
             shard.index, shard.num_shards, host_batch_size)
    _check_parts(data, eval, model)

    schedule = schedule or optimizers.make_schedule("constant", 1e-3)
    example = example_batch(data.task_feature_lengths, host_batch_size, data.pack)
    init_rng = jax.random.PRNGKey(data.seed)
    boxed = jax.eval_shape(lambda r: train_state.init_boxed_params(model, example, r), init_rng)
    abstract_params = partitioning.unbox(boxed)
    mask = None
    if freeze.masked:
        mask = optimizers.trainable_mask(abstract_params, freeze.trainable, freeze.frozen)
    optimizer = (optimizer_fn or optimizers.create_optimizer)(  # the model's own axes too
        schedule=schedule, logical_axes=nn.get_partition_spec(boxed), mask=mask,
        factor_rules=optimizers.model_factor_rules(model))
    state_shardings = train_state.state_shardings(model, optimizer, example, mesh)
    manager = checkpoints.make_checkpoint_manager(  # model_config.json: once the run is valid
        model_dir, save_period=checkpoint.save_period or eval.eval_period or 1000,
        keep=checkpoint.keep_checkpoints)
    restored = checkpoint_recovery.restore(
        manager, train_state.abstract_state(model, optimizer, example, mesh),
        fallback=checkpoint.checkpoint_fallback)
    if restored is not None:
        state, meta, _ = restored
        rng = checkpoints.rng_from_json(meta["rng"])
        data_position = int(meta.get("data_position", 0))
        log.info("resumed from %s at step %d (data position %d)", model_dir,
                 int(meta["step"]), data_position)
    else:
        params = None
        if checkpoint.initial_checkpoint_path:
            init_params = None
            if freeze.new_params:  # new parameters (e.g. a prompt) take their initial values
                init_params = partitioning.unbox(
                    train_state.init_boxed_params(model, example, init_rng))
            params = checkpoints.load_initial_params(
                checkpoint.initial_checkpoint_path, init_params if init_params is not None
                else abstract_params, new_params=freeze.new_params,
                unused_params=freeze.unused_params, scan_layers=cfg.scan_layers)
            log.info("initial parameters from %s", checkpoint.initial_checkpoint_path)
        state, _ = train_state.create_train_state(model, optimizer, mesh, example, init_rng,
                                                  params=params)
        rng, data_position = jax.random.PRNGKey(data.seed + 1), 0
    num_params = train_state.param_count(state.params)
    num_trainable = num_params if mask is None else int(sum(
        np.prod(x.shape) for x, m in zip(jax.tree.leaves(abstract_params),
                                         jax.tree.leaves(mask)) if m))
    log.info("model %s: %s parameters, %s trainable", type(model).__name__,
             f"{num_params:,}", f"{num_trainable:,}")
    return RunState(cfg, model, mesh, shard, host_batch_size, optimizer, state_shardings,
                    manager, state, rng, data_position, mask)


def build_evaluator(model_dir: str, data: DataConfig, eval: EvalConfig, mesh):
    """(evaluator, keeper): the train-time evaluator (None without eval_period or eval
    tasks) and the best-checkpoint keeper (None without best_metric)."""
    if not eval.eval_period:
        return None, None
    tasks = list(eval.eval_tasks or evaluation.default_eval_tasks(
        data.mixture_or_task_name, eval.eval_split))
    if not tasks:
        log.warning("no task of %r has a %r split: evaluation skipped (set "
                    "EvalConfig.eval_tasks)", data.mixture_or_task_name, eval.eval_split)
        return None, None
    evaluator = evaluation.Evaluator(
        tasks, data.task_feature_lengths, split=eval.eval_split, mesh=mesh,
        batch_size=eval.eval_batch_size or data.batch_size,
        max_examples=eval.eval_max_examples, beam_size=eval.eval_beam_size,
        summary_dir=os.path.join(model_dir, "eval"))
    keeper = None
    if eval.best_metric:
        keeper = evaluation.BestCheckpointKeeper(model_dir, eval.best_metric)
    return evaluator, keeper


def run_loop(run: RunState, model_dir: str, train_steps: int, data: DataConfig,
             step_settings: StepSettings, eval_period: int, batches, evaluator, keeper,
             checkpoint_hooks: Sequence[Callable], log_period: int,
             step_timeout_s: float | None) -> TrainResult:
    """Loops `train_step` to train_steps; saves, evaluates and stops as configured."""
    step_fn = trainer.jit_train_step(trainer.StepConfig(
        model=run.model, optimizer=run.optimizer, z_loss=step_settings.z_loss,
        label_smoothing=step_settings.label_smoothing,
        loss_normalizer=step_settings.loss_normalizer,
        num_microbatches=step_settings.num_microbatches,
        vocab_chunk_size=step_settings.vocab_chunk_size, trainable=run.trainable,
        rules=partitioning.model_axis_rules(run.model)),
        run.mesh, run.state_shardings)
    policy, manager, state = step_settings.nonfinite_policy, run.manager, run.state
    summaries = progress.SummaryLogger(os.path.join(model_dir, "train"))
    start_step = int(jax.device_get(state.step))
    history = metrics_history.MetricsHistory(os.path.join(model_dir, "train"), start_step)
    bar = progress.ProgressBar(train_steps, start_step)
    meter = progress.ThroughputMeter()
    last_metrics, eval_metrics = {}, {}
    rng_json = checkpoints.rng_to_json(run.rng)

    def meta():  # host values only: called every step, must not sync with the device
        return {"step": step, "rng": rng_json, "data_position": batches.position}

    def run_hooks(step, best=False):
        for hook in checkpoint_hooks:
            hook(model_dir, step, state.params, best)

    def run_eval(step):
        nonlocal eval_metrics
        eval_metrics = evaluator.evaluate(run.model, state.params, step)
        if keeper is not None:
            if keeper.update(step, eval_metrics, run.config, state.params):
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
                log.warning("data %r ran out at step %d", data.mixture_or_task_name, step)
                break
            meter.add(progress.count_tokens(host_batch) * run.shard.num_shards)
            state, metrics = step_fn(state, partitioning.make_global_batch(host_batch,
                                                                           run.mesh), run.rng)
            step += 1
            history.record(step, metrics)
            stopping = stop.should_stop(step)
            if (step % log_period == 0 or stopping or manager.should_save(step)
                    or step == train_steps):  # before any save: a non-finite step stops here
                nonfinite.apply_policy(history.flush(), policy)
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
        nonfinite.apply_policy(history.flush(), policy)
        if manager.latest_step() != step:
            checkpoint_recovery.save(manager, state, meta(), step, force=True)
            run_hooks(step)
    bar.close()
    summaries.close()
    if evaluator is not None:
        evaluator.close()
    best = keeper.best if keeper is not None else None
    return TrainResult(step=step, metrics=last_metrics, eval_metrics=eval_metrics, best=best)


def train(*, model_dir: str, model_config, train_steps: int, data: DataConfig,
          step: StepSettings | None = None, checkpoint: CheckpointConfig | None = None,
          eval: EvalConfig | None = None, freeze: FreezeConfig | None = None,
          schedule: Callable | None = None, optimizer_fn: Callable | None = None,
          model_factory: Callable | None = None, num_partitions: int = 1,
          mesh_shape: Sequence[int] | None = None, log_period: int = 10,
          step_timeout_s: float | None = None,
          ready_hooks: Sequence[Callable[[], Any]] = ()) -> TrainResult:
    """Trains for `train_steps` steps (absolute: a restart continues to the same total).

    data / step / checkpoint / eval / freeze: the parts (medmt5.run.configs); None: the
    part's defaults (StepSettings(), ...).
    schedule: an optax schedule (default: constant 1e-3); optimizer_fn(schedule=,
    logical_axes=, mask=, factor_rules=) -> medmt5.training.optimizers.Optimizer
    (factor_rules: optimizers.model_factor_rules(model), the core's plus the model's own).
    model_factory(config) -> flax Module (default: medmt5.Transformer). step_timeout_s: end
    the process (exit 3) when no step completes for this long, e.g. a peer process died
    (medmt5.runtime.watchdog); default 1800 s with several processes, else off. Per-step
    metrics go to MODEL_DIR/train/metrics.jsonl (medmt5.run.metrics_history).
    Vocabulary identity (medmt5.data.vocab_record): MODEL_DIR (and MODEL_DIR/best)
    records the run's vocabulary in vocab.json with a copy of its spiece.model; a resumed
    MODEL_DIR, the initial checkpoint or a prompt in freeze.prompt_files trained with another
    vocabulary stops the run unless checkpoint.allow_vocabulary_change.
    ready_hooks: callables run once the run is known to be valid (settings checked,
    checkpoint restored or loaded, first batch read, evaluation data loaded), right after
    MODEL_DIR/model_config.json and vocab.json are written (atomically); the CLI writes
    MODEL_DIR/config.gin there. A run that fails earlier leaves MODEL_DIR as it was.
    """
    step, checkpoint = step or StepSettings(), checkpoint or CheckpointConfig()
    eval, freeze = eval or EvalConfig(), freeze or FreezeConfig()
    parts = {"data": (data, DataConfig), "step": (step, StepSettings),
             "checkpoint": (checkpoint, CheckpointConfig), "eval": (eval, EvalConfig),
             "freeze": (freeze, FreezeConfig)}
    for name, (value, cls) in parts.items():
        if not isinstance(value, cls):
            raise TypeError(f"train.{name} takes a medmt5.run.configs.{cls.__name__} (gin: "
                            f"train.{name} = @{cls.__name__}()), got {type(value).__name__}")
    if isinstance(train_steps, bool) or not isinstance(train_steps, int) or train_steps < 0:
        raise ValueError(f"TRAIN_STEPS={train_steps!r} must be an integer >= 0")
    preflight.check_run(model_dir, data.task_feature_lengths)
    data_lib.check_vocabulary(data.mixture_or_task_name,
                              canonical_model_config(model_config).vocab_size)
    vocab_identity = vocab_record.check_training_run(
        model_dir, data.mixture_or_task_name, checkpoint.initial_checkpoint_path,
        freeze.prompt_files, checkpoint.allow_vocabulary_change,
        write=False)  # written once the run is valid

    def record_best_vocabulary(model_dir_, step_, params_, best_):
        if best_ and jax.process_index() == 0:
            vocab_record.write_record(os.path.join(model_dir_, "best"), vocab_identity,
                                      vocab_record.run_vocabulary(data.mixture_or_task_name))

    run = build_state(model_dir, model_config, data, checkpoint, eval, freeze,
                      schedule=schedule, optimizer_fn=optimizer_fn, model_factory=model_factory,
                      num_partitions=num_partitions, mesh_shape=mesh_shape)
    batches = data_lib.get_batches(data_lib.DataConfig(
        mixture_or_task_name=data.mixture_or_task_name,
        task_feature_lengths=data.task_feature_lengths, batch_size=run.host_batch_size,
        seed=data.seed, pack=data.pack, shard_index=run.shard.index,
        num_shards=run.shard.num_shards, use_cached=data.use_cached,
        task_id_tasks=tuple(data.multitask_tasks)), start_position=run.data_position)
    evaluator, keeper = build_evaluator(model_dir, data, eval, run.mesh)

    batches.peek()  # a data error (malformed corpus line, ...) surfaces before any write
    if jax.process_index() == 0:  # the run is valid: record its model and vocabulary
        atomic_write_text(os.path.join(model_dir, checkpoints.MODEL_CONFIG_FILE),
                          run.config.to_json() + "\n")
        vocab_record.write_record(model_dir, vocab_identity,
                                  vocab_record.run_vocabulary(data.mixture_or_task_name))
    for hook in ready_hooks:
        hook()
    return run_loop(run, model_dir, train_steps, data, step, eval.eval_period, batches,
                    evaluator, keeper, (*checkpoint.checkpoint_hooks, record_best_vocabulary),
                    log_period, step_timeout_s)
