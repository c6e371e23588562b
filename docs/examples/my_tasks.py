"""A user's own seqio task module, kept outside the medmt5 repository (docs/usage.md).

medmt5's CLIs import it with T5X's macro:

    PYTHONPATH=/path/to/folder_with_this_file python -m medmt5.train \
        --gin_file=finetune/abstrct_tiny.gin --gin.MIXTURE_OR_TASK_MODULE="'my_tasks'" \
        --gin.MIXTURE_OR_TASK_NAME="'my_drug_class'" ...

It brings its own data (tab-separated `input<TAB>target` files in MY_TASKS_DATA, default the
folder my_data/ next to this file), its own vocabulary (my_data/spiece.model, a sentencepiece
model trained on that text, e.g. with `spm_train --input=my_data/train.tsv
--model_prefix=my_data/spiece --vocab_size=120 --pad_id=0 --eos_id=1 --unk_id=2 --bos_id=-1`;
the model's --gin.T5Config.vocab_size must be at least its size) and its own metric (exact
match).
"""
import os

import seqio
import tensorflow as tf

DATA_DIR = os.environ.get("MY_TASKS_DATA",
                          os.path.join(os.path.dirname(os.path.abspath(__file__)), "my_data"))
# T5's id conventions (pad 0, eos 1, unk 2); no sentinels needed for this task.
VOCABULARY = seqio.SentencePieceVocabulary(os.path.join(DATA_DIR, "spiece.model"), extra_ids=0)


def parse_tsv(dataset):
    """One `input<TAB>target` line -> {"inputs": str, "targets": str}."""
    def split(line):
        fields = tf.strings.split(line, "\t", maxsplit=1)
        return {"inputs": fields[0], "targets": fields[1]}

    return dataset.map(split, num_parallel_calls=tf.data.AUTOTUNE)


def exact_match(targets, predictions):
    """Percent of predictions equal to their target (whitespace-trimmed)."""
    hits = sum(t.strip() == p.strip() for t, p in zip(targets, predictions))
    return {"exact_match": 100.0 * hits / max(len(targets), 1)}


seqio.TaskRegistry.add(
    "my_drug_class",
    source=seqio.TextLineDataSource({
        split: os.path.join(DATA_DIR, f"{split}.tsv") for split in ("train", "validation", "test")
    }),
    preprocessors=[
        parse_tsv,
        seqio.preprocessors.tokenize,
        seqio.preprocessors.append_eos_after_trim,
    ],
    output_features={
        "inputs": seqio.Feature(VOCABULARY, add_eos=True),
        "targets": seqio.Feature(VOCABULARY, add_eos=True),
    },
    metric_fns=[exact_match])
