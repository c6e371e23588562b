"""The ProMoT miniature's data (experiments/promot_mini/{words,episodes}.py): deterministic,
well-formed, every word one id, demonstrations that follow the episode's rule, target formats
balanced. (The rule-based solver of every kind is in tests/test_promot_mini.py.)"""
import numpy as np
import pytest

from experiments.promot_mini import episodes as E
from experiments.promot_mini import words as W

FORMAT_WORDS = {w for f in W.TARGET_FORMATS.values() for w in f}


def _demos(x):
    """[(left, right)] demonstrations, the query words and the pair marker of an episode
    rendered as `l pm r sm l pm r ... qm q pm` (markers are single words)."""
    t = x.split()
    pm = t[t.index(next(m for m in t if m in W.PAIR_MARKERS))]
    qpos = max(i for i, w in enumerate(t[:-1]) if w in W.QUERY_MARKERS)
    demos, cur = [], []
    for w in t[:qpos] + [None]:
        if w is None or (w in W.SEP_MARKERS and pm in cur):
            i = cur.index(pm)
            demos.append((cur[:i], cur[i + 1:]))
            cur = []
        else:
            cur.append(w)
    return demos, t[qpos + 1:-1], pm


def test_sets_are_deterministic_and_seed_and_kind_dependent():
    for kind in E.GENERATORS:
        a = E.fixed_set(kind, 0, 16)
        b = E.fixed_set(kind, 0, 16)
        for k in ("inputs", "targets"):
            np.testing.assert_array_equal(a[k], b[k])
        assert not np.array_equal(a["inputs"], E.fixed_set(kind, 1, 16)["inputs"]), kind
    assert not np.array_equal(E.fixed_set("recall", 0, 16)["inputs"],
                              E.fixed_set("select", 0, 16)["inputs"])
    x = E.batch(E.FAMILIES, np.random.default_rng(5), 32)
    y = E.batch(E.FAMILIES, np.random.default_rng(5), 32)
    np.testing.assert_array_equal(x["inputs"], y["inputs"])
    np.testing.assert_array_equal(x["kind"], y["kind"])
    assert set(x["kind"]) == set(range(len(E.FAMILIES)))  # a uniform mix of the kinds


def test_every_word_is_one_id_and_specials_are_not_words():
    assert len(set(W.WORDS)) == len(W.WORDS) >= 40
    for w in W.WORDS[len(W.SPECIAL):]:
        assert W.encode(w) == [W.ID[w]] and W.decode(W.encode(w)) == w
    content = set(W.CONTENT)
    assert not set(W.SPECIAL) & (content | set(W.LABELS) | FORMAT_WORDS)
    assert not FORMAT_WORDS & (content | set(W.LABELS))
    assert (W.PAD, W.EOS, W.UNK) == tuple(W.ID[s] for s in W.SPECIAL)
    b = E.batch(sorted(E.GENERATORS), np.random.default_rng(0), 64)
    assert b["inputs"].dtype == np.int32 and b["inputs"].max() < W.vocab_size()
    for row in b["targets"]:  # answer words, then EOS, then padding
        ids = list(row)
        assert W.EOS in ids and all(i == W.PAD for i in ids[ids.index(W.EOS) + 1:])


@pytest.mark.parametrize("kind", ["labelmap", "copyfmt", "select"])
def test_demonstrations_follow_the_episodes_rule(kind):
    rng = np.random.default_rng(11)
    for _ in range(100):
        x, y = E.example(kind, rng)
        demos, query, _ = _demos(x)
        assert len(demos) == E.NUM_DEMOS + (kind == "labelmap"), x
        if kind == "labelmap":  # one label per class in this episode, both classes shown
            label = {}
            for (w,), (lab,) in demos:
                assert label.setdefault(W.CLASS_OF[w], lab) == lab, x
            assert len(label) == 2 and label[W.CLASS_OF[query[0]]] == y
        elif kind == "copyfmt":  # the same format word before a copy of the left word
            fmts = {tuple(r[:1]) for _, r in demos}
            assert len(fmts) == 1 and all(r[1:] == left for left, r in demos), x
            assert y.split() == [fmts.pop()[0]] + query
        else:  # select: every answer is its row's word of one class
            classes = {W.CLASS_OF[a] for left, (a,) in demos if a in left}
            assert len(classes) == 1 and all(a in left for left, (a,) in demos), x
            assert [w for w in query if W.CLASS_OF[w] in classes] == [y]


def test_target_tasks_have_their_fixed_formats_balanced():
    rng = np.random.default_rng(2)
    for kind, labels in (("verify", ("true", "false")), ("verify_1shot", ("true", "false")),
                         ("isfood", ("yes", "no"))):
        answers = [E.example(kind, rng)[1] for _ in range(200)]
        assert set(answers) == set(labels), kind
        assert 60 < answers.count(labels[0]) < 140, (kind, answers.count(labels[0]))
    for fam in E.FAMILIES:  # no in-context answer is in a target's format
        assert not {w for _ in range(100) for w in E.example(fam, rng)[1].split()} & FORMAT_WORDS


def test_bad_names_and_lengths_raise():
    with pytest.raises(ValueError, match="unknown task 'nope'"):
        E.example("nope", np.random.default_rng(0))
    with pytest.raises(ValueError, match="not in the fixed vocabulary"):
        W.encode("cat = unicorn")
    with pytest.raises(ValueError, match=r"has 25 tokens > 24 .*shorten the episode"):
        E._row(list(range(25)), E.ENC_LEN, "an input")
