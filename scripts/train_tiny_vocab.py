"""Trains the tiny sentencepiece model tasks/data/vocab/medmt5_tiny.model on the shipped corpus.

2,000 pieces with mT5's special ids (pad=0, eos=1, unk=2, no bos), byte fallback so any text
encodes, unigram model with NFKC normalisation like mc4.250000. seqio adds 100 sentinels on top
(2,100 ids). Single-threaded so the model is reproducible from the committed corpus.

  python scripts/train_tiny_vocab.py [--corpus_dir tasks/data/corpus] [--out tasks/data/vocab]
"""
import argparse
import io
import json
import os

import sentencepiece as spm

_REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
LANGS = ("en", "es", "fr", "it")
VOCAB_SIZE = 2000


def corpus_lines(corpus_dir):
    """Document texts of every language, in a fixed order."""
    for lang in LANGS:
        path = os.path.join(corpus_dir, f"{lang}.jsonl")
        with open(path, encoding="utf-8") as f:
            for line_no, line in enumerate(f, 1):
                if line.strip():
                    try:
                        yield json.loads(line)["text"]
                    except (ValueError, KeyError) as e:
                        raise ValueError(
                            f"{path}:{line_no}: not a {{'text': ...}} record: {e}") from e


def train(corpus_dir, out_dir, vocab_size=VOCAB_SIZE):
    os.makedirs(out_dir, exist_ok=True)
    model = io.BytesIO()
    spm.SentencePieceTrainer.train(
        sentence_iterator=corpus_lines(corpus_dir),
        model_writer=model,
        vocab_size=vocab_size,
        model_type="unigram",
        pad_id=0, eos_id=1, unk_id=2, bos_id=-1,
        byte_fallback=True,
        character_coverage=0.9995,
        normalization_rule_name="nmt_nfkc",
        max_sentence_length=8192,
        num_threads=1,
        minloglevel=2,
    )
    path = os.path.join(out_dir, "medmt5_tiny.model")
    with open(path, "wb") as f:
        f.write(model.getvalue())
    return path


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--corpus_dir", default=os.path.join(_REPO, "tasks", "data", "corpus"))
    parser.add_argument("--out", default=os.path.join(_REPO, "tasks", "data", "vocab"))
    parser.add_argument("--vocab_size", type=int, default=VOCAB_SIZE)
    args = parser.parse_args(argv)
    path = train(args.corpus_dir, args.out, args.vocab_size)
    sp = spm.SentencePieceProcessor(model_file=path)
    print(f"{path}: {sp.get_piece_size()} pieces")


if __name__ == "__main__":
    main()
