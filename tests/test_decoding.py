"""Decoding loops on a toy trigram `tokens_to_logits` (the cache holds the previous token, so
a wrong beam reordering changes the result), compared with exhaustive search and a plain
Python beam search."""
import functools
import itertools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from medmt5.decoding import beam_search as bs
from medmt5.decoding import sampling as decoding
from medmt5.decoding.constraints import TokenAutomaton, TokenAutomatonConstraint

V, EOS, START = 5, 1, 0


def make_table(seed, vocab=V, sharp=2.0):
    """log-probs [V(prev2), V(prev), V(next)] of a random trigram model."""
    logits = np.random.RandomState(seed).randn(vocab, vocab, vocab) * sharp
    return np.asarray(jax.nn.log_softmax(jnp.asarray(logits, jnp.float32), axis=-1))


def make_ttl(table):
    """tokens_to_logits whose cache = {"prev": [N] token before the last, "calls": scalar}."""
    t = jnp.asarray(table)

    def ttl(tokens, cache, step):
        last = tokens[:, 0]
        logits = t[cache["prev"], last]
        return logits, {"prev": last, "calls": cache["calls"] + 1}
    return ttl


def init_cache(n):
    return {"prev": jnp.full((n,), START, jnp.int32), "calls": jnp.int32(0)}


def seq_logprob(table, seq):
    prev2, prev, total = START, START, 0.0
    for tok in seq:
        total += float(table[prev2, prev, tok])
        prev2, prev = prev, tok
    return total


def exhaustive(table, length, alpha, accept=lambda content, eos: True, vocab=V):
    """All hypotheses: ends with EOS (first EOS) or reaches `length`; best first."""
    out = []
    for n in range(1, length + 1):
        for body in itertools.product([t for t in range(vocab) if t != EOS], repeat=n - 1):
            for last in range(vocab):
                seq = body + (last,)
                if last != EOS and n < length:
                    continue
                content = seq[:-1] if last == EOS else seq
                if not accept(content, last == EOS):
                    continue
                pen = ((5.0 + n) / 6.0) ** alpha
                out.append((seq_logprob(table, seq) / pen, seq))
    return sorted(out, key=lambda x: -x[0])


def python_beam(table, k, length, alpha):
    """Reference beam search with the same rules (EOS or max length ends a beam)."""
    alive, finished = [((), 0.0)], []
    for i in range(length):
        cands = []
        for seq, lp in alive:
            prev2 = seq[-2] if len(seq) >= 2 else START
            prev = seq[-1] if seq else START
            for tok in range(V):
                cands.append((seq + (tok,), lp + float(table[prev2, prev, tok])))
        cands.sort(key=lambda x: -x[1])
        cands = cands[:2 * k]
        for seq, lp in cands:
            if seq[-1] == EOS or i == length - 1:
                finished.append((lp / ((5.0 + i + 1) / 6.0) ** alpha, seq))
        alive = [c for c in cands if c[0][-1] != EOS][:k]
    finished.sort(key=lambda x: -x[0])
    return finished[:k]


def run_beam(table, k, length, alpha, batch=1, constraint=None, unroll=1):
    fn = jax.jit(lambda cache: bs.beam_search(
        make_ttl(table), cache, batch_size=batch, beam_size=k, max_decode_length=length,
        alpha=alpha, eos_id=EOS, decoder_start_id=START, constraint=constraint,
        unroll=unroll))
    seqs, scores = fn(init_cache(batch * k))
    return np.asarray(seqs), np.asarray(scores)


def strip(seq):
    seq = list(seq)
    return tuple(seq[:seq.index(EOS) + 1]) if EOS in seq else tuple(t for t in seq)


@pytest.mark.parametrize("seed,alpha", [(0, 0.6), (1, 0.0), (2, 1.5)])
def test_wide_beam_equals_exhaustive_search(seed, alpha):
    table, length = make_table(seed), 3
    k = (V - 1) ** (length - 1)  # every non-EOS prefix stays alive: beam search is exact
    seqs, scores = run_beam(table, k, length, alpha)
    want = exhaustive(table, length, alpha)[:k]
    np.testing.assert_allclose(scores[0], [s for s, _ in want], rtol=1e-5)
    got = [strip(s[:length]) for s in seqs[0]]
    assert got == [w for _, w in want]


@pytest.mark.parametrize("seed,k", [(3, 2), (4, 3), (5, 1)])
def test_narrow_beam_matches_python_reference(seed, k):
    table, length, alpha = make_table(seed, sharp=1.0), 5, 0.6
    seqs, scores = run_beam(table, k, length, alpha)
    want = python_beam(table, k, length, alpha)
    np.testing.assert_allclose(scores[0], [s for s, _ in want], rtol=1e-5)
    assert [strip(s) for s in seqs[0]] == [w for _, w in want]
    # Padding after EOS is 0.
    for s in seqs[0]:
        if EOS in s:
            assert not s[list(s).index(EOS) + 1:].any()


def test_beam_batch_rows_are_independent():
    table = make_table(6)
    seqs, scores = run_beam(table, 3, 4, 0.6, batch=4)
    for b in range(1, 4):
        np.testing.assert_array_equal(seqs[b], seqs[0])
        np.testing.assert_allclose(scores[b], scores[0])
    assert np.all(np.diff(scores[0]) <= 0), "beams must be sorted best first"


def run_greedy(table, length, batch=2, constraint=None):
    return jax.jit(lambda c: decoding.greedy_decode(
        make_ttl(table), c, batch_size=batch, max_decode_length=length, eos_id=EOS,
        decoder_start_id=START, constraint=constraint))(init_cache(batch))


def python_greedy(table, length):
    seq = ()
    for _ in range(length):
        prev2 = seq[-2] if len(seq) >= 2 else START
        prev = seq[-1] if seq else START
        seq += (int(np.argmax(table[prev2, prev])),)
        if seq[-1] == EOS:
            break
    return seq


@pytest.mark.parametrize("seed", [7, 8, 9])
def test_greedy_matches_python_and_beam_of_one(seed):
    table, length = make_table(seed, sharp=1.0), 6
    seqs, scores = run_greedy(table, length)
    want = python_greedy(table, length)
    assert strip(np.asarray(seqs)[0]) == want
    np.testing.assert_allclose(scores[0], seq_logprob(table, want), rtol=1e-5)
    bseqs, _ = run_beam(table, 1, length, alpha=0.0)
    np.testing.assert_array_equal(bseqs[0, 0], np.asarray(seqs)[0])


def run_sample(table, length, rng, batch=8, **kw):
    return jax.jit(lambda c, r: decoding.temperature_sample(
        make_ttl(table), c, r, batch_size=batch, max_decode_length=length, eos_id=EOS,
        decoder_start_id=START, **kw))(init_cache(batch), rng)


def test_sampling_limits_equal_greedy_and_rng_is_reproducible():
    table, length = make_table(10, sharp=1.0), 6
    greedy, _ = run_greedy(table, length, batch=8)
    rng = jax.random.PRNGKey(0)
    for kw in [dict(temperature=0.0), dict(temperature=1e-4), dict(temperature=1.0, top_k=1),
               dict(temperature=3.0, top_p=1e-6)]:
        seqs, _ = run_sample(table, length, rng, **kw)
        np.testing.assert_array_equal(seqs, greedy, err_msg=str(kw))
    a, sa = run_sample(table, length, rng, temperature=1.0)
    b, sb = run_sample(table, length, rng, temperature=1.0)
    np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(sa, sb)
    c, _ = run_sample(table, length, jax.random.PRNGKey(1), temperature=1.0)
    assert not np.array_equal(a, c), "different rngs should give different samples"
    assert len({tuple(r) for r in np.asarray(a)}) > 1, "rows should sample independently"


def test_top_k_sampling_stays_in_top_k():
    table, length = make_table(11, sharp=0.3), 1
    seqs, _ = run_sample(table, length, jax.random.PRNGKey(3), batch=64, temperature=5.0,
                         top_k=2)
    top2 = set(np.argsort(-table[START, START])[:2].tolist())
    assert set(np.asarray(seqs)[:, 0].tolist()) == top2


def test_filter_logits_top_p():
    logits = jnp.log(jnp.asarray([[0.5, 0.3, 0.15, 0.05]]))
    kept = np.isfinite(np.asarray(decoding.filter_logits(logits, top_p=0.7)))
    np.testing.assert_array_equal(kept, [[True, True, False, False]])
    kept = np.isfinite(np.asarray(decoding.filter_logits(logits, top_p=0.81)))
    np.testing.assert_array_equal(kept, [[True, True, True, False]])


# Constraint: the token automaton accepting {2 3, 3, 2 2 3, 4 4 4 4} (then EOS).
ACCEPTED = [(2, 3), (3,), (2, 2, 3), (4, 4, 4, 4)]


def toy_automaton():
    """States: 0 start, 1 after "2", 2 after "2 2", 3 accepting, 4-6 after one to three 4s."""
    edges = {0: [(2, 1), (3, 3), (4, 4)], 1: [(3, 3), (2, 2)], 2: [(3, 3)],
             4: [(4, 5)], 5: [(4, 6)], 6: [(4, 3)]}
    tokens = np.full((7, 3), -1, np.int32)
    nxt = np.full((7, 3), -1, np.int32)
    for s, out in edges.items():
        for j, (tok, t) in enumerate(out):
            tokens[s, j], nxt[s, j] = tok, t
    return TokenAutomaton(tokens, nxt, np.arange(7) == 3)


def test_toy_automaton_accepts_exactly_its_language():
    a = toy_automaton()
    for n in range(0, 5):
        for seq in itertools.product(range(V), repeat=n):
            assert a.accepts(seq) == (seq in ACCEPTED), seq


@pytest.mark.parametrize("k", [3, 4])  # >= 3 alive prefixes: exact
def test_constrained_beam_equals_constrained_exhaustive(k):
    table, length, alpha = make_table(12), 5, 0.6
    constraint = TokenAutomatonConstraint.build([toy_automaton(), toy_automaton()], eos_id=EOS,
                                                state_multiple=4)
    seqs, scores = run_beam(table, k, length, alpha, batch=2, constraint=constraint)
    want = exhaustive(table, length, alpha, accept=lambda c, eos: eos and c in ACCEPTED)[:k]
    for b in range(2):
        np.testing.assert_allclose(scores[b], [s for s, _ in want], rtol=1e-5)
        assert [strip(s) for s in seqs[b]] == [w for _, w in want]


def test_constrained_beam_with_fewer_hypotheses_than_beams():
    table = make_table(13)
    constraint = TokenAutomatonConstraint.build([toy_automaton()], eos_id=EOS)
    seqs, scores = run_beam(table, 6, 5, 0.6, constraint=constraint)
    assert np.all(np.isfinite(scores[0, :4])) and np.all(np.isneginf(scores[0, 4:]))
    assert sorted(strip(s)[:-1] for s in seqs[0, :4]) == sorted(ACCEPTED)
    assert not seqs[0, 4:].any()


def test_constrained_greedy_is_accepted():
    for seed in range(14, 18):
        table = make_table(seed)
        constraint = TokenAutomatonConstraint.build([toy_automaton()] * 2, eos_id=EOS)
        seqs, scores = run_greedy(table, 6, batch=2, constraint=constraint)
        for row in np.asarray(seqs):
            assert strip(row)[-1] == EOS and strip(row)[:-1] in ACCEPTED
        assert np.all(np.isfinite(scores))


# ----------------------------------------------------------------------------- the model
import flax.linen as nn  # noqa: E402

from medmt5.model.config import T5Config  # noqa: E402
from medmt5.model.transformer import Transformer, scan_params  # noqa: E402

MODEL_V = 64


@pytest.fixture(scope="module")
def tiny():
    cfg = T5Config(vocab_size=MODEL_V, d_model=32, d_kv=8, d_ff=64, num_heads=2,
                   num_encoder_layers=1, num_decoder_layers=2)
    model = Transformer(cfg)
    rs = np.random.RandomState(0)
    enc = rs.randint(2, MODEL_V, (3, 9)).astype(np.int32)
    enc[1, 6:] = 0  # padding
    init = jax.jit(lambda rng: model.init(rng, enc, np.ones((3, 4), np.int32),
                                          enable_dropout=False)["params"])
    params = nn.unbox(init(jax.random.PRNGKey(0)))
    return cfg, model, params, jnp.asarray(enc)


@functools.partial(jax.jit, static_argnums=0)
def full_logits(model, params, enc, dec_in, input_embeddings=None, input_mask=None):
    """Uncached: the full teacher-forced forward pass over decoder inputs [N, T]."""
    variables = {"params": params}
    if input_embeddings is None:
        return model.apply(variables, enc, dec_in, enable_dropout=False)
    encoded = model.apply(variables, enc, enable_dropout=False, input_embeddings=input_embeddings,
                          input_mask=input_mask, method=model.encode)
    return model.apply(variables, encoded, input_mask, dec_in, enable_dropout=False,
                       method=model.decode)


def uncached_greedy(model, params, enc, length, **kw):
    """Python loop: re-run the full forward pass on the prefix, take the argmax."""
    n = enc.shape[0]
    dec_in = np.zeros((n, length), np.int32)  # decoder_start_id = 0
    out = np.zeros((n, length), np.int32)
    done = np.zeros(n, bool)
    for t in range(length):
        logits = np.asarray(full_logits(model, params, enc, jnp.asarray(dec_in), **kw))[:, t]
        tok = np.where(done, 0, logits.argmax(-1))
        out[:, t] = tok
        done |= tok == EOS
        if t + 1 < length:
            dec_in[:, t + 1] = tok
    return out


def test_cached_greedy_equals_uncached(tiny):
    cfg, model, params, enc = tiny
    length = 7
    seqs, scores = decoding.generate(model, params, {"encoder_input_tokens": enc},
                                     max_decode_length=length)
    want = uncached_greedy(model, params, enc, length)
    np.testing.assert_array_equal(np.asarray(seqs), want)
    # Scores: the summed log-probs of the full pass.
    logits = full_logits(model, params, enc, jnp.pad(want[:, :-1], ((0, 0), (1, 0))))
    lp = np.asarray(jax.nn.log_softmax(logits))
    keep = np.cumsum(want == EOS, axis=1) - (want == EOS) == 0
    ref = (np.take_along_axis(lp, want[..., None], -1)[..., 0] * keep).sum(-1)
    np.testing.assert_allclose(np.asarray(scores), ref, rtol=1e-4, atol=1e-4)
    # Sampling at temperature 0 is greedy through the model too.
    sampled, _ = decoding.generate(model, params, {"encoder_input_tokens": enc},
                                   method="sample", temperature=0.0, max_decode_length=length)
    np.testing.assert_array_equal(np.asarray(sampled), want)


def test_scanned_layers_decode_the_same(tiny):
    """Layer-scanned caches carry the batch on axis 1: beam reordering must follow it."""
    cfg, model, params, enc = tiny
    scfg = T5Config(**{**cfg.__dict__, "scan_layers": True})
    smodel, sparams = Transformer(scfg), scan_params(params)
    kw = dict(method="beam", beam_size=3, alpha=0.6, max_decode_length=6, return_all_beams=True)
    a = decoding.generate(model, params, {"encoder_input_tokens": enc}, **kw)
    b = decoding.generate(smodel, sparams, {"encoder_input_tokens": enc}, **kw)
    np.testing.assert_array_equal(np.asarray(a[0]), np.asarray(b[0]))
    np.testing.assert_allclose(np.asarray(a[1]), np.asarray(b[1]), rtol=1e-4, atol=1e-4)


def test_cached_beam_equals_uncached_beam(tiny):
    """The same beam search with a history 'cache' and the full forward pass each step."""
    cfg, model, params, enc = tiny
    k, length, n = 3, 6, enc.shape[0]
    enc_rows = jnp.repeat(enc, k, axis=0)

    def ttl(tokens, cache, step):
        hist = cache["hist"].at[:, step].set(tokens[:, 0])  # decoder inputs so far [N, L]
        logits = full_logits(model, params, enc_rows, hist)
        return jnp.take(logits, step, axis=1), {"hist": hist}

    want = jax.jit(lambda c: bs.beam_search(
        ttl, c, batch_size=n, beam_size=k, max_decode_length=length, alpha=0.6))(
        {"hist": jnp.zeros((n * k, length), jnp.int32)})
    got = decoding.generate(model, params, {"encoder_input_tokens": enc}, method="beam",
                            beam_size=k, alpha=0.6, max_decode_length=length,
                            return_all_beams=True)
    np.testing.assert_array_equal(np.asarray(got[0]), np.asarray(want[0]))
    np.testing.assert_allclose(np.asarray(got[1]), np.asarray(want[1]), rtol=1e-4, atol=1e-4)
    top = decoding.generate(model, params, {"encoder_input_tokens": enc}, method="beam",
                            beam_size=k, alpha=0.6, max_decode_length=length)
    np.testing.assert_array_equal(np.asarray(top[0]), np.asarray(want[0])[:, 0])


def test_prompt_and_precomputed_encoder_outputs(tiny):
    cfg, model, params, enc = tiny
    length, n = 7, enc.shape[0]
    prompt = jax.random.normal(jax.random.PRNGKey(5), (4, cfg.d_model))
    embedded = model.apply({"params": params}, enc, method=model.embed)
    emb = jnp.concatenate([jnp.broadcast_to(prompt, (n, 4, cfg.d_model)), embedded], axis=1)
    mask = jnp.concatenate([jnp.ones((n, 4), jnp.int32), (enc > 0).astype(jnp.int32)], axis=1)
    want = uncached_greedy(model, params, enc, length, input_embeddings=emb, input_mask=mask)
    batch = {"encoder_input_tokens": enc}
    got, _ = decoding.generate(model, params, batch, prompt=prompt, max_decode_length=length)
    np.testing.assert_array_equal(np.asarray(got), want)
    encoded = model.apply({"params": params}, enc, enable_dropout=False, input_embeddings=emb,
                          input_mask=mask, method=model.encode)
    pre, _ = decoding.generate(model, params, encoded=encoded, encoder_mask=mask,
                               max_decode_length=length)
    np.testing.assert_array_equal(np.asarray(pre), want)
    plain, _ = decoding.generate(model, params, batch, max_decode_length=length)
    assert not np.array_equal(np.asarray(plain), want), "the prompt should change the output"


def test_generate_rejects_bad_arguments(tiny):
    cfg, model, params, enc = tiny
    batch = {"encoder_input_tokens": enc}
    with pytest.raises(ValueError, match="method"):
        decoding.generate(model, params, batch, method="nucleus", max_decode_length=4)
    with pytest.raises(ValueError, match="max_decode_length"):
        decoding.generate(model, params, batch)
    with pytest.raises(ValueError, match="rng"):
        decoding.generate(model, params, batch, method="sample", max_decode_length=4)
    with pytest.raises(ValueError, match="encoder_mask"):
        decoding.generate(model, params, encoded=jnp.zeros((1, 3, cfg.d_model)),
                          max_decode_length=4)
    auto = TokenAutomaton(np.asarray([[2]], np.int32), np.asarray([[0]], np.int32),
                          np.asarray([True]))
    with pytest.raises(ValueError, match="constraint was built for"):
        decoding.generate(model, params, batch, max_decode_length=4,
                          constraint=TokenAutomatonConstraint.build([auto] * 2))
    # The target length is the default decode length.
    seqs, _ = decoding.generate(model, params, {**batch, "decoder_target_tokens":
                                                np.zeros((3, 7), np.int32)})
    assert seqs.shape == (3, 7)


# ---- top_k_by_chunks: beam search's candidate selection over beams x vocabulary ----------

@pytest.mark.parametrize("m", [1000, 1031, 128 * 40])
def test_top_k_by_chunks_equals_lax_top_k_with_ties_and_minus_inf(m):
    rs = np.random.RandomState(m)
    for trial in range(12):
        x = rs.randn(3, m).astype(np.float32)
        if trial % 3 == 0:
            x = np.round(x * 2) / 2  # many ties, across chunks too
        if trial % 4 == 0:
            x[:, rs.rand(m) < 0.9] = -np.inf
        if trial % 5 == 0:
            x[1] = -np.inf  # a row of -inf: the lowest indices, never the padding
        for k in (1, 6):
            want_v, want_i = jax.lax.top_k(jnp.asarray(x), k)
            got_v, got_i = jax.jit(bs.top_k_by_chunks, static_argnums=1)(jnp.asarray(x), k)
            np.testing.assert_array_equal(np.asarray(got_i), np.asarray(want_i))
            np.testing.assert_array_equal(np.asarray(got_v), np.asarray(want_v))
            assert int(np.asarray(got_i).max()) < m


def test_beam_over_a_large_vocabulary_matches_python_reference():
    """k x V = 3 x 400 candidates: the chunked top-k path (> 2k x 128) is the one taken."""
    vocab, k, length, alpha = 400, 3, 4, 0.6
    logits = np.random.RandomState(7).randn(vocab, vocab).astype(np.float32) * 3.0
    table = np.asarray(jax.nn.log_softmax(jnp.asarray(logits), axis=-1))  # [prev, next]
    t = jnp.asarray(table)

    def ttl(tokens, cache, step):
        return t[tokens[:, 0]], cache

    seqs, scores = jax.jit(lambda c: bs.beam_search(
        ttl, c, batch_size=1, beam_size=k, max_decode_length=length, alpha=alpha,
        eos_id=EOS, decoder_start_id=START))({"x": jnp.zeros((k,), jnp.int32)})

    alive, finished = [((), 0.0)], []
    for i in range(length):
        cands = sorted(((seq + (tok,), lp + float(table[seq[-1] if seq else START, tok]))
                        for seq, lp in alive for tok in range(vocab)), key=lambda c: -c[1])
        cands = cands[:2 * k]
        finished += [(lp / ((5.0 + i + 1) / 6.0) ** alpha, seq) for seq, lp in cands
                     if seq[-1] == EOS or i == length - 1]
        alive = [c for c in cands if c[0][-1] != EOS][:k]
    want = sorted(finished, key=lambda x: -x[0])[:k]
    np.testing.assert_allclose(np.asarray(scores)[0], [s for s, _ in want], rtol=1e-5)
    assert [strip(s) for s in np.asarray(seqs)[0]] == [w for _, w in want]


@pytest.mark.parametrize("length", [1, 4, 5])
def test_two_steps_per_iteration_equal_one(length):
    """unroll=2 (CPU generate): same beams and scores, odd and even lengths, with the early
    stop (sharp tables end beams early) and a batch."""
    for seed, sharp in ((0, 1.0), (1, 4.0), (2, 8.0)):
        table = make_table(seed, sharp=sharp)
        want = run_beam(table, 2, length, 0.6, batch=2)
        got = run_beam(table, 2, length, 0.6, batch=2, unroll=2)
        np.testing.assert_array_equal(got[0], want[0])
        np.testing.assert_allclose(got[1], want[1], rtol=1e-6)
    with pytest.raises(ValueError, match="unroll must be 1 or 2"):
        run_beam(make_table(0), 2, 3, 0.6, unroll=3)
