"""Span-corruption input pipeline throughput, from raw text, on this machine's CPU.

Measures the registered pretraining task end to end (read JSONL -> sentencepiece -> concat and
split -> span corruption -> EOS) in examples per second at inputs/targets 1024/229, and, in the
same run, the stages below it as the peer: reading documents only, and reading + tokenizing
(tokens/s), so the cost of the span-corruption stage is visible. Prints one JSON object.

  python benchmarks/data_pipeline.py [--task medmt5_pretrain] [--seconds 20] [--vocabulary tiny]
"""
import argparse
import json
import os
import platform
import time

_TARGET_EXAMPLES_PER_S = 200.0


def _rate(iterator, seconds, warmup, count=lambda x: 1):
    """Items (or count(item) units) per second over `seconds`, after `warmup` items."""
    for _ in range(warmup):
        next(iterator)
    n, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        n += count(next(iterator))
    return n / (time.perf_counter() - start)


def run(task, inputs_length, seconds, warmup, vocabulary, data_dir, pack):
    import seqio  # pylint: disable=g-import-not-at-top
    import tensorflow as tf  # pylint: disable=g-import-not-at-top

    from tasks import corpus_readers, pretraining, span_corruption  # pylint: disable=g-import-not-at-top
    from tasks import vocab as vocab_lib  # pylint: disable=g-import-not-at-top

    load_at_start = os.getloadavg()[0]
    pretraining.register_pretraining_tasks(data_dir, vocabulary)
    raw_length, targets_length = span_corruption.span_corruption_lengths(inputs_length)
    lengths = {"inputs": inputs_length, "targets": targets_length}
    lang = pretraining.PRETRAIN_TASKS.get(task, "en")
    results = {}

    docs = corpus_readers.corpus_dataset(data_dir, lang).repeat().prefetch(tf.data.AUTOTUNE)
    results["read_docs_per_s"] = _rate(docs.as_numpy_iterator(), seconds / 2, warmup)

    feature = seqio.Feature(vocab_lib.get_vocabulary(vocabulary))
    tokens = pretraining.tokenize_text(
        corpus_readers.corpus_dataset(data_dir, lang).repeat(), {"targets": feature})
    results["read_tokenize_tokens_per_s"] = _rate(
        tokens.prefetch(tf.data.AUTOTUNE).as_numpy_iterator(), seconds / 2, warmup,
        count=lambda ex: len(ex["targets"]))

    start = time.perf_counter()
    if pack:
        ds = seqio.get_dataset(task, lengths, seqio.EncDecFeatureConverter(pack=True),
                               num_epochs=None, shuffle=False, seed=0, batch_size=None)
    else:
        ds = seqio.get_mixture_or_task(task).get_dataset(
            lengths, split="train", shuffle=False, seed=0, num_epochs=None)
    ds = ds.prefetch(tf.data.AUTOTUNE)
    it = ds.as_numpy_iterator()
    first = next(it)
    results["pipeline_start_s"] = time.perf_counter() - start
    results["examples_per_s"] = _rate(it, seconds, warmup)
    key = "encoder_input_tokens" if pack else "inputs"
    return {
        "figure": "span-corrupted examples per second from raw text",
        "examples_per_s": round(results["examples_per_s"], 1),
        "target_examples_per_s": _TARGET_EXAMPLES_PER_S,
        "meets_target": results["examples_per_s"] >= _TARGET_EXAMPLES_PER_S,
        "peer_stages": {
            "read_docs_per_s": round(results["read_docs_per_s"], 1),
            "read_tokenize_tokens_per_s": round(results["read_tokenize_tokens_per_s"]),
            "tokens_per_s_needed_for_target": round(_TARGET_EXAMPLES_PER_S * raw_length),
        },
        "pipeline_start_s": round(results["pipeline_start_s"], 2),
        "settings": {
            "task": task, "inputs_length": inputs_length, "targets_length": targets_length,
            "raw_tokens_per_example": raw_length, "vocabulary": vocabulary,
            "data_dir": corpus_readers.resolve_data_dir(data_dir), "pack": pack,
            "seconds": seconds, "warmup_examples": warmup,
            "example_shape": list(first[key].shape),
            "peer_language": lang,
        },
        "machine": {
            "cpu_count": os.cpu_count(), "load_average_1m_at_start": round(load_at_start, 2),
            "load_average_1m_at_end": round(os.getloadavg()[0], 2),
            "platform": platform.platform(), "tensorflow": tf.__version__,
        },
    }


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--task", default="medmt5_pretrain",
                        help="task or mixture name (default: the pretraining mixture)")
    parser.add_argument("--inputs_length", type=int, default=1024)
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--warmup", type=int, default=50)
    parser.add_argument("--vocabulary", default="tiny", choices=("tiny", "mt5"))
    parser.add_argument("--data_dir", default=None,
                        help="corpus directory (default: $MEDMT5_DATA_DIR or the sample)")
    parser.add_argument("--pack", action="store_true",
                        help="include EncDecFeatureConverter packing (unbatched examples)")
    args = parser.parse_args(argv)
    result = run(args.task, args.inputs_length, args.seconds, args.warmup, args.vocabulary,
                 args.data_dir, args.pack)
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
