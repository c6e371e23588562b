"""The parts of a training run (medmt5.run.configs): frozen, normalised, and a bad value is an
error naming the field as gin spells it (and the macro that usually feeds it)."""
import dataclasses

import pytest

from medmt5.run import configs

LENGTHS = {"inputs": 32, "targets": 8}


def _data(**kw):
    return configs.DataConfig(**{"mixture_or_task_name": "medmt5_pretrain",
                                 "task_feature_lengths": LENGTHS, "batch_size": 8, **kw})


def test_defaults_and_normalisation():
    data = _data(multitask_tasks=["a", "b"])
    assert data.multitask_tasks == ("a", "b") and data.pack and data.seed == 0
    assert data.task_feature_lengths == LENGTHS and data.task_feature_lengths is not LENGTHS
    freeze = configs.FreezeConfig(trainable=["prompt/.*"], prompt_files=[None])
    assert freeze.trainable == ("prompt/.*",) and freeze.prompt_files == () and freeze.masked
    assert not configs.FreezeConfig().masked
    assert configs.StepSettings().nonfinite_policy == "raise"
    assert configs.CheckpointConfig(checkpoint_hooks=[print]).checkpoint_hooks == (print,)
    assert configs.EvalConfig(eval_tasks=["t"]).eval_tasks == ("t",)
    with pytest.raises(dataclasses.FrozenInstanceError):
        data.batch_size = 4


@pytest.mark.parametrize("make,message", [
    (lambda: _data(batch_size=0), r"DataConfig.batch_size=0 \(gin macro BATCH_SIZE\) must be "
                                  r"an integer >= 1"),
    (lambda: _data(batch_size=True), "DataConfig.batch_size=True"),
    (lambda: _data(mixture_or_task_name=" "), r"DataConfig.mixture_or_task_name=' ' \(gin "
                                              r"macro MIXTURE_OR_TASK_NAME\)"),
    (lambda: _data(task_feature_lengths={"inputs": 32}), r"TASK_FEATURE_LENGTHS=.*lacks"),
    (lambda: _data(pack="yes"), "DataConfig.pack='yes' must be True or False"),
    (lambda: _data(multitask_tasks="a,b"), "DataConfig.multitask_tasks='a,b' must be a list"),
    (lambda: configs.StepSettings(label_smoothing=1.0),
     r"StepSettings.label_smoothing=1.0 must be a number >= 0.0 and < 1.0"),
    (lambda: configs.StepSettings(num_microbatches=0), "StepSettings.num_microbatches=0"),
    (lambda: configs.StepSettings(vocab_chunk_size=0), "StepSettings.vocab_chunk_size=0"),
    (lambda: configs.StepSettings(nonfinite_policy="ignore"),
     r"StepSettings.nonfinite_policy='ignore': use one of \('raise', 'skip'\)"),
    (lambda: configs.CheckpointConfig(keep_checkpoints=0),
     r"CheckpointConfig.keep_checkpoints=0 must be an integer >= 1 or None"),
    (lambda: configs.CheckpointConfig(save_period=-1), "CheckpointConfig.save_period=-1"),
    (lambda: configs.CheckpointConfig(initial_checkpoint_path=""),
     r"CheckpointConfig.initial_checkpoint_path='' \(gin macro INITIAL_CHECKPOINT_PATH\)"),
    (lambda: configs.CheckpointConfig(checkpoint_hooks=["not callable"]),
     "CheckpointConfig.checkpoint_hooks=.* must be a list of callables"),
    (lambda: configs.EvalConfig(eval_period=-1),
     r"EvalConfig.eval_period=-1 \(gin macro EVAL_PERIOD\) must be an integer >= 0"),
    (lambda: configs.EvalConfig(eval_beam_size=0), "EvalConfig.eval_beam_size=0"),
    (lambda: configs.EvalConfig(eval_max_examples=0), "EvalConfig.eval_max_examples=0"),
    (lambda: configs.FreezeConfig(trainable="prompt/.*"),
     "FreezeConfig.trainable='prompt/.*' must be a list of strings or None"),
    (lambda: configs.FreezeConfig(frozen=[1]), r"FreezeConfig.frozen=\[1\]"),
])
def test_a_bad_value_names_its_field(make, message):
    with pytest.raises(ValueError, match=message):
        make()


def test_canonical_model_config():
    from medmt5.model.config import T5Config

    cfg = T5Config(vocab_size=64, d_model=16, d_kv=8, d_ff=32, num_heads=2,
                   num_encoder_layers=1, num_decoder_layers=1)
    assert configs.canonical_model_config(cfg) is cfg
    sub = type("GinT5Config", (T5Config,), {})(**dataclasses.asdict(cfg))
    assert type(configs.canonical_model_config(sub)) is T5Config
    with pytest.raises(ValueError, match="train.model_config must be a T5Config"):
        configs.canonical_model_config({"d_model": 16})


def test_train_refuses_a_part_of_the_wrong_kind(tmp_path):
    from medmt5.run.loop import train

    with pytest.raises(TypeError, match=r"train.eval takes a medmt5.run.configs.EvalConfig "
                       r"\(gin: train.eval = @EvalConfig\(\)\), got dict"):
        train(model_dir=str(tmp_path), model_config=None, train_steps=1, data=_data(),
              eval={"eval_period": 2})
    with pytest.raises(ValueError, match="TRAIN_STEPS=-1 must be an integer >= 0"):
        train(model_dir=str(tmp_path), model_config=None, train_steps=-1, data=_data())
