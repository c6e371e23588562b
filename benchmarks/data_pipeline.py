"""Span-corruption input pipeline throughput, from raw text, on this machine's CPU.

Measures the registered pretraining task end to end (read JSONL -> sentencepiece -> concat and
split -> span corruption -> EOS) in examples per second at inputs/targets 1024/229, and, in the
same run, the stages below it as the peer: reading documents only, and reading + tokenizing
(tokens/s), so the cost of the span-corruption stage is visible. Prints one JSON object.
Runs under the measurement protocol (benchmarks/common.py): refuses a loaded machine unless
--force; the three stages are timed in alternating rounds, each round recording the CPU time
other processes used.

  python -m benchmarks.data_pipeline [--task medmt5_pretrain] [--seconds 20] [--vocabulary tiny]
"""
import argparse
import os
import platform
import statistics
import sys
import time

if __package__ in (None, ""):  # run as a script: make `benchmarks` importable
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from benchmarks import common  # noqa: E402  pylint: disable=g-import-not-at-top

_TARGET_EXAMPLES_PER_S = 200.0


def _rate(iterator, seconds, warmup, count=lambda x: 1):
    """Items (or count(item) units) per second over `seconds`, after `warmup` items."""
    for _ in range(warmup):
        next(iterator)
    n, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        n += count(next(iterator))
    return n / (time.perf_counter() - start)


def _rounds(stages, rounds, seconds):
    """stages: {name: (iterator, count)}; each round measures every stage for `seconds` in
    turn (A B C A B C ...). Returns {name: {"rates", "min", "median", "max", "other_cpu_s"}}
    and the order."""
    out = {name: {"rates": [], "other_cpu_s": []} for name in stages}
    order = []
    for _ in range(rounds):
        for name, (it, count) in stages.items():
            o0, c0 = common.cpu_busy_seconds(), common.own_cpu_seconds()
            out[name]["rates"].append(_rate(it, seconds, 0, count))
            own = common.own_cpu_seconds() - c0
            o1 = common.cpu_busy_seconds()
            out[name]["other_cpu_s"].append(
                None if o0 is None or o1 is None else round(max(0.0, o1 - o0 - own), 3))
            order.append(name)
    for rec in out.values():
        rec.update(min=min(rec["rates"]), median=statistics.median(rec["rates"]),
                   max=max(rec["rates"]))
    return out, order


def run(task, inputs_length, seconds, warmup, vocabulary, data_dir, pack, rounds=5):
    import seqio  # pylint: disable=g-import-not-at-top
    import tensorflow as tf  # pylint: disable=g-import-not-at-top

    from tasks import corpus_readers, pretraining, span_corruption  # pylint: disable=g-import-not-at-top
    from tasks import vocab as vocab_lib  # pylint: disable=g-import-not-at-top

    pretraining.register_pretraining_tasks(data_dir, vocabulary)
    raw_length, targets_length = span_corruption.span_corruption_lengths(inputs_length)
    lengths = {"inputs": inputs_length, "targets": targets_length}
    lang = pretraining.PRETRAIN_TASKS.get(task, "en")
    results = {}

    docs = corpus_readers.corpus_dataset(data_dir, lang).repeat().prefetch(tf.data.AUTOTUNE)
    docs_it = docs.as_numpy_iterator()
    _rate(docs_it, 0.0, warmup)

    feature = seqio.Feature(vocab_lib.get_vocabulary(vocabulary))
    tokens = pretraining.tokenize_text(
        corpus_readers.corpus_dataset(data_dir, lang).repeat(), {"targets": feature})
    tokens_it = tokens.prefetch(tf.data.AUTOTUNE).as_numpy_iterator()
    _rate(tokens_it, 0.0, warmup)

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
    _rate(it, 0.0, warmup)
    per_round = seconds / rounds
    stages, order = _rounds({
        "examples_per_s": (it, lambda x: 1),
        "read_docs_per_s": (docs_it, lambda x: 1),
        "read_tokenize_tokens_per_s": (tokens_it, lambda ex: len(ex["targets"])),
    }, rounds, per_round)
    for name, rec in stages.items():
        results[name] = rec["median"]
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
        "rounds": {name: {k: (round(v, 1) if isinstance(v, float) else v)
                          for k, v in rec.items()} for name, rec in stages.items()},
        "order": order,
        "settings": {
            "task": task, "inputs_length": inputs_length, "targets_length": targets_length,
            "raw_tokens_per_example": raw_length, "vocabulary": vocabulary,
            "data_dir": corpus_readers.resolve_data_dir(data_dir), "pack": pack,
            "seconds": seconds, "warmup_examples": warmup,
            "example_shape": list(first[key].shape),
            "peer_language": lang,
        },
        "machine": {
            "cpu_count": os.cpu_count(),
            "platform": platform.platform(), "tensorflow": tf.__version__,
        },
    }


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--task", default="medmt5_pretrain",
                        help="task or mixture name (default: the pretraining mixture)")
    parser.add_argument("--inputs_length", type=int, default=1024)
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--vocabulary", default="tiny", choices=("tiny", "mt5"))
    parser.add_argument("--data_dir", default=None,
                        help="corpus directory (default: $MEDMT5_DATA_DIR or the sample)")
    parser.add_argument("--pack", action="store_true",
                        help="include EncDecFeatureConverter packing (unbatched examples)")
    common.add_protocol_args(parser, rounds=5, warmup=50)
    parser.add_argument("--out", default=None, help="also append the JSON line to this file")
    args = parser.parse_args(argv)
    proto = common.check_protocol(args)
    proto["allocator"] = common.allocator_info()
    result = run(args.task, args.inputs_length, args.seconds, args.warmup, args.vocabulary,
                 args.data_dir, args.pack, rounds=args.rounds)
    result["protocol"] = common.finish_protocol(proto)
    result["benchmark"] = "data_pipeline"
    common.emit(result, args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
