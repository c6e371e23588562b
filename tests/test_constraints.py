"""Word -> token automaton compilation, the jitted constraint, and constrained decoding of a
random-weight model: every output must parse back to a valid tagging of its input."""
import itertools
import os

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
import sentencepiece as spm

from medmt5.decoding import sampling as decoding
from medmt5.decoding.constraints import (
    TokenAutomaton,
    TokenAutomatonConstraint,
    compile_word_automaton,
    seqlabel_constraint,
)
from medmt5.model.config import T5Config
from medmt5.model.transformer import Transformer
from tasks import seqlabel

VOCAB_PATH = os.path.join(os.path.dirname(__file__), os.pardir, "tasks", "data", "vocab",
                          "medmt5_tiny.model")
EOS = 1


@pytest.fixture(scope="module")
def sp():
    return spm.SentencePieceProcessor(model_file=VOCAB_PATH)


class ListAutomaton:
    """Word automaton from explicit edges {state: [(word, next)]} and final states."""

    def __init__(self, edges, finals):
        self.edges, self.finals = edges, finals

    def initial(self):
        return 0

    def allowed(self, state):
        return [w for w, _ in self.edges.get(state, [])] + ([None] if state in self.finals else [])

    def step(self, state, unit):
        return dict(self.edges[state])[unit]


def word_language(auto, max_words):
    """All accepted word sequences of at most max_words words."""
    out, frontier = set(), [((), auto.initial())]
    for _ in range(max_words + 1):
        nxt = []
        for words, state in frontier:
            if None in auto.allowed(state):
                out.add(words)
            for w in auto.allowed(state):
                if w is not None:
                    nxt.append((words + (w,), auto.step(state, w)))
        frontier = nxt
    return out


def test_compile_handles_shared_prefixes_and_prefix_words():
    # "ab" is a token prefix of "abc" and both share a first token with "ax".
    toks = {"ab": [5, 6], "abc": [5, 6, 7], "ax": [5, 8], "c": [7], "d": [9]}
    auto = ListAutomaton({0: [("ab", 1), ("abc", 2), ("ax", 2)],
                          1: [("c", 3), ("d", 2)], 2: [("d", 3)]}, finals={2, 3})
    token_auto = compile_word_automaton(auto, lambda w: toks[w])
    want = {tuple(itertools.chain.from_iterable(toks[w] for w in ws))
            for ws in word_language(auto, 4)}
    assert want == {(5, 6, 7), (5, 6, 7, 9), (5, 8), (5, 8, 9), (5, 6, 9), (5, 6, 9, 9)}
    got = {seq for n in range(7) for seq in itertools.product([5, 6, 7, 8, 9], repeat=n)
           if token_auto.accepts(seq)}
    assert got == want
    # Deterministic: no state has the same token twice.
    for row in token_auto.tokens:
        real = row[row >= 0]
        assert len(set(real.tolist())) == len(real)
    assert token_auto.longest_accepted_length() == 4


def test_compile_rejects_words_without_tokens():
    auto = ListAutomaton({0: [("x", 1)]}, finals={1})
    with pytest.raises(ValueError, match="tokenizes to no ids"):
        compile_word_automaton(auto, lambda w: [])


SENTENCES = [
    "Patient with dilated cardiomyopathy .".split(),
    "Treatment combines lifestyle measures with fluoxetine ; lamotrigine is a drug .".split(),
    "Risk factors include infections".split(),
    "The".split(),
]


def test_seqlabel_automaton_accepts_exactly_valid_taggings(sp):
    labels = ["Disease", "Chemical"]
    words = SENTENCES[0]
    auto = compile_word_automaton(seqlabel.TaggingAutomaton(words, labels), sp)
    rs = np.random.RandomState(0)
    for _ in range(30):
        tags, prev = [], None
        for _ in words:
            t = rs.choice(["O", "B-Disease", "I-Disease", "B-Chemical"])
            tags.append(t if t != "I-Disease" or prev in ("B-Disease", "I-Disease") else "O")
            prev = tags[-1]
        text = seqlabel.iob_to_tagged(words, tags, labels)
        ids = sp.encode(text)
        assert ids == [i for u in text.split() for i in sp.encode(u)], "per-word tokenization"
        assert auto.accepts(ids), text
    bad = ["Patient with dilated cardiomyopathy",  # a word missing
           "Patient with dilated cardiomyopathy . .",  # a word extra
           "Patient with <Disease> dilated cardiomyopathy .",  # unclosed
           "Patient with <Disease> </Disease> dilated cardiomyopathy .",  # empty span
           "Patient <Disease> with <Chemical> dilated </Chemical> </Disease> cardiomyopathy .",
           "Patient with <Drug> dilated </Drug> cardiomyopathy .",  # unknown label
           "Patient with dilated <Disease> cardiomyopathy </Chemical> .",  # mismatched close
           "Patient with dilatedcardiomyopathy ."]  # words merged
    for text in bad:
        assert not auto.accepts(sp.encode(text)), text
    longest = "<Disease> Patient </Disease> <Disease> with </Disease> <Disease> dilated " \
              "</Disease> <Disease> cardiomyopathy </Disease> <Disease> . </Disease>"
    assert auto.longest_accepted_length() >= len(sp.encode(longest))


def test_seqlabel_constraint_is_linear_in_sentence_length(sp):
    words = ("Risk factors include previous infections and a family history of the disease "
             ". Diagnosis is based on the clinical history").split()
    labels = ["Disease", "Chemical"]
    c = seqlabel_constraint([words], labels, sp, automaton=seqlabel.TaggingAutomaton,
                            eos_id=EOS, state_multiple=1)
    full = compile_word_automaton(seqlabel.TaggingAutomaton(words, labels), sp)
    used = int(np.asarray(c.accepting).shape[1])
    assert used <= 40 * len(words) < full.num_states
    # The same language: random valid taggings and corruptions of them.
    small = TokenAutomaton(np.asarray(c.tokens[0]), np.asarray(c.next_state[0]),
                           np.asarray(c.accepting[0]))
    rs = np.random.RandomState(1)
    for _ in range(20):
        tags = [rs.choice(["O", "B-Disease", "B-Chemical"]) for _ in words]
        units = seqlabel.iob_to_tagged(words, tags, labels).split()
        for variant in (units, units[:-1], units[1:], units + ["</Disease>"]):
            ids = sp.encode(" ".join(variant))
            assert small.accepts(ids) == full.accepts(ids), variant


def test_jitted_constraint_matches_host_automaton(sp):
    labels = ["Disease"]
    autos = [compile_word_automaton(seqlabel.TaggingAutomaton(w, labels), sp)
             for w in SENTENCES[:2]]
    c = TokenAutomatonConstraint.build(autos, eos_id=EOS)
    texts = ["Patient with dilated <Disease> cardiomyopathy </Disease> .",
             "<Disease> Treatment </Disease> combines lifestyle measures with fluoxetine ; "
             "lamotrigine is a drug ."]
    paths = [sp.encode(t) for t in texts]
    state = c.init_state(2)  # two rows per example: rows 0, 1 -> example 0
    allowed = jax.jit(c.allowed_tokens, static_argnums=1)
    advance = jax.jit(c.advance)
    vocab = 2100
    for t in range(max(map(len, paths)) + 1):
        mask = np.asarray(allowed(state, vocab))
        for row in range(4):
            ex, path = row // 2, paths[row // 2]
            s = int(state["node"][row])
            want = set(autos[ex].tokens[s][autos[ex].tokens[s] >= 0].tolist())
            if autos[ex].accepting[s]:
                want.add(EOS)
            assert set(np.nonzero(mask[row])[0].tolist()) == want
            if t < len(path):
                assert mask[row, path[t]]
            if t == len(path):
                assert mask[row, EOS]
        nxt = [paths[r // 2][t] if t < len(paths[r // 2]) else EOS for r in range(4)]
        state = advance(state, jnp.asarray(nxt, jnp.int32))


@pytest.fixture(scope="module")
def model():
    cfg = T5Config(vocab_size=2176, d_model=32, d_kv=8, d_ff=64, num_heads=2,
                   num_encoder_layers=1, num_decoder_layers=1)
    m = Transformer(cfg)
    enc = jnp.ones((1, 4), jnp.int32)
    init = jax.jit(lambda rng: m.init(rng, enc, enc, enable_dropout=False)["params"])
    params = nn.unbox(init(jax.random.PRNGKey(1)))
    return m, params


def count_taggings(auto):
    """Number of accepted unit sequences of a word automaton (acyclic)."""
    memo = {}

    def count(state):
        if state not in memo:
            memo[state] = sum(1 if u is None else count(auto.step(state, u))
                              for u in auto.allowed(state))
        return memo[state]
    return count(auto.initial())


def pad_batch(rows):
    out = np.zeros((len(rows), max(map(len, rows))), np.int32)
    for i, r in enumerate(rows):
        out[i, :len(r)] = r
    return out


@pytest.mark.parametrize("method", ["greedy", "beam", "sample"])
def test_constrained_generation_is_always_a_valid_tagging(sp, model, method):
    m, params = model
    label_sets = [["Disease"], ["Chemical", "Disease"], ["Claim", "Premise"], ["Disease"]]
    inputs = [seqlabel.make_input(w, labs if i % 2 else None)
              for i, (w, labs) in enumerate(zip(SENTENCES, label_sets))]
    enc = pad_batch([sp.encode(t) + [EOS] for t in inputs])
    words = [seqlabel.input_words(t, labs) for t, labs in zip(inputs, label_sets)]
    assert words == SENTENCES
    constraint = seqlabel_constraint(words, label_sets, sp, automaton=seqlabel.TaggingAutomaton,
                                     eos_id=EOS)
    longest = max(compile_word_automaton(seqlabel.TaggingAutomaton(w, labs), sp)
                  .longest_accepted_length() for w, labs in zip(words, label_sets))
    length = longest + 1  # every constrained hypothesis can end
    seqs, scores = decoding.generate(
        m, params, {"encoder_input_tokens": enc}, method=method, beam_size=4,
        max_decode_length=length, constraint=constraint, rng=jax.random.PRNGKey(2),
        temperature=1.0, return_all_beams=method == "beam")
    seqs = np.asarray(seqs)
    if method != "beam":
        seqs = seqs[:, None]
    n_tagged = 0
    for b, (ws, labs) in enumerate(zip(words, label_sets)):
        for hyp, score in zip(seqs[b], np.atleast_1d(np.asarray(scores)[b])):
            ids = hyp.tolist()
            if np.isneginf(score):  # an empty beam slot: fewer valid taggings than beams
                assert method == "beam" and not any(ids)
                assert count_taggings(seqlabel.TaggingAutomaton(ws, labs)) < 4
                continue
            assert EOS in ids and np.isfinite(score)
            text = sp.decode(ids[:ids.index(EOS)])
            stats = seqlabel.ParseStats()
            parsed = seqlabel.parse_tagged(text, labs, stats)
            assert stats.well_formed, (text, stats)
            assert [w for w, _, _ in parsed] == ws, text
            n_tagged += any(u.startswith("<") for u in text.split())
    if method == "sample":
        assert n_tagged > 0, "random sampling should open some tags"
