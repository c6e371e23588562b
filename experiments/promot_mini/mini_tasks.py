"""seqio registrations of the synthetic miniature tasks (tiny vocabulary).

  mini_icl_pretrain        train: k-shot episodes of every family (k in 2..3), endless mix
  mini_icl_<family>        test: EVAL_EXAMPLES 3-shot episodes of one family (held-out eval;
                           never used in fine-tuning); mixture mini_icl_heldout = all of them
  mini_<target>            train / validation: zero-shot target task (rte, translate, count)

Features inputs / targets (+ answers, idx, num_shots like tasks/promot_tasks.py) so the
project's Evaluator, postprocessing and Norm. Avg. apply unchanged.
"""
from __future__ import annotations

import itertools
from typing import Any, Dict, Iterable, Optional

import seqio

from experiments.promot_mini import synthetic
from tasks import icl, promot_metrics, promot_tasks

DATA_SEED = 0
EVAL_SHOTS = 3
EVAL_EXAMPLES = 64          # per held-out family (test split)
TARGET_TRAIN_EXAMPLES = 20000
TARGET_EVAL_EXAMPLES = 128
PRETRAIN_EXAMPLES = 400000  # one epoch of the pretraining mix (seqio repeats it)
FEATURE_LENGTHS = {"inputs": 64, "targets": 8}

PRETRAIN_TASK = "mini_icl_pretrain"
HELDOUT_MIXTURE = "mini_icl_heldout"
ICL_TASKS = {f"mini_icl_{f}": f for f in synthetic.ICL_FAMILIES}
TARGET_TASKS = {f"mini_{t}": t for t in synthetic.TARGET_TASKS}


def postprocess(output: Any, example: Optional[Dict[str, Any]] = None,
                is_target: bool = False) -> str:
    """Prediction text cut at the next `Q:` or newline (tasks.icl's rule), stripped."""
    del example
    text = output.decode("utf-8") if isinstance(output, bytes) else str(output)
    if not is_target:
        text = icl.cut_at_prefixes(text, ("Q:",))
    return text.strip()


def exact_match(targets, predictions) -> Dict[str, float]:
    return promot_metrics.exact_match(list(targets), list(predictions))


def accuracy(targets, predictions) -> Dict[str, float]:
    return promot_metrics.accuracy(list(targets), list(predictions))


def _rows(examples: Iterable[Dict[str, str]], shots: int):
    for i, ex in enumerate(examples):
        yield {"inputs": ex["inputs"], "targets": ex["targets"], "answers": [ex["targets"]],
               "idx": i, "num_shots": shots}


def _source(make, splits):
    def dataset_fn(split: str, shuffle_files: bool = False, seed: Optional[int] = None):
        del shuffle_files, seed
        if split not in splits:
            raise ValueError(f"split {split!r} not registered; available: {list(splits)}")
        return promot_tasks.rows_to_dataset(lambda: make(split))
    return seqio.FunctionDataSource(dataset_fn, splits=list(splits))


def register(seed: int = DATA_SEED) -> None:
    """(Re-)registers every mini task and the held-out mixture for data seed `seed`."""
    promot_tasks.register_task(
        PRETRAIN_TASK,
        _source(lambda split: _rows(itertools.islice(
            synthetic.pretraining_stream(seed), PRETRAIN_EXAMPLES), 0), ("train",)),
        postprocess, exact_match)
    for name, family in ICL_TASKS.items():
        promot_tasks.register_task(
            name,
            _source(lambda split, family=family: _rows(
                (synthetic.episode(family, split, seed, i, EVAL_SHOTS)
                 for i in range(EVAL_EXAMPLES)), EVAL_SHOTS), ("test",)),
            postprocess, exact_match)
    promot_tasks.register_mixture(HELDOUT_MIXTURE, list(ICL_TASKS))
    for name, task in TARGET_TASKS.items():
        sizes = {"train": TARGET_TRAIN_EXAMPLES, "validation": TARGET_EVAL_EXAMPLES}
        promot_tasks.register_task(
            name,
            _source(lambda split, task=task: _rows(
                (synthetic.target_example(task, split, seed, i) for i in range(sizes[split])),
                0), tuple(sizes)),
            postprocess, accuracy if task == "rte" else exact_match)


register()  # importing the module registers the tasks (gin files can `import` it)
