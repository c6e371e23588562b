"""The ProMoT miniature's synthetic data: deterministic, well-formed, answers recoverable."""
import itertools
import os
import re

import pytest
import sentencepiece as spm

from experiments.promot_mini import synthetic

VOCAB = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                     "tasks", "data", "vocab", "medmt5_tiny.model")


def _pairs(inputs: str):
    """[(x, y)] demonstrations and the query x of a rendered episode."""
    parts = inputs.split("\n\n")
    demos = [re.fullmatch(r"Q: (.*) A: (.*)", p).groups() for p in parts[:-1]]
    query = re.fullmatch(r"Q: (.*) A:", parts[-1]).group(1)
    return demos, query


def test_episodes_are_deterministic_and_split_dependent():
    for family in synthetic.ICL_FAMILIES:
        a = synthetic.episode(family, "test", 0, 5, 3)
        assert a == synthetic.episode(family, "test", 0, 5, 3)
        others = [synthetic.episode(family, "train", 0, 5, 3),
                  synthetic.episode(family, "test", 1, 5, 3),
                  synthetic.episode(family, "test", 0, 6, 3)]
        assert all(o != a for o in others), family
    stream = list(itertools.islice(synthetic.pretraining_stream(3), 50))
    assert stream == list(itertools.islice(synthetic.pretraining_stream(3), 50))
    assert stream != list(itertools.islice(synthetic.pretraining_stream(4), 50))
    for task in synthetic.TARGET_TASKS:
        assert synthetic.target_example(task, "train", 0, 2) == \
            synthetic.target_example(task, "train", 0, 2)


def test_words_are_single_tokens_and_not_reserved():
    sp = spm.SentencePieceProcessor(model_file=VOCAB)
    assert len(set(synthetic.WORDS)) == len(synthetic.WORDS) >= 40
    assert [w for w in synthetic.WORDS if len(sp.encode(w)) != 1] == []
    assert not synthetic.RESERVED & set(synthetic.WORDS)


@pytest.mark.parametrize("family", synthetic.ICL_FAMILIES)
def test_answer_follows_from_demonstrations(family):
    for i in range(30):
        ex = synthetic.episode(family, "test", 0, i, 3)
        demos, query = _pairs(ex["inputs"])
        assert len(demos) == 3
        q, y = query.split(), ex["targets"].split()
        rule = {"copy": q, "reverse": q[::-1], "first": q[:1], "last": q[-1:],
                "swap": [q[1], q[0]] + q[2:] if len(q) > 1 else None}.get(family)
        if rule is not None:
            assert y == rule
            for x, dy in demos:  # the demonstrations follow the same rule
                xs = x.split()
                assert dy.split() == {"copy": xs, "reverse": xs[::-1], "first": xs[:1],
                                      "last": xs[-1:], "swap": [xs[1], xs[0]] + xs[2:]}[family]
        elif family == "lookup":
            assert dict(demos)[query] == ex["targets"]
        else:  # label: a query word is in every demonstration of its label and no other
            same = [set(x.split()) for x, dy in demos if dy == ex["targets"]]
            other = [set(x.split()) for x, dy in demos if dy != ex["targets"]]
            assert same and other and len({dy for _, dy in demos}) == 2
            assert set.intersection(*same, set(q)) - set.union(*other)


def test_target_tasks_fixed_formats():
    for i in range(50):
        rte = synthetic.target_example("rte", "train", 0, i)
        premise, rest = rte["inputs"].split(" question: ")
        word = rest.split(" Is it true or false?")[0]
        assert rte["targets"] == ("true" if word in premise.split() else "false")
        count = synthetic.target_example("count", "validation", 0, i)
        n = len(count["inputs"][len("How many words: "):-len(" answer:")].split())
        assert count["targets"] == synthetic.NUMBERS[n - 1]
    lex = {}
    for i in range(200):  # the translation lexicon is one fixed word -> word map
        ex = synthetic.target_example("translate", "train", 0, i)
        src = ex["inputs"][len("Translate English to French: "):].split()
        for s, t in zip(src, ex["targets"].split()):
            assert lex.setdefault(s, t) == t
    labels = [synthetic.target_example("rte", "train", 0, i)["targets"] for i in range(200)]
    assert 60 < labels.count("true") < 140


def test_bad_names_raise():
    with pytest.raises(ValueError, match="unknown in-context family"):
        synthetic.episode("nope", "train", 0, 0, 3)
    with pytest.raises(ValueError, match="unknown target task"):
        synthetic.target_example("nope", "train", 0, 0)
    with pytest.raises(ValueError, match="shots"):
        synthetic.episode("copy", "train", 0, 0, 0)
