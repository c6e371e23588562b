"""Corpus readers (JSONL/.gz, parquet, text, bad input), the shipped sample and the vocabulary."""
import gzip
import json
import logging
import os

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import sentencepiece

from tasks import corpus_readers as cr
from tasks import vocab

LANGS = ("en", "es", "fr", "it")


def _write_jsonl(path, records):
    with open(path, "w", encoding="utf-8") as f:
        for r in records:
            f.write((r if isinstance(r, str) else json.dumps(r, ensure_ascii=False)) + "\n")
    return str(path)


# --- the shipped sample -------------------------------------------------------------------

@pytest.mark.parametrize("lang", LANGS)
def test_sample_corpus_shape(lang):
    docs = list(cr.iter_corpus(cr.SAMPLE_DATA_DIR, lang))
    assert len(docs) >= 300
    words = [len(d.split()) for d in docs]
    assert min(words) >= 30 and max(words) <= 150
    assert len(set(docs)) == len(docs)  # no duplicates
    # Varied: many distinct opening words (several styles) across the documents.
    assert len({d.split()[0] for d in docs}) >= 20


@pytest.mark.parametrize("lang,accented", [("es", "ónía"), ("fr", "éèàç"), ("it", "èàù")])
def test_sample_corpus_uses_the_language_accents(lang, accented):
    text = " ".join(cr.iter_corpus(cr.SAMPLE_DATA_DIR, lang))
    for ch in accented:
        assert ch in text, f"{lang} sample lacks {ch!r}"


def test_sample_corpus_languages_differ():
    first = {lang: next(cr.iter_corpus(cr.SAMPLE_DATA_DIR, lang)) for lang in LANGS}
    markers = {"en": " the ", "es": " de ", "fr": " de ", "it": " di "}
    for lang, text in first.items():
        assert markers[lang] in text
    assert " the " not in " ".join(cr.iter_corpus(cr.SAMPLE_DATA_DIR, "it"))


def test_default_data_dir_and_env_override(tmp_path, monkeypatch):
    monkeypatch.delenv(cr.DATA_DIR_ENV, raising=False)
    assert cr.resolve_data_dir() == cr.SAMPLE_DATA_DIR
    monkeypatch.setenv(cr.DATA_DIR_ENV, str(tmp_path))
    assert cr.resolve_data_dir() == str(tmp_path)
    assert cr.resolve_data_dir("/explicit") == "/explicit"


# --- readers -------------------------------------------------------------------------------

def test_jsonl_and_gz_read_the_same(tmp_path):
    recs = [{"text": "Primer documento médico."}, {"text": "Segundo: náuseas y mareo.", "id": 3}]
    _write_jsonl(tmp_path / "es.jsonl", recs)
    with gzip.open(tmp_path / "fr.jsonl.gz", "wt", encoding="utf-8") as f:
        f.write("\n".join(json.dumps(r, ensure_ascii=False) for r in recs) + "\n")
    assert list(cr.iter_corpus(str(tmp_path), "es")) == [r["text"] for r in recs]
    assert list(cr.iter_corpus(str(tmp_path), "fr")) == [r["text"] for r in recs]


def test_parquet_hf_layouts(tmp_path):
    os.makedirs(tmp_path / "it")
    os.makedirs(tmp_path / "data")
    pq.write_table(pa.table({"text": ["uno", None, "due"]}), tmp_path / "it" / "0000.parquet")
    pq.write_table(pa.table({"text": ["tre"]}), tmp_path / "it" / "0001.parquet")
    pq.write_table(pa.table({"text": ["one", "two"]}),
                   tmp_path / "data" / "en-00000-of-00001.parquet")
    assert list(cr.iter_corpus(str(tmp_path), "it")) == ["uno", "due", "tre"]
    assert list(cr.iter_corpus(str(tmp_path), "en")) == ["one", "two"]
    assert cr.count_documents(str(tmp_path), "it") == 3


def test_parquet_without_text_column(tmp_path):
    os.makedirs(tmp_path / "en")
    pq.write_table(pa.table({"body": ["x"]}), tmp_path / "en" / "a.parquet")
    with pytest.raises(ValueError, match=r'a\.parquet: no "text" column.*body'):
        list(cr.iter_corpus(str(tmp_path), "en"))


def test_plain_text_one_document_per_line(tmp_path, caplog):
    (tmp_path / "en.txt").write_text("first doc\n\nsecond doc\n", encoding="utf-8")
    with caplog.at_level(logging.WARNING):
        assert list(cr.iter_corpus(str(tmp_path), "en")) == ["first doc", "second doc"]
    assert "skipped 1 blank lines" in caplog.text


def test_skips_are_counted_and_logged(tmp_path, caplog):
    path = _write_jsonl(tmp_path / "en.jsonl",
                        [{"text": "a"}, "", {"text": "  "}, {"text": ""}, {"text": "b"}])
    with caplog.at_level(logging.WARNING):
        assert list(cr.read_documents(path)) == ["a", "b"]
    assert "1 blank lines" in caplog.text and "2 empty texts" in caplog.text


def test_malformed_json_names_file_and_line(tmp_path):
    path = _write_jsonl(tmp_path / "en.jsonl", [{"text": "ok"}, '{"text": "broken'])
    with pytest.raises(ValueError, match=r"en\.jsonl:2: malformed JSON"):
        list(cr.read_documents(path))


def test_missing_text_field(tmp_path):
    path = _write_jsonl(tmp_path / "en.jsonl", [{"text": "ok"}, {"body": "no text"}])
    with pytest.raises(ValueError, match=r"en\.jsonl:2: record has no \"text\" field.*body"):
        list(cr.read_documents(path))


def test_non_string_text(tmp_path):
    path = _write_jsonl(tmp_path / "en.jsonl", [{"text": ["a", "b"]}])
    with pytest.raises(ValueError, match=r"en\.jsonl:1: \"text\" is a list"):
        list(cr.read_documents(path))


def test_invalid_utf8_names_file_and_line(tmp_path):
    path = tmp_path / "fr.jsonl"
    path.write_bytes(b'{"text": "bon"}\n{"text": "mal \xe9crit"}\n')
    with pytest.raises(ValueError, match=r"fr\.jsonl:2: invalid UTF-8"):
        list(cr.read_documents(str(path)))


def test_empty_file_is_an_error(tmp_path):
    (tmp_path / "it.jsonl").write_text("", encoding="utf-8")
    with pytest.raises(ValueError, match="holds no documents"):
        list(cr.iter_corpus(str(tmp_path), "it"))


def test_unknown_language_lists_valid_ones():
    with pytest.raises(ValueError, match="'de'.*en, es, fr, it"):
        list(cr.iter_corpus(None, "de"))


def test_missing_language_file_lists_layouts(tmp_path):
    _write_jsonl(tmp_path / "en.jsonl", [{"text": "x"}])
    with pytest.raises(FileNotFoundError, match=r"'es'.*es\.jsonl.*es/\*\.parquet.*data.md"):
        cr.corpus_files(str(tmp_path), "es")
    with pytest.raises(FileNotFoundError, match="does not exist"):
        cr.corpus_files(str(tmp_path / "nope"), "en")


def test_corpus_dataset_yields_text_and_surfaces_errors(tmp_path):
    _write_jsonl(tmp_path / "en.jsonl", [{"text": "Patients with asthma."}, {"text": "Doses."}])
    ds = cr.corpus_dataset(str(tmp_path), "en")
    assert [x["text"].decode() for x in ds.as_numpy_iterator()] == [
        "Patients with asthma.", "Doses."]
    _write_jsonl(tmp_path / "es.jsonl", [{"text": "bien"}, "{oops"])
    with pytest.raises(Exception, match=r"es\.jsonl:2: malformed JSON"):
        list(cr.corpus_dataset(str(tmp_path), "es").as_numpy_iterator())


# --- vocabulary ----------------------------------------------------------------------------

def test_tiny_vocabulary_conventions():
    v = vocab.get_vocabulary("tiny")
    assert v.vocab_size == 2100
    assert (v.pad_id, v.eos_id, v.unk_id) == (0, 1, 2)
    sp = sentencepiece.SentencePieceProcessor(model_file=vocab.TINY_VOCAB_PATH)
    assert sp.get_piece_size() == 2000 and sp.bos_id() == -1
    assert (sp.pad_id(), sp.eos_id(), sp.unk_id()) == (0, 1, 2)
    assert v.decode([2099]) == "<extra_id_0>" and v.decode([2000]) == "<extra_id_99>"
    for lang in LANGS:
        text = next(cr.iter_corpus(cr.SAMPLE_DATA_DIR, lang))
        assert v.decode(v.encode(text)) == text
    # Byte fallback: text outside the corpus alphabet round-trips without <unk>.
    odd = "Ωmega 漢字 🙂"
    ids = v.encode(odd)
    assert vocab.UNK_ID not in ids and v.decode(ids) == odd
    assert vocab.get_vocabulary("tiny") is v  # cached


def test_mt5_vocabulary_path_is_configurable(monkeypatch, tmp_path):
    monkeypatch.delenv(vocab.MT5_VOCAB_ENV, raising=False)
    assert vocab.vocabulary_path("mt5") == vocab.MT5_VOCAB_DEFAULT
    monkeypatch.setenv(vocab.MT5_VOCAB_ENV, vocab.TINY_VOCAB_PATH)
    assert vocab.get_vocabulary("mt5").vocab_size == 2100  # the file the variable names
    monkeypatch.setenv(vocab.MT5_VOCAB_ENV, str(tmp_path / "missing.model"))
    with pytest.raises(FileNotFoundError, match=vocab.MT5_VOCAB_ENV):
        vocab.get_vocabulary("mt5")
    with pytest.raises(ValueError, match="tiny, mt5"):
        vocab.get_vocabulary("t5")


# --- seqio source ----------------------------------------------------------------------------

def test_corpus_source_shards_files_across_hosts(tmp_path):
    import seqio  # pylint: disable=g-import-not-at-top

    os.makedirs(tmp_path / "es")
    pq.write_table(pa.table({"text": ["a1", "a2"]}), tmp_path / "es" / "0.parquet")
    pq.write_table(pa.table({"text": ["b1"]}), tmp_path / "es" / "1.parquet")
    source = cr.CorpusDataSource(str(tmp_path), "es", validation_fraction=0)
    assert source.list_shards("train") == [str(tmp_path / "es" / "0.parquet"),
                                          str(tmp_path / "es" / "1.parquet")]
    per_host = [[x["text"].decode() for x in source.get_dataset(
        "train", shuffle=False, shard_info=seqio.ShardInfo(i, 2)).as_numpy_iterator()]
        for i in range(2)]
    assert per_host == [["a1", "a2"], ["b1"]]
    with pytest.raises(ValueError, match="not 'validation'"):
        source.list_shards("validation")


def test_corpus_source_lists_files_lazily(tmp_path):
    # nothing there yet: no error (fraction 0: the one document must not be held out)
    source = cr.CorpusDataSource(str(tmp_path), "it", validation_fraction=0)
    with pytest.raises(FileNotFoundError, match="'it'"):
        source.list_shards("train")
    _write_jsonl(tmp_path / "it.jsonl", [{"text": "Il paziente è stabile."}])
    assert [x["text"].decode() for x in source.get_dataset("train", shuffle=False)
            .as_numpy_iterator()] == ["Il paziente è stabile."]
