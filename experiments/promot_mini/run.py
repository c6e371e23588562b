"""The ProMoT miniature: in-context pretraining, then fine-tuning vs ProMoT, single and sequential.

    .venv/bin/python -m experiments.promot_mini.run --out /tmp/promot_mini

1. pretrain   a small mT5 (CONFIG) on mini_icl_pretrain (k-shot episodes of 7 synthetic
              families) so it reads demonstrations (OUT/pretrain; reused on rerun).
2. sequential prompt_tuning.sequential.run_sequential from the pretrained model over TASKS
              with each method (OUT/<method>): ProMoT, plain fine-tuning, prompt tuning.
              The rows after the first task are the paper's Table 3 in miniature; the later
              rows show what sequential learning does (forgetting, held-out ICL).
3. report     prints the tables and writes OUT/results.json.
Every stage resumes: rerunning the command continues where it stopped; --fresh deletes the
fine-tuning runs (the pretrained model is kept unless --fresh_pretrain).
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import shutil
import sys
import time

from experiments.promot_mini import mini_tasks, report

# Sized for a shared 2-core CPU (see README.md for the measured times).
CONFIG = dict(vocab_size=2176, d_model=64, d_kv=16, d_ff=256, num_heads=4,
              num_encoder_layers=2, num_decoder_layers=2, relative_attention_num_buckets=16,
              relative_attention_max_distance=64)
BATCH_SIZE = 32
PRETRAIN_STEPS = 1200
PRETRAIN_LR = 0.01
TASKS = ("mini_rte", "mini_translate")
METHODS = ("promot", "finetune", "prompt_tuning")
PROMPT_LENGTH = 16
PROMPT_STEPS = 100
PROMPT_LR = 0.3
MODEL_STEPS = 100
MODEL_LR = 1e-3


def pretrain(out: str, steps: int) -> str:
    from medmt5 import optimizers
    from medmt5.config import T5Config
    from medmt5.train import train

    model_dir = os.path.join(out, "pretrain")
    if os.path.isdir(os.path.join(model_dir, "checkpoints", str(steps))):
        print(f"pretraining: reusing {model_dir} (step {steps})", flush=True)
        return model_dir
    start = time.time()
    train(model_dir=model_dir, model_config=T5Config(**CONFIG),
          mixture_or_task_name=mini_tasks.PRETRAIN_TASK,
          task_feature_lengths=mini_tasks.FEATURE_LENGTHS, train_steps=steps,
          batch_size=BATCH_SIZE, pack=False, seed=0, save_period=max(steps // 3, 1),
          keep_checkpoints=1, log_period=50,
          schedule=optimizers.make_schedule("rsqrt", PRETRAIN_LR,
                                            warmup_steps=max(steps // 5, 1)))
    print(f"pretraining: {steps} steps, {time.time() - start:.0f} s", flush=True)
    return model_dir


def sequential(out: str, pretrained: str, method: str, tasks, args) -> list:
    from medmt5.config import T5Config
    from prompt_tuning.sequential import StageSettings, run_sequential

    start = time.time()
    rows = run_sequential(
        model_dir=os.path.join(out, method), model_config=T5Config(**CONFIG),
        tasks=list(tasks), method=method, initial_checkpoint_path=pretrained,
        task_feature_lengths=mini_tasks.FEATURE_LENGTHS, batch_size=BATCH_SIZE,
        prompt_stage=StageSettings(args.prompt_steps, args.prompt_lr),
        model_stage=StageSettings(args.model_steps, args.model_lr, dropout_rate=0.1,
                                  label_smoothing=0.1),
        prompt_length=args.prompt_length, prompt_init=args.prompt_init,
        heldout_tasks=list(mini_tasks.ICL_TASKS), eval_split="validation",
        heldout_split="test", eval_batch_size=64, seed=0)
    print(f"{method}: {time.time() - start:.0f} s", flush=True)
    return rows


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default="/tmp/promot_mini", help="output folder")
    parser.add_argument("--fresh", action="store_true",
                        help="delete the fine-tuning runs first (keep the pretrained model)")
    parser.add_argument("--fresh_pretrain", action="store_true",
                        help="also delete and redo the pretraining")
    parser.add_argument("--pretrain_steps", type=int, default=PRETRAIN_STEPS)
    parser.add_argument("--tasks", default=",".join(TASKS),
                        help="comma-separated target tasks, learnt in this order")
    parser.add_argument("--methods", default=",".join(METHODS))
    parser.add_argument("--prompt_length", type=int, default=PROMPT_LENGTH)
    parser.add_argument("--prompt_steps", type=int, default=PROMPT_STEPS)
    parser.add_argument("--prompt_lr", type=float, default=PROMPT_LR)
    parser.add_argument("--prompt_init", default="vocab", choices=("vocab", "uniform"))
    parser.add_argument("--model_steps", type=int, default=MODEL_STEPS)
    parser.add_argument("--model_lr", type=float, default=MODEL_LR)
    args = parser.parse_args(argv)

    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(message)s")
    logging.getLogger("medmt5").setLevel(logging.INFO)
    tasks = [t for t in args.tasks.split(",") if t]
    unknown = [t for t in tasks if t not in mini_tasks.TARGET_TASKS]
    if unknown:
        parser.error(f"--tasks: {unknown} unknown; choose from {list(mini_tasks.TARGET_TASKS)}")
    methods = [m for m in args.methods.split(",") if m]
    if args.fresh_pretrain:
        shutil.rmtree(os.path.join(args.out, "pretrain"), ignore_errors=True)
    if args.fresh or args.fresh_pretrain:
        for m in methods:
            shutil.rmtree(os.path.join(args.out, m), ignore_errors=True)
    start = time.time()
    mini_tasks.register()
    pretrained = pretrain(args.out, args.pretrain_steps)
    results = {"settings": dict(vars(args), config=CONFIG, batch_size=BATCH_SIZE,
                                pretrain_lr=PRETRAIN_LR), "runs": {}}
    for method in methods:
        sequential(args.out, pretrained, method, tasks, args)
    results["seconds_this_invocation"] = round(time.time() - start)
    for method in METHODS:  # every finished or partial run in OUT (parallel invocations)
        path = os.path.join(args.out, method, "state.json")
        if os.path.exists(path):
            with open(path) as f:
                results["runs"][method] = json.load(f)["measurements"]
    tmp = os.path.join(args.out, f"results.json.tmp{os.getpid()}")
    with open(tmp, "w") as f:
        json.dump(results, f, indent=1, sort_keys=True)
    os.replace(tmp, os.path.join(args.out, "results.json"))
    print(report.render(results))
    print(f"{results['seconds_this_invocation']} s; results in {args.out}/results.json")
    return 0


if __name__ == "__main__":
    sys.exit(main())
