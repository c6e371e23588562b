"""T5's span corruption as a seqio preprocessor, in TensorFlow ops (seqio does not ship it).

A chunk of `raw` tokens is split into alternating non-noise / noise spans: about
noise_density * raw noise tokens in round(noise / mean_noise_span_length) spans, span lengths
drawn by a uniformly random segmentation, always starting with a non-noise span and ending
with a noise span. Inputs keep the non-noise tokens and put one sentinel per noise span;
targets hold the noise tokens, each span preceded by its sentinel. Sentinels count down from
<extra_id_0>, whose id comes from the vocabulary's own piece (tasks.vocab.sentinel_id): 250099
for mT5's mc4.250000.100extra (built-in sentinels, 250,100 pieces, extra_ids=0), vocab_size-1
for seqio's appended ones (the tiny vocabulary), and still 250099 when a Hugging Face
tokenizer adds tokens above it (vocab_size 250122). EOS is appended
afterwards by seqio.preprocessors.append_eos_after_trim:

  tokens  [a b c d e f g h]     noise = d e, h
  inputs  [a b c S0 f g S1] + EOS
  targets [S0 d e S1 h] + EOS

Documents are concatenated (docs_per_concat at a time, as T5's reduce_concat_tokens) and split
into chunks of the raw length whose corrupted inputs are exactly the requested inputs length
(span_corruption_lengths: 512 -> raw 568, targets 114; 1024 -> raw 1137, targets 229).
Randomness comes from stateless ops fed by seqio.map_over_dataset(num_seeds=2), so a dataset
built under the same seqio seed yields the same examples.
"""
import logging

import seqio
import tensorflow as tf

from tasks import vocab as vocab_lib

NOISE_DENSITY = 0.15
MEAN_NOISE_SPAN_LENGTH = 3.0
DOCS_PER_CONCAT = 128


def _corrupted_lengths(raw_length, noise_density, mean_noise_span_length):
    """(inputs, targets) lengths, EOS included, for a chunk of raw_length tokens."""
    num_noise = int(round(raw_length * noise_density))
    num_spans = int(round(num_noise / mean_noise_span_length))
    return raw_length - num_noise + num_spans + 1, num_noise + num_spans + 1


def span_corruption_lengths(inputs_length, noise_density=NOISE_DENSITY,
                            mean_noise_span_length=MEAN_NOISE_SPAN_LENGTH):
    """(raw chunk length, targets length) for the requested inputs length (EOS included).

    The raw length is the longest chunk whose corrupted inputs fit in inputs_length, as T5's
    random_spans_helper computes it.
    """
    if inputs_length < 2:
        raise ValueError(f"inputs length must be >= 2 for span corruption, got {inputs_length}.")
    raw = inputs_length - 1
    while _corrupted_lengths(raw + 1, noise_density, mean_noise_span_length)[0] <= inputs_length:
        raw += 1
    return raw, _corrupted_lengths(raw, noise_density, mean_noise_span_length)[1]


def random_segmentation(num_items, num_segments, seed):
    """Lengths [num_segments] (each >= 1, summing to num_items) of a uniformly random split.

    Picks num_segments - 1 distinct cut points among the num_items - 1 gaps.
    """
    scores = tf.random.stateless_uniform([num_items - 1], seed=seed)
    cuts = tf.sort(tf.argsort(scores)[:num_segments - 1]) + 1
    bounds = tf.concat([[0], cuts, [num_items]], axis=0)
    return bounds[1:] - bounds[:-1]


def random_spans_noise_mask(length, seeds, noise_density=NOISE_DENSITY,
                            mean_noise_span_length=MEAN_NOISE_SPAN_LENGTH):
    """Boolean noise mask [length]: non-noise span first, noise span last.

    length is a scalar int32 tensor; seeds are two stateless seeds (shape [2] each), one for the
    noise span lengths and one for the non-noise span lengths. Lengths below 2 are treated as 2
    (one noise token) and the mask cut back.
    """
    padded_length = tf.maximum(length, 2)
    num_noise = tf.cast(tf.round(tf.cast(padded_length, tf.float64) * noise_density), tf.int32)
    num_noise = tf.clip_by_value(num_noise, 1, padded_length - 1)
    num_spans = tf.cast(tf.round(tf.cast(num_noise, tf.float64) / mean_noise_span_length),
                        tf.int32)
    num_spans = tf.maximum(num_spans, 1)
    noise_lengths = random_segmentation(num_noise, num_spans, seeds[0])
    keep_lengths = random_segmentation(padded_length - num_noise, num_spans, seeds[1])
    span_lengths = tf.reshape(tf.stack([keep_lengths, noise_lengths], axis=1), [-1])  # [2*spans]
    span_is_noise = tf.tile([False, True], [num_spans])
    return tf.repeat(span_is_noise, span_lengths)[:length]


def replace_spans_with_sentinels(tokens, span_mask, top_sentinel):
    """Each run of True in span_mask [L] becomes one sentinel; sentinels count down.

    The k-th run (0-based) becomes top_sentinel - k.
    """
    prev = tf.pad(span_mask[:-1], [[1, 0]])
    first = tf.logical_and(span_mask, tf.logical_not(prev))
    sentinels = top_sentinel + 1 - tf.cumsum(tf.cast(first, tokens.dtype))
    out = tf.where(first, sentinels, tokens)
    return tf.boolean_mask(out, tf.logical_not(tf.logical_and(span_mask, prev)))


def concat_and_split(dataset, raw_length, feature_key="targets", docs_per_concat=DOCS_PER_CONCAT):
    """Token dataset {feature_key: [n]} -> {"targets": [<= raw_length]} chunks.

    docs_per_concat documents are concatenated (no separator, as T5) and cut into raw_length
    pieces; the last piece of each group may be shorter. Empty pieces are dropped.
    """
    def split(tokens):
        n = tf.size(tokens)
        num_chunks = (n + raw_length - 1) // raw_length
        rows = tf.reshape(tf.pad(tokens, [[0, num_chunks * raw_length - n]]),
                          [num_chunks, raw_length])
        lengths = tf.minimum(raw_length, n - tf.range(num_chunks) * raw_length)
        return tf.RaggedTensor.from_tensor(rows, lengths=lengths)

    @tf.autograph.experimental.do_not_convert
    def select(features):
        return features[feature_key]

    @tf.autograph.experimental.do_not_convert
    def concat_split(batch):  # RaggedTensor [docs, None]
        return split(batch.flat_values)

    @tf.autograph.experimental.do_not_convert
    def non_empty(tokens):
        return tf.size(tokens) > 0

    @tf.autograph.experimental.do_not_convert
    def as_features(tokens):
        return {"targets": tokens}

    ds = dataset.map(select, num_parallel_calls=tf.data.AUTOTUNE)
    ds = ds.ragged_batch(docs_per_concat)
    ds = ds.map(concat_split, num_parallel_calls=tf.data.AUTOTUNE)
    ds = ds.flat_map(tf.data.Dataset.from_tensor_slices)
    return ds.filter(non_empty).map(as_features)


@seqio.map_over_dataset(num_seeds=2)
@tf.autograph.experimental.do_not_convert  # plain TF ops; skips seconds of AutoGraph parsing
def corrupt_spans(features, seeds, top_sentinel, noise_density=NOISE_DENSITY,
                  mean_noise_span_length=MEAN_NOISE_SPAN_LENGTH):
    """{"targets": tokens [n]} -> {"inputs", "targets"} span-corrupted (no EOS yet).

    top_sentinel: the id of <extra_id_0>; span k gets top_sentinel - k."""
    tokens = features["targets"]
    noise = random_spans_noise_mask(tf.size(tokens), seeds, noise_density,
                                    mean_noise_span_length)
    top = tf.constant(top_sentinel, tokens.dtype)
    return {
        "inputs": replace_spans_with_sentinels(tokens, noise, top),
        "targets": replace_spans_with_sentinels(tokens, tf.logical_not(noise), top),
    }


def span_corruption(dataset, sequence_length, output_features, noise_density=NOISE_DENSITY,
                    mean_noise_span_length=MEAN_NOISE_SPAN_LENGTH,
                    docs_per_concat=DOCS_PER_CONCAT):
    """seqio preprocessor: tokenized {"targets": [n]} documents -> span-corrupted examples.

    Put it after seqio.preprocessors.tokenize and before append_eos_after_trim; the sentinels
    come from output_features["targets"].vocabulary.
    """
    if not sequence_length or sequence_length.get("inputs") is None:
        raise ValueError("span_corruption needs task_feature_lengths with an 'inputs' length "
                         f"(e.g. {{'inputs': 1024, 'targets': 229}}), got {sequence_length!r}.")
    raw_length, targets_length = span_corruption_lengths(
        sequence_length["inputs"], noise_density, mean_noise_span_length)
    if sequence_length.get("targets") is not None and sequence_length["targets"] < targets_length:
        logging.warning("span_corruption: targets length %d is below the %d that inputs length "
                        "%d produces; targets will be truncated.", sequence_length["targets"],
                        targets_length, sequence_length["inputs"])
    top_sentinel = vocab_lib.sentinel_id(output_features["targets"].vocabulary, 0)
    dataset = concat_and_split(dataset, raw_length, "targets", docs_per_concat)
    return corrupt_spans(dataset, top_sentinel=top_sentinel, noise_density=noise_density,
                         mean_noise_span_length=mean_noise_span_length)
