"""Training and measurement of the miniature, built from the project's library pieces.

Model: `medmt5.Transformer` / `prompt_tuning.prompts.PromptedTransformer`; steps:
`medmt5.training.trainer.train_step` on a `medmt5.training.train_state` state with the masked
optimizer of `medmt5.training.optimizers` (what trains: `prompt_tuning.recipe.stage_freeze`,
the patterns the gin stages freeze); decoding: `medmt5.decoding.sampling.generate` (beam
search of the recipe's eval_beam_size for keep-best checks and final scores, greedy for the
curves); Norm. Avg. as `tasks.promot_metrics.normalized_average` defines it. The stage
settings (optimizer and its Adafactor options, LR, dropout, label smoothing, keep-best beam)
are the recipe's (`prompt_tuning.recipe.PROMPT_STAGE` / `MODEL_STAGE`, the same objects
gin/promot/*.gin bind); only the step counts, evaluation period and prompt length are scaled
down; the keep-best metric is the recipe's for a classification task (`keep_best_metric`).
The stage loop itself is not `recipe.train_prompt` / `train_model`: those run
`medmt5.run.loop.train` on registered seqio tasks with orbax checkpoints (minutes of start-up
per stage), too slow for a 2-core CPU budget; here the same trainer step runs on in-memory
batches (episodes.py) and keep-best holds the best parameters in memory (README.md, Design).
"""
from __future__ import annotations

import functools
import time
from collections.abc import Callable, Mapping, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from experiments.promot_mini import episodes
from experiments.promot_mini import words as W

MODEL = dict(d_model=64, d_kv=16, d_ff=128, num_heads=4, num_encoder_layers=2,
             num_decoder_layers=2, relative_attention_num_buckets=16,
             relative_attention_max_distance=32)


def model_config(dropout_rate: float = 0.0):
    from medmt5.model.config import T5Config

    return T5Config(vocab_size=W.vocab_size(), dropout_rate=dropout_rate, **MODEL)


# The stage names of prompt_tuning.recipe (stage_train_kwargs, stage_freeze).
PROMPT_STAGE = "prompt"     # stage 1: a new prompt trains, the backbone is frozen
MODEL_STAGE = "model"       # stage 2 (prompt attached and frozen) / fine-tuning (no prompt)


def keep_best_metric() -> str:
    """The keep-best metric of the miniature's targets: the one recipe.default_best_metric
    picks for a classification task (the first of recipe.KIND_METRICS: accuracy of the
    decoded predictions, not the teacher-forced token accuracy)."""
    from prompt_tuning import recipe

    return recipe.KIND_METRICS[0]


def stage_settings(stage: str, steps: int, eval_period: int, learning_rate=None):
    """The recipe's settings (prompt_tuning.recipe.PROMPT_STAGE / MODEL_STAGE: optimizer,
    LR, dropout, label smoothing, keep-best beam) with the miniature's run size."""
    from prompt_tuning import recipe

    make = recipe.prompt_stage if stage == PROMPT_STAGE else recipe.model_stage
    return make(steps=steps, eval_period=eval_period, learning_rate=learning_rate)


def pretrain_settings(steps: int, learning_rate: float = 0.01):
    """Pretraining (not a ProMoT stage): T5X Adafactor, constant LR, no dropout."""
    from prompt_tuning import recipe

    return recipe.StageSettings(steps=steps, learning_rate=learning_rate, dropout_rate=0.0,
                                eval_period=steps)


def to_batch(data: Mapping[str, np.ndarray], task_ids=None) -> dict[str, jnp.ndarray]:
    """episodes.batch output -> the trainer's EncDec features."""
    tgt = data["targets"]
    dec_in = np.concatenate([np.zeros_like(tgt[:, :1]), tgt[:, :-1]], axis=1)
    out = {"encoder_input_tokens": data["inputs"], "decoder_input_tokens": dec_in,
           "decoder_target_tokens": tgt, "decoder_loss_weights": (tgt > 0).astype(np.float32)}
    if task_ids is not None:
        out["task_ids"] = np.asarray(task_ids, np.int32)
    return {k: jnp.asarray(v) for k, v in out.items()}


@functools.cache
def _mesh():
    from medmt5.training import partitioning

    return partitioning.create_mesh(devices=jax.devices()[:1])


@functools.cache
def _step_fn(model, settings, mask_key):
    """(jitted train step, optimizer) for one model / settings (compiled once, reused):
    the optimizer is the recipe's (settings.optimizer_fn, schedule_fn) on the mask."""
    from medmt5.training import trainer

    opt = settings.optimizer_fn()(schedule=settings.schedule_fn(), mask=_MASKS[mask_key])
    config = trainer.StepConfig(model=model, optimizer=opt,
                                label_smoothing=settings.label_smoothing,
                                trainable=_MASKS[mask_key])
    return jax.jit(functools.partial(trainer.train_step, config), donate_argnums=(0,)), opt


_MASKS: dict[tuple, object] = {}


def _mask_for(params, prompt_mode: str):
    """The trainable mask of a stage: recipe.stage_freeze's patterns (what the gin stages
    freeze) through optimizers.trainable_mask, as medmt5.run.loop builds it."""
    from medmt5.training import optimizers
    from prompt_tuning import recipe

    stage = PROMPT_STAGE if prompt_mode == "train" else MODEL_STAGE
    freeze = recipe.stage_freeze(stage, prompt_attached=prompt_mode == "frozen")
    mask = optimizers.trainable_mask(params, freeze.trainable, freeze.frozen)
    key = (prompt_mode, tuple(jax.tree.leaves(mask)))
    _MASKS[key] = mask
    return key


def build_model(stage_prompt: str, dropout: float, prompt_length: int, num_prompts: int = 0):
    from medmt5.model.transformer import Transformer
    from prompt_tuning.prompts import PromptedTransformer

    cfg = model_config(dropout)
    if stage_prompt == "none":
        return Transformer(cfg)
    return PromptedTransformer(cfg, prompt_length=prompt_length, num_prompts=num_prompts)


def train(params, settings, prompt_mode: str, kinds: Sequence[str], seed: int, *,
          batch_size: int, prompt_length: int = 0, prompt=None,
          check: Callable | None = None, log: Callable = print, multitask: bool = False):
    """Runs settings.steps steps from backbone `params` on batches of `kinds`.

    prompt_mode: "train" (stage 1: only the prompt trains), "frozen" (stage 2: the prompt is
    attached and frozen, the backbone trains) or "none" (fine-tuning / pretraining).
    prompt: the initial ([P, H] or [N, P, H]) prompt for stage 1, the frozen one for stage 2.
    check(backbone, prompt, step, beam_size) -> (score, extra) is called every
    settings.eval_period steps and at the end, with the recipe's settings.eval_beam_size; the
    score is keep_best_metric() on the target's validation set and the best step's weights
    are kept (keep-best as medmt5.run.evaluation.BestCheckpointKeeper decides it: higher is
    better, ties keep the earlier step; held in memory, not written to MODEL_DIR/best).
    multitask: kinds are tasks with one prompt row each (task_ids = the kind's index).
    Returns (backbone params, prompt or None, history list, seconds).
    """
    from medmt5.training import train_state
    from prompt_tuning.prompts import PARAM_NAME

    start = time.time()
    if prompt_mode not in ("train", "frozen", "none"):
        raise ValueError(f"prompt_mode={prompt_mode!r}; use 'train', 'frozen' or 'none'")
    steps, check_every = settings.steps, settings.eval_period
    num_prompts = len(kinds) if (multitask and prompt_mode != "none") else 0
    model = build_model(prompt_mode, settings.dropout_rate, prompt_length, num_prompts)
    full = dict(params)
    if prompt_mode != "none":
        full["prompt"] = {PARAM_NAME: jnp.asarray(prompt, jnp.float32)}
    mask_key = _mask_for(full, prompt_mode)
    step_fn, opt = _step_fn(model, settings, mask_key)
    rng = np.random.default_rng([seed, 1234])
    example = to_batch(episodes.batch(kinds, rng, 2), [0, 0] if num_prompts else None)
    state, _ = train_state.create_train_state(model, opt, _mesh(), example,
                                              jax.random.PRNGKey(seed), params=full)
    key = jax.random.PRNGKey(seed + 17)

    def split(p):
        p = dict(p)
        pr = p.pop("prompt", None)
        return p, (None if pr is None else pr[PARAM_NAME])

    history, best = [], None
    for step in range(1, steps + 1):
        data = episodes.batch(kinds, rng, batch_size)
        state, metrics = step_fn(state, to_batch(data, data["kind"] if num_prompts else None),
                                 key)
        due = check is not None and (step % check_every == 0 or step == steps)
        if due:
            backbone, pr = split(state.params)
            score, extra = check(backbone, pr, step, settings.eval_beam_size)
            history.append(dict(step=step, loss=float(metrics["loss"]), score=score,
                                metric=keep_best_metric(), **extra))
            if best is None or score > best[0]:
                best = (score, step, jax.device_get(state.params))
            log(f"    step {step}: loss {float(metrics['loss']):.3f} check {score:.1f}")
    params_out = best[2] if best is not None else jax.device_get(state.params)
    backbone, pr = split(params_out)
    return backbone, pr, history, time.time() - start, (best[1] if best else steps)


# ---- measurement ------------------------------------------------------------------------


@functools.cache
def _plain_model():
    from medmt5.model.transformer import Transformer

    return Transformer(model_config(0.0))


def predict(backbone, data: Mapping[str, np.ndarray], prompt=None, beam: bool = False,
            task_ids=None, beam_size: int = 4) -> np.ndarray:
    """Generated ids [n, DEC_LEN] (greedy, or beam search of beam_size: 4, the recipe's
    eval_beam_size) with `prompt` [P, H] / per-row [n, P, H] attached, or none."""
    from medmt5.decoding import sampling as decoding

    if prompt is not None and np.ndim(prompt) == 3 and task_ids is not None:
        prompt = jnp.asarray(prompt)[jnp.asarray(task_ids)]
    seqs, _ = decoding.generate(_plain_model(), backbone,
                                {"encoder_input_tokens": jnp.asarray(data["inputs"])},
                                method="beam" if beam else "greedy", beam_size=beam_size,
                                max_decode_length=episodes.DEC_LEN,
                                prompt=None if prompt is None else jnp.asarray(prompt))
    seqs = np.asarray(seqs)
    out = np.zeros((seqs.shape[0], episodes.DEC_LEN), np.int32)
    for i, s in enumerate(seqs):
        ids = list(s[:episodes.DEC_LEN])
        if W.EOS in ids:
            ids = ids[:ids.index(W.EOS) + 1]
        out[i, :len(ids)] = ids
    return out


def normalized_average(scores: Mapping[str, float]) -> float:
    """The paper's Norm. Avg., as tasks.promot_metrics.normalized_average defines it: the
    plain mean of the 0-100 scores (not imported: `import tasks` registers every seqio task,
    pulling TensorFlow into a run that needs none)."""
    if not scores:
        raise ValueError("normalized_average needs at least one score")
    return float(np.mean([float(v) for v in scores.values()]))


def exact_match(pred: np.ndarray, data) -> float:
    return 100.0 * float(np.mean(np.all(pred == data["targets"], axis=1)))


def format_rate(pred: np.ndarray, format_words: Sequence[str]) -> float:
    """% of outputs whose first word is one of `format_words` (a target task's format)."""
    ids = np.asarray([W.ID[w] for w in format_words])
    return 100.0 * float(np.mean(np.isin(pred[:, 0], ids)))


def heldout_scores(backbone, sets: Mapping[str, Mapping], format_words: Sequence[str],
                   beam: bool) -> dict:
    """Prompt removed: exact match per family, Norm. Avg., format rate over all outputs."""
    preds = {f: predict(backbone, d, None, beam) for f, d in sets.items()}
    em = {f: exact_match(p, sets[f]) for f, p in preds.items()}
    allp = np.concatenate(list(preds.values()))
    return {"exact_match": em, "norm_avg": normalized_average(em),
            "format_rate": format_rate(allp, format_words)}
