"""Benchmark and ProMoT readers on inputs built in the releases' real, documented layouts.

Where each layout is documented:
  * HiTZ/multilingual-abstrct on the hub (https://huggingface.co/datasets/HiTZ/multilingual-abstrct,
    file tree `{lang}/{split}-00000-of-00001.parquet`, configs en/es/fr/it, splits
    neoplasm_train/neoplasm_dev/neoplasm_test/glaucoma_test/mixed_test). Current schema
    `id`, `tokens`, `labels_txt` (IOB strings), `labels` (plain int64, order O, B-Claim,
    I-Claim, B-Premise, I-Premise, no ClassLabel names); older revisions `words` /
    `ner_tags`. The column schema as reproduced in issue 13.
  * The authors' IOB TSV release, github.com/ikergarcia1996/Sequence-Labeling-LLMs:
    Medical-MT5/multitask.sh (paths `{lang}/{lang}-{dataset}-{split}.tsv`, ids e3c, diann,
    neoplasm, ncbi-disease, bc5cdr_disease, bc5cdr_chemical, pharmaconer-bsc),
    Medical-MT5/get_results.py (`{lang}-glaucoma-test`, `{lang}-mixed-test`), dataset.py
    `read_tsv` (strip, split on whitespace into 2 or 3 fields, blank / -DOCSTART- lines end a
    sentence, IOB2 rewrite) and label_names.py (`ety` -> ClinicalEntity, `dis` -> Disability).
  * ProMoT data from the hub: aps/super_glue `rte/train-00000-of-00001.parquet` (premise,
    hypothesis, idx, label class id); wmt/wmt16 `ro-en/{split}-0000N-of-0000M.parquet`
    (`translation` struct); mandarjoshi/trivia_qa `rc.nocontext/{split}-....parquet`
    (`answer` struct with value / aliases / normalized_aliases).
"""
import json
import os

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import seqio  # noqa: E402

from tasks import benchmark_readers as readers
from tasks import benchmarks, promot_readers, seqlabel

ID_ORDER = ["O", "B-Claim", "I-Claim", "B-Premise", "I-Premise"]
TOKENS = [["Cisplatin", "improved", "survival", "."], ["Patients", "tolerated", "it", "."]]
TAGS = [["B-Claim", "I-Claim", "I-Claim", "O"], ["O", "B-Premise", "I-Premise", "I-Premise"]]


def _hub_abstrct(path, tokens=TOKENS, tags=TAGS, labels_txt=True, old=False):
    """One shard as the hub holds it (current schema, or the older words/ner_tags one)."""
    os.makedirs(os.path.dirname(path), exist_ok=True)
    ids = [[ID_ORDER.index(t) for t in s] for s in tags]
    if old:
        cols = {"words": pa.array(tokens, pa.list_(pa.string())),
                "ner_tags": pa.array(ids, pa.list_(pa.int64()))}
    else:
        cols = {"id": pa.array([f"x{i}" for i in range(len(tokens))]),
                "tokens": pa.array(tokens, pa.list_(pa.string()))}
        if labels_txt:
            cols["labels_txt"] = pa.array(tags, pa.list_(pa.string()))
        cols["labels"] = pa.array(ids, pa.list_(pa.int64()))
    pq.write_table(pa.table(cols), path)


def test_abstrct_current_schema_prefers_labels_txt(tmp_path):
    root = tmp_path / "abstrct"
    # labels (ints) deliberately disagree: labels_txt must win
    path = str(root / "es" / "neoplasm_train-00000-of-00001.parquet")
    _hub_abstrct(path)
    table = pq.read_table(path)
    table = table.set_column(table.column_names.index("labels"), "labels",
                             pa.array([[0] * 4, [0] * 4], pa.list_(pa.int64())))
    pq.write_table(table, path)
    got = readers.read_abstrct(str(root), "es", "neoplasm_train")
    assert [s.tags for s in got] == [tuple(t) for t in TAGS]
    assert got[0].source == f"{path}:row 0"


def test_abstrct_int_labels_use_the_documented_order(tmp_path):
    root = tmp_path / "abstrct"
    _hub_abstrct(str(root / "fr" / "mixed_test-00000-of-00001.parquet"), labels_txt=False)
    got = readers.read_abstrct(str(root), "fr", "mixed_test")
    assert [list(s.tags) for s in got] == TAGS
    ex = benchmarks.make_example(got[1], ("Claim", "Premise"), prefixed=False)
    assert ex["targets"] == "Patients <Premise> tolerated it . </Premise>"


@pytest.mark.parametrize("fmt", ["parquet", "jsonl"])
def test_abstrct_older_schema_words_ner_tags(tmp_path, fmt):
    root = tmp_path / "abstrct"
    if fmt == "parquet":
        _hub_abstrct(str(root / "it" / "glaucoma_test-00000-of-00001.parquet"), old=True)
    else:
        (root / "it").mkdir(parents=True)
        (root / "it" / "glaucoma_test.jsonl").write_text("".join(
            json.dumps({"words": w, "ner_tags": [ID_ORDER.index(t) for t in s]}) + "\n"
            for w, s in zip(TOKENS, TAGS)))
    got = readers.read_abstrct(str(root), "it", "glaucoma_test")
    assert [list(s.words) for s in got] == TOKENS and [list(s.tags) for s in got] == TAGS


def test_abstrct_hub_shards_are_concatenated_and_out_of_range_ids_fail(tmp_path):
    root = tmp_path / "abstrct"
    _hub_abstrct(str(root / "en" / "neoplasm_dev-00000-of-00002.parquet"), TOKENS[:1], TAGS[:1])
    _hub_abstrct(str(root / "en" / "neoplasm_dev-00001-of-00002.parquet"), TOKENS[1:], TAGS[1:])
    assert len(readers.read_abstrct(str(root), "en", "neoplasm_dev")) == 2
    bad = str(root / "en" / "neoplasm_test-00000-of-00001.parquet")
    os.makedirs(os.path.dirname(bad), exist_ok=True)
    pq.write_table(pa.table({"tokens": [["a"]], "labels": [[5]]}), bad)
    with pytest.raises(readers.BenchmarkDataError, match=r"row 0: label id 5 out of range"):
        readers.read_abstrct(str(root), "en", "neoplasm_test")


def _tsv(path, text):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w", encoding="utf-8") as f:
        f.write(text)


def test_abstrct_authors_tsv_files_from_the_ner_tree(tmp_path):
    ner = tmp_path / "ner"
    body = "Cisplatin B-Claim\nimproved I-Claim\nsurvival I-Claim\n. O\n\n"
    _tsv(str(ner / "it" / "it-neoplasm-train.tsv"), body)
    _tsv(str(ner / "it" / "it-glaucoma-test.tsv"), "-DOCSTART- O\n\n" + body)
    _tsv(str(ner / "it" / "it-mixed-test.tsv"), body.replace(" ", "\t"))
    for split in ("neoplasm_train", "glaucoma_test", "mixed_test"):
        [s] = readers.read_abstrct(str(tmp_path / "abstrct"), "it", split,
                                   tsv_root=str(ner))
        assert s.tags == ("B-Claim", "I-Claim", "I-Claim", "O")
    with pytest.raises(readers.BenchmarkDataError, match="it/it-neoplasm-dev.tsv"):
        readers.read_abstrct(str(tmp_path / "abstrct"), "it", "neoplasm_dev", tsv_root=str(ner))


def _authors_tree(root):
    """A few files of the authors' release, as their read_tsv accepts them."""
    ner = os.path.join(root, "ner")
    e3c = ("-DOCSTART- -X- O\n\nUn O\npaziente O\ncon O\nfebbre B-ety\nalta I-ety\n. O\n\n"
           "Tosse B-ety\nsecca I-ety\n. O\n")
    for split in ("train", "dev", "test"):
        _tsv(os.path.join(ner, "it", f"it-e3c-{split}.tsv"), e3c)
        _tsv(os.path.join(ner, "es", f"es-diann-{split}.tsv"),
             "La\tO\tx\nceguera\tB-dis\tx\nprogresa\tO\tx\n.\tO\tx\n")
        _tsv(os.path.join(ner, "es", f"es-pharmaconer-bsc-{split}.tsv"),
             "Se O\nadministró O\nomeprazol B-NORMALIZABLES\n. O\n")
        _tsv(os.path.join(ner, "en", f"en-bc5cdr_chemical-{split}.tsv"),
             "Lithium\tI-Chemical\ntoxicity\tO\n.\tO\n")


def test_authors_ner_tree_targets_match_the_released_models(tmp_path):
    _authors_tree(str(tmp_path))
    try:
        benchmarks.register_benchmark_tasks(data_dir=str(tmp_path))

        def targets(name, split="test"):
            ds = seqio.get_mixture_or_task(name).source.get_dataset(split, shuffle=False)
            return [r["targets"].decode() for r in ds.as_numpy_iterator()]

        assert targets("e3c_it") == [
            "Un paziente con <ClinicalEntity> febbre alta </ClinicalEntity> .",
            "<ClinicalEntity> Tosse secca </ClinicalEntity> ."]
        assert targets("diann_es", "validation") == [
            "La <Disability> ceguera </Disability> progresa ."]
        assert targets("pharmaconer_es") == [
            "Se administró <NORMALIZABLES> omeprazol </NORMALIZABLES> ."]
        assert targets("bc5cdr_chemical_en", "train") == [  # IOB1 I- opens a span
            "<Chemical> Lithium </Chemical> toxicity ."]
        inputs = [r["inputs"].decode() for r in seqio.get_mixture_or_task(
            "multitask_e3c_it").source.get_dataset("test", shuffle=False).as_numpy_iterator()]
        assert inputs[1] == "<ClinicalEntity> Tosse secca ."
    finally:
        benchmarks.register_benchmark_tasks()


@pytest.mark.parametrize("line,match", [
    ("a B-ety extra more\n", r":1: malformed line .*whitespace"),
    ("febbre B-xyz\n",
     r":1: label 'B-xyz' is not in this dataset's label set \['ClinicalEntity'\]"),
    ("febbre E-ety\n", r":1: invalid IOB tag 'E-ety'"),
])
def test_authors_tsv_errors_name_file_and_line(tmp_path, line, match):
    path = str(tmp_path / "ner" / "it" / "it-e3c-train.tsv")
    _tsv(path, line)
    with pytest.raises(readers.BenchmarkDataError, match=match) as err:
        readers.read_iob_tsv(path, readers.DATASET_LABELS["e3c"])
    assert path in str(err.value)


def test_tsv_file_names_use_the_authors_ids(tmp_path):
    assert readers.tsv_file("/d", "es", "pharmaconer", "dev") == "/d/es/es-pharmaconer-bsc-dev.tsv"
    assert readers.tsv_file("/d", "en", "bc5cdr_disease", "train") == \
        "/d/en/en-bc5cdr_disease-train.tsv"
    assert readers.verbalise("I-dis") == "I-Disability" and readers.verbalise("O") == "O"
    assert seqlabel.label_prefix(readers.DATASET_LABELS["e3c"]) == "<ClinicalEntity>"


# ------------------------------------------------------------------ ProMoT from the hub

def test_promot_rte_parquet_as_downloaded(tmp_path):
    path = tmp_path / "rte" / "validation-00000-of-00001.parquet"
    path.parent.mkdir()
    pq.write_table(pa.table({
        "premise": ["It rained all day.", "The shop was closed."],
        "hypothesis": ["The ground is wet.", "The shop was open."],
        "idx": pa.array([0, 1], pa.int32()), "label": pa.array([0, 1], pa.int64())}), str(path))
    rows = promot_readers.read_split("rte", "validation", str(tmp_path))
    assert [r["label"] for r in rows] == ["entailment", "not_entailment"]
    assert rows[1]["premise"] == "The shop was closed."


def test_promot_task_targets_from_the_auto_converted_parquet(tmp_path, monkeypatch):
    """aps/super_glue's refs/convert/parquet branch: rte/{split}/0000.parquet."""
    folder = tmp_path / "rte"
    for split in ("train", "validation"):
        (folder / split).mkdir(parents=True)
        pq.write_table(pa.table({
            "premise": ["It rained all day.", "The shop was closed."],
            "hypothesis": ["The ground is wet.", "The shop was open."],
            "idx": pa.array([0, 1], pa.int32()), "label": pa.array([0, 1], pa.int64())}),
            str(folder / split / "0000.parquet"))
    monkeypatch.setenv(promot_readers.DATA_DIR_ENV, str(tmp_path))
    task = seqio.get_mixture_or_task("promot_rte")
    rows = list(task.get_dataset({"inputs": 64, "targets": 8}, split="validation",
                                 shuffle=False).as_numpy_iterator())
    assert [r["targets_pretokenized"].decode() for r in rows] == ["true", "false"]
    assert rows[1]["inputs_pretokenized"].decode() == (
        "The shop was closed. question: The shop was open. Is it true or false? answer:")


def test_promot_nested_config_folder_and_shards_stream_in_order(tmp_path):
    folder = tmp_path / "wmt16_ro_en" / "ro-en"
    folder.mkdir(parents=True)
    for i in range(2):
        pq.write_table(pa.table({"translation": [{"en": f"Hello {i}.", "ro": f"Salut {i}."}]}),
                       str(folder / f"train-0000{i}-of-00002.parquet"))
    rows = promot_readers.read_split("wmt16_ro_en", "train", str(tmp_path))
    assert [r["source"] for r in rows] == ["Hello 0.", "Hello 1."]
    assert rows[0]["target_language"] == "Romanian"
    assert promot_readers.read_split("wmt16_ro_en", "train", str(tmp_path), limit=1) == rows[:1]
    (tmp_path / "wmt16_ro_en" / "de-en").mkdir()
    pq.write_table(pa.table({"translation": [{"en": "x", "de": "y"}]}),
                   str(tmp_path / "wmt16_ro_en" / "de-en" / "train-00000-of-00001.parquet"))
    with pytest.raises(promot_readers.PromotDataError, match="several folders"):
        promot_readers.read_split("wmt16_ro_en", "train", str(tmp_path))


def test_promot_trivia_qa_struct_and_bad_rows(tmp_path):
    folder = tmp_path / "trivia_qa" / "rc.nocontext"
    folder.mkdir(parents=True)
    answer = {"value": "Pancreas", "aliases": ["Pancreas", "The pancreas"],
              "normalized_aliases": ["pancreas"], "normalized_value": "pancreas"}
    pq.write_table(pa.table({"question": ["Which organ makes insulin?", "Bad row"],
                             "answer": [answer, None]}),
                   str(folder / "validation-00000-of-00001.parquet"))
    rows = promot_readers.iter_split("trivia_qa", "validation", str(tmp_path))
    assert next(rows)["answers"] == ["Pancreas", "The pancreas", "pancreas"]
    with pytest.raises(promot_readers.PromotDataError,
                       match=r"validation-00000-of-00001.parquet:row 1: 'answer' must be"):
        next(rows)
    with pytest.raises(promot_readers.PromotDataError, match="MEDMT5_PROMOT_DIR"):
        promot_readers.read_split("xsum", "test", str(tmp_path))


# ------------------------------------------------------------------ BioASQ from the hub

def test_bioasq_hub_parquet_with_a_gin_field_mapping(tmp_path):
    """HiTZ/Multilingual-BioASQ-6B: `{lang}/{split}-00000-of-00001.parquet` (hub file tree).
    Its rows use the BioASQ names (tests/test_bioasq_layouts.py says where that is shown);
    a copy whose columns are named otherwise is read through the `bioasq_fields` gin
    mapping, as here."""
    import gin
    from tasks import qa
    folder = tmp_path / "bioasq" / "fr"
    folder.mkdir(parents=True)
    for split in qa.QA_SPLITS:
        pq.write_table(pa.table({
            "question": ["Qu'est-ce que la goutte ?"],
            "contexts": [["La goutte est une arthrite.", "Elle est liée à l'acide urique."]],
            "answer": [["Une arthrite due à l'acide urique."]]}),
            str(folder / f"{split}-00000-of-00001.parquet"))
    path = str(folder / "test-00000-of-00001.parquet")
    with pytest.raises(readers.BenchmarkDataError,
                       match=r"row 0: missing field 'body' .*bind bioasq_fields.question"):
        qa.read_bioasq(path)
    try:
        with gin.unlock_config():
            gin.bind_parameter("bioasq_fields.question", "question")
            gin.bind_parameter("bioasq_fields.snippets", "contexts")
            gin.bind_parameter("bioasq_fields.answers", "answer")
        benchmarks.register_benchmark_tasks(data_dir=str(tmp_path))
        [row] = seqio.get_mixture_or_task("bioasq_fr").source.get_dataset(
            "test", shuffle=False).as_numpy_iterator()
        assert row["inputs"].decode() == (
            "question: Qu'est-ce que la goutte ? context: La "
            "goutte est une arthrite. Elle est liée à l'acide urique.")
        assert row["targets"].decode() == "Une arthrite due à l'acide urique."
    finally:
        with gin.unlock_config():
            for role, name in qa.DEFAULT_FIELDS.items():
                gin.bind_parameter(f"bioasq_fields.{role}", name)
        benchmarks.register_benchmark_tasks()
    [ex] = qa.read_bioasq(path, {"question": "question", "snippets": "contexts",
                                 "answers": "answer"})
    assert ex.snippets[1] == "Elle est liée à l'acide urique."
