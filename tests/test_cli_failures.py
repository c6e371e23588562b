"""Every failing case of docs/errors.md as a real CLI subprocess (issue 16).

Each case must: exit non-zero (the documented code) within 60 s, print a message naming the
file, flag or parameter, print no traceback, and leave an existing MODEL_DIR (a real earlier
run's) byte-identical. In-process tests cannot see the failure this guards against: after a
data error the interpreter's shutdown destroyed a still-referenced tf.data iterator and hung
or aborted (medmt5.runtime.failures). `test_data_errors_exit_every_time` (slow) repeats the
hang-prone cases 10 times each.
"""
import dataclasses
import gzip
import hashlib
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Callable

import cli_runs
import pytest

SAMPLE_CORPUS = os.path.join(cli_runs.ROOT, "tasks", "data", "corpus")
# The bound: every failing run exits within 60 s (about 10 s on an idle laptop core; a
# machine with many times more busy processes than cores can raise it here).
TIME_LIMIT_S = float(os.environ.get("MEDMT5_CLI_FAILURE_TIME_LIMIT_S", "60"))
STEPS = 2  # the prepared MODEL_DIR holds step 1, so a run on it restores, then reads data


@dataclasses.dataclass(frozen=True)
class Case:
    id: str
    argv: Callable  # (Env) -> list of CLI arguments (after `python -m module`)
    rc: int
    needles: tuple  # substrings of stderr
    module: str = "medmt5.train"
    data_error: bool = False  # hang-prone: repeated by the slow test


@dataclasses.dataclass
class Env:
    root: str  # a scratch folder for this module
    model_dir: str  # an existing MODEL_DIR from a real successful run (step 1)
    cache: str

    def corpus(self, name: str, files: dict) -> str:
        """A copy of the sample corpus with `files` ({file name: bytes or None to delete})."""
        d = os.path.join(self.root, "corpus_" + name)
        if not os.path.isdir(d):
            shutil.copytree(SAMPLE_CORPUS, d)
            for fname, content in files.items():
                path = os.path.join(d, fname)
                if content is None:
                    os.remove(path)
                else:
                    with open(path, "wb") as f:
                        f.write(content)
        return d

    def file(self, name: str, text: str) -> str:
        path = os.path.join(self.root, name)
        with open(path, "w") as f:
            f.write(text)
        return path


def train(env: Env, *extra, model_dir: str | None = None):
    return cli_runs.train_argv(model_dir or env.model_dir, STEPS, save_period=1,
                               extra=("--gin.train.step_timeout_s=None", *extra))


def corpus_case(env: Env, name: str, files: dict):
    return train(env, f"--gin.setup_tasks.corpus_dir='{env.corpus(name, files)}'")


def _gz(data: bytes) -> bytes:
    return gzip.compress(data, mtime=0)


GOOD = b'{"text": "Patients with dilated cardiomyopathy were treated."}\n'
TRUNCATED_GZ = _gz(GOOD * 200)[:-40]


def _lines_then(bad: bytes, n_good: int = 5) -> bytes:
    return GOOD * n_good + bad


def gin_file(env: Env, name: str, text: str, inner=None):
    if inner:
        env.file(*inner)
    return [f"--gin_file={env.file(name, text)}"]


BAD_INPUTS = '{"inputs": "a"}\n{"inputs": \n'


def eval_argv(env: Env, *extra):
    return ["--gin_file=runs/eval.gin", "--gin_file=models/mt5_tiny.gin",
            *cli_runs.SMALL_MODEL, f"--gin.CHECKPOINT_PATH='{env.model_dir}'",
            "--gin.MIXTURE_OR_TASK_NAME='abstrct_neoplasm_en'",
            f"--gin.EVAL_OUTPUT_DIR='{env.root}/eval_out'", *extra]


def infer_argv(env: Env, *extra):
    return ["--gin_file=runs/infer.gin", f"--gin.CHECKPOINT_PATH='{env.model_dir}'",
            "--gin.MIXTURE_OR_TASK_NAME='abstrct_neoplasm_en'",
            "--gin.TASK_FEATURE_LENGTHS={'inputs': 32, 'targets': 8}", *extra]


CASES = [
    # ---- corpus data: errors raised inside the tf.data pipeline (the hang) -------------------
    Case("corpus_malformed_json", lambda e: corpus_case(e, "json", {
        "en.jsonl": _lines_then(b'{"text": "broken\n')}), 1,
        ("en.jsonl:6: malformed JSON",), data_error=True),
    Case("corpus_text_not_a_string", lambda e: corpus_case(e, "int", {
        "it.jsonl": _lines_then(b'{"text": 7}\n')}), 1,
        ('it.jsonl:6: "text" is a int, expected a string',), data_error=True),
    Case("corpus_record_without_text", lambda e: corpus_case(e, "notext", {
        "en.jsonl": _lines_then(b'{"body": "no text"}\n')}), 1,
        ('en.jsonl:6: record has no "text" field',), data_error=True),
    Case("corpus_line_not_an_object", lambda e: corpus_case(e, "list", {
        "fr.jsonl": _lines_then(b'["text"]\n')}), 1,
        ('fr.jsonl:6: record has no "text" field',), data_error=True),
    Case("corpus_invalid_utf8", lambda e: corpus_case(e, "utf8", {
        "en.jsonl": _lines_then(b'{"text": "caf\xe9"}\n')}), 1,
        ("en.jsonl:6: invalid UTF-8",), data_error=True),
    Case("corpus_empty_file", lambda e: corpus_case(e, "empty", {"es.jsonl": b"\n\n"}), 1,
         ("es.jsonl: the file holds no documents",), data_error=True),
    Case("corpus_truncated_gzip", lambda e: corpus_case(e, "trunc", {
        "en.jsonl": None, "en.jsonl.gz": TRUNCATED_GZ}), 1,
        ("en.jsonl.gz: damaged or truncated gzip file",), data_error=True),
    Case("corpus_not_gzip", lambda e: corpus_case(e, "notgz", {
        "en.jsonl": None, "en.jsonl.gz": GOOD}), 1,
        ("en.jsonl.gz: damaged or truncated gzip file",), data_error=True),
    Case("corpus_dir_missing", lambda e: train(
        e, f"--gin.setup_tasks.corpus_dir='{e.root}/no_corpus'"), 1,
        ("no_corpus does not exist",)),
    # ---- gin syntax and flags ------------------------------------------------------------------
    Case("gin_file_unclosed_brace", lambda e: gin_file(
        e, "unclosed.gin", "TRAIN_STEPS = 3\nTASK_FEATURE_LENGTHS = {'inputs': 32,\n"), 2,
         ("unclosed.gin:2: gin syntax error: the '{' opened on line 2 is never closed",)),
    Case("gin_file_syntax_error", lambda e: gin_file(
        e, "syntax.gin", "TRAIN_STEPS = 3\nBATCH_SIZE = = 4\n"), 2,
         ("syntax.gin:2: gin syntax error", "BATCH_SIZE = = 4")),
    Case("gin_included_file_unclosed", lambda e: [
        f"--gin_search_paths={e.root}", "--gin_file=medmt5_tiny.gin",
        *gin_file(e, "outer.gin", "include 'inner.gin'\n", inner=("inner.gin", "X = [1, 2\n"))],
        2, ("inner.gin:1: gin syntax error: the '[' opened on line 1 is never closed",)),
    Case("flag_path_without_inner_quotes", lambda e: train(
        e, "--gin.INITIAL_CHECKPOINT_PATH=/path/to/ckpt"), 2,
        ("--gin.INITIAL_CHECKPOINT_PATH=/path/to/ckpt: gin cannot parse",
         "--gin.INITIAL_CHECKPOINT_PATH=\"'/path/to/ckpt'\"")),
    Case("flag_word_without_quotes", lambda e: train(e, "--gin.MIXTURE_OR_TASK_NAME=abstrct"), 2,
         ("--gin.MIXTURE_OR_TASK_NAME=abstrct: gin cannot parse",
          "--gin.MIXTURE_OR_TASK_NAME=\"'abstrct'\"")),
    Case("flag_unclosed_bracket", lambda e: train(e, "--gin.TASK_FEATURE_LENGTHS={'inputs': 32"),
         2, ("--gin.TASK_FEATURE_LENGTHS={'inputs': 32: the value is incomplete",)),
    Case("unknown_parameter", lambda e: train(e, "--gin.train.no_such_param=1"), 2,
         ("no_such_param", "Hint")),
    Case("undefined_macro", lambda e: train(e, "--gin.DataConfig.batch_size=%NO_SUCH_MACRO"), 2,
         ("NO_SUCH_MACRO",)),
    Case("missing_required_macro", lambda e: ["--gin_file=models/mt5_tiny.gin",
                                              "--gin_file=runs/pretrain.gin"], 2,
         ("Missing required gin macros: MIXTURE_OR_TASK_NAME, MODEL_DIR",)),
    Case("no_such_gin_file", lambda e: ["--gin_file=no_such_recipe.gin"], 2,
         ("--gin_file=no_such_recipe.gin: no such file",)),
    Case("unknown_flag", lambda e: ["--gin_fle=medmt5_tiny.gin"], 2,
         ("Unknown flag '--gin_fle'",)),
    # ---- values: types and ranges (medmt5.runtime.preflight.check_bound_values) -----------
    Case("train_steps_string", lambda e: train(e, "--gin.TRAIN_STEPS='30'"), 2,
         ("TRAIN_STEPS='30' (--gin.TRAIN_STEPS flag), used as train.train_steps is a str",
          "--gin.TRAIN_STEPS=30 (no quotes")),
    Case("train_steps_negative", lambda e: train(e, "--gin.TRAIN_STEPS=-3"), 2,
         ("TRAIN_STEPS=-3", "out of range", "an integer >= 0")),
    Case("train_steps_float", lambda e: train(e, "--gin.TRAIN_STEPS=1.5"), 2,
         ("TRAIN_STEPS=1.5", "is a float")),
    Case("log_period_zero", lambda e: train(e, "--gin.train.log_period=0"), 2,
         ("train.log_period=0", "an integer >= 1")),
    Case("batch_size_zero", lambda e: train(e, "--gin.BATCH_SIZE=0"), 2,
         ("BATCH_SIZE=0", "DataConfig.batch_size")),
    Case("learning_rate_zero", lambda e: train(e, "--gin.LEARNING_RATE=0"), 2,
         ("LEARNING_RATE=0", "make_schedule.learning_rate", "a number > 0")),
    Case("dropout_rate_above_one", lambda e: train(e, "--gin.DROPOUT_RATE=1.5"), 2,
         ("DROPOUT_RATE=1.5", "T5Config.dropout_rate", "in [0, 1)")),
    Case("feature_length_zero", lambda e: train(
        e, "--gin.TASK_FEATURE_LENGTHS={'inputs': 0, 'targets': 8}"), 2,
        ("TASK_FEATURE_LENGTHS=", "{'inputs': 0}")),
    Case("eval_period_negative", lambda e: train(e, "--gin.EVAL_PERIOD=-1"), 2,
         ("EVAL_PERIOD=-1",)),
    Case("keep_checkpoints_zero",
         lambda e: train(e, "--gin.CheckpointConfig.keep_checkpoints=0"), 2,
         ("CheckpointConfig.keep_checkpoints=0",)),
    Case("model_dir_not_a_string", lambda e: train(e, model_dir=None) + [
        "--gin.MODEL_DIR=123"], 2, ("MODEL_DIR=123", "a path string", "--gin.MODEL_DIR=\"'123'\"")),
    Case("num_heads_zero", lambda e: train(e, "--gin.T5Config.num_heads=0"), 2,
         ("T5Config.num_heads=0",)),
    # ---- found while running -------------------------------------------------------------------
    Case("unknown_task", lambda e: train(e, "--gin.MIXTURE_OR_TASK_NAME='medmt5_pretrian'"), 1,
         ("'medmt5_pretrian' is not a registered", "medmt5_pretrain")),
    Case("model_dir_not_writable", lambda e: train(e, model_dir="/proc/medmt5_not_writable"),
         1, ("MODEL_DIR=/proc/medmt5_not_writable is not writable",)),
    Case("initial_checkpoint_missing", lambda e: train(
        e, f"--gin.INITIAL_CHECKPOINT_PATH='{e.root}/no_ckpt'", model_dir=f"{e.root}/new_run"),
        1, ("no_ckpt",)),
    Case("model_dir_of_another_model", lambda e: train(e, "--gin.T5Config.d_ff=48"), 1,
         ("mlp/wi_0/kernel has shape (32, 64) in the checkpoint but (32, 48)",)),
    # ---- the other CLIs --------------------------------------------------------------------------
    Case("eval_checkpoint_missing", lambda e: eval_argv(e) + [
        f"--gin.CHECKPOINT_PATH='{e.root}/no_ckpt'"], 1, ("no_ckpt",), module="medmt5.eval"),
    Case("eval_batch_size_string", lambda e: eval_argv(e, "--gin.BATCH_SIZE='8'"), 2,
         ("BATCH_SIZE='8'", "evaluate.batch_size", "--gin.BATCH_SIZE=8"),
         module="medmt5.eval"),
    Case("infer_input_file_malformed", lambda e: infer_argv(
        e, f"--gin.INPUT_FILE='{e.file('inputs.jsonl', BAD_INPUTS)}'",
        f"--gin.OUTPUT_FILE='{e.root}/pred.jsonl'"), 1,
        ("inputs.jsonl:2: expected a JSON object",), module="medmt5.infer"),
    Case("infer_output_file_missing", lambda e: infer_argv(e), 2,
         ("Missing required gin macro: OUTPUT_FILE",), module="medmt5.infer"),
    Case("promot_eval_beam_size_zero", lambda e: [
        "--gin_file=promot/icl_eval.gin", f"--gin.CHECKPOINT_PATH='{e.model_dir}'",
        "--gin.BEAM_SIZE=0"], 2, ("BEAM_SIZE=0", "promot_evaluate.beam_size"),
        module="prompt_tuning.evaluate"),
    Case("convert_source_missing", lambda e: [
        "hf-to-medmt5", f"{e.root}/no_hf_model", f"{e.root}/converted"], 1,
        ("no_hf_model",), module="medmt5.convert"),
    # ---- ProMoT data: a few-shot input over the encoder budget (raised inside tf.data) -------
    Case("promot_input_over_encoder_budget", lambda e: train(
        e, "--gin.MIXTURE_OR_TASK_NAME='promot_rte_1shot'"), 1,
        # the whole line: our message alone, no TensorFlow iterator / op / node text around it
        ("medmt5.train: error: ValueError: task promot_rte_1shot: an input of 205 tokens (EOS "
         "included) does not fit the encoder budget of 32 tokens (TASK_FEATURE_LENGTHS inputs). "
         "Raise the inputs length with the flag --gin.TASK_FEATURE_LENGTHS to at least the "
         "longest input (few-shot inputs are cut to $MEDMT5_ICL_INPUT_TOKENS tokens, default "
         "1024), or set $MEDMT5_ICL_INPUT_TOKENS=32 to cut the demonstrations to fit. seqio "
         "would otherwise cut the end of the query.\n",), data_error=True),
]


def tree_digest(path: str) -> dict:
    """{relative path: sha256 (files) or 'dir'} of everything under path."""
    out = {}
    for root, dirs, files in os.walk(path):
        for d in dirs:
            out[os.path.relpath(os.path.join(root, d), path)] = "dir"
        for name in files:
            p = os.path.join(root, name)
            with open(p, "rb") as f:
                out[os.path.relpath(p, path)] = hashlib.sha256(f.read()).hexdigest()
    return out


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    """A scratch folder and an existing MODEL_DIR made by a real 1-step training run."""
    root = str(tmp_path_factory.mktemp("cli_failures"))
    cache = os.path.join(root, "jax_cache")
    model_dir = os.path.join(root, "existing_run")
    rc, log = cli_runs.run(cli_runs.train_argv(model_dir, 1, save_period=1), cache,
                           os.path.join(root, "prepare.log"), timeout=600)
    assert rc == 0, log
    assert os.path.isfile(os.path.join(model_dir, "model_config.json")), log
    return Env(root=root, model_dir=model_dir, cache=cache)


def run_case(case: Case, env: Env):
    """(returncode, stderr+stdout, seconds) of the case's CLI as a subprocess."""
    argv = case.argv(env)
    start = time.monotonic()
    try:
        proc = subprocess.run([sys.executable, "-m", case.module, *argv], cwd=cli_runs.ROOT,
                              env=cli_runs.env(env.cache), capture_output=True, text=True,
                              timeout=2 * TIME_LIMIT_S)
    except subprocess.TimeoutExpired as e:
        pytest.fail(f"{case.id}: no exit within {2 * TIME_LIMIT_S} s (hang); output:\n"
                    f"{e.stderr}")
    return proc.returncode, proc.stderr + proc.stdout, time.monotonic() - start


def check_case(case: Case, env: Env):
    before = tree_digest(env.model_dir)
    rc, out, seconds = run_case(case, env)
    assert rc == case.rc, f"{case.id}: exit {rc}, expected {case.rc}\n{out}"
    for needle in case.needles:
        assert needle in out, f"{case.id}: {needle!r} not in the output:\n{out}"
    assert "Traceback" not in out, out
    assert "Timeout (" not in out, f"{case.id}: the last-resort exit timer fired:\n{out}"
    assert seconds < TIME_LIMIT_S, f"{case.id}: took {seconds:.0f} s"
    assert tree_digest(env.model_dir) == before, f"{case.id}: MODEL_DIR changed\n{out}"


def test_at_least_thirty_cases_each_documented():
    assert len(CASES) >= 30 and len({c.id for c in CASES}) == len(CASES)
    with open(os.path.join(cli_runs.ROOT, "docs", "errors.md")) as f:
        doc = f.read()
    undocumented = [c.id for c in CASES if f"test_cli_failures.py::{c.id}" not in doc
                    and f"`{c.id}`" not in doc]
    assert not undocumented, f"cases missing from docs/errors.md: {undocumented}"


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_cli_fails_cleanly(case, env):
    check_case(case, env)


@pytest.mark.soak
@pytest.mark.parametrize("case", [c for c in CASES if c.data_error],
                         ids=[c.id for c in CASES if c.data_error])
def test_data_errors_exit_every_time(case, env):
    """The hang after a data error was intermittent: 10 runs of each case, every one exits.

    About 10 x 30 s per case on 2 cores, so it is a `soak` test, outside `make test`:
    `pytest -m soak tests/test_cli_failures.py`."""
    for _ in range(10):
        check_case(case, env)
