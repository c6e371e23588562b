"""The keep-best metric of a ProMoT stage: which metric a task's own metric functions
produce, the task kind's default (KIND_METRICS) and the start-up check of BEST_METRIC (gin's
`best_metric_for`). Re-exported by prompt_tuning.recipe.
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence

from medmt5.data import pipeline as data_lib

# The keep-best metric of each task kind, in preference order when a task produces several:
# predicted (decoded) accuracy for classification, BLEU for translation, ROUGE-2 for
# summarisation, exact match for QA, span F1 for tagging.
KIND_METRICS = ("accuracy", "bleu", "rouge2", "exact_match", "f1")
# Reported by medmt5.run.evaluation for every task from teacher forcing, not from predictions:
# never a keep-best metric unless the task's own metric functions also produce the name.
TEACHER_FORCED = ("loss", "accuracy")


def task_metric_names(task_name: str) -> list[str]:
    """Names of the metrics a registered task's own metric functions produce (decoded
    predictions or scores; the evaluator's teacher-forced loss/accuracy excluded)."""
    task = data_lib.get_task_or_mixture(task_name)
    names: list[str] = []
    for fn in list(task.predict_metric_fns) + list(task.score_metric_fns):
        for name in _metric_fn_names(fn):
            if name not in names:
                names.append(name)
    return names


def _metric_fn_names(fn) -> list[str]:
    """The keys a metric function returns, found by calling it on a one-example probe."""
    probes = ((["a b"], ["a b"]),              # text (accuracy, BLEU, ROUGE)
              ([["a b"]], ["a b"]),            # lists of references (exact match)
              ([["B-X", "O"]], [["B-X", "O"]]),  # tag sequences (span F1)
              (["a b"], [0.0]))                # scores
    for targets, preds in probes:
        try:
            out = fn(targets, preds)
        except Exception:  # a probe of the wrong shape for this function
            continue
        if isinstance(out, Mapping):
            return [k for k in out if k != "f1_X"]  # per-label F1 of the probe's label X
    name = getattr(fn, "__name__", "")
    return [name] if name in KIND_METRICS else []


def default_best_metric(task_name: str) -> str:
    """The keep-best metric of a task: the first of KIND_METRICS its metric functions
    produce (accuracy of decoded predictions, BLEU, ROUGE-2, exact match, span F1)."""
    produced = task_metric_names(task_name)
    for name in KIND_METRICS:
        if name in produced:
            return name
    raise ValueError(f"task {task_name!r} produces no metric the recipe can keep the best "
                     f"checkpoint on (it produces {produced}; known: {list(KIND_METRICS)}). "
                     "Set --gin.BEST_METRIC=\"'<one of its metrics>'\".")


def best_metric_for(task: str, metric: str | None = None,
                    eval_tasks: Sequence[str] | None = None) -> str:
    """The keep-best metric of a stage, checked at start-up (gin: train.best_metric =
    @best_metric_for()). metric None: the task kind's default; otherwise every eval task
    (default: `task`) must produce it, else ValueError naming the task and its metrics."""
    tasks = list(eval_tasks or eval_task_names(task))
    if metric is None:
        defaults = {default_best_metric(t) for t in tasks}
        if len(defaults) != 1:
            raise ValueError(f"the eval tasks {tasks} have different default metrics "
                             f"{sorted(defaults)}; set --gin.BEST_METRIC to one they all produce.")
        return defaults.pop()
    for t in tasks:
        produced = task_metric_names(t)
        if metric not in produced:
            hint = (" ('accuracy' here would be the teacher-forced token accuracy, which the "
                    "recipe never keeps the best checkpoint on)" if metric in TEACHER_FORCED
                    else "")
            raise ValueError(f"BEST_METRIC={metric!r} is not produced by task {t!r}, whose "
                             f"metrics are {produced}{hint}. Set --gin.BEST_METRIC="
                             f"\"'{default_best_metric(t)}'\" or leave BEST_METRIC = None for "
                             "the task's default.")
    return metric


def eval_task_names(task: str) -> list[str]:
    provider = data_lib.get_task_or_mixture(task)
    return [t.name for t in (getattr(provider, "tasks", None) or [provider])]
