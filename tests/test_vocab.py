"""Vocabularies in the real layouts: mT5's built-in sentinels, seqio's appended ones, a Hugging
Face tokenizer's added tokens; span corruption's sentinel ids; the fit check; the vocabulary
identity stored with checkpoints and prompts.

Fixture layouts and where they are documented:
- mT5 style (`mt5_folder`): a sentencepiece model whose LAST 100 pieces are `▁<extra_id_99>`
  .. `▁<extra_id_0>` (<extra_id_0> the last id), as mc4.250000.100extra/sentencepiece.model
  (== spiece.model of google/mt5-*): 250,100 pieces with `IdToPiece(250099) ==
  '▁<extra_id_0>'` and `IdToPiece(250000) == '▁<extra_id_99>'` (huggingface/transformers
  PR #22626; google-research/multilingual-t5 issues #24 and #107: "the extra 100 ids ... come
  already included"), loaded with extra_ids=0 (multilingual_t5/tasks.py
  `SentencePieceVocabulary(DEFAULT_SPM_PATH)`). Built here from the shipped tiny model (2,000
  pieces) + 50 user pieces + the 100 sentinels appended to the model proto, the way seqio 0.0.20
  appends its own (`_load_model_internal`: USER_DEFINED pieces `▁<extra_id_{i}>`, i = 99..0):
  2,150 pieces, sentinel i = 2149 - i, the miniature of 250099 - i.
- Hugging Face added tokens (`added_tokens.json` {content: id}, tokenizer.json
  "added_tokens": [{"id", "content", ...}], transformers' tokenization_utils_base
  ADDED_TOKENS_FILE / FULL_TOKENIZER_FILE): tag tokens right after the pieces.
"""
import json
import logging
import os

import numpy as np
import pytest
import seqio
import tensorflow as tf
from sentencepiece import sentencepiece_model_pb2 as pb

from medmt5.data import pipeline as data_lib
from medmt5.data import vocab_record
from tasks import span_corruption as sc
from tasks import vocab

FILLER = 50
PIECES = 2000 + FILLER + 100  # tiny pieces + filler + built-in sentinels
TOP = PIECES - 1              # <extra_id_0>, like mT5's 250099
TAGS = {"<Disease>": PIECES, "</Disease>": PIECES + 1, "<Chemical>": PIECES + 2,
        "</Chemical>": PIECES + 3}


def _model_proto(sentinels=range(99, -1, -1), filler=FILLER):
    with open(vocab.TINY_VOCAB_PATH, "rb") as f:
        proto = pb.ModelProto.FromString(f.read())
    for k in range(filler):
        proto.pieces.add(piece=f"<filler_{k}>", score=0.0,
                         type=pb.ModelProto.SentencePiece.USER_DEFINED)
    for i in sentinels:
        proto.pieces.add(piece=f"▁<extra_id_{i}>", score=0.0,
                         type=pb.ModelProto.SentencePiece.USER_DEFINED)
    return proto


@pytest.fixture(scope="module")
def mt5_folder(tmp_path_factory):
    folder = tmp_path_factory.mktemp("mt5_style")
    (folder / vocab.SPIECE_FILE).write_bytes(_model_proto().SerializeToString())
    return str(folder)


@pytest.fixture(scope="module")
def tagged_folder(tmp_path_factory, mt5_folder):
    """A fine-tuned release's tokenizer folder: the same spiece.model plus added tag tokens,
    two in added_tokens.json and two in tokenizer.json (with the model's own <pad>/</s>/<unk>
    entries that tokenizer.json lists as added tokens too)."""
    folder = tmp_path_factory.mktemp("tagged")
    with open(os.path.join(mt5_folder, vocab.SPIECE_FILE), "rb") as f:
        (folder / vocab.SPIECE_FILE).write_bytes(f.read())
    items = list(TAGS.items())
    (folder / vocab.ADDED_TOKENS_FILE).write_text(json.dumps(dict(items[:2])))
    added = [{"id": i, "content": c, "single_word": False, "lstrip": False, "rstrip": False,
              "normalized": False, "special": True}
             for c, i in [("<pad>", 0), ("</s>", 1), ("<unk>", 2)] + items[2:]]
    (folder / vocab.TOKENIZER_FILE).write_text(json.dumps({"version": "1.0",
                                                           "added_tokens": added}))
    return str(folder)


# ---- sentinels: built-in vs appended, read from the file -----------------------------------


def test_builtin_sentinels_are_read_from_the_file(mt5_folder):
    v = vocab.load_vocabulary(os.path.join(mt5_folder, vocab.SPIECE_FILE))
    assert v.extra_ids == 0 and v.vocab_size == PIECES
    assert [vocab.sentinel_id(v, i) for i in (0, 1, 99)] == [TOP, TOP - 1, TOP - 99]
    assert v.tokenizer.IdToPiece(TOP) == "▁<extra_id_0>"
    assert v.tokenizer.IdToPiece(TOP - 99) == "▁<extra_id_99>"
    assert TOP in v.encode("le patient <extra_id_0> va bien")
    ident = vocab.vocabulary_identity(v)
    assert ident["sentinels"] == "built-in" and ident["pieces"] == PIECES
    # What the old code did (extra_ids=100 on mT5's file) fails inside seqio exactly as the
    # issue reports; detection from the file avoids it.
    with pytest.raises(Exception, match="extra_id_99> is already defined"):
        _ = seqio.SentencePieceVocabulary(os.path.join(mt5_folder, vocab.SPIECE_FILE),
                                          extra_ids=100).vocab_size


def test_tiny_vocabulary_keeps_seqio_appended_sentinels():
    v = vocab.get_vocabulary("tiny")
    assert v.extra_ids == 100 and v.vocab_size == 2100
    assert vocab.sentinel_id(v, 0) == 2099 and vocab.sentinel_id(v, 99) == 2000
    assert vocab.vocabulary_identity(v)["sentinels"] == "appended"


def test_mt5_name_reads_the_file_it_points_to(monkeypatch, mt5_folder):
    monkeypatch.setenv(vocab.MT5_VOCAB_ENV, os.path.join(mt5_folder, vocab.SPIECE_FILE))
    v = vocab.get_vocabulary("mt5")
    assert (v.extra_ids, v.vocab_size, vocab.sentinel_id(v, 0)) == (0, PIECES, TOP)
    monkeypatch.setenv(vocab.MT5_VOCAB_ENV, mt5_folder)  # a folder with spiece.model works too
    assert vocab.get_vocabulary("mt5").vocab_size == PIECES


@pytest.mark.parametrize("sentinels, why", [
    (range(9, -1, -1), "10 of the 100"),                       # a partial set
    (range(100), "▁<extra_id_0>"),                             # <extra_id_0> first, not last
])
def test_sentinel_layout_that_is_neither_is_an_error(tmp_path, sentinels, why):
    path = tmp_path / "odd.model"
    path.write_bytes(_model_proto(sentinels).SerializeToString())
    with pytest.raises(ValueError, match=r"odd\.model.*sentinel") as e:
        vocab.load_vocabulary(str(path))
    assert why in str(e.value)


def test_span_corruption_uses_the_vocabularys_own_sentinels(tagged_folder):
    """Built-in sentinels with added tokens above them: <extra_id_0> is TOP (2149), not
    vocab_size - 1 (2153), as mT5's 250099 under a 250,122-id tokenizer."""
    v = vocab.load_vocabulary(tagged_folder)
    assert v.vocab_size == PIECES + len(TAGS)
    features = {"inputs": seqio.Feature(v), "targets": seqio.Feature(v)}
    docs = [np.arange(3 + k, 3 + k + 60, dtype=np.int32) for k in range(4)]
    ds = tf.data.Dataset.from_generator(lambda: ({"targets": d} for d in docs),
                                        output_signature={"targets": tf.TensorSpec([None],
                                                                                   tf.int32)})
    with seqio.utils.map_seed_manager(3):
        out = list(sc.span_corruption(ds, {"inputs": 64, "targets": None}, features,
                                      docs_per_concat=4).as_numpy_iterator())
    assert out
    for ex in out:
        for key in ("inputs", "targets"):
            sentinels = ex[key][ex[key] >= 2000]
            np.testing.assert_array_equal(sentinels, TOP - np.arange(len(sentinels)))
        assert ex["targets"][0] == TOP  # the first noise span gets <extra_id_0>
        assert v.decode([int(ex["targets"][0])]) == "<extra_id_0>"


# ---- added tokens ------------------------------------------------------------------------


def test_added_tokens_encode_and_decode(tagged_folder):
    v = vocab.load_vocabulary(tagged_folder)
    assert isinstance(v, seqio.Vocabulary) and isinstance(v, vocab.AddedTokensVocabulary)
    assert v.added_tokens == TAGS
    text = ("<Disease> Patient with dilated <Disease> cardiomyopathy </Disease> after "
            "<Chemical> aspirin </Chemical> .")
    ids = list(v.encode(text))
    assert [i for i in ids if i >= PIECES] == [TAGS[t] for t in (
        "<Disease>", "<Disease>", "</Disease>", "<Chemical>", "</Chemical>")]
    assert v.decode(ids) == text
    assert v.decode(ids + [1, TAGS["<Disease>"]]) == text  # stops at EOS like seqio
    tf_ids = v.encode_tf(tf.constant(text)).numpy().tolist()
    assert tf_ids == ids
    batch = v.encode_tf(tf.constant([text, "dilated </Disease>"]))
    assert batch.to_list()[1] == list(v.encode("dilated </Disease>"))
    assert v.decode_tf(tf.constant(ids)).numpy().decode() == text
    # Equal to a fresh copy (seqio compares features by value), picklable for gin.
    import pickle
    fresh = vocab.AddedTokensVocabulary(v.sentencepiece_model_file,
                                        vocab.read_added_tokens(tagged_folder))
    assert v == fresh and pickle.loads(pickle.dumps(v)).encode(text) == ids
    # Sentencepiece text without tags is unchanged by the added tokens.
    plain = vocab.load_vocabulary(os.path.join(tagged_folder, vocab.SPIECE_FILE))
    assert list(v.encode("dilated cardiomyopathy")) == list(plain.encode("dilated cardiomyopathy"))


def test_added_tokens_inconsistent_files_are_errors(tmp_path, mt5_folder):
    with open(os.path.join(mt5_folder, vocab.SPIECE_FILE), "rb") as f:
        model = f.read()
    gap = tmp_path / "gap"
    gap.mkdir()
    (gap / vocab.SPIECE_FILE).write_bytes(model)
    (gap / vocab.ADDED_TOKENS_FILE).write_text(json.dumps({"<Disease>": PIECES + 5}))
    with pytest.raises(ValueError, match=r"without gaps.*added_tokens\.json"):
        vocab.load_vocabulary(str(gap))
    clash = tmp_path / "clash"
    clash.mkdir()
    (clash / vocab.SPIECE_FILE).write_bytes(model)
    (clash / vocab.ADDED_TOKENS_FILE).write_text(json.dumps({"<Disease>": PIECES}))
    (clash / vocab.TOKENIZER_FILE).write_text(json.dumps(
        {"added_tokens": [{"id": PIECES + 1, "content": "<Disease>"}]}))
    with pytest.raises(ValueError, match=r"'<Disease>' has id 2150 in .*added_tokens\.json but "
                                         r"2151 in .*tokenizer\.json"):
        vocab.load_vocabulary(str(clash))


# ---- the checkpoint's own vocabulary -------------------------------------------------------


def test_checkpoint_vocabulary_is_the_default(tmp_path, tagged_folder):
    assert vocab.resolve_vocabulary(None, tagged_folder) == tagged_folder
    assert vocab.resolve_vocabulary("mt5", tagged_folder) == tagged_folder
    assert vocab.get_vocabulary(None).vocab_size == PIECES + len(TAGS)  # what was resolved
    step_dir = os.path.join(tagged_folder, "checkpoints", "7")  # MODEL_DIR/checkpoints/<step>
    assert vocab.checkpoint_vocabulary_dir(step_dir) == tagged_folder
    # An explicit VOCABULARY still wins; without a checkpoint vocabulary None means tiny.
    assert vocab.resolve_vocabulary("tiny", tagged_folder) == "tiny"
    assert vocab.resolve_vocabulary(None, str(tmp_path)) == "tiny"
    assert vocab.resolve_vocabulary("mt5", str(tmp_path)) == "mt5"
    assert vocab.get_vocabulary(None).vocab_size == 2100
    # A checkpoint carrying a copy of the tiny vocabulary keeps the name "tiny".
    tiny_ckpt = tmp_path / "tiny_run"
    tiny_ckpt.mkdir()
    with open(vocab.TINY_VOCAB_PATH, "rb") as f:
        (tiny_ckpt / vocab.SPIECE_FILE).write_bytes(f.read())
    assert vocab.resolve_vocabulary(None, str(tiny_ckpt)) == "tiny"
    with pytest.raises(ValueError, match="tiny, mt5"):
        vocab.resolve_vocabulary("t5", None)


# ---- fit check and identity ------------------------------------------------------------------


def _register(name, v):
    seqio.TaskRegistry.remove(name)
    seqio.TaskRegistry.add(
        name, source=seqio.FunctionDataSource(
            lambda split, shuffle_files, seed=None: tf.data.Dataset.from_tensors(
                {"inputs": "a", "targets": "b"}), splits=["train"]),
        preprocessors=[seqio.preprocessors.tokenize],
        output_features={"inputs": seqio.Feature(v), "targets": seqio.Feature(v)})
    return name


def test_fit_check_names_both_sizes(tagged_folder):
    name = _register("test_vocab_tagged", vocab.load_vocabulary(tagged_folder))
    data_lib.check_vocabulary(name, 2176)  # 2,154 ids fit in 2,176 rows
    with pytest.raises(ValueError, match=r"2,154 ids.*vocab_size=2,150.*does not fit.*"
                                         r"T5Config\.vocab_size >= 2,154"):
        data_lib.check_vocabulary(name, PIECES)


def test_training_run_records_and_checks_the_vocabulary(tmp_path, caplog, tagged_folder,
                                                        mt5_folder):
    tagged = _register("test_vocab_tagged", vocab.load_vocabulary(tagged_folder))
    plain = _register("test_vocab_plain", vocab.load_vocabulary(mt5_folder))
    model_dir = str(tmp_path / "run")
    ident = vocab_record.check_training_run(model_dir, tagged)
    record = vocab_record.read_record(model_dir)
    assert record == ident and record["vocab_size"] == PIECES + len(TAGS)
    # MODEL_DIR carries its vocabulary: a later run on it reads the same one by default.
    assert vocab.resolve_vocabulary("mt5", model_dir) == model_dir
    assert vocab.vocabulary_identity(vocab.load_vocabulary(model_dir))["sha256"] == ident["sha256"]
    # Resuming with another vocabulary stops, naming both hashes and the override.
    other = vocab.vocabulary_identity(vocab.load_vocabulary(mt5_folder))
    with pytest.raises(vocab_record.VocabularyMismatch) as e:
        vocab_record.check_training_run(model_dir, plain)
    msg = str(e.value)
    assert ident["sha256"][:16] in msg and other["sha256"][:16] in msg
    assert "ALLOW_VOCABULARY_CHANGE=True" in msg and "vocab.json" in msg
    # Initialising from it in a new MODEL_DIR stops too; the override lets it through.
    with pytest.raises(vocab_record.VocabularyMismatch, match="INITIAL_CHECKPOINT_PATH"):
        vocab_record.check_training_run(str(tmp_path / "new"), plain, model_dir)
    with caplog.at_level(logging.WARNING, logger="medmt5"):
        vocab_record.check_training_run(str(tmp_path / "new"), plain, model_dir,
                                        allow_change=True)
    assert "ALLOW_VOCABULARY_CHANGE" in caplog.text
    assert vocab_record.read_record(str(tmp_path / "new"))["sha256"] == other["sha256"]
    # An old checkpoint without a record: a warning, not a failure.
    old = tmp_path / "old"
    old.mkdir()
    (old / "model_config.json").write_text("{}")
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="medmt5"):
        vocab_record.check_training_run(str(tmp_path / "new2"), plain, str(old))
    assert "no vocabulary record" in caplog.text


def test_prompt_records_follow_the_prompt(tmp_path, tagged_folder, mt5_folder):
    """A stage-1 prompt (MODEL_DIR/prompts/x.npy) and an exported one (DIR/prompt.npy + DIR/
    vocab.json) both lead to their run's record; stage 2 with another vocabulary stops."""
    tagged = _register("test_vocab_tagged", vocab.load_vocabulary(tagged_folder))
    plain = _register("test_vocab_plain", vocab.load_vocabulary(mt5_folder))
    stage1 = str(tmp_path / "stage1")
    ident = vocab_record.check_training_run(stage1, tagged)
    os.makedirs(os.path.join(stage1, "prompts"))
    prompt = os.path.join(stage1, "prompts", "prompt_best.npy")
    np.save(prompt, np.zeros((4, 8), np.float32))
    assert vocab_record.checkpoint_record(prompt)[0] == ident
    from prompt_tuning import export

    out = str(tmp_path / "exported")
    export.export(prompt, out, "npy")
    assert json.load(open(os.path.join(out, vocab_record.RECORD_FILE))) == ident
    exported = os.path.join(out, export.NPY_NAME)
    vocab_record.check_training_run(str(tmp_path / "stage2"), tagged, None, [exported])
    with pytest.raises(vocab_record.VocabularyMismatch, match="PROMPT_FILE"):
        vocab_record.check_training_run(str(tmp_path / "stage2b"), plain, None, [exported])


def test_train_stops_before_resuming_with_another_vocabulary(tmp_path, mt5_folder):
    """medmt5.cli.train.train itself runs the check (before any model is built)."""
    from medmt5.cli.train import train
    from medmt5.model.config import T5Config
    from medmt5.run.configs import DataConfig

    model_dir = str(tmp_path / "run")
    vocab_record.write_record(model_dir, vocab.vocabulary_identity(
        vocab.load_vocabulary(mt5_folder)))
    cfg = T5Config(vocab_size=2176, d_model=32, d_kv=16, d_ff=64, num_heads=2,
                   num_encoder_layers=1, num_decoder_layers=1)
    with pytest.raises(vocab_record.VocabularyMismatch, match=r"MODEL_DIR .*run"):
        train(model_dir=model_dir, model_config=cfg, train_steps=1,
              data=DataConfig(mixture_or_task_name="medmt5_pretrain",
                              task_feature_lengths={"inputs": 32, "targets": 8}, batch_size=8))


def test_hub_id_checkpoint_supplies_its_vocabulary(tmp_path, monkeypatch, tagged_folder):
    """INITIAL_CHECKPOINT_PATH='google/mt5-small' with HF_HUB_OFFLINE=1: the snapshot's own
    spiece.model (+ added tokens) is the run's vocabulary. The cache is built by hand in
    huggingface_hub's layout (models--{org}--{name}/refs/main -> snapshots/<sha>/<files>;
    https://huggingface.co/docs/huggingface_hub/guides/manage-cache)."""
    sha = "0123456789abcdef0123456789abcdef01234567"
    repo = tmp_path / "hub" / "models--google--mt5-small"
    snapshot = repo / "snapshots" / sha
    snapshot.mkdir(parents=True)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(sha)
    (snapshot / "config.json").write_text(json.dumps({"model_type": "mt5"}))
    for name in (vocab.SPIECE_FILE, vocab.ADDED_TOKENS_FILE, vocab.TOKENIZER_FILE):
        with open(os.path.join(tagged_folder, name), "rb") as f:
            (snapshot / name).write_bytes(f.read())
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hub"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.chdir(tmp_path)
    resolved = vocab.resolve_vocabulary("mt5", "google/mt5-small")
    assert os.path.realpath(resolved) == os.path.realpath(snapshot)
    v = vocab.get_vocabulary("mt5")  # the macro value now names the checkpoint's vocabulary
    assert v.vocab_size == PIECES + len(TAGS) and vocab.sentinel_id(v, 0) == TOP


def test_scoring_run_checks_fit_and_identity(tmp_path, tagged_folder, mt5_folder):
    """eval/infer start-up (medmt5.cli.eval.evaluate, medmt5.cli.infer.infer call this)."""
    tagged = _register("test_vocab_tagged", vocab.load_vocabulary(tagged_folder))
    plain = _register("test_vocab_plain", vocab.load_vocabulary(mt5_folder))
    ckpt = str(tmp_path / "ckpt")
    vocab_record.check_training_run(ckpt, tagged)
    vocab_record.check_scoring_run(ckpt, [tagged], 2176)
    with pytest.raises(ValueError, match=r"2,154 ids.*vocab_size=2,152"):
        vocab_record.check_scoring_run(ckpt, [tagged], 2152)
    with pytest.raises(vocab_record.VocabularyMismatch, match="CHECKPOINT_PATH"):
        vocab_record.check_scoring_run(ckpt, [plain], 2176)
    vocab_record.check_scoring_run(ckpt, [plain], 2176, allow_change=True)
    # A Hugging Face folder without a record is checked against its own spiece.model.
    with pytest.raises(vocab_record.VocabularyMismatch, match=r"spiece\.model"):
        vocab_record.check_scoring_run(tagged_folder, [plain], 2176)


def test_added_token_ids_match_transformers(tmp_path, tagged_folder):
    """The same folder through transformers' T5Tokenizer (extra_ids=0, as mT5's
    tokenizer_config) gives the same ids: added tags, built-in sentinels, plain text.
    (Decoding differs on purpose: transformers 5 glues "dilated<Disease>"; we keep the
    space, which is the authors' target format "dilated <Disease> cardiomyopathy".)"""
    transformers = pytest.importorskip("transformers")
    (tmp_path / "tok").mkdir()
    for name in (vocab.SPIECE_FILE, vocab.ADDED_TOKENS_FILE):
        with open(os.path.join(tagged_folder, name), "rb") as f:
            (tmp_path / "tok" / name).write_bytes(f.read())
    (tmp_path / "tok" / "tokenizer_config.json").write_text(json.dumps({"extra_ids": 0}))
    hf = transformers.T5Tokenizer.from_pretrained(str(tmp_path / "tok"), extra_ids=0)
    ours = vocab.load_vocabulary(str(tmp_path / "tok"))
    assert len(hf) == ours.vocab_size == PIECES + 2
    for text in ("Patient with dilated <Disease> cardiomyopathy </Disease> .",
                 "<Disease> fiebre </Disease>", "le patient <extra_id_0> va bien"):
        assert list(ours.encode(text)) == hf(text, add_special_tokens=False)["input_ids"]


def test_non_sentencepiece_vocabularies_get_an_identity_too(tmp_path):
    """A user's task module may use another seqio vocabulary (bytes, ...): training records
    and checks it as well instead of failing."""
    byte5 = _register("test_vocab_bytes", seqio.ByteVocabulary(extra_ids=100))
    byte0 = _register("test_vocab_bytes0", seqio.ByteVocabulary(extra_ids=0))
    model_dir = str(tmp_path / "run")
    ident = vocab_record.check_training_run(model_dir, byte5)
    assert ident["vocab_size"] == seqio.ByteVocabulary(extra_ids=100).vocab_size
    assert sorted(os.listdir(model_dir)) == [vocab_record.RECORD_FILE]  # no file to copy
    assert vocab_record.check_training_run(model_dir, byte5) == ident  # stable
    with pytest.raises(vocab_record.VocabularyMismatch):
        vocab_record.check_training_run(model_dir, byte0)


def test_our_vocabulary_equals_a_plain_seqio_one():
    """seqio compares features by value (mixtures of our tasks and a user's): the tiny
    vocabulary must equal seqio.SentencePieceVocabulary of the same file, also after its
    identity was computed."""
    v = vocab.get_vocabulary("tiny")
    vocab.vocabulary_identity(v)
    assert v == seqio.SentencePieceVocabulary(vocab.TINY_VOCAB_PATH, extra_ids=100)


def test_converters_carry_the_checkpoints_vocabulary(tmp_path, tagged_folder):
    """hf-to-medmt5 and medmt5-to-hf copy spiece.model (+ added tokens, vocab.json), so the
    converted checkpoint still supplies its own vocabulary."""
    from medmt5.checkpointing.hf_io import save_hf
    from medmt5.checkpointing.param_tree import expected_shapes, unflatten
    from medmt5.cli.convert import main
    from medmt5.model.config import T5Config

    cfg = T5Config(vocab_size=2176, d_model=8, d_kv=4, d_ff=12, num_heads=2,
                   num_encoder_layers=1, num_decoder_layers=1)
    rng = np.random.default_rng(0)
    params = unflatten({n: rng.normal(0, 0.5, s).astype(np.float32)
                        for n, s in expected_shapes(cfg).items()})
    hf = str(tmp_path / "hf")
    save_hf(cfg, params, hf)
    for name in (vocab.SPIECE_FILE, vocab.ADDED_TOKENS_FILE, vocab.TOKENIZER_FILE):
        with open(os.path.join(tagged_folder, name), "rb") as f:
            (tmp_path / "hf" / name).write_bytes(f.read())
    ours, back = str(tmp_path / "ours"), str(tmp_path / "back")
    assert main(["hf-to-medmt5", hf, ours]) == 0
    assert vocab.resolve_vocabulary(None, ours) == ours
    assert vocab.load_vocabulary(ours).vocab_size == PIECES + len(TAGS)
    vocab_record.write_record(ours, vocab.vocabulary_identity(vocab.load_vocabulary(ours)))
    assert main(["medmt5-to-hf", os.path.join(ours, "checkpoints", "0"), back]) == 0
    assert {vocab.SPIECE_FILE, vocab.ADDED_TOKENS_FILE, vocab_record.RECORD_FILE} <= \
        set(os.listdir(back))
    assert vocab.load_vocabulary(back).added_tokens == TAGS
