"""Check the data a run will read, before any training: `python -m medmt5.check_data`.

    python -m medmt5.check_data --gin_file=finetune/abstrct_en.gin \\
        --gin.MODEL_DIR="'/tmp/x'" --gin.INITIAL_CHECKPOINT_PATH="'/models/Medical-mT5-large'"

Takes the same --gin_file / --gin.NAME=VALUE flags as medmt5.train (and eval/infer), sets
up the tasks the same way (vocabulary, data folders), and reports for every task of
MIXTURE_OR_TASK_NAME and each of its splits: the files it reads, the number of rows, the
label set (sequence labelling: the dataset's tags and those found), and one example
input/target pair after the task's preprocessing at TASK_FEATURE_LENGTHS. Nothing is
trained and no checkpoint is loaded.

It stops (exit status 1) at the first thing that does not match, with a message naming the
file (and line) to fix: a missing or malformed file, a label outside the dataset's label
set, a split without rows, a tag the vocabulary cannot encode and decode back, a vocabulary
with more ids than the model's embedding rows.
"""
from __future__ import annotations

import logging
import sys
from collections.abc import Sequence

import gin
from medmt5.cli import gin_utils
from medmt5.data import pipeline as data
from medmt5.runtime import failures
from tasks import benchmarks, promot_readers, promot_tasks, qa, seqlabel

log = logging.getLogger(__name__)

# Rows are counted up to this many per split (the real pretraining corpus has millions).
MAX_COUNT = 20_000
SHOWN_CHARS = 240


class DataCheckError(ValueError):
    """The data does not match what the run needs; the message names what to fix."""


def _short(text: str) -> str:
    text = " ".join(text.split())
    return text if len(text) <= SHOWN_CHARS else text[:SHOWN_CHARS] + " ..."


def _text(value) -> str:
    return value.decode("utf-8") if isinstance(value, bytes) else str(value)


def _gin_param(name: str, default=None):
    try:
        return gin.query_parameter(name)
    except ValueError:
        return default


def task_files(task, split: str) -> list[str]:
    """The files task `task` reads for `split`, as far as its module can tell."""
    name = task.name
    if name in benchmarks.TASKS_BY_NAME or name in qa.QA_TASKS:
        return benchmarks.task_files(name, split)
    if name in promot_tasks.TASKS:
        spec = promot_tasks.TASKS[name]
        root = promot_readers.data_dir(_gin_param("setup_tasks.promot_dir"))
        return promot_readers.split_files(root, spec.dataset, spec.splits[split])
    list_shards = getattr(task.source, "list_shards", None)
    if list_shards is not None and not type(task.source).__name__ == "FunctionDataSource":
        return list(list_shards(split))
    return []


def _count(dataset) -> str:
    n = 0
    for _ in dataset.take(MAX_COUNT + 1):
        n += 1
    return f">{MAX_COUNT:,} (counting stopped)" if n > MAX_COUNT else f"{n:,}"


def _seqlabel_report(name: str, split: str, vocabulary) -> dict[str, str]:
    """Label set and tags found; stops on a tag the vocabulary cannot round-trip."""
    task = benchmarks.TASKS_BY_NAME[name]
    labels = benchmarks.DATASET_LABELS[task.dataset]
    found = sorted({label for s in benchmarks.read_sentences(task, split,
                                                             benchmarks.registered_dir())
                    for _, _, label in seqlabel.iob_spans(s.tags)})
    for label in seqlabel.canonical_labels(labels):
        for unit in (seqlabel.open_tag(label), seqlabel.close_tag(label)):
            back = vocabulary.decode(vocabulary.encode(unit))
            if back.strip() != unit:
                raise DataCheckError(
                    f"task {name}: the vocabulary cannot represent the tag {unit!r} (it "
                    f"decodes back as {back!r}), so the model could not produce it; use the "
                    "vocabulary of the checkpoint (docs/data.md)")
    missing = sorted(set(labels) - set(found))
    return {"label set": ", ".join(labels),
            "labels found": ", ".join(found) or "(no entity spans)",
            **({"warning": f"labels never found in this split: {', '.join(missing)}"}
               if missing else {})}


def _example(task, split: str, lengths: dict | None) -> dict[str, str]:
    """The first example after preprocessing (text and token counts)."""
    out: dict[str, str] = {}
    kwargs = {"sequence_length": dict(lengths)} if lengths else {"sequence_length": None}
    ds = task.get_dataset(split=split, shuffle=False, num_epochs=1, **kwargs)
    for ex in ds.take(1).as_numpy_iterator():
        for key in ("inputs", "targets"):
            if key not in ex:
                continue
            vocab = task.output_features[key].vocabulary
            text = ex.get(f"{key}_pretokenized")
            shown = _text(text) if text is not None else vocab.decode(ex[key].tolist())
            limit = (lengths or {}).get(key)
            tokens = len(ex[key])
            note = f", cut to {limit}" if limit and text is not None and \
                len(vocab.encode(_text(text))) + 1 > limit else ""
            out[f"example {key}"] = f"{_short(shown)}  [{tokens} tokens{note}]"
        return out
    raise DataCheckError(f"task {task.name} split {split}: no example after preprocessing")


def check_task(task, lengths: dict | None, split: str | None = None) -> list[str]:
    """Report lines for one task (every split, or `split`); raises on the first mismatch."""
    lines = [f"task {task.name}"]
    splits = [split] if split else list(task.splits)
    vocabulary = task.output_features["targets"].vocabulary
    for sp in splits:
        try:
            files = task_files(task, sp)
            rows = _count(task.source.get_dataset(sp, shuffle=False))
            if rows == "0":
                raise DataCheckError(
                    f"task {task.name} split {sp}: no rows in {files or 'its source'}")
            info = {"files": ", ".join(files) if files else "(built from other tasks' data)",
                    "rows": rows}
            if task.name in benchmarks.TASKS_BY_NAME:
                info.update(_seqlabel_report(task.name, sp, vocabulary))
            info.update(_example(task, sp, lengths))
        except Exception as e:  # noqa: BLE001 - tf.data wraps the readers' errors
            converted = data.input_error(e)
            if converted is not e or isinstance(e, ValueError):
                raise converted from None
            raise
        lines.append(f"  split {sp}:")
        lines.extend(f"    {k}: {v}" for k, v in info.items())
    return lines


def check(name: str, lengths: dict | None = None, model_vocab_size: int | None = None,
          split: str | None = None, out=None) -> list[str]:
    """Check every task of mixture/task `name`; prints and returns the report lines."""
    out = out or sys.stdout
    provider = data.get_task_or_mixture(name)
    tasks = getattr(provider, "tasks", None) or [provider]
    vocab = tasks[0].output_features["targets"].vocabulary
    lines = [f"{name}: {len(tasks)} task(s), vocabulary {vocab.vocab_size:,} ids"]
    if model_vocab_size:
        data.check_vocabulary(name, model_vocab_size)
        lines[0] += f" (model rows {model_vocab_size:,})"
    print(lines[0], file=out, flush=True)
    for task in tasks:
        task_lines = check_task(task, lengths, split)
        print("\n".join(task_lines), file=out, flush=True)
        lines.extend(task_lines)
    print(f"check_data: OK ({len(tasks)} task(s) of {name})", file=out, flush=True)
    return lines


USAGE = __doc__


def main(argv: Sequence[str]) -> int:
    def run(flags):
        del flags
        name = gin_utils.query_macro("MIXTURE_OR_TASK_NAME")
        if not name:
            raise DataCheckError("MIXTURE_OR_TASK_NAME is not set; pass the run's --gin_file "
                                 "or --gin.MIXTURE_OR_TASK_NAME=\"'abstrct_neoplasm_en'\"")
        check(name, gin_utils.query_macro("TASK_FEATURE_LENGTHS"),
              _gin_param("T5Config.vocab_size"))

    return gin_utils.run_cli(run, argv, "medmt5.check_data", USAGE)


def console_main() -> None:
    failures.exit_process(main(sys.argv[1:]))


if __name__ == "__main__":
    console_main()
