"""Benchmark seqio tasks, their postprocess + metrics, and the strict readers' errors.

Inputs follow the releases' layouts (tests/test_real_layouts.py cites each source): the
authors' NER tree `ner/{lang}/{lang}-{dataset}-{split}.tsv` (Sequence-Labeling-LLMs,
Medical-MT5/multitask.sh; lines read as its dataset.read_tsv does), HiTZ/multilingual-abstrct
hub shards `{lang}/{split}-00000-of-00001.parquet`, BioASQ rows with the original BioASQ
field names. The single-file error tests call the readers on one file of such a tree.
"""
import json
import os

import numpy as np
import pytest
import seqio  # noqa: E402  (after tasks.benchmarks registered everything)

from tasks import benchmark_readers as readers
from tasks import benchmarks, metrics, qa, seqlabel

SEQ_LEN = {"inputs": 256, "targets": 256}

# The registered names, written out (the contract other modules and gin files use).
EXPECTED_TASKS = """
abstrct_neoplasm_en abstrct_neoplasm_es abstrct_neoplasm_fr abstrct_neoplasm_it
abstrct_glaucoma_en abstrct_glaucoma_es abstrct_glaucoma_fr abstrct_glaucoma_it
abstrct_mixed_en abstrct_mixed_es abstrct_mixed_fr abstrct_mixed_it
ncbi_disease_en bc5cdr_disease_en bc5cdr_chemical_en diann_en diann_es pharmaconer_es
e3c_en e3c_es e3c_fr e3c_it
multitask_abstrct_neoplasm_en multitask_abstrct_neoplasm_es multitask_abstrct_neoplasm_fr
multitask_abstrct_neoplasm_it multitask_abstrct_glaucoma_en multitask_abstrct_glaucoma_es
multitask_abstrct_glaucoma_fr multitask_abstrct_glaucoma_it multitask_abstrct_mixed_en
multitask_abstrct_mixed_es multitask_abstrct_mixed_fr multitask_abstrct_mixed_it
multitask_ncbi_disease_en multitask_bc5cdr_disease_en multitask_bc5cdr_chemical_en
multitask_diann_en multitask_diann_es multitask_pharmaconer_es multitask_e3c_en
multitask_e3c_es multitask_e3c_fr multitask_e3c_it
bioasq_en bioasq_es bioasq_fr bioasq_it
""".split()
EXPECTED_MIXTURES = """
seqlabel_multitask seqlabel_multitask_en seqlabel_multitask_crosslingual_eval
abstrct_crosslingual_eval e3c_crosslingual_eval abstrct_en_eval abstrct_es_eval
abstrct_fr_eval abstrct_it_eval bioasq_multilingual
""".split()


def _text(x):
    return x.decode("utf-8") if isinstance(x, bytes) else x


def test_names_are_registered():
    assert sorted(t.name for t in benchmarks.SEQLABEL_TASKS) + sorted(qa.QA_TASKS) == \
        sorted(EXPECTED_TASKS[:-4]) + sorted(EXPECTED_TASKS[-4:])
    for name in EXPECTED_TASKS:
        assert isinstance(seqio.TaskRegistry.get(name), seqio.Task)
    for name in EXPECTED_MIXTURES:
        assert isinstance(seqio.MixtureRegistry.get(name), seqio.Mixture)


def test_every_task_split_yields_examples_and_targets_score_100():
    """Source of every split; the task's postprocess + metric on its own targets = 100."""
    for spec in benchmarks.SEQLABEL_TASKS:
        task = seqio.get_mixture_or_task(spec.name)
        for split in spec.splits:
            rows = list(task.source.get_dataset(split, shuffle=False).as_numpy_iterator())
            assert len(rows) >= 8, (spec.name, split)
            inputs = [{"inputs_pretokenized": r["inputs"]} for r in rows]
            gold = [task.postprocess_fn(_text(r["targets"]), example=ex, is_target=True)
                    for r, ex in zip(rows, inputs)]
            assert all(len(g) == len(seqlabel.input_words(_text(ex["inputs_pretokenized"]),
                                                           task.postprocessor.labels))
                       for g, ex in zip(gold, inputs))
            scores = task.metric_fns[0](gold, gold)
            assert scores["f1"] == 100.0, (spec.name, split)
            assert spec.prefixed == _text(rows[0]["inputs"]).startswith("<")
    for name in qa.QA_TASKS:
        task = seqio.get_mixture_or_task(name)
        for split in qa.QA_SPLITS:
            rows = list(task.source.get_dataset(split, shuffle=False).as_numpy_iterator())
            assert len(rows) >= 6
            assert all(_text(r["inputs"]).startswith("question: ") and
                       " context: " in _text(r["inputs"]) for r in rows)
            refs = [task.postprocess_fn(_text(r["targets"]), example=r, is_target=True)
                    for r in rows]
            assert all(isinstance(a, list) and a[0] == _text(r["targets"])
                       for a, r in zip(refs, rows))
            preds = [task.postprocess_fn(r["targets"], example=r) for r in rows]
            assert task.metric_fns[0](refs, preds) == {
                "rouge1": 100.0, "rouge2": 100.0, "rougeL": 100.0}


def test_abstrct_sample_sizes_for_the_demo():
    for lang in ("en", "es", "fr", "it"):
        root = os.path.join(benchmarks.DEFAULT_BENCHMARK_DIR, "abstrct")
        assert len(readers.read_abstrct(root, lang, "neoplasm_train")) >= 60
        assert len(readers.read_abstrct(root, lang, "neoplasm_test")) >= 20


def _seqio_metric(task, exs, model_output):
    """What seqio.Evaluator does with a task's metric object ([B, T] token ids in)."""
    [metric_obj] = task.metric_objs
    inst = metric_obj.from_model_output(exs, model_output, task.output_features, "targets")
    value, _ = inst.actual_compute(exs, task.output_features, "targets", None)
    return value


def test_tokenized_pipeline_and_seqio_metric_flow():
    """Through seqio's own metric object (decode -> postprocess with example -> metric)."""
    task = seqio.get_mixture_or_task("multitask_abstrct_neoplasm_fr")
    exs = list(task.get_dataset(SEQ_LEN, split="test", shuffle=False).as_numpy_iterator())
    vocab = task.output_features["targets"].vocabulary
    assert exs[0]["targets"][-1] == 1 and exs[0]["inputs"][-1] == 1   # EOS appended
    assert vocab.decode(exs[0]["targets"].tolist()) == _text(exs[0]["targets_pretokenized"])
    width = max(len(e["targets"]) for e in exs)
    perfect = np.zeros([len(exs), width], np.int32)   # [B, T] "model output"
    for i, e in enumerate(exs):
        perfect[i, :len(e["targets"])] = e["targets"]
    assert _seqio_metric(task, exs, perfect)["f1"] == 100.0
    # Known wrong output: the first sentence right, all the others copied untagged.
    wrong = np.zeros_like(perfect)
    gold_spans = kept_spans = 0
    for i, e in enumerate(exs):
        words = seqlabel.input_words(_text(e["inputs_pretokenized"]), ("Claim", "Premise"))
        n = len(seqlabel.iob_spans(seqlabel.tagged_to_iob(
            _text(e["targets_pretokenized"]), words, ("Claim", "Premise"))))
        gold_spans += n
        if i == 0:
            kept_spans = n
            ids = e["targets"].tolist()
        else:
            ids = vocab.encode(" ".join(words)) + [1]
        wrong[i, :len(ids)] = ids[:width]
    recall = kept_spans / gold_spans
    assert 0 < recall < 1
    assert _seqio_metric(task, exs, wrong)["f1"] == pytest.approx(100 * 2 * recall / (1 + recall))


def _write(path, text, mode="w"):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, mode) as f:
        f.write(text)


def test_data_dir_override_and_hand_computed_f1(tmp_path, monkeypatch):
    """Custom files via MEDMT5_BENCHMARK_DIR; malformed model outputs scored by hand."""
    for split in ("train", "dev", "test"):
        _write(str(tmp_path / "ner" / "en" / f"en-ncbi-disease-{split}.tsv"),
               "Renal\tB-Disease\nfailure\tI-Disease\nworsened\tO\n.\tO\n\n"
               "No\tO\nsign\tO\nof\tO\nsepsis\tB-Disease\nor\tO\nanemia\tB-Disease\n.\tO\n")
    monkeypatch.setenv(benchmarks.BENCHMARK_DIR_ENV, str(tmp_path))
    try:
        assert benchmarks.register_benchmark_tasks() == str(tmp_path)
        task = seqio.get_mixture_or_task("ncbi_disease_en")
        rows = list(task.source.get_dataset("test", shuffle=False).as_numpy_iterator())
        assert [_text(r["targets"]) for r in rows] == [
            "<Disease> Renal failure </Disease> worsened .",
            "No sign of <Disease> sepsis </Disease> or <Disease> anemia </Disease> ."]
        exs = [{"inputs_pretokenized": r["inputs"]} for r in rows]
        outputs = ["<Disease> Renal </Disease> failure worsened",            # boundary wrong
                   "No <Disease> sign of sepsis or <Disease> anemia . </Chem"]  # nested, junk
        preds = [task.postprocess_fn(o, example=e) for o, e in zip(outputs, exs)]
        assert preds == [["B-Disease", "O", "O", "O"],
                         ["O", "B-Disease", "I-Disease", "I-Disease", "I-Disease",
                          "B-Disease", "I-Disease"]]
        gold = [task.postprocess_fn(_text(r["targets"]), example=e, is_target=True)
                for r, e in zip(rows, exs)]
        # gold 3 spans; predicted 3 spans, none exact -> 0; then a 1-of-3 hit
        assert task.metric_fns[0](gold, preds)["f1"] == 0.0
        preds[1] = task.postprocess_fn("No sign of <Disease> sepsis </Disease> or anemia .",
                                       example=exs[1])
        scores = task.metric_fns[0](gold, preds)
        assert scores["precision"] == pytest.approx(50.0)     # 1 of 2 predicted
        assert scores["recall"] == pytest.approx(100 / 3)     # 1 of 3 gold
        assert scores["f1"] == pytest.approx(40.0)            # 2PR/(P+R)
        with pytest.raises(readers.BenchmarkDataError, match="no AbstRCT file for en/neoplasm_dev"):
            list(seqio.get_mixture_or_task("abstrct_neoplasm_en").source.get_dataset(
                "validation", shuffle=False))
    finally:
        monkeypatch.delenv(benchmarks.BENCHMARK_DIR_ENV)
        benchmarks.register_benchmark_tasks()
    assert seqio.get_mixture_or_task("ncbi_disease_en").source.get_dataset(
        "test", shuffle=False).cardinality() > 2


def test_mixtures_prefix_and_rates():
    mix = seqio.get_mixture_or_task("seqlabel_multitask")
    assert len(mix.tasks) == 14
    for task in mix.tasks:
        n = len(benchmarks.read_sentences(benchmarks.TASKS_BY_NAME[task.name], "train",
                                          benchmarks.DEFAULT_BENCHMARK_DIR))
        assert mix.get_rate(task) == n
    ex = next(iter(mix.get_dataset(SEQ_LEN, split="train", shuffle=True, seed=1)))
    assert ex["inputs"].shape.rank == 1
    for name in seqio.get_mixture_or_task("seqlabel_multitask_en").tasks:
        assert name.name.endswith("_en")
    for name in seqio.get_mixture_or_task("abstrct_crosslingual_eval").tasks:
        assert not name.name.endswith("_en") and "test" in name.splits


def test_malformed_outputs_never_crash_the_postprocess():
    task = seqio.get_mixture_or_task("multitask_pharmaconer_es")
    ex = {"inputs_pretokenized": (seqlabel.label_prefix(benchmarks.DATASET_LABELS["pharmaconer"])
                                  + " Se administró omeprazol .").encode()}
    for out in ["", "<PROTEINAS>", "</UNCLEAR> omeprazol <NORMALIZABLES", "<<>> ... <a> </a>",
                "Se administró <NORMALIZABLES> <PROTEINAS> omeprazol . . . . extra",
                b"bytes \xc3\xb3".decode(), "\u0000\u200b"]:
        tags = task.postprocess_fn(out, example=ex)
        assert len(tags) == 4 and seqlabel.to_bio(tags) == tags


# ------------------------------------------------------------------ strict readers

LABELS = ("Disease",)


@pytest.mark.parametrize("content,match", [
    (b"", "file is empty"),
    (b"\n\n  \n", "file is empty"),
    (b"Renal\tB-Disease\nfailure\n", r":2: malformed line 'failure'"),
    (b"Renal\tB-Disease\tX\tY\n", r":1: malformed line"),
    (b"Renal\tB-Drug\n", r":1: label 'B-Drug' is not in this dataset's label set"),
    (b"Renal\tX-Disease\n", r":1: invalid IOB tag 'X-Disease'"),
    (b"ok\tO\n\nfi\xe8vre\tO\n", r":3: invalid UTF-8"),
    (b"two words\tO\n", r":1: invalid IOB tag 'words'.*\(this line has 3 columns"),
    (b"-DOCSTART-\tO\n\n", "no sentences"),
])
def test_tsv_errors_name_file_and_line(tmp_path, content, match):
    path = str(tmp_path / "en-ncbi-disease-train.tsv")
    _write(path, content, "wb")
    with pytest.raises(readers.BenchmarkDataError, match=match) as err:
        readers.read_iob_tsv(path, LABELS)
    assert path in str(err.value)


def test_tsv_iob1_docstart_and_space_tokens(tmp_path):
    path = str(tmp_path / "x.tsv")
    _write(path, "-DOCSTART-\tO\n\nRenal\tI-Disease\nfailure\tI-Disease\n\u00a0\tO\n.\tO\r\n")
    stats = readers.ReadStats()
    [s] = readers.read_iob_tsv(path, LABELS, stats)
    assert s.words == ("Renal", "failure", ".") and s.tags == ("B-Disease", "I-Disease", "O")
    assert stats.dropped_space_tokens == 1 and s.source == f"{path}:3"
    _write(path, "Renal\tB-Disease\n \tI-Disease\n")
    with pytest.raises(readers.BenchmarkDataError, match="whitespace-only"):
        readers.read_iob_tsv(path, LABELS)


@pytest.mark.parametrize("row,match", [
    ({"tokens": ["a", "b"], "labels": ["O"]}, ":2: 2 tokens but 1 labels"),
    ({"tokens": ["a"], "labels": ["B-Claim"]}, ":2: token 0 .* label set"),
    ({"tokens": ["a"], "labels": [7]}, ":2: 'labels' holds class ids but no label names"),
    ({"tokens": "a b", "labels": ["O"]}, ":2: 'tokens' and 'labels' must be lists"),
    ({"words": ["a"]}, ":2: expected an object with 'tokens' \\(or 'words'\\) and 'labels_txt'"),
])
def test_jsonl_errors_name_file_and_line(tmp_path, row, match):
    path = str(tmp_path / "neoplasm_train.jsonl")
    _write(path, json.dumps({"tokens": ["ok"], "labels": ["O"]}) + "\n" + json.dumps(row) + "\n")
    with pytest.raises(readers.BenchmarkDataError, match=match):
        readers.read_token_rows(path, LABELS)
    _write(path, '{"tokens": ["a"], "labels": ["O"]}\n{"tokens": [\n')
    with pytest.raises(readers.BenchmarkDataError, match=":2: invalid JSON"):
        readers.read_token_rows(path, LABELS)


def test_class_ids_with_names_and_empty_rows(tmp_path):
    path = str(tmp_path / "mixed_test.jsonl")
    _write(path,
           '{"tokens": ["Renal", "failure"], "labels": [1, 2]}\n{"tokens": [], "labels": []}\n')
    stats = readers.ReadStats()
    [s] = readers.read_token_rows(path, LABELS, ["O", "B-Disease", "I-Disease"], stats)
    assert s.tags == ("B-Disease", "I-Disease") and stats.skipped_empty == 1
    with pytest.raises(readers.BenchmarkDataError, match="label id 2 out of range"):
        readers.read_token_rows(path, LABELS, ["O", "B-Disease"])


def test_hf_parquet_layout_with_classlabel_metadata(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq
    names = ["O", "B-Claim", "I-Claim", "B-Premise", "I-Premise"]
    meta = {"info": {"features": {"tokens": {"feature": {"dtype": "string"}, "_type": "Sequence"},
                                  "labels": {"feature": {"names": names, "_type": "ClassLabel"},
                                             "_type": "Sequence"}}}}
    table = pa.table({"tokens": [["Drug", "X", "works", "."]], "labels": [[1, 2, 2, 0]]})
    table = table.replace_schema_metadata({"huggingface": json.dumps(meta)})
    folder = tmp_path / "abstrct" / "it"
    folder.mkdir(parents=True)
    pq.write_table(table, str(folder / "glaucoma_test-00000-of-00001.parquet"))
    [s] = readers.read_abstrct(str(tmp_path / "abstrct"), "it", "glaucoma_test")
    assert s.tags == ("B-Claim", "I-Claim", "I-Claim", "O")


def test_unknown_language_dataset_and_split():
    with pytest.raises(readers.BenchmarkDataError, match="unknown language 'de'"):
        readers.abstrct_file(benchmarks.DEFAULT_BENCHMARK_DIR, "de", "neoplasm_train")
    with pytest.raises(readers.BenchmarkDataError, match=r"unknown language 'fr'.*\['es'\]"):
        readers.tsv_file("/x", "fr", "pharmaconer", "train")
    with pytest.raises(readers.BenchmarkDataError, match="unknown dataset 'ncbi'"):
        readers.tsv_file("/x", "en", "ncbi", "train")
    with pytest.raises(readers.BenchmarkDataError, match="unknown split 'validation'"):
        readers.tsv_file("/x", "en", "e3c", "validation")
    with pytest.raises(readers.BenchmarkDataError, match="MEDMT5_BENCHMARK_DIR"):
        readers.read_iob_tsv("/nonexistent/en-e3c-train.tsv", ("ClinicalEntity",))


# ------------------------------------------------------------------ BioASQ

def test_bioasq_formats(tmp_path):
    q = {"body": "¿Qué causa la fiebre reumática?", "exact_answer": "estreptococo",
         "snippets": [{"text": "La fiebre reumática sigue a una faringitis."}, "Segundo."],
         "ideal_answer": ["Una infección por estreptococo del grupo A.", "Estreptococo."]}
    path = str(tmp_path / "test.json")
    _write(path, json.dumps({"questions": [q]}, ensure_ascii=False))
    [ex] = qa.read_bioasq(path)
    assert qa.make_example(ex) == {
        "inputs": "question: ¿Qué causa la fiebre reumática? context: La fiebre reumática "
                  "sigue a una faringitis. Segundo.",
        "targets": "Una infección por estreptococo del grupo A."}
    assert ex.answers[1] == "Estreptococo."
    # every ideal answer is a reference: predicting the second one scores 100
    row = {"answers": [a.encode() for a in ex.answers]}
    refs = [qa.postprocess(b"", example=row, is_target=True)]
    assert metrics.rouge(refs, [qa.postprocess(b"Estreptococo.")])["rouge1"] == 100.0


@pytest.mark.parametrize("row,match", [
    ({"snippets": [], "ideal_answer": "a"}, "missing field 'body'"),
    ({"body": " ", "snippets": [], "ideal_answer": "a"}, "body must be a non-empty string"),
    ({"body": "q", "snippets": [{"txt": "x"}], "ideal_answer": "a"},
     r"snippets\[0\] has no 'text'"),
    ({"body": "q", "snippets": [3], "ideal_answer": "a"}, r"snippets\[0\] must be a non-empty"),
    ({"body": "q", "snippets": [], "ideal_answer": []}, "ideal_answer must be a non-empty list"),
])
def test_bioasq_errors_name_file_and_line(tmp_path, row, match):
    path = str(tmp_path / "train.jsonl")
    _write(path, json.dumps({"body": "q", "snippets": [], "ideal_answer": "a"}) + "\n"
           + json.dumps(row) + "\n")
    with pytest.raises(readers.BenchmarkDataError, match=f"train.jsonl:2: {match}"):
        qa.read_bioasq(path)
    with pytest.raises(readers.BenchmarkDataError, match="unknown language 'pt'"):
        qa.bioasq_files(str(tmp_path), "pt", "train")


def test_word_that_reads_as_a_tag_is_reported_with_its_source():
    s = readers.Sentence(("see", "<Disease>"), ("O", "O"), "/data/en-ncbi-disease-dev.tsv:7")
    with pytest.raises(readers.BenchmarkDataError,
                       match=r"en-ncbi-disease-dev.tsv:7: .*identical to a tag"):
        benchmarks.make_example(s, ("Disease",), prefixed=False)


def test_shipped_samples_match_their_generator(tmp_path):
    import filecmp
    import subprocess
    import sys
    repo = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    subprocess.run([sys.executable, os.path.join(repo, "scripts", "make_benchmark_samples.py"),
                    "--out", str(tmp_path)], check=True, capture_output=True)
    import pyarrow.parquet as pq
    shipped = benchmarks.DEFAULT_BENCHMARK_DIR
    generated = []
    for folder, _, files in os.walk(str(tmp_path)):
        rel = os.path.relpath(folder, str(tmp_path))
        for name in files:
            new, old = os.path.join(folder, name), os.path.join(shipped, rel, name)
            generated.append(os.path.join(rel, name))
            if name.endswith(".parquet"):   # same rows, types and HF metadata
                assert pq.read_table(new).equals(pq.read_table(old)), generated[-1]
                assert pq.read_schema(new).metadata == pq.read_schema(old).metadata
            else:
                assert filecmp.cmp(new, old, shallow=False), generated[-1]
    shipped_files = [os.path.relpath(os.path.join(f, n), shipped)
                     for f, _, names in os.walk(shipped) for n in names]
    assert sorted(generated) == sorted(shipped_files)   # nothing stale left behind
