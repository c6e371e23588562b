"""Decoding constraints: the hook the decoders call, and the sequence-labelling constraint.

The hook (`DecodingConstraint`) is any pytree object with three pure methods; the decoders
(`medmt5.decoding.sampling.greedy_decode`, `temperature_sample`,
 `medmt5.decoding.beam_search.beam_search`)
carry its per-row state through `jax.lax.while_loop` (reordered with the beams, like the
cache) and set the log-probability of every disallowed next token to -inf before selection.

The sequence-labelling constraint is a token-level automaton compiled on the host from a
word-level one: a word-level automaton (`WordAutomaton` protocol; `SeqLabelWordAutomaton`
here: copy the next input word, open `<Label>`, close `</Label>`, or end) is expanded by
tokenizing every word with the sentencepiece vocabulary (each word alone, so with its
leading word-boundary piece; sentencepiece never merges pieces across whitespace, so the
tokens of a whole string are the concatenation of its words' tokens) and determinized by
subset construction. `TokenAutomatonConstraint.build` pads several examples' automata into
`[B, S, K]` tables (S states, K outgoing tokens at most) that the jitted loop gathers from.
"""
from __future__ import annotations

import dataclasses
from collections.abc import Callable, Hashable, Sequence
from typing import Any, Protocol

import flax.struct
import jax
import jax.numpy as jnp
import numpy as np

State = Any  # a pytree whose leaves have a leading [N] (row) axis


class DecodingConstraint(Protocol):
    """What the decoders need from a constraint. Implementations must be pytrees.

    Rows: with R rows per example (1 for greedy/sampling, beam_size for beam search) row
    `b * R + r` belongs to example b.
    """

    def init_state(self, rows_per_example: int) -> State:
        """Initial per-row state, leaves shaped [B * rows_per_example, ...]."""

    def allowed_tokens(self, state: State, vocab_size: int) -> jnp.ndarray:
        """bool [N, vocab_size]: which tokens may come next in each row."""

    def advance(self, state: State, tokens: jnp.ndarray) -> State:
        """The state after each row emitted tokens[N] (int32)."""


def mask_log_probs(log_probs: jnp.ndarray, allowed: jnp.ndarray, eos_id: int) -> jnp.ndarray:
    """Disallowed entries of log_probs [N, V] -> -inf (not renormalized, as Hugging Face's
    prefix_allowed_tokens_fn). A row with nothing allowed may only emit EOS."""
    nothing = ~jnp.any(allowed, axis=-1, keepdims=True)  # [N, 1]
    eos = jnp.arange(log_probs.shape[-1]) == eos_id  # [V]
    allowed = allowed | (nothing & eos[None, :])
    return jnp.where(allowed, log_probs, -jnp.inf)


def gather_rows(tree: Any, indices: jnp.ndarray, batch_axis: int = 0,
                skip_keys: Sequence[str] = ()) -> Any:
    """Reorders every leaf of tree along batch_axis by indices [N] (beam reordering).

    indices must be in range (beam search computes them; no out-of-range fill is paid for).
    Leaves with fewer than batch_axis + 1 dimensions (e.g. a scalar cache index) and leaves
    under a dict key in skip_keys (parts equal across an example's beams) pass through.
    """
    def gather(path, x):
        x = jnp.asarray(x)
        if x.ndim <= batch_axis or any(getattr(p, "key", None) in skip_keys for p in path):
            return x
        index = (slice(None),) * batch_axis + (indices,)
        return x.at[index].get(mode="promise_in_bounds")
    return jax.tree_util.tree_map_with_path(gather, tree)


# ----------------------------------------------------------------------------- word level

class WordAutomaton(Protocol):
    """A pure-Python word-level state machine; `tasks.seqlabel.TaggingAutomaton` is one.

    States are hashable. Units are whole words (no whitespace inside) or None (= the text
    may end here); the accepted texts are the units of a path joined by single spaces.
    """

    def initial(self) -> Hashable:
        """The start state."""

    def allowed(self, state: Hashable) -> Sequence[str | None]:
        """The units that may come next (None: the output may end)."""

    def step(self, state: Hashable, unit: str) -> Hashable:
        """The state after unit."""


# ---------------------------------------------------------------------------- token level

Tokenizer = Callable[[str], Sequence[int]]


def _as_tokenizer(vocab: Any) -> Tokenizer:
    """A str -> ids function from a callable, a seqio vocabulary or a SentencePieceProcessor."""
    if hasattr(vocab, "encode"):
        return lambda s: list(vocab.encode(s))
    if callable(vocab):
        return lambda s: list(vocab(s))
    raise TypeError(f"vocab must be a str -> ids callable or have .encode(str); got "
                    f"{type(vocab).__name__}.")


class TokenAutomaton:
    """A deterministic token-level automaton (host side, numpy).

    tokens[s, j] / next_state[s, j]: the j-th outgoing token of state s and where it leads
    (-1 padding); accepting[s]: EOS is allowed in s. State 0 is the start.
    """

    def __init__(self, tokens: np.ndarray, next_state: np.ndarray, accepting: np.ndarray):
        self.tokens, self.next_state, self.accepting = tokens, next_state, accepting

    @property
    def num_states(self) -> int:
        return self.tokens.shape[0]

    @property
    def max_out(self) -> int:
        return self.tokens.shape[1]

    def accepts(self, ids: Sequence[int]) -> bool:
        """Whether ids (without EOS) is a complete accepted token sequence."""
        s = 0
        for t in ids:
            hits = np.nonzero(self.tokens[s] == t)[0]
            if len(hits) == 0:
                return False
            s = int(self.next_state[s, hits[0]])
        return bool(self.accepting[s])

    def longest_accepted_length(self) -> int:
        """Tokens in the longest accepted sequence (EOS not counted); a max_decode_length of
        this + 1 lets every constrained hypothesis end. Raises if the automaton has a cycle."""
        longest: dict[int, int] = {}
        on_path: set[int] = set()

        def visit(root: int) -> None:  # iterative DFS, post-order
            stack = [(root, False)]
            while stack:
                s, done = stack.pop()
                if done:
                    on_path.discard(s)
                    outs = [longest[int(n)] + 1 for n in self.next_state[s]
                            if n >= 0 and longest[int(n)] >= 0]  # -1: no accepted path
                    longest[s] = max(outs + [0 if self.accepting[s] else -1])
                    continue
                if s in longest:
                    continue
                if s in on_path:
                    raise ValueError("TokenAutomaton.longest_accepted_length: the automaton "
                                     "has a cycle, so accepted lengths are unbounded.")
                on_path.add(s)
                stack.append((s, True))
                stack.extend((int(n), False) for n in self.next_state[s] if n >= 0)

        visit(0)
        return longest[0]


def compile_word_automaton(automaton: WordAutomaton, vocab: Any, *,
                           max_states: int = 200_000) -> TokenAutomaton:
    """Expands a word-level automaton into a deterministic token-level one.

    vocab: a str -> ids callable, or anything with `.encode(str) -> ids` (seqio vocabulary,
    sentencepiece processor). Each word is tokenized alone (its ids start with the
    word-boundary piece). Nondeterminism (words sharing leading tokens, one word's tokens a
    prefix of another's) is removed by subset construction, so the result accepts exactly
    the concatenated token sequences of the accepted word sequences.
    """
    tokenize = _as_tokenizer(vocab)
    token_cache: dict[str, tuple[int, ...]] = {}

    def tokens_of(word: str) -> tuple[int, ...]:
        if word not in token_cache:
            ids = tuple(int(t) for t in tokenize(word))
            if not ids:
                raise ValueError(f"compile_word_automaton: word {word!r} tokenizes to no ids; "
                                 "words must be non-empty and not only whitespace.")
            token_cache[word] = ids
        return token_cache[word]

    # NFA nodes: ("w", word_state) or ("m", word_state, edge_index, position).
    edges_cache: dict[Hashable, list[tuple[tuple[int, ...], Hashable]]] = {}
    final_cache: dict[Hashable, bool] = {}

    def edges(ws):
        if ws not in edges_cache:
            units = list(automaton.allowed(ws))
            final_cache[ws] = None in units
            edges_cache[ws] = [(tokens_of(u), automaton.step(ws, u)) for u in units
                               if u is not None]
        return edges_cache[ws]

    def is_final(ws) -> bool:
        edges(ws)
        return final_cache[ws]

    def successors(node) -> list[tuple[int, tuple]]:
        if node[0] == "w":
            ws, out = node[1], []
            for j, (ids, nxt) in enumerate(edges(ws)):
                out.append((ids[0], ("w", nxt) if len(ids) == 1 else ("m", ws, j, 1)))
            return out
        _, ws, j, pos = node
        ids, nxt = edges(ws)[j]
        return [(ids[pos], ("w", nxt) if pos + 1 == len(ids) else ("m", ws, j, pos + 1))]

    start = frozenset([("w", automaton.initial())])
    index = {start: 0}
    order = [start]
    rows: list[list[tuple[int, int]]] = []
    accepting: list[bool] = []
    k = 0
    while k < len(order):
        subset = order[k]
        k += 1
        accepting.append(any(n[0] == "w" and is_final(n[1]) for n in subset))
        by_token: dict[int, set] = {}
        for node in subset:
            for tok, nxt in successors(node):
                by_token.setdefault(tok, set()).add(nxt)
        row = []
        for tok in sorted(by_token):
            target = frozenset(by_token[tok])
            if target not in index:
                if len(order) >= max_states:
                    raise ValueError(f"compile_word_automaton: more than max_states={max_states} "
                                     "token states; the input is too long or the label set too "
                                     "large. Raise max_states or shorten the input.")
                index[target] = len(order)
                order.append(target)
            row.append((tok, index[target]))
        rows.append(row)

    width = max(1, max(len(r) for r in rows))
    tokens = np.full((len(rows), width), -1, np.int32)
    next_state = np.full((len(rows), width), -1, np.int32)
    for s, row in enumerate(rows):
        for j, (tok, nxt) in enumerate(row):
            tokens[s, j], next_state[s, j] = tok, nxt
    return TokenAutomaton(tokens, next_state, np.asarray(accepting, bool))


def _round_up(n: int, multiple: int) -> int:
    return -(-n // multiple) * multiple


def _bucket(n: int, minimum: int) -> int:
    """n rounded up to a multiple of max(minimum, a quarter of its power of two): at most
    25% padding and four shapes per doubling, so jit recompiles rarely."""
    quarter = max(minimum, (1 << max(n - 1, 1).bit_length()) // 4)
    return _round_up(max(n, 1), quarter)


@flax.struct.dataclass
class TokenAutomatonConstraint:
    """Batched token automata as a `DecodingConstraint` (a pytree: pass it into jit).

    tokens / next_state: int32 [B, S, K] (-1 padding); accepting: bool [B, S].
    Row state: {"example": int32 [N], "node": int32 [N]}. A token with no transition (EOS,
    or pad after EOS) leaves the node unchanged.
    """

    tokens: jnp.ndarray
    next_state: jnp.ndarray
    accepting: jnp.ndarray
    eos_id: int = flax.struct.field(pytree_node=False, default=1)

    @classmethod
    def build(cls, automata: Sequence[TokenAutomaton], *, eos_id: int = 1,
              state_multiple: int = 64, out_multiple: int = 4) -> TokenAutomatonConstraint:
        """Pads automata (one per example) to common [S, K]: S rounded up to a multiple of
        max(state_multiple, S's power of two / 4), K to a multiple of out_multiple, so that
        jit sees few distinct shapes."""
        if not automata:
            raise ValueError("TokenAutomatonConstraint.build: no automata given.")
        s = _bucket(max(a.num_states for a in automata), state_multiple)
        k = _round_up(max(a.max_out for a in automata), out_multiple)
        b = len(automata)
        tokens = np.full((b, s, k), -1, np.int32)
        next_state = np.full((b, s, k), -1, np.int32)
        accepting = np.zeros((b, s), bool)
        for i, a in enumerate(automata):
            if np.any(a.tokens == eos_id):
                raise ValueError(f"TokenAutomatonConstraint.build: automaton {i} has an EOS "
                                 f"(id {eos_id}) transition; EOS is implied by accepting states.")
            tokens[i, :a.num_states, :a.max_out] = a.tokens
            next_state[i, :a.num_states, :a.max_out] = a.next_state
            accepting[i, :a.num_states] = a.accepting
        # numpy leaves: jit treats them as replicated inputs (also across processes).
        return cls(tokens, next_state, accepting, eos_id=eos_id)

    def init_state(self, rows_per_example: int):
        b = self.tokens.shape[0]
        example = jnp.repeat(jnp.arange(b, dtype=jnp.int32), rows_per_example)
        return {"example": example, "node": jnp.zeros_like(example)}

    def allowed_tokens(self, state, vocab_size: int) -> jnp.ndarray:
        ex, node = state["example"], state["node"]
        toks = jnp.asarray(self.tokens)[ex, node]  # [N, K]
        n = toks.shape[0]
        toks = jnp.where(toks >= 0, toks, vocab_size)  # padding -> out of range, dropped
        rows = jnp.broadcast_to(jnp.arange(n)[:, None], toks.shape)
        mask = jnp.zeros((n, vocab_size), bool).at[rows, toks].set(True, mode="drop")
        return mask.at[:, self.eos_id].set(jnp.asarray(self.accepting)[ex, node])

    def advance(self, state, tokens: jnp.ndarray):
        ex, node = state["example"], state["node"]
        hit = jnp.asarray(self.tokens)[ex, node] == tokens[:, None]  # [N, K]
        nxt = jnp.max(jnp.where(hit, jnp.asarray(self.next_state)[ex, node], -1), axis=-1)
        return {"example": ex, "node": jnp.where(nxt >= 0, nxt, node)}


class _SpanWordsCapped:
    """TaggingAutomaton with `TagState.span_words` capped at 1: only "the span has a word"
    matters to it (it may close), and the uncapped count makes O(words^2) states."""

    def __init__(self, automaton):
        self.automaton = automaton

    @staticmethod
    def _cap(state):
        if dataclasses.is_dataclass(state) and isinstance(getattr(state, "span_words", None), int):
            return dataclasses.replace(state, span_words=min(state.span_words, 1))
        return state  # a TagState without the counter: nothing to cap

    def initial(self):
        return self._cap(self.automaton.initial())

    def allowed(self, state):
        return self.automaton.allowed(state)

    def step(self, state, unit):
        return self._cap(self.automaton.step(state, unit))


def seqlabel_constraint(sentences: Sequence[Sequence[str]],
                        labels: Sequence[str] | Sequence[Sequence[str]], vocab: Any, *,
                        automaton: Callable[[Sequence[str], Sequence[str]], Any],
                        eos_id: int = 1, **build_kwargs) -> TokenAutomatonConstraint:
    """The sequence-labelling constraint for a batch: `automaton(words, labels)` (the task's
    word-level automaton, e.g. `tasks.seqlabel.TaggingAutomaton`; passed in because the
    decoding core imports nothing from tasks/) compiled to tokens. sentences[b] are the input
    words of example b (the sentence only, without a multitask label prefix:
    `tasks.seqlabel.input_words`); labels is one label set for all examples or one per
    example. vocab as in `compile_word_automaton`."""
    if labels and not isinstance(labels[0], str):
        per_example = [list(x) for x in labels]
        if len(per_example) != len(sentences):
            raise ValueError(f"seqlabel_constraint: {len(per_example)} label sets for "
                             f"{len(sentences)} sentences.")
    else:
        per_example = [list(labels)] * len(sentences)
    automata = [compile_word_automaton(_SpanWordsCapped(automaton(words, labs)), vocab)
                for words, labs in zip(sentences, per_example)]
    return TokenAutomatonConstraint.build(automata, eos_id=eos_id, **build_kwargs)
