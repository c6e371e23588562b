"""Helpers for the reliability tests that run the real `python -m medmt5.train` CLI in
subprocesses on a very small model (1 + 1 layers, d_model 32) and the shipped corpus."""
import json
import os
import subprocess
import sys
import time

import jax
import pytest

import gin

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SMALL_MODEL = [
    "--gin.T5Config.num_encoder_layers=1", "--gin.T5Config.num_decoder_layers=1",
    "--gin.T5Config.d_model=32", "--gin.T5Config.d_ff=64", "--gin.T5Config.num_heads=2",
    "--gin.T5Config.d_kv=16",
]


def train_argv(model_dir, steps, save_period=3, extra=()):
    return ["--gin_file=medmt5_tiny.gin", f"--gin.MODEL_DIR='{model_dir}'",
            f"--gin.TRAIN_STEPS={steps}", "--gin.BATCH_SIZE=2", "--gin.EVAL_PERIOD=0",
            f"--gin.CheckpointConfig.save_period={save_period}", "--gin.train.log_period=1",
            "--gin.TASK_FEATURE_LENGTHS={'inputs': 32, 'targets': 8}", *SMALL_MODEL, *extra]


def env(cache_dir):
    """One CPU device, cheap XLA compiles, a compilation cache shared by the runs."""
    e = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}
    e.update(XLA_FLAGS="--xla_backend_optimization_level=0 "
                       "--xla_llvm_disable_expensive_passes=true",
             JAX_PLATFORMS="cpu", TF_CPP_MIN_LOG_LEVEL="3",
             JAX_COMPILATION_CACHE_DIR=str(cache_dir),
             JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS="0",
             JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES="0",
             PYTHONPATH=ROOT + os.pathsep + e.get("PYTHONPATH", ""))
    return e


def start(argv, cache_dir, log_path):
    log = open(log_path, "w")
    return subprocess.Popen([sys.executable, "-m", "medmt5.train", *argv], cwd=ROOT,
                            env=env(cache_dir), stdout=log, stderr=subprocess.STDOUT)


def run(argv, cache_dir, log_path, timeout=300):
    proc = start(argv, cache_dir, log_path)
    proc.wait(timeout=timeout)
    return proc.returncode, read(log_path)


def read(path):
    with open(path) as f:
        return f.read()


def history(model_dir):
    from medmt5.run.metrics_history import read_history
    return read_history(os.path.join(model_dir, "train", "metrics.jsonl"))


def last_step(model_dir):
    rows = history(model_dir)
    return rows[-1]["step"] if rows else 0


def complete_steps(model_dir):
    """Checkpoint steps orbax has committed (renamed from their tmp folders)."""
    d = os.path.join(model_dir, "checkpoints")
    if not os.path.isdir(d):
        return []
    return sorted(int(n) for n in os.listdir(d) if n.isdigit())


def wait_for(predicate, proc, timeout=900, poll=0.01):
    """Polls predicate() until true; False if proc exits or the timeout passes first."""
    end = time.time() + timeout
    while time.time() < end:
        if predicate():
            return True
        if proc.poll() is not None:
            return predicate()
        time.sleep(poll)
    raise TimeoutError("the training run made no progress")


def final_params(model_dir):
    from medmt5 import load_checkpoint
    return load_checkpoint(model_dir)[1]


def dumps(x):
    return json.dumps(x, sort_keys=True)


def inprocess_argv(model_dir, steps=2, save_period=1, extra=()):
    """CLI flags for an in-process run on the test process's 8 CPU devices (batch 8)."""
    return ["--gin_file=medmt5_tiny.gin", f"--gin.MODEL_DIR='{model_dir}'",
            f"--gin.TRAIN_STEPS={steps}", "--gin.BATCH_SIZE=8", "--gin.EVAL_PERIOD=0",
            f"--gin.CheckpointConfig.save_period={save_period}", "--gin.train.log_period=1",
            "--gin.TASK_FEATURE_LENGTHS={'inputs': 32, 'targets': 8}", *SMALL_MODEL, *extra]


def main_inprocess(argv, capsys):
    """(exit code, stderr + the "medmt5" log) of `python -m medmt5.train ARGV`, run in this
    process (pytest's log capture would otherwise swallow the log lines)."""
    import io
    import logging

    from medmt5.cli import train
    capsys.readouterr()
    buf = io.StringIO()
    handler = logging.StreamHandler(buf)
    logger = logging.getLogger("medmt5")
    logger.addHandler(handler)
    try:
        rc = train.main(list(argv))
    finally:
        logger.removeHandler(handler)
    return rc, capsys.readouterr().err + buf.getvalue()


@pytest.fixture(autouse=True)
def clean_gin(monkeypatch):
    """In-process CLI runs: a clean gin config and the one-line error form around each test."""
    monkeypatch.delenv("MEDMT5_TRACEBACK", raising=False)
    gin.clear_config()
    yield
    gin.clear_config()


@pytest.fixture(scope="module", autouse=True)
def compile_cache(tmp_path_factory):
    """A persistent compilation cache per test module, so repeated CLI runs compile once."""
    jax.config.update("jax_compilation_cache_dir", str(tmp_path_factory.mktemp("jax_cache")))
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0)
