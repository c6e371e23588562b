"""The BioASQ reader (tasks/qa_readers.py) on files built in the real releases' layouts.

Where each layout is documented:
  * The official BioASQ task B JSON: one object `{"questions": [...]}`; per question `body`,
    `documents`, `triples`, `ideal_answer` (list of str), `concepts`, `type`, `id` (24 hex
    digits), `snippets` (objects with `offsetInBeginSection`, `offsetInEndSection`, `text`,
    `beginSection`, `document`, `endSection`) and `exact_answer` (yesno: "yes"/"no"; factoid:
    `[[synonyms]]`; list: `[[item, synonyms...], ...]`; absent for summary questions). Checked
    against a copy of the real golden file github.com/Neelectric/BioLlama,
    benchmarks/BioASQ/Task5BGoldenEnriched/5B1_golden.json (keys in that order, indent 2 with
    ", " separators, ASCII escapes), and BigBio's loader github.com/bigscience-workshop/
    biomedical, bigbio/hub/hub_repos/bioasq_task_b/bioasq_task_b.py (file names
    BioASQ-training6b/BioASQ-trainingDataset6b.json and Task6BGoldenEnriched/*.json; a bare
    string `ideal_answer` and questions without `snippets` in older files).
  * HiTZ/Multilingual-BioASQ-6B on the hub: `{lang}/{split}-00000-of-00001.parquet`, splits
    train and test (file tree https://huggingface.co/datasets/HiTZ/Multilingual-BioASQ-6B/
    tree/main/en); rows carry the BioASQ field names (`body`, `type`, `snippets`,
    `exact_answer`, `ideal_answer`, as read by github.com/Neelectric/BioLlamaV2,
    src/load_benchmark.py). The parquet column types are not documented anywhere we could
    read: the fixture stores the JSON structure as Arrow infers it and leaves out
    `exact_answer` (its type differs per question type, which one Arrow column cannot hold).

The questions below are written for this test (not BioASQ text).
"""
import json
import logging
import os

import no_tf
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from tasks import benchmark_readers as readers
from tasks import qa

PUBMED = "http://www.ncbi.nlm.nih.gov/pubmed/"


def _snippet(pmid, text, section="abstract", start=0):
    return {"offsetInBeginSection": start, "offsetInEndSection": start + len(text),
            "text": text, "beginSection": section, "document": PUBMED + pmid,
            "endSection": section}


def _question(qid, qtype, body, ideal, snippets, exact=None):
    """One question with the keys in the order of the real files."""
    q = {"body": body, "documents": sorted({s["document"] for s in snippets}),
         "triples": [], "ideal_answer": ideal, "concepts": [], "type": qtype, "id": qid,
         "snippets": snippets}
    if exact is not None:  # summary questions have no exact_answer
        q["exact_answer"] = exact
    return q


QUESTIONS = [
    _question("5a1b2c3d4e5f60718293a4b5", "summary",
              "What is the role of the HTT gene in Huntington disease?",
              ["Expanded CAG repeats in HTT cause Huntington disease."],
              [_snippet("11111111", "CAG repeat expansion in HTT causes the disease.",
                        "title"),
               _snippet("11111111", "The mutant huntingtin protein is toxic to neurons.",
                        start=120)]),
    _question("5a1b2c3d4e5f60718293a4b6", "factoid",
              "Which protein is the main component of Lewy bodies?",
              ["Lewy bodies are mostly alpha-synuclein.", "Alpha-synuclein."],
              [_snippet("22222222", "Lewy bodies consist mainly of \u03b1-synuclein fibrils.")],
              [["alpha-synuclein", "\u03b1-synuclein"]]),
    _question("5a1b2c3d4e5f60718293a4b7", "list",
              "Which drugs are vitamin K antagonists?",
              ["Warfarin and acenocoumarol are vitamin K antagonists."],
              [_snippet("33333333", "Warfarin and acenocoumarol antagonise vitamin K.")],
              [["warfarin"], ["acenocoumarol", "acenocoumarin"]]),
    _question("5a1b2c3d4e5f60718293a4b8", "yesno", "Is metformin used in type 2 diabetes?",
              ["Yes, metformin is a first-line drug for type 2 diabetes."],
              [_snippet("44444444", "Metformin is first-line therapy in type 2 diabetes.")],
              "yes"),
]


def _official_json(path, questions):
    """Written as the BioASQ files are: indent 2, ', ' separators, ASCII escapes."""
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w", encoding="utf-8") as f:
        json.dump({"questions": questions}, f, indent=2, separators=(", ", ": "))


def _hub_parquet(path, questions, snippets_as_text=False):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    rows = []
    for q in questions:
        row = {k: v for k, v in q.items() if k not in ("exact_answer", "triples", "concepts")}
        if snippets_as_text:
            row["snippets"] = [s["text"] for s in q["snippets"]]
        rows.append(row)
    pq.write_table(pa.Table.from_pylist(rows), path)


def test_reader_imports_without_tensorflow():
    assert no_tf.imports_without_tensorflow("tasks.qa_readers")


def test_official_release_file_names_and_fields(tmp_path):
    """The official 6B download under bioasq/en: the training file and golden batches."""
    en = tmp_path / "bioasq" / "en"
    _official_json(str(en / "BioASQ-training6b" / "BioASQ-trainingDataset6b.json"), QUESTIONS)
    _official_json(str(en / "Task6BGoldenEnriched" / "6B2_golden.json"), QUESTIONS[2:])
    _official_json(str(en / "Task6BGoldenEnriched" / "6B1_golden.json"), QUESTIONS[:2])
    root = str(tmp_path / "bioasq")
    assert [os.path.basename(p) for p in qa.bioasq_files(root, "en", "test")] == [
        "6B1_golden.json", "6B2_golden.json"]
    train = qa.read_split(root, "en", "train")
    test = qa.read_split(root, "en", "test")   # the batches, in order
    assert [(e.qid, e.question, e.snippets, e.answers) for e in test] == [
        (e.qid, e.question, e.snippets, e.answers) for e in train]
    assert [(e.qid, e.qtype) for e in train] == [(q["id"], q["type"]) for q in QUESTIONS]
    summary, factoid = train[0], train[1]
    assert summary.source.endswith("BioASQ-trainingDataset6b.json: question 0")
    assert qa.make_example(summary) == {
        "inputs": "question: What is the role of the HTT gene in Huntington disease? context: "
                  "CAG repeat expansion in HTT causes the disease. The mutant huntingtin "
                  "protein is toxic to neurons.",
        "targets": "Expanded CAG repeats in HTT cause Huntington disease."}
    assert factoid.answers == ("Lewy bodies are mostly alpha-synuclein.", "Alpha-synuclein.")
    assert factoid.snippets == ("Lewy bodies consist mainly of \u03b1-synuclein fibrils.",)


def test_hub_parquet_with_the_bioasq_field_names(tmp_path):
    """HiTZ/Multilingual-BioASQ-6B as downloaded, read with the default names (no gin)."""
    import seqio

    from tasks import benchmarks
    es = tmp_path / "bioasq" / "es"
    for split in qa.QA_SPLITS:
        _hub_parquet(str(es / f"{split}-00000-of-00001.parquet"), QUESTIONS)
    [_, _, _, yesno] = qa.read_split(str(tmp_path / "bioasq"), "es", "test")
    assert yesno.source.endswith("test-00000-of-00001.parquet:row 3")
    assert (yesno.qid, yesno.qtype) == ("5a1b2c3d4e5f60718293a4b8", "yesno")
    try:
        benchmarks.register_benchmark_tasks(data_dir=str(tmp_path))
        rows = list(seqio.get_mixture_or_task("bioasq_es").source.get_dataset(
            "test", shuffle=False).as_numpy_iterator())
    finally:
        benchmarks.register_benchmark_tasks()
    assert [r["targets"].decode() for r in rows] == [q["ideal_answer"][0] for q in QUESTIONS]
    assert [a.decode() for a in rows[1]["answers"]] == QUESTIONS[1]["ideal_answer"]
    assert rows[3]["inputs"].decode() == (
        "question: Is metformin used in type 2 diabetes? context: Metformin is first-line "
        "therapy in type 2 diabetes.")
    # snippets stored as plain strings read the same
    path = str(tmp_path / "flat" / "test-00000-of-00001.parquet")
    _hub_parquet(path, QUESTIONS, snippets_as_text=True)
    assert qa.read_bioasq(path)[0].snippets == qa.read_split(
        str(tmp_path / "bioasq"), "es", "test")[0].snippets


def test_older_files_and_exports(tmp_path, caplog):
    """A bare-string ideal_answer and a question without snippets (older training files);
    a `.json` written by `datasets`' to_json (one object per line)."""
    old = dict(QUESTIONS[3], ideal_answer="Yes.")
    del old["snippets"]
    path = str(tmp_path / "train.json")
    _official_json(path, [QUESTIONS[0], old])
    with caplog.at_level(logging.WARNING):
        _, ex = qa.read_bioasq(path)
    assert (ex.snippets, ex.answers) == ((), ("Yes.",))
    assert "1 of 2 questions have no snippets" in caplog.text
    lines = tmp_path / "test.json"
    lines.write_text("".join(json.dumps(q) + "\n" for q in QUESTIONS), encoding="utf-8")
    assert [e.qid for e in qa.read_bioasq(str(lines))] == [q["id"] for q in QUESTIONS]


def _broken(**change):
    q = json.loads(json.dumps(QUESTIONS[1]))
    for key, value in change.items():
        if value is None:
            del q[key]
        else:
            q[key] = value
    return q


@pytest.mark.parametrize("question,match", [
    (_broken(body=None), r"question 1 \(id 5a1b2c3d4e5f60718293a4b6\): missing field 'body' "
                         r"\(has \['concepts', 'documents', .*bioasq_fields.question"),
    (_broken(ideal_answer=None), r"question 1 \(id .*\): missing field 'ideal_answer'"),
    (_broken(ideal_answer=[]), r"question 1 \(id .*\): ideal_answer must be a non-empty list"),
    (_broken(ideal_answer=["ok", ""]),
     r"question 1 \(id .*\): ideal_answer\[1\] must be a non-empty string"),
    (_broken(snippets=[{"document": PUBMED + "1"}]),
     r"question 1 \(id .*\): snippets\[0\] has no 'text' \(has \['document'\]\)"),
    (_broken(snippets={"text": "x"}), r"question 1 \(id .*\): snippets must be a list, got dict"),
    (_broken(type=["summary"]), r"question 1 \(id .*\): 'type' must be a string"),
    (_broken(id=7), r"question 1: 'id' must be a string, got 7"),
    ("not a question", r"question 1: expected a JSON object, got str"),
])
def test_errors_name_file_question_and_field(tmp_path, question, match):
    path = str(tmp_path / "6B1_golden.json")
    _official_json(path, [QUESTIONS[0], question])
    with pytest.raises(readers.BenchmarkDataError, match="6B1_golden.json: " + match):
        qa.read_bioasq(path)


def test_file_level_errors(tmp_path):
    no_snippets = tmp_path / "a" / "test-00000-of-00001.parquet"
    _hub_parquet(str(no_snippets), [_broken(snippets=None)])
    with pytest.raises(readers.BenchmarkDataError,
                       match=r"parquet:row 0 \(id .*\): missing field 'snippets'.*"
                             r"bind bioasq_fields.snippets"):
        qa.read_bioasq(str(no_snippets))
    other = tmp_path / "train.json"
    other.write_text(json.dumps({"data": QUESTIONS}), encoding="utf-8")
    with pytest.raises(readers.BenchmarkDataError,
                       match=r"train.json: expected the BioASQ layout .*keys \['data'\]"):
        qa.read_bioasq(str(other))
    with pytest.raises(readers.BenchmarkDataError,
                       match=r"no BioASQ file for fr/test .*test-00000-of-00001.parquet.*"
                             r"6B\*_golden.json"):
        qa.bioasq_files(str(tmp_path), "fr", "test")
    with pytest.raises(readers.BenchmarkDataError, match="unknown split 'dev'"):
        qa.bioasq_files(str(tmp_path), "fr", "dev")
