"""`prompt_tuning.evaluate`: prompts per task (single prompt, multi-task [N, P, H] table with
its task order, or a message naming the missing flag), the format rate, the per-language
summary of the medical in-context check."""
import json
import os

import numpy as np
import pytest
import trainer_fixtures as fixtures

import tasks.icl_medical_tasks  # noqa: F401  (registers icl_med_*)
import tasks.promot_tasks  # noqa: F401  (registers promot_* / icl_*)
from medmt5.checkpointing.checkpoint_io import save_params_checkpoint
from prompt_tuning import evaluate, recipe
from prompt_tuning.prompts import PromptedTransformer

TASKS = ["promot_rte", "promot_wmt14_enfr"]


def test_single_prompt_is_attached_to_every_task():
    p = np.ones((3, 4), np.float32)
    got = evaluate.task_prompts(TASKS, "attached", p, None, None, "/ckpt")
    assert all(np.array_equal(v, p) for v in got.values())
    assert evaluate.task_prompts(TASKS, "removed", p, None, None, "/ckpt") == {
        t: None for t in TASKS}
    with pytest.raises(ValueError, match="has no prompt: set PROMPT_FILE"):
        evaluate.task_prompts(TASKS, "attached", None, None, None, "/ckpt")
    with pytest.raises(ValueError, match="MULTITASK_TASKS=.*single"):
        evaluate.task_prompts(TASKS, "attached", p, None, TASKS, "/ckpt")


def test_multitask_table_needs_its_task_order():
    table = np.stack([np.zeros((3, 4)), np.ones((3, 4))]).astype(np.float32)
    with pytest.raises(ValueError, match=r"/ckpt holds a multi-task prompt table \[N, P, H\] = "
                                         r"\(2, 3, 4\): set --gin.MULTITASK_TASKS"):
        evaluate.task_prompts(TASKS, "attached", table, None, None, "/ckpt")
    got = evaluate.task_prompts(TASKS[::-1], "attached", table, None, TASKS, "/ckpt")
    np.testing.assert_array_equal(got["promot_rte"], table[0])
    np.testing.assert_array_equal(got["promot_wmt14_enfr"], table[1])
    with pytest.raises(ValueError, match=r"\['icl_cb_1shot'\] have no row in MULTITASK_TASKS"):
        evaluate.task_prompts(["icl_cb_1shot"], "attached", table, None, TASKS, "/ckpt")
    with pytest.raises(ValueError, match="MULTITASK_TASKS has 1 tasks but.*2 rows"):
        evaluate.task_prompts(TASKS, "attached", table, None, TASKS[:1], "/ckpt")


def test_language_summaries():
    per_task = {"icl_med_bioasq_es_1shot": {"rouge2": 10.0, "format_rate": 50.0},
                "icl_med_e3c_es_1shot": {"f1": 30.0, "format_rate": 0.0},
                "icl_med_e3c_fr_1shot": {"f1": 40.0, "format_rate": 100.0}}
    assert evaluate.language_of("icl_med_e3c_fr_4shot") == "fr"
    assert evaluate.language_of("promot_rte") is None
    got = evaluate.summaries(per_task)
    assert got == {"all/norm_avg": pytest.approx(80 / 3), "all/format_rate": 50.0,
                   "es/norm_avg": 20.0, "es/format_rate": 25.0,
                   "fr/norm_avg": 40.0, "fr/format_rate": 100.0}
    table = evaluate.language_table(per_task)
    assert "[es] Norm. Avg." in table and "[it]" not in table


def test_target_format_pattern_from_the_labels(monkeypatch):
    pattern = recipe.target_format_pattern("promot_rte")
    assert pattern == "(?:false|true)"
    monkeypatch.setattr(recipe, "MAX_FORMAT_LABELS", 3)  # the shipped WMT sample is small
    with pytest.raises(ValueError, match="more than 3 distinct targets.*FORMAT_PATTERN"):
        recipe.target_format_pattern("promot_wmt14_enfr")


def test_multitask_checkpoint_evaluates_each_task_with_its_row(tmp_path, capsys):
    """A multi-task ProMoT checkpoint (prompt table [2, P, H]) through promot_evaluate: without
    the task order it stops naming the flag; with it each task is scored with its own row,
    and the format rate of the target's labels is reported."""
    from tasks.vocab import get_vocabulary

    cfg = fixtures.tiny_config(vocab_size=get_vocabulary("tiny").vocab_size, d_kv=8, num_heads=2)
    model = PromptedTransformer(cfg, prompt_length=3, num_prompts=2)
    params = fixtures.host_params(model, seed=2)
    ckpt = str(tmp_path / "ckpt")
    save_params_checkpoint(cfg, params, ckpt)
    common = dict(checkpoint_path=ckpt, task_feature_lengths={"inputs": 128, "targets": 8},
                  split="validation", max_examples=2, batch_size=2, beam_size=1)
    with pytest.raises(ValueError, match="set --gin.MULTITASK_TASKS"):
        evaluate.promot_evaluate(eval_tasks=["promot_rte"], prompt_mode="attached", **common)
    out = str(tmp_path / "eval")
    results = evaluate.promot_evaluate(eval_tasks=["promot_rte"], prompt_mode="attached",
                                       prompt_tasks=TASKS, target_task="promot_rte",
                                       output_dir=out, **common)
    assert 0.0 <= results["promot_rte/accuracy"] <= 100.0
    assert 0.0 <= results["promot_rte/format_rate"] <= 100.0
    with open(os.path.join(out, "metrics.json")) as f:
        saved = json.load(f)
    assert saved["prompt_tasks"] == TASKS and saved["format_pattern"] == "(?:false|true)"
    preds = [json.loads(line)["prediction"]
             for line in open(os.path.join(out, "promot_rte-predictions.jsonl"))]
    assert results["promot_rte/format_rate"] == 100.0 * sum(
        p.strip() in ("true", "false") for p in preds) / len(preds)
