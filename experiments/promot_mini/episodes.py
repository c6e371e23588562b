"""In-context episodes and target tasks of the miniature, generated in memory (numpy).

In-context families (each episode draws a new mapping, so only reading the demonstrations
lowers the loss; the markers are drawn per episode from words.PAIR/SEP/QUERY_MARKERS):
  recall     associative recall: "k1 = v1 , k2 = v2 , k3 = v3 ? k3 =" -> "v3"
  labelmap   label mapping: two classes get two labels drawn per episode; demonstrations
             "x = label" for words of both classes; the query word's class decides -> "label"
  copyfmt    copy with format: "x = f x" with a format word f drawn per episode;
             query "y =" -> "f y" (two words)
  select     class selection: "a b c = b" where the answer is always the word of one class,
             the class drawn per episode; query "d e f =" -> its word of that class
Target tasks (no demonstrations, a fixed format of their own, learnt by tuning):
  verify     "check k1 = v1 , ... ? k = v" -> "true" / "false" (is v an animal: a fixed rule
             in recall's surface, so tuning on it can leak into the in-context families)
  verify_1shot  verify with one solved query first: "check CTX ? k = v false ? k' = v'"
  isfood     "classify x ?" -> "yes" / "no" (is x a food: a one-word rule, as verify's is; the
             first design, "compare x , y ?" -> same / different class, stayed at chance after
             800 fine-tuning steps at LR 1e-3, and so did same / different word)
`batch(kind, rng, n)` -> {"inputs" [n, ENC_LEN], "targets" [n, DEC_LEN]} int32 (pad 0,
targets end with EOS), deterministic in the numpy Generator it is given.
"""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from experiments.promot_mini import words as W

FAMILIES = ("recall", "labelmap", "copyfmt", "select")
TARGETS = ("verify", "isfood")
ENC_LEN = 24
DEC_LEN = 3          # answer words (1 or 2) + EOS, padded
NUM_PAIRS = 3        # recall / verify context pairs
NUM_DEMOS = 3        # demonstrations of labelmap (+1), copyfmt, select
CLASS_NAMES = tuple(W.CLASSES)


def _markers(rng: np.random.Generator, vary: bool) -> tuple[str, str, str]:
    if not vary:
        return W.PAIR_MARKERS[0], W.SEP_MARKERS[0], W.QUERY_MARKERS[0]
    return (W.PAIR_MARKERS[rng.integers(len(W.PAIR_MARKERS))],
            W.SEP_MARKERS[rng.integers(len(W.SEP_MARKERS))],
            W.QUERY_MARKERS[rng.integers(len(W.QUERY_MARKERS))])


def _words(rng: np.random.Generator, n: int, pool: Sequence[str] = W.CONTENT) -> list[str]:
    return [pool[i] for i in rng.choice(len(pool), n, replace=False)]


def _recall(rng, vary):
    pm, sm, qm = _markers(rng, vary)
    keys, vals = _words(rng, NUM_PAIRS), _words(rng, NUM_PAIRS)
    j = rng.integers(NUM_PAIRS)
    ctx = f" {sm} ".join(f"{k} {pm} {v}" for k, v in zip(keys, vals))
    return f"{ctx} {qm} {keys[j]} {pm}", vals[j]


def _labelmap(rng, vary):
    pm, sm, qm = _markers(rng, vary)
    c = [CLASS_NAMES[i] for i in rng.choice(len(CLASS_NAMES), 2, replace=False)]
    labels = _words(rng, 2, W.LABELS)
    order = [0, 1] + list(rng.integers(0, 2, NUM_DEMOS - 1))   # both classes demonstrated
    rng.shuffle(order)
    picks = {0: _words(rng, NUM_DEMOS + 2, W.CLASSES[c[0]]),
             1: _words(rng, NUM_DEMOS + 2, W.CLASSES[c[1]])}
    demos = [f"{picks[k].pop()} {pm} {labels[k]}" for k in order]
    q = int(rng.integers(2))
    return f" {sm} ".join(demos) + f" {qm} {picks[q].pop()} {pm}", labels[q]


def _copyfmt(rng, vary):
    pm, sm, qm = _markers(rng, vary)
    f = W.LABELS[rng.integers(len(W.LABELS))]
    xs = _words(rng, NUM_DEMOS + 1)
    demos = [f"{x} {pm} {f} {x}" for x in xs[:-1]]
    return f" {sm} ".join(demos) + f" {qm} {xs[-1]} {pm}", f"{f} {xs[-1]}"


def _select(rng, vary):
    pm, sm, qm = _markers(rng, vary)
    target = CLASS_NAMES[rng.integers(len(CLASS_NAMES))]
    others = [c for c in CLASS_NAMES if c != target]
    rows = []
    for _ in range(NUM_DEMOS + 1):
        cs = [target] + [others[i] for i in rng.choice(len(others), 2, replace=False)]
        ws = [W.CLASSES[c][rng.integers(12)] for c in cs]
        perm = rng.permutation(3)
        rows.append(([ws[i] for i in perm], ws[0]))
    demos = [f"{' '.join(r)} {pm} {a}" for r, a in rows[:-1]]
    q, a = rows[-1]
    return f" {sm} ".join(demos) + f" {qm} {' '.join(q)} {pm}", a


VERIFY_CLASS = "animal"


def _verify_query(rng, keys, vals):
    """(k, v, answer): k a context key, v any content word; true iff v is an animal (a fixed
    rule: the first design, true iff v is k's value, stayed at chance after 200
    fine-tuning steps, failing the >= 90% target gate)."""
    k = keys[rng.integers(NUM_PAIRS)]
    true = bool(rng.integers(2))
    pool = [w for w in W.CONTENT if (W.CLASS_OF[w] == VERIFY_CLASS) == true]
    return k, pool[rng.integers(len(pool))], "true" if true else "false"


def _verify(rng, vary, shots: int = 0):
    pm, sm, qm = _markers(rng, vary)
    keys, vals = _words(rng, NUM_PAIRS), _words(rng, NUM_PAIRS)
    ctx = f" {sm} ".join(f"{k} {pm} {v}" for k, v in zip(keys, vals))
    demos = ""
    for _ in range(shots):
        k, v, a = _verify_query(rng, keys, vals)
        demos += f" {qm} {k} {pm} {v} {a}"
    k, v, a = _verify_query(rng, keys, vals)
    return f"check {ctx}{demos} {qm} {k} {pm} {v}", a


FOOD_CLASS = "food"


def _isfood(rng, vary):
    _, _, qm = _markers(rng, vary)
    yes = bool(rng.integers(2))
    pool = [w for w in W.CONTENT if (W.CLASS_OF[w] == FOOD_CLASS) == yes]
    return f"classify {pool[rng.integers(len(pool))]} {qm}", "yes" if yes else "no"


GENERATORS = {"recall": _recall, "labelmap": _labelmap, "copyfmt": _copyfmt,
              "select": _select, "verify": _verify,
              "verify_1shot": lambda rng, vary: _verify(rng, vary, shots=1),
              "isfood": _isfood}


def example(kind: str, rng: np.random.Generator, vary_markers: bool = True) -> tuple[str, str]:
    """(input text, answer text) of one episode / target example."""
    if kind not in GENERATORS:
        raise ValueError(f"promot_mini: unknown task {kind!r}; one of {sorted(GENERATORS)}")
    return GENERATORS[kind](rng, vary_markers)


def _row(ids: list[int], length: int, what: str) -> np.ndarray:
    if len(ids) > length:
        raise ValueError(f"promot_mini: {what} has {len(ids)} tokens > {length} "
                         "(episodes.ENC_LEN / DEC_LEN); shorten the episode")
    return np.pad(np.asarray(ids, np.int32), (0, length - len(ids)))


def batch(kinds, rng: np.random.Generator, n: int,
          vary_markers: bool = True) -> dict[str, np.ndarray]:
    """n examples, each of a kind drawn uniformly from `kinds` (a name or a sequence)."""
    kinds = (kinds,) if isinstance(kinds, str) else tuple(kinds)
    inputs, targets, kind_ids = [], [], []
    for _ in range(n):
        k = int(rng.integers(len(kinds))) if len(kinds) > 1 else 0
        x, y = example(kinds[k], rng, vary_markers)
        inputs.append(_row(W.encode(x), ENC_LEN, f"{kinds[k]} input {x!r}"))
        targets.append(_row(W.encode(y) + [W.EOS], DEC_LEN, f"{kinds[k]} answer {y!r}"))
        kind_ids.append(k)
    return {"inputs": np.stack(inputs), "targets": np.stack(targets),
            "kind": np.asarray(kind_ids, np.int32)}


def fixed_set(kind: str, seed: int, n: int, vary_markers: bool = True) -> dict[str, np.ndarray]:
    """A deterministic evaluation set (seeded by kind name and seed)."""
    salt = sum((i + 1) * ord(c) for i, c in enumerate(kind))
    return batch(kind, np.random.default_rng([seed, salt, 7919]), n, vary_markers)
