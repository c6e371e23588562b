"""A user's own task module outside the repository (docs/examples/my_tasks.py: own data,
own sentencepiece vocabulary, exact-match metric) trained, evaluated and decoded through the
standard CLIs with --gin.MIXTURE_OR_TASK_MODULE (T5X's macro); and the project's tasks registered by
`import tasks`."""
import json
import os
import shutil
import subprocess
import sys

import pytest
import seqio
from cli_runs import ROOT, SMALL_MODEL, clean_gin, compile_cache  # noqa: F401 (fixtures)

EXAMPLE = os.path.join(ROOT, "docs", "examples", "my_tasks.py")
PAIRS = [("amoxicillin", "antibiotic"), ("doxycycline", "antibiotic"),
         ("ibuprofen", "analgesic"), ("paracetamol", "analgesic"),
         ("metformin", "antidiabetic"), ("insulin", "antidiabetic"),
         ("warfarin", "anticoagulant"), ("heparin", "anticoagulant")]
LENGTHS = "--gin.TASK_FEATURE_LENGTHS={'inputs': 16, 'targets': 16}"


@pytest.fixture
def user_module(tmp_path, monkeypatch):
    """my_tasks.py and its data in a folder outside the repository, on sys.path."""
    folder = tmp_path / "user_code"
    (folder / "my_data").mkdir(parents=True)
    shutil.copy(EXAMPLE, folder / "my_tasks.py")
    for split, rows in (("train", PAIRS), ("validation", PAIRS[:4]), ("test", PAIRS[4:])):
        (folder / "my_data" / f"{split}.tsv").write_text(
            "".join(f"{a}\t{b}\n" for a, b in rows), encoding="utf-8")
    import sentencepiece as spm
    spm.SentencePieceTrainer.train(
        input=str(folder / "my_data" / "train.tsv"),
        model_prefix=str(folder / "my_data" / "spiece"),
        vocab_size=60, hard_vocab_limit=False, pad_id=0, eos_id=1, unk_id=2, bos_id=-1,
        minloglevel=2)
    monkeypatch.syspath_prepend(str(folder))
    monkeypatch.delitem(sys.modules, "my_tasks", raising=False)
    seqio.TaskRegistry.remove("my_drug_class")
    yield folder
    seqio.TaskRegistry.remove("my_drug_class")
    sys.modules.pop("my_tasks", None)


@pytest.mark.slow  # three CLI runs: ~1 CPU-minute
def test_user_module_trains_evaluates_and_decodes(user_module, tmp_path, capsys):
    from medmt5.cli import eval as eval_cli
    from medmt5.cli import infer as infer_cli
    from medmt5.cli import train as train_cli

    module = ["--gin.MIXTURE_OR_TASK_MODULE='my_tasks'",
              "--gin.MIXTURE_OR_TASK_NAME='my_drug_class'"]
    model_dir = tmp_path / "run"
    import sentencepiece as spm
    pieces = spm.SentencePieceProcessor(model_file=str(user_module / "my_data" / "spiece.model"))
    vocab_size = pieces.get_piece_size()  # the user's vocabulary, not the project's
    assert vocab_size not in (2100, 250100)
    rc = train_cli.main(["--gin_file=medmt5_tiny.gin", f"--gin.MODEL_DIR='{model_dir}'",
                         "--gin.TRAIN_STEPS=2", "--gin.BATCH_SIZE=8", "--gin.EVAL_PERIOD=2",
                         "--gin.train.log_period=1", f"--gin.T5Config.vocab_size={vocab_size}",
                         LENGTHS, *SMALL_MODEL, *module])
    captured = capsys.readouterr()
    assert rc == 0, captured.err
    # The train-time evaluation ran the user's metric on the user's validation split.
    out = captured.out + captured.err
    assert "my_drug_class: " in out and "exact_match=" in out
    assert os.path.isdir(model_dir / "eval" / "my_drug_class")

    eval_dir = tmp_path / "eval"
    rc = eval_cli.main(["--gin_file=runs/eval.gin", f"--gin.CHECKPOINT_PATH='{model_dir}'",
                        f"--gin.EVAL_OUTPUT_DIR='{eval_dir}'", "--gin.BEAM_SIZE=1",
                        LENGTHS, *module])
    assert rc == 0, capsys.readouterr().err
    metrics = json.loads((eval_dir / "metrics.json").read_text())["metrics"]
    assert 0.0 <= metrics["my_drug_class/exact_match"] <= 100.0
    assert metrics["my_drug_class/loss"] > 0
    with open(eval_dir / "my_drug_class-predictions.jsonl", encoding="utf-8") as f:
        records = [json.loads(line) for line in f]
    assert [r["inputs"] for r in records] == [a for a, _ in PAIRS[4:]]  # the user's test split
    assert [r["target"] for r in records] == [b for _, b in PAIRS[4:]]

    inputs = tmp_path / "inputs.txt"
    inputs.write_text("ibuprofen\nheparin\n", encoding="utf-8")
    out_file = tmp_path / "predictions.jsonl"
    rc = infer_cli.main(["--gin_file=runs/infer.gin", f"--gin.CHECKPOINT_PATH='{model_dir}'",
                         f"--gin.INPUT_FILE='{inputs}'", f"--gin.OUTPUT_FILE='{out_file}'",
                         "--gin.BEAM_SIZE=1", LENGTHS, *module])
    assert rc == 0, capsys.readouterr().err
    with open(out_file, encoding="utf-8") as f:
        preds = [json.loads(line) for line in f]
    assert [p["inputs"] for p in preds] == ["ibuprofen", "heparin"]
    assert all(isinstance(p["prediction"], str) for p in preds)


def test_module_list_and_bad_module_are_reported(user_module, tmp_path, capsys):
    from medmt5.cli import gin_utils
    from medmt5.cli import infer as infer_cli

    assert gin_utils.import_user_task_modules(["my_tasks", "tasks.pretraining"]) == \
        ["my_tasks", "tasks.pretraining"]
    assert gin_utils.import_user_task_modules(None) == []
    with pytest.raises(gin_utils.UsageError, match="module name or a list"):
        gin_utils.import_user_task_modules(["my_tasks", 3])
    rc = infer_cli.main(["--gin_file=runs/infer.gin", "--gin.CHECKPOINT_PATH='/nonexistent'",
                         f"--gin.OUTPUT_FILE='{tmp_path / 'p.jsonl'}'",
                         "--gin.MIXTURE_OR_TASK_NAME='my_drug_class'",
                         "--gin.MIXTURE_OR_TASK_MODULE='no_such_tasks_module'"])
    err = capsys.readouterr().err
    assert rc == 2
    assert "MIXTURE_OR_TASK_MODULE" in err and "no_such_tasks_module" in err
    assert "PYTHONPATH" in err


def test_import_tasks_registers_the_project_tasks(tmp_path):
    """The seqio habit, in a fresh interpreter: `import tasks` then look a task up."""
    from tasks import vocab

    mt5_copy = tmp_path / "mt5_stand_in.model"  # any sentencepiece file stands in for mT5's
    shutil.copy(vocab.TINY_VOCAB_PATH, mt5_copy)
    code = ("import seqio, tasks\n"
            "m = seqio.get_mixture_or_task('medmt5_pretrain')\n"
            "print(sorted(t.name for t in m.tasks))\n"
            "print(seqio.get_mixture_or_task('abstrct_neoplasm_multilingual').name)\n"
            "print(seqio.get_mixture_or_task('abstrct_neoplasm_en')"
            ".output_features['targets'].vocabulary.vocab_size)\n"
            "import tasks.mt5\n"
            "print(seqio.get_mixture_or_task('abstrct_neoplasm_en')"
            ".output_features['targets'].vocabulary.sentencepiece_model_file)\n")
    env = dict(os.environ, PYTHONPATH=ROOT, MEDMT5_MT5_VOCAB=str(mt5_copy))
    proc = subprocess.run([sys.executable, "-c", code], cwd=str(ROOT), env=env,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.strip().splitlines()
    assert lines[0] == str([f"medmt5_pretrain_{lang}" for lang in ("en", "es", "fr", "it")])
    assert lines[1] == "abstrct_neoplasm_multilingual"
    assert lines[2] == "2100"  # the tiny vocabulary by default
    assert lines[3] == str(mt5_copy)  # tasks.mt5 re-registers with mT5's
