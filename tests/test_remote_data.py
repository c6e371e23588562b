"""Benchmark, BioASQ and ProMoT data read from gs:// (the GCS emulator of tests/gcs_emulator.py).

The inputs are the real-layout fixtures of tests/test_real_layouts.py (whose docstring cites
where each layout is documented: HiTZ/multilingual-abstrct's hub parquet shards, the authors'
`{lang}/{lang}-{dataset}-{split}.tsv` NER tree, HiTZ/Multilingual-BioASQ-6B's parquet, the
ProMoT hub parquet layouts), built locally, copied to gs://medmt5-test/... with
medmt5.data.paths and read there through etils.epath + gcsfs (the backend an emulator can
serve). The expected targets are the same as the local tests'.
"""
import json
import os

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import seqio
from gcs_emulator import gcs_emulator  # noqa: F401  (fixture)
from test_real_layouts import TAGS, _authors_tree, _hub_abstrct, _tsv

from medmt5.data import paths
from tasks import benchmark_readers as readers
from tasks import benchmarks, promot_readers, promot_tasks, qa  # noqa: F401 (registers promot_rte)


def _targets(name, split="test"):
    ds = seqio.get_mixture_or_task(name).source.get_dataset(split, shuffle=False)
    return [r["targets"].decode() for r in ds.as_numpy_iterator()]


@pytest.fixture(scope="module")
def gcs_benchmarks(gcs_emulator, tmp_path_factory):  # noqa: F811
    """A benchmark folder in the releases' layouts, on gs:// (and its local original)."""
    local = tmp_path_factory.mktemp("bench")
    _hub_abstrct(str(local / "abstrct" / "fr" / "mixed_test-00000-of-00001.parquet"),
                 labels_txt=False)
    for i in range(2):  # two hub shards of one split, read in order
        _hub_abstrct(str(local / "abstrct" / "es" / f"neoplasm_train-0000{i}-of-00002.parquet"))
    os.makedirs(local / "abstrct" / "en" / "glaucoma_test")  # the auto-converted branch
    _hub_abstrct(str(local / "abstrct" / "en" / "glaucoma_test" / "0000.parquet"))
    _authors_tree(str(local))
    _tsv(str(local / "ner" / "it" / "it-neoplasm-dev.tsv"), "Cisplatin B-Claim\nworks I-Claim\n")
    folder = local / "bioasq" / "es"
    folder.mkdir(parents=True)
    for split in qa.QA_SPLITS:
        pq.write_table(pa.table({
            "body": ["¿Qué es la gota?"], "snippets": [["La gota es una artritis."]],
            "ideal_answer": [["Una artritis por ácido úrico."]]}),
            str(folder / f"{split}-00000-of-00001.parquet"))
    remote = f"{gcs_emulator}/benchmarks"
    paths.copy_tree(str(local), remote)
    return remote


def test_readers_take_gs_paths(gcs_benchmarks):
    root = f"{gcs_benchmarks}/abstrct"
    got = readers.read_abstrct(root, "fr", "mixed_test")
    assert [list(s.tags) for s in got] == TAGS
    assert got[0].source == f"{root}/fr/mixed_test-00000-of-00001.parquet:row 0"
    shards = readers.abstrct_files(root, "es", "neoplasm_train")
    assert shards == [f"{root}/es/neoplasm_train-0000{i}-of-00002.parquet" for i in range(2)]
    assert len(readers.read_abstrct(root, "es", "neoplasm_train")) == 4
    assert readers.abstrct_files(root, "en", "glaucoma_test") == [
        f"{root}/en/glaucoma_test/0000.parquet"]
    [s] = readers.read_abstrct(root, "it", "neoplasm_dev", tsv_root=f"{gcs_benchmarks}/ner")
    assert s.tags == ("B-Claim", "I-Claim")
    tsv = readers.tsv_file(f"{gcs_benchmarks}/ner", "es", "diann", "train")
    assert tsv == f"{gcs_benchmarks}/ner/es/es-diann-train.tsv"
    assert readers.read_iob_tsv(tsv, readers.DATASET_LABELS["diann"])[0].tags == (
        "O", "B-Disability", "O", "O")
    with pytest.raises(readers.BenchmarkDataError,
                       match=f"no AbstRCT file for it/mixed_test under {root}/it"):
        readers.read_abstrct(root, "it", "mixed_test")
    with pytest.raises(readers.BenchmarkDataError,
                       match=f"{gcs_benchmarks}/ner/en/en-e3c-dev.tsv: no such file"):
        readers.read_iob_tsv(f"{gcs_benchmarks}/ner/en/en-e3c-dev.tsv", ("ClinicalEntity",))
    [ex] = qa.read_split(f"{gcs_benchmarks}/bioasq", "es", "test")
    assert ex.answers == ("Una artritis por ácido úrico.",)
    assert ex.source == f"{gcs_benchmarks}/bioasq/es/test-00000-of-00001.parquet:row 0"


def test_seqio_tasks_on_a_gs_benchmark_dir(gcs_benchmarks):
    try:
        assert benchmarks.register_benchmark_tasks(data_dir=gcs_benchmarks) == gcs_benchmarks
        assert _targets("e3c_it") == [
            "Un paziente con <ClinicalEntity> febbre alta </ClinicalEntity> .",
            "<ClinicalEntity> Tosse secca </ClinicalEntity> ."]
        assert _targets("diann_es", "validation") == [
            "La <Disability> ceguera </Disability> progresa ."]
        assert _targets("abstrct_mixed_fr")[1] == "Patients <Premise> tolerated it . </Premise>"
        assert _targets("bioasq_es") == ["Una artritis por ácido úrico."]
        assert benchmarks.task_files("e3c_it", "train") == [
            f"{gcs_benchmarks}/ner/it/it-e3c-train.tsv"]
        assert benchmarks.task_files("bioasq_es", "train") == [
            f"{gcs_benchmarks}/bioasq/es/train-00000-of-00001.parquet"]
        with pytest.raises(readers.BenchmarkDataError,
                           match=f"{gcs_benchmarks}/ner/fr/fr-e3c-test.tsv: no such file"):
            benchmarks.task_files("e3c_fr", "test")
    finally:
        benchmarks.register_benchmark_tasks()


def test_promot_data_dir_on_gcs(gcs_emulator, tmp_path):  # noqa: F811
    local = tmp_path / "promot"
    for split in ("train", "validation"):  # aps/super_glue refs/convert/parquet: rte/{split}/0000
        (local / "rte" / split).mkdir(parents=True)
        pq.write_table(pa.table({
            "premise": ["It rained all day.", "The shop was closed."],
            "hypothesis": ["The ground is wet.", "The shop was open."],
            "idx": pa.array([0, 1], pa.int32()), "label": pa.array([0, 1], pa.int64())}),
            str(local / "rte" / split / "0000.parquet"))
    nested = local / "wmt16_ro_en" / "ro-en"  # wmt/wmt16: ro-en/{split}-0000N-of-0000M.parquet
    nested.mkdir(parents=True)
    for i in range(2):
        pq.write_table(pa.table({"translation": [{"en": f"Hello {i}.", "ro": f"Salut {i}."}]}),
                       str(nested / f"train-0000{i}-of-00002.parquet"))
    (local / "web_questions").mkdir()
    with open(local / "web_questions" / "test.jsonl", "w", encoding="utf-8") as f:
        f.write(json.dumps({"question": "Où est né Molière ?", "answers": ["Paris"]}) + "\n")
    remote = f"{gcs_emulator}/promot"
    paths.copy_tree(str(local), remote)

    rows = promot_readers.read_split("rte", "validation", remote)
    assert [r["label"] for r in rows] == ["entailment", "not_entailment"]
    assert promot_readers.split_files(remote, "wmt16_ro_en", "train") == [
        f"{remote}/wmt16_ro_en/ro-en/train-0000{i}-of-00002.parquet" for i in range(2)]
    assert [r["source"] for r in promot_readers.read_split("wmt16_ro_en", "train", remote)] == [
        "Hello 0.", "Hello 1."]
    assert promot_readers.read_split("web_questions", "test", remote) == [
        {"question": "Où est né Molière ?", "answers": ["Paris"]}]
    with pytest.raises(promot_readers.PromotDataError,
                       match=f"{remote}/xsum/test.jsonl: no such file.*MEDMT5_PROMOT_DIR"):
        promot_readers.read_split("xsum", "test", remote)

    # The seqio task, with MEDMT5_PROMOT_DIR on gs://: same targets as the local test.
    os.environ[promot_readers.DATA_DIR_ENV] = remote
    try:
        task = seqio.get_mixture_or_task("promot_rte")
        got = list(task.get_dataset({"inputs": 64, "targets": 8}, split="validation",
                                    shuffle=False).as_numpy_iterator())
        assert [r["targets_pretokenized"].decode() for r in got] == ["true", "false"]
    finally:
        del os.environ[promot_readers.DATA_DIR_ENV]
