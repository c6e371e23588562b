"""Synthetic multi-task corpus for the ProMoT miniature (pure Python, deterministic).

In-context families (each episode draws a hidden rule; only the demonstrations reveal it):
  lookup    a random word -> word dictionary; the query is one of the demonstrated keys
  copy      answer = the query words
  reverse   answer = the query words reversed
  first     answer = the first query word
  last      answer = the last query word
  swap      answer = the query with its first two words swapped
  label     two random label words and two anchor words: the class is which anchor the
            text contains (binary classification whose words change every episode)
Episodes are rendered in the paper's QA format: demonstrations `Q: <x> A: <y>` then the
query `Q: <x> A:`, joined by "\n\n" (tasks.icl's layout).

Fine-tuning target tasks (fixed output format, zero-shot, learnt from training data):
  rte       `<premise words> question: <word> Is it true or false? answer:` -> true/false
            (true iff the word occurs in the premise); the RTE template of the paper
  translate `Translate English to French: <words>` -> the words through one fixed random
            lexicon (a toy translation task)
  count     `How many words: <words> answer:` -> a number word (one .. five)

Words are single tokens of the tiny sentencepiece vocabulary (WORDS), so sequences stay short.
Everything is a function of (family, split, seed, index): `episode(...)` is reproducible.
"""
from __future__ import annotations

import json
import os
import random
from typing import Callable, Dict, Iterator, List, Sequence, Tuple

from medmt5.checkpointing.atomic_dir import atomic_write_text

ICL_FAMILIES = ("lookup", "copy", "reverse", "first", "last", "swap", "label")
TARGET_TASKS = ("rte", "translate", "count")
SPLIT_SALT = {"train": 0, "validation": 1, "test": 2}
NUMBERS = ("one", "two", "three", "four", "five")

# Single-token lower-case words of tasks/data/vocab/medmt5_tiny.model (checked by the test).
WORDS: Tuple[str, ...] = tuple("""
with patients placebo standard participants follow plus dose months care disease treatment
long factor renal doctor control causa cause median compare study superior intervention
cancer group point essai confirm participant hospital daily adults rare events trial limit
previous event interaction impairment analys adolescents trouble jour tout effects effect
medicine frequent primario seguimiento information graves activ media giorno seconda
""".split())
# Words the target tasks use as their fixed outputs; never used as ICL content.
RESERVED = frozenset({"true", "false", *NUMBERS})


def _rng(*key) -> random.Random:
    return random.Random(":".join(str(k) for k in key))


def _words(rng: random.Random, n: int, pool: Sequence[str] = WORDS) -> List[str]:
    return rng.sample(list(pool), n)


def render(demos: Sequence[Tuple[str, str]], query: str) -> str:
    """`Q: x A: y` demonstrations then `Q: query A:`, joined by blank lines."""
    parts = [f"Q: {x} A: {y}" for x, y in demos]
    parts.append(f"Q: {query} A:")
    return "\n\n".join(parts)


def _sequence_rule(fn: Callable[[List[str]], List[str]]):
    def make(rng: random.Random, shots: int):
        pairs = []
        for _ in range(shots + 1):
            ws = _words(rng, rng.randint(2, 3))
            pairs.append((" ".join(ws), " ".join(fn(ws))))
        return pairs[:-1], pairs[-1]
    return make


def _lookup(rng: random.Random, shots: int):
    ws = _words(rng, 2 * shots)
    keys, values = ws[:shots], ws[shots:]
    demos = list(zip(keys, values))
    return demos, demos[rng.randrange(shots)]


def _label(rng: random.Random, shots: int):
    """Class = which of two anchor words the text contains; label words change per episode."""
    ws = _words(rng, 4)
    labels, anchors = ws[:2], ws[2:]
    fillers = [w for w in WORDS if w not in ws]
    classes = [i % 2 for i in range(shots)]
    rng.shuffle(classes)
    classes.append(rng.randrange(2))
    pairs = []
    for c in classes:
        text = _words(rng, 2, fillers)
        text.insert(rng.randrange(3), anchors[c])
        pairs.append((" ".join(text), labels[c]))
    return pairs[:-1], pairs[-1]


_FAMILIES: Dict[str, Callable] = {
    "lookup": _lookup,
    "copy": _sequence_rule(lambda ws: ws),
    "reverse": _sequence_rule(lambda ws: ws[::-1]),
    "first": _sequence_rule(lambda ws: ws[:1]),
    "last": _sequence_rule(lambda ws: ws[-1:]),
    "swap": _sequence_rule(lambda ws: [ws[1], ws[0]] + ws[2:]),
    "label": _label,
}


def episode(family: str, split: str, seed: int, index: int, shots: int) -> Dict[str, str]:
    """One k-shot in-context example: {"inputs", "targets"}."""
    if family not in _FAMILIES:
        raise ValueError(f"unknown in-context family {family!r}; known: {ICL_FAMILIES}")
    if shots < 1:
        raise ValueError(f"shots must be >= 1, got {shots}")
    rng = _rng("icl", family, SPLIT_SALT[split], seed, index)
    demos, (x, y) = _FAMILIES[family](rng, shots)
    return {"inputs": render(demos, x), "targets": y}


def _lexicon(seed: int) -> Dict[str, str]:
    """The fixed toy English -> French lexicon of the translate task (a permutation)."""
    src = list(WORDS)
    dst = list(WORDS)
    _rng("lexicon", seed).shuffle(dst)
    return dict(zip(src, dst))


def target_example(task: str, split: str, seed: int, index: int) -> Dict[str, str]:
    """One zero-shot example of a fine-tuning target task: {"inputs", "targets"}."""
    rng = _rng("target", task, SPLIT_SALT[split], seed, index)
    if task == "rte":
        premise = _words(rng, rng.randint(3, 6))
        if rng.random() < 0.5:
            word, label = rng.choice(premise), "true"
        else:
            word = rng.choice([w for w in WORDS if w not in premise])
            label = "false"
        return {"inputs": f"{' '.join(premise)} question: {word} Is it true or false? answer:",
                "targets": label}
    if task == "translate":
        lex = _lexicon(seed)
        ws = _words(rng, rng.randint(1, 3))
        return {"inputs": f"Translate English to French: {' '.join(ws)}",
                "targets": " ".join(lex[w] for w in ws)}
    if task == "count":
        n = rng.randint(1, len(NUMBERS))
        return {"inputs": f"How many words: {' '.join(_words(rng, n))} answer:",
                "targets": NUMBERS[n - 1]}
    raise ValueError(f"unknown target task {task!r}; known: {TARGET_TASKS}")


def pretraining_stream(seed: int, families: Sequence[str] = ICL_FAMILIES,
                       min_shots: int = 2, max_shots: int = 3) -> Iterator[Dict[str, str]]:
    """Endless in-context training episodes, families and shot counts mixed uniformly."""
    index = 0
    while True:
        rng = _rng("mix", seed, index)
        family = rng.choice(list(families))
        yield episode(family, "train", seed, index, rng.randint(min_shots, max_shots))
        index += 1


def write_jsonl(rows: Sequence[Dict[str, str]], path: str) -> None:
    """Writes rows atomically (medmt5's atomic_write_text: a temporary file, then rename)."""
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    atomic_write_text(path, "".join(json.dumps(row, sort_keys=True) + "\n" for row in rows))


def read_jsonl(path: str) -> List[Dict[str, str]]:
    with open(path) as f:
        return [json.loads(line) for line in f if line.strip()]
