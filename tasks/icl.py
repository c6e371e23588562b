"""In-context (few-shot) formatting for ProMoT: templates, demonstration selection, prompt
assembly under a length budget, and output post-processing.

Pure Python (no TensorFlow, no seqio): the seqio registrations in `tasks/promot_tasks.py`
call these functions inside their data sources, and the in-context evaluation can use them
directly.

Format (ProMoT paper, Wang et al. 2023): each demonstration is the task template filled with a
train example followed by its answer; demonstrations come first, then the query (template
without answer), all separated by blank lines:

    <demo 1 inputs> <demo 1 answer>

    <demo 2 inputs> <demo 2 answer>

    <query inputs>

Note: mT5's sentencepiece model maps newlines to spaces, so after tokenisation the blank lines
become single spaces; the templates' own prefixes ("Q:", "Translate", "Article:") are what
separate examples for the model, and post-processing cuts predictions at those prefixes.
"""
import dataclasses
import random
import re
import string
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from typing import Any

# Demonstrations and the query are separated by one blank line.
EXAMPLE_SEPARATOR = "\n\n"

Record = Mapping[str, Any]


@dataclasses.dataclass(frozen=True)
class Template:
    """How one task's records become text.

    name: the template's name (key in TEMPLATES).
    format_inputs: record -> the query text (ends with the answer cue, e.g. "answer:").
    format_target: record -> the answer text.
    stop_prefixes: strings that start a new example; predictions are cut at the first one.
    long_field: the record field shortened (by whole words, from its end) when an example
      does not fit the length budget; None = the template is never shortened.
    classification: answers are single lower-case words; post-processing keeps the first word.
    references: record -> every acceptable answer (aliases for QA); default [format_target].
    """

    name: str
    format_inputs: Callable[[Record], str]
    format_target: Callable[[Record], str]
    stop_prefixes: tuple[str, ...]
    long_field: str | None = None
    classification: bool = False
    references: Callable[[Record], list[str]] | None = None

    def demonstration(self, record: Record) -> str:
        """The filled template followed by its answer (one in-context example)."""
        return f"{self.format_inputs(record)} {self.format_target(record)}"

    def answers(self, record: Record) -> list[str]:
        if self.references is not None:
            return list(self.references(record))
        return [self.format_target(record)]


# ---------------------------------------------------------------------------------------------
# Templates (the paper's wording; WiC and the medical templates are ours, in the same style).

_NLI2_ANSWER = {"entailment": "true", "not_entailment": "false"}
_NLI3_ANSWER = {"entailment": "true", "contradiction": "false", "neutral": "neither"}


def _rte_inputs(r: Record) -> str:
    return f"{r['premise']} question: {r['hypothesis']} Is it true or false? answer:"


def _cb_inputs(r: Record) -> str:
    return f"{r['premise']} question: {r['hypothesis']} Is it true or false or neither? answer:"


def _wic_inputs(r: Record) -> str:
    # Our template (the paper does not print one): RTE's pattern with a statement about the word.
    return (f"{r['sentence1']} {r['sentence2']} question: The word \"{r['word']}\" means the "
            "same thing in both sentences. Is it true or false? answer:")


def _qa_inputs(r: Record) -> str:
    return f"Q: {r['question']} A:"


def _qa_references(r: Record) -> list[str]:
    return list(r["answers"])


def _translation_inputs(r: Record) -> str:
    return f"Translate {r['source_language']} to {r['target_language']}: {r['source']}"


def _summary_inputs(r: Record) -> str:
    return f"Article: {r['document']} One sentence summary:"


def _tagging_inputs(r: Record) -> str:
    # Medical sequence labelling (ours): the tag set is listed as in the multitask prefix; the
    # answer is the sentence with HTML-style tags around entities (the Medical mT5 target).
    return f"Sentence: {r['sentence']} Tags: {r['tags']} Tagged sentence:"


def _bioasq_inputs(r: Record) -> str:
    # Medical abstractive QA (ours): the snippets as context, then the paper's QA template.
    return f"Context: {r['context']} Q: {r['question']} A:"


TEMPLATES: dict[str, Template] = {
    "rte": Template("rte", _rte_inputs, lambda r: _NLI2_ANSWER[r["label"]],
                    stop_prefixes=("question:", "answer:"), long_field="premise",
                    classification=True),
    "cb": Template("cb", _cb_inputs, lambda r: _NLI3_ANSWER[r["label"]],
                   stop_prefixes=("question:", "answer:"), long_field="premise",
                   classification=True),
    "wic": Template("wic", _wic_inputs, lambda r: "true" if r["label"] else "false",
                    stop_prefixes=("question:", "answer:"), classification=True),
    "qa": Template("qa", _qa_inputs, lambda r: r["answers"][0], stop_prefixes=("Q:",),
                   references=_qa_references),
    "translation": Template("translation", _translation_inputs, lambda r: r["target"],
                            stop_prefixes=("Translate",), long_field="source"),
    "summarization": Template("summarization", _summary_inputs, lambda r: r["summary"],
                              stop_prefixes=("Article:", "One sentence summary:"),
                              long_field="document"),
    "tagging": Template("tagging", _tagging_inputs, lambda r: r["tagged"],
                        stop_prefixes=("Sentence:",)),
    "bioasq": Template("bioasq", _bioasq_inputs, lambda r: r["answers"][0],
                       stop_prefixes=("Context:", "Q:"), long_field="context",
                       references=_qa_references),
}


def get_template(name: str) -> Template:
    if name not in TEMPLATES:
        raise KeyError(f"Unknown in-context template {name!r}; known: {sorted(TEMPLATES)}.")
    return TEMPLATES[name]


# ---------------------------------------------------------------------------------------------
# Demonstration selection.

def select_demonstrations(query_index: int, pool_size: int, num_shots: int, seed: int = 0,
                          exclude: Sequence[int] = ()) -> list[int]:
    """Pool indices of `num_shots` demonstrations for the query at `query_index`.

    Deterministic in (seed, query_index) and independent of every other query; indices in
    `exclude` (the query itself when the pool is the query's own split, or duplicates of it)
    are never chosen. Raises if the pool cannot supply `num_shots` distinct examples.
    """
    if num_shots < 0:
        raise ValueError(f"num_shots must be >= 0, got {num_shots}.")
    excluded = set(int(i) for i in exclude)
    available = pool_size - len([i for i in excluded if 0 <= i < pool_size])
    if num_shots > available:
        raise ValueError(f"The demonstration pool has {available} usable examples "
                         f"({pool_size} minus {pool_size - available} excluded) but "
                         f"{num_shots} shots were requested; use a larger train split.")
    if num_shots == 0:
        return []
    # A string seed is hashed with SHA-512 by `random`, so this is stable across runs.
    rng = random.Random(f"icl:{seed}:{query_index}")
    draw = min(pool_size, num_shots + len(excluded))
    chosen = [i for i in rng.sample(range(pool_size), draw) if i not in excluded]
    return chosen[:num_shots]


# ---------------------------------------------------------------------------------------------
# Prompt assembly under a length budget.

def _shortened(record: Record, field: str, num_words: int) -> dict[str, Any]:
    out = dict(record)
    out[field] = " ".join(str(record[field]).split()[:num_words])
    return out


def _largest_fitting(lo: int, hi: int, fits: Callable[[int], bool]) -> int | None:
    """Largest n in [lo, hi] with fits(n) (fits is monotone decreasing in n), else None."""
    if lo > hi or not fits(lo):
        return None
    while lo < hi:
        mid = (lo + hi + 1) // 2
        if fits(mid):
            lo = mid
        else:
            hi = mid - 1
    return lo


def build_prompt(template: Template, query: Record, demonstrations: Sequence[Record],
                 max_length: int | None = None, length_fn: Callable[[str], int] = len,
                 min_demo_words: int = 16) -> tuple[str, int]:
    """Joins demonstrations and the query; returns (inputs text, demonstrations kept).

    With `max_length` (in `length_fn` units: characters by default, tokens when the caller
    passes a tokenizer's length) the query is always kept: if it alone is too long, its
    `long_field` is cut from the end. Demonstrations are then added nearest-to-the-query
    first; the first one that does not fit is shortened (its long field, keeping at least
    `min_demo_words` words) or dropped, and no farther ones are added.
    """
    query_text = template.format_inputs(query)
    if max_length is not None and length_fn(query_text) > max_length:
        field = template.long_field
        n_words = len(str(query[field]).split()) if field else 0
        keep = None if field is None else _largest_fitting(
            0, n_words,
            lambda n: length_fn(template.format_inputs(_shortened(query, field, n))) <= max_length)
        if keep is None:
            raise ValueError(
                f"Template {template.name!r}: the query does not fit max_length={max_length} "
                f"even with its {field or 'text'} removed; raise the input length budget.")
        query_text = template.format_inputs(_shortened(query, field, keep))

    parts = [query_text]

    def fits(texts: list[str]) -> bool:
        return max_length is None or length_fn(EXAMPLE_SEPARATOR.join(texts)) <= max_length

    for demo in reversed(list(demonstrations)):
        text = template.demonstration(demo)
        if fits([text] + parts):
            parts.insert(0, text)
            continue
        field = template.long_field
        if field is not None:
            n_words = len(str(demo[field]).split())
            keep = _largest_fitting(
                min(min_demo_words, n_words), n_words,
                lambda n, demo=demo, field=field: fits(
                    [template.demonstration(_shortened(demo, field, n))] + parts))
            if keep is not None:
                parts.insert(0, template.demonstration(_shortened(demo, field, keep)))
        break
    return EXAMPLE_SEPARATOR.join(parts), len(parts) - 1


def iter_format_examples(template: Template, queries: Iterable[Record], pool: Sequence[Record],
                         num_shots: int, seed: int = 0, max_length: int | None = None,
                         length_fn: Callable[[str], int] = len,
                         pool_is_query_split: bool = False) -> Iterator[dict[str, Any]]:
    """Few-shot formats every query with demonstrations drawn from `pool` (the train split).

    Yields one dict per query: inputs (text), targets (text), answers (all references),
    idx (the query's position), num_shots (demonstrations kept after the length budget).
    A pool example whose filled template equals the query's is never used as its
    demonstration; with `pool_is_query_split` (the pool is the first len(pool) examples of
    the queries' own split) the query's own index is excluded too. `queries` may stream.
    """
    by_text: dict[str, list[int]] = {}
    if num_shots:
        for i, rec in enumerate(pool):
            by_text.setdefault(template.format_inputs(rec), []).append(i)
    for q_index, query in enumerate(queries):
        exclude = list(by_text.get(template.format_inputs(query), []))
        if pool_is_query_split and q_index < len(pool):
            exclude.append(q_index)
        chosen = select_demonstrations(q_index, len(pool), num_shots, seed, exclude)
        inputs, kept = build_prompt(template, query, [pool[i] for i in chosen],
                                    max_length=max_length, length_fn=length_fn)
        yield {"inputs": inputs, "targets": template.format_target(query),
               "answers": template.answers(query), "idx": q_index, "num_shots": kept}


def format_examples(template: Template, queries: Iterable[Record], pool: Sequence[Record],
                    num_shots: int, **kwargs) -> list[dict[str, Any]]:
    """`iter_format_examples` as a list."""
    return list(iter_format_examples(template, queries, pool, num_shots, **kwargs))


# ---------------------------------------------------------------------------------------------
# Output post-processing.

def cut_at_prefixes(text: str, stop_prefixes: Sequence[str]) -> str:
    """Text up to the first newline (every answer here is one line, so a newline starts the
    next example) or the first stop prefix that starts a word."""
    end = len(text)
    newline = text.find("\n")
    if newline >= 0:
        end = newline
    for prefix in stop_prefixes:
        for match in re.finditer(r"(?:^|(?<=\s))" + re.escape(prefix), text):
            end = min(end, match.start())
            break
    return text[:end]


_EDGE_PUNCT = string.punctuation + "“”‘’«»"


def clean_prediction(text: str, template: Template) -> str:
    """Cuts a decoded model output at the next example and strips it; classification outputs
    are lower-cased and reduced to their first word without surrounding punctuation."""
    text = cut_at_prefixes(text, template.stop_prefixes).strip()
    if template.classification:
        words = text.lower().split()
        return words[0].strip(_EDGE_PUNCT) if words else ""
    return text


def _as_text(value: Any) -> str:
    return value.decode("utf-8") if isinstance(value, bytes) else str(value)


def make_postprocess_fn(template: Template) -> Callable[..., Any]:
    """A seqio `postprocess_fn(output, example=None, is_target=False)` for `template`.

    Predictions: `clean_prediction`. Targets: classification targets lower-cased; tasks with
    several references (QA aliases) return the list stored in the example's "answers"
    feature; otherwise the stripped target text.
    """
    def postprocess(output: Any, example: Mapping[str, Any] | None = None,
                    is_target: bool = False) -> Any:
        text = _as_text(output)
        if not is_target:
            return clean_prediction(text, template)
        if template.references is not None and example is not None and "answers" in example:
            return [_as_text(a) for a in example["answers"]]
        return text.strip().lower() if template.classification else text.strip()

    postprocess.__name__ = f"postprocess_{template.name}"
    return postprocess
