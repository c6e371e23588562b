"""ProMoT's two stages as arguments of `medmt5.run.loop.train` (what gin/promot/*.gin bind).

Stage 1 (prompt tuning, gin/promot/stage1_prompt.gin): backbone restored from
INITIAL_CHECKPOINT_PATH (required: `required_checkpoint`) and frozen, only params["prompt"]
trained (FreezeConfig.trainable = [PROMPT_PATTERN], FreezeConfig.new_params =
[PROMPT_PATTERN]; the masked optimizer holds state for the prompt only). `PromptWriter` writes
the prompt as .npy at every checkpoint save and new best.
Stage 2 (model tuning, gin/promot/stage2_model.gin): backbone from INITIAL_CHECKPOINT_PATH,
prompt from PROMPT_FILE (`prompt_init.prompt_initializer(kind="file")`), prompt frozen
(FreezeConfig.frozen = [PROMPT_PATTERN]), every backbone weight trained.

Paper settings (ProMoT, docs/promot.md): stage 1 Adafactor LR 0.2, batch 64, 5,000 steps, P = 100;
stage 2 LR 1e-3, dropout 0.1, label smoothing 0.1, batch 64, 1,000 steps; both keep the best
checkpoint on the target task.

This module imports neither seqio nor TensorFlow (the GPU benchmark machines build
`prompted_model` without them); the initialiser that tokenizes with a seqio vocabulary is
prompt_tuning.prompt_init.prompt_initializer.
"""
from __future__ import annotations

import io
import json
import logging
import os

import jax
import numpy as np

from medmt5.checkpointing.atomic_dir import atomic_write_bytes
from medmt5.data import hub, paths
from prompt_tuning import initializers
from prompt_tuning.prompts import PARAM_NAME, PromptedTransformer

log = logging.getLogger(__name__)

PROMPTS_SUBDIR = "prompts"
BEST_PROMPT = "prompt_best.npy"


def prompted_model(config, prompt_length: int = 100, prompt_init=None,
                   num_prompts: int = 0) -> PromptedTransformer:
    """The model factory of both stages: `train.model_factory = @prompted_model`."""
    if not isinstance(prompt_length, int) or prompt_length <= 0:
        raise ValueError(f"PROMPT_LENGTH must be a positive int, got {prompt_length!r}.")
    return PromptedTransformer(config, prompt_length=prompt_length, prompt_init=prompt_init,
                               num_prompts=num_prompts)


def _is_remote(path: str) -> bool:
    """A URL (gs://...) or a Hugging Face hub id (medmt5.data.hub): not checked on local disk."""
    return "://" in path or hub.is_hub_id(path)


def required_checkpoint(path: str | None, macro: str = "INITIAL_CHECKPOINT_PATH") -> str:
    """`path` if it names an existing checkpoint; a clear error otherwise (prompt tuning a
    randomly initialised backbone is never what anyone wants)."""
    if not path:
        raise ValueError(f"{macro} is not set: ProMoT restores the backbone (a pretrained "
                         f"model dir, MODEL_DIR, Hugging Face dir or T5X checkpoint) and "
                         f"never trains from random weights. Pass --gin.{macro}=\"'/path'\".")
    path = os.fspath(path)
    if not _is_remote(path) and not os.path.exists(path):
        raise FileNotFoundError(f"{macro}={path!r} does not exist.")
    return path


def stage2_checkpoint(path: str | None, prompt_file: str | None) -> str:
    """Stage 2's backbone: like `required_checkpoint`, and PROMPT_FILE must be set. A stage-1
    MODEL_DIR is refused: its stored (latest) prompt would override PROMPT_FILE; its backbone
    is bitwise the original, so pass the original checkpoint instead."""
    path = required_checkpoint(path)
    if not prompt_file:
        raise ValueError("PROMPT_FILE is not set: stage 2 attaches the stage-1 prompt, e.g. "
                         "--gin.PROMPT_FILE=\"'/stage1_dir/prompts/prompt_best.npy'\".")
    if not _is_remote(path) and os.path.isdir(os.path.join(path, PROMPTS_SUBDIR)):
        raise ValueError(f"INITIAL_CHECKPOINT_PATH={path!r} is a prompt-tuning run (it has "
                         f"{PROMPTS_SUBDIR}/): its stored prompt would replace PROMPT_FILE. "
                         "Pass the backbone checkpoint stage 1 started from.")
    return path


def prompt_array(params) -> np.ndarray:
    """params["prompt"] as a host float32 array [P, H] (or [N, P, H])."""
    if "prompt" not in params:
        raise ValueError("params have no 'prompt': not a prompt-tuning checkpoint.")
    return np.asarray(jax.device_get(params["prompt"][PARAM_NAME]), np.float32)


def prompt_path(model_dir: str, step: int | None = None) -> str:
    """MODEL_DIR/prompts/prompt_<step>.npy, or prompt_best.npy when step is None."""
    name = BEST_PROMPT if step is None else f"prompt_{int(step)}.npy"
    return os.path.join(model_dir, PROMPTS_SUBDIR, name)


def save_prompt(values: np.ndarray, path: str) -> str:
    """Writes a .npy atomically (atomic_dir.atomic_write_bytes: temporary file, then rename;
    on an object store, gs:// through medmt5.data.paths, one write replaces the object)."""
    buf = io.BytesIO()
    np.save(buf, np.asarray(values, np.float32))
    paths.makedirs(paths.dirname(path))
    atomic_write_bytes(path, buf.getvalue())
    return path


class PromptWriter:
    """train checkpoint hook: MODEL_DIR/prompts/prompt_<step>.npy at each save; at a new best
    also prompt_best.npy and best.json ({"step"})."""

    def __call__(self, model_dir: str, step: int, params, best: bool = False) -> None:
        if jax.process_index() != 0:
            return
        values = prompt_array(params)
        if best:
            save_prompt(values, prompt_path(model_dir))
            paths.write_text(paths.join(model_dir, PROMPTS_SUBDIR, "best.json"),
                             json.dumps({"step": int(step)}))
        else:
            save_prompt(values, prompt_path(model_dir, step))
        log.info("prompt %s written to %s", "best" if best else f"step {step}",
                 os.path.join(model_dir, PROMPTS_SUBDIR))


def prompt_length_of(path: str) -> int:
    """P of a [P, H] prompt file (stage 2 takes PROMPT_LENGTH from PROMPT_FILE)."""
    if not path:
        raise ValueError("PROMPT_FILE is not set: stage 2 attaches the stage-1 prompt, e.g. "
                         "--gin.PROMPT_FILE=\"'/stage1_dir/prompts/prompt_best.npy'\".")
    return int(initializers.load_npy(path).shape[0])
