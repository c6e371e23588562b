"""Sequence labelling as text-to-text: IOB tags <-> HTML-style tagged text.

The format of the Medical mT5 authors (HiTZ Sequence-Labeling-LLMs): the input is the
sentence's words joined by single spaces; the target is the same words with a tag unit
before and after each entity span:

    words   Patient with dilated cardiomyopathy .
    IOB     O       O    O       B-Disease      O
    target  Patient with dilated <Disease> cardiomyopathy </Disease> .

In multitask mode the input starts with the label set, one `<Label>` unit per label in
the canonical order (sorted by Python string order, see `canonical_labels`):
`<Chemical> <Disease> Patient with ...`.

Pure Python: no TensorFlow or seqio here (the decoder and trainer import this module).

Parsing model output (`tagged_to_iob`) never raises on malformed text. Rules:
  * The output is split on whitespace into units. A unit is a *tag* only if it is
    `<L>` or `</L>` for a label L of the label set; every other unit (including
    tag-shaped units with unknown labels) is a *word*.
  * An opening tag while a span is open closes that span first (no nesting: the
    latest label wins). A closing tag closes the open span whatever its label (a
    mismatched label is counted in `ParseStats.mismatched_close`); a closing tag with
    no open span is ignored. A span still open at the end is closed there. A span
    without words is dropped.
  * The output words are aligned to the input words by a monotone alignment (longest
    common subsequence on exact string equality; among equally long alignments,
    words are matched greedily from the left). A matched input word takes its output
    word's span; an unmatched input word takes the span of its nearest matched
    neighbours when both belong to the same span (a word the model dropped inside an
    entity), else `O`. Extra output words are ignored. The result always has one BIO
    tag per input word.
On well-formed text (the same words, balanced known tags, no empty span) this is the
exact inverse of `iob_to_tagged` (BIO tags; IOB1 input comes back as the same spans
in BIO).
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Iterable, Sequence

OUTSIDE = "O"
_LABEL_RE = re.compile(r"^[^\s<>/]+$")


def canonical_labels(labels: Iterable[str]) -> tuple[str, ...]:
    """The label set in canonical order (sorted, duplicates removed), validated."""
    out = tuple(sorted(set(labels)))
    for label in out:
        if not _LABEL_RE.match(label) or label == OUTSIDE:
            raise ValueError(
                f"label {label!r} cannot be a tag: labels must be non-empty, without "
                "whitespace, '<', '>' or '/', and not 'O'")
    return out


def open_tag(label: str) -> str:
    return f"<{label}>"


def close_tag(label: str) -> str:
    return f"</{label}>"


def label_prefix(labels: Iterable[str]) -> str:
    """`<A> <B> ...` for the canonical label set (the multitask input prefix)."""
    return " ".join(open_tag(label) for label in canonical_labels(labels))


def split_tag(tag: str) -> tuple[str, str | None]:
    """'B-Disease' -> ('B', 'Disease'); 'O' -> ('O', None). Raises on anything else."""
    if tag == OUTSIDE:
        return OUTSIDE, None
    if len(tag) > 2 and tag[0] in "BI" and tag[1] == "-":
        return tag[0], tag[2:]
    raise ValueError(f"invalid IOB tag {tag!r}: expected 'O', 'B-<label>' or 'I-<label>'")


def iob_spans(tags: Sequence[str]) -> list[tuple[int, int, str]]:
    """Entity spans [(start, end_exclusive, label)] of an IOB1 or IOB2 (BIO) sequence.

    A span starts at B-X, or at I-X whose predecessor is not in a span of label X.
    """
    spans: list[tuple[int, int, str]] = []
    start, cur = None, None
    for i, tag in enumerate(tags):
        prefix, label = split_tag(tag)
        continues = prefix == "I" and label == cur
        if not continues and cur is not None:
            spans.append((start, i, cur))
            start, cur = None, None
        if prefix != OUTSIDE and not continues:
            start, cur = i, label
    if cur is not None:
        spans.append((start, len(tags), cur))
    return spans


def spans_to_bio(length: int, spans: Iterable[tuple[int, int, str]]) -> list[str]:
    tags = [OUTSIDE] * length
    for start, end, label in spans:
        tags[start] = f"B-{label}"
        for i in range(start + 1, end):
            tags[i] = f"I-{label}"
    return tags


def to_bio(tags: Sequence[str]) -> list[str]:
    """Normalise IOB1 or BIO tags to BIO (IOB2)."""
    return spans_to_bio(len(tags), iob_spans(tags))


def _check_words(words: Sequence[str]) -> None:
    for i, word in enumerate(words):
        if not word or any(ch.isspace() for ch in word):
            raise ValueError(f"word {i} ({word!r}) is empty or contains whitespace; "
                             "words are joined by spaces, so each must be one unit")


def make_input(words: Sequence[str], labels: Iterable[str] | None = None) -> str:
    """The model input: the words joined by spaces, with the label-set prefix if labels."""
    _check_words(words)
    sentence = " ".join(words)
    if labels is None:
        return sentence
    prefix = label_prefix(labels)
    return f"{prefix} {sentence}" if sentence else prefix


def iob_to_tagged(words: Sequence[str], tags: Sequence[str],
                  labels: Iterable[str] | None = None) -> str:
    """Words + IOB1/BIO tags -> tagged target text.

    `labels`, when given, is the dataset's label set: a tag outside it raises, and so
    does a word that would read as one of its tags (the text could not be parsed back).
    """
    if len(words) != len(tags):
        raise ValueError(f"{len(words)} words but {len(tags)} tags: {list(words)!r}")
    _check_words(words)
    spans = iob_spans(tags)
    if labels is not None:
        known = set(canonical_labels(labels))
        for _, _, label in spans:
            if label not in known:
                raise ValueError(f"label {label!r} is not in the label set {sorted(known)}")
        tag_units = {open_tag(lab) for lab in known} | {close_tag(lab) for lab in known}
        for word in words:
            if word in tag_units:
                raise ValueError(f"input word {word!r} is identical to a tag; it could not "
                                 "be told apart from the markup")
    else:
        canonical_labels(label for _, _, label in spans)  # validates tag-able names
    units: list[str] = []
    starts = {s: (e, lab) for s, e, lab in spans}
    close_at = {}
    for i, word in enumerate(words):
        if i in close_at:
            units.append(close_tag(close_at.pop(i)))
        if i in starts:
            end, label = starts[i]
            units.append(open_tag(label))
            close_at[end] = label
        units.append(word)
    if len(words) in close_at:
        units.append(close_tag(close_at.pop(len(words))))
    return " ".join(units)


@dataclasses.dataclass
class ParseStats:
    """What `tagged_to_iob` had to repair (all zero for well-formed text)."""
    unknown_units: int = 0        # output words not aligned to any input word
    missing_words: int = 0        # input words absent from the output
    nested_opens: int = 0         # opening tag while a span was open
    stray_closes: int = 0         # closing tag with no open span
    mismatched_close: int = 0     # closing tag of another label than the open one
    unclosed: int = 0             # span still open at the end of the output
    empty_spans: int = 0          # span with no words

    @property
    def well_formed(self) -> bool:
        return not any(dataclasses.astuple(self))


ParsedWord = tuple[str, int | None, str | None]  # (word, span id, label)


def parse_tagged(text: str, labels: Iterable[str],
                 stats: ParseStats | None = None) -> list[ParsedWord]:
    """Tagged text -> [(word, span_id or None, label or None)] following the module rules."""
    stats = stats if stats is not None else ParseStats()
    known = set(canonical_labels(labels))
    out: list[ParsedWord] = []
    span_id, open_label, words_in_span = -1, None, 0

    def close():
        nonlocal open_label
        if words_in_span == 0:
            stats.empty_spans += 1
        open_label = None

    for unit in text.split():
        label = None
        if len(unit) > 2 and unit[0] == "<" and unit[-1] == ">":
            label = unit[2:-1] if unit[1] == "/" else unit[1:-1]
            if label not in known:
                label = None
        if label is not None and unit[1] != "/":
            if open_label is not None:
                stats.nested_opens += 1
                close()
            span_id, open_label, words_in_span = span_id + 1, label, 0
        elif label is not None:
            if open_label is None:
                stats.stray_closes += 1
            else:
                if label != open_label:
                    stats.mismatched_close += 1
                close()
        elif open_label is not None:
            out.append((unit, span_id, open_label))
            words_in_span += 1
        else:
            out.append((unit, None, None))
    if open_label is not None:
        stats.unclosed += 1
        close()
    return out


def _lcs_alignment(a: Sequence[str], b: Sequence[str]) -> list[int | None]:
    """For each index of `a`, the index of `b` it is matched to (monotone LCS) or None."""
    n, m = len(a), len(b)
    # suffix table: L[i][j] = LCS length of a[i:], b[j:]  ([n+1, m+1] ints)
    table = [[0] * (m + 1) for _ in range(n + 1)]
    for i in range(n - 1, -1, -1):
        row, nxt = table[i], table[i + 1]
        ai = a[i]
        for j in range(m - 1, -1, -1):
            if ai == b[j]:
                row[j] = nxt[j + 1] + 1
            else:
                row[j] = row[j + 1] if row[j + 1] >= nxt[j] else nxt[j]
    match: list[int | None] = [None] * n
    i = j = 0
    while i < n and j < m:
        if a[i] == b[j] and table[i][j] == table[i + 1][j + 1] + 1:
            match[i] = j
            i += 1
            j += 1
        elif table[i + 1][j] >= table[i][j + 1]:
            i += 1
        else:
            j += 1
    return match


def tagged_to_iob(text: str, words: Sequence[str] | None, labels: Iterable[str],
                  stats: ParseStats | None = None) -> list[str]:
    """Tagged (model) text -> one BIO tag per input word; never raises on bad text.

    With `words=None` the output's own words are used (no alignment). See the module
    docstring for the repair rules; `stats` (if given) counts what was repaired.
    """
    stats = stats if stats is not None else ParseStats()
    parsed = parse_tagged(text, labels, stats)
    if words is None:
        spans = _runs([(sid, lab) for _, sid, lab in parsed])
        return spans_to_bio(len(parsed), spans)
    words = list(words)
    out_words = [w for w, _, _ in parsed]
    if out_words == words:  # the usual case: identity alignment, no O(n*m) table
        match: list[int | None] = list(range(len(words)))
    else:
        match = _lcs_alignment(words, out_words)
    stats.unknown_units += len(parsed) - sum(m is not None for m in match)
    stats.missing_words += sum(m is None for m in match)
    assigned: list[tuple[int | None, str | None]] = []
    for m in match:
        assigned.append((parsed[m][1], parsed[m][2]) if m is not None else (None, None))
    # fill unmatched input words lying inside one span
    matched = [i for i, m in enumerate(match) if m is not None]
    for left, right in zip(matched, matched[1:]):
        if right - left > 1 and assigned[left][0] is not None and assigned[left] == assigned[right]:
            for i in range(left + 1, right):
                assigned[i] = assigned[left]
    return spans_to_bio(len(words), _runs(assigned))


def _runs(assigned: Sequence[tuple[int | None, str | None]]) -> list[tuple[int, int, str]]:
    """Maximal runs of equal non-None span ids -> [(start, end, label)]."""
    spans = []
    i = 0
    while i < len(assigned):
        sid, label = assigned[i]
        j = i + 1
        while j < len(assigned) and assigned[j][0] == sid:
            j += 1
        if sid is not None:
            spans.append((i, j, label))
        i = j
    return spans


def strip_label_prefix(units: Sequence[str], labels: Iterable[str]) -> list[str]:
    """Drop the leading label-set prefix (exactly `label_prefix(labels)`) if present."""
    prefix = label_prefix(labels).split()
    units = list(units)
    if units[:len(prefix)] == prefix:
        return units[len(prefix):]
    return units


def input_words(inputs_text: str, labels: Iterable[str]) -> list[str]:
    """The sentence words of a model input (label-set prefix removed if present)."""
    return strip_label_prefix(inputs_text.split(), labels)


# ----------------------------------------------------------------------------------------
# Constrained decoding: the word-level automaton of valid outputs.

END = None  # the "end of output" unit in `TaggingAutomaton.allowed`


@dataclasses.dataclass(frozen=True)
class TagState:
    """Automaton state: `position` input words copied, `open_label` (or None) open with
    `span_words` words inside it so far."""
    position: int = 0
    open_label: str | None = None
    span_words: int = 0


class TaggingAutomaton:
    """The valid outputs for given input words and label set, one unit at a time.

    Units are whitespace-free strings (the next input word, `<L>`, `</L>`) plus `END`.
    From a state the allowed units are:
      * copy the next input word, if any are left;
      * open `<L>` for each label L, if no span is open and an input word is left
        (so no empty span can be produced);
      * close the open span `</L>`, if it holds at least one word;
      * `END`, once all words are copied and no span is open.
    Every accepted sequence joined by spaces is well-formed, so `tagged_to_iob` parses it
    exactly. The decoding engine compiles these units to tokens.
    """

    def __init__(self, words: Sequence[str], labels: Iterable[str]):
        _check_words(words)
        self.words = tuple(words)
        self.labels = canonical_labels(labels)
        tag_units = ({open_tag(lab) for lab in self.labels}
                     | {close_tag(lab) for lab in self.labels})
        clash = [w for w in self.words if w in tag_units]
        if clash:
            raise ValueError(f"input words {clash!r} are identical to tags of {self.labels}")

    def initial(self) -> TagState:
        return TagState()

    def allowed(self, state: TagState) -> list[str | None]:
        """Valid next units from `state` (`END` = None means the output may stop)."""
        units: list[str | None] = []
        left = state.position < len(self.words)
        if left:
            units.append(self.words[state.position])
        if state.open_label is None:
            if left:
                units.extend(open_tag(lab) for lab in self.labels)
            else:
                units.append(END)
        elif state.span_words > 0:
            units.append(close_tag(state.open_label))
        return units

    def step(self, state: TagState, unit: str | None) -> TagState:
        """The state after `unit`; raises ValueError if `unit` is not allowed."""
        if unit not in self.allowed(state):
            raise ValueError(f"unit {unit!r} not allowed in state {state}; "
                             f"allowed: {self.allowed(state)}")
        if unit is END:
            return state
        if state.position < len(self.words) and unit == self.words[state.position]:
            return TagState(state.position + 1, state.open_label,
                            state.span_words + (state.open_label is not None))
        if state.open_label is None:
            return TagState(state.position, unit[1:-1], 0)
        return TagState(state.position, None, 0)

    def is_final(self, state: TagState) -> bool:
        return END in self.allowed(state)

    def run(self, units: Iterable[str]) -> TagState:
        """The state after a sequence of units (raises on the first invalid one)."""
        state = self.initial()
        for unit in units:
            state = self.step(state, unit)
        return state
