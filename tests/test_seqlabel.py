"""IOB <-> tagged text: exact inverse on well-formed text, robust parsing, the automaton."""
import glob
import itertools
import os
import random

import no_tf
import pytest

from tasks import benchmark_readers as readers
from tasks import seqlabel as sl

DATA = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "tasks",
                    "data", "benchmarks")
WORDS = "Patient with dilated cardiomyopathy and renal failure .".split()
TAGS = ["O", "O", "O", "B-Disease", "O", "B-Disease", "I-Disease", "O"]


def test_module_does_not_import_tensorflow():
    """On a machine without TensorFlow/seqio (the model's GPU machines) these still import."""
    assert no_tf.imports_without_tensorflow("tasks.seqlabel", "tasks.metrics",
                                            "tasks.benchmark_readers")


def test_authors_format_and_inverse():
    text = sl.iob_to_tagged(WORDS, TAGS, ["Disease"])
    assert text == ("Patient with dilated <Disease> cardiomyopathy </Disease> and "
                    "<Disease> renal failure </Disease> .")
    stats = sl.ParseStats()
    assert sl.tagged_to_iob(text, WORDS, ["Disease"], stats) == TAGS
    assert stats.well_formed


@pytest.mark.parametrize("tags", [
    ["B-A", "I-A", "I-A"],                  # whole sentence
    ["B-A", "B-A", "B-B"],                  # adjacent spans, same and other label
    ["O", "O", "B-B"],                      # span at the end
    ["O", "O", "O"],
])
def test_edges_round_trip(tags):
    words = ["x", "y", "z"]
    assert sl.tagged_to_iob(sl.iob_to_tagged(words, tags), words, ["A", "B"]) == tags


def test_iob1_becomes_bio_with_same_spans():
    iob1 = ["I-A", "I-A", "O", "I-B", "B-B", "I-A"]
    bio = sl.to_bio(iob1)
    assert bio == ["B-A", "I-A", "O", "B-B", "B-B", "B-A"]
    words = list("abcdef")
    assert sl.tagged_to_iob(sl.iob_to_tagged(words, iob1), words, ["A", "B"]) == bio
    assert sl.iob_spans(iob1) == sl.iob_spans(bio)


def test_label_prefix_canonical_order_and_stripping():
    assert sl.make_input(["a", "b"], ["Disease", "Chemical"]) == "<Chemical> <Disease> a b"
    assert sl.label_prefix(["Premise", "Claim", "Claim"]) == "<Claim> <Premise>"
    assert sl.input_words("<Chemical> <Disease> a b", ["Disease", "Chemical"]) == ["a", "b"]
    assert sl.input_words("<Disease> a b", ["Disease", "Chemical"]) == ["<Disease>", "a", "b"]
    assert sl.input_words("a b", ["Disease"]) == ["a", "b"]


def test_encoder_rejects_bad_input():
    with pytest.raises(ValueError, match="2 words but 1 tags"):
        sl.iob_to_tagged(["a", "b"], ["O"])
    with pytest.raises(ValueError, match="whitespace"):
        sl.iob_to_tagged(["a b"], ["O"])
    with pytest.raises(ValueError, match="not in the label set"):
        sl.iob_to_tagged(["a"], ["B-Drug"], ["Disease"])
    with pytest.raises(ValueError, match="invalid IOB tag"):
        sl.iob_to_tagged(["a"], ["X-Disease"])
    with pytest.raises(ValueError, match="identical to a tag"):
        sl.iob_to_tagged(["<Disease>"], ["O"], ["Disease"])
    with pytest.raises(ValueError, match="cannot be a tag"):
        sl.canonical_labels(["two words"])


# (model output, expected BIO over WORDS, expected non-zero stats) -- worked out by hand
MALFORMED = [
    ("Patient with dilated <Disease> cardiomyopathy and renal failure .",
     ["O", "O", "O", "B-Disease", "I-Disease", "I-Disease", "I-Disease", "I-Disease"],
     {"unclosed": 1}),
    ("Patient </Disease> with dilated cardiomyopathy and renal failure .",
     ["O"] * 8, {"stray_closes": 1}),
    ("Patient with dilated <Foo> cardiomyopathy </Foo> and renal failure .",
     ["O"] * 8, {"unknown_units": 2}),
    ("Patient with <Disease> dilated <Disease> cardiomyopathy </Disease> </Disease> "
     "and renal failure .",
     ["O", "O", "B-Disease", "B-Disease", "O", "O", "O", "O"],
     {"nested_opens": 1, "stray_closes": 1}),
    ("Patient with dilated <Disease> cardiomiopathy </Disease> and renal failure .",
     ["O"] * 8, {"unknown_units": 1, "missing_words": 1}),
    ("Patient with dilated cardiomyopathy and <Disease> renal </Disease> .",  # word dropped
     ["O", "O", "O", "O", "O", "B-Disease", "O", "O"], {"missing_words": 1}),
    ("Patient with <Disease> dilated failure </Disease> .",  # dropped words inside a span
     ["O", "O", "B-Disease", "I-Disease", "I-Disease", "I-Disease", "I-Disease", "O"],
     {"missing_words": 3}),
    ("Patient with dilated <Disease> </Disease> cardiomyopathy and renal failure . . extra",
     ["O"] * 8, {"empty_spans": 1, "unknown_units": 2}),
    ("Patient with dilated <Disease> cardiomyopathy </Chemical> and renal failure .",
     ["O", "O", "O", "B-Disease", "O", "O", "O", "O"], {"mismatched_close": 1}),
    ("", ["O"] * 8, {"missing_words": 8}),
    ("</Disease> <Disease>", ["O"] * 8,
     {"missing_words": 8, "stray_closes": 1, "unclosed": 1, "empty_spans": 1}),
]


@pytest.mark.parametrize("output,expected,bad", MALFORMED)
def test_malformed_output_is_repaired_by_the_documented_rules(output, expected, bad):
    stats = sl.ParseStats()
    assert sl.tagged_to_iob(output, WORDS, ["Disease", "Chemical"], stats) == expected
    got = {k: v for k, v in vars(stats).items() if v}
    assert got == bad


def test_random_garbage_never_crashes_and_gives_valid_bio():
    rng = random.Random(0)
    pool = WORDS + ["<Disease>", "</Disease>", "<Chemical>", "</Chemical>", "<X>", "</",
                    "<>", "<<Disease>>", "Disease", "ñandú", "\u00a0", "<Disease>x"]
    for _ in range(400):
        out = " ".join(rng.choice(pool) for _ in range(rng.randint(0, 25)))
        tags = sl.tagged_to_iob(out, WORDS, ["Disease", "Chemical"])
        assert len(tags) == len(WORDS)
        assert sl.to_bio(tags) == tags
        assert sl.tagged_to_iob(out, None, ["Disease", "Chemical"]) is not None


def test_without_input_words_uses_output_words():
    assert sl.tagged_to_iob("a <A> b c </A> d", None, ["A"]) == ["O", "B-A", "I-A", "O"]


def _sample_files():
    # the authors' NER tree: ner/{lang}/{lang}-{file id}-{split}.tsv
    by_id = {v: k for k, v in readers.FILE_IDS.items()}
    for path in sorted(glob.glob(os.path.join(DATA, "ner", "*", "*.tsv"))):
        file_id = os.path.basename(path).split("-", 1)[1].rsplit("-", 1)[0]
        yield path, readers.DATASET_LABELS[by_id[file_id]]
    # the hub's HiTZ/multilingual-abstrct shards: abstrct/{lang}/{split}-00000-of-00001.parquet
    for path in sorted(glob.glob(os.path.join(DATA, "abstrct", "*", "*.parquet"))):
        yield path, readers.DATASET_LABELS["abstrct"]


def test_round_trip_on_every_shipped_sample():
    files = list(_sample_files())
    assert len(files) == 30 + 20  # 10 dataset/language pairs x 3 splits, 4 x 5 AbstRCT
    n_spans = 0
    for path, labels in files:
        read = readers.read_iob_tsv if path.endswith(".tsv") else readers.read_token_rows
        for s in read(path, labels):
            text = sl.iob_to_tagged(s.words, s.tags, labels)
            stats = sl.ParseStats()
            assert sl.tagged_to_iob(text, s.words, labels, stats) == list(s.tags), s.source
            assert stats.well_formed, s.source
            # and the automaton accepts it
            auto = sl.TaggingAutomaton(s.words, labels)
            assert auto.is_final(auto.run(text.split())), s.source
            n_spans += len(sl.iob_spans(s.tags))
    assert n_spans > 500


# ------------------------------------------------------------------ automaton

def test_automaton_allowed_units_by_hand():
    auto = sl.TaggingAutomaton(["a", "b"], ["Y", "X"])
    s0 = auto.initial()
    assert auto.allowed(s0) == ["a", "<X>", "<Y>"]
    s1 = auto.step(s0, "<X>")
    assert auto.allowed(s1) == ["a"]                      # no empty span
    s2 = auto.step(s1, "a")
    assert auto.allowed(s2) == ["b", "</X>"]
    s3 = auto.step(s2, "b")
    assert auto.allowed(s3) == ["</X>"]                  # must close before the end
    s4 = auto.step(s3, "</X>")
    assert auto.allowed(s4) == [sl.END] and auto.is_final(s4)
    assert not auto.is_final(s3)
    for bad_state, unit in [(s0, "b"), (s0, "</X>"), (s1, "<Y>"), (s3, sl.END), (s4, "a")]:
        with pytest.raises(ValueError, match="not allowed"):
            auto.step(bad_state, unit)
    with pytest.raises(ValueError, match="identical to tags"):
        sl.TaggingAutomaton(["<X>"], ["X"])


def _accepted(auto, state, prefix, out):
    for unit in auto.allowed(state):
        if unit is sl.END:
            out.append(" ".join(prefix))
        else:
            _accepted(auto, auto.step(state, unit), prefix + [unit], out)
    return out


def test_automaton_language_is_exactly_the_well_formed_outputs():
    words, labels = ["p", "q", "r"], ["A", "B"]
    accepted = _accepted(sl.TaggingAutomaton(words, labels), sl.TagState(), [], [])
    all_bio = set()
    for tags in itertools.product(["O", "B-A", "I-A", "B-B", "I-B"], repeat=3):
        all_bio.add(tuple(sl.to_bio(list(tags))))
    expected = {sl.iob_to_tagged(words, list(t), labels) for t in all_bio}
    assert len(accepted) == len(set(accepted)) == len(expected)
    assert set(accepted) == expected
    for text in accepted:  # each parses back exactly
        assert sl.iob_to_tagged(words, sl.tagged_to_iob(text, words, labels), labels) == text
