"""The ProMoT miniature, one command: pretrain, tune, measure, write JSON + PNG + README table.

    python -m experiments.promot_mini.run                 # core comparison, seeds 0-4
    python -m experiments.promot_mini.run --full          # + 1-shot, multi-task, sequential
    python -m experiments.promot_mini.run --seeds 5 6 7   # your own seeds

1. pretrain  a small mT5 on in-context episodes (episodes.FAMILIES, markers varied), in
             chunks until the held-out Norm. Avg. (prompt-free, beam 4) reaches the gate
             (60) or the cap; the vocabulary hash is stored with the checkpoint and checked
             whenever it is reused (words.check_vocab).
2. per seed and per stage-2 / fine-tuning LR (1e-3, 1e-2), on the target task `verify`
             (true / false): fine-tuning; prompt tuning (stage 1); ProMoT (stage 1 prompt,
             then stage 2 with it attached and frozen); with --full also ProMoT + 1-shot,
             multi-task ProMoT vs multi-task fine-tuning (verify + isfood) and sequential
             ProMoT vs sequential fine-tuning (verify, then isfood).
3. measure   target accuracy (own prompt attached), and with every prompt removed the held-out
             families' exact match, Norm. Avg. and format rate (share of outputs that are a
             target format word); format rate and Norm. Avg. against the tuning step.
4. report    OUT/results.json, OUT/curves.png, and (with --write_readme) the README table,
             all from report.py.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import time

import numpy as np

from experiments.promot_mini import core, episodes, report
from experiments.promot_mini import words as W

HERE = os.path.dirname(os.path.abspath(__file__))
TARGET = "verify"


def settings(args) -> dict:
    if args.smoke:
        return dict(pretrain_chunk=30, pretrain_cap=30, pretrain_batch=16, batch=16,
                    prompt_steps=8, model_steps=8, check_every=4, prompt_length=4,
                    n_eval=16, n_curve=8, n_target=32)
    return dict(pretrain_chunk=args.pretrain_chunk, pretrain_cap=args.pretrain_cap,
                pretrain_batch=32, batch=32, prompt_steps=args.prompt_steps,
                model_steps=args.model_steps, check_every=args.check_every,
                prompt_length=args.prompt_length, n_eval=128, n_curve=48, n_target=256)


def log(msg: str) -> None:
    print(msg, flush=True)


# ---- 1. pretraining ---------------------------------------------------------------------


def pretrain(out: str, cfg: dict, fresh: bool) -> dict:
    """Pretrains in chunks until the gate or the cap; saves after every chunk (a rerun
    continues) and reuses OUT/pretrain after checking its vocabulary hash."""
    import jax

    from medmt5.checkpointing.checkpoint_io import load_checkpoint, save_params_checkpoint
    from medmt5.training import partitioning
    from medmt5.training.train_state import init_boxed_params

    model_dir = os.path.join(out, "pretrain")
    info_path = os.path.join(model_dir, "pretrain.json")
    if fresh and os.path.isdir(model_dir):
        shutil.rmtree(model_dir)
    info = {"steps": 0, "chunks": [], "seconds": 0.0, "vocab_hash": W.vocab_hash()}
    if os.path.exists(info_path):
        W.check_vocab(model_dir)
        with open(info_path) as f:
            info = json.load(f)
        _, params = load_checkpoint(model_dir)
        log(f"pretraining: found {model_dir} ({info['steps']} steps, held-out Norm. Avg. "
            f"{info['norm_avg']:.1f}; vocabulary {W.vocab_hash()[:12]} checked)")
    else:
        model = core.build_model("none", 0.0, 0)
        example = core.to_batch(episodes.batch(episodes.FAMILIES, np.random.default_rng(0), 2))
        params = partitioning.unbox(init_boxed_params(model, example, jax.random.PRNGKey(0)))
    sets = {f: episodes.fixed_set(f, 10_000, cfg["n_eval"]) for f in episodes.FAMILIES}
    while not info.get("done"):
        if info["steps"] >= cfg["pretrain_cap"]:
            break
        n = min(cfg["pretrain_chunk"], cfg["pretrain_cap"] - info["steps"])
        if info["steps"]:
            log(f"pretraining: below the gate ({report.PRETRAIN_GATE}), pretraining {n} more "
                f"steps (cap {cfg['pretrain_cap']})")
        params, _, _, sec, _ = core.train(
            params, core.pretrain_settings(n), "none", episodes.FAMILIES,
            seed=1000 + len(info["chunks"]), batch_size=cfg["pretrain_batch"])
        info["steps"] += n
        info["seconds"] = round(info["seconds"] + sec, 1)
        scores = core.heldout_scores(params, sets, W.TARGET_FORMATS[TARGET], beam=True)
        info["chunks"].append({"steps": info["steps"], "norm_avg": scores["norm_avg"],
                               "exact_match": scores["exact_match"],
                               "seconds": info["seconds"]})
        info.update(norm_avg=scores["norm_avg"], exact_match=scores["exact_match"],
                    gate_passed=scores["norm_avg"] >= report.PRETRAIN_GATE)
        info["done"] = info["gate_passed"] or info["steps"] >= cfg["pretrain_cap"]
        log(f"pretraining: {info['steps']} steps ({info['seconds']:.0f} s), held-out Norm. "
            f"Avg. {scores['norm_avg']:.1f} ({fmt(scores['exact_match'])})")
        save_params_checkpoint(core.model_config(), params, model_dir, step=info["steps"],
                               overwrite=True)
        W.write_vocab(model_dir)
        with open(info_path, "w") as f:
            json.dump(info, f, indent=1)
    if not info["gate_passed"]:
        log(f"pretraining: GATE FAILED at the cap ({info['steps']} steps): held-out Norm. Avg. "
            f"{info['norm_avg']:.1f} < {report.PRETRAIN_GATE}")
    W.check_vocab(model_dir)
    return dict(info, params=params)


def fmt(d: dict) -> str:
    return " ".join(f"{k} {v:.0f}" for k, v in d.items())


# ---- 2./3. methods ----------------------------------------------------------------------


class Evaluator:
    """The fixed evaluation sets of one seed and the measurements on them."""

    def __init__(self, seed: int, cfg: dict, targets, format_words):
        self.targets = list(targets)
        self.format_words = tuple(format_words)
        self.heldout = {f: episodes.fixed_set(f, seed, cfg["n_eval"]) for f in episodes.FAMILIES}
        self.curve_sets = {f: {k: v[:cfg["n_curve"]] for k, v in d.items()}
                           for f, d in self.heldout.items()}
        self.val = {t: episodes.fixed_set(t, seed + 500, cfg["n_target"])
                    for t in self.targets}
        self.test = {t: episodes.fixed_set(t, seed + 900, cfg["n_target"]) for t in self.targets}

    def target(self, backbone, prompt, task: str, split: str = "test", beam: bool = True,
               beam_size: int = 4):
        data = (self.test if split == "test" else self.val)[task]
        return core.exact_match(core.predict(backbone, data, prompt, beam,
                                             beam_size=beam_size), data)

    def check(self, task: str, curve: bool):
        """check(backbone, prompt, step, beam_size) for core.train: keep-best on the target's
        validation accuracy (beam search of the recipe's eval_beam_size); with curve, also the
        prompt-free held-out format rate and Norm. Avg. (greedy, n_curve per family)."""
        def fn(backbone, prompt, step, beam_size):
            extra = {}
            if curve:
                h = core.heldout_scores(backbone, self.curve_sets, self.format_words, beam=False)
                extra = {"format_rate": h["format_rate"], "norm_avg": h["norm_avg"]}
            return self.target(backbone, prompt, task, "val", beam=True,
                               beam_size=beam_size), extra
        return fn

    def measure(self, backbone, prompts: dict, attach_heldout=None) -> dict:
        """Final scores (beam 4): each target with its own prompt (or none), held-out
        families with the prompt removed (and, if given, with `attach_heldout` attached)."""
        row = {"target": {t: self.target(backbone, prompts.get(t), t) for t in self.targets
                          if t in prompts or None in prompts}}
        row["heldout"] = core.heldout_scores(backbone, self.heldout, self.format_words, True)
        if attach_heldout is not None:
            preds = {f: core.predict(backbone, d, attach_heldout, True)
                     for f, d in self.heldout.items()}
            em = {f: core.exact_match(p, self.heldout[f]) for f, p in preds.items()}
            row["heldout_prompt_attached"] = {
                "exact_match": em, "norm_avg": core.normalized_average(em),
                "format_rate": core.format_rate(np.concatenate(list(preds.values())),
                                                self.format_words)}
        return row


def _uniform_prompt(seed: int, length: int, rows: int = 0):
    """prompt-tuning's default initialiser, uniform(-0.5, 0.5) [P, H] (or [N, P, H])."""
    rng = np.random.default_rng([seed, 77])
    shape = ((rows,) if rows else ()) + (length, core.MODEL["d_model"])
    return rng.uniform(-0.5, 0.5, shape).astype(np.float32)


def stages(cfg: dict):
    """(stage-1 settings, LR -> stage-2 / fine-tuning settings): the recipe's, run size
    scaled down."""
    s1 = core.stage_settings(core.PROMPT_STAGE, cfg["prompt_steps"], cfg["check_every"])
    return s1, lambda lr: core.stage_settings(core.MODEL_STAGE, cfg["model_steps"],
                                              cfg["check_every"], lr)


def run_core(pre, seed: int, lrs, cfg: dict) -> list:
    """pretrained / fine-tuning / prompt tuning / ProMoT rows for one seed."""
    ev = Evaluator(seed, cfg, [TARGET], W.TARGET_FORMATS[TARGET])
    base = pre["params"]
    rows = [dict(method="pretrained", seed=seed, lr=None, **ev.measure(base, {None: None}))]
    log(f"seed {seed}: pretrained {summary(rows[-1])}")
    kw = dict(batch_size=cfg["batch"], log=log)
    s1, s2 = stages(cfg)
    _, prompt, hist, sec, best = core.train(
        base, s1, "train", [TARGET], seed,
        prompt_length=cfg["prompt_length"], prompt=_uniform_prompt(seed, cfg["prompt_length"]),
        check=ev.check(TARGET, curve=False), **kw)
    rows.append(dict(method="prompt_tuning", seed=seed, lr=s1.learning_rate,
                     best_step=best, seconds=round(sec, 1), curve=hist,
                     **ev.measure(base, {TARGET: prompt}, attach_heldout=prompt)))
    log(f"seed {seed}: prompt tuning {summary(rows[-1])}")
    for lr in lrs:
        bb, _, hist, sec, best = core.train(
            base, s2(lr), "none", [TARGET], seed,
            check=ev.check(TARGET, curve=True), **kw)
        rows.append(dict(method="finetune", seed=seed, lr=lr, best_step=best,
                         seconds=round(sec, 1), curve=hist, **ev.measure(bb, {None: None})))
        log(f"seed {seed} lr {lr}: fine-tuning {summary(rows[-1])}")
        bb, _, hist, sec, best = core.train(
            base, s2(lr), "frozen", [TARGET], seed,
            prompt_length=cfg["prompt_length"], prompt=prompt,
            check=ev.check(TARGET, curve=True), **kw)
        rows.append(dict(method="promot", seed=seed, lr=lr, best_step=best,
                         seconds=round(sec, 1), curve=hist, **ev.measure(bb, {TARGET: prompt})))
        log(f"seed {seed} lr {lr}: ProMoT {summary(rows[-1])}")
    return rows


def run_full(pre, seed: int, lr: float, cfg: dict) -> list:
    """ProMoT + 1-shot; multi-task and sequential ProMoT vs fine-tuning (two targets)."""
    rows = []
    base = pre["params"]
    kw = dict(batch_size=cfg["batch"], log=log)
    s1, s2 = stages(cfg)
    p = cfg["prompt_length"]
    # ProMoT + 1-shot: both stages on verify_1shot; scored on verify_1shot.
    ev1 = Evaluator(seed, cfg, ["verify_1shot"], W.TARGET_FORMATS[TARGET])
    _, pr, _, _, _ = core.train(base, s1, "train", ["verify_1shot"], seed, prompt_length=p,
                                prompt=_uniform_prompt(seed, p),
                                check=ev1.check("verify_1shot", False), **kw)
    bb, _, hist, sec, best = core.train(base, s2(lr), "frozen", ["verify_1shot"], seed,
                                        prompt_length=p, prompt=pr,
                                        check=ev1.check("verify_1shot", True), **kw)
    rows.append(dict(method="promot_1shot", seed=seed, lr=lr, best_step=best, curve=hist,
                     seconds=round(sec, 1), **ev1.measure(bb, {"verify_1shot": pr})))
    log(f"seed {seed}: ProMoT + 1-shot {summary(rows[-1])}")
    both = list(W.TARGET_FORMATS)
    fwords = tuple(w for t in both for w in W.TARGET_FORMATS[t])
    ev2 = Evaluator(seed, cfg, both, fwords)
    mean_check = _mean_check(ev2, both)
    # Multi-task: one prompt per task (a [2, P, H] table, task_ids), mixed batches.
    _, table, _, _, _ = core.train(base, s1, "train", both, seed,
                                   prompt_length=p, prompt=_uniform_prompt(seed, p, 2),
                                   check=mean_check(True), multitask=True, **kw)
    bb, _, _, sec, best = core.train(base, s2(lr), "frozen", both, seed, prompt_length=p,
                                     prompt=table, check=mean_check(True), multitask=True, **kw)
    rows.append(dict(method="multitask_promot", seed=seed, lr=lr, best_step=best,
                     seconds=round(sec, 1),
                     **ev2.measure(bb, {t: table[i] for i, t in enumerate(both)})))
    bb, _, _, sec, best = core.train(base, s2(lr), "none", both, seed,
                                     check=mean_check(False), **kw)
    rows.append(dict(method="multitask_finetune", seed=seed, lr=lr, best_step=best,
                     seconds=round(sec, 1), **ev2.measure(bb, {None: None})))
    log(f"seed {seed}: multi-task ProMoT {summary(rows[-2])}; fine-tuning {summary(rows[-1])}")
    # Sequential: verify, then isfood; ProMoT keeps one prompt per task.
    bb, prompts = base, {}
    for t in both:
        _, prompts[t], _, _, _ = core.train(bb, s1, "train", [t], seed, prompt_length=p,
                                            prompt=_uniform_prompt(seed, p),
                                            check=ev2.check(t, False), **kw)
        bb, _, _, _, _ = core.train(bb, s2(lr), "frozen", [t], seed, prompt_length=p,
                                    prompt=prompts[t], check=ev2.check(t, False), **kw)
    rows.append(dict(method="sequential_promot", seed=seed, lr=lr, **ev2.measure(bb, prompts)))
    bb = base
    for t in both:
        bb, _, _, _, _ = core.train(bb, s2(lr), "none", [t], seed, check=ev2.check(t, False), **kw)
    rows.append(dict(method="sequential_finetune", seed=seed, lr=lr,
                     **ev2.measure(bb, {None: None})))
    log(f"seed {seed}: sequential ProMoT {summary(rows[-2])}; fine-tuning {summary(rows[-1])}")
    return rows


def _mean_check(ev: Evaluator, tasks):
    """Keep-best on the mean validation accuracy over tasks (row i of a prompt table)."""
    def make(with_prompt: bool):
        def fn(backbone, prompt, step, beam_size):
            accs = [ev.target(backbone, None if prompt is None else
                              (prompt[i] if with_prompt else None), t, "val", beam=True,
                              beam_size=beam_size)
                    for i, t in enumerate(tasks)]
            return float(np.mean(accs)), {}
        return fn
    return make


def summary(row: dict) -> str:
    t = " ".join(f"{k} {v:.1f}" for k, v in row["target"].items())
    h = row["heldout"]
    return (f"target [{t}] held-out Norm. Avg. {h['norm_avg']:.1f} format rate "
            f"{h['format_rate']:.1f} ({fmt(h['exact_match'])})")


# ---- main -------------------------------------------------------------------------------


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default="/tmp/promot_mini", help="working folder")
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4],
                    help="five by default: the issue asks for 5 where the time budget allows "
                    "(core <= 30 min, --full <= 60 min on 2 cores)")
    ap.add_argument("--lrs", type=float, nargs="+", default=[1e-3, 1e-2],
                    help="stage-2 / fine-tuning learning rates")
    ap.add_argument("--full", action="store_true", help="also the 1-shot, multi-task and "
                    "sequential variants (at --full_lr)")
    ap.add_argument("--full_lr", type=float, default=1e-3)
    ap.add_argument("--smoke", action="store_true", help="tiny settings (tests)")
    ap.add_argument("--fresh_pretrain", action="store_true")
    ap.add_argument("--pretrain_chunk", type=int, default=1000)
    ap.add_argument("--pretrain_cap", type=int, default=6000)
    ap.add_argument("--prompt_steps", type=int, default=200)
    ap.add_argument("--model_steps", type=int, default=400)
    ap.add_argument("--check_every", type=int, default=50)
    ap.add_argument("--prompt_length", type=int, default=20)
    ap.add_argument("--write_readme", action="store_true",
                    help="also put the table into experiments/promot_mini/README.md and copy "
                    "results.json / curves.png to experiments/promot_mini/results/")
    args = ap.parse_args(argv)
    if any(lr <= 0 for lr in args.lrs):
        ap.error(f"--lrs must be positive, got {args.lrs}")
    cfg = settings(args)
    os.makedirs(args.out, exist_ok=True)
    load_before, start = os.getloadavg(), time.time()
    pre = pretrain(args.out, cfg, args.fresh_pretrain)
    rows = []
    path = os.path.join(args.out, "results.json")

    def results_now(complete: bool) -> dict:
        results = {
            "command": "python -m experiments.promot_mini.run " + " ".join(
                sys.argv[1:] if argv is None else argv),
            "complete": complete,
            "settings": dict(cfg, seeds=args.seeds, lrs=args.lrs, full=args.full,
                             full_lr=args.full_lr, model=core.MODEL, target=TARGET,
                             families=list(episodes.FAMILIES), stage1=vars_of(stages(cfg)[0]),
                             stage2_and_finetune=[vars_of(stages(cfg)[1](lr))
                                                  for lr in args.lrs]),
            "vocab": {"hash": W.vocab_hash(), "size": len(W.WORDS)},
            "pretrain": {k: v for k, v in pre.items() if k != "params"},
            "rows": rows,
            "wall_time_s": round(time.time() - start, 1),
            "loadavg_before": list(load_before), "loadavg_after": list(os.getloadavg()),
            "cpu_count": os.cpu_count(),
        }
        results["gates"] = report.gates(results)
        with open(path, "w") as f:    # after every seed: an interrupted run leaves its rows
            json.dump(results, f, indent=1)
        return results

    for seed in args.seeds:
        rows += run_core(pre, seed, args.lrs, cfg)
        if args.full:
            rows += run_full(pre, seed, args.full_lr, cfg)
        results_now(complete=False)
    results = results_now(complete=True)
    report.plot_curves(results, os.path.join(args.out, "curves.png"))
    log(report.markdown(results))
    if args.write_readme:
        dst = os.path.join(HERE, "results")
        os.makedirs(dst, exist_ok=True)
        shutil.copy(path, os.path.join(dst, "results.json"))
        shutil.copy(os.path.join(args.out, "curves.png"), os.path.join(dst, "curves.png"))
        report.update_readme(os.path.join(HERE, "README.md"), results)
    return 0 if all(g["passed"] for g in results["gates"].values()) else 1


def vars_of(stage) -> dict:
    import dataclasses
    return dataclasses.asdict(stage)


if __name__ == "__main__":
    sys.exit(main())
