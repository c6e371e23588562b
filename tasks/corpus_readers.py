"""Strict readers for the pretraining corpus (HiTZ/Multilingual-Medical-Corpus and the sample).

A data directory holds, per language, one of these layouts (first match wins):
  {lang}.jsonl, {lang}.jsonl.gz        one JSON record per line with a "text" field
  {lang}/*.parquet, data/{lang}-*.parquet   parquet with a "text" column (HF hub download)
  {lang}.txt                           plain text, one document per line
Local paths and gs:// paths work alike (tf.io.gfile). The directory is an argument
(gin-bindable, e.g. register_pretraining_tasks.data_dir); when it is None, $MEDMT5_DATA_DIR,
and failing that the shipped sample tasks/data/corpus.

Bad input raises ValueError naming the file and line (malformed JSON, no "text" field,
non-string text, invalid UTF-8, a file without any document). Blank lines and empty texts are
skipped, counted and logged per file.
"""
import collections
import gzip
import io
import json
import logging
import os
import random
import zlib

import seqio
import tensorflow as tf

LANGUAGES = ("en", "es", "fr", "it")
DATA_DIR_ENV = "MEDMT5_DATA_DIR"
SAMPLE_DATA_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "data", "corpus")
TEXT_FIELD = "text"


def resolve_data_dir(data_dir=None):
    """data_dir if given, else $MEDMT5_DATA_DIR, else the shipped sample directory."""
    return data_dir or os.environ.get(DATA_DIR_ENV) or SAMPLE_DATA_DIR


def check_language(lang):
    if lang not in LANGUAGES:
        raise ValueError(f"Unknown corpus language {lang!r}; valid languages: "
                         f"{', '.join(LANGUAGES)}.")
    return lang


def corpus_files(data_dir, lang):
    """Sorted files holding language `lang` under data_dir, by the layouts in the docstring."""
    check_language(lang)
    data_dir = data_dir.rstrip("/")
    # Layouts in order: a glob pattern, or a single file name (checked with exists).
    layouts = [f"{lang}.jsonl", f"{lang}.jsonl.gz", f"{lang}/*.parquet",
               f"data/{lang}-*.parquet", f"{lang}.txt"]
    for layout in layouts:
        path = f"{data_dir}/{layout}"
        if "*" in layout:
            files = sorted(tf.io.gfile.glob(path))
        else:
            files = [path] if tf.io.gfile.exists(path) else []
        if files:
            return files
    if not tf.io.gfile.isdir(data_dir):
        raise FileNotFoundError(f"Corpus directory {data_dir} does not exist (set ${DATA_DIR_ENV}"
                                " or pass data_dir).")
    raise FileNotFoundError(
        f"No corpus files for language {lang!r} in {data_dir}: expected one of "
        f"{', '.join(layouts)}. See docs/data.md.")


class SkipCounter:
    """Counts skipped records by reason for one file and logs them once."""

    def __init__(self, path):
        self.path = path
        self.counts = collections.Counter()

    def skip(self, reason):
        self.counts[reason] += 1

    def log(self):
        if self.counts:
            detail = ", ".join(f"{n} {reason}" for reason, n in sorted(self.counts.items()))
            logging.warning("%s: skipped %s.", self.path, detail)


def _open_binary(path):
    f = tf.io.gfile.GFile(path, "rb")
    return gzip.GzipFile(fileobj=f, mode="rb") if path.endswith(".gz") else f


def _raw_lines(path):
    """(line number, bytes) of a (possibly gzipped) file; a damaged or truncated gzip file
    or a read error is a ValueError naming the file and the line it stopped after."""
    line_no = 0
    try:
        with _open_binary(path) as f:
            for line_no, raw in enumerate(f, 1):
                yield line_no, raw
    except (EOFError, zlib.error, gzip.BadGzipFile) as e:
        raise ValueError(f"{path}: damaged or truncated gzip file after line {line_no} ({e}); "
                         "download or compress it again (check it with `gzip -t`).") from None
    except (OSError, tf.errors.OpError) as e:
        raise ValueError(f"{path}: read error after line {line_no} "
                         f"({getattr(e, 'message', None) or e}).") from None


def _decoded_lines(path):
    """(line number, str) for each line of a (possibly gzipped) UTF-8 file."""
    for line_no, raw in _raw_lines(path):
        try:
            yield line_no, raw.decode("utf-8")
        except UnicodeDecodeError as e:
            raise ValueError(f"{path}:{line_no}: invalid UTF-8 ({e.reason} at byte "
                             f"{e.start}); re-encode the file as UTF-8.") from None


def read_jsonl(path, skips=None):
    """Texts of a JSONL(.gz) file of {"text": str} records."""
    skips = skips or SkipCounter(path)
    for line_no, line in _decoded_lines(path):
        if not line.strip():
            skips.skip("blank lines")
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as e:
            raise ValueError(f"{path}:{line_no}: malformed JSON ({e.msg} at column "
                             f"{e.colno}).") from None
        if not isinstance(record, dict) or TEXT_FIELD not in record:
            keys = sorted(record) if isinstance(record, dict) else type(record).__name__
            raise ValueError(f'{path}:{line_no}: record has no "{TEXT_FIELD}" field '
                             f"(found {keys}); each line must be a JSON object with a "
                             f'"{TEXT_FIELD}" string.')
        text = record[TEXT_FIELD]
        if not isinstance(text, str):
            raise ValueError(f'{path}:{line_no}: "{TEXT_FIELD}" is a '
                             f"{type(text).__name__}, expected a string.")
        if not text.strip():
            skips.skip("empty texts")
            continue
        yield text


def read_text(path, skips=None):
    """Lines of a plain-text file, one document per line."""
    skips = skips or SkipCounter(path)
    for _, line in _decoded_lines(path):
        text = line.rstrip("\r\n")
        if not text.strip():
            skips.skip("blank lines")
            continue
        yield text


class _SeekableGFile(io.RawIOBase):
    """tf.io.gfile.GFile as a standard raw binary file (pyarrow needs `closed`, `readinto`)."""

    def __init__(self, path):
        super().__init__()
        self._f = tf.io.gfile.GFile(path, "rb")

    def readable(self):
        return True

    def seekable(self):
        return True

    def readinto(self, buffer):
        data = self._f.read(len(buffer))
        buffer[:len(data)] = data
        return len(data)

    def seek(self, offset, whence=io.SEEK_SET):
        if whence == io.SEEK_END:
            offset, whence = self._f.size() + offset, io.SEEK_SET
        elif whence == io.SEEK_CUR:
            offset, whence = self._f.tell() + offset, io.SEEK_SET
        self._f.seek(offset)
        return self._f.tell()

    def tell(self):
        return self._f.tell()

    def close(self):
        self._f.close()
        super().close()


def read_parquet(path, skips=None, batch_size=1024):
    """Texts of the "text" column of a parquet file (as downloaded from the HF hub)."""
    import pyarrow.parquet as pq  # lazy: only parquet corpora need pyarrow

    skips = skips or SkipCounter(path)
    with io.BufferedReader(_SeekableGFile(path), buffer_size=1 << 20) as f:
        try:
            pf = pq.ParquetFile(f)
        except Exception as e:  # pyarrow raises several types for corrupt files
            raise ValueError(f"{path}: not a readable parquet file ({e}).") from None
        columns = pf.schema_arrow.names
        if TEXT_FIELD not in columns:
            raise ValueError(f'{path}: no "{TEXT_FIELD}" column (columns: {columns}).')
        for batch in pf.iter_batches(batch_size=batch_size, columns=[TEXT_FIELD]):
            for text in batch.column(0).to_pylist():
                if text is None:
                    skips.skip("null texts")
                elif not isinstance(text, str):
                    raise ValueError(f'{path}: "{TEXT_FIELD}" column holds '
                                     f"{type(text).__name__}, expected strings.")
                elif not text.strip():
                    skips.skip("empty texts")
                else:
                    yield text


def read_documents(path):
    """Texts of one corpus file, by extension; raises if the file holds no document."""
    if path.endswith((".jsonl", ".jsonl.gz")):
        reader = read_jsonl
    elif path.endswith(".parquet"):
        reader = read_parquet
    elif path.endswith(".txt"):
        reader = read_text
    else:
        raise ValueError(f"{path}: unknown corpus file type; use .jsonl, .jsonl.gz, .parquet "
                         "or .txt.")
    skips = SkipCounter(path)
    count = 0
    for text in reader(path, skips):
        count += 1
        yield text
    skips.log()
    if count == 0:
        raise ValueError(f"{path}: the file holds no documents"
                         + (f" ({dict(skips.counts)} skipped)." if skips.counts else "."))


def _ordered_files(data_dir, lang, shuffle_files, seed):
    files = list(corpus_files(resolve_data_dir(data_dir), lang))
    if shuffle_files:
        random.Random(seed).shuffle(files)
    return files


def iter_corpus(data_dir, lang, shuffle_files=False, seed=None):
    """Texts of language `lang` in data_dir, file by file (file order shuffled on request)."""
    for path in _ordered_files(data_dir, lang, shuffle_files, seed):
        yield from read_documents(path)


def count_documents(data_dir, lang):
    """Number of documents (rows kept by the readers) of `lang` in data_dir."""
    return sum(1 for _ in iter_corpus(data_dir, lang))


READ_BATCH = 256  # texts per generator call: per-element Python overhead would cap throughput


def _batches(texts, size):
    batch = []
    for text in texts:
        batch.append(text)
        if len(batch) == size:
            yield batch
            batch = []
    if batch:
        yield batch


@tf.autograph.experimental.do_not_convert
def _as_features(text):
    return {TEXT_FIELD: text}


@tf.autograph.experimental.do_not_convert
def file_dataset(path):
    """tf.data.Dataset of {"text": tf.string} for one corpus file (path: str or tf.string)."""
    def generate(p):
        yield from _batches(read_documents(p.decode() if isinstance(p, bytes) else p),
                            READ_BATCH)

    ds = tf.data.Dataset.from_generator(generate, args=(path,),
                                        output_signature=tf.TensorSpec([None], tf.string))
    return ds.unbatch().map(_as_features)


def corpus_dataset(data_dir, lang, shuffle_files=False, seed=None):
    """tf.data.Dataset of {"text": tf.string} for `lang`, files read one after another."""
    files = _ordered_files(data_dir, lang, shuffle_files, seed)
    return tf.data.Dataset.from_tensor_slices(files).flat_map(file_dataset)


# The held-out "validation" split of the pretraining corpus: a document belongs to it when
# FarmHash Fingerprint64 of its UTF-8 text (tf.strings.to_hash_bucket_fast) falls in the
# first `fraction` of HASH_BUCKETS buckets. It depends on the text alone, so it is the same
# on every host, after every restart, in every file order and under any sharding.
HASH_BUCKETS = 1_000_000
DEFAULT_VALIDATION_FRACTION = 0.01   # 1%: the real corpus keeps ~670k documents for it
SAMPLE_VALIDATION_FRACTION = 0.05    # the shipped sample: ~79 of 1,580 documents


def default_validation_fraction(data_dir):
    """SAMPLE_VALIDATION_FRACTION for the shipped sample, DEFAULT_VALIDATION_FRACTION else."""
    return (SAMPLE_VALIDATION_FRACTION if resolve_data_dir(data_dir) == SAMPLE_DATA_DIR
            else DEFAULT_VALIDATION_FRACTION)


def check_validation_fraction(fraction):
    """fraction as a float in [0, 1); ValueError naming the gin parameter otherwise."""
    try:
        value = float(fraction)
    except (TypeError, ValueError):
        value = None
    if value is None or not 0.0 <= value < 1.0:
        raise ValueError(f"corpus validation fraction must be a number in [0, 1), got "
                         f"{fraction!r}; set setup_tasks.corpus_validation_fraction (gin), "
                         "e.g. 0.01 to hold out 1% of the documents.")
    return value


def validation_threshold(fraction):
    return int(round(check_validation_fraction(fraction) * HASH_BUCKETS))


def in_validation_split(texts, fraction):
    """bool tensor: which texts (a string tensor, any shape) are held out for validation."""
    return tf.strings.to_hash_bucket_fast(texts, HASH_BUCKETS) < validation_threshold(fraction)


class CorpusDataSource(seqio.FileDataSource):
    """seqio source for one language: 'train' and a held-out 'validation' split over the files
    corpus_files finds.

    validation_fraction of the documents (chosen by a stable hash of the text, see
    in_validation_split) form 'validation' and are left out of 'train'; 0 gives 'train' only.
    Files are listed when a dataset is built (not at registration), so a task can be
    registered before its data is reachable. As a FileDataSource it reads up to 16 files in
    parallel (interleave), shuffles files with the seed when asked, and with several hosts
    gives each host its own files when there are at least as many files as hosts (seqio
    otherwise shards the examples).
    """

    def __init__(self, data_dir, lang, validation_fraction=DEFAULT_VALIDATION_FRACTION):
        self._data_dir = resolve_data_dir(data_dir)
        self._lang = check_language(lang)
        self._threshold = validation_threshold(validation_fraction)
        splits = ("train", "validation") if self._threshold > 0 else ("train",)
        super().__init__(read_file_fn=file_dataset,
                         split_to_filepattern={s: f"{self._data_dir}/{lang}*" for s in splits})

    def list_shards(self, split):
        if split not in self.splits:
            raise ValueError(f"The pretraining corpus has the splits {list(self.splits)}, not "
                             f"{split!r} (a 'validation' split needs "
                             "setup_tasks.corpus_validation_fraction > 0).")
        return corpus_files(self._data_dir, self._lang)

    def get_dataset(self, split="train", shuffle=True, seed=None, shard_info=None, **kwargs):
        ds = super().get_dataset(split, shuffle, seed, shard_info, **kwargs)
        if self._threshold == 0:
            return ds
        want = split == "validation"
        threshold = self._threshold

        @tf.autograph.experimental.do_not_convert
        def keep(features):
            held_out = tf.strings.to_hash_bucket_fast(features[TEXT_FIELD], HASH_BUCKETS) \
                < threshold
            return tf.equal(held_out, want)

        return ds.filter(keep)
