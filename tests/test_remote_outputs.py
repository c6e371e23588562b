"""Files the CLIs write (and read) on gs://, against the GCS emulator (tests/gcs_emulator.py):
medmt5.infer's INPUT_FILE / OUTPUT_FILE, prompt_tuning.export's --out (and a gs://
--checkpoint), prompt_tuning.sequential's MODEL_DIR state and tables. Each is read back
through medmt5.data.paths and compared with what the local run writes.
"""
import json
import os

import numpy as np
import pytest
import trainer_fixtures as fixtures
from gcs_emulator import gcs_emulator  # noqa: F401  (fixture)

from medmt5.checkpointing.checkpoint_io import save_params_checkpoint
from medmt5.data import paths
from medmt5.model.transformer import Transformer
from prompt_tuning import export, sequential

P = 5
CFG = fixtures.tiny_config(num_encoder_layers=2)


def test_prompt_export_to_and_from_gcs(gcs_emulator, tmp_path, capsys):  # noqa: F811
    params = fixtures.host_params(Transformer(CFG), seed=2)
    prompt = np.random.RandomState(4).uniform(-.5, .5, (P, CFG.d_model)).astype(np.float32)
    run = f"{gcs_emulator}/export/run"  # the prompt-tuning MODEL_DIR on gs:// too
    save_params_checkpoint(CFG, dict(params, prompt={"embedding": prompt}), run)
    out = f"{gcs_emulator}/export/npy"
    assert export.main(["--checkpoint", run, "--out", out, "--format", "npy"]) == 0, \
        capsys.readouterr().err
    assert f"wrote npy prompt [5, 16] to {out}" in capsys.readouterr().out
    with paths.local_copy(paths.join(out, export.NPY_NAME)) as local:
        np.testing.assert_array_equal(np.load(local), prompt)
    # the same refusal and --overwrite as a local --out
    assert export.main(["--checkpoint", run, "--out", out]) == 1
    assert "not empty" in capsys.readouterr().err
    assert export.main(["--checkpoint", run, "--out", out, "--overwrite"]) == 0
    assert paths.listdir(out) == [export.NPY_NAME]
    peft_out = f"{gcs_emulator}/export/peft"
    assert export.main(["--checkpoint", run, "--out", peft_out, "--format", "peft"]) == 0
    assert paths.listdir(peft_out) == [export.PEFT_CONFIG, export.PEFT_WEIGHTS]
    config = json.loads(paths.read_text(paths.join(peft_out, export.PEFT_CONFIG)))
    assert config["num_virtual_tokens"] == P and config["token_dim"] == CFG.d_model
    # a failed export leaves nothing at --out
    assert export.main(["--checkpoint", f"{gcs_emulator}/export/missing",
                        "--out", f"{gcs_emulator}/export/none"]) == 1
    assert "no such directory or file" in capsys.readouterr().err
    assert not paths.exists(f"{gcs_emulator}/export/none")


def test_sequential_state_and_tables_on_gcs(gcs_emulator, tmp_path):  # noqa: F811
    run = f"{gcs_emulator}/sequential/run"
    state = sequential.SequentialState(run, ["mini_rte"], "promot")
    state.complete("0_mini_rte_prompt")
    row = {"after": "0_mini_rte_prompt", "seen": {"mini_rte": 61.5}, "norm_avg": 12.25}
    state.add_measurement(row)
    again = sequential.SequentialState(run, ["mini_rte"], "promot")  # resumes from gs://
    assert again.done("0_mini_rte_prompt") and again.measured("0_mini_rte_prompt")
    with pytest.raises(ValueError, match=f"{run}/state.json records a run"):
        sequential.SequentialState(run, ["mini_cb"], "promot")
    table = sequential.write_tables(run, [row])
    local = str(tmp_path / "local")
    os.makedirs(local)
    assert sequential.write_tables(local, [row]) == table
    for name in ("metrics.jsonl", "metrics.csv"):
        with open(os.path.join(local, name), "rb") as f:
            assert paths.read_bytes(f"{run}/{name}") == f.read(), name


def test_infer_reads_and_writes_gcs_files(gcs_emulator, tmp_path, monkeypatch):  # noqa: F811
    """The decoding is replaced (this test is about files): the texts the model would see
    come from a gs:// INPUT_FILE and the predictions land in a gs:// OUTPUT_FILE."""
    from medmt5.cli import infer

    src = f"{gcs_emulator}/infer/inputs.jsonl"
    paths.write_text(src, '{"inputs": "ibuprofène"}\n\nheparin\n')
    assert infer.read_inputs(src) == ["ibuprofène", "heparin"]
    with pytest.raises(ValueError, match=f"{gcs_emulator}/infer/empty.txt: no inputs"):
        paths.write_text(f"{gcs_emulator}/infer/empty.txt", "\n")
        infer.read_inputs(f"{gcs_emulator}/infer/empty.txt")

    seen = {}

    class FakeTaskData:
        @staticmethod
        def from_texts(name, texts, lengths):
            seen["texts"] = texts
            td = FakeTaskData()
            td.inputs_text, td.targets_text = texts, [""] * len(texts)
            return td

    class FakeEvaluator:
        def __init__(self, *args, **kwargs):
            pass

        def predict(self, model, params, td):
            return [t.upper() for t in td.inputs_text]

    import medmt5
    from medmt5.data import vocab_record
    from medmt5.run import evaluation
    from medmt5.training import partitioning
    monkeypatch.setattr(medmt5, "load_checkpoint", lambda path: (CFG, {}), raising=False)
    monkeypatch.setattr(vocab_record, "check_scoring_run", lambda *a, **k: None)
    monkeypatch.setattr(partitioning, "create_mesh", lambda **k: None)
    monkeypatch.setattr(evaluation, "place_params", lambda model, params, *a: params)
    monkeypatch.setattr(evaluation, "Evaluator", FakeEvaluator)
    monkeypatch.setattr(evaluation, "TaskData", FakeTaskData)
    out = f"{gcs_emulator}/infer/out/predictions.jsonl"
    records = infer.infer(checkpoint_path="unused", mixture_or_task_name="t",
                          task_feature_lengths={"inputs": 8, "targets": 8}, output_file=out,
                          input_file=src)
    assert seen["texts"] == ["ibuprofène", "heparin"]
    lines = [json.loads(line) for line in paths.read_text(out).splitlines()]
    assert lines == records == [
        {"inputs": "ibuprofène", "prediction": "IBUPROFÈNE", "target": ""},
        {"inputs": "heparin", "prediction": "HEPARIN", "target": ""}]


def test_promot_evaluate_outputs_on_gcs(gcs_emulator):  # noqa: F811
    """prompt_tuning.evaluate writes EVAL_OUTPUT_DIR through medmt5.run.checkpoint_eval:
    <task>-predictions.jsonl (evaluation.write_predictions), metrics.json (atomic_write_text)
    and config.gin (gin_utils.write_config); each of those writers on gs://."""
    import gin
    from medmt5.checkpointing.atomic_dir import atomic_write_text
    from medmt5.cli import gin_utils
    from medmt5.run import evaluation

    out = f"{gcs_emulator}/promot_eval/eval_prompt_attached_test"
    records = [{"inputs": "Il pleut.", "prediction": "true", "target": "true"}]
    evaluation.write_predictions(out, "promot_rte", records)
    assert [json.loads(x) for x in paths.read_text(f"{out}/promot_rte-predictions.jsonl")
            .splitlines()] == records
    atomic_write_text(paths.join(out, "metrics.json"), json.dumps({"metrics": {"a": 1.0}}))
    assert json.loads(paths.read_text(f"{out}/metrics.json")) == {"metrics": {"a": 1.0}}
    assert gin_utils.write_config(out) == f"{out}/config.gin"
    assert paths.read_text(f"{out}/config.gin") == gin.config_str()
