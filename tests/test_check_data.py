"""`python -m medmt5.check_data` on fixtures in the real layouts: one good run, bad ones.

The fixtures follow the authors' IOB TSV release (a folder per language,
`{lang}/{lang}-{dataset}-{split}.tsv`, whitespace-separated columns, raw E3C tag `ety`;
github.com/ikergarcia1996/Sequence-Labeling-LLMs, Medical-MT5/multitask.sh, dataset.py
read_tsv, label_names.py) and the hub layout of HiTZ/multilingual-abstrct
(`{lang}/{split}-00000-of-00001.parquet`, https://huggingface.co/datasets/HiTZ/multilingual-abstrct).
"""
import os
import re

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

import gin
from medmt5.cli import check_data
from tasks import benchmarks

E3C = ("-DOCSTART- -X- O\n\nUn O\npaziente O\ncon O\nfebbre B-ety\nalta I-ety\n. O\n\n"
       "Tosse\tB-ety\tx\nsecca\tI-ety\tx\n.\tO\tx\n")


def _write(path, text):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w", encoding="utf-8") as f:
        f.write(text)


def _tree(root):
    for split in ("train", "dev", "test"):
        _write(os.path.join(root, "ner", "it", f"it-e3c-{split}.tsv"), E3C)


def _run(capsys, monkeypatch, root, task, *extra):
    monkeypatch.setenv(benchmarks.BENCHMARK_DIR_ENV, str(root))
    argv = ["--gin_file=finetune/abstrct_tiny.gin", f"--gin.MODEL_DIR='{root}/run'",
            f"--gin.INITIAL_CHECKPOINT_PATH='{root}/no_checkpoint'",
            f"--gin.MIXTURE_OR_TASK_NAME='{task}'", *extra]
    try:
        code = check_data.main(argv)
    finally:
        monkeypatch.delenv(benchmarks.BENCHMARK_DIR_ENV)
        benchmarks.register_benchmark_tasks()
        gin.clear_config()
    out = capsys.readouterr()
    return code, out.out, out.err


def test_good_run_reports_files_rows_labels_and_an_example(tmp_path, capsys, monkeypatch):
    _tree(str(tmp_path))
    code, out, err = _run(capsys, monkeypatch, tmp_path, "multitask_e3c_it")
    assert code == 0, err
    path = os.path.join(str(tmp_path), "ner", "it", "it-e3c-dev.tsv")
    assert f"  split validation:\n    files: {path}\n    rows: 2\n" in out
    assert "    label set: ClinicalEntity\n    labels found: ClinicalEntity\n" in out
    assert ("    example targets: Un paziente con <ClinicalEntity> febbre alta "
            "</ClinicalEntity> .  [") in out
    assert "    example inputs: <ClinicalEntity> Un paziente con febbre alta ." in out
    assert "vocabulary 2,100 ids (model rows 2,176)" in out
    assert out.rstrip().endswith("check_data: OK (1 task(s) of multitask_e3c_it)")


@pytest.mark.parametrize("case,message", [
    ("missing_dev", r"it/it-e3c-dev.tsv: no such file; the authors' release is laid out as"),
    ("malformed", r"it/it-e3c-test.tsv:3: malformed line 'febbre B-ety x y'"),
    ("unknown_label", r"it/it-e3c-train.tsv:6: label 'B-dis' is not in this dataset's label "
                      r"set \['ClinicalEntity'\]"),
])
def test_bad_ner_tree_stops_naming_the_file(tmp_path, capsys, monkeypatch, case, message):
    _tree(str(tmp_path))
    ner = os.path.join(str(tmp_path), "ner", "it")
    if case == "missing_dev":
        os.remove(os.path.join(ner, "it-e3c-dev.tsv"))
    elif case == "malformed":
        _write(os.path.join(ner, "it-e3c-test.tsv"), "Un O\npaziente O\nfebbre B-ety x y\n")
    else:
        _write(os.path.join(ner, "it-e3c-train.tsv"), E3C.replace("B-ety", "B-dis", 1))
    code, out, err = _run(capsys, monkeypatch, tmp_path, "e3c_it")
    assert code == 1
    assert "medmt5.check_data: error:" in err
    assert re.search(message, err), err
    assert "check_data: OK" not in out


def test_abstrct_parquet_without_a_label_column_stops(tmp_path, capsys, monkeypatch):
    folder = tmp_path / "abstrct" / "es"
    folder.mkdir(parents=True)
    for split in ("glaucoma_test",):
        pq.write_table(pa.table({"id": ["a"], "tokens": [["Se", "administró", "."]]}),
                       str(folder / f"{split}-00000-of-00001.parquet"))
    code, out, err = _run(capsys, monkeypatch, tmp_path, "abstrct_glaucoma_es")
    assert code == 1
    assert "glaucoma_test-00000-of-00001.parquet: needs a token column" in err
    assert "['labels_txt', 'labels', 'ner_tags']" in err


def test_tag_the_vocabulary_cannot_represent_is_reported(tmp_path):
    class Lossy:     # a vocabulary that drops '<' (what a wrong vocabulary can do)
        def encode(self, text):
            return list(text.replace("<", ""))

        def decode(self, ids):
            return "".join(ids)

    _tree(str(tmp_path))
    benchmarks.register_benchmark_tasks(data_dir=str(tmp_path))
    try:
        with pytest.raises(check_data.DataCheckError,
                           match=r"task e3c_it: the vocabulary cannot represent the tag "
                                 r"'<ClinicalEntity>'"):
            check_data._seqlabel_report("e3c_it", "train", Lossy())
    finally:
        benchmarks.register_benchmark_tasks()
