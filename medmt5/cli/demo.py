"""`python -m medmt5.demo --out_dir=demo_out` (what `make demo` runs): the whole pipeline on CPU.

1. pretrain the tiny mT5 on the shipped multilingual medical corpus sample (span corruption):
   `medmt5.train --gin_file=medmt5_tiny.gin`;
2. fine-tune it on the multilingual AbstRCT sample: `medmt5.train
   --gin_file=finetune/abstrct_tiny.gin` (validation F1 keeps OUT/finetune/best);
3. evaluate span F1 of the best checkpoint on each language's test set with constrained
   decoding: `medmt5.eval`;
4. tag held-out test sentences, one per language: `medmt5.infer` (OUT/predictions.jsonl);
5. print a results table (pretraining and fine-tuning train and validation loss, test F1
   per language, the tagged sentences next to their gold tags) and plot the curves
   (OUT/loss_curves.png); TensorBoard logs are in OUT/*/train and OUT/*/eval
   (`tensorboard --logdir OUT`). The pretraining validation loss is EVAL_PERIOD's score on
   the corpus documents held out from training (tasks.pretraining).
Every step is the CLI itself, called in-process with the flags printed before it.
"""
from __future__ import annotations

import importlib
import json
import os
import shlex
import sys
import time
from collections.abc import Sequence

from absl import flags

from medmt5.cli import cli_flags
from medmt5.run import plotting, progress

LANGUAGES = ("en", "es", "fr", "it")
SHOW_PER_LANGUAGE = 1  # held-out test sentences per language shown next to their gold tags
PRETRAIN_TASKS = tuple(f"medmt5_pretrain_{lang}" for lang in LANGUAGES)
ABSTRCT_TASKS = tuple(f"abstrct_neoplasm_{lang}" for lang in LANGUAGES)
MEAN_DIR = "mean_over_languages"  # eval/<this>: the per-language eval scalars averaged


def _q(value: str) -> str:
    """A gin string literal for a flag value."""
    return repr(str(value))


def _run(program: str, argv: list[str]) -> None:
    """Runs `python -m medmt5.<program> argv` in this process; raises on a non-zero exit."""
    print(f"\n$ python -m medmt5.{program} " + " ".join(shlex.quote(a) for a in argv),
          flush=True)
    t0 = time.time()
    rc = importlib.import_module(f"medmt5.{program}").main(argv)
    if rc:
        raise SystemExit(f"medmt5.demo: step medmt5.{program} failed (exit {rc})")
    print(f"[demo] medmt5.{program} done in {time.time() - t0:.0f}s", flush=True)


def _first_last(logdir: str, tag: str = "loss"):
    """Mean of the first and of the last few logged values of `tag` (None if none logged)."""
    values = [v for _, v in plotting.read_scalars(logdir).get(tag, [])]
    if not values:
        return None
    k = max(1, min(3, len(values) // 3))
    return sum(values[:k]) / k, sum(values[-k:]) / k


def write_mean_curves(eval_dir: str, tasks: Sequence[str], tags: Sequence[str]) -> dict:
    """Averages each tag over the tasks' eval summaries (eval_dir/<task>) at the steps all of
    them logged, writes the means to eval_dir/MEAN_DIR (TensorBoard) and returns
    {tag: [(step, mean), ...]}."""
    per_task = [plotting.read_scalars(os.path.join(eval_dir, t)) for t in tasks]
    out: dict = {}
    for tag in tags:
        series = [dict(s.get(tag, [])) for s in per_task]
        steps = sorted(set.intersection(*(set(x) for x in series))) if series else []
        out[tag] = [(step, sum(x[step] for x in series) / len(series)) for step in steps]
    points = {step for curve in out.values() for step, _ in curve}
    if points:
        writer = progress.SummaryLogger(os.path.join(eval_dir, MEAN_DIR))
        for step in sorted(points):
            writer.scalars(step, {tag: v for tag, curve in out.items()
                                  for s, v in curve if s == step})
        writer.close()
    return out


def _pick_examples(eval_dir: str, per_language: int) -> list[dict]:
    """The first `per_language` test records of each language: {lang, inputs, target}."""
    picked = []
    for lang, task in zip(LANGUAGES, ABSTRCT_TASKS):
        with open(os.path.join(eval_dir, f"{task}-predictions.jsonl"), encoding="utf-8") as f:
            records = [json.loads(line) for line in f][:per_language]
        picked += [{"lang": lang, "inputs": r["inputs"], "target": r["target"]}
                   for r in records]
    return picked


def run(out_dir: str, pretrain_steps: int = 150, finetune_steps: int = 800,
        eval_period: int = 200, eval_examples: int = 22, pretrain_eval_period: int = 50,
        task_feature_lengths: str = "{'inputs': 80, 'targets': 112}",
        extra_pretrain: Sequence[str] = (),
        extra_finetune: Sequence[str] = (), extra_eval: Sequence[str] = ()) -> dict:
    """Runs the five steps; returns {"pretrain_loss": (first, last), "finetune_loss": ...,
    "pretrain_validation": [(step, loss)], "finetune_validation": {"loss": [...], "f1": ...},
    "f1": {lang: f1}, "predictions": [...], "plot": path}."""
    out_dir = os.path.abspath(out_dir)
    pre, ft = os.path.join(out_dir, "pretrain"), os.path.join(out_dir, "finetune")
    lengths = task_feature_lengths  # AbstRCT: a gin dict literal
    t0 = time.time()
    # EVAL_PERIOD: validation loss on the held-out documents of the corpus (5% of the sample)
    _run("train", ["--gin_file=medmt5_tiny.gin", f"--gin.MODEL_DIR={_q(pre)}",
                   f"--gin.TRAIN_STEPS={pretrain_steps}",
                   f"--gin.EVAL_PERIOD={max(1, min(pretrain_eval_period, pretrain_steps))}",
                   *extra_pretrain])
    _run("train", ["--gin_file=finetune/abstrct_tiny.gin", f"--gin.MODEL_DIR={_q(ft)}",
                   f"--gin.INITIAL_CHECKPOINT_PATH={_q(pre)}",
                   f"--gin.TRAIN_STEPS={finetune_steps}", f"--gin.EVAL_PERIOD={eval_period}",
                   f"--gin.WARMUP_STEPS={max(1, finetune_steps // 10)}",
                   f"--gin.TASK_FEATURE_LENGTHS={lengths}", *extra_finetune])
    best = os.path.join(ft, "best")
    eval_dir = os.path.join(out_dir, "eval_test")
    _run("eval", ["--gin_file=runs/eval.gin", f"--gin.CHECKPOINT_PATH={_q(best)}",
                  "--gin.MIXTURE_OR_TASK_NAME='abstrct_neoplasm_multilingual'",
                  f"--gin.TASK_FEATURE_LENGTHS={lengths}", "--gin.BEAM_SIZE=1",
                  f"--gin.EVAL_OUTPUT_DIR={_q(eval_dir)}",
                  f"--gin.evaluate.max_examples={eval_examples}", *extra_eval])
    # Tag held-out test sentences with the CLI a user would run on their own text.
    shown = _pick_examples(eval_dir, SHOW_PER_LANGUAGE)
    inputs = os.path.join(out_dir, "demo_sentences.txt")
    with open(inputs, "w", encoding="utf-8") as f:
        f.write("\n".join(r["inputs"] for r in shown) + "\n")
    preds_path = os.path.join(out_dir, "predictions.jsonl")
    _run("infer", ["--gin_file=runs/infer.gin", f"--gin.CHECKPOINT_PATH={_q(best)}",
                   "--gin.MIXTURE_OR_TASK_NAME='abstrct_neoplasm_en'",
                   f"--gin.TASK_FEATURE_LENGTHS={lengths}", "--gin.BEAM_SIZE=1",
                   f"--gin.INPUT_FILE={_q(inputs)}", f"--gin.OUTPUT_FILE={_q(preds_path)}"])

    pre_val = write_mean_curves(os.path.join(pre, "eval"), PRETRAIN_TASKS, ["loss"])
    ft_val = write_mean_curves(os.path.join(ft, "eval"), ABSTRCT_TASKS, ["loss", "f1"])
    runs = {"pretrain: train": os.path.join(pre, "train"),
            "pretrain: validation (held-out corpus)": os.path.join(pre, "eval", MEAN_DIR),
            "fine-tune: train": os.path.join(ft, "train"),
            "fine-tune: validation (dev)": os.path.join(ft, "eval", MEAN_DIR)}
    plot = plotting.plot_curves(runs, ["loss", "f1"], os.path.join(out_dir, "loss_curves.png"),
                                title="medmt5 tiny demo (validation: mean over en/es/fr/it)")
    with open(os.path.join(eval_dir, "metrics.json")) as f:
        metrics = json.load(f)["metrics"]
    with open(preds_path, encoding="utf-8") as f:
        predictions = [json.loads(line) for line in f]
    for record, gold in zip(predictions, shown):
        record["target"], record["lang"] = gold["target"], gold["lang"]
    with open(os.path.join(best, "best.json")) as f:
        best_info = json.load(f)
    result = {
        "pretrain_loss": _first_last(os.path.join(pre, "train")),
        "finetune_loss": _first_last(os.path.join(ft, "train")),
        "pretrain_validation": pre_val["loss"], "finetune_validation": ft_val,
        "f1": {lang: metrics.get(f"abstrct_neoplasm_{lang}/f1") for lang in LANGUAGES},
        "metrics": metrics, "best": best_info, "predictions": predictions, "plot": plot,
        "seconds": time.time() - t0,
    }
    print_report(result, out_dir)
    return result


def _curve(points) -> str:
    """"a (step s) -> b (step t)" for a [(step, value)] list; "not evaluated" when empty."""
    if not points:
        return "not evaluated"
    (s0, v0), (s1, v1) = points[0], points[-1]
    return f"{v0:.3f} (step {s0}) -> {v1:.3f} (step {s1})" if s1 != s0 else \
        f"{v1:.3f} (step {s1})"


def print_report(result: dict, out_dir: str) -> None:
    m = result["metrics"]
    print("\n" + "=" * 78)
    print("medmt5 demo results (tiny 1.3M-parameter model, shipped samples; they show the "
          "pipeline\nlearning, not the quality of Medical mT5)")
    print("-" * 78)
    for name, title in (("pretrain", "pretraining (span corruption)"),
                        ("finetune", "fine-tuning (AbstRCT tagging)")):
        print(f"{title}:")
        if result[f"{name}_loss"] is None:
            print("  train loss:      no steps run")
        else:
            first, last = result[f"{name}_loss"]
            print(f"  train loss:      {first:.3f} -> {last:.3f}"
                  f"  ({'falls' if last < first else 'DOES NOT FALL'})")
        if name == "pretrain":
            print(f"  validation loss: {_curve(result['pretrain_validation'])}"
                  "  (held-out corpus documents)")
        else:
            val = result["finetune_validation"]
            print(f"  validation loss: {_curve(val.get('loss'))}  (dev sentences)")
            print(f"  validation F1:   {_curve(val.get('f1'))}")
    b = result["best"]
    print(f"best fine-tuning checkpoint: step {b['step']} (validation {b['metric']}="
          f"{b['value']:.2f})")
    print("\nAbstRCT neoplasm test, held-out sentences (constrained greedy decoding), "
          "span F1 x 100:")
    print(f"  {'lang':<5} {'F1':>7} {'P':>7} {'R':>7} {'Claim':>7} {'Premise':>7}")
    f1s = []
    for lang in LANGUAGES:
        t = f"abstrct_neoplasm_{lang}"
        row = [m.get(f"{t}/{k}", float("nan")) for k in
               ("f1", "precision", "recall", "f1_Claim", "f1_Premise")]
        f1s.append(row[0])
        print(f"  {lang:<5} " + " ".join(f"{v:7.2f}" for v in row))
    print(f"  {'mean':<5} {sum(f1s) / len(f1s):7.2f}")
    print("\nheld-out test sentences tagged by medmt5.infer, next to their gold tags:")
    for r in result["predictions"]:
        lang = r.get("lang", "")
        print(f"  [{lang}] model: {r['prediction']}")
        print(f"  {' ' * len(lang)}   gold:  {r['target']}")
    print(f"\nloss curves: {result['plot']}")
    print(f"TensorBoard:  tensorboard --logdir {out_dir}")
    print(f"total time:   {result['seconds']:.0f}s")
    print("=" * 78, flush=True)


def _define_flags(fv: flags.FlagValues) -> None:
    flags.DEFINE_string("out_dir", "demo_out", "output folder (a rerun resumes from it)",
                        flag_values=fv)
    # Budget: at most 10 minutes on an idle 2-core machine. Measured idle (2026-12-07):
    # 150 + 400 steps took 231 s with test F1 39.6 (mean of 4 languages); 150 + 800 steps
    # 282 s with test F1 64.7. 150 pretraining steps show the validation loss falling; the
    # fine-tuning steps go where the F1 comes from (see README, "What make demo does").
    flags.DEFINE_integer("pretrain_steps", 150, "pretraining steps", lower_bound=0,
                         flag_values=fv)
    flags.DEFINE_integer("pretrain_eval_period", 50, "pretraining validation period",
                         lower_bound=1, flag_values=fv)
    flags.DEFINE_integer("finetune_steps", 800, "fine-tuning steps", lower_bound=0,
                         flag_values=fv)
    flags.DEFINE_integer("eval_period", 200, "fine-tuning validation period", lower_bound=1,
                         flag_values=fv)
    flags.DEFINE_integer("eval_examples", 22,
                         "test sentences per language (the sample has 22)", lower_bound=1,
                         flag_values=fv)


def main(argv: Sequence[str]) -> int:
    try:
        args, rest = cli_flags.parse_tool_flags(_define_flags, argv, __doc__)
        if rest:
            raise cli_flags.UsageError(f"unexpected argument {rest[0]!r}: every argument is a "
                                       "flag, e.g. --out_dir=demo_out")
    except cli_flags.UsageError as e:
        print(f"medmt5.demo: error: {e}", file=sys.stderr)
        return 2
    if os.path.exists(os.path.join(args.out_dir, "pretrain")):
        print(f"medmt5.demo: {args.out_dir} exists; training resumes from its checkpoints "
              "(delete it for a fresh run)", file=sys.stderr)
    run(args.out_dir, args.pretrain_steps, args.finetune_steps, args.eval_period,
        args.eval_examples, args.pretrain_eval_period)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
