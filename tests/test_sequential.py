"""Sequential ProMoT driver: stages, resume between stages, prompt bookkeeping, gin CLI.

On the shipped ProMoT sample tasks (tiny vocabulary): RTE (accuracy), then WMT14 En->Fr
(BLEU), with TriviaQA 1-shot (exact match) held out."""
import json
import os
import shutil

import jax  # noqa: E402
import numpy as np
import pytest

import medmt5  # noqa: E402
import tasks  # noqa: E402,F401  (registers the promot_* / icl_* sample tasks)
from medmt5.checkpointing.checkpoint_io import save_params_checkpoint  # noqa: E402
from medmt5.data import vocab_record  # noqa: E402
from medmt5.model.config import T5Config  # noqa: E402
from medmt5.model.transformer import Transformer  # noqa: E402
from prompt_tuning import sequential  # noqa: E402
from tasks.vocab import SPIECE_FILE  # noqa: E402
from tests import trainer_fixtures  # noqa: F401  (cheap XLA compile flags, set before jax)

TASKS = ["promot_rte", "promot_wmt14_enfr"]
HELDOUT = "icl_triviaqa_1shot"
CFG = T5Config(vocab_size=2176, d_model=16, d_kv=4, d_ff=32, num_heads=2,
               num_encoder_layers=1, num_decoder_layers=1,
               relative_attention_num_buckets=8, relative_attention_max_distance=16)
# inputs: the longest sample input (RTE 107 tokens, TriviaQA 1-shot 75) fits; targets: RTE's
# labels and TriviaQA's answers (exact match: a cut answer would stop the evaluation) fit,
# WMT's longer translations are cut (a logged warning; BLEU).
LENGTHS = {"inputs": 112, "targets": 12}
P = 3


def _flat(tree, prefix=""):
    out = {}
    for k, v in tree.items():
        if isinstance(v, dict):
            out.update(_flat(v, f"{prefix}{k}/"))
        else:
            out[prefix + k] = np.asarray(v)
    return out


@pytest.fixture(scope="module")
def pretrained(tmp_path_factory):
    path = str(tmp_path_factory.mktemp("pretrained"))
    abstract = jax.eval_shape(lambda r: Transformer(CFG).init(
        r, np.ones((1, 4), np.int32), np.ones((1, 2), np.int32), enable_dropout=False),
        jax.random.PRNGKey(0))["params"]
    rs = np.random.RandomState(0)
    params = jax.tree.map(lambda a: (rs.standard_normal(a.shape) * 0.3 + (a.ndim == 1))
                          .astype(np.float32), abstract)
    save_params_checkpoint(CFG, params, path)
    return path


def _argv(model_dir, pretrained):
    """The gin command line of a tiny 2-task x 2-step sequential ProMoT run."""
    return ["--gin_file=promot/sequential.gin",
            "--gin.MODEL_CONFIG=@T5Config()",
            *[f"--gin.T5Config.{k}={getattr(CFG, k)}" for k in (
                "vocab_size", "d_model", "d_kv", "d_ff", "num_heads", "num_encoder_layers",
                "num_decoder_layers", "relative_attention_num_buckets",
                "relative_attention_max_distance")],
            f"--gin.MODEL_DIR='{model_dir}'", f"--gin.INITIAL_CHECKPOINT_PATH='{pretrained}'",
            f"--gin.SEQUENTIAL_TASKS={TASKS!r}", "--gin.SEQUENTIAL_METHOD='promot'",
            f"--gin.HELDOUT_TASKS={[HELDOUT]!r}", f"--gin.TASK_FEATURE_LENGTHS={LENGTHS!r}",
            "--gin.BATCH_SIZE=8", "--gin.PROMPT_STEPS=2", "--gin.MODEL_STEPS=2",
            "--gin.PROMPT_EVAL_PERIOD=2", "--gin.MODEL_EVAL_PERIOD=2",
            f"--gin.PROMPT_LENGTH={P}", "--gin.run_sequential.prompt_init='vocab'",
            "--gin.run_sequential.eval_max_examples=8", "--gin.run_sequential.eval_batch_size=8"]


@pytest.fixture(scope="module")
def straight(tmp_path_factory, pretrained):
    d = str(tmp_path_factory.mktemp("straight") / "run")
    assert sequential.main(_argv(d, pretrained)) == 0
    with open(os.path.join(d, "state.json")) as f:
        return d, json.load(f)


STAGES = ["0_promot_rte_prompt", "0_promot_rte_model", "1_promot_wmt14_enfr_prompt",
          "1_promot_wmt14_enfr_model"]


def test_promot_stages_measurements_and_prompts(straight):
    d, state = straight
    rows = state["measurements"]
    assert state["completed"] == STAGES
    assert [r["after"] for r in rows] == ["initial"] + STAGES
    assert rows[0]["seen"] == {} and set(rows[-1]["seen"]) == set(TASKS)
    assert set(rows[-1]["heldout"]) == {HELDOUT}
    assert all(0 <= r["norm_avg"] <= 100 for r in rows)
    with open(os.path.join(d, "metrics.jsonl")) as f:
        assert [json.loads(line)["after"] for line in f] == [r["after"] for r in rows]
    assert os.path.exists(os.path.join(d, "metrics.csv"))
    assert os.path.exists(os.path.join(d, "config.gin"))
    for i, task in enumerate(TASKS):
        saved = np.load(os.path.join(d, "prompts", f"{task}.npy"))
        assert saved.shape == (P, CFG.d_model)
        for stage in ("prompt", "model"):  # the kept best; stage 2 keeps the prompt frozen
            stage_dir = os.path.join(d, "stages", f"{i}_{task}_{stage}")
            _, params = medmt5.load_checkpoint(os.path.join(stage_dir, "best"))
            np.testing.assert_array_equal(params["prompt"]["embedding"], saved)
            with open(os.path.join(stage_dir, "best", "best.json")) as f:
                assert json.load(f)["metric"] == {"promot_rte": "accuracy",
                                                   "promot_wmt14_enfr": "bleu"}[task]
    # The second task's prompt stage trains only its prompt: backbone equals task 0's.
    _, b0 = medmt5.load_checkpoint(os.path.join(d, "backbones", "0_promot_rte"))
    _, p1 = medmt5.load_checkpoint(os.path.join(d, "stages", "1_promot_wmt14_enfr_prompt"))
    _, b1 = medmt5.load_checkpoint(os.path.join(d, "backbones", "1_promot_wmt14_enfr"))
    assert "prompt" not in b0
    f0, f1, fb1 = _flat(b0), _flat(p1), _flat(b1)
    for k, v in f0.items():
        np.testing.assert_array_equal(f1[k], v)
    assert any(not np.array_equal(fb1[k], v) for k, v in f0.items())  # stage 2 moved it
    assert not np.array_equal(np.load(os.path.join(d, "prompts", "promot_rte.npy")),
                              np.load(os.path.join(d, "prompts", "promot_wmt14_enfr.npy")))


def test_exported_backbones_and_prompts_record_the_vocabulary(straight):
    """Every backbone and prompt the driver exports carries the run's vocabulary record
    (issue 15: every checkpoint and exported prompt), so the next stage, which starts from
    the exported backbone, checks it instead of warning that it has none."""
    d, _ = straight
    run = vocab_record.read_record(os.path.join(d, "stages", "0_promot_rte_model", "best"))
    assert run is not None
    for i, task in enumerate(TASKS):
        backbone = os.path.join(d, "backbones", f"{i}_{task}")
        assert vocab_record.read_record(backbone) == run
        assert os.path.isfile(os.path.join(backbone, SPIECE_FILE))
        record, where = vocab_record.checkpoint_record(os.path.join(d, "prompts", f"{task}.npy"))
        assert record == run and where.endswith(f"{task}.vocab.json")


def test_killed_between_stages_resumes_at_the_right_stage(straight, pretrained, tmp_path,
                                                          monkeypatch):
    """A copy of the finished run cut back to "killed after stage 3 of 4"; rerunning the same
    command trains only stage 4 and reproduces the uninterrupted run bitwise."""
    d, state = straight
    r = str(tmp_path / "run")
    shutil.copytree(d, r)
    shutil.rmtree(os.path.join(r, "stages", STAGES[-1]))
    shutil.rmtree(os.path.join(r, "backbones", "1_promot_wmt14_enfr"))
    cut = dict(state, completed=STAGES[:3], measurements=state["measurements"][:4])
    with open(os.path.join(r, "state.json"), "w") as f:
        json.dump(cut, f)
    prompts_before = {t: np.load(os.path.join(r, "prompts", f"{t}.npy")).tobytes()
                      for t in TASKS}
    calls = []
    import medmt5.run.loop as train_lib
    real_train = train_lib.train

    def spy(**kw):
        calls.append(os.path.basename(kw["model_dir"]))
        return real_train(**kw)

    monkeypatch.setattr(train_lib, "train", spy)
    assert sequential.main(_argv(r, pretrained)) == 0
    assert calls == [STAGES[-1]]
    with open(os.path.join(r, "state.json")) as f:
        resumed = json.load(f)
    assert resumed["completed"] == STAGES
    strip = [{k: v for k, v in m.items()} for m in state["measurements"]]
    assert resumed["measurements"] == strip
    for t in TASKS:  # earlier prompts untouched by later stages
        assert np.load(os.path.join(r, "prompts", f"{t}.npy")).tobytes() == prompts_before[t]
    _, a = medmt5.load_checkpoint(os.path.join(d, "backbones", "1_promot_wmt14_enfr"))
    _, b = medmt5.load_checkpoint(os.path.join(r, "backbones", "1_promot_wmt14_enfr"))
    fa, fb = _flat(a), _flat(b)
    assert fa.keys() == fb.keys()
    for k in fa:
        np.testing.assert_array_equal(fa[k], fb[k])


def test_state_refuses_another_plan(straight, pretrained):
    d, _ = straight
    with pytest.raises(ValueError, match="another MODEL_DIR"):
        sequential.SequentialState(d, ["promot_wmt14_enfr"], "promot")
    with pytest.raises(ValueError, match="unknown"):
        sequential.stage_plan(TASKS, "nope")
    with pytest.raises(ValueError, match="twice"):
        sequential.stage_plan(["promot_rte", "promot_rte"], "finetune")


def test_stage_stopped_early_is_not_marked_complete(pretrained, tmp_path):
    """A train run that returns before its last step (SIGTERM) leaves the stage to resume."""
    from medmt5.cli.train import TrainResult

    d = str(tmp_path / "run")
    calls = []

    def stopped(**kw):
        calls.append(os.path.basename(kw["model_dir"]))
        return TrainResult(step=1, metrics={}, eval_metrics={}, best=None)

    rows = sequential.run_sequential(
        model_dir=d, model_config=CFG, tasks=TASKS, method="finetune",
        initial_checkpoint_path=pretrained, task_feature_lengths=LENGTHS, batch_size=8,
        prompt_stage=sequential.StageSettings(2, 0.3, eval_period=2),
        model_stage=sequential.StageSettings(2, 0.01, eval_period=2),
        heldout_tasks=[], eval_batch_size=8, eval_max_examples=8, train_fn=stopped)
    assert calls == ["0_promot_rte_model"]
    assert [r["after"] for r in rows] == ["initial"]
    with open(os.path.join(d, "state.json")) as f:
        assert json.load(f)["completed"] == []
