"""The pieces behind tests/test_cli_failures.py, in-process and fast: releasing a failed run's
input pipeline, the last-resort exit timer, the value rules, atomic config writes."""
import gc
import os
import subprocess
import sys
import textwrap
import time
import weakref

import cli_runs
import pytest

from medmt5.checkpointing.atomic_dir import atomic_write_text
from medmt5.runtime import failures, preflight


def _fail_while_reading(log):
    """A training-like frame that holds a live BatchIterator when a data error escapes."""
    import tensorflow as tf

    from medmt5.data import pipeline as data_lib

    def gen():
        yield {"x": [1]}
        raise ValueError("corpus.jsonl:2: malformed JSON")

    ds = tf.data.Dataset.from_generator(
        gen, output_signature={"x": tf.TensorSpec([1], tf.int32)})
    batches = data_lib.BatchIterator(ds.prefetch(2))
    log.append(weakref.ref(batches))
    next(batches)
    next(batches)  # raises: the frame (and `batches`) now live on in the traceback


def test_release_destroys_the_pipeline_the_traceback_kept_alive():
    refs = []
    try:
        _fail_while_reading(refs)
    except ValueError as e:
        assert "corpus.jsonl:2: malformed JSON" in str(e)
        gc.collect()
        assert refs[0]() is not None  # the saved traceback keeps the iterator alive...
        failures.release(e)
        assert refs[0]() is None  # ...until release drops the frames
        assert e.__traceback__ is None


def test_exit_timer_ends_a_stalled_shutdown():
    """An atexit handler that never returns stands in for a destructor that waits forever."""
    code = textwrap.dedent("""
        import atexit, sys, time
        from medmt5.runtime import failures
        atexit.register(lambda: time.sleep(600))
        print("error: something named", file=sys.stderr)
        failures.exit_process(2)
    """)
    env = dict(os.environ, MEDMT5_EXIT_GRACE_S="2", PYTHONPATH=cli_runs.ROOT)
    start = time.monotonic()
    proc = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode == 1, proc.stderr  # faulthandler's exit status
    assert "error: something named" in proc.stderr and "Timeout (0:00:02)" in proc.stderr
    assert time.monotonic() - start < 60


def test_exit_without_a_stall_keeps_the_status():
    env = dict(os.environ, PYTHONPATH=cli_runs.ROOT)
    proc = subprocess.run([sys.executable, "-c", "from medmt5.runtime import failures; "
                           "failures.exit_process(2)"], env=env, capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode == 2 and "Timeout" not in proc.stderr, proc.stderr


@pytest.mark.parametrize("bindings, needles", [
    ({"train.train_steps": ("30", "TRAIN_STEPS")},
     ["TRAIN_STEPS='30'", "used as train.train_steps is a str", "--gin.TRAIN_STEPS=30 (no quotes"]),
    ({"train.train_steps": (-3, "TRAIN_STEPS")}, ["TRAIN_STEPS=-3", "out of range", ">= 0"]),
    ({"train.train_steps": (True, "TRAIN_STEPS")}, ["is a bool"]),
    ({"train.log_period": (0, None)}, ["train.log_period=0", ">= 1"]),
    ({"make_schedule.learning_rate": (0.0, "LEARNING_RATE")}, ["LEARNING_RATE=0.0", "> 0"]),
    ({"make_schedule.learning_rate": (float("nan"), None)}, ["is NaN"]),
    ({"T5Config.dropout_rate": (1.0, "DROPOUT_RATE")}, ["DROPOUT_RATE=1.0", "in [0, 1)"]),
    ({"DataConfig.task_feature_lengths": ({"inputs": 32, "targets": "8"}, "TASK_FEATURE_LENGTHS")},
     ["{'targets': '8'}"]),
    ({"train.model_dir": (7, "MODEL_DIR")}, ["MODEL_DIR=7", "--gin.MODEL_DIR=\"'7'\""]),
    ({"train.model_dir": ("  ", "MODEL_DIR")}, ["is empty"]),
    ({"infer.output_file": (None, "OUTPUT_FILE")}, ["OUTPUT_FILE=None", "is None"]),
])
def test_value_rules_name_the_macro_and_an_accepted_flag(bindings, needles):
    with pytest.raises(ValueError) as err:
        preflight.check_bound_values(bindings, flag_names=["TRAIN_STEPS"])
    for needle in needles:
        assert needle in str(err.value), str(err.value)


def test_value_rules_accept_good_values_and_list_every_bad_one():
    preflight.check_bound_values({
        "train.train_steps": (0, "TRAIN_STEPS"), "CheckpointConfig.save_period": (None, None),
        "CheckpointConfig.keep_checkpoints": (None, None), "make_schedule.learning_rate": (1, None),
        "DataConfig.task_feature_lengths": ({"inputs": 8, "targets": 4}, None),
        "CheckpointConfig.initial_checkpoint_path": (None, "INITIAL_CHECKPOINT_PATH"),
        "something.unknown": ("anything", None)})
    with pytest.raises(ValueError) as err:
        preflight.check_bound_values({"DataConfig.batch_size": (0, "BATCH_SIZE"),
                                      "evaluate.batch_size": (0, "BATCH_SIZE"),
                                      "train.log_period": (0, None)})
    text = str(err.value)
    assert text.startswith("invalid values:") and text.count("BATCH_SIZE=0") == 1
    assert "train.log_period=0" in text


def test_atomic_write_keeps_the_old_file_when_the_write_fails(tmp_path, monkeypatch):
    path = tmp_path / "config.gin"
    path.write_text("TRAIN_STEPS = 30\n")

    def broken_fsync(fd):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "fsync", broken_fsync)
    with pytest.raises(OSError):
        atomic_write_text(str(path), "TRAIN_STEPS = -3\n")
    assert path.read_text() == "TRAIN_STEPS = 30\n"
    assert os.listdir(tmp_path) == ["config.gin"]  # no temporary file left behind
    monkeypatch.undo()
    atomic_write_text(str(path), "TRAIN_STEPS = 40\n")
    assert path.read_text() == "TRAIN_STEPS = 40\n"
