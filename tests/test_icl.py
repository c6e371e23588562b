"""Pure-Python ProMoT / in-context pieces: templates, selection, assembly, post-processing,
readers and metrics (no TensorFlow)."""
import json
import math

import no_tf
import pytest

from tasks import icl
from tasks import promot_metrics as M
from tasks import promot_readers as R


def test_pure_python_modules_do_not_import_tensorflow():
    # The registrations import TF; these modules must not (machine without TF simulated).
    assert no_tf.imports_without_tensorflow("tasks.icl", "tasks.promot_readers",
                                            "tasks.promot_metrics")


# ---------------------------------------------------------------------------------------------
# Templates (one example of each, checked in full).

def test_templates_fill_the_papers_wording():
    rte = {"premise": "P.", "hypothesis": "H.", "label": "not_entailment"}
    assert icl.get_template("rte").demonstration(rte) == \
        "P. question: H. Is it true or false? answer: false"
    cb = {"premise": "P.", "hypothesis": "h", "label": "neutral"}
    assert icl.get_template("cb").demonstration(cb) == \
        "P. question: h Is it true or false or neither? answer: neither"
    wic = {"word": "bank", "sentence1": "S1.", "sentence2": "S2.", "label": True}
    assert icl.get_template("wic").demonstration(wic) == (
        'S1. S2. question: The word "bank" means the same thing in both sentences. '
        "Is it true or false? answer: true")
    qa = {"question": "Who?", "answers": ["Ann", "Anne"]}
    assert icl.get_template("qa").demonstration(qa) == "Q: Who? A: Ann"
    assert icl.get_template("qa").answers(qa) == ["Ann", "Anne"]
    mt = {"source": "Hello.", "target": "Hallo.", "source_language": "English",
          "target_language": "German"}
    assert icl.get_template("translation").demonstration(mt) == \
        "Translate English to German: Hello. Hallo."
    summ = {"document": "Long text.", "summary": "Short."}
    assert icl.get_template("summarization").demonstration(summ) == \
        "Article: Long text. One sentence summary: Short."
    with pytest.raises(KeyError, match="known"):
        icl.get_template("nope")


# ---------------------------------------------------------------------------------------------
# Demonstration selection.

def test_selection_is_deterministic_excludes_and_varies():
    a = icl.select_demonstrations(3, 50, 4, seed=7)
    assert a == icl.select_demonstrations(3, 50, 4, seed=7)
    assert len(set(a)) == 4 and all(0 <= i < 50 for i in a)
    assert a != icl.select_demonstrations(3, 50, 4, seed=8)
    per_query = [tuple(icl.select_demonstrations(q, 50, 4, seed=7)) for q in range(10)]
    assert len(set(per_query)) == 10
    # The query itself (same split) is never chosen, even when every other index must be.
    for q in range(6):
        chosen = icl.select_demonstrations(q, 6, 5, seed=0, exclude=[q])
        assert sorted(chosen) == [i for i in range(6) if i != q]
    with pytest.raises(ValueError, match="larger train split"):
        icl.select_demonstrations(0, 4, 4, exclude=[0])


def _nli(i):
    return {"premise": f"premise {i} " + " ".join(f"w{j}" for j in range(20)),
            "hypothesis": f"hyp {i}", "label": "entailment" if i % 2 else "not_entailment"}


def test_format_examples_joins_demonstrations_then_query():
    tpl = icl.get_template("rte")
    pool = [_nli(i) for i in range(12)]
    queries = [_nli(100 + i) for i in range(5)]
    out = icl.format_examples(tpl, queries, pool, num_shots=4, seed=1)
    for q_index, ex in enumerate(out):
        chosen = icl.select_demonstrations(q_index, 12, 4, seed=1)
        expected = "\n\n".join([tpl.demonstration(pool[i]) for i in chosen]
                               + [tpl.format_inputs(queries[q_index])])
        assert ex["inputs"] == expected
        assert ex["targets"] == ("true" if q_index % 2 else "false")
        assert ex["num_shots"] == 4 and ex["idx"] == q_index
    assert len({ex["inputs"].split("\n\n")[0] for ex in out}) > 1  # differs across queries


def test_format_examples_never_uses_the_query_as_its_demonstration():
    tpl = icl.get_template("rte")
    pool = [_nli(i) for i in range(5)]
    # Same split: with 4 shots from a pool of 5 every other example is used, never itself.
    out = icl.format_examples(tpl, pool, pool, num_shots=4, pool_is_query_split=True)
    for q_index, ex in enumerate(out):
        demos = ex["inputs"].split("\n\n")[:-1]
        assert tpl.demonstration(pool[q_index]) not in demos and len(demos) == 4
    # A duplicate of the query in the pool (same filled template) is excluded as well.
    dup_pool = [_nli(0), _nli(1), dict(_nli(7))]
    out = icl.format_examples(tpl, [_nli(7)], dup_pool, num_shots=2)
    assert tpl.format_inputs(_nli(7)) not in out[0]["inputs"].split("\n\n")[0]
    assert out[0]["inputs"].count("premise 7") == 1


def test_length_budget_keeps_the_query():
    tpl = icl.get_template("summarization")
    pool = [{"document": " ".join(f"d{i}x{j}" for j in range(40)), "summary": f"s{i}."}
            for i in range(6)]
    query = {"document": " ".join(f"q{j}" for j in range(40)), "summary": "gold."}
    query_text = tpl.format_inputs(query)
    # Room for the query and one full demonstration only.
    budget = len(query_text) + 2 + len(tpl.demonstration(pool[0])) + 3
    text, kept = icl.build_prompt(tpl, query, pool[:4], max_length=budget)
    assert text.endswith(query_text) and len(text) <= budget
    assert text.split("\n\n")[-2] == tpl.demonstration(pool[3])  # nearest the query kept
    assert 1 <= kept <= 2
    # A budget below the query alone: the article is cut, the cue "One sentence summary:" stays.
    text, kept = icl.build_prompt(tpl, query, pool[:4], max_length=120)
    assert kept == 0 and len(text) <= 120
    assert text.startswith("Article: q0 q1") and text.endswith("One sentence summary:")
    # Token-style length function: whitespace words.
    text, kept = icl.build_prompt(tpl, query, pool[:4], max_length=100,
                                  length_fn=lambda s: len(s.split()))
    assert len(text.split()) <= 100 and text.endswith(query_text)
    with pytest.raises(ValueError, match="raise the input length budget"):
        icl.build_prompt(icl.get_template("wic"),
                         {"word": "w", "sentence1": "a", "sentence2": "b", "label": True},
                         [], max_length=10)


# ---------------------------------------------------------------------------------------------
# Post-processing.

def test_predictions_are_cut_at_the_next_example():
    cut = icl.cut_at_prefixes
    assert cut(" Paris Q: What is the capital of Spain? A: Madrid", ("Q:",)) == " Paris "
    assert cut("Bonjour. Translate English to French: x", ("Translate",)) == "Bonjour. "
    assert cut("A summary. Article: next one", ("Article:",)) == "A summary. "
    assert cut("first line\n\nnext example", ()) == "first line"
    assert cut("first line\nnext example", ()) == "first line"
    assert cut("see the FAQ: page", ("Q:",)) == "see the FAQ: page"  # not a word start
    qa = icl.get_template("qa")
    assert icl.clean_prediction("  Leonardo da Vinci\nQ: Who? A: x", qa) == "Leonardo da Vinci"
    cb = icl.get_template("cb")
    assert icl.clean_prediction(" Neither. premise question: ...", cb) == "neither"
    assert icl.clean_prediction("TRUE answer: false", cb) == "true"
    assert icl.clean_prediction("", cb) == ""


def test_postprocess_fn_for_seqio():
    qa = icl.make_postprocess_fn(icl.get_template("qa"))
    example = {"answers": [b"Ottawa", b"ottawa city"]}
    assert qa(b"Ottawa", example=example, is_target=True) == ["Ottawa", "ottawa city"]
    assert qa(b" Ottawa Q: next", example=example) == "Ottawa"
    rte = icl.make_postprocess_fn(icl.get_template("rte"))
    assert rte(b"True", is_target=True) == "true"
    assert rte("False, because", is_target=False) == "false"


# ---------------------------------------------------------------------------------------------
# Readers.

def _write(tmp_path, dataset, split, rows):
    (tmp_path / dataset).mkdir(exist_ok=True)
    path = tmp_path / dataset / f"{split}.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def test_readers_accept_public_layouts_and_name_bad_lines(tmp_path, monkeypatch):
    monkeypatch.setenv(R.DATA_DIR_ENV, str(tmp_path))
    _write(tmp_path, "cb", "validation", [
        {"premise": "p", "hypothesis": "h", "label": 2, "idx": 0},     # HF class id
        {"premise": "p\nq", "hypothesis": "h", "label": "contradiction", "idx": 1}])
    recs = R.read_split("cb", "validation")
    assert [r["label"] for r in recs] == ["neutral", "contradiction"]
    assert recs[1]["premise"] == "p q"  # newlines flattened
    path = _write(tmp_path, "rte", "test",
                  [{"premise": "p", "hypothesis": "h", "label": "entailment"},
                                             {"premise": "p", "hypothesis": "h", "label": -1}])
    with pytest.raises(R.PromotDataError, match=f"{path}:2: label -1 .*evaluate on validation"):
        R.read_split("rte", "test")
    with pytest.raises(R.PromotDataError, match="MEDMT5_PROMOT_DIR"):
        R.read_split("xsum", "test")
    _write(tmp_path, "rte", "train", [{"sentence1": "s1", "sentence2": "s2", "label": 1, "idx": 0}])
    assert R.read_split("rte", "train") == [
        {"premise": "s1", "hypothesis": "s2", "label": "not_entailment"}]
    _write(tmp_path, "trivia_qa", "validation", [
        {"question": "Q?", "answer": {"value": "Au", "aliases": ["Au", "Gold"],
                                      "normalized_aliases": ["au", "gold"]}}])
    assert R.read_split("trivia_qa", "validation")[0]["answers"] == ["Au", "Gold", "au", "gold"]
    _write(tmp_path, "wmt16_ro_en", "test", [{"translation": {"en": "Hi.", "de": "Hallo."}}])
    with pytest.raises(R.PromotDataError, match="field 'ro'"):
        R.read_split("wmt16_ro_en", "test")


def test_shipped_samples_read_and_have_enough_demonstrations():
    for dataset in R.PARSERS:
        train = R.read_split(dataset, "train", root=R.DEFAULT_DATA_DIR)
        assert 10 <= len(train) <= 30, dataset


# ---------------------------------------------------------------------------------------------
# Metrics against hand-computed values.

def test_accuracy_and_exact_match_by_hand():
    assert M.accuracy(["true", "false", "neither", "true"],
                      ["true", "true", "neither", "false"]) == {"accuracy": 50.0}
    assert M.normalize_answer("The  Eiffel-Tower!") == "eiffeltower"
    em = M.exact_match([["Pancreas", "The pancreas"], "Au", ["Ottawa"]],
                       ["the Pancreas.", "AU", "Toronto"])["exact_match"]
    assert em == pytest.approx(200.0 / 3)


def test_bleu_by_hand():
    # Exact n-gram precisions 1 but the hypothesis is 4 tokens vs 5: BP = exp(1 - 5/4).
    assert M.bleu(["a b c d e"], ["a b c d"])["bleu"] == pytest.approx(100 * math.exp(-0.25),
                                                                       abs=1e-6)
    # p1..p4 = 3/4, 2/3, 1/2, 0/1 -> exp smoothing makes p4 = 1/(2*1); BP = 1.
    expected = 100 * (0.75 * (2 / 3) * 0.5 * 0.5) ** 0.25
    assert M.bleu(["a b c d"], ["a b c x"])["bleu"] == pytest.approx(expected, abs=1e-6)


def test_rouge2_by_hand():
    # Bigrams: 5 each side, 3 shared (the cat, cat sat, sat on) -> P = R = F = 0.6.
    assert M.rouge2(["the cat sat on the mat"], ["the cat sat on a mat"])["rouge2"] == \
        pytest.approx(60.0)
    # Several references: the best counts; mean over examples.
    out = M.rouge2([["x y z", "the cat sat"], "a b c"], ["the cat sat", "q r s"])["rouge2"]
    assert out == pytest.approx(50.0)


def test_metrics_fed_the_targets_give_100():
    refs = ["the quick brown fox jumps", "over the lazy dog today"]
    assert M.accuracy(refs, refs)["accuracy"] == 100.0
    assert M.exact_match([[r, "alias"] for r in refs], refs)["exact_match"] == 100.0
    assert M.bleu(refs, refs)["bleu"] == pytest.approx(100.0)
    assert M.rouge2(refs, refs)["rouge2"] == pytest.approx(100.0)
    with pytest.raises(ValueError, match="2 targets but 1 predictions"):
        M.accuracy(refs, refs[:1])


def test_normalized_average_by_hand():
    scores = {"icl_cb_1shot": 50.0, "icl_trivia_qa_1shot": 200.0 / 3,
              "icl_wmt16_ende_1shot": 20.0, "icl_xsum_1shot": 10.0}
    assert M.normalized_average(scores) == pytest.approx((50 + 66.6666667 + 20 + 10) / 4)
    with pytest.raises(ValueError, match="outside 0-100"):
        M.normalized_average({"icl_cb_1shot": 0.5, "x": 120.0})
    # As medmt5.run.evaluation reports them: every task also has loss and token "accuracy".
    results = {"icl_cb_1shot": {"loss": 3.0, "accuracy": 40.0},
               "icl_xsum_1shot": {"loss": 2.0, "accuracy": 70.0, "rouge1": 30.0,
                                  "rouge2": 12.0, "rougeL": 25.0},
               "icl_med_e3c_es_1shot": {"accuracy": 90.0, "precision": 50.0, "recall": 40.0,
                                        "f1": 44.0}}
    assert M.normalized_average_of_results(results) == pytest.approx((40 + 12 + 44) / 3)
    with pytest.raises(KeyError, match="headline"):
        M.headline_score({"loss": 1.0})
