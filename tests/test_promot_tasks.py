"""SeqIO registrations of the ProMoT fine-tuning and in-context evaluation tasks."""
import json

import pytest

seqio = pytest.importorskip("seqio")
pytest.importorskip("tensorflow")

from tasks import icl, promot_readers, promot_tasks  # noqa: E402

LENGTHS = {"inputs": 1024, "targets": 128}


def _examples(name, split, lengths=LENGTHS):
    task = seqio.get_mixture_or_task(name)
    return list(task.get_dataset(lengths, split=split, shuffle=False).as_numpy_iterator())


def _text(value):
    return value.decode("utf-8")


def test_zero_shot_fine_tuning_tasks_use_the_papers_templates():
    ex = _examples("promot_rte", "validation")[0]
    assert _text(ex["inputs_pretokenized"]) == (
        "The research team tracked two hundred patients with asthma for five years. "
        "question: Patients with asthma were followed for five years. "
        "Is it true or false? answer:")
    assert _text(ex["targets_pretokenized"]) == "true"
    assert ex["inputs"][-1] == 1 and ex["targets"][-1] == 1  # EOS
    ex = _examples("promot_wmt14_enfr", "test")[1]
    assert _text(ex["inputs_pretokenized"]) == \
        "Translate English to French: The museum is closed on Mondays."
    assert _text(ex["targets_pretokenized"]) == "Le musée est fermé le lundi."


def test_one_shot_example_in_full():
    ex = _examples("icl_cb_1shot", "test")[0]
    (demo,) = icl.select_demonstrations(0, 12, 1, seed=promot_tasks.SELECTION_SEED)
    train = promot_readers.read_split("cb", "train")
    d = train[demo]
    answer = {"entailment": "true", "contradiction": "false", "neutral": "neither"}[d["label"]]
    assert _text(ex["inputs_pretokenized"]) == (
        f"{d['premise']} question: {d['hypothesis']} Is it true or false or neither? answer: "
        f"{answer}\n\n"
        "A: Have you read her new book? B: Yes, and I'm convinced it's her best work. "
        "question: the new book is her best work Is it true or false or neither? answer:")
    assert _text(ex["targets_pretokenized"]) == "true" and ex["num_shots"] == 1


def test_four_shot_tasks_have_four_demonstrations_and_the_train_pool_excludes_self():
    for name, prefix in (("icl_triviaqa_4shot", "Q: "), ("icl_wmt16_enro_4shot", "Translate "),
                         ("icl_xsum_4shot", "Article: ")):
        split = "test"
        for ex in _examples(name, split):
            parts = _text(ex["inputs_pretokenized"]).split("\n\n")
            assert len(parts) == 5 and ex["num_shots"] == 4
            assert all(p.startswith(prefix) for p in parts)
    # ProMoT + 1-shot trains on train: the demonstration is never the example itself.
    for ex in _examples("promot_rte_1shot", "train"):
        demo, query = _text(ex["inputs_pretokenized"]).split("\n\n")
        assert not demo.startswith(query)


def test_length_budget_env_override(monkeypatch):
    monkeypatch.setenv(promot_tasks.ICL_INPUT_TOKENS_ENV, "160")
    vocabulary = seqio.get_mixture_or_task("icl_xsum_4shot").output_features["inputs"].vocabulary
    for ex in _examples("icl_xsum_4shot", "test"):
        text = _text(ex["inputs_pretokenized"])
        assert len(vocabulary.encode(text)) + 1 <= 160
        assert text.endswith("One sentence summary:") and ex["num_shots"] < 4
    monkeypatch.setenv(promot_tasks.ICL_INPUT_TOKENS_ENV, "many")
    with pytest.raises(ValueError, match="MEDMT5_ICL_INPUT_TOKENS"):
        _examples("icl_xsum_4shot", "test")


def test_an_input_longer_than_the_encoder_budget_is_an_error_not_a_cut(monkeypatch):
    """The stage configs feed 512 tokens while *_1shot inputs are cut to 1024: an input over
    the inputs feature length stops, naming the task, its length and the flag."""
    import tensorflow as tf

    vocabulary = seqio.get_mixture_or_task("promot_rte_1shot").output_features[
        "inputs"].vocabulary
    full = _examples("promot_rte_1shot", "validation")
    longest = max(len(ex["inputs"]) for ex in full)
    assert longest == max(len(vocabulary.encode(_text(ex["inputs_pretokenized"]))) + 1
                          for ex in full)  # nothing was cut at 1024
    with pytest.raises(tf.errors.InvalidArgumentError,
                       match=rf"task promot_rte_1shot: an input of \d+ tokens \(EOS included\) "
                             rf"does not fit the encoder budget of {longest - 1} tokens.*"
                             r"--gin.TASK_FEATURE_LENGTHS"):
        _examples("promot_rte_1shot", "validation",
                  {"inputs": longest - 1, "targets": 128})
    fits = _examples("promot_rte_1shot", "validation", {"inputs": longest, "targets": 128})
    assert all(_text(ex["inputs_pretokenized"]).endswith("answer:") for ex in fits)
    assert [len(ex["inputs"]) for ex in fits] == [len(ex["inputs"]) for ex in full]
    # the in-context cut to $MEDMT5_ICL_INPUT_TOKENS is the way to fit a smaller budget
    monkeypatch.setenv(promot_tasks.ICL_INPUT_TOKENS_ENV, str(longest - 1))
    cut = _examples("promot_rte_1shot", "validation", {"inputs": longest - 1, "targets": 128})
    assert max(len(ex["inputs"]) for ex in cut) <= longest - 1


def test_data_dir_env_override(tmp_path, monkeypatch):
    (tmp_path / "wic").mkdir()
    rows = [{"word": f"w{i}", "sentence1": f"A{i}.", "sentence2": f"B{i}.", "label": i % 2,
             "idx": i} for i in range(3)]
    for split in ("train", "validation"):
        (tmp_path / "wic" / f"{split}.jsonl").write_text(
            "".join(json.dumps(r) + "\n" for r in rows))
    monkeypatch.setenv(promot_readers.DATA_DIR_ENV, str(tmp_path))
    examples = _examples("icl_wic_1shot", "test")
    assert len(examples) == 3
    assert _text(examples[2]["inputs_pretokenized"]).endswith(
        'A2. B2. question: The word "w2" means the same thing in both sentences. '
        "Is it true or false? answer:")
    assert [_text(e["targets_pretokenized"]) for e in examples] == ["false", "true", "false"]
    with pytest.raises(promot_readers.PromotDataError, match="MEDMT5_PROMOT_DIR"):
        _examples("icl_cb_1shot", "test")


@pytest.mark.parametrize("name", sorted(promot_tasks.TASKS))
def test_postprocessed_targets_score_100(name):
    """Each task's postprocess + metric: the targets, fed back as predictions, score 100."""
    task = seqio.get_mixture_or_task(name)
    split = list(promot_tasks.TASKS[name].splits)[-1]
    examples = _examples(name, split)
    targets = [task.postprocess_fn(e["targets_pretokenized"], example=e, is_target=True)
               for e in examples]
    predictions = [task.postprocess_fn(e["targets_pretokenized"] + b"\n\nQ: Translate Article:",
                                       example=e, is_target=False) for e in examples]
    (metric_fn,) = task.metric_fns
    for value in metric_fn(targets, predictions).values():
        assert value == pytest.approx(100.0)


def test_mixtures():
    heldout = seqio.get_mixture_or_task("icl_heldout_1shot")
    assert sorted(t.name for t in heldout.tasks) == sorted(
        ["icl_cb_1shot", "icl_wic_1shot", "icl_triviaqa_1shot", "icl_webquestions_1shot",
         "icl_wmt16_ende_1shot", "icl_wmt16_enro_1shot", "icl_xsum_1shot",
         "icl_wikilingua_en_1shot"])
    assert len(seqio.get_mixture_or_task("icl_heldout_4shot").tasks) == 8


# ---------------------------------------------------------------------------------------------
# Medical in-context suite (Medical mT5 benchmarks, four languages).

from tasks import benchmarks, icl_medical_tasks  # noqa: E402


def test_medical_tagging_example_in_full():
    ex = _examples("icl_med_e3c_en_1shot", "test")[0]
    task = benchmarks.TASKS_BY_NAME["e3c_en"]
    root = benchmarks.benchmark_dir()
    test = benchmarks.read_sentences(task, "test", root)
    train = benchmarks.read_sentences(task, "train", root)
    (demo,) = icl.select_demonstrations(0, len(train), 1, seed=promot_tasks.SELECTION_SEED)
    labels = benchmarks.DATASET_LABELS["e3c"]
    d = benchmarks.make_example(train[demo], labels, prefixed=False)
    q = benchmarks.make_example(test[0], labels, prefixed=False)
    assert _text(ex["inputs_pretokenized"]) == (
        f"Sentence: {d['inputs']} Tags: <ClinicalEntity> Tagged sentence: {d['targets']}\n\n"
        f"Sentence: {q['inputs']} Tags: <ClinicalEntity> Tagged sentence:")
    assert _text(ex["targets_pretokenized"]) == q["targets"]
    assert _text(ex["sentence"]) == " ".join(test[0].words)


def test_medical_tagging_postprocess_cuts_and_aligns_to_the_query_words():
    task = seqio.get_mixture_or_task("icl_med_abstrct_en_1shot")
    example = {"sentence": b"Survival improved in both arms ."}
    pred = b" <Claim> Survival improved </Claim> in both arms . Sentence: <Premise> x </Premise>"
    assert task.postprocess_fn(pred, example=example) == \
        ["B-Claim", "I-Claim", "O", "O", "O", "O"]
    # No `labels` attribute: medmt5.run.evaluation would otherwise constrain decoding to copy the
    # few-shot prompt's words (it treats postprocessors with `labels` as sequence labelling).
    assert getattr(task._postprocess_fn, "labels", None) is None


def test_medical_suite_covers_four_languages():
    for lang in ("en", "es", "fr", "it"):
        mixture = seqio.get_mixture_or_task(f"icl_med_{lang}_1shot")
        assert sorted(t.name for t in mixture.tasks) == sorted(
            [f"icl_med_abstrct_{lang}_1shot", f"icl_med_e3c_{lang}_1shot",
             f"icl_med_bioasq_{lang}_1shot"])
    assert len(seqio.get_mixture_or_task("icl_med_4shot").tasks) == 12


@pytest.mark.parametrize("name", sorted(icl_medical_tasks.TASKS))
def test_medical_postprocessed_targets_score_100(name):
    task = seqio.get_mixture_or_task(name)
    spec = icl_medical_tasks.TASKS[name]
    examples = _examples(name, spec.splits[-1])
    assert all(e["num_shots"] == spec.num_shots for e in examples)
    targets = [task.postprocess_fn(e["targets_pretokenized"], example=e, is_target=True)
               for e in examples]
    predictions = [task.postprocess_fn(e["targets_pretokenized"] + b"\n\nSentence: Context: x",
                                       example=e, is_target=False) for e in examples]
    (metric_fn,) = task.metric_fns
    scores = metric_fn(targets, predictions)
    assert scores[("f1" if spec.kind == "tagging" else "rouge2")] == pytest.approx(100.0)


def test_bad_line_is_reported_through_tf_data_and_pool_limit(tmp_path, monkeypatch):
    (tmp_path / "cb").mkdir()
    good = {"premise": "p", "hypothesis": "h", "label": "neutral"}
    (tmp_path / "cb" / "train.jsonl").write_text(
        "".join(json.dumps(dict(good, premise=f"p{i}")) + "\n" for i in range(6)))
    (tmp_path / "cb" / "validation.jsonl").write_text(
        json.dumps(good) + "\n" + json.dumps(dict(good, label="maybe")) + "\n")
    monkeypatch.setenv(promot_readers.DATA_DIR_ENV, str(tmp_path))
    with pytest.raises(Exception, match=r"validation.jsonl:2: label 'maybe'"):
        _examples("icl_cb_4shot", "test")
    # Demonstrations come from the first `pool_limit` train examples only.
    (tmp_path / "cb" / "validation.jsonl").write_text(json.dumps(good) + "\n")
    (row,) = promot_tasks.format_split(promot_tasks.TASKS["icl_cb_1shot"], "test",
                                       pool_limit=2)
    assert row["inputs"].startswith(("p0 question:", "p1 question:"))


def test_every_heldout_task_evaluates_on_the_split_named_test():
    for mixture in ("icl_heldout_1shot", "icl_heldout_4shot", "icl_med_1shot", "icl_med_4shot"):
        for task in seqio.get_mixture_or_task(mixture).tasks:
            assert "test" in task.splits, task.name
    # CB's public test set is unlabelled: its "test" split reads the validation file.
    assert promot_tasks.TASKS["icl_cb_1shot"].splits == {"test": "validation"}
